// The case table: rows keyed by case id, cells updated in place so a remote
// change never rebuilds (and never steals focus from) what the user is in.
// It is an ARIA grid with one tab stop (a roving tabindex, see view-grid.js);
// `rowModel()` and `columns()` are what keyboard navigation walks.

import { flash, h, initials } from './dom.js';
import { HEADER } from './grid.js';
import { fromControl, isMemberField, isNotFuture, kindOf, labelOf, maxLengthOf } from './fields.js';
import { lockTiming } from './where.js';

// Working set first, so 1366 px shows what people triage by; contact details scroll in.
export const COLUMNS = Object.freeze([
  'case_number', 'customer_name', 'product', 'status', 'priority', 'assignee_id', 'issue',
  'purchase_date', 'serial_number', 'customer_phone', 'customer_email', 'notes',
]);

const INPUT_MODES = { customer_phone: 'tel', customer_email: 'email' };
const SEARCHED = ['case_number', 'customer_name', 'customer_phone', 'customer_email', 'product', 'serial_number', 'issue', 'notes'];

function optionsFor(field, ctx) {
  if (isMemberField(field)) {
    return [{ value: '', label: 'Unassigned' }, ...ctx.assignable(field).map((m) => ({ value: String(m.id), label: m.name }))];
  }
  return ctx.options(field);
}

/** The control for one field: looks like text until focused (see app.css). */
export function createControl(field, ctx, label) {
  const kind = kindOf(field);
  const common = { class: `control control-${kind}`, 'aria-label': label, dataset: { control: field, label } };
  if (kind === 'select') {
    return h('select', common, optionsFor(field, ctx).map((o) => h('option', { value: o.value, text: o.label })));
  }
  if (kind === 'multiline') {
    return h('textarea', { ...common, rows: 1, maxlength: maxLengthOf(field), spellcheck: 'true' });
  }
  if (kind === 'date') return h('input', { ...common, type: 'date', max: isNotFuture(field) ? ctx.today() : null });
  // size=1: the column width decides, not the input's default 20 characters.
  return h('input', {
    ...common, type: 'text', size: 1, maxlength: maxLengthOf(field), inputmode: INPUT_MODES[field], autocomplete: 'off',
  });
}

export function writeControl(control, field, value, ctx) {
  const text = value === null || value === undefined ? '' : String(value);
  if (control.tagName === 'SELECT' && text && ![...control.options].some((o) => o.value === text)) {
    // An assignee who is no longer a member still has to be shown as who they are.
    control.append(h('option', { value: text, text: isMemberField(field) ? ctx.memberName(value) : text }));
  }
  if (control.value !== text) control.value = text;
  if (control.tagName === 'SELECT') control.dataset.value = text;
  control.toggleAttribute('data-empty', text === '');
}

export function readControl(control, field) {
  return fromControl(field, control.value);
}

/** Lock marker, disabled state and save state for a cell (table) or panel field. */
export function decorate(holder, control, caseId, field, ctx) {
  const lock = ctx.store.lockedByOther(caseId, field);
  let badge = holder.querySelector(':scope > .lock-badge');
  if (lock) {
    const name = (lock.user && lock.user.name) || 'someone';
    holder.dataset.lockedBy = name;
    // The 🔒 tooltip: who, how long they have not worked in it, when it lapses.
    holder.title = `Locked by ${name} · ${lockTiming(lock)}`;
    // Managers may take a lock away (docs/protocol.md, Locks): their badge is a button.
    const canForce = ctx.role() === 'manager' && typeof ctx.forceRelease === 'function';
    if (badge && (badge.tagName === 'BUTTON') !== canForce) {
      badge.remove();
      badge = null;
    }
    if (!badge) {
      badge = canForce
        ? h('button', {
          type: 'button',
          class: 'lock-badge lock-release',
          title: `Release ${name}'s lock`,
          onclick: (event) => {
            event.preventDefault();
            event.stopPropagation();
            ctx.forceRelease(caseId, field);
          },
        })
        : h('span', { class: 'lock-badge', 'aria-hidden': 'true' });
      holder.prepend(badge);
    }
    // The visible initials start the button's name, the rest is for screen readers.
    badge.replaceChildren(`🔒 ${initials(name)}`, ...(badge.tagName === 'BUTTON'
      ? [h('span', { class: 'visually-hidden', text: ` — release ${name}'s lock on this field` })] : []));
    decorateAsk(holder, caseId, field, name, ctx);
    // Said to screen readers too: the lock is more than a colour and a glyph.
    control.setAttribute('aria-label', `${control.dataset.label}, locked by ${name}`);
  } else {
    delete holder.dataset.lockedBy;
    holder.removeAttribute('title');
    if (badge) badge.remove();
    holder.querySelector(':scope > .ask-release')?.remove();
    control.setAttribute('aria-label', control.dataset.label);
  }
  control.disabled = Boolean(lock) || (ctx.readOnly() && control.tagName === 'SELECT');
  control.readOnly = ctx.readOnly() && control.tagName !== 'SELECT';
  const state = ctx.store.saveState(caseId, field);
  if (state) holder.dataset.saveState = state;
  else delete holder.dataset.saveState;
  holder.toggleAttribute('data-draft', ctx.isDraft(caseId, field));
  if (state === 'error') control.setAttribute('aria-invalid', 'true');
  else control.removeAttribute('aria-invalid');
}

