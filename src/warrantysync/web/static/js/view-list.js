// The list's window (caselist.js) drawn into the table, and more of it
// loaded as the user scrolls towards either end. Rows come and go above the
// screen without the rows on it moving: the first row on screen keeps its
// place whatever was added or dropped around it.

import { flash } from './dom.js';

// Load the next range when the user is this many screens from the window's edge.
const NEAR_SCREENS = 2;

/**
 * @param {object} deps
 * @param {object} deps.table view-table.js
 * @param {HTMLElement} deps.wrap the table's scroll container
 * @param {object} deps.list caselist.js window
 * @param {(kind: 'next'|'previous') => Promise<boolean>} deps.load fetch and merge a range
 * @param {() => void} deps.changed after every redraw (count, tab stop)
 */
export function createListView({ table, wrap, list, load, changed }) {
  let loading = null;
  let scrollQueued = false;

  function anchor() {
    if (wrap.scrollTop <= 0) return null; // at the top, new rows may push the others down
    const range = table.visibleRange(wrap);
    if (!range) return null;
    const id = table.ids()[range.first];
    const tr = table.rowOf(id);
    return tr ? { id, offset: tr.offsetTop - wrap.scrollTop } : null;
  }

  function restore(mark) {
    if (!mark) return;
    const tr = table.rowOf(mark.id);
    if (tr) wrap.scrollTop = tr.offsetTop - mark.offset;
  }

  /** Draw the window as it is now; `fresh` rows were just added live and are flashed. */
  function draw({ fresh = [] } = {}) {
    const mark = anchor();
    table.setRows(list.ids());
    restore(mark);
    for (const id of fresh) {
      const tr = table.rowOf(id);
      if (tr) flash(tr, 'row-new');
    }
    changed();
  }

  /** Load the range beyond one edge of the window (one at a time); true if rows came. */
  async function more(kind) {
    if (loading) return loading;
    if (kind === 'next' ? !list.hasMore : !list.hasAbove) return false;
    loading = (async () => {
      try {
        const got = await load(kind);
        if (got) draw();
        return got;
      } finally {
        loading = null;
      }
    })();
    const result = await loading;
    // Still near an edge (a tall screen, a fast scroll): go on.
    queueScroll();
    return result;
  }

  function nearEdges() {
    const screen = Math.max(wrap.clientHeight, 200);
    const below = wrap.scrollHeight - wrap.scrollTop - wrap.clientHeight;
    return { bottom: below < screen * NEAR_SCREENS, top: wrap.scrollTop < screen * NEAR_SCREENS };
  }

  function onScroll() {
    scrollQueued = false;
    if (!list.loaded || loading) return;
    const near = nearEdges();
    if (near.bottom && list.hasMore) more('next');
    else if (near.top && list.hasAbove) more('previous');
  }

  function queueScroll() {
    if (scrollQueued) return;
    scrollQueued = true;
    requestAnimationFrame(onScroll);
  }

  return {
    draw,
    more,
    bind() {
      wrap.addEventListener('scroll', queueScroll, { passive: true });
    },
    /** At the very top of the list: new cases may appear at once. */
    atTop: () => wrap.scrollTop < 4 && !list.hasAbove,
    visible: () => table.visibleRange(wrap),
    /** Scroll to the top of what is drawn. */
    toTop() {
      wrap.scrollTop = 0;
    },
    queueScroll,
  };
}
