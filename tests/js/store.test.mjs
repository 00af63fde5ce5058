import assert from 'node:assert/strict';
import { beforeEach, describe, test } from 'node:test';

import { createStore } from '../../src/warrantysync/web/static/js/store.js';
import { makeCase } from './fakes.mjs';

const ME = { id: 1, name: 'Me' };
const BOB = { id: 2, name: 'Bob Smith' };

function update(changes, version, clientId = 'other-tab', by = BOB) {
  return { case_id: 1, changes, version, by, client_id: clientId };
}

describe('store merge rules', () => {
  let store;
  let changes;
  beforeEach(() => {
    store = createStore({ clientId: 'me', userId: 1 });
    store.applySnapshot({ cases: [makeCase(), makeCase({ id: 2, case_number: 'WC-000002' })], locks: [], presence: [], last_event_id: '5' });
    changes = [];
    store.subscribe((c) => changes.push(c));
  });

  test('remote update to another field applies and is flagged remote', () => {
    store.applyEvent('case-updated', update({ status: 'diagnosing' }, 2), 6);
    assert.equal(store.displayValue(1, 'status'), 'diagnosing');
    assert.equal(store.getCase(1).version, 2);
    const change = changes.find((c) => c.type === 'case');
    assert.deepEqual(change.fields, ['status']);
    assert.equal(change.remote, true);
    assert.deepEqual(change.by, BOB);
  });

  test('a field with an unsaved local change is never overwritten, but its confirmed value moves', () => {
    store.setEdit(1, 'notes', 'my text');
    store.applyEvent('case-updated', update({ notes: 'their text', status: 'ready' }, 2), 6);
    assert.equal(store.displayValue(1, 'notes'), 'my text');
    assert.equal(store.confirmedValue(1, 'notes'), 'their text');
    assert.equal(store.displayValue(1, 'status'), 'ready');
  });

  test('a focused field keeps what it showed at focus time, even without an edit', () => {
    store.setFocus(1, 'customer_name');
    store.applyEvent('case-updated', update({ customer_name: 'Someone Else' }, 2), 6);
    assert.equal(store.displayValue(1, 'customer_name'), 'Ann Lee');
    assert.equal(store.confirmedValue(1, 'customer_name'), 'Someone Else');
    store.clearFocus(1, 'customer_name');
    assert.equal(store.displayValue(1, 'customer_name'), 'Someone Else');
  });

  test('snapshot follows the same rules and skips older versions', () => {
    store.setEdit(1, 'notes', 'draft');
    store.setFocus(1, 'product');
    store.applyEvent('case-updated', update({ priority: 'high' }, 3), 6);
    store.applySnapshot({
      cases: [
        makeCase({ version: 2, priority: 'low', notes: 'old' }),
        makeCase({ id: 2, case_number: 'WC-000002', version: 2, notes: 'theirs', product: 'Toaster' }),
      ],
      locks: [], presence: [], last_event_id: '6',
    });
    assert.equal(store.displayValue(1, 'priority'), 'high', 'version 2 is older than what we have');
    assert.equal(store.displayValue(1, 'notes'), 'draft');
    assert.equal(store.displayValue(2, 'notes'), 'theirs');
    assert.equal(store.displayValue(2, 'product'), 'Toaster');
    store.setFocus(2, 'product');
    store.applySnapshot({ cases: [makeCase({ version: 3, priority: 'high' }), makeCase({ id: 2, version: 3, product: 'Fridge' })], last_event_id: '7' });
    assert.equal(store.displayValue(2, 'product'), 'Toaster', 'focused');
    assert.equal(store.confirmedValue(2, 'product'), 'Fridge');
  });

  test('case-deleted removes the case with its edits and locks', () => {
    store.setEdit(1, 'notes', 'draft');
    store.applyEvent('lock-acquired', { lock: { case_id: 1, field: 'status', user: BOB, client_id: 'x' } });
    store.applyEvent('case-deleted', { case_id: 1, by: BOB, client_id: 'other' }, 6);
    assert.equal(store.getCase(1), null);
    assert.equal(store.hasEdits(), false);
    assert.equal(store.lock(1, 'status'), null);
    const deleted = changes.find((c) => c.type === 'deleted');
    assert.equal(deleted.discardedEdits, 1);
    assert.equal(deleted.remote, true);
  });

  test('a snapshot without a case removes it, unless it appeared after the snapshot was taken', () => {
    store.applyEvent('case-created', { case: makeCase({ id: 3, case_number: 'WC-000003' }), by: BOB, client_id: 'x' }, 9);
    store.addOwnCase(makeCase({ id: 4, case_number: 'WC-000004' }));
    store.applySnapshot({ cases: [makeCase()], locks: [], presence: [], last_event_id: '8' });
    assert.equal(store.getCase(2), null, 'gone at 8');
    assert.ok(store.getCase(3), 'created at 9, after the snapshot');
    assert.ok(store.getCase(4), 'our own create whose event has not come yet');
  });

  test('own echo updates confirmed value and version but is not a remote edit', () => {
    store.setEdit(1, 'notes', 'typing more');
    store.applyEvent('case-updated', update({ notes: 'typing' }, 2, 'me', ME), 6);
    assert.equal(store.getCase(1).version, 2);
    assert.equal(store.confirmedValue(1, 'notes'), 'typing');
    assert.equal(store.displayValue(1, 'notes'), 'typing more', 'the local edit is untouched');
    const change = changes.find((c) => c.type === 'case');
    assert.equal(change.remote, false);
  });

  test('an echo whose version we already have is ignored', () => {
    store.applyCase(makeCase({ version: 2, notes: 'saved' }), { remote: false });
    changes.length = 0;
    store.applyEvent('case-updated', update({ notes: 'saved' }, 2, 'me', ME), 6);
    assert.deepEqual(changes, []);
  });

  test('update for an unknown case asks for a resync', () => {
    assert.equal(store.applyEvent('case-updated', { case_id: 99, changes: {}, version: 2 }, 6), false);
  });

  test('locks: ready replaces, lock-released only from the holder, lockedByOther ignores our own', () => {
    const mine = { case_id: 1, field: 'notes', user: { id: 1, name: 'Me' }, client_id: 'me' };
    const theirs = { case_id: 1, field: 'status', user: BOB, client_id: 'bob-tab' };
    store.applyEvent('ready', { locks: [mine, theirs], presence: [{ user: BOB, clients: 1 }] });
    assert.equal(store.lockedByOther(1, 'notes'), null);
    assert.deepEqual(store.lockedByOther(1, 'status'), theirs);
    store.applyEvent('lock-released', { case_id: 1, field: 'status', user: BOB, client_id: 'someone-else', reason: 'released' });
    assert.ok(store.lock(1, 'status'), 'a stale release from another owner is ignored');
    store.applyEvent('lock-released', { case_id: 1, field: 'status', user: BOB, client_id: 'bob-tab', reason: 'expired' });
    assert.equal(store.lock(1, 'status'), null);
    assert.equal(store.presence().length, 1);
  });

  test('a lock under our client id but another user is theirs, in every list and event', () => {
    const borrowed = { case_id: 1, field: 'notes', user: BOB, client_id: 'me' };
    store.applyEvent('ready', { locks: [borrowed] });
    assert.deepEqual(store.lockedByOther(1, 'notes'), borrowed);
    store.applySnapshot({ cases: [makeCase()], locks: [borrowed], presence: [], last_event_id: '5' });
    assert.deepEqual(store.lockedByOther(1, 'notes'), borrowed);
    store.applyEvent('lock-acquired', { lock: { ...borrowed, field: 'status' } });
    assert.ok(store.lockedByOther(1, 'status'));
    // Our own lock, as the server shows it to us, is ours.
    store.applyEvent('lock-acquired', { lock: { case_id: 1, field: 'product', user: ME, client_id: 'me' } });
    assert.equal(store.lockedByOther(1, 'product'), null);
  });

  test('a release by another user under the same client id does not free the lock', () => {
    const ours = { case_id: 1, field: 'notes', user: ME, client_id: 'me' };
    store.applyEvent('lock-acquired', { lock: ours });
    store.applyEvent('lock-released', { case_id: 1, field: 'notes', user: BOB, client_id: 'me', reason: 'released' });
    assert.deepEqual(store.lock(1, 'notes'), ours);
    store.applyEvent('lock-released', { case_id: 1, field: 'notes', user: ME, client_id: 'me', reason: 'released' });
    assert.equal(store.lock(1, 'notes'), null);
  });

  test('another user\'s lock shows no client id: its release (also without one) frees it', () => {
    const theirs = { case_id: 1, field: 'status', user: BOB, client_id: null };
    store.applyEvent('lock-acquired', { lock: theirs });
    assert.deepEqual(store.lockedByOther(1, 'status'), theirs);
    store.applyEvent('lock-released', { case_id: 1, field: 'status', user: { id: 3, name: 'Carol' }, client_id: null, reason: 'expired' });
    assert.ok(store.lock(1, 'status'), 'a release of someone else\'s lock is ignored');
    store.applyEvent('lock-released', { case_id: 1, field: 'status', user: BOB, client_id: null, reason: 'expired' });
    assert.equal(store.lock(1, 'status'), null);
  });

  test('a case event under our client id from another user is remote, not our echo', () => {
    store.applyEvent('case-updated', update({ notes: 'spoofed' }, 2, 'me', BOB), 6);
    assert.equal(changes.find((c) => c.type === 'case').remote, true);
    store.applyEvent('case-created', { case: makeCase({ id: 3, case_number: 'WC-000003' }), by: BOB, client_id: 'me' }, 7);
    assert.equal(changes.find((c) => c.type === 'created').remote, true);
    store.applyEvent('case-deleted', { case_id: 2, by: BOB, client_id: 'me' }, 8);
    assert.equal(changes.find((c) => c.type === 'deleted').remote, true);
    store.applyEvent('case-deleted', { case_id: 3, by: ME, client_id: 'me' }, 9);
    assert.equal(changes.filter((c) => c.type === 'deleted')[1].remote, false);
  });

  test('revert shows the confirmed value even in a focused control', () => {
    store.setFocus(1, 'notes');
    store.setEdit(1, 'notes', 'bad');
    store.revert(1, 'notes');
    assert.equal(store.displayValue(1, 'notes'), '');
    assert.equal(changes.at(-1).force, true);
  });
});

