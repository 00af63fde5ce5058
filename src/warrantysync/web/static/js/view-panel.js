// Side panel: the long fields (issue, notes) with room to write, and the
// case's history timeline.

import { absoluteTime, colourSlot, h, initials, relativeTime } from './dom.js';
import { isMemberField, labelOf } from './fields.js';
import { createControl, decorate, writeControl } from './view-table.js';

const PANEL_FIELDS = ['issue', 'notes'];
const HISTORY_LIMIT = 100;
const HISTORY_REFRESH_MS = 800;

export function describeValue(field, value, ctx) {
  if (value === null || value === undefined || value === '') return '(empty)';
  if (ctx.options(field)) return ctx.label(field, value);
  if (isMemberField(field)) return ctx.memberName(value);
  const text = String(value);
  return text.length > 140 ? `${text.slice(0, 139)}…` : text;
}

/**
 * @param {object} ctx shared view context
 * @param {{actions: object, toast: Function, confirm: Function}} deps
 */
export function createPanel(ctx, { actions, toast, confirm }) {
  let caseId = null;
  let historyTimer = null;
  let historyRequest = 0;
  const fields = new Map(); // field -> {wrap, control}

  const kicker = h('p', { class: 'panel-kicker' });
  const title = h('h2', { id: 'panel-title', class: 'panel-title' });
  const meta = h('p', { class: 'panel-meta' });
  const closeButton = h('button', { type: 'button', class: 'icon-btn panel-close', 'aria-label': 'Close details', text: '×' });
  const timeline = h('ol', { class: 'timeline' });
  const historyNote = h('p', { class: 'muted history-note', 'aria-live': 'polite' });
  const deleteButton = h('button', { type: 'button', class: 'btn btn-danger', text: 'Delete case' });
  const body = h('div', { class: 'panel-body' });

  for (const field of PANEL_FIELDS) {
    const id = `panel-${field}`;
    const control = createControl(field, ctx, labelOf(field));
    control.id = id;
    control.rows = field === 'notes' ? 8 : 5;
    const wrap = h('div', { class: 'panel-field', dataset: { panelField: field } },
      h('label', { for: id, text: labelOf(field) }), control);
    fields.set(field, { wrap, control });
    body.append(wrap);
  }
  body.append(h('section', { class: 'history', 'aria-labelledby': 'history-title' },
    h('h3', { id: 'history-title', text: 'History' }), historyNote, timeline));

  const element = h('aside', { id: 'side-panel', class: 'side-panel', hidden: true, 'aria-labelledby': 'panel-title' },
    h('header', { class: 'panel-head' }, h('div', {}, kicker, title, meta), closeButton),
    body,
    h('footer', { class: 'panel-foot' }, deleteButton));

  closeButton.addEventListener('click', () => close());
  deleteButton.addEventListener('click', () => remove());

  function renderHeader() {
    const json = ctx.store.getCase(caseId);
    kicker.textContent = json.case_number;
    title.textContent = json.customer_name || 'Unnamed customer';
    const parts = [json.product, `${ctx.label('status', json.status)}`, json.updated_at ? `updated ${relativeTime(json.updated_at)}` : ''];
    meta.textContent = parts.filter(Boolean).join(' · ');
    deleteButton.hidden = ctx.role() !== 'manager';
  }

  function renderFields({ force = false } = {}) {
    if (caseId === null) return;
    for (const [field, { wrap, control }] of fields) {
      if (force || document.activeElement !== control) {
        writeControl(control, field, ctx.store.displayValue(caseId, field), ctx);
      }
      decorate(wrap, control, caseId, field, ctx);
    }
  }

  function historyItem(entry) {
    const user = entry.user || { id: 0, name: 'System' };
    const label = labelOf(entry.field);
    const change = entry.old === undefined && entry.new === undefined ? null
      : h('p', { class: 'change' },
        h('del', { text: describeValue(entry.field, entry.old, ctx) }), ' → ',
        h('ins', { text: describeValue(entry.field, entry.new, ctx) }));
    return h('li', { class: 'event' },
      h('span', { class: `avatar avatar-sm avatar-c${colourSlot(user.id)}`, 'aria-hidden': 'true', text: initials(user.name) }),
      h('div', { class: 'event-body' },
        h('p', {}, h('strong', { text: user.name }), ` changed ${label}`),
        change,
        h('time', { datetime: entry.at, title: absoluteTime(entry.at), text: relativeTime(entry.at) })));
  }

  async function loadHistory() {
    if (caseId === null) return;
    const request = ++historyRequest;
    const id = caseId;
    if (!timeline.childElementCount) historyNote.textContent = 'Loading…';
    try {
      const entries = await actions.loadHistory(id, HISTORY_LIMIT);
      if (request !== historyRequest || id !== caseId) return;
      timeline.replaceChildren(...entries.map(historyItem));
      historyNote.textContent = entries.length ? '' : 'No changes yet.';
    } catch (err) {
      if (request === historyRequest) historyNote.textContent = `Could not load history: ${err.message}`;
    }
  }

  function open(id) {
    if (!ctx.store.getCase(id)) return;
    const switching = id !== caseId;
    caseId = id;
    if (switching) timeline.replaceChildren();
    element.hidden = false;
    element.dataset.caseId = String(id);
    renderHeader();
    renderFields({ force: true });
    loadHistory();
    closeButton.focus();
  }

  function close() {
    if (caseId === null) return;
    const id = caseId;
    if (element.contains(document.activeElement)) document.activeElement.blur();
    element.hidden = true;
    caseId = null;
    delete element.dataset.caseId;
    ctx.focusCaseLink(id);
  }

  async function remove() {
    const json = ctx.store.getCase(caseId);
    if (!json) return;
    const sure = await confirm(`Delete ${json.case_number}?`, `The case of ${json.customer_name || 'this customer'} and its history will be removed for everyone.`, 'Delete case');
    if (!sure) return;
    close(); // before the request: its own case-deleted event may beat the answer here
    try {
      await actions.deleteCase(json.id);
      toast(`${json.case_number} deleted.`, 'info');
    } catch (err) {
      toast(err.message, 'error');
    }
  }

  return {
    element,
    open,
    close,
    get caseId() {
      return caseId;
    },
    renderFields,
    /** Store said this case changed: refresh what is shown, history a little later. */
    caseChanged(id, options = {}) {
      if (id !== caseId) return;
      renderHeader();
      renderFields(options);
      clearTimeout(historyTimer);
      historyTimer = setTimeout(loadHistory, HISTORY_REFRESH_MS);
    },
    caseDeleted(id, by) {
      if (id !== caseId) return;
      close();
      if (by) toast(`${by.name} deleted this case.`, 'warning');
    },
    locate(control) {
      if (caseId === null || !element.contains(control) || !control.dataset.control) return null;
      return { caseId, field: control.dataset.control, panel: true };
    },
  };
}
