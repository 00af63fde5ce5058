import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { createApi } from '../../src/warrantysync/web/static/js/api.js';
import { createDrafts, draftsKey } from '../../src/warrantysync/web/static/js/drafts.js';
import { installFields } from '../../src/warrantysync/web/static/js/fields.js';
import { createSaver, retryToastKey } from '../../src/warrantysync/web/static/js/saver.js';
import { createStore } from '../../src/warrantysync/web/static/js/store.js';
import { FIELD_TABLE, FakeClock, FakeFetch, MemoryStorage, makeCase, settle } from './fakes.mjs';

installFields(FIELD_TABLE); // as main.js does from the page config

const DEBOUNCE = 1000;

function setup({ handler = null, conflictChoice = 'theirs', tokens = {}, storage = new MemoryStorage(), cases = [makeCase()] } = {}) {
  const clock = new FakeClock();
  const http = new FakeFetch(handler);
  const store = createStore({ clientId: 'tab-1' });
  store.applySnapshot({ cases, locks: [], presence: [], last_event_id: '1' });
  const api = createApi({ fetch: http.fetch, csrfToken: 'csrf-1', clientId: 'tab-1', now: clock.now });
  const toasts = [];
  const conflicts = [];
  const lost = [];
  let keys = 0;
  const drafts = createDrafts({ storage, key: draftsKey(7, 1), now: clock.now });
  const saver = createSaver({
    store, api, drafts,
    setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout,
    debounceMs: DEBOUNCE, random: () => 0.5,
    newKey: () => `key-${++keys}`,
    lockToken: (caseId, field) => tokens[`${caseId}:${field}`] ?? null,
    onConflict: async (...args) => {
      conflicts.push(args);
      return conflictChoice;
    },
    onToast: (message, kind, extra) => toasts.push(extra ? { message, kind, ...extra } : { message, kind }),
    onLockLost: (caseId, field) => lost.push([caseId, field]),
  });
  return { clock, http, store, saver, toasts, conflicts, lost, storage, drafts };
}

/** Answer a PATCH the way the server would: apply changes, bump version. */
function ok(call, store, extra = {}) {
  const current = store.getCase(Number(call.url.split('/').pop()));
  call.respond(200, { ...current, ...call.body.changes, version: current.version + 1, ...extra });
}

const patches = (http) => http.calls.filter((c) => c.method === 'PATCH');