test('a snapshot taken while the stream is live leaves locks and presence to the stream', () => {
  const store = createStore({ clientId: 'me', userId: 1 });
  const lock = { case_id: 1, field: 'notes', user: BOB, client_id: 'bob' };
  store.applySnapshot({ cases: [makeCase()], locks: [], presence: [], last_event_id: '1' });
  store.applyEvent('lock-acquired', { lock });
  store.applySnapshot({ cases: [makeCase()], locks: [], presence: [], last_event_id: '1' }, { ephemeral: false });
  assert.deepEqual(store.lock(1, 'notes'), lock);
  store.applySnapshot({ cases: [makeCase()], locks: [], presence: [], last_event_id: '1' });
  assert.equal(store.lock(1, 'notes'), null);
});

describe('live state (locks and presence known or not)', () => {
  const snapshot = (liveState) => ({ cases: [makeCase()], locks: [], presence: [], last_event_id: '5', live_state: liveState });

  test('starts available and follows the snapshot while the stream is not connected', () => {
    const store = createStore({ clientId: 'me' });
    const changes = [];
    store.subscribe((c) => changes.push(c.type));
    assert.equal(store.liveState(), 'ok');
    store.applySnapshot(snapshot('unavailable'));
    assert.equal(store.liveState(), 'unavailable');
    assert.ok(changes.includes('live-state'));
    store.applySnapshot(snapshot('ok'));
    assert.equal(store.liveState(), 'ok');
  });

  test('ready and state set it; a connected stream outranks a snapshot fetched beside it', () => {
    const store = createStore({ clientId: 'me' });
    store.applyEvent('ready', { locks: [], presence: [], live_state: 'unavailable' });
    assert.equal(store.liveState(), 'unavailable');
    store.applySnapshot(snapshot('ok'), { ephemeral: false });
    assert.equal(store.liveState(), 'unavailable');
    store.applyEvent('state', { locks: [], presence: [], live_state: 'ok' });
    assert.equal(store.liveState(), 'ok');
  });

  test('a server that never sends the flag counts as available', () => {
    const store = createStore({ clientId: 'me' });
    store.applyEvent('state', { locks: [], presence: [], live_state: 'unavailable' });
    store.applyEvent('ready', { locks: [], presence: [] });
    assert.equal(store.liveState(), 'ok');
  });
});

