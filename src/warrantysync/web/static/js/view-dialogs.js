// Toasts and modal dialogs: conflict choice, new case, confirmation,
// keyboard shortcuts, password change.

import { h } from './dom.js';
import { defaultOf, isEditable, isNotFuture, isRequired, kindOf, labelOf } from './fields.js';
import { describeError } from './messages.js';
import { createControl, readControl, writeControl } from './view-table.js';

// The intake form's layout, two to a row: the short fields first, then the
// issue across the whole width. Notes are for the work on a case, not its intake.
const NEW_CASE_FIELDS = Object.freeze([
  'customer_name', 'customer_phone', 'customer_email', 'product', 'serial_number',
  'purchase_date', 'status', 'priority', 'assignee_id', 'issue',
]);
const TOAST_MS = { info: 5000, success: 4000, warning: 8000, error: 10000 };
const MAX_TOASTS = 5;

export function createToasts() {
  const element = h('div', { id: 'toasts', class: 'toasts', role: 'region', 'aria-label': 'Notifications', 'aria-live': 'polite' });
  const recent = new Map(); // message -> time, so a burst of identical errors shows once
  const keyed = new Map(); // key -> toast element, so a later outcome can take it down

  function dismiss(toast) {
    toast.classList.add('leaving');
    for (const [key, el] of keyed) if (el === toast) keyed.delete(key);
    setTimeout(() => toast.remove(), 200);
  }

  /**
   * @param {string} message
   * @param {string} [kind] info | success | warning | error
   * @param {{key?: string, actions?: {label: string, run: Function}[]}} [options] a toast with
   *   actions stays until one is chosen or it is dismissed
   */
  function show(message, kind = 'info', { key, actions = [] } = {}) {
    const now = Date.now();
    if (!actions.length && recent.has(message) && now - recent.get(message) < 3000) return;
    recent.set(message, now);
    if (key && keyed.has(key)) dismiss(keyed.get(key));
    const close = h('button', { type: 'button', class: 'toast-close', 'aria-label': 'Dismiss', text: '×' });
    const buttons = actions.map(({ label, run }) => h('button', {
      type: 'button', class: 'toast-action', text: label,
      onclick: () => {
        dismiss(toast);
        run();
      },
    }));
    const toast = h('div', { class: 'toast', dataset: { kind, ...(key ? { key } : {}) }, role: kind === 'error' ? 'alert' : 'status' },
      h('div', { class: 'toast-body' }, h('p', { class: 'toast-text', text: message }),
        buttons.length ? h('div', { class: 'toast-actions' }, buttons) : null), close);
    close.addEventListener('click', () => dismiss(toast));
    element.append(toast);
    if (key) keyed.set(key, toast);
    while (element.childElementCount > MAX_TOASTS) element.firstElementChild.remove();
    if (!actions.length) setTimeout(() => dismiss(toast), TOAST_MS[kind] ?? TOAST_MS.info);
    return toast;
  }

  return {
    element,
    show,
    /** Take down the toast shown under `key`, if it is still up. */
    dismissKey(key) {
      if (keyed.has(key)) dismiss(keyed.get(key));
    },
  };
}

function modal(className, labelledBy) {
  const dialog = h('dialog', { class: `dialog ${className}`, 'aria-labelledby': labelledBy });
  document.body.append(dialog);
  return dialog;
}

