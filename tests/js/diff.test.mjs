import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { summarizeDiff, tokenize, wordDiff } from '../../src/warrantysync/web/static/js/diff.js';

const ops = (segments) => segments.map((s) => [s.op, s.text]);

describe('wordDiff', () => {
  test('tokens give back the text exactly', () => {
    const text = '  two  words\nand\ta line ';
    assert.equal(tokenize(text).join(''), text);
    assert.deepEqual(tokenize(''), []);
    assert.deepEqual(tokenize(null), []);
  });

  test('a sentence added at the end is the only insertion', () => {
    const before = 'Screen cracked in the lower corner.';
    const after = 'Screen cracked in the lower corner. Customer also reports the battery drains overnight.';
    assert.deepEqual(ops(wordDiff(before, after)), [
      ['same', before],
      ['ins', ' Customer also reports the battery drains overnight.'],
    ]);
  });

  test('a replaced word in the middle is a deletion then an insertion', () => {
    assert.deepEqual(ops(wordDiff('the red kettle leaks', 'the blue kettle leaks')), [
      ['same', 'the '], ['del', 'red'], ['ins', 'blue'], ['same', ' kettle leaks'],
    ]);
  });

  test('both sides join back to the two texts', () => {
    const before = 'alpha beta gamma delta epsilon';
    const after = 'alpha gamma delta zeta epsilon eta';
    const segments = wordDiff(before, after);
    assert.equal(segments.filter((s) => s.op !== 'ins').map((s) => s.text).join(''), before);
    assert.equal(segments.filter((s) => s.op !== 'del').map((s) => s.text).join(''), after);
  });

  test('empty sides are all insertion or all deletion', () => {
    assert.deepEqual(ops(wordDiff('', 'new text')), [['ins', 'new text']]);
    assert.deepEqual(ops(wordDiff('old', '')), [['del', 'old']]);
    assert.deepEqual(ops(wordDiff('same', 'same')), [['same', 'same']]);
  });

  test('huge rewrites stay cheap: one replacement of the middle', () => {
    const before = Array.from({ length: 1200 }, (_, i) => `a${i}`).join(' ');
    const after = Array.from({ length: 1200 }, (_, i) => `b${i}`).join(' ');
    const segments = wordDiff(before, after);
    assert.deepEqual(segments.map((s) => s.op), ['del', 'ins']);
  });
});

describe('summarizeDiff', () => {
  const long = Array.from({ length: 40 }, (_, i) => `w${i}`).join(' ');

  test('long unchanged text around a change keeps only the context', () => {
    const { segments, full } = summarizeDiff(wordDiff(long, `${long} added words`), { context: 3 });
    assert.equal(full, false);
    assert.deepEqual(ops(segments), [['gap', '…'], ['same', 'w37 w38 w39'], ['ins', ' added words']]);
  });

  test('context on both sides of a change in the middle', () => {
    const before = `${long} middle ${long}`;
    const after = `${long} centre ${long}`;
    const { segments } = summarizeDiff(wordDiff(before, after), { context: 2 });
    assert.deepEqual(segments.map((s) => s.op), ['gap', 'same', 'del', 'ins', 'same', 'gap']);
    assert.equal(segments[1].text, 'w38 w39 ');
    assert.equal(segments[4].text, ' w0 w1');
  });

  test('short texts are shown whole', () => {
    const { segments, full } = summarizeDiff(wordDiff('a b c', 'a x c'));
    assert.equal(full, true);
    assert.deepEqual(ops(segments), [['same', 'a '], ['del', 'b'], ['ins', 'x'], ['same', ' c']]);
  });
});
