import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { createApi } from '../../src/warrantysync/web/static/js/api.js';
import { installFields } from '../../src/warrantysync/web/static/js/fields.js';
import { createSaver } from '../../src/warrantysync/web/static/js/saver.js';
import { createStore } from '../../src/warrantysync/web/static/js/store.js';
import { createUndo, undoKey } from '../../src/warrantysync/web/static/js/undo.js';
import { undoKeyOf } from '../../src/warrantysync/web/static/js/view-undo.js';
import { FIELD_TABLE, FakeClock, FakeFetch, MemoryStorage, makeCase, settle } from './fakes.mjs';

installFields(FIELD_TABLE);

const BOB = { id: 8, name: 'Bob Smith' };

/**
 * A server as far as these requests go: PATCH with the `expected` check,
 * and a history whose entries a restore brings back.
 */
class Server {
  constructor(cases) {
    this.cases = new Map(cases.map((c) => [c.id, { ...c }]));
    this.history = new Map(); // entry id -> {field, new}
  }

  change(caseId, changes) {
    const json = this.cases.get(caseId);
    Object.assign(json, changes, { version: json.version + 1 });
    return { ...json };
  }

  /** Someone else's save. */
  theirs(caseId, changes) {
    this.lastBy = BOB;
    return this.change(caseId, changes);
  }

  check(caseId, expected) {
    const json = this.cases.get(caseId);
    const stale = Object.entries(expected).filter(([field, value]) => json[field] !== value);
    if (!stale.length) return null;
    const current = Object.fromEntries(stale.map(([field]) => [field, json[field]]));
    return { status: 409, body: { error: 'conflict', message: 'Changed meanwhile.', current, by: this.lastBy ?? null } };
  }

  handle = (call) => {
    const caseId = Number(call.url.split('/')[3]);
    if (!this.cases.has(caseId)) return { status: 404, body: { error: 'not_found', message: 'No such case.' } };
    if (call.method === 'PATCH') {
      const refused = this.check(caseId, call.body.expected ?? {});
      return refused ?? { status: 200, body: this.change(caseId, call.body.changes) };
    }
    const entry = this.history.get(Number(call.url.split('/')[5]));
    const refused = 'expected' in call.body ? this.check(caseId, { [entry.field]: call.body.expected }) : null;
    return refused ?? { status: 200, body: this.change(caseId, { [entry.field]: entry.new }) };
  };
}

function tab({ server, storage = new MemoryStorage(), choice = 'theirs', cases = [...server.cases.values()] }) {
  const clock = new FakeClock();
  const http = new FakeFetch(server.handle);
  const store = createStore({ clientId: 'tab-1', userId: 7 });
  store.applySnapshot({ cases: cases.map((c) => ({ ...c })), locks: [], presence: [], last_event_id: '1' });
  const api = createApi({ fetch: http.fetch, csrfToken: 'csrf', clientId: 'tab-1', now: clock.now });
  const toasts = [];
  const conflicts = [];
  let undo = null;
  const saver = createSaver({
    store, api, setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout, debounceMs: 1000,
    onSaved: (caseId, changes) => undo.record(caseId, changes),
  });
  undo = createUndo({
    store, submit: saver.submit, settle: () => saver.flushAll(),
    onConflict: async (...args) => {
      conflicts.push(args);
      return choice;
    },
    onToast: (message, kind) => toasts.push({ message, kind }),
    storage, key: undoKey(7, 1),
  });
  /** The user picks or types a value, and it is saved. */
  async function edit(caseId, field, value) {
    saver.edit(caseId, field, value);
    await clock.tick(1000);
    await saver.flushAll();
  }
  const sent = () => http.calls.filter((c) => c.method !== 'GET').map((c) => ({ method: c.method, url: c.url, body: c.body }));
  return { clock, http, store, saver, undo, toasts, conflicts, edit, sent, storage };
}

