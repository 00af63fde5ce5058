import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { createApi } from '../../src/warrantysync/web/static/js/api.js';
import { installFields, labelOf } from '../../src/warrantysync/web/static/js/fields.js';
import {
  createLockRequests, createRowPresence, createRowReporter, describePerson, lockTiming, peopleOnCase,
} from '../../src/warrantysync/web/static/js/where.js';
import { FakeClock, FakeFetch, FIELD_TABLE, settle } from './fakes.mjs';

installFields(FIELD_TABLE);

const ALICE = { id: 1, name: 'Alice Johnson' };
const BOB = { id: 2, name: 'Bob Smith' };

function reporter(handler = () => ({ status: 204 })) {
  const clock = new FakeClock();
  const http = new FakeFetch(handler);
  const api = createApi({ fetch: http.fetch, csrfToken: 'csrf', clientId: 'tab-1' });
  const rows = createRowReporter({
    api, branchId: 3, setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout,
    debounceMs: 400, idleMs: 60000, refreshMs: 30000,
  });
  return { clock, http, rows };
}

describe('row reporter', () => {
  test('sends the settled spot once, debounced', async () => {
    const { clock, http, rows } = reporter();
    rows.set({ caseId: 7 });
    await clock.tick(200);
    rows.set({ caseId: 8, field: 'notes', editing: true });
    await clock.tick(399);
    assert.equal(http.calls.length, 0);
    await clock.tick(1);
    assert.equal(http.calls.length, 1);
    assert.equal(http.last.method, 'PUT');
    assert.equal(http.last.url, '/api/branches/3/row-presence');
    assert.deepEqual(http.last.body, { case_id: 8, field: 'notes', editing: true, idle: false });
    assert.equal(http.last.headers['X-Client-Id'], 'tab-1');
    rows.set({ caseId: 8, field: 'notes', editing: true });
    await clock.tick(1000);
    assert.equal(http.calls.length, 1, 'the same spot is not sent again');
    rows.set(null);
    await clock.tick(400);
    assert.deepEqual(http.last.body, { case_id: null });
  });

  test('goes idle after a minute without activity, and back', async () => {
    const { clock, http, rows } = reporter();
    rows.set({ caseId: 7 });
    await clock.tick(400);
    await clock.tick(59_000);
    rows.activity(); // a key at 59.4 s: the minute starts again
    await clock.tick(59_000);
    assert.ok(http.calls.every((c) => !c.body.idle || c.body.case_id === null));
    await clock.tick(1_000);
    assert.equal(http.last.body.idle, true);
    rows.activity();
    await clock.tick(400);
    assert.equal(http.last.body.idle, false);
  });

  test('leaving the page clears the spot at once, with keepalive', async () => {
    const { clock, http, rows } = reporter();
    rows.leave();
    assert.equal(http.calls.length, 0, 'nothing to clear');
    rows.set({ caseId: 7 });
    await clock.tick(400);
    rows.leave();
    assert.deepEqual(http.last.body, { case_id: null });
    assert.equal(http.last.keepalive, true);
  });

  test('refreshes the spot so the server keeps it, and resends after a reconnect', async () => {
    const { clock, http, rows } = reporter();
    rows.set({ caseId: 7 });
    await clock.tick(400);
    await clock.tick(30_000);
    assert.equal(http.calls.length, 2);
    rows.resend();
    await clock.tick(400);
    assert.equal(http.calls.length, 3);
    assert.equal(http.last.body.case_id, 7);
  });
});

describe('row presence model', () => {
  test('keeps rows by case and tells which cases changed', () => {
    const model = createRowPresence();
    const changes = [];
    model.subscribe((changed) => changes.push([...changed].sort()));
    model.handleEvent('ready', { row_presence: [{ case_id: 7, user: ALICE, state: 'viewing', field: null }] });
    model.handleEvent('row-presence', {
      rows: [
        { case_id: 7, user: ALICE, state: 'viewing', field: null },
        { case_id: 9, user: BOB, state: 'editing', field: 'notes' },
      ],
    });
    model.handleEvent('row-presence', { rows: [{ case_id: 9, user: BOB, state: 'editing', field: 'notes' }] });
    assert.deepEqual(changes, [[7], [9], [7]]);
    assert.deepEqual(model.forCase(7), []);
    assert.deepEqual(model.forCase(9), [{ user: BOB, state: 'editing', field: 'notes' }]);
    model.handleEvent('state', { locks: [] }); // a server without row presence: nobody
    assert.deepEqual(model.forCase(9), []);
  });

  test('people on a case: others only, editing while they hold a lock there', () => {
    const entries = [
      { user: BOB, state: 'viewing', field: null },
      { user: ALICE, state: 'idle', field: null },
      { user: { id: 5, name: 'Me' }, state: 'viewing', field: null },
    ];
    const locks = [{ case_id: 7, field: 'issue', user: ALICE }];
    const people = peopleOnCase(entries, locks, 5);
    assert.deepEqual(people.map((p) => [p.user.name, p.state, p.field]), [
      ['Alice Johnson', 'editing', 'issue'],
      ['Bob Smith', 'viewing', null],
    ]);
    assert.equal(describePerson(people[0], labelOf), 'Alice Johnson is editing Issue');
    assert.equal(describePerson(people[1], labelOf), 'Bob Smith is viewing');
    assert.equal(describePerson({ user: BOB, state: 'idle' }, labelOf), 'Bob Smith is idle here');
  });

  test('lock timing: idle since the last work, time to expiry', () => {
    const now = Date.parse('2026-01-01T10:00:00Z');
    const lock = { active_at: '2026-01-01T09:59:48.000Z', expires_at: '2026-01-01T10:01:35.000Z' };
    assert.equal(lockTiming(lock, now), 'idle 12 s · ends in 1 min 35 s');
    assert.equal(lockTiming({ expires_at: '2026-01-01T09:59:59Z' }, now), 'ending now');
  });
});

