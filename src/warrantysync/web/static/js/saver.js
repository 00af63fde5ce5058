// Saving edits: debounce for text, at once for dropdowns and dates, one
// queue per case so a case's saves never overtake each other, retries that
// resend byte-identical requests under the same Idempotency-Key, and the
// 4xx / 409 outcomes of docs/protocol.md, PATCH. No DOM: everything is injected.

import { ApiError } from './api.js';
import { DEFAULT_DELAYS_MS, backoffDelay } from './backoff.js';
import { fieldKey, isDebounced as defaultIsDebounced, isEditable, sameValue } from './fields.js';
import { describeError } from './messages.js';

/** The key of a case's "Not saved yet, retrying" toast, so a later outcome can take it down. */
export function retryToastKey(caseId) {
  return `saving:${caseId}`;
}

function noop() {}

function randomKey() {
  if (globalThis.crypto && typeof globalThis.crypto.randomUUID === 'function') return globalThis.crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

function asApiError(err) {
  return err instanceof ApiError ? err : new ApiError(0, 'network', String(err && err.message ? err.message : err));
}

/** Fields an error names; if it names none of the batch, the whole batch is to blame. */
function culpritFields(batch, body) {
  const named = [body && body.field, body && body.lock && body.lock.field].filter(Boolean);
  const hits = batch.fields.filter((field) => named.includes(field));
  return hits.length ? hits : batch.fields;
}

/**
 * @param {object} options
 * @param {object} options.store from store.js
 * @param {object} options.api from api.js (wraps the injected fetch)
 * @param {object|null} [options.drafts] from drafts.js
 * @param {Function} options.setTimeout
 * @param {Function} options.clearTimeout
 * @param {number} [options.debounceMs]
 * @param {number[]} [options.retryDelaysMs]
 * @param {() => number} [options.random]
 * @param {() => string} [options.newKey] Idempotency-Key factory
 * @param {(caseId, field) => (string|null|Promise<string|null>)} [options.lockToken]
 * @param {(caseId, field, theirs, mine, by) => Promise<'theirs'|'mine'>} [options.onConflict]
 * @param {(message: string, kind: string, options?: {key?: string}) => void} [options.onToast]
 * @param {(error: ApiError) => void} [options.onUnauthorized]
 * @param {(caseId, field) => void} [options.onLockLost]
 */
export function createSaver(options) {
  const {
    store, api, drafts = null, setTimeout, clearTimeout,
    debounceMs = 1000, retryDelaysMs = DEFAULT_DELAYS_MS, random = Math.random,
    newKey = randomKey, lockToken = () => null, isDebounced = defaultIsDebounced,
    onConflict = async () => 'theirs', onToast = noop, onUnauthorized = noop, onLockLost = noop,
    caseUrl = (caseId) => `/api/cases/${caseId}`,
  } = options;

  const queues = new Map(); // caseId -> {timer, ready, running, waiters}
  const held = new Set(); // keys parked (lock lost, invalid while typing) until touched again
  // key -> the server value a pending edit was typed over: its `expected`. Set
  // when the edit starts, moved only by our own confirmed saves and conflict
  // choices -- never by remote news, or a save would silently overwrite a
  // change its author never saw (the user's text stays on screen, see store.js).
  const bases = new Map();
  const sleepers = new Set();

  function queue(caseId) {
    let q = queues.get(caseId);
    if (!q) {
      q = { timer: null, ready: false, running: false, waiters: [] };
      queues.set(caseId, q);
    }
    return q;
  }

  const isIdle = (q) => !q.running && !q.ready && q.timer === null;

  function settle(q) {
    if (isIdle(q)) for (const resolve of q.waiters.splice(0)) resolve();
  }

  function expectedFor(caseId, field) {
    const key = fieldKey(caseId, field);
    return bases.has(key) ? bases.get(key) : store.confirmedValue(caseId, field);
  }

  function persist(caseId, field) {
    if (drafts && store.hasEdit(caseId, field)) {
      drafts.put(caseId, field, store.editValue(caseId, field), expectedFor(caseId, field));
    }
  }

  /** The field is settled: no edit left, no draft, state as given. */
  function finish(caseId, field, state, { revert = false } = {}) {
    if (revert) store.revert(caseId, field);
    else store.clearEdit(caseId, field);
    store.setSaveState(caseId, field, state);
    bases.delete(fieldKey(caseId, field));
    if (drafts) drafts.remove(caseId, field);
  }

  function setStates(caseId, fields, state) {
    for (const field of fields) if (store.hasEdit(caseId, field)) store.setSaveState(caseId, field, state);
  }

  function sleep(ms) {
    return new Promise((resolve) => {
      const sleeper = { resolve, timer: null };
      sleeper.timer = setTimeout(() => {
        sleepers.delete(sleeper);
        resolve();
      }, ms);
      sleepers.add(sleeper);
    });
  }

  function kick(caseId) {
    const q = queue(caseId);
    if (!q.running && q.ready) run(caseId, q);
    else settle(q);
  }

  function trigger(caseId) {
    const q = queue(caseId);
    if (q.timer !== null) clearTimeout(q.timer);
    q.timer = null;
    q.ready = true;
    kick(caseId);
  }

  async function run(caseId, q) {
    q.running = true;
    try {
      while (q.ready) {
        q.ready = false;
        const batch = collect(caseId);
        if (batch) await send(caseId, q, batch);
      }
    } catch (err) {
      onToast(`Saving failed: ${err && err.message ? err.message : err}`, 'error');
    } finally {
      q.running = false;
      settle(q);
    }
  }

  function collect(caseId) {
    const edits = store.editsFor(caseId);
    if (!store.getCase(caseId)) return null;
    const batch = { changes: {}, expected: {}, fields: [], key: null };
    for (const [field, value] of edits) {
      if (held.has(fieldKey(caseId, field))) continue;
      if (sameValue(value, store.confirmedValue(caseId, field))) {
        finish(caseId, field, null);
        continue;
      }
      batch.changes[field] = value;
      batch.expected[field] = expectedFor(caseId, field);
      batch.fields.push(field);
    }
    if (!batch.fields.length) return null;
    batch.key = newKey();
    return batch;
  }

  async function buildBody(caseId, batch) {
    const body = { changes: batch.changes, expected: batch.expected };
    const tokens = {};
    for (const field of batch.fields) {
      const token = await lockToken(caseId, field);
      if (token) tokens[field] = token;
    }
    if (Object.keys(tokens).length) body.lock_tokens = tokens;
    return body;
  }

  async function send(caseId, q, batch) {
    setStates(caseId, batch.fields, 'saving');
    const body = await buildBody(caseId, batch);
    for (let attempt = 0; store.getCase(caseId); attempt += 1) {
      try {
        const answer = await api.patch(caseUrl(caseId), body, { headers: { 'Idempotency-Key': batch.key } });
        succeeded(caseId, batch, answer.data);
        return;
      } catch (err) {
        const error = asApiError(err);
        if (!error.retryable) {
          await failed(caseId, q, batch, error);
          return;
        }
        setStates(caseId, batch.fields, 'dirty');
        if (attempt === 0) onToast(`Not saved yet — ${error.message} Retrying…`, 'warning', { key: retryToastKey(caseId) });
        await sleep(error.retryAfter ?? backoffDelay(attempt, retryDelaysMs, random));
        setStates(caseId, batch.fields, 'saving');
      }
    }
  }

  function succeeded(caseId, batch, json) {
    if (json && json.id !== undefined) store.applyCase(json, { remote: false });
    for (const field of batch.fields) {
      if (!store.hasEdit(caseId, field)) continue;
      if (sameValue(store.editValue(caseId, field), batch.changes[field])) {
        finish(caseId, field, 'saved');
      } else {
        // Typed on while this was in flight: the newer text is the next save,
        // based on what the server made of this one.
        const saved = json && field in json ? json[field] : batch.changes[field];
        bases.set(fieldKey(caseId, field), saved ?? null);
        persist(caseId, field);
        store.setSaveState(caseId, field, 'dirty');
      }
    }
  }

  async function failed(caseId, q, batch, error) {
    if (error.status === 401) {
      setStates(caseId, batch.fields, 'error');
      onUnauthorized(error);
      return;
    }
    if (error.status === 409 && error.code === 'lock_lost') lockLost(caseId, q, batch, error);
    else if (error.status === 409 && error.code === 'conflict') await conflict(caseId, q, batch, error);
    else rejected(caseId, q, batch, error);
  }

  function requeueOthers(caseId, q, batch, culprits) {
    const others = batch.fields.filter((field) => !culprits.includes(field));
    setStates(caseId, others, 'dirty');
    if (others.length) q.ready = true;
  }

  /** Someone else holds the field now: keep the user's text, do not resend it on our own. */
  function lockLost(caseId, q, batch, error) {
    const culprits = culpritFields(batch, error.body);
    for (const field of culprits) {
      held.add(fieldKey(caseId, field));
      store.setSaveState(caseId, field, 'error');
      onLockLost(caseId, field);
    }
    onToast(`${error.message} Your text is kept; edit the field again to save it.`, 'warning');
    requeueOthers(caseId, q, batch, culprits);
  }

  function rejected(caseId, q, batch, error) {
    const culprits = culpritFields(batch, error.body);
    const focused = store.focused();
    for (const field of culprits) {
      if (error.status === 422 && focused && focused.caseId === caseId && focused.field === field) {
        // Still typing (say, half an email address): reverting under the cursor
        // would eat their text. Park it; the next keystroke or blur retries.
        held.add(fieldKey(caseId, field));
        store.setSaveState(caseId, field, 'error');
      } else {
        finish(caseId, field, 'error', { revert: true });
      }
    }
    onToast(describeError(error), 'error');
    requeueOthers(caseId, q, batch, culprits);
  }

  /** 409 without `current`: read the case to learn what changed under us. */
  async function currentValues(caseId, batch) {
    try {
      const answer = await api.get(caseUrl(caseId));
      store.applyCase(answer.data, { remote: true });
      const changed = batch.fields.filter((f) => !sameValue(answer.data[f], batch.expected[f]));
      return Object.fromEntries(changed.map((f) => [f, answer.data[f]]));
    } catch {
      return null;
    }
  }

  async function conflict(caseId, q, batch, error) {
    const body = error.body || {};
    let current = body.current && Object.keys(body.current).length ? body.current : null;
    if (!current) current = await currentValues(caseId, batch);
    if (!current) {
      for (const field of batch.fields) held.add(fieldKey(caseId, field));
      setStates(caseId, batch.fields, 'error');
      onToast(`${error.message} Edit the field again to retry.`, 'error');
      return;
    }
    for (const field of batch.fields) {
      if (field in current) await resolveOne(caseId, field, current[field], body.by ?? null);
      else setStates(caseId, [field], 'dirty');
    }
    q.ready = true;
  }

  async function resolveOne(caseId, field, theirs, by) {
    store.setConfirmed(caseId, field, theirs);
    bases.delete(fieldKey(caseId, field));
    if (!store.hasEdit(caseId, field)) return;
    bases.set(fieldKey(caseId, field), theirs ?? null);
    if (sameValue(theirs, store.editValue(caseId, field))) {
      finish(caseId, field, 'saved'); // someone (maybe our other tab) saved the same value
      return;
    }
    const choice = await onConflict(caseId, field, theirs, store.editValue(caseId, field), by);
    if (!store.hasEdit(caseId, field)) return;
    if (choice === 'mine') {
      // The next batch sends `expected` = theirs, the value the user just saw.
      store.setSaveState(caseId, field, 'dirty');
      persist(caseId, field);
    } else {
      finish(caseId, field, null, { revert: true });
    }
  }

  /**
   * The user changed a field; the screen already shows `value`. `debounce`
   * overrides the field's save mode: a keyboard walk through a dropdown's
   * choices waits for a pause like typing does, a pick saves at once.
   */
  function edit(caseId, field, value, { debounce = isDebounced(field) } = {}) {
    const key = fieldKey(caseId, field);
    held.delete(key);
    if (!store.hasEdit(caseId, field) && !bases.has(key)) bases.set(key, store.confirmedValue(caseId, field));
    store.setEdit(caseId, field, value);
    store.setSaveState(caseId, field, 'dirty');
    persist(caseId, field);
    if (!debounce) {
      trigger(caseId);
      return;
    }
    const q = queue(caseId);
    if (q.timer !== null) clearTimeout(q.timer);
    q.timer = setTimeout(() => {
      q.timer = null;
      q.ready = true;
      kick(caseId);
    }, debounceMs);
  }

  /** Save now (blur). Resolves once the case's queue has drained. */
  function flush(caseId, field) {
    if (field !== undefined) held.delete(fieldKey(caseId, field));
    trigger(caseId);
    const q = queue(caseId);
    return isIdle(q) ? Promise.resolve() : new Promise((resolve) => q.waiters.push(resolve));
  }

  /** Cut every retry wait short (the browser came back `online`). */
  function retryNow() {
    for (const sleeper of [...sleepers]) {
      clearTimeout(sleeper.timer);
      sleepers.delete(sleeper);
      sleeper.resolve();
    }
  }

  /** Put drafts from an earlier page load back as edits and save them. Returns how many. */
  function restoreDrafts() {
    if (!drafts) return 0;
    const touched = new Set();
    let restored = 0;
    for (const draft of drafts.list()) {
      const { case_id: caseId, field, value, expected } = draft;
      if (!store.getCase(caseId) || !isEditable(field)
        || sameValue(value, store.confirmedValue(caseId, field))) {
        drafts.remove(caseId, field);
        continue;
      }
      if (store.hasEdit(caseId, field)) continue;
      // The base it was typed against: if the server moved on, the save gets a 409 and the user chooses.
      bases.set(fieldKey(caseId, field), expected === undefined ? store.confirmedValue(caseId, field) : expected);
      store.setEdit(caseId, field, value);
      store.setSaveState(caseId, field, 'dirty');
      touched.add(caseId);
      restored += 1;
    }
    for (const caseId of touched) trigger(caseId);
    return restored;
  }

  /**
   * Keep the field's unsaved text as a draft that is not sent on its own
   * (its lock was taken away): saved by flush(caseId, field) or a new edit,
   * dropped by discard().
   */
  function hold(caseId, field) {
    if (!store.hasEdit(caseId, field)) return false;
    held.add(fieldKey(caseId, field));
    store.setSaveState(caseId, field, 'dirty');
    persist(caseId, field);
    return true;
  }

  /** Drop a field's edit and show the server's value (focus refused: someone else holds it). */
  function discard(caseId, field) {
    held.delete(fieldKey(caseId, field));
    if (store.hasEdit(caseId, field)) finish(caseId, field, null, { revert: true });
  }

  return {
    edit,
    flush,
    discard,
    hold,
    isHeld: (caseId, field) => held.has(fieldKey(caseId, field)) && store.hasEdit(caseId, field),
    flushAll: () => Promise.all([...queues.keys()].map((caseId) => flush(caseId))),
    retryNow,
    hasPending: () => store.hasEdits() || [...queues.values()].some((q) => !isIdle(q)),
    restoreDrafts,
  };
}
