// The table's list on the page: the window (caselist.js) onto the branch's
// cases, what the server is asked for and how its answers, the store's
// changes and the keyboard at the window's edge move it. view.js builds the
// parts; this wires them. docs/protocol.md, "Listing cases".

import { createCaseWindow, DEFAULT_SORT, FIRST_PAGE } from './caselist.js';
import { searchableFields } from './fields.js';
import { createListView } from './view-list.js';
import { COLUMNS } from './view-table.js';

// A change to cases outside the window may bring some in: re-read it once per burst.
const REFRESH_AFTER_MS = 400;

/** The server's order of the assignee column: members by name (ignoring case), then id. */
function memberOrder(members) {
  const fold = (name) => String(name).toLowerCase();
  const sorted = [...members].sort((a, b) => {
    const x = fold(a.name);
    const y = fold(b.name);
    return x === y ? a.id - b.id : x < y ? -1 : 1;
  });
  const rank = new Map(sorted.map((m, index) => [m.id, index]));
  return { memberRank: (id) => rank.get(Number(id)) ?? null, memberCount: () => sorted.length };
}

/**
 * @param {object} ctx shared view context
 * @param {object} deps
 * @param {object} deps.table view-table.js
 * @param {HTMLElement} deps.wrap the table's scroll container
 * @param {HTMLElement} deps.empty the "no cases" line
 * @param {HTMLElement} deps.printCaption
 * @param {object} deps.actions loadList, refresh, see main.js
 * @param {Function} deps.toast
 * @param {{panel: () => object, grid: () => object, toolbar: () => object}} deps.late parts built after this one
 */