function requests(handler) {
  const http = new FakeFetch(handler);
  const api = createApi({ fetch: http.fetch, csrfToken: 'csrf', clientId: 'tab-1' });
  const seen = { incoming: [], answers: [], typing: [] };
  let time = 0;
  const service = createLockRequests({
    api, clientId: 'tab-1', userId: 1, now: () => time,
    onIncoming: (list) => seen.incoming.push(list.map((r) => r.id)),
    onAnswer: (request, answer) => seen.answers.push([request.id, answer]),
    onTyping: (caseId, field) => seen.typing.push([caseId, field]),
  });
  return { http, seen, service, advance: (ms) => { time += ms; } };
}

const REQUEST = { id: 'r1', case_id: 7, field: 'notes', asker: BOB, holder: ALICE, client_id: 'tab-1' };

describe('lock requests', () => {
  test('a free field comes back granted, a held one as our request', async () => {
    let held = false;
    const { http, seen, service } = requests(() => (held
      ? { status: 202, body: { request: { ...REQUEST, id: 'r9', asker: ALICE, holder: BOB, client_id: null } } }
      : { status: 200, body: { lock: { case_id: 7, field: 'notes', token: 't' } } }));
    assert.ok((await service.ask(7, 'notes')).granted);
    assert.equal(http.last.url, '/api/cases/7/locks/notes/requests');
    held = true;
    const asked = await service.ask(7, 'notes');
    assert.equal(asked.request.id, 'r9');
    service.handleEvent('lock-request-answered', { request: { id: 'other' }, answer: 'kept' });
    service.handleEvent('lock-request-answered', { request: { id: 'r9' }, answer: 'kept' });
    service.handleEvent('lock-request-answered', { request: { id: 'r9' }, answer: 'kept' });
    assert.deepEqual(seen.answers, [['r9', 'kept']]);
  });

  test('a refusal is an error to show', async () => {
    const { service } = requests(() => ({ status: 429, body: { error: 'rate_limited', message: 'too many' }, headers: { 'Retry-After': '5' } }));
    const result = await service.ask(7, 'notes');
    assert.equal(result.error.status, 429);
    assert.equal(result.error.message, 'too many');
  });

  test('only requests for this tab are shown, and they end with any answer or our release', async () => {
    const { seen, service } = requests(() => ({ status: 200, body: { request: {} } }));
    service.handleEvent('lock-requested', { request: { ...REQUEST, id: 'x', client_id: null } });
    service.handleEvent('lock-requested', { request: { ...REQUEST, id: 'y', client_id: 'tab-2' } });
    service.handleEvent('lock-requested', { request: REQUEST });
    assert.deepEqual(seen.incoming, [['r1']]);
    service.handleEvent('lock-released', { case_id: 7, field: 'notes', user: ALICE, client_id: 'tab-1', reason: 'released' });
    assert.deepEqual(seen.incoming, [['r1'], []]);
    service.handleEvent('lock-requested', { request: { ...REQUEST, id: 'r2' } });
    service.handleEvent('lock-request-answered', { request: { id: 'r2' }, answer: 'timeout' });
    assert.deepEqual(seen.incoming.at(-1), []);
  });

  test('answering posts the choice and takes the notice down at once', async () => {
    const { http, seen, service } = requests(() => ({ status: 200, body: { request: { answer: 'released' } } }));
    service.handleEvent('lock-requested', { request: REQUEST });
    const result = await service.answer('r1', 'release');
    assert.ok(result.ok);
    assert.equal(result.request.id, 'r1');
    assert.equal(http.last.url, '/api/lock-requests/r1');
    assert.deepEqual(http.last.body, { answer: 'release' });
    assert.deepEqual(seen.incoming, [['r1'], []]);
  });

  test('typing in an asked field saves every couple of seconds, other fields never', async () => {
    const { seen, service, advance } = requests(() => null);
    service.typing(7, 'notes');
    assert.deepEqual(seen.typing, []);
    service.handleEvent('lock-requested', { request: REQUEST });
    service.typing(7, 'notes');
    advance(1000);
    service.typing(7, 'notes');
    service.typing(7, 'issue');
    advance(1000);
    service.typing(7, 'notes');
    assert.deepEqual(seen.typing, [[7, 'notes'], [7, 'notes']]);
    await settle();
  });
});
