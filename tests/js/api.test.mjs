import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ApiError, createApi, parseRetryAfter } from '../../src/warrantysync/web/static/js/api.js';
import { FakeFetch } from './fakes.mjs';

test('errors become ApiError with status, code, message, body and retryAfter', async () => {
  const http = new FakeFetch(() => ({ status: 429, body: { error: 'rate_limited', message: 'Too many requests.' }, headers: { 'Retry-After': '2' } }));
  const api = createApi({ fetch: http.fetch, csrfToken: 'c', clientId: 'tab' });
  await assert.rejects(api.post('/api/x', { a: 1 }), (err) => {
    assert.ok(err instanceof ApiError);
    assert.equal(err.status, 429);
    assert.equal(err.code, 'rate_limited');
    assert.equal(err.message, 'Too many requests.');
    assert.equal(err.retryAfter, 2000);
    assert.equal(err.retryable, true);
    return true;
  });
  assert.equal(http.last.headers['X-CSRF-Token'], 'c');
  assert.deepEqual(http.last.body, { a: 1 });
});

test('GET sends no CSRF header; 304 is a result, not an error', async () => {
  const http = new FakeFetch(() => ({ status: 304, headers: { ETag: '"e1"' } }));
  const api = createApi({ fetch: http.fetch, csrfToken: 'c', clientId: 'tab' });
  const answer = await api.get('/api/branches/1/cases', { ifNoneMatch: '"e1"' });
  assert.equal(answer.status, 304);
  assert.equal(http.last.headers['If-None-Match'], '"e1"');
  assert.equal(http.last.headers['X-CSRF-Token'], undefined);
});

test('network failure is status 0 and retryable; non-JSON errors still get a message', async () => {
  const api = createApi({ fetch: async () => { throw new TypeError('Failed to fetch'); } });
  await assert.rejects(api.get('/x'), (err) => err.status === 0 && err.retryable);
  const html = createApi({ fetch: async () => ({ status: 502, ok: false, statusText: 'Bad Gateway', headers: { get: () => null }, text: async () => '<html>' }) });
  await assert.rejects(html.get('/x'), (err) => err.code === 'http_502' && /502/.test(err.message));
});

test('Retry-After accepts seconds and HTTP dates', () => {
  assert.equal(parseRetryAfter('5'), 5000);
  assert.equal(parseRetryAfter(new Date(10_000).toUTCString(), 4_000), 6000);
  assert.equal(parseRetryAfter(null), null);
});