describe('a page of the list, not the whole branch', () => {
  test('cases left out of a page are forgotten, not deleted, unless kept or being edited', () => {
    const store = createStore({ clientId: 'me', userId: 1 });
    const cases = [1, 2, 3, 4].map((id) => makeCase({ id, case_number: `WC-00000${id}` }));
    store.applySnapshot({ cases, locks: [], presence: [], last_event_id: '9' });
    store.setEdit(3, 'notes', 'typing');
    const changes = [];
    store.subscribe((c) => changes.push(c));
    store.applySnapshot({ cases: [cases[0]], last_event_id: '9' }, { keep: (id) => id === 2 });
    assert.deepEqual([1, 2, 3, 4].map((id) => store.getCase(id) !== null), [true, true, true, false]);
    assert.deepEqual(changes.filter((c) => c.type === 'forgotten').map((c) => c.caseId), [4]);
    assert.equal(changes.some((c) => c.type === 'deleted'), false);
  });

  test('a later page adds its cases and leaves the others alone', () => {
    const store = createStore({ clientId: 'me', userId: 1 });
    store.applySnapshot({ cases: [makeCase({ id: 1 })], last_event_id: '3' });
    store.applySnapshot({ cases: [makeCase({ id: 2 })], last_event_id: '3' }, { whole: false, ephemeral: false });
    assert.deepEqual([store.getCase(1)?.id, store.getCase(2)?.id], [1, 2]);
  });

  test('an update for a case the store does not hold says so', () => {
    const store = createStore({ clientId: 'me', userId: 1 });
    store.applySnapshot({ cases: [makeCase({ id: 1 })], last_event_id: '3' });
    const data = { case_id: 77, changes: { status: 'ready' }, version: 2, by: BOB, client_id: 'x' };
    assert.equal(store.applyEvent('case-updated', data, 4), false);
    assert.equal(store.getCase(77), null);
  });
});
