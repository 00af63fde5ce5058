// Second chances on the page: the undo / redo buttons and their keys, and the
// trash dialog where managers bring deleted cases back (docs/protocol.md,
// "Second chances" and "Trash"). The logic is in undo.js; this is its DOM.

import { absoluteTime, h, relativeTime } from './dom.js';
import { describeError } from './messages.js';

// A control whose own undo (the browser's) is the one a Ctrl+Z means.
const TEXT_INPUTS = new Set(['text', 'search', 'email', 'tel', 'url', 'number', 'password', 'date']);

export function isTextControl(el) {
  if (!el) return false;
  if (el.isContentEditable || el.tagName === 'TEXTAREA') return true;
  return el.tagName === 'INPUT' && TEXT_INPUTS.has((el.getAttribute('type') || 'text').toLowerCase());
}

/** 'undo', 'redo' or null for a keydown: Ctrl+Z, Ctrl+Shift+Z, Ctrl+Y (⌘ on a Mac). */
export function undoKeyOf(event) {
  if (!(event.ctrlKey || event.metaKey) || event.altKey) return null;
  const key = event.key.toLowerCase();
  if (key === 'z') return event.shiftKey ? 'redo' : 'undo';
  if (key === 'y' && !event.shiftKey) return 'redo';
  return null;
}

/**
 * @param {{actions: {undo, redo, nextUndo, nextRedo}, dialogOpen: () => boolean, readOnly: () => boolean,
 *   leaveControl: (el: HTMLElement) => void}} deps leaveControl ends the edit of a focused
 *   field control that is no text (a dropdown), so the value set shows in it
 */
export function createUndoButtons({ actions, dialogOpen, readOnly, leaveControl }) {
  const undo = h('button', { type: 'button', class: 'btn btn-quiet', dataset: { action: 'undo' }, text: '↶ Undo', disabled: true });
  const redo = h('button', { type: 'button', class: 'btn btn-quiet', dataset: { action: 'redo' }, text: '↷ Redo', disabled: true });
  const element = h('div', { class: 'undo-buttons', role: 'group', 'aria-label': 'Undo and redo your saved changes' }, undo, redo);

  function refresh() {
    const next = actions.nextUndo();
    const again = actions.nextRedo();
    element.hidden = readOnly();
    undo.disabled = !next;
    redo.disabled = !again;
    undo.title = next ? `Undo your change to ${next} (Ctrl+Z)` : 'Nothing of yours to undo';
    redo.title = again ? `Redo your change to ${again} (Ctrl+Shift+Z)` : 'Nothing to redo';
  }

  function bind() {
    undo.addEventListener('click', () => actions.undo());
    redo.addEventListener('click', () => actions.redo());
    document.addEventListener('keydown', (event) => {
      const which = undoKeyOf(event);
      // Inside a text field being edited, the browser's own undo of the typing keeps working.
      if (!which || event.defaultPrevented || dialogOpen() || readOnly() || isTextControl(document.activeElement)) return;
      event.preventDefault();
      const el = document.activeElement;
      if (el && el.dataset && el.dataset.control) leaveControl(el);
      actions[which]();
    });
  }

  return { element, refresh, bind };
}

/**
 * The trash: `[data-action="open-trash"]` (managers) opens `#trash`, one
 * `[data-case-id]` per deleted case with `[data-action="restore-case"]`.
 * @param {object} ctx the view context
 * @param {{actions: {loadTrash, restoreCase}, toast: Function}} deps
 */
export function createTrash(ctx, { actions, toast }) {
  const button = h('button', { type: 'button', class: 'btn', dataset: { action: 'open-trash' }, text: 'Trash', hidden: true });
  const note = h('p', { class: 'muted trash-note', 'aria-live': 'polite' });
  const list = h('ul', { class: 'trash-list' });
  const close = h('button', { type: 'button', class: 'btn', text: 'Close' });
  const dialog = h('dialog', { id: 'trash', class: 'dialog trash-dialog', 'aria-labelledby': 'trash-title' },
    h('h2', { id: 'trash-title', text: 'Deleted cases' }), note, list,
    h('div', { class: 'dialog-actions' }, close));
  document.body.append(dialog);
  let request = 0;

  function item(json) {
    const restore = h('button', {
      type: 'button', class: 'btn btn-small', dataset: { action: 'restore-case' }, text: 'Restore', 'aria-label': `Restore ${json.case_number}`,
    });
    const by = json.deleted_by ? json.deleted_by.name : 'someone';
    const li = h('li', { class: 'trash-case', dataset: { caseId: String(json.id) } },
      h('div', { class: 'trash-what' },
        h('strong', { text: json.case_number }), ` ${json.customer_name || 'Unnamed customer'}`,
        json.product ? h('span', { class: 'muted', text: ` · ${json.product}` }) : null),
      h('p', { class: 'muted trash-when' },
        `Deleted by ${by} `,
        h('time', { datetime: json.deleted_at, title: absoluteTime(json.deleted_at), text: relativeTime(json.deleted_at) }),
        ` · purged for good ${absoluteTime(json.purge_at)}`),
      restore);
    restore.addEventListener('click', async () => {
      restore.disabled = true;
      try {
        const back = await actions.restoreCase(json.id);
        li.remove();
        if (!list.childElementCount) note.textContent = 'The trash is empty.';
        toast(`${back.case_number} is back, with its history.`, 'success');
      } catch (error) {
        restore.disabled = false;
        if (error.status === 404) li.remove();
        toast(`Could not restore ${json.case_number}: ${describeError(error)}`, 'error');
      }
    });
    return li;
  }

  /** @param {{fresh?: boolean}} [options] fresh: the dialog opens, so say it is loading */
  async function load({ fresh = false } = {}) {
    const mine = ++request;
    if (fresh) {
      note.textContent = 'Loading…';
      list.replaceChildren();
    }
    try {
      const answer = await actions.loadTrash();
      if (mine !== request) return;
      list.replaceChildren(...answer.cases.map(item));
      const days = answer.retention_days;
      const kept = `Deleted cases are kept for ${days} day${days === 1 ? '' : 's'}, then purged for good.`;
      note.textContent = answer.cases.length ? kept : `The trash is empty. ${kept}`;
    } catch (error) {
      if (mine === request) note.textContent = `Could not load the trash: ${describeError(error)}`;
    }
  }

  function open() {
    dialog.showModal();
    close.focus();
    load({ fresh: true });
  }

  button.addEventListener('click', open);
  close.addEventListener('click', () => dialog.close());
  // A case deleted or brought back meanwhile (by anyone): the open list follows.
  ctx.store.subscribe((change) => {
    if (dialog.open && (change.type === 'deleted' || (change.type === 'created' && !change.snapshot))) load();
  });

  return {
    button,
    open,
    setRole(role) {
      button.hidden = role !== 'manager';
      if (role !== 'manager' && dialog.open) dialog.close();
    },
  };
}
