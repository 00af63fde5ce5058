// The table's window onto a branch's cases: which cases it holds, in which
// order, loaded a page at a time from GET …/cases (docs/protocol.md,
// "Listing cases"), and how live events enter and leave it. No DOM: the view
// renders `ids()`, main.js fetches what the window asks for.
//
// A branch may have years of cases; the window holds at most `maxRows` of
// them (a few pages) and the view draws only those. Loading further down
// drops rows off the top, and the dropped range is remembered by its cursors
// so scrolling back up loads exactly that range again.

import { choicesOf, isMemberField } from './fields.js';

export const PAGE_SIZE = 100;
// The page's first answer: a little over two screens, so the table is up at once.
export const FIRST_PAGE = 40;
export const MAX_ROWS = 500;
export const MAX_LIMIT = 500; // the server's largest `limit`
export const DEFAULT_SORT = '-case_number';
// Live inserts a burst may make before new matches only update the notice.
export const BURST_INSERTS = 20;
export const BURST_MS = 2000;
const CLOSED = new Set(['closed', 'rejected']);

/** Every status but closed and rejected: the open work, the page's default view. */
export function openStatuses() {
  return (choicesOf('status') || []).map((c) => c.value).filter((value) => !CLOSED.has(value));
}

export function defaultView() {
  return { q: '', statuses: openStatuses(), assignee: '', sort: DEFAULT_SORT };
}

/** The list's query string for `view` (and a page of it). */
export function viewQuery(view, { cursor = null, until = null, limit = null } = {}) {
  const params = new URLSearchParams();
  const q = (view.q || '').trim();
  if (q) params.append('q', q);
  for (const status of view.statuses || []) params.append('status', status);
  if (view.assignee) params.append('assignee', String(view.assignee));
  params.append('sort', view.sort || DEFAULT_SORT);
  if (limit !== null) params.append('limit', String(limit));
  if (cursor) params.append('cursor', cursor);
  if (until) params.append('until', until);
  return params.toString();
}

/**
 * Whether a case belongs to the view, as the server decides it: the statuses,
 * the assignee, and `q` in any searched field ignoring case. (The server's
 * SQLite folds only ASCII letters; a difference there is put right by the
 * next reload.)
 * @param {string[]} searchable the fields `q` looks in
 */
export function matchesView(json, view, userId, searchable) {
  if (!json) return false;
  if (view.statuses && view.statuses.length && !view.statuses.includes(json.status)) return false;
  const assignee = view.assignee || '';
  if (assignee === 'me' && json.assignee_id !== userId) return false;
  if (assignee === 'none' && json.assignee_id !== null) return false;
  if (/^\d+$/.test(String(assignee)) && json.assignee_id !== Number(assignee)) return false;
  const q = (view.q || '').trim().toLowerCase();
  return !q || searchable.some((field) => String(json[field] ?? '').toLowerCase().includes(q));
}

/**
 * The server's order of two cases (docs/protocol.md, "Listing cases"):
 * choices in the field table's order, the assignee by the member's name with
 * former members after and unassigned last, an empty date last, ties by id.
 * Strings compare by code point, as SQLite does; other databases' collations
 * may differ a little, and the next reload shows their order.
 * @param {{memberRank: (id: number) => number|null}} ctx
 */
export function compareCases(a, b, sort, ctx) {
  const desc = sort.startsWith('-');
  const field = desc ? sort.slice(1) : sort;
  const ka = sortKey(a, field, desc, ctx);
  const kb = sortKey(b, field, desc, ctx);
  if (ka.rank !== kb.rank) return ka.rank - kb.rank;
  const sign = desc ? -1 : 1;
  if (ka.value !== kb.value) {
    if (ka.value === null) return 1;
    if (kb.value === null) return -1;
    return (ka.value < kb.value ? -1 : 1) * sign;
  }
  return (a.id - b.id) * sign;
}

function sortKey(json, field, desc, ctx) {
  if (field === 'case_number') return { rank: 0, value: null };
  const value = json[field] ?? null;
  const choices = choicesOf(field);
  if (choices) {
    const index = choices.findIndex((c) => c.value === value);
    return { rank: desc ? choices.length - 1 - index : index, value: null };
  }
  if (isMemberField(field)) {
    const count = ctx.memberCount();
    if (value === null) return { rank: count + 1, value: null };
    const rank = ctx.memberRank(value);
    if (rank === null) return { rank: count, value };
    return { rank: desc ? count - 1 - rank : rank, value: null };
  }
  if (value === null) return { rank: 1, value: null };
  return { rank: 0, value };
}

/**
 * @param {object} options
 * @param {number} options.userId
 * @param {(id: number) => object|null} options.getCase the case JSON the store has
 * @param {(id: number) => boolean} [options.isBusy] a row the user is in (focus, unsaved text)
 * @param {string[]} options.searchable
 * @param {{memberRank: Function, memberCount: Function}} options.order see compareCases
 */
