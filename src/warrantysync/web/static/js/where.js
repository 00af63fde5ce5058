// Who is where (docs/protocol.md, "Row presence" and "Asking for a locked field").
// No DOM: api, timers and callbacks are injected.
//
// * createRowReporter: tells the server, debounced, which case this tab has
//   open, the field it edits, whether it edits there and whether it is idle.
// * createRowPresence: what the server says about everyone, per case.
// * createLockRequests: asking for a field someone else holds, and being asked.

import { ApiError } from './api.js';
import { fieldKey } from './fields.js';

function noop() {}

const sameSpot = (a, b) => (a === null || b === null ? a === b
  : a.caseId === b.caseId && a.field === b.field && a.editing === b.editing && a.idle === b.idle);

/**
 * @param {object} options
 * @param {object} options.api
 * @param {number} options.branchId
 * @param {Function} options.setTimeout
 * @param {Function} options.clearTimeout
 * @param {number} [options.debounceMs] wait this long for the spot to settle before sending
 * @param {number} [options.idleMs] no activity for this long: idle
 * @param {number} [options.refreshMs] send the same spot again this often (the server forgets)
 */
export function createRowReporter(options) {
  const {
    api, branchId, setTimeout, clearTimeout, debounceMs = 400, idleMs = 60000, refreshMs = 30000,
  } = options;
  const url = `/api/branches/${branchId}/row-presence`;
  let where = null; // {caseId, field, editing}
  let idle = false;
  let sent = null; // the spot the server has
  let sendTimer = null;
  let idleTimer = null;
  let refreshTimer = null;
  let stopped = false;

  const current = () => (where === null ? null : { ...where, idle });

  function schedule(delay = debounceMs) {
    if (stopped) return;
    if (sendTimer !== null) clearTimeout(sendTimer);
    sendTimer = setTimeout(() => {
      sendTimer = null;
      send(false);
    }, delay);
  }

  async function send(force) {
    const spot = current();
    if (!force && sameSpot(spot, sent)) return;
    sent = spot;
    if (refreshTimer !== null) clearTimeout(refreshTimer);
    refreshTimer = spot === null ? null : setTimeout(() => { refreshTimer = null; send(true); }, refreshMs);
    const body = spot === null ? { case_id: null }
      : { case_id: spot.caseId, field: spot.field ?? null, editing: Boolean(spot.editing), idle: spot.idle };
    try {
      await api.put(url, body);
    } catch (error) {
      // Presence is a hint: the next change or refresh tries again.
      if (!(error instanceof ApiError) || error.retryable) sent = null;
    }
  }

  function armIdle() {
    if (idleTimer !== null) clearTimeout(idleTimer);
    idleTimer = setTimeout(() => {
      idleTimer = null;
      idle = true;
      schedule(0);
    }, idleMs);
  }

  armIdle();
  return {
    /** The tab's spot now: `{caseId, field, editing}` or null (no case open). */
    set(spot) {
      where = spot && spot.caseId ? { caseId: spot.caseId, field: spot.field ?? null, editing: Boolean(spot.editing) } : null;
      schedule();
    },
    /** The user did something (a key, a click): not idle, and the idle clock restarts. */
    activity() {
      armIdle();
      if (idle) {
        idle = false;
        schedule();
      }
    },
    /** The stream (re)connected: the server may have forgotten us meanwhile. */
    resend() {
      sent = null;
      schedule();
    },
    current,
    /** The page goes (pagehide): clear our spot now, not when the disconnect grace runs out. */
    leave() {
      if (sent !== null) api.put(url, { case_id: null }, { keepalive: true }).catch(noop);
      sent = null;
      where = null;
    },
    stop() {
      stopped = true;
      for (const timer of [sendTimer, idleTimer, refreshTimer]) if (timer !== null) clearTimeout(timer);
    },
  };
}

