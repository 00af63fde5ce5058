// The branch page: header, toolbar, table, side panel, toasts, dialogs.
// The only module (with its view-*.js parts) that touches the DOM. It reads
// the store, and turns user gestures into calls on `actions` (see main.js).

import { colourSlot, h, initials, todayIn } from './dom.js';
import { choicesOf, editableFields, memberRolesOf } from './fields.js';
import { fittingColumns } from './grid.js';
import { createCaseList } from './view-caselist.js';
import {
  createConfirmDialog, createConflictDialog, createHelpDialog, createNewCaseDialog, createPasswordDialog, createToasts,
} from './view-dialogs.js';
import { createGrid } from './view-grid.js';
import { createPanel, describeFull, describeValue } from './view-panel.js';
import { createPeek } from './view-peek.js';
import { createWhereView } from './view-presence.js';
import { createCaseSheet } from './view-print.js';
import { COLUMNS, createTable } from './view-table.js';
import { createTrash, createUndoButtons } from './view-undo.js';
import { createToolbar } from './view-toolbar.js';

const CONNECTION_LABELS = {
  connecting: ['Connecting…', 'Opening the live connection'],
  connected: ['Live', 'Changes from others appear as they happen'],
  reconnecting: ['Reconnecting…', 'Connection lost; trying again. Your edits are kept.'],
  offline: ['Offline', 'No connection. Your edits are kept and saved when it returns.'],
};
// A stream still not open after this long is stuck, most often behind the browser's
// six connections per host over plain HTTP/1.1 (docs/protocol.md, "Tabs sharing one stream").
export const STALLED_AFTER_MS = 8000;
export const STALLED_LABEL = Object.freeze([
  'Not live: too many connections — close other tabs or windows of this site',
  'The browser is not opening the live connection: over plain HTTP/1.1 it allows only six connections '
  + 'to one server, and other tabs or windows of this site hold them. Close some of them, or ask your '
  + 'administrator to serve the site over HTTPS (HTTP/2). Your edits are kept.',
]);
// Shown while the server cannot know locks and presence (live_state "unavailable").
export const LIVE_STATE_UNAVAILABLE = 'Live locks are unavailable; your saves are still checked against changes by others';
const MAX_AVATARS = 6;
const COLUMNS_KEY = 'warrantysync:columns';

function buildContext(config, store, actions) {
  // field -> [{value, label}], for every field with a fixed list of choices.
  const options = new Map(editableFields().map((field) => [field, choicesOf(field)]).filter(([, list]) => list));
  const members = Array.isArray(config.members) ? config.members : [];
  let role = config.role || 'editor';
  const ctx = {
    store,
    userId: config.user ? config.user.id : null,
    members,
    options: (field) => options.get(field) ?? null,
    /** The members a field may name: for the assignee, editors and managers (the field table says). */
    assignable(field) {
      const roles = memberRolesOf(field);
      return roles.length ? members.filter((m) => roles.includes(m.role)) : members;
    },
    memberName(id) {
      if (id === null || id === undefined || id === '') return 'Unassigned';
      const member = members.find((m) => m.id === Number(id));
      return member ? member.name : `User #${id}`;
    },
    label(field, value) {
      const option = (options.get(field) || []).find((o) => o.value === value);
      return option ? option.label : String(value);
    },
    order(field, value) {
      const index = (options.get(field) || []).findIndex((o) => o.value === value);
      return index < 0 ? 99 : index;
    },
    describe: (field, value) => describeValue(field, value, ctx),
    describeFull: (field, value) => describeFull(field, value, ctx),
    isDraft: (caseId, field) => Boolean(actions.isDraft && actions.isDraft(caseId, field)),
    today: () => todayIn(config.branch_timezone || config.timezone),
    role: () => role,
    setRole: (next) => { role = next; },
    readOnly: () => role === 'viewer',
    focusCaseLink: () => {},
  };
  return ctx;
}

function storage() {
  try {
    return window.localStorage;
  } catch {
    return null;
  }
}

