import assert from 'node:assert/strict';
import { beforeEach, describe, test } from 'node:test';

import { createStore } from '../../src/warrantysync/web/static/js/store.js';
import { FOLLOWER_DELAYS_MS, NUDGE_WINDOW_MS, TAB_SWEEP_MS, createSharedConnection, sharedNames } from '../../src/warrantysync/web/static/js/tabs.js';
import { CLAIM_WAIT_MS, PING_MS, START_WAIT_MS, TAB_SILENT_MS, TAKEOVER_MS } from '../../src/warrantysync/web/static/js/tabelect.js';
import { FakeClock, FakeEventSource, makeCase, settle } from './fakes.mjs';
import { FakeBrowser } from './tabfakes.mjs';

const ME = { id: 1, name: 'Me' };

let clock;
let browser;
let released;

function openTab(tabId, { version = 'v1', branchId = 1, shared = true, webLocks = true, lastEventId = null } = {}) {
  const events = [];
  const states = [];
  const resyncs = [];
  let env = shared ? browser.tab(tabId) : { locks: null, BroadcastChannelImpl: null };
  if (!webLocks) env = { ...env, locks: null };
  const conn = createSharedConnection({
    url: `/api/branches/${branchId}/events`, browserId: 'b1', tabId, version, branchId, ...env,
    EventSourceImpl: FakeEventSource, setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout,
    now: clock.now, random: () => 0.5, heartbeatMs: 30000, lastEventId,
    onEvent: (name, data, id) => events.push({ name, data, id }),
    onStateChange: (state) => states.push(state),
    onResync: (reason) => resyncs.push(reason),
    currentState: () => ({ locks: [{ case_id: 1, field: 'notes', user: ME, client_id: 'b1.t1' }], presence: [] }),
    releaseTab: async (id) => { released.push(id); },
  });
  conn.start();
  return { tabId, conn, events, states, resyncs, env };
}

function ready(es, id, extra = {}) {
  es.emit('ready', { client_id: 'b1', last_event_id: String(id), locks: [], presence: [], heartbeat_ms: 30000, version: 'v1', ...extra }, String(id));
}

function updated(es, id, clientId = 'bob-tab') {
  es.emit('case-updated', { case_id: 1, changes: { notes: `n${id}` }, version: id, by: { id: 2, name: 'Bob' }, client_id: clientId }, String(id));
}

const caseIds = (tab) => tab.events.filter((e) => e.name === 'case-updated').map((e) => e.id);

beforeEach(() => {
  FakeEventSource.reset();
  clock = new FakeClock();
  browser = new FakeBrowser();
  released = [];
});

describe('leader election', () => {
  test('one stream for three tabs, opened with the browser id; the first tab leads', async () => {
    const tabs = ['t1', 't2', 't3'].map((id) => openTab(id));
    await settle();
    assert.equal(FakeEventSource.instances.length, 1);
    assert.equal(FakeEventSource.last.params.get('client_id'), 'b1');
    assert.deepEqual(tabs.map((t) => t.conn.role), ['leader', 'follower', 'follower']);
    assert.deepEqual(tabs.map((t) => t.conn.clientId), ['b1.t1', 'b1.t2', 'b1.t3']);
  });

  test('tabs on another branch, or of another client version, do not share', async () => {
    openTab('t1');
    openTab('t2', { branchId: 2 });
    openTab('t3', { version: 'v2' });
    openTab('t4');
    await settle();
    assert.equal(FakeEventSource.instances.length, 3);
    assert.notEqual(sharedNames('v1', 1).channel, sharedNames('v2', 1).channel);
  });
});

describe('relay', () => {
  test('every tab applies every frame once and shows the shared state', async () => {
    const tabs = ['t1', 't2', 't3'].map((id) => openTab(id));
    await settle();
    const es = FakeEventSource.last;
    ready(es, 5);
    updated(es, 6);
    updated(es, 6); // a duplicate on the wire is dropped in each tab
    await settle();
    for (const tab of tabs) {
      assert.deepEqual(caseIds(tab), [6], tab.tabId);
      assert.equal(tab.conn.state, 'connected');
      assert.equal(tab.conn.lastEventId, '6');
      assert.deepEqual(tab.resyncs, []);
    }
  });

  test('a follower mirrors the leader losing its stream', async () => {
    const [, follower] = ['t1', 't2'].map((id) => openTab(id));
    await settle();
    ready(FakeEventSource.last, 5);
    await settle();
    assert.equal(follower.conn.state, 'connected');
    FakeEventSource.last.fail();
    await settle();
    assert.equal(follower.conn.state, 'reconnecting');
    assert.equal(follower.states.at(-1), 'reconnecting');
    assert.ok(follower.conn.nextAttemptAt > clock.now(), 'the follower\'s pill counts down to the leader\'s next try');
  });

  test('a tab that joins later gets a ready of its own with the leader\'s current state', async () => {
    openTab('t1');
    await settle();
    ready(FakeEventSource.last, 5);
    updated(FakeEventSource.last, 6);
    await settle();
    const late = openTab('t2');
    await settle();
    const got = late.events.find((e) => e.name === 'ready');
    assert.equal(got.id, 6);
    assert.equal(got.data.locks[0].client_id, 'b1.t1', 'locks as the leader holds them now');
    assert.equal(late.conn.state, 'connected');
    assert.equal(FakeEventSource.instances.length, 1);
  });
});

