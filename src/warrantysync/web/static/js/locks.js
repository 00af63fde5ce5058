// Field locks held by this tab (docs/protocol.md, "Locks"): PUT on focus, renew while
// focused, DELETE after the blur's save. Operations on one field run one
// after another, so a DELETE can never overtake a later PUT on the wire.
// No DOM: api, timers and callbacks are injected.

import { ApiError } from './api.js';
import { fieldKey } from './fields.js';
import { ownedBy } from './store.js';

function noop() {}

function lockOf(data) {
  return data && data.lock ? data.lock : data;
}

/**
 * @param {object} options
 * @param {object} options.api from api.js (sends X-Client-Id and X-CSRF-Token)
 * @param {string} options.clientId
 * @param {number} options.userId the signed-in user: a lock is ours only as (user, client id)
 * @param {number} options.renewMs
 * @param {Function} options.setTimeout
 * @param {Function} options.clearTimeout
 * @param {(caseId, field, who: {id, name}|null, reason?: string) => void} [options.onLost] a lock we
 *   held is gone: `who` holds it now, or (reason `forced`) released it; reason `expired`: nobody
 */
export function createLocks(options) {
  const {
    api, clientId, userId, renewMs, setTimeout, clearTimeout, onLost = noop,
    lockUrl = (caseId, field) => `/api/cases/${caseId}/locks/${field}`,
  } = options;
  const mine = (owner) => ownedBy(owner, userId, clientId);
  const entries = new Map(); // key -> {caseId, field, token, wanted, chain, renewTimer}

  function entry(caseId, field) {
    const key = fieldKey(caseId, field);
    let e = entries.get(key);
    if (!e) {
      e = { caseId, field, token: null, wanted: false, chain: Promise.resolve(), renewTimer: null };
      entries.set(key, e);
    }
    return e;
  }

  function enqueue(e, op) {
    const result = e.chain.then(op);
    e.chain = result.then(noop, noop);
    return result;
  }

  function stopRenew(e) {
    if (e.renewTimer !== null) clearTimeout(e.renewTimer);
    e.renewTimer = null;
  }

  function scheduleRenew(e) {
    stopRenew(e);
    if (!e.wanted) return;
    e.renewTimer = setTimeout(() => {
      e.renewTimer = null;
      if (e.wanted) enqueue(e, () => renew(e));
    }, renewMs);
  }

  async function put(e) {
    try {
      const answer = await api.put(lockUrl(e.caseId, e.field));
      const lock = lockOf(answer.data);
      e.token = (lock && lock.token) || (answer.data && answer.data.token) || null;
      scheduleRenew(e);
      return { ok: true, lock };
    } catch (err) {
      const error = err instanceof ApiError ? err : new ApiError(0, 'network', String(err));
      if (error.status === 423) {
        e.token = null;
        stopRenew(e);
        const holder = error.body && error.body.lock ? error.body.lock.user : null;
        // lock_barred: a manager released our lock on this field a moment ago.
        const forced = error.code === 'lock_barred';
        return { ok: false, locked: true, holder, forced, message: error.message };
      }
      if (error.status === 409 && error.code === 'stream_required' && e.token) {
        // Not renewed while our stream is away; the lock (and token) stays until it
        // expires, and the next renewal, once the stream is back, extends it again.
        scheduleRenew(e);
        return { ok: false, transient: true, message: error.message };
      }
      if (error.retryable) {
        // Redis down, network blip, or too many locks held: edit on (saves carry
        // `expected`), keep trying.
        scheduleRenew(e);
        return { ok: false, transient: true, code: error.code, message: error.message };
      }
      e.token = null;
      stopRenew(e);
      return { ok: false, status: error.status, message: error.message };
    }
  }

  async function renew(e) {
    const had = e.token !== null;
    const result = await put(e);
    if (had && result.locked) reportLost(e, result);
    return result;
  }

  function reportLost(e, result) {
    if (result.forced) onLost(e.caseId, e.field, null, 'forced');
    else onLost(e.caseId, e.field, result.holder);
  }

  function lost(e, holder) {
    e.token = null;
    stopRenew(e);
    onLost(e.caseId, e.field, holder);
  }

  function reacquire(e, { silent = false } = {}) {
    return enqueue(e, async () => {
      if (!e.wanted || e.token) return;
      const result = await put(e);
      if (result.locked && !silent) reportLost(e, result);
    });
  }

  /** ready / state carry the full lock list: check ours are still in it. */
  function reconcile(list) {
    const current = new Map((list || []).map((lock) => [fieldKey(lock.case_id, lock.field), lock]));
    for (const [key, e] of entries) {
      if (!e.token) continue;
      const lock = current.get(key);
      if (lock && mine(lock)) continue;
      if (lock) lost(e, lock.user);
      else {
        // Released while we were away (disconnect grace ran out): take it back if still editing.
        e.token = null;
        if (e.wanted) reacquire(e);
      }
    }
  }

  return {
    /** Focus: resolves {ok} or {ok:false, locked, holder, message} or {ok:false, transient}. */
    acquire(caseId, field) {
      const e = entry(caseId, field);
      e.wanted = true;
      if (e.token) {
        scheduleRenew(e);
        return Promise.resolve({ ok: true });
      }
      return enqueue(e, () => (e.token ? { ok: true } : e.wanted ? put(e) : { ok: false, cancelled: true }));
    },
    /**
     * Blur: DELETE once `after` (the blur's save) has settled, unless the
     * field was focused again meanwhile. Not queued behind `after`: that save
     * itself waits for tokenFor() on this queue.
     */
    release(caseId, field, after = null) {
      const e = entry(caseId, field);
      e.wanted = false;
      stopRenew(e);
      return Promise.resolve(after).catch(noop).then(() => enqueue(e, async () => {
        if (e.wanted || !e.token) return;
        e.token = null;
        try {
          await api.del(lockUrl(caseId, field));
        } catch {
          // It expires on its own after LOCK_TTL.
        }
        if (!e.wanted && !e.token) entries.delete(fieldKey(caseId, field));
      }));
    },
    /** The PATCH's lock_tokens entry; waits for an acquire still in flight. */
    tokenFor(caseId, field) {
      const e = entries.get(fieldKey(caseId, field));
      return e ? e.chain.then(() => e.token) : null;
    },
    holds: (caseId, field) => Boolean(entries.get(fieldKey(caseId, field))?.token),
    /** A PATCH answered lock_lost: our token is dead. */
    forget(caseId, field) {
      const e = entries.get(fieldKey(caseId, field));
      if (!e) return;
      e.token = null;
      stopRenew(e);
      if (e.wanted) reacquire(e, { silent: true });
    },
    /** Feed every stream event here. */
    handleEvent(name, data) {
      if (name === 'ready' || name === 'state') reconcile(data.locks);
      else if (name === 'lock-acquired') {
        const lock = data.lock;
        const e = lock && entries.get(fieldKey(lock.case_id, lock.field));
        if (e && e.token && !mine(lock)) lost(e, lock.user);
      } else if (name === 'lock-released' && mine(data) && data.reason !== 'released') {
        const e = entries.get(fieldKey(data.case_id, data.field));
        if (e && e.token) {
          e.token = null;
          if (data.reason === 'forced' || data.reason === 'expired' || data.reason === 'transferred') {
            // Taken away on purpose, or gone while renewals failed (others may
            // be typing there now): grabbing it back would overrule them.
            e.wanted = false;
            stopRenew(e);
            const who = data.reason === 'forced' ? data.by : data.reason === 'transferred' ? data.to : null;
            onLost(e.caseId, e.field, who ?? null, data.reason);
          } else if (e.wanted) reacquire(e);
        }
      }
    },
    reconcile,
    /** pagehide: let go of everything without waiting (keepalive outlives the page). */
    releaseAll() {
      for (const e of entries.values()) {
        stopRenew(e);
        e.wanted = false;
        if (e.token) api.del(lockUrl(e.caseId, e.field), { keepalive: true }).catch(noop);
        e.token = null;
      }
      entries.clear();
    },
  };
}