/** On a cell locked by someone else: "Ask <name> for this field" (docs/protocol.md, DOM hooks). */
function decorateAsk(holder, caseId, field, name, ctx) {
  let ask = holder.querySelector(':scope > .ask-release');
  if (ctx.readOnly() || typeof ctx.askRelease !== 'function') {
    if (ask) ask.remove();
    return;
  }
  if (!ask) {
    ask = h('button', {
      type: 'button', class: 'ask-release', tabindex: '-1', dataset: { action: 'ask-release' },
      onclick: (event) => {
        event.preventDefault();
        event.stopPropagation();
        ctx.askRelease(caseId, field);
      },
    });
    holder.append(ask);
  }
  const label = `Ask ${name} for this field`;
  ask.title = label;
  ask.setAttribute('aria-label', label);
  ask.textContent = 'Ask';
}

/**
 * @param {object} ctx shared view context (store, options, memberName, today, readOnly, userId)
 * @param {{onOpen: (caseId: number) => void}} handlers
 */
export function createTable(ctx, { onOpen }) {
  const rows = new Map(); // caseId -> {tr, cells: Map(field -> {td, control})}
  let order = []; // case ids in the table's sort order: the row model's source
  const hiddenColumns = new Set();
  const tbody = h('tbody');
  const sort = { key: 'case_number', dir: -1 };
  const headers = new Map();
  let filters = { query: '', status: '', assignee: '' };

  const thead = h('thead', {}, h('tr', {}, COLUMNS.map((field) => {
    const button = h('button', { type: 'button', class: 'sort', tabindex: '-1', dataset: { sort: field } },
      labelOf(field), h('span', { class: 'sort-indicator', 'aria-hidden': 'true' }));
    const th = h('th', { scope: 'col', class: `col-${field}`, dataset: { col: field } }, button);
    headers.set(field, th);
    button.addEventListener('click', () => sortBy(field));
    return th;
  })));
  const table = h('table', { class: 'cases', id: 'cases-table', role: 'grid', 'aria-label': 'Cases' }, thead, tbody);

  function buildRow(caseId) {
    const json = ctx.store.getCase(caseId);
    const tr = h('tr', { dataset: { caseId: String(caseId) } });
    const cells = new Map();
    const link = h('button', {
      type: 'button', class: 'case-link', tabindex: '-1', 'aria-label': `Open ${json.case_number} details`, text: json.case_number,
    });
    link.addEventListener('click', () => onOpen(caseId));
    const presence = h('span', { class: 'row-presence' });
    tr.append(h('th', { scope: 'row', class: 'col-case_number', dataset: { col: 'case_number' } }, link, presence));
    for (const field of COLUMNS.slice(1)) {
      const control = createControl(field, ctx, `${labelOf(field)}, ${json.case_number}`);
      control.tabIndex = -1;
      const td = h('td', {
        class: `cell cell-${kindOf(field)} col-${field}`, tabindex: '-1', dataset: { field, col: field }, hidden: hiddenColumns.has(field),
      }, control);
      cells.set(field, { td, control });
      tr.append(td);
    }
    const row = { tr, cells, link, presence };
    rows.set(caseId, row);
    return row;
  }

  function renderCell(caseId, field, { force = false, highlight = false } = {}) {
    const row = rows.get(caseId);
    const cell = row && row.cells.get(field);
    if (!cell) return;
    const { td, control } = cell;
    if (force || document.activeElement !== control) {
      writeControl(control, field, ctx.store.displayValue(caseId, field), ctx);
    }
    decorate(td, control, caseId, field, ctx);
    if (highlight) flash(td);
  }

  function render(caseId, options) {
    let row = rows.get(caseId);
    if (!row) {
      row = buildRow(caseId);
      order.push(caseId);
      tbody.append(row.tr);
      if (ctx.onRowBuilt) ctx.onRowBuilt(caseId);
    }
    row.link.textContent = ctx.store.getCase(caseId).case_number;
    for (const field of row.cells.keys()) renderCell(caseId, field, options);
    row.tr.hidden = !visible(caseId);
    return row;
  }

  function sortValue(caseId, key) {
    const value = ctx.store.displayValue(caseId, key);
    if (ctx.options(key)) return ctx.order(key, value);
    if (isMemberField(key)) return value === null ? '\uffff' : ctx.memberName(value).toLowerCase();
    if (key === 'case_number') return String(value ?? '');
    return value === null || value === '' ? '\uffff' : String(value).toLowerCase();
  }

  function compare(a, b) {
    const x = sortValue(a, sort.key);
    const y = sortValue(b, sort.key);
    const diff = typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y), undefined, { numeric: true });
    return diff * sort.dir || (a - b) * sort.dir;
  }

  function showSort() {
    for (const [field, th] of headers) {
      if (field === sort.key) th.setAttribute('aria-sort', sort.dir > 0 ? 'ascending' : 'descending');
      else th.removeAttribute('aria-sort');
    }
  }

  /** Reorders rows; only on explicit user action, so remote edits never move rows under the cursor. */
  function sortBy(key, dir) {
    sort.dir = dir ?? (sort.key === key ? -sort.dir : 1);
    sort.key = key;
    order = [...rows.keys()].sort(compare);
    tbody.append(...order.map((id) => rows.get(id).tr));
    showSort();
  }

  function insert(caseId) {
    const row = render(caseId);
    order = order.filter((id) => id !== caseId);
    let at = order.findIndex((id) => compare(caseId, id) < 0);
    if (at < 0) at = order.length;
    order.splice(at, 0, caseId);
    const next = order[at + 1];
    tbody.insertBefore(row.tr, next === undefined ? null : rows.get(next).tr);
    return row;
  }

  function matches(caseId) {
    const json = ctx.store.getCase(caseId);
    if (!json) return false;
    const value = (field) => ctx.store.displayValue(caseId, field);
    if (filters.status && value('status') !== filters.status) return false;
    if (filters.assignee === 'none' && value('assignee_id') !== null) return false;
    if (filters.assignee === 'me' && value('assignee_id') !== ctx.userId) return false;
    if (/^\d+$/.test(filters.assignee) && value('assignee_id') !== Number(filters.assignee)) return false;
    const query = filters.query.trim().toLowerCase();
    return !query || SEARCHED.some((field) => String(value(field) ?? '').toLowerCase().includes(query));
  }

  function visible(caseId) {
    const row = rows.get(caseId);
    // Never hide a row the user is working in, whatever the filter says now.
    const busy = row && (row.tr.contains(document.activeElement) || ctx.store.editsFor(caseId).size > 0);
    return busy || matches(caseId);
  }

  function remove(caseId) {
    const row = rows.get(caseId);
    if (row) row.tr.remove();
    rows.delete(caseId);
    order = order.filter((id) => id !== caseId);
  }

  function setHiddenColumns(fields) {
    hiddenColumns.clear();
    for (const field of fields) if (field !== COLUMNS[0]) hiddenColumns.add(field);
    for (const [field, th] of headers) th.hidden = hiddenColumns.has(field);
    for (const row of rows.values()) for (const [field, { td }] of row.cells) td.hidden = hiddenColumns.has(field);
  }

  /** The element that takes the focus for a cell of the grid (row: HEADER or a case id). */
  function cellTarget(rowKey, field) {
    if (rowKey === HEADER) return headers.get(field)?.querySelector('button') ?? null;
    const row = rows.get(rowKey);
    if (!row) return null;
    return field === COLUMNS[0] ? row.link : row.cells.get(field)?.td ?? null;
  }

  return {
    element: table,
    rows,
    render,
    renderCell,
    insert,
    sortBy,
    resort: () => sortBy(sort.key, sort.dir),
    remove,
    setFilters(next) {
      filters = { ...filters, ...next };
      for (const id of rows.keys()) rows.get(id).tr.hidden = !visible(id);
    },
    refreshVisibility(caseId) {
      const row = rows.get(caseId);
      if (row) row.tr.hidden = !visible(caseId);
    },
    visibleCount: () => [...rows.values()].filter((r) => !r.tr.hidden).length,
    /** The rows the user can see, in order: what the keyboard walks (a window may replace it). */
    rowModel: () => [HEADER, ...order.filter((id) => !rows.get(id).tr.hidden)],
    /** The columns shown, in order. */
    columns: () => COLUMNS.filter((field) => !hiddenColumns.has(field)),
    hiddenColumns: () => new Set(hiddenColumns),
    setHiddenColumns,
    cellTarget,
    /** Where a rendered row shows who is on it (view-presence.js); null for a row not rendered. */
    presenceSlot: (caseId) => rows.get(caseId)?.presence ?? null,
    headerCell: (field) => headers.get(field),
    rowHasFocus: (caseId) => Boolean(rows.get(caseId)?.tr.contains(document.activeElement)),
    /** The cell holding a control, for keyboard moves (Enter = next row, same column). */
    locate(control) {
      const td = control.closest('[data-field]');
      const tr = control.closest('tr[data-case-id]');
      if (!td || !tr || !tbody.contains(tr)) return null;
      return { caseId: Number(tr.dataset.caseId), field: td.dataset.field, tr, td, control: td.querySelector('[data-control]') };
    },
    /** The grid cell (row key and column) an element is in, header included; null outside the grid. */
    position(element) {
      const cell = element && element.closest && element.closest('[data-col]');
      if (!cell || !table.contains(cell)) return null;
      const tr = cell.closest('tr');
      return { row: tr.dataset.caseId ? Number(tr.dataset.caseId) : HEADER, col: cell.dataset.col };
    },
  };
}