describe('handover', () => {
  async function threeTabsAt7() {
    const tabs = ['t1', 't2', 't3'].map((id) => openTab(id));
    await settle();
    const es = FakeEventSource.last;
    ready(es, 5);
    updated(es, 6);
    updated(es, 7);
    await settle();
    return tabs;
  }

  test('the leader closes: the next tab resumes from the last id applied, nothing twice', async () => {
    const [first, second, third] = await threeTabsAt7();
    first.conn.close();
    await settle();
    assert.equal(second.conn.role, 'leader');
    assert.equal(FakeEventSource.instances.length, 2);
    const es = FakeEventSource.last;
    assert.equal(es.params.get('last_event_id'), '7');
    assert.equal(es.params.get('client_id'), 'b1');
    updated(es, 7); // the replay overlaps what the tabs have: dropped
    updated(es, 8);
    ready(es, 8);
    await settle();
    for (const tab of [second, third]) {
      assert.deepEqual(caseIds(tab), [6, 7, 8], tab.tabId);
      assert.deepEqual(tab.resyncs, [], tab.tabId);
      assert.equal(tab.conn.state, 'connected');
    }
    assert.deepEqual(released, ['b1.t1'], 'the closed tab said bye; its locks go');
  });

  test('the leader crashes: another takes over at once and frees the dead tab\'s locks', async () => {
    const [, second, third] = await threeTabsAt7();
    browser.crash('t1');
    await settle();
    assert.equal(second.conn.role, 'leader');
    assert.equal(FakeEventSource.last.params.get('last_event_id'), '7');
    updated(FakeEventSource.last, 8);
    ready(FakeEventSource.last, 8);
    await settle();
    assert.deepEqual(caseIds(third), [6, 7, 8]);
    assert.ok(released.includes('b1.t1'), released);
  });

  test('a follower crashes: the leader notices its tab lock is gone and frees its locks', async () => {
    await threeTabsAt7();
    browser.crash('t3');
    assert.deepEqual(released, []);
    await clock.tick(TAB_SWEEP_MS);
    assert.deepEqual(released, ['b1.t3']);
    await clock.tick(TAB_SWEEP_MS * 2);
    assert.deepEqual(released, ['b1.t3'], 'once');
  });

  test('a follower reconnects to its leader quickly, not at the stream backoff', async () => {
    const [, second] = await threeTabsAt7();
    FakeEventSource.last.fail();
    await settle();
    await clock.tick(FOLLOWER_DELAYS_MS[0]);
    await clock.tick(1000);
    ready(FakeEventSource.last, 7);
    await settle();
    assert.equal(second.conn.state, 'connected');
    assert.deepEqual(second.resyncs, []);
  });
});

describe('nudges', () => {
  test('`online` in eight tabs reopens the shared stream once, not eight times', async () => {
    const tabs = ['t1', 't2', 't3', 't4', 't5', 't6', 't7', 't8'].map((id) => openTab(id));
    await settle();
    ready(FakeEventSource.last, 5);
    await settle();
    FakeEventSource.last.fail();
    await settle();
    const before = FakeEventSource.instances.length;
    for (const tab of tabs.slice(1)) tab.conn.reconnectNow();
    await settle();
    assert.equal(FakeEventSource.instances.length, before + 1);
    await clock.tick(NUDGE_WINDOW_MS);
    tabs[3].conn.reconnectNow();
    await settle();
    assert.equal(FakeEventSource.instances.length, before + 2, 'a later nudge still counts');
  });
});

describe('echo suppression per tab', () => {
  test('a tab\'s own save comes back as its own; its siblings see it as a remote edit', async () => {
    const tabs = ['t1', 't2', 't3'].map((id) => openTab(id));
    const stores = tabs.map((tab) => {
      const store = createStore({ clientId: tab.conn.clientId, userId: ME.id });
      store.applyCase(makeCase({ id: 1, version: 1 }), { remote: false });
      return store;
    });
    const changes = stores.map((store) => {
      const seen = [];
      store.subscribe((change) => { if (change.type === 'case') seen.push(change.remote); });
      return seen;
    });
    await settle();
    ready(FakeEventSource.last, 5);
    FakeEventSource.last.emit('case-updated', { case_id: 1, changes: { notes: 'mine' }, version: 2, by: ME, client_id: 'b1.t2' }, '6');
    await settle();
    tabs.forEach((tab, i) => {
      for (const e of tab.events) stores[i].applyEvent(e.name, e.data, e.id);
    });
    assert.deepEqual(changes, [[true], [false], [true]]);
  });
});