describe('undo', () => {
  test('undoes the tab’s saved changes newest first, each a PATCH expecting the value set', async () => {
    const server = new Server([makeCase()]);
    const t = tab({ server });
    await t.edit(1, 'status', 'diagnosing');
    await t.edit(1, 'priority', 'high');
    await t.edit(1, 'status', 'rejected');
    assert.equal(t.undo.nextUndo(), 'Status of WC-000001');
    const before = t.sent().length;

    assert.equal(await t.undo.undo(), true);
    assert.equal(await t.undo.undo(), true);
    assert.equal(await t.undo.undo(), true);
    assert.equal(await t.undo.undo(), false); // nothing left

    assert.deepEqual(t.sent().slice(before).map((c) => c.body), [
      { changes: { status: 'diagnosing' }, expected: { status: 'rejected' } },
      { changes: { priority: 'normal' }, expected: { priority: 'high' } },
      { changes: { status: 'new' }, expected: { status: 'diagnosing' } },
    ]);
    assert.deepEqual([server.cases.get(1).status, server.cases.get(1).priority], ['new', 'normal']);
    assert.equal(t.store.confirmedValue(1, 'status'), 'new');
    assert.equal(t.undo.nextUndo(), null);
  });

  test('redo sets again what was undone; a new save ends what there is to redo', async () => {
    const server = new Server([makeCase()]);
    const t = tab({ server });
    await t.edit(1, 'status', 'diagnosing');
    await t.edit(1, 'status', 'in_repair');
    await t.undo.undo();
    await t.undo.undo();
    assert.equal(server.cases.get(1).status, 'new');

    assert.equal(await t.undo.redo(), true);
    assert.equal(server.cases.get(1).status, 'diagnosing');
    assert.deepEqual(t.sent().at(-1).body, { changes: { status: 'diagnosing' }, expected: { status: 'new' } });
    assert.equal(t.undo.nextRedo(), 'Status of WC-000001');

    await t.edit(1, 'priority', 'urgent');
    assert.equal(t.undo.nextRedo(), null);
    assert.equal(await t.undo.redo(), false);
    await t.undo.undo(); // the priority, then the redone status
    await t.undo.undo();
    assert.deepEqual([server.cases.get(1).status, server.cases.get(1).priority], ['new', 'normal']);
  });

  test('a field someone else changed since is not overwritten: they are named, and the undo may be applied anyway', async () => {
    const server = new Server([makeCase()]);
    const keep = tab({ server });
    await keep.edit(1, 'status', 'rejected');
    server.theirs(1, { status: 'ready' });

    assert.equal(await keep.undo.undo(), false);
    assert.equal(server.cases.get(1).status, 'ready');
    assert.equal(keep.store.confirmedValue(1, 'status'), 'ready'); // the 409 told us
    assert.deepEqual(keep.conflicts, [[1, 'status', 'ready', 'new', BOB, 'undo']]);
    assert.equal(keep.undo.nextUndo(), null); // their value stands; nothing to undo there

    const fresh = new Server([makeCase()]);
    const anyway = tab({ server: fresh, choice: 'mine' });
    await anyway.edit(1, 'status', 'rejected');
    fresh.theirs(1, { status: 'ready' });
    assert.equal(await anyway.undo.undo(), true);
    assert.equal(fresh.cases.get(1).status, 'new');
    assert.deepEqual(anyway.sent().slice(-2).map((c) => c.body.expected), [{ status: 'rejected' }, { status: 'ready' }]);
    assert.equal(anyway.undo.nextRedo(), 'Status of WC-000001');
  });

  test('restore of a history entry expects the value shown now and can be undone', async () => {
    const server = new Server([makeCase({ status: 'closed' })]);
    server.history.set(41, { field: 'status', new: 'in_repair' });
    const t = tab({ server });

    assert.equal(await t.undo.restore(1, { id: 41, field: 'status', old: 'new', new: 'in_repair' }), true);
    assert.deepEqual(t.sent().at(-1), {
      method: 'POST', url: '/api/cases/1/history/41/restore', body: { expected: 'closed', side: 'new' },
    });
    assert.equal(t.store.confirmedValue(1, 'status'), 'in_repair');
    await t.undo.undo();
    assert.equal(server.cases.get(1).status, 'closed');

    server.theirs(1, { status: 'ready' });
    assert.equal(await t.undo.restore(1, { id: 41, field: 'status', old: 'new', new: 'in_repair' }), false);
    assert.deepEqual(t.conflicts.at(-1), [1, 'status', 'ready', 'in_repair', BOB, 'restore']);
    assert.equal(server.cases.get(1).status, 'ready');
  });

  test('a reload takes back only the steps that are still right', async () => {
    const server = new Server([makeCase(), makeCase({ id: 2, case_number: 'WC-000002' })]);
    const storage = new MemoryStorage();
    const first = tab({ server, storage });
    await first.edit(1, 'status', 'diagnosing');
    await first.edit(2, 'priority', 'high');
    await first.edit(1, 'priority', 'urgent');
    await first.edit(1, 'notes', 'called the customer');
    first.undo.park(); // the page goes

    // Meanwhile Bob changed the priority of case 1: the steps from there down no longer fit.
    server.theirs(1, { priority: 'low' });
    const again = tab({ server, storage, cases: [...server.cases.values()] });
    assert.equal(again.undo.resume(), 1);
    assert.equal(again.undo.nextUndo(), 'Notes of WC-000001');
    await again.undo.undo();
    assert.equal(await again.undo.undo(), false);
    assert.deepEqual([server.cases.get(1).notes, server.cases.get(1).priority, server.cases.get(2).priority], ['', 'low', 'high']);

    // Back from the back/forward cache the page lives on: a duplicate of the tab starts empty.
    again.undo.park();
    again.undo.unpark();
    assert.equal(tab({ server, storage }).undo.resume(), 0);

    // A second load of the same tab finds nothing left over, and a gone case ends the run.
    const third = tab({ server, storage });
    assert.equal(third.undo.resume(), 0);
    const fourth = tab({ server, storage: new MemoryStorage() });
    assert.equal(fourth.undo.resume(), 0);
    await fourth.edit(2, 'status', 'ready');
    fourth.undo.park();
    const gone = tab({ server, storage: fourth.storage, cases: [server.cases.get(1)] });
    assert.equal(gone.undo.resume(), 0);
  });

  test('a stored stack that is not ours is ignored', () => {
    const server = new Server([makeCase()]);
    const storage = new MemoryStorage();
    storage.setItem(undoKey(7, 1), '{"done": [{"caseId": "1", "changes": []}, 5], "undone": "x"}');
    assert.equal(tab({ server, storage }).undo.resume(), 0);
    storage.setItem(undoKey(7, 1), 'not json');
    assert.equal(tab({ server, storage }).undo.resume(), 0);
  });
});

