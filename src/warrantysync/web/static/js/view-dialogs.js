// Toasts and modal dialogs: conflict choice, new case, confirmation.

import { h } from './dom.js';
import { defaultOf, isEditable, isNotFuture, isRequired, kindOf, labelOf } from './fields.js';
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

  function dismiss(toast) {
    toast.classList.add('leaving');
    setTimeout(() => toast.remove(), 200);
  }

  function show(message, kind = 'info') {
    const now = Date.now();
    if (recent.has(message) && now - recent.get(message) < 3000) return;
    recent.set(message, now);
    const close = h('button', { type: 'button', class: 'toast-close', 'aria-label': 'Dismiss', text: '×' });
    const toast = h('div', { class: 'toast', dataset: { kind }, role: kind === 'error' ? 'alert' : 'status' },
      h('p', { class: 'toast-text', text: message }), close);
    close.addEventListener('click', () => dismiss(toast));
    element.append(toast);
    while (element.childElementCount > MAX_TOASTS) element.firstElementChild.remove();
    setTimeout(() => dismiss(toast), TOAST_MS[kind] ?? TOAST_MS.info);
  }

  return { element, show };
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
    const keep = h('button', { type: 'button', class: 'btn', dataset: { choice: 'theirs' }, text: 'Keep theirs' });
    const use = h('button', { type: 'button', class: 'btn btn-primary', dataset: { choice: 'mine' }, text: 'Use mine' });
    dialog.replaceChildren(
      h('h2', { id: 'conflict-title', text: 'This field changed while you were editing' }),
      h('p', { class: 'muted', text: `${who} changed ${labelOf(field)} of ${json ? json.case_number : 'this case'}. Which version should stay?` }),
      h('div', { class: 'conflict-values' },
        valueBlock(`Theirs (${who})`, field, theirs, 'theirs'),
        valueBlock('Yours', field, mine, 'mine')),
      h('div', { class: 'dialog-actions' }, keep, use),
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
      use.focus();
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
      error.textContent = err.message;
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