/**
 * @param {{root: HTMLElement, config: object, store: object, actions: object}} options
 * actions: edit, focusField, blurField, discard, isDraft, saveDraft, discardDraft, forceRelease,
 * createCase, deleteCase, loadHistory, changePassword, logout, switchBranch,
 * loadList(query) (one page of GET …/cases), loadCase(id), importCsv(file, dryRun), refresh() (the periodic sync, now);
 * undo, redo, nextUndo, nextRedo, restoreEntry, loadTrash, restoreCase (view-undo.js, view-panel.js);
 * askRelease, answerRequest, caseShown (who is where, view-presence.js)
 * rows: the row presence model (where.js), or none
 */
export function createView({ root, config, store, actions, rows = null }) {
  const ctx = buildContext(config, store, actions);
  ctx.forceRelease = actions.forceRelease;
  ctx.askRelease = actions.askRelease;
  const toasts = createToasts();
  const toast = (message, kind, options) => toasts.show(message, kind, options);
  const confirm = createConfirmDialog();
  const askConflict = createConflictDialog(ctx);
  const openHelp = createHelpDialog();
  const peek = createPeek(ctx);
  const sheet = createCaseSheet(ctx, { branchName: config.branch_name || '' });
  const caseUrl = (id) => `/branch/${config.branch_id}/cases/${id}`;
  const table = createTable(ctx, { onOpen: (id) => panel.open(id), onSort: (field) => cases.sortBy(field) });
  const printCaption = h('p', { class: 'print-caption' });
  const empty = h('p', { class: 'empty', text: 'Loading cases…' });
  const wrap = h('div', { class: 'table-wrap', id: 'table-wrap' }, table.element, empty);
  const cases = createCaseList(ctx, {
    table, wrap, empty, printCaption, actions, toast,
    late: { panel: () => panel, grid: () => grid, toolbar: () => toolbarParts },
  });
  const { list } = cases;
  const panel = createPanel(ctx, {
    actions, toast, confirm, link: (id) => new URL(caseUrl(id), location.href).href,
    onShown: (id) => {
      showUrl(id);
      if (where) where.renderPanel();
      if (actions.caseShown) actions.caseShown(id);
    },
    onPrint: (id, history) => sheet.print(id, history),
  });
  const where = rows && createWhereView(ctx, {
    rows, table, panel, answer: (id, choice) => actions.answerRequest(id, choice),
    caseName: (id) => store.getCase(id)?.case_number ?? 'a case',
  });
  ctx.onRowBuilt = (id) => { if (where) where.renderRow(id); };
  const dialogOpen = () => Boolean(document.querySelector('dialog[open]'));
  const grid = createGrid(ctx, { table, panel, actions, toast, peek, openHelp, dialogOpen });
  // A pick (a dropdown) still focused ends its edit first, so the undone value shows in it.
  const leaveControl = (el) => {
    const position = table.position(el);
    if (position) grid.focus(position.row, position.col);
    else el.blur();
  };
  const undoButtons = createUndoButtons({ actions, dialogOpen, readOnly: ctx.readOnly, leaveControl });
  const trash = createTrash(ctx, { actions, toast });
  ctx.focusCaseLink = (id) => grid.focus(id, COLUMNS[0]);
  const openPassword = createPasswordDialog({
    email: config.user ? config.user.email : '',
    change: actions.changePassword,
    onChanged: (answer) => {
      const ended = answer && Number(answer.sessions_ended);
      toast(`Password changed.${ended ? ` ${ended} other session${ended === 1 ? '' : 's'} signed out.` : ''}`, 'success');
    },
  });
  const openNewCase = createNewCaseDialog(ctx, {
    create: actions.createCase,
    onCreated: (json) => {
      toast(`${json.case_number} created.`, 'success');
      // Focus the case link, not a field: a field would take a lock everyone sees.
      if (table.rows.get(json.id)) grid.focus(json.id, COLUMNS[0]);
    },
  });

  // Header
  const pillLabel = h('span', { class: 'pill-label' });
  const pill = h('span', { id: 'connection-status', class: 'pill', role: 'status' }, h('span', { class: 'dot', 'aria-hidden': 'true' }), pillLabel);
  const retry = h('button', { type: 'button', id: 'connection-retry', class: 'btn btn-quiet btn-small', text: 'Retry now', hidden: true });
  const presence = h('ul', { id: 'presence', class: 'presence', 'aria-label': 'Viewing this branch now' });
  const switcher = h('select', { id: 'branch-switcher', class: 'branch-switcher', 'aria-label': 'Switch branch', hidden: true });
  const logout = h('button', { type: 'button', class: 'menu-item', id: 'logout', text: 'Sign out' });
  const passwordItem = h('button', { type: 'button', class: 'menu-item', id: 'change-password', text: 'Change password…' });
  const helpItem = h('button', { type: 'button', class: 'menu-item', id: 'show-shortcuts', text: 'Keyboard shortcuts  ?' });
  const userMenu = h('div', { id: 'user-menu', class: 'user-menu', hidden: true }, passwordItem, helpItem, logout);
  const userButton = h('button', {
    type: 'button', id: 'user-menu-button', class: 'btn btn-quiet user-button', 'aria-expanded': 'false', 'aria-controls': 'user-menu',
  }, h('span', { class: 'user-name', text: config.user ? config.user.name : 'Account' }), h('span', { class: 'caret', 'aria-hidden': 'true', text: '▾' }));
  const header = h('header', { class: 'app-header' },
    h('a', { class: 'brand', href: '/', text: 'warrantysync' }),
    h('h1', { class: 'branch-name', text: config.branch_name || 'Branch' }),
    switcher,
    h('div', { class: 'header-right' }, presence, pill, retry,
      h('div', { class: 'user-menu-wrap' }, userButton, userMenu)));

  // Toolbar
  const toolbarParts = createToolbar(ctx, {
    config, list, toast, importCsv: actions.importCsv,
    onView: (next) => cases.setView(next), onShowNew: () => cases.showNew(), onNewCase: () => openNewCase(),
    tools: [undoButtons.element, trash.button],
  });
  const { search, element: toolbar } = toolbarParts;
  const columnsButton = h('button', { type: 'button', id: 'columns-button', class: 'btn', 'aria-expanded': 'false', 'aria-controls': 'columns-menu', text: 'Columns' });
  const columnsMenu = h('div', { id: 'columns-menu', class: 'columns-menu', hidden: true });
  toolbarParts.columns.append(columnsButton, columnsMenu);

  const liveBanner = h('p', { id: 'live-state-banner', class: 'banner', role: 'status', hidden: true, text: LIVE_STATE_UNAVAILABLE });
  const main = h('main', { class: 'app-main', id: 'main' }, toolbar, liveBanner, printCaption, wrap, peek.element);

  function renderPresence() {
    const viewers = [...store.presence()].sort((a, b) => (a.user.id === ctx.userId) - (b.user.id === ctx.userId));
    const items = viewers.slice(0, MAX_AVATARS).map(({ user, clients }) => {
      const you = user.id === ctx.userId;
      const tabs = clients > 1 ? ` (${clients} tabs)` : '';
      return h('li', { class: `avatar avatar-c${colourSlot(user.id)}${you ? ' avatar-self' : ''}`, title: `${user.name}${you ? ' (you)' : ''}${tabs}` },
        h('span', { 'aria-hidden': 'true', text: initials(user.name) }),
        h('span', { class: 'visually-hidden', text: ` ${user.name}${you ? ' (you)' : ''}` }));
    });
    if (viewers.length > MAX_AVATARS) {
      const rest = viewers.slice(MAX_AVATARS).map((v) => v.user.name).join(', ');
      items.push(h('li', { class: 'avatar avatar-more', title: rest, text: `+${viewers.length - MAX_AVATARS}` }));
    }
    presence.replaceChildren(...items);
  }

  function decorateAll() {
    for (const [id, row] of table.rows) for (const field of row.cells.keys()) table.renderCell(id, field);
    panel.renderFields();
  }

  // Columns: the user's choice, or as many as fit the window.
  let chosenColumns = null;
  try {
    const saved = JSON.parse((storage() && storage().getItem(`${COLUMNS_KEY}:${ctx.userId}`)) || 'null');
    if (Array.isArray(saved)) chosenColumns = new Set(saved.filter((f) => COLUMNS.includes(f)));
  } catch {
    chosenColumns = null;
  }

  function fitColumns() {
    if (chosenColumns) {
      table.setHiddenColumns(COLUMNS.filter((f) => !chosenColumns.has(f)));
    } else {
      table.setHiddenColumns([]);
      const widths = COLUMNS.map((field) => ({ field, width: table.headerCell(field).getBoundingClientRect().width }));
      const shown = new Set(fittingColumns(widths, wrap.clientWidth));
      table.setHiddenColumns(COLUMNS.filter((f) => !shown.has(f)));
    }
    renderColumnsMenu();
    grid.ensureActive();
  }

  function renderColumnsMenu() {
    const shown = new Set(table.columns());
    const boxes = COLUMNS.slice(1).map((field) => {
      const id = `column-${field}`;
      const box = h('input', { type: 'checkbox', id, checked: shown.has(field), dataset: { column: field } });
      box.addEventListener('change', () => {
        chosenColumns = new Set(table.columns());
        if (box.checked) chosenColumns.add(field);
        else chosenColumns.delete(field);
        chosenColumns.add(COLUMNS[0]);
        try { storage()?.setItem(`${COLUMNS_KEY}:${ctx.userId}`, JSON.stringify([...chosenColumns])); } catch { /* private mode */ }
        fitColumns();
      });
      return h('label', { class: 'column-choice', for: id }, box, table.headerCell(field).textContent.trim());
    });
    const fit = h('button', { type: 'button', class: 'btn btn-small', id: 'columns-fit', text: 'Fit to window' });
    fit.addEventListener('click', () => {
      chosenColumns = null;
      try { storage()?.removeItem(`${COLUMNS_KEY}:${ctx.userId}`); } catch { /* private mode */ }
      fitColumns();
    });
    columnsMenu.replaceChildren(h('p', { class: 'menu-title', text: 'Columns shown' }), ...boxes, fit);
  }

  function toggle(button, menu, open = menu.hidden) {
    menu.hidden = !open;
    button.setAttribute('aria-expanded', String(open));
  }

  // Store → screen
  store.subscribe((change) => {
    const { type, caseId } = change;
    if (type === 'created') {
      // A page's cases are drawn with the page (applyList); live ones take their place here.
      if (!change.snapshot) cases.created(caseId, change.remote, change.restored);
    } else if (type === 'case') {
      for (const field of change.fields) table.renderCell(caseId, field, { highlight: change.remote });
      panel.caseChanged(caseId);
      if (!change.snapshot) cases.updated(caseId);
    } else if (type === 'edit' || type === 'save-state') {
      for (const field of change.fields) table.renderCell(caseId, field, { force: change.force });
      if (panel.caseId === caseId) panel.renderFields({ force: change.force });
      cases.settle(caseId);
    } else if (type === 'deleted') {
      const refocus = grid.rowLeaving(caseId);
      cases.deleted(caseId);
      if (refocus) refocus();
      panel.caseDeleted(caseId, change.remote ? change.by : null);
      if (change.remote && change.discardedEdits) toast(`${change.by ? change.by.name : 'Someone'} deleted a case you were editing; your unsaved changes to it were dropped.`, 'warning');
    } else if (type === 'lock') {
      table.renderCell(caseId, change.field);
      if (panel.caseId === caseId) panel.renderFields();
    } else if (type === 'locks') {
      decorateAll();
    } else if (type === 'presence') {
      renderPresence();
    } else if (type === 'live-state') {
      liveBanner.hidden = store.liveState() !== 'unavailable';
    } else if (type === 'snapshot') {
      if (!firstShown && list.loaded) {
        firstShown = true;
        queueMicrotask(() => {
          fitColumns();
          openLinkedCase();
        });
      }
    }
  });
  let firstShown = false;

  // The panel's case is in the address bar, so a reload or a link opens it again.
  function showUrl(id) {
    const path = id === null ? `/branch/${config.branch_id}` : caseUrl(id);
    if (location.pathname !== path) history.replaceState(history.state, '', path + location.search);
  }

  /** The linked case may be far down the list (or filtered out): fetch it for the panel. */
  async function openLinkedCase() {
    const id = Number(config.open_case);
    if (!id) return;
    if (!store.getCase(id)) {
      try {
        const json = await actions.loadCase(id);
        store.applySnapshot({ cases: [json], last_event_id: '0' }, { ephemeral: false, whole: false });
      } catch {
        // gone meanwhile: said below
      }
    }
    if (!panel.open(id)) {
      toast('That case is no longer in this branch.', 'warning');
      showUrl(null);
    }
  }

  function bind() {
    grid.bind(root);
    undoButtons.bind();
    peek.bind(wrap);
    cases.bind();
    logout.addEventListener('click', () => actions.logout());
    passwordItem.addEventListener('click', () => { toggle(userButton, userMenu, false); openPassword(); });
    helpItem.addEventListener('click', () => { toggle(userButton, userMenu, false); openHelp(); });
    userButton.addEventListener('click', () => toggle(userButton, userMenu));
    columnsButton.addEventListener('click', () => {
      toggle(columnsButton, columnsMenu);
      // On a narrow window the toolbar wraps and the button may start a line: open to the right.
      columnsMenu.classList.remove('menu-start');
      if (!columnsMenu.hidden && columnsMenu.getBoundingClientRect().left < 0) columnsMenu.classList.add('menu-start');
    });
    retry.addEventListener('click', () => connectionInfo.retryNow());
    switcher.addEventListener('change', () => { if (switcher.value) actions.switchBranch(Number(switcher.value)); });
    document.addEventListener('click', (event) => {
      if (!userMenu.hidden && !event.target.closest('.user-menu-wrap')) toggle(userButton, userMenu, false);
      if (!columnsMenu.hidden && !event.target.closest('.columns-wrap')) toggle(columnsButton, columnsMenu, false);
    });
    let resizeTimer = null;
    window.addEventListener('resize', () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => { if (!chosenColumns) fitColumns(); }, 150);
    });
    document.addEventListener('keydown', (event) => {
      const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement?.tagName || '');
      if (dialogOpen() || event.defaultPrevented) return;
      if (event.key === 'Escape' && (!userMenu.hidden || !columnsMenu.hidden)) {
        const button = userMenu.hidden ? columnsButton : userButton;
        toggle(userButton, userMenu, false);
        toggle(columnsButton, columnsMenu, false);
        button.focus();
      } else if (event.key === '/' && !typing) {
        event.preventDefault();
        search.focus();
      } else if (event.key === '?' && !typing) {
        event.preventDefault();
        openHelp();
      } else if (event.key === 'Escape' && !typing && panel.caseId !== null) {
        panel.close();
      }
    });
  }

  // Connection pill: says whether the network or the server is away, and when it tries again.
  let connectionInfo = { nextAttemptAt: () => null, online: () => true, retryNow: () => {} };
  let connectionState = 'connecting';
  let liveUntil = Date.now(); // the stream was last live then (or the page opened)
  let countdown = null;
  function renderPill() {
    const state = connectionState;
    let [label, help] = CONNECTION_LABELS[state] || [state, ''];
    const at = connectionInfo.nextAttemptAt();
    const seconds = at === null ? null : Math.max(0, Math.ceil((at - Date.now()) / 1000));
    if (state === 'offline' && connectionInfo.online()) {
      label = seconds ? `Server unreachable — retrying in ${seconds} s` : 'Server unreachable — retrying…';
      help = 'Your network works but the server does not answer. Your edits are kept and saved when it returns.';
    } else if (state === 'offline') {
      label = 'Offline — no network';
    } else if (state === 'reconnecting' && seconds) {
      label = `Reconnecting in ${seconds} s…`;
    } else if (stalled(state, seconds)) {
      [label, help] = STALLED_LABEL;
    }
    pill.dataset.state = state;
    pill.title = help;
    pillLabel.textContent = label;
    retry.hidden = state === 'connected' || state === 'connecting';
  }

  // A server that is away fails fast and turns the pill offline; a stream that
  // neither opens nor fails is waiting for a connection the browser will not give.
  function stalled(state, seconds) {
    return (state === 'connecting' || state === 'reconnecting') && !seconds
      && Date.now() - liveUntil > STALLED_AFTER_MS && connectionInfo.online();
  }

  function setConnectionState(state) {
    if (state === 'connected' || connectionState === 'connected') liveUntil = Date.now();
    connectionState = state;
    clearInterval(countdown);
    countdown = state === 'connected' ? null : setInterval(renderPill, 1000);
    renderPill();
  }

  function setRole(role) {
    ctx.setRole(role);
    root.dataset.role = role;
    toolbarParts.setRole(role);
    trash.setRole(role);
    undoButtons.refresh();
    decorateAll();
  }

  /** Our lock went away while we may have been typing: keep the text as a draft and say who. */
  function lockLost(caseId, field, who, reason, { label, caseName }) {
    grid.lockLost(caseId, field);
    const held = actions.holdDraft(caseId, field);
    table.renderCell(caseId, field);
    if (panel.caseId === caseId) panel.renderFields();
    const what = `${label} of ${caseName}`;
    const why = reason === 'forced' ? `${who && who.name ? who.name : 'A manager'} released your lock on ${what}.`
      : reason === 'transferred' ? `${what} is ${who && who.name ? `${who.name}’s` : 'someone else’s'} now.`
      : reason === 'expired' ? `Your lock on ${what} expired.`
        : `${who && who.name ? who.name : 'Someone else'} now holds ${what}.`;
    if (!held) {
      toast(why, 'warning');
      return;
    }
    toast(`${why} Your text is kept as a draft.`, 'warning', {
      key: `draft:${caseId}:${field}`,
      actions: [
        { label: 'Save my text', run: () => actions.saveDraft(caseId, field) },
        { label: 'Discard', run: () => actions.discardDraft(caseId, field) },
      ],
    });
  }

  return {
    mount() {
      root.classList.add('app');
      root.replaceChildren(header, main, panel.element, toasts.element, sheet.element);
      if (where) root.append(where.element);
      bind();
      setConnectionState('connecting');
      setRole(ctx.role());
      table.showSort(list.view.sort);
      printCaption.textContent = toolbarParts.caption();
      cases.updateCount();
    },
    /** What the periodic sync fetches now: the window's range (caselist.js `refresh()`). */
    listRequest: () => cases.request(),
    /** An answer of the periodic sync or sync-required. */
    applyList: (req, answer, options) => cases.applyList(req, answer, options),
    /** The stream told of a case this tab does not hold (view-caselist.js). */
    missed: (name, data) => cases.missed(name, data),
    setConnectionState,
    /** `leader`, `follower` (the stream is another tab's) or `alone`: #connection-status[data-stream]. */
    setStreamRole(role) {
      pill.dataset.stream = role;
    },
    /** Where the pill learns when the next try is and whether the network is there. */
    setConnectionInfo(info) {
      connectionInfo = { ...connectionInfo, ...info };
      renderPill();
    },
    setBranches(branches, currentId) {
      const others = branches.filter((b) => b.id !== currentId);
      // The heading names this branch; the switcher lists only the others.
      switcher.replaceChildren(h('option', { value: '', text: 'Switch branch…', selected: true }),
        ...others.map((b) => h('option', { value: String(b.id), text: b.name })));
      switcher.hidden = others.length === 0;
    },
    setRole,
    toast,
    dismissToast: (key) => toasts.dismissKey(key),
    /** The requests this tab is asked now, as the holder's notices. */
    showLockRequests: (requests) => { if (where) where.showRequests(requests); },
    /** Open a cell for editing (the lock came to us): the table's, or the panel's when it shows the case. */
    openField(caseId, field) {
      const inPanel = panel.caseId === caseId && panel.element.contains(document.activeElement);
      const control = inPanel ? document.getElementById(`panel-${field}`)
        : table.cellTarget(caseId, field)?.querySelector('[data-control]');
      if (!control) return false;
      control.focus();
      return document.activeElement === control;
    },
    askConflict,
    /** The undo stacks changed: the buttons say what is next. */
    undoChanged: () => undoButtons.refresh(),
    describe: (field, value) => ctx.describe(field, value),
    lockLost,
    renderField(caseId, field) {
      table.renderCell(caseId, field);
      if (panel.caseId === caseId) panel.renderFields();
    },
  };
}