export function createCaseList(ctx, { table, wrap, empty, printCaption, actions, toast, late }) {
  const { store } = ctx;
  const panelCase = () => late.panel().caseId;
  const isBusy = (id) => table.rowHasFocus(id) || store.editsFor(id).size > 0 || panelCase() === id;
  const list = createCaseWindow({
    userId: ctx.userId, getCase: store.getCase, isBusy, searchable: searchableFields(), order: memberOrder(ctx.members),
    firstSize: FIRST_PAGE,
  });

  const listView = createListView({
    table, wrap, list, changed: updateCount,
    load: async (kind) => {
      const req = kind === 'next' ? list.next() : list.previous();
      if (!req) return false;
      return applyList(req, await actions.loadList(req.query), { ephemeral: false, draw: false });
    },
  });

  function updateCount() {
    late.toolbar().renderCount({ loaded: list.loaded });
    late.toolbar().renderExport();
    if (list.loaded) {
      empty.textContent = list.total || list.view.q || list.view.assignee
        ? 'No cases match these filters.'
        : 'No open cases. “All statuses” shows the closed ones; “New case” starts one.';
      empty.hidden = table.rowCount() > 0;
    }
    late.grid().ensureActive();
  }

  /**
   * Merge one answer of GET …/cases into the window and the store: the cases
   * the window let go are forgotten (they are still in the branch).
   * @returns {boolean} whether it was for the current view
   */
  function applyList(req, answer, { ephemeral, draw = true }) {
    const dropped = list.apply(req, answer);
    if (dropped === null) return false;
    const whole = req.kind === 'first' || req.kind === 'refresh';
    store.applySnapshot(answer, { ephemeral, keep: (id) => list.has(id) || panelCase() === id, whole });
    for (const id of dropped) store.forgetCase(id);
    if (draw) listView.draw();
    return true;
  }

  /** Start the list over: a new filter, search or sort, or the notice taken up. */
  async function reload(req) {
    listView.draw();
    try {
      applyList(req, await actions.loadList(req.query), { ephemeral: false });
    } catch (error) {
      if (error.status !== 401) toast(error.message || 'Could not load the cases', 'error');
    }
  }

  function setView(next) {
    list.setView(next);
    table.showSort(list.view.sort);
    printCaption.textContent = late.toolbar().caption();
    listView.toTop();
    reload(list.first());
  }

  function sortBy(field) {
    const sort = list.view.sort;
    // The case number starts newest first; every other column A to Z.
    const next = sort === field ? `-${field}` : sort === `-${field}` ? field : (field === 'case_number' ? DEFAULT_SORT : field);
    setView({ ...list.view, sort: next });
  }

  /**
   * The keyboard at the window's edge: moving down past the loaded rows loads
   * more, Ctrl+End goes on to the very last case, Ctrl+Home back to the first.
   */
  async function onEdgeKey(event) {
    const tr = event.target.closest && event.target.closest('tr[data-case-id]');
    if (!tr || !['ArrowDown', 'PageDown', 'End', 'Home'].includes(event.key)) return;
    const ctrl = event.ctrlKey || event.metaKey;
    const index = table.ids().indexOf(Number(tr.dataset.caseId));
    const col = event.target.closest('[data-col]')?.dataset.col ?? COLUMNS[0];
    if (event.key === 'Home' && ctrl) {
      if (list.hasAbove) {
        await reload(list.restart());
        const first = table.ids()[0];
        if (first !== undefined) late.grid().focus(first, col);
      }
      return;
    }
    if (event.key === 'Home' || (event.key === 'End' && !ctrl)) return;
    const nearEnd = event.key === 'End' || index >= table.rowCount() - (event.key === 'PageDown' ? 20 : 1);
    if (!nearEnd || !list.hasMore) return;
    while (await listView.more('next')) {
      if (!(event.key === 'End' && list.hasMore)) break;
    }
    const ids = table.ids();
    if (event.key === 'End') late.grid().focus(ids[ids.length - 1], col);
  }

  function showNew() {
    list.takePending();
    listView.toTop();
    reload(list.restart());
  }

  let refreshTimer = null;
  /** Once per burst of changes outside the window, re-read it (the periodic sync does). */
  function refreshSoon() {
    if (refreshTimer !== null) return;
    refreshTimer = setTimeout(() => {
      refreshTimer = null;
      actions.refresh();
    }, REFRESH_AFTER_MS);
  }

  function forgetLater(ids) {
    if (ids.length) queueMicrotask(() => { for (const id of ids) if (!list.has(id)) store.forgetCase(id); });
  }

  /** A row the user was in may have left the view meanwhile: now it goes. */
  function settle(caseId) {
    if (!list.idle(caseId)) return;
    forgetLater([caseId]);
    listView.draw();
  }

  // A case back from the trash takes its old place at once, as a case of our
  // own does: it is not news that would move rows, the view had it before.
  function caseCreated(caseId, remote, restored = false) {
    const json = store.getCase(caseId);
    const result = list.created(json, listView.visible(), {
      atTop: listView.atTop(), editing: table.element.contains(document.activeElement), own: !remote || restored,
    });
    if (result.action === 'insert') {
      forgetLater(result.dropped);
      listView.draw({ fresh: remote ? [caseId] : [] });
    } else {
      forgetLater([caseId]);
      updateCount();
    }
  }

  return {
    list,
    listView,
    setView,
    sortBy,
    showNew,
    updateCount,
    /** A case the store just got live (an event, our own POST). */
    created: caseCreated,
    /** A case of the store changed: it may leave the view. */
    updated(caseId) {
      if (list.updated(caseId) !== 'leave') return;
      forgetLater([caseId]);
      listView.draw();
    },
    settle,
    /** A case was deleted: out of the window. */
    deleted(caseId) {
      list.remove(caseId);
      listView.draw();
    },
    /** What the periodic sync fetches now: the window's range (caselist.js `refresh()`). */
    request: () => list.refresh(),
    applyList: (req, answer, { ephemeral }) => applyList(req, answer, { ephemeral }),
    /**
     * The stream told of a case this tab does not hold: a change that could
     * bring it into the view (or out of the count) re-reads the window once.
     */
    missed(name, data) {
      const fields = Object.keys((data && data.changes) || {});
      if (name !== 'case-updated' || list.concerns(fields)) refreshSoon();
    },
    bind() {
      listView.bind();
      table.element.addEventListener('focusout', (event) => {
        const tr = event.target.closest && event.target.closest('tr[data-case-id]');
        if (tr) setTimeout(() => settle(Number(tr.dataset.caseId)), 0);
      });
      wrap.addEventListener('keydown', onEdgeKey);
    },
  };
}