export function createCaseWindow(options) {
  const {
    userId, getCase, isBusy = () => false, searchable, order,
    pageSize = PAGE_SIZE, firstSize = pageSize, maxRows = MAX_ROWS, now = Date.now,
  } = options;
  let view = defaultView();
  let generation = 0;
  let ids = [];
  const members = new Set(); // the same ids, for has()
  const cursors = new Map(); // id -> the cursor after that row (rows the server sent)
  let start = null; // the window holds the rows after this cursor (null: from the view's start)
  let end = null; // ...up to and including the row of this cursor
  let hasMore = false; // rows follow `end`
  let above = []; // ranges dropped off the top, {start, end}, the nearest last
  let total = 0;
  let pending = 0;
  let loaded = false;
  const leaving = new Set(); // rows that left the view while the user was in them
  let burst = [];

  function setIds(next) {
    ids = next;
    members.clear();
    for (const id of ids) members.add(id);
  }

  function request(kind, params) {
    return { kind, generation, query: viewQuery(view, params) };
  }

  function compare(a, b) {
    return compareCases(a, b, view.sort, order);
  }

  /** Where `json` goes among the window's rows. */
  function place(json) {
    let low = 0;
    let high = ids.length;
    while (low < high) {
      const mid = (low + high) >> 1;
      const other = getCase(ids[mid]);
      if (other && compare(other, json) < 0) low = mid + 1;
      else high = mid;
    }
    return low;
  }

  function remember(cases, list) {
    cases.forEach((json, n) => {
      if (list && list[n]) cursors.set(json.id, list[n]);
    });
  }

  /** The nearest row at or before `index` the server gave a cursor for. */
  function cursorAtOrBefore(index) {
    for (let i = Math.min(index, ids.length - 1); i >= 0; i -= 1) {
      const cursor = cursors.get(ids[i]);
      if (cursor) return { index: i, cursor };
    }
    return null;
  }

  function forget(dropped) {
    for (const id of dropped) {
      cursors.delete(id);
      leaving.delete(id);
    }
  }

  /** Drop rows off the top until at most maxRows are left; their range goes on `above`. */
  function trimTop() {
    if (ids.length <= maxRows) return [];
    let cut = ids.length - maxRows - 1; // the last row to drop
    const busy = ids.findIndex((id) => isBusy(id));
    if (busy >= 0 && busy <= cut) cut = busy - 1;
    const at = cut >= 0 ? cursorAtOrBefore(cut) : null;
    if (!at) return [];
    const dropped = ids.slice(0, at.index + 1);
    above.push({ start, end: at.cursor });
    start = at.cursor;
    setIds(ids.slice(at.index + 1));
    forget(dropped);
    return dropped;
  }

  /** Drop rows off the bottom until at most maxRows are left. */
  function trimBottom() {
    if (ids.length <= maxRows) return [];
    let last = maxRows - 1; // the last row to keep
    for (let i = ids.length - 1; i > last; i -= 1) if (isBusy(ids[i])) last = i;
    const at = cursorAtOrBefore(last);
    if (!at || at.index === ids.length - 1) return [];
    const dropped = ids.slice(at.index + 1);
    end = at.cursor;
    hasMore = true;
    setIds(ids.slice(0, at.index + 1));
    forget(dropped);
    return dropped;
  }

  function lastCursorOf(answer) {
    const list = answer.cursors || [];
    return list.length ? list[list.length - 1] : null;
  }

  /** Rows the user is still in stay, where they were, until they are done. */
  function keepBusy(next, previous) {
    const present = new Set(next);
    const result = [...next];
    previous.forEach((id, index) => {
      if (present.has(id) || !isBusy(id)) return;
      leaving.add(id);
      result.splice(Math.min(index, result.length), 0, id);
    });
    return result;
  }

  function applyWhole(req, answer) {
    const cases = answer.cases || [];
    remember(cases, answer.cursors);
    const previous = ids;
    const next = cases.map((c) => c.id);
    if (req.kind === 'first') {
      start = null;
      above = [];
    }
    if (answer.next_cursor) {
      end = answer.next_cursor;
      hasMore = true;
    } else if (req.kind === 'first' || !hasMore) {
      end = lastCursorOf(answer) ?? start;
      hasMore = false;
    }
    setIds(keepBusy(next, previous));
    const kept = new Set(ids);
    const dropped = previous.filter((id) => !kept.has(id));
    forget(dropped);
    pending = 0;
    burst = [];
    loaded = true;
    return dropped;
  }

  return {
    get view() { return view; },
    get total() { return total; },
    get pending() { return pending; },
    get loaded() { return loaded; },
    /** Rows after the window's last one. */
    get hasMore() { return hasMore; },
    /** Rows before the window's first one. */
    get hasAbove() { return start !== null; },
    ids: () => ids,
    has: (id) => members.has(id),
    indexOf: (id) => ids.indexOf(id),

    /** A new view (filters, search, sort): the window starts over. */
    setView(next) {
      view = { ...defaultView(), ...next };
      generation += 1;
      setIds([]);
      cursors.clear();
      leaving.clear();
      start = null;
      end = null;
      hasMore = false;
      above = [];
      pending = 0;
      loaded = false;
    },

    /** Start over at the top of the same view (the notice's "show", Ctrl+Home). */
    restart() {
      generation += 1;
      loaded = false;
      return this.first();
    },

    first: () => request('first', { limit: firstSize }),
    /** The page after the window, or null at the end of the list. */
    next: () => (loaded && hasMore ? request('next', { cursor: end, limit: pageSize }) : null),
    /** The range just above the window, or null at the top. */
    previous() {
      if (!loaded || !above.length) return null;
      const range = above[above.length - 1];
      return request('previous', { cursor: range.start, until: range.end, limit: MAX_LIMIT });
    },
    /** The window again, exactly its range (the periodic sync, sync-required). */
    refresh() {
      if (!loaded) return this.first();
      const limit = Math.min(MAX_LIMIT, Math.max(pageSize, ids.length));
      return request('refresh', { cursor: start, until: hasMore ? end : null, limit });
    },

    /**
     * Merge an answer to one of the requests above. Returns the ids that left
     * the window (the store may forget them), or null for an answer to an
     * older view.
     */
    apply(req, answer) {
      if (!req || req.generation !== generation) return null;
      total = Number(answer.total ?? total);
      if (req.kind === 'first' || req.kind === 'refresh') return applyWhole(req, answer);
      const incoming = answer.cases || [];
      remember(incoming, answer.cursors);
      const fresh = incoming.map((c) => c.id).filter((id) => !members.has(id));
      if (req.kind === 'next') {
        setIds([...ids, ...fresh]);
        end = answer.next_cursor || lastCursorOf(answer) || end;
        hasMore = Boolean(answer.next_cursor);
        return trimTop();
      }
      const range = above.pop();
      start = range ? range.start : null;
      setIds([...fresh, ...ids]);
      return trimBottom();
    },

    /**
     * A case created meanwhile: 'insert' (it took its place in the window, at
     * `index`), 'notice' (it matches, but inserting it would move the rows
     * the user is looking at: counted in `pending`), 'outside' (it matches
     * but its place is beyond the loaded rows) or 'none'.
     * @param {{first: number, last: number}|null} visible the rows on screen, by index
     * @param {{atTop?: boolean, editing?: boolean, own?: boolean}} how
     */
    created(json, visible, { atTop = false, editing = false, own = false } = {}) {
      if (!loaded || members.has(json.id)) return { action: 'none' };
      if (!matchesView(json, view, userId, searchable)) return { action: 'none' };
      total += 1;
      const index = place(json);
      if ((index === ids.length && hasMore) || (index === 0 && start !== null)) {
        return { action: 'outside' };
      }
      if (!own) {
        const t = now();
        burst = burst.filter((at) => t - at < BURST_MS);
        // Above the rows on screen the view keeps its scroll position, below
        // them nothing moves; among them it would, unless the user is resting
        // at the top of the list (where new cases are expected to appear).
        const onScreen = visible !== null && index >= visible.first && index <= visible.last;
        const moves = onScreen && !(atTop && !editing);
        if (pending > 0 || burst.length >= BURST_INSERTS || moves) {
          pending += 1;
          return { action: 'notice' };
        }
        burst.push(t);
      }
      setIds([...ids.slice(0, index), json.id, ...ids.slice(index)]);
      const dropped = trimBottom();
      return { action: 'insert', index, dropped };
    },

    /**
     * A case of the window changed (the store has the new values): it stays
     * where it is, or leaves once it no longer matches and the user is not in it.
     */
    updated(id) {
      if (!members.has(id)) return 'none';
      if (matchesView(getCase(id), view, userId, searchable)) {
        leaving.delete(id);
        return 'stay';
      }
      if (isBusy(id)) {
        leaving.add(id);
        return 'stay';
      }
      return this.remove(id) ? 'leave' : 'none';
    },

    /** A row the user was in is free again: if it had left the view, it goes now. */
    idle(id) {
      if (!leaving.has(id) || isBusy(id)) return false;
      if (matchesView(getCase(id), view, userId, searchable)) {
        leaving.delete(id);
        return false;
      }
      return this.remove(id);
    },

    /** Take a row out of the window (it was deleted, or left the view). */
    remove(id) {
      if (!members.has(id)) return false;
      setIds(ids.filter((other) => other !== id));
      forget([id]);
      total = Math.max(0, total - 1);
      return true;
    },

    /**
     * Could a change to a case outside the window bring it in, or change the
     * count? (If so the caller re-reads the window, once per burst.)
     */
    concerns(fields) {
      const sortField = view.sort.replace(/^-/, '');
      return fields.some((field) => field === sortField
        || (field === 'status' && view.statuses && view.statuses.length > 0)
        || (field === 'assignee_id' && Boolean(view.assignee))
        || (Boolean((view.q || '').trim()) && searchable.includes(field)));
    },

    /** The notice was taken up: the caller reloads from the top. */
    takePending() {
      const count = pending;
      pending = 0;
      return count;
    },
  };
}
