import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { createApi } from '../../src/warrantysync/web/static/js/api.js';
import { createLocks } from '../../src/warrantysync/web/static/js/locks.js';
import { FakeClock, FakeFetch, settle } from './fakes.mjs';

const RENEW = 10000;
const ME = { id: 1, name: 'Me' };
const BOB = { id: 2, name: 'Bob Smith' };

function setup(handler) {
  const clock = new FakeClock();
  const http = new FakeFetch(handler);
  const api = createApi({ fetch: http.fetch, csrfToken: 'csrf', clientId: 'tab-1' });
  const lost = [];
  const locks = createLocks({
    api, clientId: 'tab-1', userId: 1, renewMs: RENEW,
    setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout,
    onLost: (...args) => lost.push(args),
  });
  return { clock, http, locks, lost };
}

let tokens = 0;
const grant = (call) => ({
  status: 200,
  body: { lock: { case_id: 1, field: 'notes', user: { id: 1, name: 'Me' }, client_id: 'tab-1', expires_at: 'x', token: `t${++tokens}` } },
});

describe('locks', () => {
  test('acquire PUTs with X-Client-Id and CSRF, renews while held, DELETE on release', async () => {
    const { clock, http, locks } = setup(grant);
    const result = await locks.acquire(1, 'notes');
    assert.equal(result.ok, true);
    const put = http.calls[0];
    assert.equal(put.method, 'PUT');
    assert.equal(put.url, '/api/cases/1/locks/notes');
    assert.equal(put.headers['X-Client-Id'], 'tab-1');
    assert.equal(put.headers['X-CSRF-Token'], 'csrf');
    assert.match(await locks.tokenFor(1, 'notes'), /^t\d+$/);
    await clock.tick(RENEW);
    await clock.tick(RENEW);
    assert.equal(http.calls.filter((c) => c.method === 'PUT').length, 3);
    await locks.release(1, 'notes');
    assert.equal(http.last.method, 'DELETE');
    assert.equal(http.last.headers['X-Client-Id'], 'tab-1');
    await clock.tick(RENEW * 3);
    assert.equal(http.calls.length, 4, 'no renewals after release');
    assert.equal(await locks.tokenFor(1, 'notes'), null);
  });

  test('423 reports the holder', async () => {
    const { locks } = setup(() => ({
      status: 423,
      body: { error: 'locked', message: 'Locked by Bob Smith', lock: { case_id: 1, field: 'notes', user: BOB, client_id: 'b' } },
    }));
    const result = await locks.acquire(1, 'notes');
    assert.equal(result.ok, false);
    assert.equal(result.locked, true);
    assert.deepEqual(result.holder, BOB);
  });

  test('a release queued behind a refocus is skipped', async () => {
    const { http, locks } = setup(grant);
    await locks.acquire(1, 'notes');
    const released = locks.release(1, 'notes');
    await locks.acquire(1, 'notes');
    await released;
    await settle();
    assert.equal(http.calls.filter((c) => c.method === 'DELETE').length, 0);
    assert.equal(locks.holds(1, 'notes'), true);
  });

  test('someone else acquiring our field is reported as lost', async () => {
    const { locks, lost } = setup(grant);
    await locks.acquire(1, 'notes');
    locks.handleEvent('lock-acquired', { lock: { case_id: 1, field: 'notes', user: BOB, client_id: 'bob' } });
    assert.deepEqual(lost, [[1, 'notes', BOB]]);
    assert.equal(locks.holds(1, 'notes'), false);
  });

  test('a forced or expired release is reported, with the manager, and not taken back', async () => {
    const { clock, http, locks, lost } = setup(grant);
    const me = { case_id: 1, field: 'notes', user: { id: 1, name: 'Me' }, client_id: 'tab-1' };
    const dave = { id: 4, name: 'Dave Kim' };
    await locks.acquire(1, 'notes');
    locks.handleEvent('lock-released', { ...me, reason: 'forced', by: dave });
    await locks.acquire(1, 'issue');
    locks.handleEvent('lock-released', { ...me, field: 'issue', reason: 'expired' });
    await settle();
    await clock.tick(RENEW * 2);
    assert.equal(http.calls.filter((c) => c.method === 'PUT').length, 2, 'neither taken back nor renewed');
    assert.equal(locks.holds(1, 'notes'), false);
    assert.equal(locks.holds(1, 'issue'), false);
    assert.deepEqual(lost, [[1, 'notes', dave, 'forced'], [1, 'issue', null, 'expired']]);
  });

  test('a lock released because the tab was disconnected is taken back while focused', async () => {
    const { http, locks, lost } = setup(grant);
    await locks.acquire(1, 'notes');
    const me = { case_id: 1, field: 'notes', user: { id: 1, name: 'Me' }, client_id: 'tab-1' };
    locks.handleEvent('lock-released', { ...me, reason: 'disconnected' });
    await settle();
    assert.equal(http.calls.filter((c) => c.method === 'PUT').length, 2);
    assert.equal(locks.holds(1, 'notes'), true);
    assert.deepEqual(lost, []);
  });

  test('another user acquiring our field under our client id is still someone else', async () => {
    const { locks, lost } = setup(grant);
    await locks.acquire(1, 'notes');
    locks.handleEvent('lock-acquired', { lock: { case_id: 1, field: 'notes', user: BOB, client_id: 'tab-1' } });
    assert.deepEqual(lost, [[1, 'notes', BOB]]);
    assert.equal(locks.holds(1, 'notes'), false);
  });

  test('ready with our field held by another user under our client id: lost', async () => {
    const { locks, lost } = setup(grant);
    await locks.acquire(1, 'notes');
    locks.handleEvent('ready', { locks: [{ case_id: 1, field: 'notes', user: BOB, client_id: 'tab-1' }] });
    assert.deepEqual(lost, [[1, 'notes', BOB]]);
    locks.handleEvent('ready', { locks: [] });
    await locks.acquire(1, 'notes');
    locks.handleEvent('ready', { locks: [{ case_id: 1, field: 'notes', user: ME, client_id: 'tab-1' }] });
    assert.equal(locks.holds(1, 'notes'), true, 'our own lock in ready stays ours');
  });

  test('a release of another user\'s lock under our client id is not ours', async () => {
    const { http, locks, lost } = setup(grant);
    await locks.acquire(1, 'notes');
    locks.handleEvent('lock-released', { case_id: 1, field: 'notes', user: BOB, client_id: 'tab-1', reason: 'forced' });
    await settle();
    assert.equal(locks.holds(1, 'notes'), true);
    assert.deepEqual(lost, []);
    assert.equal(http.calls.length, 1);
  });

  test('a renewal refused for want of a stream keeps the lock and keeps renewing', async () => {
    let refuse = false;
    const { clock, http, locks, lost } = setup((call) => (refuse
      ? { status: 409, body: { error: 'stream_required', message: 'no stream', lock: { case_id: 1, field: 'notes', user: ME, client_id: 'tab-1' } } }
      : grant(call)));
    await locks.acquire(1, 'notes');
    const token = await locks.tokenFor(1, 'notes');
    refuse = true;
    await clock.tick(RENEW);
    assert.equal(await locks.tokenFor(1, 'notes'), token, 'still ours until it expires');
    refuse = false;
    await clock.tick(RENEW);
    assert.equal(http.calls.filter((c) => c.method === 'PUT').length, 3, 'renewed once the stream is back');
    assert.equal(locks.holds(1, 'notes'), true);
    assert.deepEqual(lost, []);
  });

  test('a renewal barred after a forced release reports it as forced', async () => {
    let barred = false;
    const { clock, locks, lost } = setup((call) => (barred
      ? { status: 423, headers: { 'Retry-After': '60' }, body: { error: 'lock_barred', message: 'A manager released your lock', field: 'notes' } }
      : grant(call)));
    await locks.acquire(1, 'notes');
    barred = true;
    await clock.tick(RENEW);
    assert.deepEqual(lost, [[1, 'notes', null, 'forced']]);
    assert.equal(locks.holds(1, 'notes'), false);
    const again = await locks.acquire(1, 'notes');
    assert.equal(again.ok, false);
    assert.equal(again.forced, true);
    assert.equal(again.message, 'A manager released your lock');
  });

  test('too many locks: edit on without one, say why, keep trying', async () => {
    let full = true;
    const { clock, http, locks } = setup((call) => (full
      ? { status: 429, headers: { 'Retry-After': '20' }, body: { error: 'too_many_locks', message: 'you already hold 5 locks', limit: 5 } }
      : grant(call)));
    const result = await locks.acquire(1, 'notes');
    assert.deepEqual([result.ok, result.transient, result.code], [false, true, 'too_many_locks']);
    full = false;
    await clock.tick(RENEW);
    assert.equal(http.calls.length, 2);
    assert.equal(locks.holds(1, 'notes'), true, 'taken once a slot is free');
  });

  test('a lock missing from ready is taken back while still focused', async () => {
    const { http, locks } = setup(grant);
    await locks.acquire(1, 'notes');
    locks.handleEvent('ready', { locks: [] });
    await settle();
    assert.equal(http.calls.filter((c) => c.method === 'PUT').length, 2);
    assert.equal(locks.holds(1, 'notes'), true);
  });
});

test('refocus while the blur save is still in flight keeps the lock', async () => {
  const { http, locks } = setup(grant);
  await locks.acquire(1, 'notes');
  let finishSave;
  const save = new Promise((resolve) => { finishSave = resolve; });
  const released = locks.release(1, 'notes', save);
  assert.match(await locks.tokenFor(1, 'notes'), /^t\d+$/, 'the blur save can still read the token');
  await locks.acquire(1, 'notes');
  finishSave();
  await released;
  assert.equal(http.calls.filter((c) => c.method === 'DELETE').length, 0);
  assert.equal(locks.holds(1, 'notes'), true);
});