/** Everyone's row presence as the server last said it, by case. */
export function createRowPresence() {
  let byCase = new Map(); // caseId -> [{user, state, field}]
  const listeners = new Set();

  function replace(rows) {
    if (!Array.isArray(rows)) return;
    const next = new Map();
    for (const row of rows) {
      if (!next.has(row.case_id)) next.set(row.case_id, []);
      next.get(row.case_id).push({ user: row.user, state: row.state, field: row.field ?? null });
    }
    const changed = new Set([...byCase.keys(), ...next.keys()].filter(
      (id) => JSON.stringify(byCase.get(id) ?? []) !== JSON.stringify(next.get(id) ?? []),
    ));
    byCase = next;
    if (changed.size) for (const listener of [...listeners]) listener(changed);
  }

  return {
    handleEvent(name, data) {
      if (name === 'row-presence') replace(data.rows);
      else if ((name === 'ready' || name === 'state') && data) replace(data.row_presence ?? []);
    },
    /** A snapshot's `row_presence` (only while no stream is fresher). */
    applySnapshot(snapshot) {
      if (snapshot && Array.isArray(snapshot.row_presence)) replace(snapshot.row_presence);
    },
    forCase: (caseId) => byCase.get(caseId) ?? [],
    /** The complete row presence, as `ready` carries it (for tabs joining a shared stream). */
    all: () => [...byCase].flatMap(([caseId, people]) => people.map((p) => ({ case_id: caseId, ...p }))),
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
}

/**
 * How a person shows on a row: `editing` when the server says so or when they
 * hold a lock on the case (locks arrive as events, before the next report).
 * Others only: the tab's own user is left out. Sorted by name.
 */
export function peopleOnCase(entries, locks, selfId) {
  const locked = new Map();
  for (const lock of locks) if (lock.user && !locked.has(lock.user.id)) locked.set(lock.user.id, lock.field);
  return entries
    .filter((entry) => entry.user.id !== selfId)
    .map((entry) => {
      const lockField = locked.get(entry.user.id);
      if (entry.state !== 'editing' && lockField !== undefined) return { ...entry, state: 'editing', field: lockField };
      return entry;
    })
    .sort((a, b) => a.user.name.localeCompare(b.user.name));
}

/** "Bob is viewing", "Alice is editing Notes", "Carol is idle here". */
export function describePerson(person, labelOf) {
  if (person.state === 'editing') return `${person.user.name} is editing${person.field ? ` ${labelOf(person.field)}` : ''}`;
  if (person.state === 'idle') return `${person.user.name} is idle here`;
  return `${person.user.name} is viewing`;
}

/** "idle 12 s · ends in 18 s" for a lock, from its `active_at` and `expires_at`. */
export function lockTiming(lock, now = Date.now()) {
  const parts = [];
  const active = Date.parse(lock.active_at);
  if (!Number.isNaN(active)) parts.push(`idle ${spell(Math.max(0, now - active))}`);
  const ends = Date.parse(lock.expires_at);
  if (!Number.isNaN(ends)) parts.push(ends > now ? `ends in ${spell(ends - now)}` : 'ending now');
  return parts.join(' · ');
}

function spell(ms) {
  const seconds = Math.round(ms / 1000);
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  return `${minutes} min${seconds % 60 ? ` ${seconds % 60} s` : ''}`;
}

/**
 * @param {object} options
 * @param {object} options.api
 * @param {string} options.clientId
 * @param {number} options.userId
 * @param {Function} options.now
 * @param {(requests: object[]) => void} [options.onIncoming] the requests this tab is asked now
 * @param {(request: object, answer: string) => void} [options.onAnswer] one of ours was answered
 * @param {(caseId: number, field: string) => void} [options.onTyping] the holder types while asked:
 *   save now (a save tells the server the holder is at work), at most every `typingSaveMs`
 */
export function createLockRequests(options) {
  const {
    api, clientId, userId, now = Date.now, onIncoming = noop, onAnswer = noop, onTyping = noop,
    typingSaveMs = 2000,
  } = options;
  const incoming = new Map(); // request id -> request asked of this tab
  const outgoing = new Map(); // request id -> request this tab made
  const lastTypingSave = new Map(); // "case:field" -> time

  const list = () => [...incoming.values()];

  function endIncoming(id) {
    if (incoming.delete(id)) onIncoming(list());
  }

  return {
    /** {granted: lock} (it was free), {request} (asked), or {error: ApiError}. */
    async ask(caseId, field) {
      try {
        const answer = await api.post(`/api/cases/${caseId}/locks/${field}/requests`);
        if (answer.data && answer.data.request) {
          outgoing.set(answer.data.request.id, answer.data.request);
          return { request: answer.data.request };
        }
        return { granted: answer.data && answer.data.lock };
      } catch (error) {
        return { error: error instanceof ApiError ? error : new ApiError(0, 'network', String(error)) };
      }
    },
    async answer(id, answer) {
      const request = incoming.get(id);
      endIncoming(id);
      try {
        await api.post(`/api/lock-requests/${id}`, { answer });
        return { ok: true, request };
      } catch (error) {
        return { ok: false, request, error };
      }
    },
    /** The holder typed in a field: while someone asks for it, save every few seconds. */
    typing(caseId, field) {
      const asked = list().some((r) => r.case_id === caseId && r.field === field);
      if (!asked) return;
      const key = fieldKey(caseId, field);
      const at = now();
      if (at - (lastTypingSave.get(key) ?? -Infinity) < typingSaveMs) return;
      lastTypingSave.set(key, at);
      onTyping(caseId, field);
    },
    incoming: list,
    handleEvent(name, data) {
      if (name === 'lock-requested') {
        const request = data.request;
        if (request && request.holder && request.holder.id === userId && request.client_id === clientId) {
          incoming.set(request.id, request);
          onIncoming(list());
        }
      } else if (name === 'lock-request-answered') {
        const request = data.request;
        if (!request) return;
        endIncoming(request.id);
        if (outgoing.delete(request.id)) onAnswer(request, data.answer);
      } else if (name === 'lock-released') {
        // Our lock went (released, expired, handed over): nobody can ask us for it any more.
        if (data.user && data.user.id === userId && data.client_id === clientId) {
          for (const request of list()) {
            if (request.case_id === data.case_id && request.field === data.field) endIncoming(request.id);
          }
        }
      }
    },
  };
}
