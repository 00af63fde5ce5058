// The branch page: header, toolbar, table, side panel, toasts, dialogs.
// The only module (with its view-*.js parts) that touches the DOM. It reads
// the store, and turns user gestures into calls on `actions` (see main.js).

import { colourSlot, flash, h, initials, todayIn } from './dom.js';
import { choicesOf, editableFields, isDebounced } from './fields.js';
import { createConfirmDialog, createConflictDialog, createNewCaseDialog, createToasts } from './view-dialogs.js';
import { createPanel, describeValue } from './view-panel.js';
import { createTable, readControl } from './view-table.js';

const CONNECTION_LABELS = {
  connecting: ['Connecting…', 'Opening the live connection'],
  connected: ['Live', 'Changes from others appear as they happen'],
  reconnecting: ['Reconnecting…', 'Connection lost; trying again. Your edits are kept.'],
  offline: ['Offline', 'No connection. Your edits are kept and saved when it returns.'],
};
// Shown while the server cannot know locks and presence (live_state "unavailable").
export const LIVE_STATE_UNAVAILABLE = 'Live locks are unavailable; your saves are still checked against changes by others';
const MAX_AVATARS = 6;
const SEARCH_DEBOUNCE_MS = 150;

function buildContext(config, store) {
  // field -> [{value, label}], for every field with a fixed list of choices.
  const options = new Map(editableFields().map((field) => [field, choicesOf(field)]).filter(([, list]) => list));
  const members = Array.isArray(config.members) ? config.members : [];
  let role = config.role || 'editor';
  const ctx = {
    store,
    userId: config.user ? config.user.id : null,
    members,
    options: (field) => options.get(field) ?? null,
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
    today: () => todayIn(config.branch_timezone || config.timezone),
    role: () => role,
    setRole: (next) => { role = next; },
    readOnly: () => role === 'viewer',
    focusCaseLink: () => {},
  };
  return ctx;
}

/**
 * @param {{root: HTMLElement, config: object, store: object, actions: object}} options
 * actions: edit, focusField, blurField, forceRelease, createCase, deleteCase, loadHistory,
 * logout, switchBranch
 */
