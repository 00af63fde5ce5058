import assert from 'node:assert/strict';
import { test } from 'node:test';

import { createApi } from '../../src/warrantysync/web/static/js/api.js';
import { createSync } from '../../src/warrantysync/web/static/js/sync.js';
import { FakeClock, FakeFetch, settle } from './fakes.mjs';

function setup() {
  const clock = new FakeClock();
  let version = 1;
  const http = new FakeFetch((call) => (call.headers['If-None-Match'] === `"v${version}"`
    ? { status: 304, headers: { ETag: `"v${version}"` } }
    : { status: 200, body: { cases: [], locks: [], presence: [], last_event_id: String(version) }, headers: { ETag: `"v${version}"` } }));
  const snapshots = [];
  const sync = createSync({
    api: createApi({ fetch: http.fetch }), url: '/api/branches/1/cases', intervalMs: 60000,
    setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout, onSnapshot: (s) => snapshots.push(s),
  });
  return { clock, http, sync, snapshots, bump: () => { version += 1; } };
}

test('periodic sync sends If-None-Match and a 304 costs nothing', async () => {
  const { clock, http, sync, snapshots, bump } = setup();
  sync.start();
  await sync.now();
  assert.equal(snapshots.length, 1);
  await clock.tick(60000);
  assert.equal(http.calls.length, 2);
  assert.equal(http.last.headers['If-None-Match'], '"v1"');
  assert.equal(snapshots.length, 1);
  bump();
  await clock.tick(60000);
  assert.equal(snapshots.length, 2);
  assert.equal(snapshots[1].last_event_id, '2');
});

test('forced sync skips If-None-Match; overlapping requests fold into one follow-up', async () => {
  const { http, sync, snapshots } = setup();
  await sync.now();
  const a = sync.now({ force: true });
  const b = sync.now();
  const c = sync.now();
  await Promise.all([a, b, c]);
  await settle();
  assert.equal(http.calls.length, 3);
  assert.equal(http.calls[1].headers['If-None-Match'], undefined);
  assert.equal(http.calls[2].headers['If-None-Match'], '"v1"');
  assert.equal(snapshots.length, 2, 'the folded follow-up was a 304');
});

test('a URL asked for at each request; its ETag goes back only to that URL', async () => {
  const clock = new FakeClock();
  const http = new FakeFetch((call) => (call.headers['If-None-Match'] === '"e"'
    ? { status: 304, headers: { ETag: '"e"' } }
    : { status: 200, body: { cases: [], last_event_id: '1' }, headers: { ETag: '"e"' } }));
  let query = 'limit=100';
  const seen = [];
  const sync = createSync({
    api: createApi({ fetch: http.fetch }), url: () => `/api/branches/1/cases?${query}`, intervalMs: 60000,
    setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout, onSnapshot: (_s, url) => seen.push(url),
  });
  await sync.now();
  await sync.now();
  assert.equal(http.calls[1].headers['If-None-Match'], '"e"');
  query = 'limit=200';
  await sync.now();
  assert.equal(http.calls[2].headers['If-None-Match'], undefined, 'another range, another answer');
  assert.deepEqual(seen, ['/api/branches/1/cases?limit=100', '/api/branches/1/cases?limit=200']);
});
