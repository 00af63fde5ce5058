// The event stream (docs/protocol.md, "The event stream"). The client, not the browser, owns
// reconnection: EventSource's own retry knows nothing of backoff, jitter,
// goodbye.retry_ms or our last applied id, so on any error we close it and
// open a fresh one ourselves. No DOM: every browser dependency is injected.

import { DEFAULT_DELAYS_MS, backoffDelay } from './backoff.js';

export const EVENT_NAMES = Object.freeze([
  'ready', 'case-created', 'case-updated', 'case-deleted', 'lock-acquired', 'lock-released',
  'state', 'presence', 'heartbeat', 'sync-required', 'goodbye',
  // Who is where (where.js)
  'lock-renewed', 'row-presence', 'lock-requested', 'lock-request-answered',
]);

const CASE_EVENTS = new Set(['case-created', 'case-updated', 'case-deleted']);

// A stream is dead when it stays silent for two heartbeats plus this slack.
export const WATCHDOG_SLACK_MS = 5000;
// A heartbeat may overtake the fan-out of an event committed just before it;
// wait this long for the event before calling it a gap.
export const GAP_GRACE_MS = 3000;
// After this many failed attempts in a row the pill turns red.
export const OFFLINE_AFTER_FAILURES = 3;
// A wait longer than this is shortened by probing GET /healthz (cheap, never
// rate limited), so a server that comes back is found within a few seconds
// rather than after the 30 s backoff step. The probes back off and jitter too.
export const PROBE_AFTER_MS = 3000;
export const PROBE_DELAYS_MS = Object.freeze([1000, 2000, 3000]);

/** Event ids are decimal strings; anything else is "no id". */
export function parseEventId(value) {
  if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0) return value;
  if (typeof value === 'string' && /^\d+$/.test(value)) return Number(value);
  return null;
}

function noop() {}

/**
 * @param {object} options
 * @param {string} options.url events URL without query, e.g. /api/branches/1/events
 * @param {string} options.clientId
 * @param {Function} options.EventSourceImpl
 * @param {Function} options.setTimeout
 * @param {Function} options.clearTimeout
 * @param {() => number} [options.random]
 * @param {() => number} [options.now]
 * @param {number[]} [options.reconnectDelaysMs]
 * @param {number} [options.heartbeatMs] until `ready` tells us the real one
 * @param {string|number|null} [options.lastEventId]
 * @param {(name: string, data: object, id: number|null) => void} [options.onEvent]
 * @param {(state: string) => void} [options.onStateChange]
 * @param {(reason: string) => void} [options.onResync] reload the snapshot
 * @param {() => Promise<boolean>} [options.probe] is the server answering at all (GET /healthz)?
 * @param {() => boolean} [options.isOnline] the browser's navigator.onLine
 */
