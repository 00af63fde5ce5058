import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import { safeNext } from '../../src/warrantysync/web/static/js/nexturl.js';

const ORIGIN = 'https://warranty.example.com';
const payloads = JSON.parse(readFileSync(new URL('./next-payloads.json', import.meta.url)));

test('every unsafe next= value falls back to /', () => {
  for (const value of payloads.unsafe) {
    assert.equal(safeNext(value, ORIGIN), '/', JSON.stringify(value));
  }
});

test('whatever safeNext returns stays on the origin when the browser resolves it', () => {
  for (const value of [...payloads.unsafe, ...Object.keys(payloads.safe)]) {
    const target = new URL(safeNext(value, ORIGIN), ORIGIN);
    assert.equal(target.origin, ORIGIN, JSON.stringify(value));
  }
});

test('same-origin paths are kept, query and fragment included', () => {
  for (const [value, expected] of Object.entries(payloads.safe)) {
    assert.equal(safeNext(value, ORIGIN), expected, JSON.stringify(value));
  }
});

test('anything but a string is /', () => {
  for (const value of [null, undefined, 5, {}, ['/x']]) assert.equal(safeNext(value, ORIGIN), '/');
});
