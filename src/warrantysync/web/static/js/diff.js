// What changed between two texts, word by word, for the history timeline.
// No DOM. Tokens are runs of non-space and runs of space, so joining the
// tokens of a segment gives back the text exactly.

const MAX_CELLS = 250_000; // LCS table size; beyond it the middle is one replacement

export function tokenize(text) {
  return String(text ?? '').match(/\s+|\S+/g) || [];
}

function push(segments, op, tokens) {
  if (!tokens.length) return;
  const last = segments[segments.length - 1];
  if (last && last.op === op) last.tokens.push(...tokens);
  else segments.push({ op, tokens: [...tokens] });
}

function lcsSegments(a, b) {
  const n = a.length;
  const m = b.length;
  // lengths[i][j]: LCS of a[i:] and b[j:], in one flat array.
  const lengths = new Uint32Array((n + 1) * (m + 1));
  const at = (i, j) => i * (m + 1) + j;
  for (let i = n - 1; i >= 0; i -= 1) {
    for (let j = m - 1; j >= 0; j -= 1) {
      lengths[at(i, j)] = a[i] === b[j] ? lengths[at(i + 1, j + 1)] + 1 : Math.max(lengths[at(i + 1, j)], lengths[at(i, j + 1)]);
    }
  }
  const segments = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (a[i] === b[j]) {
      push(segments, 'same', [a[i]]);
      i += 1;
      j += 1;
    } else if (lengths[at(i + 1, j)] >= lengths[at(i, j + 1)]) {
      push(segments, 'del', [a[i]]);
      i += 1;
    } else {
      push(segments, 'ins', [b[j]]);
      j += 1;
    }
  }
  push(segments, 'del', a.slice(i));
  push(segments, 'ins', b.slice(j));
  return segments;
}

/**
 * Segments [{op: 'same'|'del'|'ins', text}] that turn `before` into `after`.
 * Deletions come before insertions where both replace the same words.
 */
export function wordDiff(before, after) {
  const a = tokenize(before);
  const b = tokenize(after);
  let start = 0;
  while (start < a.length && start < b.length && a[start] === b[start]) start += 1;
  let end = 0;
  while (end < a.length - start && end < b.length - start && a[a.length - 1 - end] === b[b.length - 1 - end]) end += 1;
  const midA = a.slice(start, a.length - end);
  const midB = b.slice(start, b.length - end);
  const segments = [];
  push(segments, 'same', a.slice(0, start));
  if (midA.length * midB.length <= MAX_CELLS) {
    for (const s of lcsSegments(midA, midB)) push(segments, s.op, s.tokens);
  } else {
    push(segments, 'del', midA);
    push(segments, 'ins', midB);
  }
  push(segments, 'same', a.slice(a.length - end));
  return segments.map(({ op, tokens }) => ({ op, text: tokens.join(''), words: tokens.filter((t) => /\S/.test(t)).length }));
}

function wordsFrom(text, count, fromEnd) {
  const tokens = tokenize(text);
  let seen = 0;
  let cut = fromEnd ? tokens.length : 0;
  if (fromEnd) {
    while (cut > 0 && seen < count) {
      cut -= 1;
      if (/\S/.test(tokens[cut])) seen += 1;
    }
    return tokens.slice(cut).join('');
  }
  while (cut < tokens.length && seen < count) {
    if (/\S/.test(tokens[cut])) seen += 1;
    cut += 1;
  }
  return tokens.slice(0, cut).join('');
}

/**
 * The changes with `context` words either side; longer unchanged stretches
 * become {op: 'gap'}. `full` says whether nothing was left out.
 */
export function summarizeDiff(segments, { context = 8 } = {}) {
  const out = [];
  let full = true;
  segments.forEach((segment, index) => {
    if (segment.op !== 'same') {
      out.push(segment);
      return;
    }
    const before = index > 0; // a change precedes: keep its trailing context
    const after = index < segments.length - 1; // a change follows: keep leading context
    const limit = (before ? context : 0) + (after ? context : 0);
    if (segment.words <= limit) {
      out.push(segment);
      return;
    }
    full = false;
    if (before) out.push({ op: 'same', text: wordsFrom(segment.text, context, false) });
    out.push({ op: 'gap', text: '…' });
    if (after) out.push({ op: 'same', text: wordsFrom(segment.text, context, true) });
  });
  return { segments: out, full };
}
