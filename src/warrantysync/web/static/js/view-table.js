// The case table: rows keyed by case id, cells updated in place so a remote
// change never rebuilds (and never steals focus from) what the user is in.
// It is an ARIA grid with one tab stop (a roving tabindex, see view-grid.js);
// `rowModel()` and `columns()` are what keyboard navigation walks. It draws
// the list's window (caselist.js), never more than its few hundred rows.

import { flash, h, initials } from './dom.js';
import { HEADER } from './grid.js';
import { fromControl, isMemberField, isNotFuture, isSortable, kindOf, labelOf, maxLengthOf } from './fields.js';
import { lockTiming } from './where.js';

// Working set first, so 1366 px shows what people triage by; contact details scroll in.
export const COLUMNS = Object.freeze([
  'case_number', 'customer_name', 'product', 'status', 'priority', 'assignee_id', 'issue',
  'purchase_date', 'serial_number', 'customer_phone', 'customer_email', 'notes',
]);

const INPUT_MODES = { customer_phone: 'tel', customer_email: 'email' };

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
    // The 🔒 tooltip: who (or the user's own other tab, where to edit it), how
    // long they have not worked in it, when it lapses.
    const own = Boolean(lock.user && lock.user.id === ctx.store.userId);
    const said = own ? 'open in your other tab' : `locked by ${name}`;
    holder.title = `${said[0].toUpperCase()}${said.slice(1)} · ${lockTiming(lock)}`;
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
    decorateAsk(holder, caseId, field, name, ctx, own);
    // Said to screen readers too: the lock is more than a colour and a glyph.
    control.setAttribute('aria-label', `${control.dataset.label}, ${said}`);
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
function decorateAsk(holder, caseId, field, name, ctx, own) {
  let ask = holder.querySelector(':scope > .ask-release');
  // The user's own lock in another tab is theirs already: nobody to ask.
  if (own || ctx.readOnly() || typeof ctx.askRelease !== 'function') {
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
 * The table draws the rows of the list's window (caselist.js) in its order;
 * filtering and sorting happen on the server. A row is built once and its
 * cells are updated in place.
 * @param {object} ctx shared view context (store, options, memberName, today, readOnly, userId)
 * @param {{onOpen: (caseId: number) => void, onSort: (field: string) => void}} handlers
 */
export function createTable(ctx, { onOpen, onSort }) {
  const rows = new Map(); // caseId -> {tr, cells: Map(field -> {td, control}), link}
  let order = []; // case ids as drawn: the row model's source
  const hiddenColumns = new Set();
  const tbody = h('tbody');
  const headers = new Map();

  const thead = h('thead', {}, h('tr', {}, COLUMNS.map((field) => {
    const button = h('button', { type: 'button', class: 'sort', tabindex: '-1', dataset: { sort: field } },
      labelOf(field), h('span', { class: 'sort-indicator', 'aria-hidden': 'true' }));
    const th = h('th', { scope: 'col', class: `col-${field}`, dataset: { col: field } }, button);
    headers.set(field, th);
    // Still a button (the grid's header cells take the keyboard), but one that sorts nothing.
    if (isSortable(field)) button.addEventListener('click', () => onSort(field));
    else {
      button.setAttribute('aria-disabled', 'true');
      button.title = 'This column cannot be sorted';
    }
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
    const row = rows.get(caseId);
    if (!row || !ctx.store.getCase(caseId)) return null;
    row.link.textContent = ctx.store.getCase(caseId).case_number;
    for (const field of row.cells.keys()) renderCell(caseId, field, options);
    return row;
  }

  /**
   * Draw exactly `ids`, in that order: new rows are built, rows that left are
   * removed, the others stay the same elements (focus, typing, locks untouched).
   * @returns {number[]} the ids whose rows were built now
   */
  function setRows(ids) {
    const wanted = new Set(ids);
    for (const [caseId, row] of rows) {
      if (!wanted.has(caseId)) {
        row.tr.remove();
        rows.delete(caseId);
      }
    }
    const built = [];
    let at = tbody.firstElementChild;
    for (const caseId of ids) {
      let row = rows.get(caseId);
      if (!row) {
        if (!ctx.store.getCase(caseId)) continue;
        row = buildRow(caseId);
        built.push(caseId);
      }
      if (row.tr === at) {
        at = at.nextElementSibling;
      } else {
        tbody.insertBefore(row.tr, at);
      }
    }
    for (const caseId of built) {
      render(caseId);
      if (ctx.onRowBuilt) ctx.onRowBuilt(caseId);
    }
    order = ids.filter((caseId) => rows.has(caseId));
    return built;
  }

  function showSort(sort) {
    const desc = sort.startsWith('-');
    const key = desc ? sort.slice(1) : sort;
    for (const [field, th] of headers) {
      if (field === key) th.setAttribute('aria-sort', desc ? 'descending' : 'ascending');
      else th.removeAttribute('aria-sort');
    }
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

  /** The rows (by their index in `order`) the scroll container `wrap` shows now. */
  function visibleRange(wrap) {
    if (!order.length || !wrap) return null;
    const head = thead.getBoundingClientRect().height;
    const top = wrap.scrollTop + head;
    const bottom = wrap.scrollTop + wrap.clientHeight;
    const offset = (index) => rows.get(order[index]).tr.offsetTop;
    let low = 0;
    let high = order.length - 1;
    while (low < high) {
      const mid = (low + high) >> 1;
      if (offset(mid) + rows.get(order[mid]).tr.offsetHeight <= top) low = mid + 1;
      else high = mid;
    }
    let last = low;
    while (last + 1 < order.length && offset(last + 1) < bottom) last += 1;
    return { first: low, last };
  }

  return {
    element: table,
    rows,
    render,
    renderCell,
    setRows,
    showSort,
    visibleRange,
    /** The rows drawn, in order: what the keyboard walks. */
    rowModel: () => [HEADER, ...order],
    ids: () => order,
    rowCount: () => order.length,
    /** The columns shown, in order. */
    columns: () => COLUMNS.filter((field) => !hiddenColumns.has(field)),
    hiddenColumns: () => new Set(hiddenColumns),
    setHiddenColumns,
    cellTarget,
    /** Where a rendered row shows who is on it (view-presence.js); null for a row not rendered. */
    presenceSlot: (caseId) => rows.get(caseId)?.presence ?? null,
    headerCell: (field) => headers.get(field),
    rowOf: (caseId) => rows.get(caseId)?.tr ?? null,
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