describe('saver', () => {
  test('20 rapid keystrokes make one PATCH, DEBOUNCE_MS after the last', async () => {
    const { clock, http, saver, store } = setup();
    let text = '';
    for (let i = 0; i < 20; i += 1) {
      text += 'x';
      saver.edit(1, 'notes', text);
      await clock.tick(100);
    }
    assert.equal(patches(http).length, 0);
    assert.equal(store.saveState(1, 'notes'), 'dirty');
    await clock.tick(DEBOUNCE - 100 - 1);
    assert.equal(patches(http).length, 0);
    await clock.tick(1);
    assert.equal(patches(http).length, 1);
    const call = http.last;
    assert.equal(call.url, '/api/cases/1');
    assert.deepEqual(call.body, { changes: { notes: 'x'.repeat(20) }, expected: { notes: '' } });
    assert.equal(call.headers['X-Client-Id'], 'tab-1');
    assert.equal(call.headers['X-CSRF-Token'], 'csrf-1');
    assert.equal(call.headers['Content-Type'], 'application/json');
    assert.equal(call.headers['Idempotency-Key'], 'key-1');
    assert.equal(store.saveState(1, 'notes'), 'saving');
    ok(call, store);
    await settle();
    assert.equal(store.saveState(1, 'notes'), 'saved');
    assert.equal(store.hasEdit(1, 'notes'), false);
    assert.equal(store.displayValue(1, 'notes'), 'x'.repeat(20));
    assert.equal(saver.hasPending(), false);
  });

  test('dropdowns save at once and carry the lock token', async () => {
    const { http, saver } = setup({ tokens: { '1:status': 'tok-9' } });
    saver.edit(1, 'status', 'diagnosing');
    await settle();
    assert.equal(patches(http).length, 1);
    assert.deepEqual(http.last.body, {
      changes: { status: 'diagnosing' }, expected: { status: 'new' }, lock_tokens: { status: 'tok-9' },
    });
  });

  test('a case queue is serial: the second save waits for the first and coalesces', async () => {
    const { http, saver, store } = setup({ cases: [makeCase(), makeCase({ id: 2 })] });
    saver.edit(1, 'status', 'diagnosing');
    await settle();
    saver.edit(1, 'priority', 'high');
    saver.edit(1, 'assignee_id', 3);
    saver.edit(2, 'status', 'ready');
    await settle();
    assert.deepEqual(http.pending.map((c) => c.url), ['/api/cases/1', '/api/cases/2'], 'other cases do not wait');
    ok(http.pending[0], store);
    await settle();
    const second = http.pending.find((c) => c.url === '/api/cases/1');
    assert.deepEqual(second.body.changes, { priority: 'high', assignee_id: 3 });
    assert.deepEqual(second.body.expected, { priority: 'normal', assignee_id: null });
    assert.notEqual(second.headers['Idempotency-Key'], http.calls[0].headers['Idempotency-Key']);
  });

  test('typing on during a save: the newer text becomes the next save, based on the confirmed value', async () => {
    const { clock, http, saver, store } = setup();
    saver.edit(1, 'notes', 'abc');
    await clock.tick(DEBOUNCE);
    saver.edit(1, 'notes', 'abcd');
    ok(http.last, store);
    await settle();
    assert.equal(store.saveState(1, 'notes'), 'dirty');
    assert.equal(store.displayValue(1, 'notes'), 'abcd');
    await clock.tick(DEBOUNCE);
    assert.deepEqual(http.last.body, { changes: { notes: 'abcd' }, expected: { notes: 'abc' } });
  });

  test('flush sends at once and resolves after the answer', async () => {
    const { http, saver, store } = setup();
    saver.edit(1, 'customer_name', 'Ann Leigh');
    let done = false;
    const flushed = saver.flush(1, 'customer_name').then(() => { done = true; });
    await settle();
    assert.equal(patches(http).length, 1);
    assert.equal(done, false);
    ok(http.last, store);
    await flushed;
    assert.equal(store.saveState(1, 'customer_name'), 'saved');
  });

  test('4xx reverts to the confirmed value and toasts the refusal in words', async () => {
    const { http, saver, store, toasts, storage } = setup();
    saver.edit(1, 'customer_email', 'not-an-email');
    saver.flush(1);
    await settle();
    http.last.respond(422, {
      error: 'validation_error', message: 'customer_email: is not a valid email address (…)', field: 'customer_email', rule: 'email',
    });
    await settle();
    assert.equal(store.displayValue(1, 'customer_email'), '');
    assert.equal(store.hasEdit(1, 'customer_email'), false);
    assert.equal(store.saveState(1, 'customer_email'), 'error');
    assert.deepEqual(toasts.at(-1), { message: 'Email must be an email address, like name@example.com.', kind: 'error' });
    assert.equal(storage.getItem(draftsKey(7, 1)), null, 'no draft left to re-offer');
  });

  test('a 4xx naming one field reverts only that field and resends the rest', async () => {
    const { http, saver, store } = setup();
    saver.edit(1, 'status', 'ready');
    saver.edit(1, 'priority', 'urgent');
    await settle();
    http.last.respond(423, { error: 'locked', message: 'Locked by Bob Smith', lock: { case_id: 1, field: 'status', user: { id: 2, name: 'Bob Smith' } } });
    await settle();
    assert.equal(store.displayValue(1, 'status'), 'new');
    assert.deepEqual(http.last.body.changes, { priority: 'urgent' });
  });

  test('5xx and network errors retry with backoff and the same Idempotency-Key; 429 honours Retry-After', async () => {
    const { clock, http, saver, store, toasts } = setup();
    saver.edit(1, 'status', 'closed');
    await settle();
    http.last.respond(503, { error: 'unavailable', message: 'Try again.' }, { 'Retry-After': '3' });
    await settle();
    assert.equal(store.displayValue(1, 'status'), 'closed', 'edit kept');
    assert.equal(toasts.length, 1);
    assert.equal(toasts[0].key, retryToastKey(1), 'the retry toast can be taken down later');
    await clock.tick(2999);
    assert.equal(patches(http).length, 1);
    await clock.tick(1);
    assert.equal(patches(http).length, 2);
    http.last.fail();
    await settle();
    await clock.tick(1999);
    assert.equal(patches(http).length, 2, 'second retry waits the second backoff step');
    await clock.tick(1);
    assert.equal(patches(http).length, 3);
    http.last.respond(429, { error: 'rate_limited', message: 'Slow down.' }, { 'Retry-After': '10' });
    await settle();
    await clock.tick(9999);
    assert.equal(patches(http).length, 3);
    await clock.tick(1);
    const keys = new Set(patches(http).map((c) => c.headers['Idempotency-Key']));
    assert.deepEqual([...keys], ['key-1']);
    assert.deepEqual(patches(http).map((c) => c.body), Array(4).fill(patches(http)[0].body));
    ok(http.last, store);
    await settle();
    assert.equal(store.saveState(1, 'status'), 'saved');
  });

  test('409 conflict, keep theirs: their value shows, nothing resent', async () => {
    const { http, saver, store, conflicts } = setup({ conflictChoice: 'theirs' });
    saver.edit(1, 'notes', 'mine');
    saver.flush(1);
    await settle();
    http.last.respond(409, { error: 'conflict', message: 'Changed meanwhile', current: { notes: 'theirs' }, by: { id: 2, name: 'Bob' } });
    await settle();
    assert.deepEqual(conflicts, [[1, 'notes', 'theirs', 'mine', { id: 2, name: 'Bob' }]]);
    assert.equal(store.displayValue(1, 'notes'), 'theirs');
    assert.equal(store.hasEdit(1, 'notes'), false);
    assert.equal(patches(http).length, 1);
  });

  test('409 conflict, use mine: resent with expected = theirs', async () => {
    const { http, saver, store } = setup({ conflictChoice: 'mine' });
    saver.edit(1, 'notes', 'mine');
    saver.flush(1);
    await settle();
    http.last.respond(409, { error: 'conflict', message: 'Changed meanwhile', current: { notes: 'theirs' }, by: null });
    await settle();
    assert.equal(patches(http).length, 2);
    assert.deepEqual(http.last.body, { changes: { notes: 'mine' }, expected: { notes: 'theirs' } });
    assert.notEqual(http.last.headers['Idempotency-Key'], http.calls[0].headers['Idempotency-Key']);
    ok(http.last, store);
    await settle();
    assert.equal(store.displayValue(1, 'notes'), 'mine');
  });

  test('a remote change under an unsaved edit does not become its expected: 409, the user chooses', async () => {
    const { clock, http, saver, store, conflicts } = setup({ conflictChoice: 'mine' });
    saver.edit(1, 'customer_name', 'Mine');
    // Bob's save lands while ours waits for the debounce (no lock: say Redis is down).
    store.applyEvent('case-updated', {
      case_id: 1, changes: { customer_name: 'Theirs' }, version: 2, by: { id: 2, name: 'Bob' }, client_id: 'tab-2',
    }, 2);
    assert.equal(store.displayValue(1, 'customer_name'), 'Mine', 'the screen keeps what the user typed');
    saver.edit(1, 'customer_name', 'Mine!');
    await clock.tick(DEBOUNCE);
    assert.deepEqual(http.last.body, { changes: { customer_name: 'Mine!' }, expected: { customer_name: 'Ann Lee' } });
    http.last.respond(409, { error: 'conflict', message: 'Changed meanwhile', current: { customer_name: 'Theirs' }, by: { id: 2, name: 'Bob' } });
    await settle();
    assert.deepEqual(conflicts, [[1, 'customer_name', 'Theirs', 'Mine!', { id: 2, name: 'Bob' }]]);
    assert.deepEqual(http.last.body, { changes: { customer_name: 'Mine!' }, expected: { customer_name: 'Theirs' } });
  });

  test('typing on during a save: the next save is based on what the server stored, not on later news', async () => {
    const { clock, http, saver, store } = setup();
    saver.edit(1, 'notes', 'abc ');
    await clock.tick(DEBOUNCE);
    saver.edit(1, 'notes', 'abc d');
    ok(http.last, store, { notes: 'abc', version: 2 }); // the server trimmed it
    await settle();
    store.applyEvent('case-updated', {
      case_id: 1, changes: { notes: 'from bob' }, version: 3, by: { id: 2, name: 'Bob' }, client_id: 'tab-2',
    }, 3);
    await clock.tick(DEBOUNCE);
    assert.deepEqual(http.last.body, { changes: { notes: 'abc d' }, expected: { notes: 'abc' } });
  });

  test('409 conflict whose current equals mine counts as saved without asking', async () => {
    const { http, saver, store, conflicts } = setup();
    saver.edit(1, 'notes', 'same');
    saver.flush(1);
    await settle();
    http.last.respond(409, { error: 'conflict', message: 'x', current: { notes: 'same' }, by: null });
    await settle();
    assert.equal(conflicts.length, 0);
    assert.equal(store.saveState(1, 'notes'), 'saved');
  });

  test('409 lock_lost keeps the text visible and does not resend it on its own', async () => {
    const { clock, http, saver, store, toasts, lost } = setup({ tokens: { '1:notes': 'old-token' } });
    saver.edit(1, 'notes', 'my long note');
    saver.flush(1);
    await settle();
    http.last.respond(409, { error: 'lock_lost', message: 'Your lock on notes expired.', field: 'notes' });
    await settle();
    assert.equal(store.displayValue(1, 'notes'), 'my long note');
    assert.equal(store.saveState(1, 'notes'), 'error');
    assert.match(toasts.at(-1).message, /Your lock on notes expired/);
    assert.deepEqual(lost, [[1, 'notes']]);
    await clock.tick(60000);
    assert.equal(patches(http).length, 1);
    saver.edit(1, 'notes', 'my long note!');
    await clock.tick(DEBOUNCE);
    assert.equal(patches(http).length, 2, 'editing again saves again');
  });

  test('drafts survive a reload and are saved against the value they were typed on', async () => {
    const storage = new MemoryStorage();
    const first = setup({ storage });
    first.saver.edit(1, 'notes', 'unsaved work');
    assert.ok(storage.getItem(draftsKey(7, 1)).includes('unsaved work'));
    // The tab dies here. Meanwhile someone else changed the note.
    const second = setup({ storage, cases: [makeCase({ notes: 'changed by Bob', version: 2 })] });
    assert.equal(second.saver.restoreDrafts(), 1);
    assert.equal(second.store.displayValue(1, 'notes'), 'unsaved work');
    assert.equal(second.store.saveState(1, 'notes'), 'saving', 'saved straight away');
    await settle();
    assert.deepEqual(second.http.last.body, { changes: { notes: 'unsaved work' }, expected: { notes: '' } });
    ok(second.http.last, second.store);
    await settle();
    assert.equal(storage.getItem(draftsKey(7, 1)), null);
  });

  test('drafts for deleted cases or already-saved values are dropped', () => {
    const storage = new MemoryStorage();
    const first = setup({ storage, cases: [makeCase(), makeCase({ id: 2 })] });
    first.saver.edit(1, 'notes', 'a');
    first.saver.edit(2, 'notes', 'b');
    const second = setup({ storage, cases: [makeCase({ notes: 'a', version: 2 })] });
    assert.equal(second.saver.restoreDrafts(), 0);
    assert.equal(storage.getItem(draftsKey(7, 1)), null);
  });

  test('editing back to the confirmed value sends nothing', async () => {
    const { clock, http, saver, store } = setup();
    saver.edit(1, 'product', 'Kettle 2');
    saver.edit(1, 'product', 'Kettle');
    await clock.tick(DEBOUNCE);
    assert.equal(patches(http).length, 0);
    assert.equal(store.hasEdit(1, 'product'), false);
  });
});