/** Conflicts come from the saver one at a time; the save queue waits on the answer. */
export function createConflictDialog(ctx) {
  const dialog = modal('conflict-dialog', 'conflict-title');
  dialog.id = 'conflict-dialog';

  function valueBlock(title, field, value, className) {
    const shown = value === null || value === '' ? '(empty)' : ctx.describe(field, value);
    return h('section', { class: `conflict-value ${className}` }, h('h3', { text: title }), h('p', { class: 'value', text: shown }));
  }

  return function ask(caseId, field, theirs, mine, by) {
    const json = ctx.store.getCase(caseId);
    const who = by && by.name ? by.name : 'Someone';
    // Keeping theirs loses nothing already saved: it is the default.
    const keep = h('button', { type: 'button', class: 'btn btn-primary', dataset: { choice: 'theirs' }, text: 'Keep theirs' });
    const use = h('button', { type: 'button', class: 'btn', dataset: { choice: 'mine' }, text: 'Use mine' });
    dialog.replaceChildren(
      h('h2', { id: 'conflict-title', text: 'This field changed while you were editing' }),
      h('p', { class: 'muted', text: `${who} changed ${labelOf(field)} of ${json ? json.case_number : 'this case'}. Which version should stay?` }),
      h('div', { class: 'conflict-values' },
        valueBlock(`Theirs (${who})`, field, theirs, 'theirs'),
        valueBlock('Yours', field, mine, 'mine')),
      h('p', { class: 'muted conflict-note', text: '“Use mine” replaces their saved value with yours.' }),
      h('div', { class: 'dialog-actions' }, use, keep),
    );
    return new Promise((resolve) => {
      const choose = (choice) => {
        dialog.close();
        resolve(choice);
      };
      keep.addEventListener('click', () => choose('theirs'));
      use.addEventListener('click', () => choose('mine'));
      // A choice is required: Escape must not silently pick one.
      dialog.addEventListener('cancel', (event) => event.preventDefault(), { once: true });
      dialog.showModal();
      keep.focus();
    });
  };
}

export function createConfirmDialog() {
  const dialog = modal('confirm-dialog', 'confirm-title');
  return function confirm(title, text, confirmLabel) {
    const cancel = h('button', { type: 'button', class: 'btn', text: 'Cancel' });
    const ok = h('button', { type: 'button', class: 'btn btn-danger', text: confirmLabel });
    dialog.replaceChildren(h('h2', { id: 'confirm-title', text: title }), h('p', { text }),
      h('div', { class: 'dialog-actions' }, cancel, ok));
    return new Promise((resolve) => {
      const done = (answer) => {
        dialog.close();
        resolve(answer);
      };
      cancel.addEventListener('click', () => done(false));
      ok.addEventListener('click', () => done(true));
      dialog.addEventListener('cancel', () => resolve(false), { once: true });
      dialog.showModal();
      cancel.focus();
    });
  };
}

/** "New case" form: POST, then the row appears (and the stream confirms it to everyone). */
export function createNewCaseDialog(ctx, { create, onCreated }) {
  const dialog = modal('new-case-dialog', 'new-case-title');
  dialog.id = 'new-case-dialog';
  const error = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary', text: 'Create case' });
  const cancel = h('button', { type: 'button', class: 'btn', text: 'Cancel' });
  const controls = new Map();
  const grid = h('div', { class: 'form-grid' });
  for (const field of NEW_CASE_FIELDS.filter(isEditable)) {
    const control = createControl(field, ctx, labelOf(field));
    control.id = `new-${field}`;
    control.name = field;
    control.classList.add('form-control');
    control.required = isRequired(field);
    if (kindOf(field) === 'multiline') control.rows = 3;
    controls.set(field, control);
    grid.append(h('div', { class: `form-row form-row-${kindOf(field)}` },
      h('label', { for: control.id, text: isRequired(field) ? `${labelOf(field)} *` : labelOf(field) }), control));
  }
  const form = h('form', { method: 'dialog', novalidate: false },
    h('h2', { id: 'new-case-title', text: 'New warranty case' }), grid, error,
    h('div', { class: 'dialog-actions' }, cancel, submit));
  dialog.append(form);
  cancel.addEventListener('click', () => dialog.close());

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const body = {};
    for (const [field, control] of controls) {
      const value = readControl(control, field);
      if (value !== '' && value !== null) body[field] = value;
    }
    submit.disabled = true;
    error.hidden = true;
    try {
      const json = await create(body);
      dialog.close();
      onCreated(json);
    } catch (err) {
      error.textContent = describeError(err);
      error.hidden = false;
    } finally {
      submit.disabled = false;
    }
  });

  return function open() {
    form.reset();
    for (const [field, control] of controls) {
      writeControl(control, field, defaultOf(field), ctx);
      if (isNotFuture(field)) control.max = ctx.today();
    }
    error.hidden = true;
    dialog.showModal();
    controls.values().next().value.focus();
  };
}

