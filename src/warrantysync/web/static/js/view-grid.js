// The keyboard and the edit mode of the table and the side panel.
//
// The table is an ARIA grid with a roving tabindex: one cell is the tab stop,
// arrows, Home/End and the page keys move it (grid.js says where). Moving
// never takes a lock. Editing starts on an explicit gesture -- a click into
// the control, Enter/F2, a typed character, a paste, a pick -- and only then
// is the lock taken (docs/protocol.md, "Browser page: DOM hooks"); Enter/Tab commit and
// move, Escape cancels and keeps the cell. In the panel the fields are a
// form reached with Tab; there too the lock waits for the first change.

import { isDebounced, kindOf, labelOf, sameValue } from './fields.js';
import { HEADER, keyAction, moveTarget, stepTarget } from './grid.js';
import { readControl, writeControl } from './view-table.js';

const MODIFIERS = new Set(['Shift', 'Control', 'Alt', 'Meta', 'CapsLock', 'Tab', 'Escape']);
const ROW_HEIGHT_GUESS = 36;

/**
 * @param {object} ctx shared view context
 * @param {{table: object, panel: object, actions: object, toast: Function, peek: object,
 *   openHelp: Function, dialogOpen: () => boolean}} parts
 */
export function createGrid(ctx, { table, panel, actions, toast, peek, openHelp, dialogOpen }) {
  let active = null; // {row, col}: the cell that is the grid's tab stop
  let session = null; // the edit in progress: {caseId, field, control, panel, original, keyed, lost}

  function gridShape() {
    const wrap = table.element.parentElement;
    const pageRows = Math.max(1, Math.floor(((wrap && wrap.clientHeight) || 600) / ROW_HEIGHT_GUESS) - 2);
    return { rows: table.rowModel(), cols: table.columns(), pageRows };
  }

  function setActive(position) {
    const previous = active && table.cellTarget(active.row, active.col);
    const next = table.cellTarget(position.row, position.col);
    if (!next) return null;
    if (previous && previous !== next) previous.tabIndex = -1;
    next.tabIndex = 0;
    active = { row: position.row, col: position.col };
    return next;
  }

  /** Keep exactly one tab stop in the grid, on a cell that still exists. */
  function ensureActive() {
    const rows = table.rowModel();
    // The header is the stop only while there are no rows, or while the user is on it.
    const parked = active && active.row === HEADER && rows.length > 1 && !table.element.contains(document.activeElement);
    if (active && !parked && table.cellTarget(active.row, active.col) && table.columns().includes(active.col)
        && rows.includes(active.row)) {
      setActive(active);
      return;
    }
    const previous = active && table.cellTarget(active.row, active.col);
    if (previous) previous.tabIndex = -1;
    active = null;
    setActive({ row: rows[1] ?? HEADER, col: table.columns()[0] });
  }

  function focusCell(position) {
    const target = setActive(position);
    if (!target) return;
    target.focus();
    const cell = target.closest('[data-col]');
    if (cell) cell.scrollIntoView({ block: 'nearest', inline: 'nearest' });
  }

  function tableWhere(position) {
    if (position.row === HEADER || position.col === table.columns()[0]) return null;
    const td = table.cellTarget(position.row, position.col);
    return td ? table.locate(td.querySelector('[data-control]')) : null;
  }

  function locate(control) {
    if (!control || !control.dataset || !control.dataset.control) return null;
    const inTable = table.locate(control);
    if (inTable) return { ...inTable, control, panel: false };
    const inPanel = panel.locate(control);
    return inPanel ? { ...inPanel, control, panel: true } : null;
  }

  // -- edit sessions ----------------------------------------------------------

  function begin(where) {
    if (session && session.control === where.control) return session;
    if (session) end();
    const s = {
      caseId: where.caseId, field: where.field, control: where.control, panel: where.panel,
      original: ctx.store.displayValue(where.caseId, where.field), keyed: false, lost: false,
    };
    session = s;
    peek.hide();
    actions.focusField(s.caseId, s.field).then((result) => {
      if (result.ok || session !== s) return;
      s.lost = true;
      leave(s);
      if (result.message) toast(result.message, 'warning');
    });
    return s;
  }

  function end() {
    const s = session;
    if (!s) return;
    session = null;
    actions.blurField(s.caseId, s.field, { save: !s.lost });
  }

  /** Out of edit mode, keeping the keyboard where it was. */
  function leave(s) {
    if (s.panel) {
      const holder = s.control.closest('[data-panel-field]');
      if (document.activeElement === s.control && holder) holder.focus();
      else if (session === s) end();
      return;
    }
    const td = s.control.closest('[data-col]');
    if (td && document.activeElement === s.control) td.focus();
    else if (session === s) end();
  }

  function cancel(s) {
    const { caseId, field, control } = s;
    if (sameValue(ctx.store.confirmedValue(caseId, field), s.original)) {
      actions.discard(caseId, field);
    } else {
      // A save went out while typing: cancelling puts the value back.
      actions.edit(caseId, field, s.original, { debounce: false });
    }
    writeControl(control, field, s.original, ctx);
    if (s.panel) end();
    else leave(s);
  }

  function commit(s, move) {
    if (s.panel) {
      end();
      return;
    }
    const here = table.position(s.control);
    const next = move ? stepTarget(here, move, gridShape()) : here;
    focusCell(next);
  }

  /** Enter edit mode on a table cell from the keyboard. */
  function enterEdit(position, { text, open = false } = {}) {
    const where = tableWhere(position);
    if (!where) return;
    const { caseId, field, control } = where;
    const lock = ctx.store.lockedByOther(caseId, field);
    if (lock) {
      const own = lock.user && lock.user.id === ctx.store.userId;
      const name = (lock.user && lock.user.name) || 'someone else';
      // Offer to ask for it (docs/protocol.md, "Asking for a locked field").
      const ask = !own && !ctx.readOnly() && ctx.askRelease && lock.user
        ? [{ label: `Ask ${name} for this field`, run: () => ctx.askRelease(caseId, field) }] : [];
      toast(own ? 'Open in your other tab: edit it there, or close it there first.'
        : `Locked by ${name}: you can read it, not change it now.`, 'info', { actions: ask });
      return;
    }
    if (ctx.readOnly() && text !== undefined) {
      toast('View only: you can read this branch’s cases but not change them.', 'info');
      return;
    }
    if (ctx.isDraft(caseId, field) && text !== undefined) {
      toast('Your unsaved text is kept here as a draft: press Enter to go on editing it.', 'info');
      return;
    }
    control.focus();
    const kind = kindOf(field);
    if (kind === 'text' || kind === 'multiline') {
      if (text !== undefined && !ctx.readOnly()) {
        control.value = text;
        actions.edit(caseId, field, readControl(control, field));
      }
      const end = control.value.length;
      control.setSelectionRange(end, end);
    } else if (open && typeof control.showPicker === 'function') {
      try {
        control.showPicker();
      } catch {
        // Not allowed without a user gesture in some browsers: the control is focused anyway.
      }
    }
  }

  // -- events -------------------------------------------------------------------

  function onFocusIn(event) {
    const position = table.position(event.target);
    if (position) setActive(position);
    const where = locate(event.target);
    if (where && !where.panel) begin(where);
    else if (position && !where) peek.showFor(event.target.closest('[data-field]'), { keyboard: true });
  }

  function onFocusOut(event) {
    if (session && event.target === session.control) end();
    peek.hide();
  }

  function onPointerDown(event) {
    const where = locate(event.target);
    if (where && where.panel && !where.control.disabled) begin(where);
  }

  function onBeforeInput(event) {
    const where = locate(event.target);
    if (where && !ctx.readOnly()) begin(where);
  }

  function onInput(event) {
    const where = locate(event.target);
    if (!where || ctx.readOnly()) return;
    const s = begin(where);
    // Typing saves after a pause; a pick saves at once -- unless the choice
    // was walked to with the keyboard: then it too waits for a pause.
    if (isDebounced(where.field)) {
      if (event.type === 'input') actions.edit(where.caseId, where.field, readControl(where.control, where.field));
    } else if (event.type === 'change') {
      actions.edit(where.caseId, where.field, readControl(where.control, where.field), { debounce: s.keyed });
    }
  }

  function onControlKey(event, where) {
    const editing = Boolean(session && session.control === where.control);
    const kind = kindOf(where.field);
    const action = keyAction(event, { editing, kind, panel: where.panel });
    if (!action) {
      if (!editing && where.panel && (kind === 'select' || kind === 'date') && !MODIFIERS.has(event.key) && !ctx.readOnly()) begin(where);
      const s = session;
      if (s && s.control === where.control && (kind === 'select' || kind === 'date') && !MODIFIERS.has(event.key)) {
        // The change this key causes (if any) fires before the next task.
        s.keyed = true;
        setTimeout(() => { s.keyed = false; }, 0);
      }
      return;
    }
    if (action.type === 'cancel') {
      event.preventDefault();
      if (editing) cancel(session);
      else if (where.panel) panel.close();
    } else if (action.type === 'commit' && editing) {
      event.preventDefault();
      commit(session, action.move);
    }
  }

  function onCellKey(event, position) {
    const kind = position.row === HEADER || position.col === table.columns()[0] ? null : kindOf(position.col);
    const action = keyAction(event, { editing: false, kind });
    if (!action) return;
    event.preventDefault();
    if (action.type === 'move') {
      const next = moveTarget(position, event.key, { ...gridShape(), ctrl: event.ctrlKey || event.metaKey });
      if (next) focusCell(next);
    } else if (action.type === 'edit') {
      enterEdit(position, { text: action.text, open: event.key === ' ' || event.altKey });
    } else if (action.type === 'activate') {
      const target = table.cellTarget(position.row, position.col);
      if (target) target.click();
    } else if (action.type === 'help') {
      openHelp();
    }
  }

  function onKeyDown(event) {
    if (dialogOpen() || event.defaultPrevented) return;
    const where = locate(event.target);
    if (where) {
      onControlKey(event, where);
      return;
    }
    const position = table.position(event.target);
    if (position) onCellKey(event, position);
  }

  function onPaste(event) {
    const position = table.position(event.target);
    if (!position || locate(event.target)) return;
    const kind = position.row === HEADER ? null : kindOf(position.col);
    if (kind !== 'text' && kind !== 'multiline') return;
    event.preventDefault();
    const text = event.clipboardData ? event.clipboardData.getData('text/plain') : '';
    enterEdit(position, { text });
  }

  function onCopy(event) {
    const position = table.position(event.target);
    if (!position || position.row === HEADER || locate(event.target) || !event.clipboardData) return;
    const json = ctx.store.getCase(position.row);
    if (!json) return;
    const value = position.col === table.columns()[0] ? json.case_number : ctx.store.displayValue(position.row, position.col);
    event.preventDefault();
    event.clipboardData.setData('text/plain', ctx.describeFull(position.col, value));
  }

  return {
    bind(root) {
      root.addEventListener('focusin', onFocusIn);
      root.addEventListener('focusout', onFocusOut);
      root.addEventListener('pointerdown', onPointerDown);
      root.addEventListener('beforeinput', onBeforeInput);
      root.addEventListener('input', onInput);
      root.addEventListener('change', onInput);
      root.addEventListener('keydown', onKeyDown);
      root.addEventListener('paste', onPaste);
      root.addEventListener('copy', onCopy);
    },
    ensureActive,
    /** Put the grid's focus on a cell (e.g. the case link of a new row). */
    focus(rowKey, col) {
      focusCell({ row: rowKey, col: col ?? table.columns()[0] });
    },
    /** Where the keyboard is: the active cell. */
    get active() {
      return active;
    },
    /** A row is about to go: keep the keyboard in the grid if it was in that row. */
    rowLeaving(caseId) {
      if (!active || active.row !== caseId) return null;
      const rows = table.rowModel();
      const at = rows.indexOf(caseId);
      const next = rows[at + 1] ?? rows[at - 1] ?? HEADER;
      const hadFocus = table.rowHasFocus(caseId);
      return () => {
        if (hadFocus) focusCell({ row: next, col: active.col });
        else setActive({ row: next, col: active.col });
      };
    },
    /** Our lock on a field went away: leave its edit mode, keep the text as a draft. */
    lockLost(caseId, field) {
      const s = session && session.caseId === caseId && session.field === field ? session : null;
      if (s) {
        s.lost = true;
        leave(s);
      }
      return Boolean(s);
    },
    /** For the shortcuts help: the label of the field the keyboard is on. */
    activeLabel: () => (active ? labelOf(active.col) : ''),
  };
}
