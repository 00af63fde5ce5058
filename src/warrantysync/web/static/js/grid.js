// The case table as a spreadsheet grid: where a key takes the active cell,
// and whether a key starts an edit, commits it, cancels it or only moves.
// No DOM. The grid is a row model (the ordered row keys the user can see:
// HEADER, then case ids) times the visible columns, so a windowed table can
// hand in the same lists without every row being in the document.

export const HEADER = 'header';

const MOVES = new Set(['ArrowUp', 'ArrowDown', 'ArrowLeft', 'ArrowRight', 'Home', 'End', 'PageUp', 'PageDown']);

function clamp(value, low, high) {
  return Math.min(Math.max(value, low), high);
}

/**
 * The cell a navigation key moves to, or null when `key` is not a move.
 * @param {{row: *, col: string}} position the active cell
 * @param {string} key KeyboardEvent.key
 * @param {{rows: Array, cols: string[], pageRows?: number, ctrl?: boolean}} grid
 */
export function moveTarget(position, key, { rows, cols, pageRows = 10, ctrl = false }) {
  if (!MOVES.has(key) || !rows.length || !cols.length) return null;
  const firstBody = rows[0] === HEADER && rows.length > 1 ? 1 : 0;
  let r = rows.indexOf(position.row);
  let c = cols.indexOf(position.col);
  if (r < 0) r = firstBody;
  if (c < 0) c = 0;
  const last = rows.length - 1;
  switch (key) {
    case 'ArrowUp': r = ctrl ? firstBody : r - 1; break;
    case 'ArrowDown': r = ctrl ? last : r + 1; break;
    case 'ArrowLeft': c = ctrl ? 0 : c - 1; break;
    case 'ArrowRight': c = ctrl ? cols.length - 1 : c + 1; break;
    case 'Home': c = 0; if (ctrl) r = firstBody; break;
    case 'End': c = cols.length - 1; if (ctrl) r = last; break;
    // A page never lands on the header: it is one row, not a page.
    case 'PageUp': r = r <= firstBody ? r : Math.max(firstBody, r - pageRows); break;
    case 'PageDown': r = r + pageRows; break;
    default: return null;
  }
  return { row: rows[clamp(r, 0, last)], col: cols[clamp(c, 0, cols.length - 1)] };
}

/** The cell beside `position` in `direction` ('up' | 'down' | 'left' | 'right'), for Enter and Tab. */
export function stepTarget(position, direction, grid) {
  const key = { up: 'ArrowUp', down: 'ArrowDown', left: 'ArrowLeft', right: 'ArrowRight' }[direction];
  const next = key ? moveTarget(position, key, grid) : null;
  return next && next.row !== HEADER ? next : position;
}

function printable(event) {
  return event.key.length === 1 && !event.ctrlKey && !event.metaKey && !event.altKey;
}

/**
 * What a key does in a cell. `editing` is whether the cell's control has the
 * focus (edit mode); otherwise the cell has it (navigation). Returns null
 * when the key is the control's or the browser's own business.
 *
 * @param {{key: string, shiftKey?: boolean, ctrlKey?: boolean, metaKey?: boolean, altKey?: boolean}} event
 * @param {{editing: boolean, kind: string|null, panel?: boolean}} where kind: fields.js kindOf, null for
 *   a cell without a control (the case number, a header)
 * @returns {null | {type: 'move'} | {type: 'edit', text?: string} | {type: 'commit', move: string|null}
 *   | {type: 'cancel'} | {type: 'activate'} | {type: 'help'}}
 */
export function keyAction(event, { editing, kind, panel = false }) {
  const { key } = event;
  const command = event.ctrlKey || event.metaKey;
  if (!editing) {
    if (panel) return null;
    if (MOVES.has(key)) return { type: 'move' };
    if (kind === null) return key === 'Enter' || key === ' ' ? { type: 'activate' } : key === '?' ? { type: 'help' } : null;
    if (key === 'Enter' || key === 'F2') return { type: 'edit' };
    if (key === '?') return { type: 'help' };
    if (key === '/') return null; // the page's "search" shortcut
    if ((key === ' ' || (key === 'ArrowDown' && event.altKey)) && (kind === 'select' || kind === 'date')) return { type: 'edit' };
    if ((key === 'Delete' || key === 'Backspace') && (kind === 'text' || kind === 'multiline')) return { type: 'edit', text: '' };
    if (printable(event)) return kind === 'text' || kind === 'multiline' ? { type: 'edit', text: key } : { type: 'edit' };
    return null;
  }
  if (key === 'Escape') return { type: 'cancel' };
  if (key === 'Tab') return panel ? null : { type: 'commit', move: event.shiftKey ? 'left' : 'right' };
  if (key !== 'Enter') return null;
  if (kind === 'multiline') {
    // A new line is Shift+Enter or Alt+Enter in the table, plain Enter in the panel's roomy box.
    if (panel) return command ? { type: 'commit', move: null } : null;
    if (event.shiftKey || event.altKey) return null;
    return { type: 'commit', move: 'down' };
  }
  if (panel) return { type: 'commit', move: null };
  return { type: 'commit', move: event.shiftKey ? 'up' : 'down' };
}

/**
 * The columns shown when the user has not chosen: the longest prefix of the
 * table's order that fits `available` pixels (the first column always shows).
 * @param {{field: string, width: number}[]} columns in the table's order
 */
export function fittingColumns(columns, available) {
  const shown = [];
  let used = 0;
  for (const { field, width } of columns) {
    if (shown.length && used + width > available) break;
    shown.push(field);
    used += width;
  }
  return shown;
}
