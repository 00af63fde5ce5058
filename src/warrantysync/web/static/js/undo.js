// Second chances for this tab's own saved changes: undo and redo them in
// order (Ctrl+Z / Ctrl+Shift+Z), and restore a value from a case's history.
// No DOM: the saver's queue, the store and the dialogs are injected.
//
// A step is one confirmed save: {caseId, changes: [{field, before, after}]}.
// Undoing it is a normal PATCH of `before` whose `expected` is `after`, the
// value this tab set, so a colleague's newer value is never overwritten
// silently: the 409 names who changed it to what, and the user chooses
// (docs/protocol.md, "Second chances"). Redo is the same the other way.
//
// A reload keeps the stacks in sessionStorage (parked when the page goes, as
// the tab's client id is), and takes back only what is still right: from the
// newest step down, as long as the case is there and each field still holds
// the value the step left; the first step that no longer fits ends it.

import { labelOf, sameValue } from './fields.js';
import { describeError } from './messages.js';

const MAX_STEPS = 100;

export function undoKey(userId, branchId) {
  return `warrantysync:undo:${userId}:${branchId}`;
}

function noop() {}

const DIRECTIONS = {
  // which side of a change a direction sets, and which it expects to find
  undo: { target: 'before', found: 'after', done: 'Undone', anyway: 'undo' },
  redo: { target: 'after', found: 'before', done: 'Redone', anyway: 'redo' },
};

function isStep(step) {
  return step && Number.isInteger(step.caseId) && Array.isArray(step.changes) && step.changes.length > 0
    && step.changes.every((c) => c && typeof c.field === 'string' && 'before' in c && 'after' in c);
}

/**
 * @param {object} options
 * @param {object} options.store from store.js
 * @param {(caseId, request) => Promise<object>} options.submit saver.submit: sends in the case's
 *   save queue, resolves with the case JSON, rejects with an ApiError
 * @param {() => Promise<unknown>} [options.settle] waits for the tab's pending saves (saver.flushAll)
 * @param {(caseId, field, theirs, mine, by, kind: 'undo'|'redo'|'restore') => Promise<'theirs'|'mine'>}
 *   options.onConflict
 * @param {(message: string, kind: string) => void} [options.onToast]
 * @param {() => void} [options.onChange] the stacks changed (the buttons say what is next)
 * @param {(field, value) => string} [options.describe] a value in words
 * @param {Storage|null} [options.storage] sessionStorage, to survive a reload
 * @param {string|null} [options.key] the storage key (undoKey)
 */
