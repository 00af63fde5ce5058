// One event stream per browser and branch, however many tabs (docs/protocol.md,
// "Tabs sharing one stream"). The elected tab (tabelect.js: a Web Lock, or the
// channel election on plain HTTP) is the leader: it opens the real stream with
// the browser's connection id and relays every frame over a BroadcastChannel.
// Every other tab runs its own connection.js on a relayed source, so dedup by
// event id, gap detection, the watchdog and `ready` work per tab exactly as with
// a stream of its own. When the leader goes the next tab leads and resumes from
// the last id it applied. Without BroadcastChannel each tab opens its own stream.
// No DOM: every browser dependency is injected.

import { createConnection } from './connection.js';
import { channelElection, lockElection } from './tabelect.js';

// A relayed source "reconnects" by asking the leader again: cheap, so quick.
export const FOLLOWER_DELAYS_MS = Object.freeze([100, 250, 500, 1000]);
// How often the leader looks for tabs that died without saying goodbye.
export const TAB_SWEEP_MS = 2000;
// Every tab hears `online` and `visibilitychange`: the leader acts on the first
// such nudge from its followers and lets the others within this window pass.
export const NUDGE_WINDOW_MS = 1000;

/** Tabs of another client version never share a channel or a stream. */
export function sharedNames(version, branchId) {
  const base = `warrantysync:${version}:branch:${branchId}`;
  return { channel: base, leader: `${base}:leader`, tab: `${base}:tab:` };
}

/** Can this browser share one stream between tabs? BroadcastChannel is needed; Web Locks help. */
export function canShare({ BroadcastChannelImpl }) {
  return Boolean(BroadcastChannelImpl);
}

function hasWebLocks(locks) {
  return Boolean(locks && typeof locks.request === 'function' && typeof locks.query === 'function');
}

function noop() {}

/**
 * Same interface as createConnection, plus `role` and `close()` (pagehide).
 *
 * @param {object} options everything createConnection takes, and:
 * @param {string} options.browserId the stream's client id, shared by the browser's tabs
 * @param {string} options.tabId this tab's part: its client id is `<browserId>.<tabId>`
 * @param {string} options.version the page's client version
 * @param {number} options.branchId
 * @param {object|null} options.locks navigator.locks
 * @param {Function|null} options.BroadcastChannelImpl
 * @param {() => object} [options.currentState] `{locks, presence, live_state}` now, for a tab that joins
 * @param {(clientId: string) => Promise} [options.releaseTab] release a gone tab's locks on the server
 * @param {(role: string) => void} [options.onRoleChange]
 */