describe('choices walked with the keyboard and drafts on hold', () => {
  test('a dropdown edit with debounce waits for the pause: three steps, one save', async () => {
    const { clock, http, saver } = setup();
    for (const status of ['diagnosing', 'awaiting_parts', 'in_repair']) {
      saver.edit(1, 'status', status, { debounce: true });
      await clock.tick(300);
    }
    assert.equal(patches(http).length, 0, 'nothing while the walk goes on');
    await clock.tick(1000);
    assert.equal(patches(http).length, 1);
    assert.deepEqual(http.last.body.changes, { status: 'in_repair' });
    assert.deepEqual(http.last.body.expected, { status: 'new' });
  });

  test('the walk is saved at once by a flush (Enter or blur)', async () => {
    const { http, saver } = setup();
    saver.edit(1, 'priority', 'high', { debounce: true });
    saver.flush(1, 'priority');
    await settle();
    assert.equal(patches(http).length, 1);
  });

  test('a held draft is not sent until flushed, and a discard drops it', async () => {
    const { clock, http, saver, store, storage } = setup();
    saver.edit(1, 'notes', 'typed before the lock went');
    assert.equal(saver.hold(1, 'notes'), true);
    assert.equal(saver.isHeld(1, 'notes'), true);
    await clock.tick(5000);
    assert.equal(patches(http).length, 0, 'held: never sent on its own');
    assert.equal(store.displayValue(1, 'notes'), 'typed before the lock went');
    assert.equal(store.saveState(1, 'notes'), 'dirty');
    assert.match(storage.getItem(draftsKey(7, 1)), /typed before the lock went/, 'kept across a reload');
    saver.discard(1, 'notes');
    assert.equal(saver.isHeld(1, 'notes'), false);
    assert.equal(store.displayValue(1, 'notes'), '');
    assert.equal(saver.hold(1, 'notes'), false, 'nothing to hold');
  });

  test('saving a held draft sends it with the value it was typed over', async () => {
    const { http, saver } = setup();
    saver.edit(1, 'notes', 'my draft');
    saver.hold(1, 'notes');
    saver.flush(1, 'notes');
    await settle();
    assert.equal(patches(http).length, 1);
    assert.deepEqual(http.last.body.expected, { notes: '' });
    assert.equal(saver.isHeld(1, 'notes'), false);
  });
});
