import assert from 'node:assert/strict';
import { beforeEach, describe, test } from 'node:test';

import { DEFAULT_DELAYS_MS, JITTER, backoffDelay } from '../../src/warrantysync/web/static/js/backoff.js';
import {
  GAP_GRACE_MS, OFFLINE_AFTER_FAILURES, PROBE_AFTER_MS, PROBE_DELAYS_MS, WATCHDOG_SLACK_MS, createConnection, parseEventId,
} from '../../src/warrantysync/web/static/js/connection.js';
import { FakeClock, FakeEventSource } from './fakes.mjs';

function setup({ random = () => 0.5, lastEventId = null, heartbeatMs = 30000, probe = null, isOnline } = {}) {
  FakeEventSource.reset();
  const clock = new FakeClock();
  const events = [];
  const states = [];
  const resyncs = [];
  const conn = createConnection({
    url: '/api/branches/1/events',
    clientId: 'tab-1',
    EventSourceImpl: FakeEventSource,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    random,
    now: clock.now,
    heartbeatMs,
    lastEventId,
    onEvent: (name, data, id) => events.push({ name, data, id }),
    onStateChange: (state) => states.push(state),
    onResync: (reason) => resyncs.push(reason),
    probe,
    isOnline,
  });
  return { clock, conn, events, states, resyncs };
}

function ready(es, id, extra = {}) {
  es.emit('ready', {
    client_id: 'tab-1', last_event_id: String(id), locks: [], presence: [], heartbeat_ms: 30000, ...extra,
  }, String(id));
}

const updated = (caseId, version) => ({ case_id: caseId, changes: { notes: `v${version}` }, version, by: { id: 2, name: 'Bob' }, client_id: 'other' });