export function createUndo(options) {
  const {
    store, submit, settle = async () => {}, onConflict = async () => 'theirs', onToast = noop,
    onChange = noop, describe = (_field, value) => String(value ?? ''), storage = null, key = null,
  } = options;
  const done = [];
  const undone = [];
  let parked = read(); // from before a reload, until resume() has checked it
  let chain = Promise.resolve();

  function read() {
    if (!storage || !key) return null;
    try {
      const raw = storage.getItem(key);
      storage.removeItem(key);
      const parsed = raw ? JSON.parse(raw) : null;
      if (!parsed || typeof parsed !== 'object') return null;
      const list = (value) => (Array.isArray(value) ? value : []);
      return { done: list(parsed.done), undone: list(parsed.undone) };
    } catch {
      return null;
    }
  }

  function changed() {
    onChange();
  }

  function caseName(caseId) {
    const json = store.getCase(caseId);
    return json ? json.case_number : 'a case that is gone';
  }

  function what(step) {
    const labels = step.changes.map((c) => labelOf(c.field)).join(', ');
    return `${labels} of ${caseName(step.caseId)}`;
  }

  /** A save of this tab's was confirmed: it is the newest step, and nothing is left to redo. */
  function record(caseId, changes) {
    const kept = changes.filter((c) => !sameValue(c.before, c.after));
    if (!kept.length) return;
    done.push({ caseId, changes: kept.map(({ field, before, after }) => ({ field, before, after })) });
    if (done.length > MAX_STEPS) done.splice(0, done.length - MAX_STEPS);
    undone.length = 0;
    changed();
  }

  /** Ask about each field someone else changed; returns the fields still to set, or null. */
  async function resolveConflict(step, changes, expected, error, kind) {
    const current = error.body.current;
    const by = error.body.by ?? null;
    for (const [field, theirs] of Object.entries(current)) {
      store.setConfirmed(step.caseId, field, theirs);
      if (!(field in changes)) continue;
      const choice = await onConflict(step.caseId, field, theirs, changes[field], by, kind);
      if (choice === 'mine') {
        expected[field] = theirs;
      } else {
        delete changes[field];
        delete expected[field];
      }
    }
    return Object.keys(changes).length ? changes : null;
  }

  async function apply(direction) {
    await settle(); // the tab's pending saves land first, as steps of their own
    const from = direction === 'undo' ? done : undone;
    const to = direction === 'undo' ? undone : done;
    const { target, found } = DIRECTIONS[direction];
    const step = from.pop();
    if (!step) return false;
    changed();
    if (!store.getCase(step.caseId)) {
      onToast(`Nothing to ${direction} there: that case is no longer in this branch.`, 'info');
      return false;
    }
    let changes = Object.fromEntries(step.changes.map((c) => [c.field, c[target]]));
    const expected = Object.fromEntries(step.changes.map((c) => [c.field, c[found]]));
    for (;;) {
      try {
        await submit(step.caseId, { body: { changes, expected }, fields: Object.keys(changes) });
        const applied = step.changes.filter((c) => c.field in changes);
        to.push({ caseId: step.caseId, changes: applied });
        changed();
        const values = applied.map((c) => `${labelOf(c.field)} is “${describe(c.field, c[target])}”`).join(', ');
        onToast(`${DIRECTIONS[direction].done}: ${values} again on ${caseName(step.caseId)}.`, 'success');
        return true;
      } catch (error) {
        if (error.status === 409 && error.code === 'conflict' && error.body && error.body.current) {
          changes = await resolveConflict(step, changes, expected, error, direction);
          if (changes) continue;
          onToast(`Kept their value; nothing was ${direction === 'undo' ? 'undone' : 'redone'}.`, 'info');
          return false;
        }
        if (error.status === 423 || error.retryable) {
          from.push(step); // still worth doing once they are done
          changed();
          onToast(`Could not ${direction} ${what(step)} now: ${describeError(error)}`, 'warning');
          return false;
        }
        onToast(`Could not ${direction} ${what(step)}: ${describeError(error)}`, 'error');
        return false;
      }
    }
  }

  /** Run one gesture after the ones before it: three Ctrl+Z undo three steps, in order. */
  function queued(work) {
    const result = chain.then(work, work);
    chain = result.catch(() => {});
    return result;
  }

  /**
   * "Restore this value" of a history entry: sent with `expected` = the
   * value shown now; a newer value from someone else asks first. The
   * restore is a step of its own, so Ctrl+Z takes it back.
   * @param {{id: number, field: string, old: unknown, new: unknown}} entry
   * @param {'new'|'old'} side which of the entry's values
   */
  async function restore(caseId, entry, side = 'new') {
    const { field } = entry;
    const value = side === 'old' ? entry.old : entry.new;
    const url = `/api/cases/${caseId}/history/${entry.id}/restore`;
    await settle();
    let expected = store.confirmedValue(caseId, field);
    for (;;) {
      try {
        const json = await submit(caseId, { method: 'POST', url, body: { expected, side }, fields: [field] });
        const after = json && field in json ? json[field] : value;
        record(caseId, [{ field, before: expected, after }]);
        onToast(`${labelOf(field)} of ${caseName(caseId)} is “${describe(field, after)}” again.`, 'success');
        return true;
      } catch (error) {
        const current = error.body && error.body.current;
        if (error.status === 409 && error.code === 'conflict' && current && field in current) {
          store.setConfirmed(caseId, field, current[field]);
          const choice = await onConflict(caseId, field, current[field], value, error.body.by ?? null, 'restore');
          if (choice !== 'mine') return false;
          expected = current[field];
          continue;
        }
        onToast(`Could not restore ${labelOf(field)}: ${describeError(error)}`, 'error');
        return false;
      }
    }
  }

  /** The longest run of steps, newest first, that still fits the cases as the store has them. */
  function stillRight(steps, side) {
    const values = new Map(); // "case:field" -> the value once the newer steps are taken back
    const kept = [];
    for (let i = steps.length - 1; i >= 0; i -= 1) {
      const step = steps[i];
      if (!isStep(step) || !store.getCase(step.caseId)) break;
      const now = (c) => {
        const k = `${step.caseId}:${c.field}`;
        return values.has(k) ? values.get(k) : store.confirmedValue(step.caseId, c.field);
      };
      const fits = step.changes.every((c) => sameValue(now(c), side === 'undo' ? c.after : c.before));
      if (!fits) break;
      for (const c of step.changes) values.set(`${step.caseId}:${c.field}`, side === 'undo' ? c.before : c.after);
      kept.unshift(step);
    }
    return kept;
  }

  return {
    record,
    undo: () => queued(() => apply('undo')),
    redo: () => queued(() => apply('redo')),
    restore: (caseId, entry, side) => queued(() => restore(caseId, entry, side)),
    /** What Ctrl+Z / Ctrl+Shift+Z would do next, in words; null when nothing. */
    nextUndo: () => (done.length ? what(done[done.length - 1]) : null),
    nextRedo: () => (undone.length ? what(undone[undone.length - 1]) : null),
    /** After the first snapshot of a page load: take back what is still right from before the reload. */
    resume() {
      const saved = parked;
      parked = null;
      if (!saved) return 0;
      const fresh = !done.length && !undone.length; // nothing saved since the page loaded
      const before = stillRight(saved.done, 'undo');
      const after = fresh ? stillRight(saved.undone, 'redo') : [];
      done.unshift(...before);
      undone.push(...after);
      changed();
      return before.length + after.length;
    },
    /** The page came back from the back/forward cache: it lives on, so nothing is left parked. */
    unpark() {
      try {
        if (storage && key) storage.removeItem(key);
      } catch {
        // storage disabled: nothing was parked
      }
    },
    /** The page is going (pagehide): keep the stacks for this tab's next load. */
    park() {
      if (!storage || !key) return;
      const state = parked ?? { done, undone };
      try {
        if (state.done.length || state.undone.length) storage.setItem(key, JSON.stringify(state));
        else storage.removeItem(key);
      } catch {
        // quota or private mode: a reload starts with nothing to undo
      }
    },
  };
}