export function createConnection(options) {
  const {
    url, clientId, EventSourceImpl, setTimeout, clearTimeout,
    random = Math.random, now = Date.now, reconnectDelaysMs = DEFAULT_DELAYS_MS,
    onEvent = noop, onStateChange = noop, onResync = noop, probe = null, isOnline = () => true,
  } = options;

  let heartbeatMs = options.heartbeatMs || 30000;
  let lastId = parseEventId(options.lastEventId ?? null);
  let source = null;
  let state = 'connecting';
  let started = false;
  let everReady = false;
  let failures = 0;
  let syncRequired = false;
  let lastActivity = now();
  let reconnectTimer = null;
  let watchdogTimer = null;
  let gapTimer = null;
  let reconnectAt = null;
  let probeTimer = null;
  let probeAt = null;
  let probeAttempt = 0;
  let probeFailed = false; // a probe of this wait found the server away
  let shortcutUsed = false; // a probe already cut a wait short since the last `ready`

  function setState(next) {
    if (next === state) return;
    state = next;
    onStateChange(next);
  }

  function streamUrl() {
    const query = [`client_id=${encodeURIComponent(clientId)}`];
    if (lastId !== null) query.push(`last_event_id=${lastId}`);
    return `${url}${url.includes('?') ? '&' : '?'}${query.join('&')}`;
  }

  function watchdogLimit() {
    return 2 * heartbeatMs + WATCHDOG_SLACK_MS;
  }

  function armWatchdog() {
    if (watchdogTimer !== null) clearTimeout(watchdogTimer);
    watchdogTimer = setTimeout(() => {
      watchdogTimer = null;
      if (source) fail(source);
    }, watchdogLimit());
  }

  function clearTimer(timer) {
    if (timer !== null) clearTimeout(timer);
    return null;
  }

  function closeStream() {
    if (source) source.close();
    source = null;
    watchdogTimer = clearTimer(watchdogTimer);
  }

  function stopProbing() {
    probeTimer = clearTimer(probeTimer);
    probeAt = null;
  }

  function scheduleProbe() {
    const delay = backoffDelay(probeAttempt, PROBE_DELAYS_MS, random);
    probeAttempt += 1;
    probeAt = now() + delay;
    probeTimer = setTimeout(runProbe, delay);
  }

  async function runProbe() {
    probeTimer = null;
    probeAt = null;
    if (reconnectTimer === null) return;
    const up = isOnline() ? await probe().catch(() => false) : false;
    if (reconnectTimer === null || probeTimer !== null) return; // reconnected, or rescheduled meanwhile
    // A server that answers probes but refuses streams (a 401, too many
    // streams) gets one early try per streak, then the plain backoff: no storm.
    if (up && (probeFailed || !shortcutUsed)) {
      shortcutUsed = true;
      open();
      return;
    }
    if (!up) probeFailed = true;
    scheduleProbe();
  }

  function open() {
    reconnectTimer = clearTimer(reconnectTimer);
    reconnectAt = null;
    stopProbing();
    closeStream();
    if (state !== 'offline') setState(everReady || failures > 0 ? 'reconnecting' : 'connecting');
    syncRequired = false;
    const es = new EventSourceImpl(streamUrl());
    source = es;
    for (const name of EVENT_NAMES) {
      es.addEventListener(name, (event) => receive(es, name, event));
    }
    es.onerror = () => fail(es);
    es.onopen = () => touch(es);
    armWatchdog();
  }

  function schedule(delay, nextState) {
    closeStream();
    reconnectTimer = clearTimer(reconnectTimer);
    stopProbing();
    reconnectAt = now() + Math.max(0, delay);
    reconnectTimer = setTimeout(() => {
      reconnectTimer = null;
      reconnectAt = null;
      if (started) open();
    }, Math.max(0, delay));
    if (probe && delay > PROBE_AFTER_MS) {
      probeAttempt = 0;
      probeFailed = false;
      scheduleProbe();
    }
    setState(nextState);
  }

  function fail(es) {
    if (es !== source) return;
    failures += 1;
    const delay = backoffDelay(failures - 1, reconnectDelaysMs, random);
    schedule(delay, failures >= OFFLINE_AFTER_FAILURES ? 'offline' : 'reconnecting');
  }

  function touch(es) {
    if (es !== source) return;
    lastActivity = now();
    armWatchdog();
  }

  function receive(es, name, event) {
    if (es !== source) return;
    touch(es);
    let data;
    try {
      data = event.data ? JSON.parse(event.data) : {};
    } catch {
      return; // a frame we cannot read carries nothing we could apply
    }
    if (name === 'ready') onReady(event.lastEventId, data);
    else if (CASE_EVENTS.has(name)) onCaseEvent(name, event.lastEventId, data);
    else if (name === 'heartbeat') onHeartbeat(data);
    else if (name === 'goodbye') onGoodbye(data);
    else if (name === 'sync-required') onSyncRequired(data);
    else onEvent(name, data, null);
  }

  function onReady(rawId, data) {
    const id = parseEventId(data.last_event_id ?? rawId);
    failures = 0;
    everReady = true;
    shortcutUsed = false;
    if (Number(data.heartbeat_ms) > 0) heartbeatMs = Number(data.heartbeat_ms);
    armWatchdog();
    let gap = false;
    if (id !== null) {
      // After sync-required the server's numbering is the truth, even if lower.
      if (syncRequired || lastId === null) lastId = id;
      else if (id > lastId) {
        gap = true;
        lastId = id;
      }
    }
    setState('connected');
    onEvent('ready', data, id);
    if (gap) onResync('gap');
  }

  function onCaseEvent(name, rawId, data) {
    const id = parseEventId(rawId);
    if (id !== null && lastId !== null && id <= lastId) return; // applied already
    const gap = id !== null && lastId !== null && id > lastId + 1;
    if (id !== null) lastId = id;
    onEvent(name, data, id);
    if (gap) onResync('gap');
  }

  function onHeartbeat(data) {
    const head = parseEventId(data.last_event_id ?? null);
    if (head !== null && lastId !== null && head > lastId && gapTimer === null) {
      gapTimer = setTimeout(() => {
        gapTimer = null;
        if (lastId !== null && lastId < head) onResync('gap');
      }, GAP_GRACE_MS);
    }
    onEvent('heartbeat', data, null);
  }

  function onGoodbye(data) {
    const retry = Number(data.retry_ms);
    const delay = Number.isFinite(retry) && retry >= 0
      ? retry
      : backoffDelay(0, reconnectDelaysMs, random);
    onEvent('goodbye', data, null);
    schedule(delay, 'reconnecting');
  }

  function onSyncRequired(data) {
    syncRequired = true;
    onEvent('sync-required', data, null);
    onResync('sync-required');
  }

  return {
    start() {
      if (started) return;
      started = true;
      open();
    },
    stop() {
      started = false;
      closeStream();
      reconnectTimer = clearTimer(reconnectTimer);
      reconnectAt = null;
      stopProbing();
      gapTimer = clearTimer(gapTimer);
    },
    /** Skip any backoff wait and open a fresh stream now (`online`). */
    reconnectNow() {
      if (started) open();
    },
    /**
     * Tab became visible: reconnect at once unless the stream is demonstrably
     * alive. Background tabs have their timers throttled, so the watchdog may
     * not have fired even though the stream died long ago.
     */
    wake() {
      if (!started) return;
      if (state !== 'connected' || now() - lastActivity > watchdogLimit()) open();
    },
    /** The browser reported `offline`: say so now instead of after a timeout. */
    goOffline() {
      if (!started) return;
      failures = Math.max(failures, OFFLINE_AFTER_FAILURES);
      schedule(backoffDelay(failures - 1, reconnectDelaysMs, random), 'offline');
    },
    /** A snapshot at `id` has been merged: events up to it count as applied. */
    noteSnapshot(id) {
      const parsed = parseEventId(id);
      if (parsed === null) return;
      if (lastId === null || parsed > lastId) lastId = parsed;
    },
    get state() {
      return state;
    },
    /** When the next attempt (a reconnect, or a probe that may bring it forward) is due; null if none waits. */
    get nextAttemptAt() {
      if (reconnectAt === null) return null;
      return probeAt === null ? reconnectAt : Math.min(reconnectAt, probeAt);
    },
    get lastEventId() {
      return lastId === null ? null : String(lastId);
    },
    get heartbeatMs() {
      return heartbeatMs;
    },
  };
}