describe('backoff', () => {
  test('follows 1-2-4-8-16-30 s and stays at 30 s', () => {
    const mid = () => 0.5;
    assert.deepEqual([0, 1, 2, 3, 4, 5, 6, 9].map((n) => backoffDelay(n, DEFAULT_DELAYS_MS, mid)),
      [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
  });

  test('jitter stays within ±20 % of each step', () => {
    DEFAULT_DELAYS_MS.forEach((base, attempt) => {
      assert.equal(backoffDelay(attempt, DEFAULT_DELAYS_MS, () => 0), Math.round(base * (1 - JITTER)));
      assert.equal(backoffDelay(attempt, DEFAULT_DELAYS_MS, () => 0.999999), Math.round(base * (1 + JITTER)));
      for (let i = 0; i < 50; i += 1) {
        const d = backoffDelay(attempt, DEFAULT_DELAYS_MS, Math.random);
        assert.ok(d >= base * 0.8 && d <= base * 1.2, `${d} out of bounds for ${base}`);
      }
    });
  });
});

describe('connection', () => {
  let ctx;
  beforeEach(() => {
    ctx = setup({ lastEventId: '10' });
    ctx.conn.start();
  });

  test('opens with client_id and last_event_id, connected on ready', () => {
    const es = FakeEventSource.last;
    assert.equal(es.params.get('client_id'), 'tab-1');
    assert.equal(es.params.get('last_event_id'), '10');
    assert.equal(ctx.conn.state, 'connecting');
    ready(es, 10);
    assert.equal(ctx.conn.state, 'connected');
    assert.deepEqual(ctx.states, ['connected']);
    assert.equal(ctx.events[0].name, 'ready');
  });

  test('reconnects after each error with the backoff sequence, resuming from the last applied id', async () => {
    const { clock, conn } = ctx;
    ready(FakeEventSource.last, 10);
    FakeEventSource.last.emit('case-updated', updated(1, 2), '11');
    const waits = [];
    for (let i = 0; i < 7; i += 1) {
      const es = FakeEventSource.last;
      es.fail();
      assert.equal(es.closed, true, 'the client closes the EventSource itself');
      const [timer, ...others] = clock.pending();
      assert.equal(others.length, 0, 'only the reconnect timer is left; the watchdog went with the stream');
      waits.push(timer.at - clock.time);
      const before = FakeEventSource.instances.length;
      await clock.tick(timer.at - clock.time - 1);
      assert.equal(FakeEventSource.instances.length, before, 'not before the delay');
      await clock.tick(1);
      assert.equal(FakeEventSource.instances.length, before + 1);
      assert.equal(FakeEventSource.last.params.get('last_event_id'), '11');
    }
    assert.deepEqual(waits, [1000, 2000, 4000, 8000, 16000, 30000, 30000]);
    assert.equal(conn.state, 'offline');
  });

  test('state goes reconnecting, then offline after repeated failures, connected again on ready', async () => {
    const { clock, conn, states } = ctx;
    ready(FakeEventSource.last, 10);
    for (let i = 0; i < OFFLINE_AFTER_FAILURES; i += 1) {
      FakeEventSource.last.fail();
      if (i === 0) assert.equal(conn.state, 'reconnecting');
      await clock.tick(40000);
    }
    assert.equal(conn.state, 'offline');
    ready(FakeEventSource.last, 10);
    assert.equal(conn.state, 'connected');
    assert.deepEqual(states, ['connected', 'reconnecting', 'offline', 'connected']);
  });

  test('a successful ready resets the backoff', async () => {
    const { clock } = ctx;
    FakeEventSource.last.fail();
    await clock.tick(1000);
    FakeEventSource.last.fail();
    await clock.tick(2000);
    ready(FakeEventSource.last, 10);
    const count = FakeEventSource.instances.length;
    FakeEventSource.last.fail();
    await clock.tick(1000);
    assert.equal(FakeEventSource.instances.length, count + 1);
  });

  test('goodbye waits exactly retry_ms', async () => {
    const { clock, conn } = ctx;
    ready(FakeEventSource.last, 10);
    const es = FakeEventSource.last;
    es.emit('goodbye', { reason: 'shutdown', retry_ms: 7300 });
    assert.equal(es.closed, true);
    assert.equal(conn.state, 'reconnecting');
    await clock.tick(7299);
    assert.equal(FakeEventSource.instances.length, 1);
    await clock.tick(1);
    assert.equal(FakeEventSource.instances.length, 2);
  });

  test('watchdog reconnects after 2 × heartbeat_ms + 5 s of silence', async () => {
    const { clock } = ctx;
    ready(FakeEventSource.last, 10, { heartbeat_ms: 1000 });
    await clock.tick(2 * 1000 + WATCHDOG_SLACK_MS - 100);
    FakeEventSource.last.emit('heartbeat', { server_time: 'x', last_event_id: '10' });
    await clock.tick(2 * 1000 + WATCHDOG_SLACK_MS - 100);
    assert.equal(FakeEventSource.last.closed, false, 'heartbeat kept it alive');
    await clock.tick(100);
    assert.equal(FakeEventSource.last.closed, true, 'silence closed it');
    await clock.tick(1000);
    assert.equal(FakeEventSource.instances.length, 2);
  });

  test('applies each event id at most once', () => {
    const es = FakeEventSource.last;
    es.emit('case-updated', updated(1, 2), '11');
    es.emit('case-updated', updated(1, 2), '11');
    es.emit('case-updated', updated(1, 1), '9');
    ready(es, 11);
    es.emit('case-updated', updated(1, 3), '12');
    const applied = ctx.events.filter((e) => e.name === 'case-updated').map((e) => e.id);
    assert.deepEqual(applied, [11, 12]);
    assert.equal(ctx.conn.lastEventId, '12');
    assert.deepEqual(ctx.resyncs, []);
  });

  test('an id that skips is a gap: applied, then resync', () => {
    const es = FakeEventSource.last;
    ready(es, 10);
    es.emit('case-updated', updated(1, 2), '13');
    assert.deepEqual(ctx.resyncs, ['gap']);
    assert.equal(ctx.conn.lastEventId, '13');
  });

  test('heartbeat ahead of us is a gap once the grace period passes without the event', async () => {
    const { clock, resyncs } = ctx;
    const es = FakeEventSource.last;
    ready(es, 10);
    es.emit('heartbeat', { server_time: 'x', last_event_id: '11' });
    es.emit('case-updated', updated(1, 2), '11');
    await clock.tick(GAP_GRACE_MS);
    assert.deepEqual(resyncs, [], 'the event arrived within the grace period');
    es.emit('heartbeat', { server_time: 'x', last_event_id: '14' });
    await clock.tick(GAP_GRACE_MS);
    assert.deepEqual(resyncs, ['gap']);
  });

  test('sync-required resyncs and lets ready reset the id even downwards', () => {
    const es = FakeEventSource.last;
    es.emit('sync-required', { reason: 'too_far_behind' });
    ready(es, 4);
    assert.deepEqual(ctx.resyncs, ['sync-required']);
    assert.equal(ctx.conn.lastEventId, '4');
    ctx.conn.noteSnapshot('6');
    assert.equal(ctx.conn.lastEventId, '6');
    ctx.conn.noteSnapshot('5');
    assert.equal(ctx.conn.lastEventId, '6', 'a snapshot never moves us back');
  });

  test('ephemeral events pass through without touching the id', () => {
    const es = FakeEventSource.last;
    ready(es, 10);
    es.emit('lock-acquired', { lock: { case_id: 1, field: 'notes' } });
    es.emit('presence', { viewers: [] });
    assert.deepEqual(ctx.events.map((e) => e.name), ['ready', 'lock-acquired', 'presence']);
    assert.equal(ctx.conn.lastEventId, '10');
  });

  test('reconnectNow skips the backoff wait; wake only when not healthy', async () => {
    const { clock, conn } = ctx;
    ready(FakeEventSource.last, 10);
    conn.wake();
    assert.equal(FakeEventSource.instances.length, 1, 'healthy stream left alone');
    FakeEventSource.last.fail();
    conn.wake();
    assert.equal(FakeEventSource.instances.length, 2, 'reconnecting: go now');
    ready(FakeEventSource.last, 10);
    conn.reconnectNow();
    assert.equal(FakeEventSource.instances.length, 3);
    assert.equal(FakeEventSource.instances[1].closed, true);
    await clock.tick(60000);
    assert.equal(FakeEventSource.instances.length, 3, 'no stray timer from the earlier failure');
  });

  test('goOffline shows offline at once and keeps retrying', async () => {
    const { clock, conn } = ctx;
    ready(FakeEventSource.last, 10);
    conn.goOffline();
    assert.equal(conn.state, 'offline');
    await clock.tick(40000);
    assert.equal(FakeEventSource.instances.length, 2);
  });
});

test('parseEventId accepts decimal strings only', () => {
  assert.equal(parseEventId('42'), 42);
  assert.equal(parseEventId(''), null);
  assert.equal(parseEventId('4a'), null);
  assert.equal(parseEventId(undefined), null);
});

describe('probing a server that went away', () => {
  // The server answers probes only while `up` says so; every probe is counted.
  function withServer(options = {}) {
    const server = { up: false, probes: 0 };
    const ctx = setup({ ...options, probe: async () => { server.probes += 1; return server.up; } });
    ctx.conn.start();
    ready(FakeEventSource.last, 1);
    return { ...ctx, server };
  }

  async function failUntilLongWait(ctx) {
    // Each failure waits the next backoff step; stop once the wait is past PROBE_AFTER_MS.
    for (let i = 0; i < 10; i += 1) {
      FakeEventSource.last.fail();
      const wait = ctx.conn.nextAttemptAt - ctx.clock.now();
      if (ctx.conn.nextAttemptAt !== null && backoffDelay(i, DEFAULT_DELAYS_MS, () => 0.5) > PROBE_AFTER_MS) return wait;
      await ctx.clock.tick(backoffDelay(i, DEFAULT_DELAYS_MS, () => 0.5));
    }
    throw new Error('never waited long');
  }

  test('short waits are not probed: the plain backoff is cheap enough', async () => {
    const ctx = withServer();
    FakeEventSource.last.fail();
    await ctx.clock.tick(1000);
    assert.equal(ctx.server.probes, 0);
  });

  test('a server back during a long wait is found within a few seconds, not after 30 s', async () => {
    const ctx = withServer();
    await failUntilLongWait(ctx);
    const opened = FakeEventSource.instances.length;
    await ctx.clock.tick(PROBE_DELAYS_MS[0]);
    assert.equal(ctx.server.probes, 1, 'first probe: still away');
    assert.equal(FakeEventSource.instances.length, opened);
    ctx.server.up = true;
    await ctx.clock.tick(PROBE_DELAYS_MS[1]);
    assert.equal(FakeEventSource.instances.length, opened + 1, 'reconnected as soon as a probe answered');
    ready(FakeEventSource.last, 1);
    assert.equal(ctx.conn.state, 'connected');
    assert.equal(ctx.conn.nextAttemptAt, null);
  });

  test('probes back off to the last step and keep their jitter', async () => {
    const ctx = withServer({ random: () => 0 });
    FakeEventSource.last.fail();
    await ctx.clock.tick(800);
    FakeEventSource.last.fail();
    await ctx.clock.tick(1600);
    FakeEventSource.last.fail(); // now 4 s * 0.8: probed
    const waits = [];
    for (let i = 0; i < 4; i += 1) {
      const before = ctx.clock.now();
      const due = ctx.conn.nextAttemptAt;
      waits.push(due - before);
      await ctx.clock.tick(due - before);
    }
    assert.deepEqual(waits.slice(0, 2), PROBE_DELAYS_MS.slice(0, 2).map((d) => Math.round(d * (1 - JITTER))));
  });

  test('a server that answers probes but refuses streams gets one early try, then the backoff', async () => {
    const ctx = withServer();
    ctx.server.up = true;
    await failUntilLongWait(ctx);
    const opened = FakeEventSource.instances.length;
    await ctx.clock.tick(PROBE_DELAYS_MS[0]);
    assert.equal(FakeEventSource.instances.length, opened + 1, 'one early try');
    FakeEventSource.last.fail(); // refused again (say 429): the next wait is not cut short
    const backoff = backoffDelay(3, DEFAULT_DELAYS_MS, () => 0.5);
    await ctx.clock.tick(backoff - 1);
    assert.ok(ctx.server.probes >= 3, 'still probing');
    assert.equal(FakeEventSource.instances.length, opened + 1, 'no storm: the full backoff');
    await ctx.clock.tick(1);
    assert.equal(FakeEventSource.instances.length, opened + 2);
  });

  test('nextAttemptAt says when the next try is due, for the countdown', async () => {
    const ctx = withServer();
    assert.equal(ctx.conn.nextAttemptAt, null);
    FakeEventSource.last.fail();
    assert.equal(ctx.conn.nextAttemptAt, ctx.clock.now() + 1000);
  });

  test('while the browser is offline nothing is probed', async () => {
    let online = false;
    const server = { probes: 0 };
    const ctx = setup({ probe: async () => { server.probes += 1; return true; }, isOnline: () => online });
    ctx.conn.start();
    ready(FakeEventSource.last, 1);
    ctx.conn.goOffline();
    await ctx.clock.tick(20000);
    assert.equal(server.probes, 0);
    online = true;
    assert.ok(ctx.conn.state === 'offline' || ctx.conn.state === 'reconnecting');
  });
});