describe('fallback', () => {
  test('without Web Locks or BroadcastChannel every tab opens its own stream with its tab id', async () => {
    const tabs = ['t1', 't2'].map((id) => openTab(id, { shared: false }));
    await settle();
    assert.equal(FakeEventSource.instances.length, 2);
    assert.deepEqual(FakeEventSource.instances.map((es) => es.params.get('client_id')), ['b1.t1', 'b1.t2']);
    assert.deepEqual(tabs.map((t) => t.conn.role), ['alone', 'alone']);
    ready(FakeEventSource.instances[0], 3);
    await settle();
    assert.equal(tabs[0].conn.state, 'connected');
    assert.equal(tabs[1].conn.state, 'connecting');
  });
});

describe('election over BroadcastChannel alone (plain HTTP: no Web Locks)', () => {
  const ids = ['t1', 't2', 't3'];
  async function elected() {
    const tabs = ids.map((id) => openTab(id, { webLocks: false }));
    await clock.tick(TAKEOVER_MS + PING_MS + CLAIM_WAIT_MS);
    return tabs;
  }
  const leaders = (tabs) => tabs.filter((t) => t.conn.role === 'leader');

  test('three tabs elect one leader and share one stream', async () => {
    const tabs = await elected();
    assert.equal(leaders(tabs).length, 1);
    assert.equal(FakeEventSource.instances.length, 1);
    ready(FakeEventSource.last, 5);
    updated(FakeEventSource.last, 6);
    await settle();
    for (const tab of tabs) assert.deepEqual(caseIds(tab), [6], tab.tabId);
    await clock.tick(PING_MS * 10);
    assert.equal(FakeEventSource.instances.length, 1, 'a standing leader is not challenged');
    const late = openTab('t4', { webLocks: false });
    await clock.tick(START_WAIT_MS + PING_MS + CLAIM_WAIT_MS);
    assert.equal(late.conn.role, 'follower', 'a tab that opens later follows the standing leader');
    assert.equal(FakeEventSource.instances.length, 1);
    assert.equal(late.conn.state, 'connected');
  });

  test('the leader crashes: another leads within 2 s and resumes from the last id', async () => {
    const tabs = await elected();
    ready(FakeEventSource.last, 5);
    updated(FakeEventSource.last, 6);
    await settle();
    const [old] = leaders(tabs);
    browser.crash(old.tabId);
    await clock.tick(2000);
    const rest = tabs.filter((t) => t !== old);
    assert.equal(leaders(rest).length, 1);
    assert.equal(FakeEventSource.instances.length, 2);
    assert.equal(FakeEventSource.last.params.get('last_event_id'), '6');
    updated(FakeEventSource.last, 7);
    ready(FakeEventSource.last, 7);
    await settle();
    for (const tab of rest) {
      assert.deepEqual(caseIds(tab), [6, 7], tab.tabId);
      assert.equal(tab.conn.state, 'connected');
    }
  });

  test('a frozen leader that wakes up steps down: one stream, one leader again', async () => {
    const tabs = await elected();
    const [old] = leaders(tabs);
    const first = FakeEventSource.last;
    browser.dead.add(old.tabId); // frozen: says nothing for a while
    await clock.tick(2000);
    assert.equal(leaders(tabs).length, 2, 'meanwhile the others elected a new one');
    browser.dead.delete(old.tabId);
    await clock.tick(PING_MS * 2);
    assert.equal(leaders(tabs).length, 1);
    assert.notEqual(leaders(tabs)[0], old);
    assert.equal(first.closed, true, 'the old leader closed its stream');
    assert.equal(old.conn.role, 'follower');
  });

  test('a leader that closes hands over at once; a silent follower loses its locks', async () => {
    const tabs = await elected();
    const [old] = leaders(tabs);
    old.conn.close();
    await clock.tick(PING_MS + CLAIM_WAIT_MS);
    const rest = tabs.filter((t) => t !== old);
    assert.equal(leaders(rest).length, 1);
    const quiet = rest.find((t) => t.conn.role === 'follower');
    browser.crash(quiet.tabId);
    await clock.tick(TAB_SILENT_MS + 5000);
    assert.ok(released.includes(quiet.conn.clientId), released);
  });
});