test('undo is queued behind a pending save: the edit lands first, as a step of its own', async () => {
  const server = new Server([makeCase()]);
  const t = tab({ server });
  t.saver.edit(1, 'notes', 'typed');
  await settle();
  await t.undo.undo(); // settles the typing first, then undoes it
  assert.deepEqual(t.sent().map((c) => c.body), [
    { changes: { notes: 'typed' }, expected: { notes: '' } },
    { changes: { notes: '' }, expected: { notes: 'typed' } },
  ]);
  assert.equal(server.cases.get(1).notes, '');
});

test('the keys: Ctrl+Z undoes, Ctrl+Shift+Z and Ctrl+Y redo (⌘ too); nothing else does', () => {
  const key = (k, mods = {}) => undoKeyOf({ key: k, ctrlKey: false, metaKey: false, shiftKey: false, altKey: false, ...mods });
  assert.equal(key('z', { ctrlKey: true }), 'undo');
  assert.equal(key('z', { metaKey: true }), 'undo');
  assert.equal(key('Z', { ctrlKey: true, shiftKey: true }), 'redo');
  assert.equal(key('y', { ctrlKey: true }), 'redo');
  assert.equal(key('z'), null); // a typed character
  assert.equal(key('z', { ctrlKey: true, altKey: true }), null);
  assert.equal(key('Y', { ctrlKey: true, shiftKey: true }), null);
});