export function createView({ root, config, store, actions }) {
  const ctx = buildContext(config, store);
  ctx.forceRelease = actions.forceRelease;
  const toasts = createToasts();
  const toast = toasts.show;
  const confirm = createConfirmDialog();
  const askConflict = createConflictDialog(ctx);
  const table = createTable(ctx, { onOpen: (id) => panel.open(id) });
  const panel = createPanel(ctx, { actions, toast, confirm });
  ctx.focusCaseLink = (id) => table.rows.get(id)?.link.focus();
  const openNewCase = createNewCaseDialog(ctx, {
    create: actions.createCase,
    onCreated: (json) => {
      toast(`${json.case_number} created.`, 'success');
      const row = table.rows.get(json.id);
      // Focus the case link, not a field: a field would take a lock everyone sees.
      if (row) {
        row.tr.scrollIntoView({ block: 'nearest' });
        row.link.focus();
      }
    },
  });

  // Header
  const pillLabel = h('span', { class: 'pill-label' });
  const pill = h('span', { id: 'connection-status', class: 'pill', role: 'status' }, h('span', { class: 'dot', 'aria-hidden': 'true' }), pillLabel);
  const presence = h('ul', { id: 'presence', class: 'presence', 'aria-label': 'Viewing this branch now' });
  const switcher = h('select', { id: 'branch-switcher', class: 'branch-switcher', 'aria-label': 'Switch branch', hidden: true });
  const logout = h('button', { type: 'button', class: 'btn btn-quiet', id: 'logout', text: 'Sign out' });
  const header = h('header', { class: 'app-header' },
    h('a', { class: 'brand', href: '/', text: 'warrantysync' }),
    h('h1', { class: 'branch-name', text: config.branch_name || 'Branch' }),
    switcher,
    h('div', { class: 'header-right' }, presence, pill,
      h('span', { class: 'user-name', text: config.user ? config.user.name : '' }), logout));

  // Toolbar
  const search = h('input', { type: 'search', id: 'search', class: 'search', placeholder: 'Search cases  ( / )', 'aria-label': 'Search cases', autocomplete: 'off' });
  const statusFilter = h('select', { id: 'status-filter', class: 'filter', 'aria-label': 'Filter by status' },
    h('option', { value: '', text: 'All statuses' }), ctx.options('status').map((o) => h('option', { value: o.value, text: o.label })));
  const assigneeFilter = h('select', { id: 'assignee-filter', class: 'filter', 'aria-label': 'Filter by assignee' },
    h('option', { value: '', text: 'Anyone' }), h('option', { value: 'me', text: 'Assigned to me' }),
    h('option', { value: 'none', text: 'Unassigned' }), ctx.members.map((m) => h('option', { value: String(m.id), text: m.name })));
  const count = h('span', { class: 'count', id: 'case-count', 'aria-live': 'polite' });
  const newCase = h('button', { type: 'button', id: 'new-case', class: 'btn btn-primary', text: 'New case' });
  const toolbar = h('div', { class: 'toolbar' }, search, statusFilter, assigneeFilter, count, h('span', { class: 'spacer' }), newCase);

  const liveBanner = h('p', { id: 'live-state-banner', class: 'banner', role: 'status', hidden: true, text: LIVE_STATE_UNAVAILABLE });
  const empty = h('p', { class: 'empty', text: 'Loading cases…' });
  const wrap = h('main', { class: 'table-wrap', id: 'table-wrap' }, table.element, empty);

  function updateCount() {
    const total = store.allCases().length;
    const shown = table.visibleCount();
    count.textContent = shown === total ? `${total} case${total === 1 ? '' : 's'}` : `${shown} of ${total} cases`;
    if (loaded) {
      empty.textContent = total ? 'No cases match these filters.' : 'No cases yet. Create the first one with “New case”.';
      empty.hidden = shown > 0;
    }
  }
  let loaded = false;

  function renderPresence() {
    const viewers = [...store.presence()].sort((a, b) => (a.user.id === ctx.userId) - (b.user.id === ctx.userId));
    const items = viewers.slice(0, MAX_AVATARS).map(({ user, clients }) => {
      const you = user.id === ctx.userId;
      const tabs = clients > 1 ? ` (${clients} tabs)` : '';
      return h('li', { class: `avatar avatar-c${colourSlot(user.id)}${you ? ' avatar-self' : ''}`, title: `${user.name}${you ? ' (you)' : ''}${tabs}`, text: initials(user.name) },
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

  // Store → screen
  let needsSort = false;
  store.subscribe((change) => {
    const { type, caseId } = change;
    if (type === 'created') {
      if (change.snapshot) {
        table.render(caseId);
        needsSort = true;
      } else {
        const row = table.insert(caseId);
        if (change.remote) flash(row.tr, 'row-new');
      }
      updateCount();
    } else if (type === 'case') {
      for (const field of change.fields) table.renderCell(caseId, field, { highlight: change.remote });
      table.refreshVisibility(caseId);
      panel.caseChanged(caseId);
      updateCount();
    } else if (type === 'edit' || type === 'save-state') {
      for (const field of change.fields) table.renderCell(caseId, field, { force: change.force });
      if (panel.caseId === caseId) panel.renderFields({ force: change.force });
      if (type === 'edit') table.refreshVisibility(caseId);
    } else if (type === 'deleted') {
      table.remove(caseId);
      panel.caseDeleted(caseId, change.remote ? change.by : null);
      if (change.remote && change.discardedEdits) toast(`${change.by ? change.by.name : 'Someone'} deleted a case you were editing; your unsaved changes to it were dropped.`, 'warning');
      updateCount();
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
      loaded = true;
      if (needsSort && !table.element.contains(document.activeElement)) {
        table.resort();
        needsSort = false;
      }
      updateCount();
    }
  });

  // Screen → actions
  function locate(control) {
    if (!control || !control.dataset || !control.dataset.control) return null;
    return table.locate(control) || panel.locate(control);
  }

  async function onFocusIn(event) {
    const control = event.target;
    const where = locate(control);
    if (!where) return;
    const result = await actions.focusField(where.caseId, where.field);
    if (result.ok) return;
    if (document.activeElement === control) control.blur();
    if (result.message) toast(result.message, 'warning');
  }

  function onFocusOut(event) {
    const where = locate(event.target);
    if (where) actions.blurField(where.caseId, where.field);
  }

  function onInput(event) {
    const where = locate(event.target);
    if (!where || ctx.readOnly()) return;
    // Debounced fields save from each keystroke, the others once their value is chosen.
    if ((event.type === 'input') === isDebounced(where.field)) actions.edit(where.caseId, where.field, readControl(event.target, where.field));
  }

  function moveDown(where, control, step) {
    let tr = where.tr;
    do tr = step > 0 ? tr.nextElementSibling : tr.previousElementSibling;
    while (tr && tr.hidden);
    control.blur();
    const next = tr && tr.querySelector(`[data-field="${where.field}"] [data-control]`);
    if (next && !next.disabled) next.focus();
  }

  function onKeyDown(event) {
    const control = event.target;
    const where = locate(control);
    if (!where) return;
    if (event.key === 'Escape') {
      event.preventDefault();
      control.blur(); // the blur saves what was typed and releases the lock
    } else if (event.key === 'Enter' && control.tagName !== 'SELECT') {
      const newline = control.tagName === 'TEXTAREA' && (where.panel ? !(event.ctrlKey || event.metaKey) : event.shiftKey);
      if (newline) return;
      event.preventDefault();
      if (where.panel) control.blur();
      else moveDown(where, control, event.shiftKey ? -1 : 1);
    }
  }

  let searchTimer = null;
  function applyFilters() {
    table.setFilters({ query: search.value, status: statusFilter.value, assignee: assigneeFilter.value });
    updateCount();
  }

  function bind() {
    root.addEventListener('focusin', onFocusIn);
    root.addEventListener('focusout', onFocusOut);
    root.addEventListener('input', onInput);
    root.addEventListener('change', onInput);
    root.addEventListener('keydown', onKeyDown);
    search.addEventListener('input', () => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(applyFilters, SEARCH_DEBOUNCE_MS);
    });
    statusFilter.addEventListener('change', applyFilters);
    assigneeFilter.addEventListener('change', applyFilters);
    newCase.addEventListener('click', () => openNewCase());
    logout.addEventListener('click', () => actions.logout());
    switcher.addEventListener('change', () => actions.switchBranch(Number(switcher.value)));
    document.addEventListener('keydown', (event) => {
      const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement?.tagName || '');
      if (event.key === '/' && !typing && !document.querySelector('dialog[open]')) {
        event.preventDefault();
        search.focus();
      } else if (event.key === 'Escape' && !typing && panel.caseId !== null && !document.querySelector('dialog[open]')) {
        panel.close();
      }
    });
  }

  function setConnectionState(state) {
    const [label, help] = CONNECTION_LABELS[state] || [state, ''];
    pill.dataset.state = state;
    pill.title = help;
    pillLabel.textContent = label;
  }

  function setRole(role) {
    ctx.setRole(role);
    root.dataset.role = role;
    newCase.hidden = role === 'viewer';
    decorateAll();
  }

  return {
    mount() {
      root.classList.add('app');
      root.replaceChildren(header, toolbar, liveBanner, wrap, panel.element, toasts.element);
      bind();
      setConnectionState('connecting');
      setRole(ctx.role());
    },
    setConnectionState,
    setBranches(branches, currentId) {
      switcher.replaceChildren(...branches.map((b) => h('option', { value: String(b.id), text: b.name, selected: b.id === currentId })));
      switcher.hidden = branches.length < 2;
    },
    setRole,
    toast,
    askConflict,
  };
}
