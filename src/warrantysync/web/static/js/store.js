// Client state: what the server confirmed, what this tab has typed but not
// yet had confirmed, who holds which lock and who is here. No DOM.
//
// Merge rule: server news (events, PATCH answers, snapshots) always updates
// the confirmed value, but what the user sees in a field they are focused on
// or have unsaved text in stays theirs — see displayValue().

import { fieldKey, sameValue } from './fields.js';

/**
 * Is `owner` (a lock, `lock-released` data, or a `case-*` event's `{by, client_id}`)
 * this tab? The owner is the pair (user, client id): a client id alone is no proof,
 * anyone may send another tab's id as their own.
 */
export function ownedBy(owner, userId, clientId) {
  if (!owner) return false;
  const user = owner.user || owner.by;
  return Boolean(user) && user.id === userId && owner.client_id === clientId;
}

/** Same holder: same user and, where both are known, the same client id. */
function sameOwner(a, b) {
  if (!a.user || !b.user || a.user.id !== b.user.id) return false;
  return (a.client_id ?? null) === (b.client_id ?? null);
}

/**
 * @param {{clientId: string, userId: number}} options
 */
export function createStore({ clientId, userId }) {
  const cases = new Map(); // id -> case JSON as the server last confirmed it
  const origin = new Map(); // id -> event id the case became known at (Infinity: own create, echo pending)
  const edits = new Map(); // "case:field" -> local value not yet confirmed
  const saveStates = new Map(); // "case:field" -> dirty|saving|saved|error
  const locks = new Map(); // "case:field" -> lock JSON
  const listeners = new Set();
  let presence = [];
  let liveState = 'ok'; // 'unavailable': the server cannot know locks and presence (Redis away)
  let focus = null; // {caseId, field, key, value}: what the focused control shows

  function notify(change) {
    for (const listener of [...listeners]) listener(change);
  }

  function setConfirmedFields(caseId, values) {
    const current = cases.get(caseId);
    const changed = [];
    const next = { ...current };
    for (const [field, value] of Object.entries(values)) {
      if (!sameValue(current[field], value)) changed.push(field);
      next[field] = value;
    }
    cases.set(caseId, next);
    return changed;
  }

  /** Full case JSON from a PATCH/POST answer, case-created or a snapshot. */
  function applyCase(json, { remote = false, by = null, eventId, snapshot = false, restored = false } = {}) {
    const id = json.id;
    const current = cases.get(id);
    if (current && Number(current.version) > Number(json.version)) return [];
    if (eventId !== undefined) origin.set(id, eventId);
    if (!current) {
      cases.set(id, { ...json });
      notify({ type: 'created', caseId: id, remote, by, snapshot, restored });
      return Object.keys(json);
    }
    const changed = setConfirmedFields(id, json);
    if (changed.length) notify({ type: 'case', caseId: id, fields: changed, remote, by, snapshot });
    return changed;
  }

  function removeCase(caseId, { remote = false, by = null } = {}) {
    if (!cases.has(caseId)) return;
    cases.delete(caseId);
    origin.delete(caseId);
    const prefix = `${caseId}:`;
    let discarded = 0;
    for (const key of [...edits.keys()]) {
      if (key.startsWith(prefix)) {
        edits.delete(key);
        discarded += 1;
      }
    }
    for (const map of [saveStates, locks]) {
      for (const key of [...map.keys()]) if (key.startsWith(prefix)) map.delete(key);
    }
    if (focus && focus.caseId === caseId) focus = null;
    notify({ type: 'deleted', caseId, remote, by, discardedEdits: discarded });
  }

  /**
   * Let go of a case the table no longer shows (it is still in the branch):
   * its values go, so memory stays with the window. Never one with unsaved text.
   */
  function forgetCase(caseId) {
    if (!cases.has(caseId) || editsFor(caseId).size || (focus && focus.caseId === caseId)) return false;
    cases.delete(caseId);
    origin.delete(caseId);
    const prefix = `${caseId}:`;
    for (const key of [...saveStates.keys()]) if (key.startsWith(prefix)) saveStates.delete(key);
    notify({ type: 'forgotten', caseId });
    return true;
  }

  function applyCaseUpdated(data, eventId) {
    const caseId = data.case_id;
    const current = cases.get(caseId);
    if (!current) return false;
    if (Number(data.version) <= Number(current.version)) return true; // seen via a PATCH answer or snapshot
    const remote = !ownedBy(data, userId, clientId);
    const changed = setConfirmedFields(caseId, { ...data.changes, version: data.version });
    const fields = changed.filter((field) => field !== 'version');
    if (fields.length) notify({ type: 'case', caseId, fields, remote, by: data.by ?? null, eventId });
    return true;
  }

  function replaceLocks(list) {
    locks.clear();
    for (const lock of list || []) locks.set(fieldKey(lock.case_id, lock.field), lock);
    notify({ type: 'locks' });
  }

  function releaseLock(data) {
    const key = fieldKey(data.case_id, data.field);
    const current = locks.get(key);
    // Only the holder's release counts: a stale release must not unlock a newer holder.
    if (!current || !sameOwner(current, data)) return;
    locks.delete(key);
    notify({ type: 'lock', caseId: data.case_id, field: data.field });
  }

  function setLiveState(value) {
    const next = value === 'unavailable' ? 'unavailable' : 'ok'; // absent: a server without the flag
    if (next === liveState) return;
    liveState = next;
    notify({ type: 'live-state' });
  }

  function setPresence(viewers) {
    presence = Array.isArray(viewers) ? viewers : [];
    notify({ type: 'presence' });
  }

  /**
   * Apply one stream event. Returns false when the event refers to state we
   * do not have (e.g. an update for an unknown case), so the caller resyncs.
   */
  function applyEvent(name, data, eventId = null) {
    switch (name) {
      case 'case-created':
        applyCase(data.case, {
          remote: !ownedBy(data, userId, clientId), by: data.by ?? null, eventId: eventId ?? undefined,
          restored: data.restored === true, // back from the trash (docs/protocol.md, "Trash")
        });
        return true;
      case 'case-updated':
        return applyCaseUpdated(data, eventId);
      case 'case-deleted':
        removeCase(data.case_id, { remote: !ownedBy(data, userId, clientId), by: data.by ?? null });
        return true;
      case 'lock-acquired':
      case 'lock-renewed': // a new expiry and idle time for the same holder
        locks.set(fieldKey(data.lock.case_id, data.lock.field), data.lock);
        notify({ type: 'lock', caseId: data.lock.case_id, field: data.lock.field });
        return true;
      case 'lock-released':
        releaseLock(data);
        return true;
      case 'ready':
      case 'state':
        replaceLocks(data.locks);
        if (Array.isArray(data.presence)) setPresence(data.presence);
        setLiveState(data.live_state);
        return true;
      case 'presence':
        setPresence(data.viewers);
        return true;
      default:
        return true;
    }
  }

  /**
   * Merge `{cases, locks, presence, last_event_id}` from GET …/cases.
   * `ephemeral: false` keeps locks and presence as the stream has them: once
   * connected, the ordered stream is fresher than a snapshot fetched beside it.
   * A page of the list holds only some of the branch's cases: `keep(id)` says
   * which of the others are still wanted, and the rest are forgotten rather
   * than deleted (`whole: false` leaves them all).
   */
  function applySnapshot(snapshot, { ephemeral = true, keep = null, whole = true } = {}) {
    const head = Number(snapshot.last_event_id ?? 0);
    const seen = new Set();
    for (const json of snapshot.cases || []) {
      seen.add(json.id);
      const known = origin.get(json.id);
      const later = Number.isFinite(known) && known > head;
      applyCase(json, { remote: true, snapshot: true, eventId: later ? known : head });
    }
    for (const id of whole ? [...cases.keys()] : []) {
      // Created after the snapshot was taken (or our own, echo pending): keep.
      if (seen.has(id) || (origin.get(id) ?? 0) > head) continue;
      if (keep === null) removeCase(id, { remote: true });
      else if (!keep(id)) forgetCase(id);
    }
    if (ephemeral && Array.isArray(snapshot.locks)) replaceLocks(snapshot.locks);
    if (ephemeral && Array.isArray(snapshot.presence)) setPresence(snapshot.presence);
    if (ephemeral) setLiveState(snapshot.live_state);
    notify({ type: 'snapshot' });
  }

  function setEdit(caseId, field, value) {
    const key = fieldKey(caseId, field);
    edits.set(key, value);
    if (focus && focus.key === key) focus.value = value;
    notify({ type: 'edit', caseId, fields: [field] });
  }

  /** Our edit reached the server: show the confirmed value from now on. */
  function clearEdit(caseId, field) {
    const key = fieldKey(caseId, field);
    if (!edits.delete(key)) return;
    notify({ type: 'edit', caseId, fields: [field] });
  }

  /** Throw away the edit and show the confirmed value, even in a focused control. */
  function revert(caseId, field) {
    const key = fieldKey(caseId, field);
    edits.delete(key);
    if (focus && focus.key === key) focus.value = confirmedValue(caseId, field);
    notify({ type: 'edit', caseId, fields: [field], force: true });
  }

  function confirmedValue(caseId, field) {
    const json = cases.get(caseId);
    return json ? json[field] ?? null : null;
  }

  function displayValue(caseId, field) {
    const key = fieldKey(caseId, field);
    if (edits.has(key)) return edits.get(key);
    if (focus && focus.key === key) return focus.value;
    return confirmedValue(caseId, field);
  }

  function editsFor(caseId) {
    const prefix = `${caseId}:`;
    const result = new Map();
    for (const [key, value] of edits) {
      if (key.startsWith(prefix)) result.set(key.slice(prefix.length), value);
    }
    return result;
  }

  function lockedByOther(caseId, field) {
    const lock = locks.get(fieldKey(caseId, field));
    return lock && !ownedBy(lock, userId, clientId) ? lock : null;
  }

  return {
    clientId,
    userId,
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    applyEvent,
    applySnapshot,
    applyCase: (json, options) => applyCase(json, options),
    /** Our own POST answer: keep it through snapshots until its event arrives. */
    addOwnCase: (json) => applyCase(json, { eventId: Infinity }),
    removeCase,
    forgetCase,
    getCase: (caseId) => cases.get(caseId) ?? null,
    allCases: () => [...cases.values()],
    /** A 409 told us the current value but not the version. */
    setConfirmed(caseId, field, value) {
      if (!cases.has(caseId)) return;
      const changed = setConfirmedFields(caseId, { [field]: value });
      if (changed.length) notify({ type: 'case', caseId, fields: changed, remote: true, by: null });
    },
    confirmedValue,
    displayValue,
    setEdit,
    clearEdit,
    revert,
    hasEdit: (caseId, field) => edits.has(fieldKey(caseId, field)),
    editValue: (caseId, field) => edits.get(fieldKey(caseId, field)),
    editsFor,
    hasEdits: () => edits.size > 0,
    saveState: (caseId, field) => saveStates.get(fieldKey(caseId, field)) ?? null,
    setSaveState(caseId, field, state) {
      const key = fieldKey(caseId, field);
      if ((saveStates.get(key) ?? null) === state) return;
      if (state) saveStates.set(key, state);
      else saveStates.delete(key);
      notify({ type: 'save-state', caseId, fields: [field] });
    },
    setFocus(caseId, field) {
      focus = { caseId, field, key: fieldKey(caseId, field), value: displayValue(caseId, field) };
    },
    clearFocus(caseId, field) {
      if (focus && (caseId === undefined || focus.key === fieldKey(caseId, field))) {
        const { caseId: id, field: name } = focus;
        focus = null;
        notify({ type: 'edit', caseId: id, fields: [name] });
      }
    },
    focused: () => (focus ? { caseId: focus.caseId, field: focus.field } : null),
    lock: (caseId, field) => locks.get(fieldKey(caseId, field)) ?? null,
    lockedByOther,
    allLocks: () => [...locks.values()],
    presence: () => presence,
    liveState: () => liveState,
  };
}