const SHORTCUTS = [
  ['Moving', [
    ['↑ ↓ ← →', 'Move between cells'],
    ['Home / End', 'First / last column of the row (with Ctrl: of the table)'],
    ['Page Up / Page Down', 'A screenful of rows up / down'],
    ['Tab', 'Leave the table (it is one stop)'],
  ]],
  ['Editing', [
    ['Enter or F2', 'Edit the cell, keeping its value'],
    ['Type a character', 'Edit the cell, replacing its value'],
    ['Delete / Backspace', 'Clear the cell'],
    ['Enter / Shift+Enter', 'Save and move down / up'],
    ['Tab / Shift+Tab', 'Save and move right / left'],
    ['Escape', 'Cancel the edit and stay on the cell'],
    ['Shift+Enter in a long text', 'New line'],
    ['Ctrl+V / Ctrl+C', 'Paste into / copy the cell'],
  ]],
  ['Anywhere', [
    ['/', 'Search cases'],
    ['Enter on a case number', 'Open the case’s details'],
    ['Escape', 'Close the details'],
    ['?', 'This list'],
  ]],
];

export function createHelpDialog() {
  const dialog = modal('help-dialog', 'help-title');
  dialog.id = 'shortcuts-dialog';
  const close = h('button', { type: 'button', class: 'btn btn-primary', text: 'Close' });
  dialog.append(
    h('h2', { id: 'help-title', text: 'Keyboard shortcuts' }),
    ...SHORTCUTS.map(([title, rows]) => h('section', { class: 'shortcuts' },
      h('h3', { text: title }),
      h('dl', {}, rows.map(([keys, what]) => [h('dt', {}, h('kbd', { text: keys })), h('dd', { text: what })])))),
    h('div', { class: 'dialog-actions' }, close),
  );
  close.addEventListener('click', () => dialog.close());
  return function open() {
    if (!dialog.open) dialog.showModal();
    close.focus();
  };
}

/** "Change password": the current one, the new one twice (docs/protocol.md, "Changing the password"). */
export function createPasswordDialog({ change, email, onChanged }) {
  const dialog = modal('password-dialog', 'password-title');
  dialog.id = 'password-dialog';
  const field = (id, label, autocomplete) => {
    const input = h('input', { id, name: id, type: 'password', class: 'form-control control', autocomplete, required: true });
    return [input, h('div', { class: 'form-row' }, h('label', { for: id, text: label }), input)];
  };
  const [current, currentRow] = field('password-current', 'Current password', 'current-password');
  const [next, nextRow] = field('password-new', 'New password (at least 8 characters)', 'new-password');
  const [again, againRow] = field('password-again', 'New password again', 'new-password');
  // Lets a password manager file the new password under the right account.
  const username = h('input', { type: 'email', name: 'username', autocomplete: 'username', value: email || '', hidden: true, 'aria-hidden': 'true', tabindex: '-1' });
  const error = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary', text: 'Change password' });
  const cancel = h('button', { type: 'button', class: 'btn', text: 'Cancel' });
  const form = h('form', { method: 'dialog', novalidate: true },
    h('h2', { id: 'password-title', text: 'Change your password' }),
    h('p', { class: 'muted', text: 'You stay signed in here; every other place you are signed in is signed out.' }),
    username, h('div', { class: 'form-stack' }, currentRow, nextRow, againRow), error,
    h('div', { class: 'dialog-actions' }, cancel, submit));
  dialog.append(form);
  cancel.addEventListener('click', () => dialog.close());

  function fail(message, focus) {
    error.textContent = message;
    error.hidden = false;
    if (focus) focus.focus();
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.hidden = true;
    if (!current.value) return fail('Enter your current password.', current);
    if (next.value.length < 8) return fail('The new password must have at least 8 characters.', next);
    if (next.value !== again.value) return fail('The two new passwords are not the same.', again);
    submit.disabled = true;
    try {
      const answer = await change(current.value, next.value);
      dialog.close();
      onChanged(answer);
    } catch (err) {
      const body = (err && err.body) || {};
      fail(describeError(err), body.field === 'current_password' ? current : body.field === 'new_password' ? next : null);
    } finally {
      submit.disabled = false;
    }
    return undefined;
  });

  return function open() {
    form.reset();
    username.value = email || '';
    error.hidden = true;
    dialog.showModal();
    current.focus();
  };
}