export function createSharedConnection(options) {
  const {
    browserId, tabId, version, branchId, locks, BroadcastChannelImpl,
    onStateChange = noop, onRoleChange = noop, currentState = () => ({}), releaseTab = () => Promise.resolve(),
    setTimeout, clearTimeout, now = Date.now,
  } = options;
  const clientId = `${browserId}.${tabId}`;
  if (!canShare(options)) {
    return alone(createConnection({ ...options, clientId }), clientId);
  }
  const names = sharedNames(version, branchId);
  const channel = new BroadcastChannelImpl(names.channel);
  let role = 'follower';
  let conn = null; // the connection.js this tab runs now (on a real or a relayed source)
  let leaderState = 'connecting';
  let leaderNextAttemptAt = null; // when the leader tries again, as it last said
  let lastReady = null;
  let leaderId = null;
  let started = false;
  let closed = false;
  let sweepTimer = null;
  const knownTabs = new Set();
  let relayed = null; // the follower's current relayed source
  let nudgedAt = -Infinity;

  const post = (message) => { if (!closed) channel.postMessage(message); };
  const election = hasWebLocks(locks)
    ? lockElection({ locks, names, clientId })
    : channelElection({ post, clientId, setTimeout, clearTimeout, now });

  function showState(state) {
    if (state === leaderState) return;
    leaderState = state;
    onStateChange(state);
  }

  // --- follower: a source fed by the leader's relay ---
  class RelaySource {
    constructor() {
      this.listeners = new Map();
      this.onerror = null;
      this.onopen = null;
      relayed = this;
      post({ type: 'hello', from: clientId });
    }

    addEventListener(name, fn) {
      if (!this.listeners.has(name)) this.listeners.set(name, []);
      this.listeners.get(name).push(fn);
    }

    dispatch(name, data, lastEventId) {
      for (const fn of this.listeners.get(name) || []) fn({ type: name, data, lastEventId });
    }

    close() {
      if (relayed === this) relayed = null;
    }
  }

  // --- leader: the real source, every frame copied to the channel ---
  function teeSource(EventSourceImpl) {
    return class TeeSource {
      constructor(url) {
        this.inner = new EventSourceImpl(url);
        this.inner.onerror = (event) => {
          post({ type: 'error', from: clientId });
          if (this.onerror) this.onerror(event);
          announce(); // with the new wait, for the followers' countdown
        };
        this.inner.onopen = (event) => { if (this.onopen) this.onopen(event); };
      }

      addEventListener(name, fn) {
        this.inner.addEventListener(name, (event) => {
          if (name === 'ready') lastReady = event.data;
          // A follower asks again at its own quick pace, not after goodbye's retry_ms.
          if (name === 'goodbye') post({ type: 'error', from: clientId });
          else post({ type: 'frame', from: clientId, name, data: event.data, lastEventId: event.lastEventId });
          fn(event);
          if (name === 'goodbye') announce();
        });
      }

      close() {
        this.inner.close();
      }
    };
  }

  function onMessage(message) {
    if (!message || typeof message !== 'object') return;
    election.onMessage(message);
    if (message.type === 'frame') {
      // Only the leader followed: a deposed one may still be flushing its last frames.
      if (role === 'follower' && relayed && message.from === leaderId && (!message.to || message.to === clientId)) {
        relayed.dispatch(message.name, message.data, message.lastEventId);
      }
    } else if (message.type === 'error') {
      if (role === 'follower' && message.from === leaderId && relayed && relayed.onerror) relayed.onerror({ type: 'error' });
    } else if (message.type === 'state') {
      if (role === 'follower' && election.follows(message.from)) {
        leaderId = message.from;
        leaderNextAttemptAt = Number.isFinite(message.nextAttemptAt) ? message.nextAttemptAt : null;
        showState(message.state);
      }
    } else if (role === 'leader') {
      onLeaderMessage(message);
    }
  }

  function onLeaderMessage(message) {
    if (message.type === 'hello') {
      knownTabs.add(message.from);
      announce();
      if (conn.state === 'connected' && lastReady !== null) {
        const id = conn.lastEventId;
        const data = { ...JSON.parse(lastReady), ...currentState(), last_event_id: id };
        post({ type: 'frame', from: clientId, to: message.from, name: 'ready', data: JSON.stringify(data), lastEventId: id ?? '' });
      }
    } else if (message.type === 'bye') {
      knownTabs.delete(message.from);
      releaseTab(message.from).catch(noop);
    } else if (message.type === 'retry' || message.type === 'wake') {
      if (now() - nudgedAt < NUDGE_WINDOW_MS) return;
      nudgedAt = now();
      if (message.type === 'retry') conn.reconnectNow();
      else conn.wake();
    }
  }
  channel.onmessage = (event) => onMessage(event.data);

  function follow(lastEventId = options.lastEventId ?? null) {
    conn = createConnection({
      ...options, clientId, lastEventId, EventSourceImpl: RelaySource, reconnectDelaysMs: FOLLOWER_DELAYS_MS, probe: null,
      onStateChange: noop,
    });
    conn.start();
  }

  function lead() {
    const resumeFrom = conn ? conn.lastEventId : options.lastEventId ?? null;
    const heartbeatMs = conn ? conn.heartbeatMs : options.heartbeatMs;
    if (conn) conn.stop();
    relayed = null;
    role = 'leader';
    onRoleChange(role);
    const previous = leaderId;
    conn = createConnection({
      ...options, clientId: browserId, lastEventId: resumeFrom, heartbeatMs,
      EventSourceImpl: teeSource(options.EventSourceImpl),
      onStateChange(state) {
        announce(state);
        showState(state);
      },
    });
    announce();
    showState(conn.state);
    conn.start();
    // The tab that led before may have crashed holding locks.
    if (previous && previous !== clientId) knownTabs.add(previous);
    sweep();
  }

  function announce(state = conn.state) {
    post({ type: 'state', from: clientId, state, nextAttemptAt: conn ? conn.nextAttemptAt : null });
  }

  async function sweep() {
    sweepTimer = null;
    if (role !== 'leader' || closed) return;
    const live = await election.liveTabs();
    if (live) {
      for (const id of live) knownTabs.add(id);
      const gone = [...knownTabs].filter((id) => id !== clientId && !live.has(id));
      for (const id of gone) {
        knownTabs.delete(id);
        releaseTab(id).catch(noop);
      }
    }
    if (role === 'leader' && !closed) sweepTimer = setTimeout(sweep, TAB_SWEEP_MS);
  }

  function start() {
    if (started) return;
    started = true;
    follow();
    election.start(lead, depose);
  }

  /** Another tab leads now (the channel election: this one was frozen meanwhile). */
  function depose() {
    if (role !== 'leader' || closed) return;
    const lastEventId = conn.lastEventId;
    conn.stop();
    role = 'follower';
    onRoleChange(role);
    if (sweepTimer !== null) clearTimeout(sweepTimer);
    sweepTimer = null;
    conn = null;
    follow(lastEventId);
  }

  function close() {
    if (closed) return;
    post({ type: 'bye', from: clientId });
    closed = true;
    if (sweepTimer !== null) clearTimeout(sweepTimer);
    if (conn) conn.stop();
    channel.close();
    election.stop();
  }

  const api = {
    start,
    stop: close,
    reconnectNow() {
      if (role === 'leader') conn.reconnectNow();
      else post({ type: 'retry' });
    },
    wake() {
      if (role === 'leader') conn.wake();
      else post({ type: 'wake' });
    },
    goOffline() {
      if (role === 'leader') conn.goOffline();
    },
    noteSnapshot(id) {
      if (conn) conn.noteSnapshot(id);
    },
    close,
    get state() {
      return leaderState;
    },
    get nextAttemptAt() {
      if (role === 'leader') return conn ? conn.nextAttemptAt : null;
      return leaderNextAttemptAt;
    },
    get lastEventId() {
      return conn ? conn.lastEventId : null;
    },
    get heartbeatMs() {
      return conn ? conn.heartbeatMs : options.heartbeatMs;
    },
    get role() {
      return role;
    },
    get clientId() {
      return clientId;
    },
  };
  return api;
}

/** A tab with a stream of its own, with the members the shared connection adds. */
function alone(conn, clientId) {
  return new Proxy(conn, {
    get(target, key) {
      if (key === 'role') return 'alone';
      if (key === 'clientId') return clientId;
      if (key === 'close') return () => target.stop();
      return target[key];
    },
  });
}
