// Side panel: every field of one case with room to read and write, its own
// link, a printable sheet, and the case's history with what changed.

import { wordDiff, summarizeDiff } from './diff.js';
import { absoluteTime, colourSlot, h, initials, relativeTime } from './dom.js';
import { editableFields, isEditable, isMemberField, kindOf, labelOf, sameValue } from './fields.js';
import { createControl, decorate, writeControl } from './view-table.js';

const HISTORY_LIMIT = 100;
const HISTORY_REFRESH_MS = 800;
const SHORT = 140;
// A text change longer than this is shown as a word diff with some context.
const DIFF_FROM = 60;

/** A value in a line of text: labels for choices, names for users, long text cut. */
export function describeValue(field, value, ctx) {
  const text = describeFull(field, value, ctx);
  return text.length > SHORT ? `${text.slice(0, SHORT - 1)}…` : text;
}

/** The whole value as text, for the tooltip, the case sheet and copying. */
export function describeFull(field, value, ctx) {
  if (value === null || value === undefined || value === '') return '(empty)';
  if (ctx.options(field)) return ctx.label(field, value);
  if (isMemberField(field)) return ctx.memberName(value);
  return String(value);
}

function isText(field) {
  const kind = kindOf(field);
  return kind === 'text' || kind === 'multiline';
}

function changeOf(entry, ctx) {
  const { field } = entry;
  const before = entry.old ?? '';
  const after = entry.new ?? '';
  const long = typeof before === 'string' && typeof after === 'string'
    && isText(field) && Math.max(before.length, after.length) > DIFF_FROM;
  if (!long) {
    return h('p', { class: 'change' },
      h('del', { text: describeValue(field, entry.old, ctx) }), ' → ',
      h('ins', { text: describeValue(field, entry.new, ctx) }));
  }
  const { segments, full } = summarizeDiff(wordDiff(before, after));
  const shown = segments.map((s) => (s.op === 'del' ? h('del', { text: s.text })
    : s.op === 'ins' ? h('ins', { text: s.text })
      : h('span', { class: s.op === 'gap' ? 'gap' : 'same', text: s.text })));
  const diff = h('p', { class: 'change change-diff' }, shown);
  if (full) return diff;
  return h('div', { class: 'change-wrap' }, diff,
    h('details', { class: 'change-full' },
      h('summary', { text: 'Show the whole text' }),
      h('p', { class: 'change-label', text: 'Before' }), h('p', { class: 'change-text', text: before || '(empty)' }),
      h('p', { class: 'change-label', text: 'After' }), h('p', { class: 'change-text', text: after || '(empty)' })));
}

/**
 * @param {object} ctx shared view context
 * @param {{actions: object, toast: Function, confirm: Function, link: (id) => string,
 *   onShown: (id: number|null) => void, onPrint: (id: number, history: object[]) => void}} deps
 */
export function createPanel(ctx, { actions, toast, confirm, link, onShown, onPrint }) {
  let caseId = null;
  let historyTimer = null;
  let historyRequest = 0;
  let history = [];
  const fields = new Map(); // field -> {wrap, control}

  const kicker = h('p', { class: 'panel-kicker' });
  const title = h('h2', { id: 'panel-title', class: 'panel-title' });
  const meta = h('p', { class: 'panel-meta' });
  // Who else is on this case (view-presence.js fills it).
  const presenceLine = h('ul', { id: 'panel-presence', class: 'panel-presence', 'aria-label': 'On this case now', hidden: true });
  const closeButton = h('button', { type: 'button', class: 'icon-btn panel-close', 'aria-label': 'Close details', text: '×' });
  const caseLink = h('a', { class: 'panel-link', id: 'case-link', text: 'Link to this case' });
  const copyButton = h('button', { type: 'button', class: 'btn btn-quiet btn-small', id: 'copy-case-link', text: 'Copy link' });
  const printButton = h('button', { type: 'button', class: 'btn btn-small', id: 'print-case', text: 'Print case sheet' });
  const timeline = h('ol', { class: 'timeline' });
  const historyNote = h('p', { class: 'muted history-note', 'aria-live': 'polite' });
  const deleteButton = h('button', { type: 'button', class: 'btn btn-danger', text: 'Delete case' });
  const grid = h('div', { class: 'panel-fields' });
  const body = h('div', { class: 'panel-body' }, grid);

  for (const field of editableFields()) {
    const id = `panel-${field}`;
    const control = createControl(field, ctx, labelOf(field));
    control.id = id;
    if (kindOf(field) === 'multiline') control.rows = field === 'notes' ? 8 : 5;
    const wrap = h('div', { class: `panel-field panel-field-${kindOf(field)}`, tabindex: '-1', dataset: { panelField: field } },
      h('label', { for: id, text: labelOf(field) }), control);
    fields.set(field, { wrap, control });
    grid.append(wrap);
  }
  body.append(h('section', { class: 'history', 'aria-labelledby': 'history-title' },
    h('h3', { id: 'history-title', text: 'History' }), historyNote, timeline));

  const element = h('aside', { id: 'side-panel', class: 'side-panel', hidden: true, 'aria-labelledby': 'panel-title' },
    h('header', { class: 'panel-head' }, h('div', {}, kicker, title, meta, presenceLine), closeButton),
    h('div', { class: 'panel-tools' }, caseLink, copyButton, printButton),
    body,
    h('footer', { class: 'panel-foot' }, deleteButton));

  closeButton.addEventListener('click', () => close());
  deleteButton.addEventListener('click', () => remove());
  printButton.addEventListener('click', () => { if (caseId !== null) onPrint(caseId, history); });
  copyButton.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(caseLink.href);
      toast('Link copied.', 'success');
    } catch {
      toast(`Copy this link: ${caseLink.href}`, 'info');
    }
  });

  function renderHeader() {
    const json = ctx.store.getCase(caseId);
    kicker.textContent = json.case_number;
    title.textContent = json.customer_name || 'Unnamed customer';
    const by = json.updated_by ? ` by ${ctx.memberName(json.updated_by)}` : '';
    const parts = [
      json.created_at ? `created ${absoluteTime(json.created_at)}` : '',
      json.updated_at ? `updated ${relativeTime(json.updated_at)}${by}` : '',
      `version ${json.version}`,
    ];
    meta.textContent = parts.filter(Boolean).join(' · ');
    caseLink.href = link(caseId);
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

  /**
   * "Restore this value" of an entry that saved a field (editors and managers);
   * the field's oldest entry shown also offers the value before it (a value the
   * case was created with has no entry of its own).
   */
  function restoreButtons(entry, oldest) {
    if (ctx.readOnly() || !isEditable(entry.field)) return null;
    const id = caseId;
    const now = ctx.store.confirmedValue(caseId, entry.field);
    const button = (side, action, text) => {
      const current = sameValue(now, side === 'old' ? entry.old : entry.new);
      const el = h('button', {
        type: 'button', class: 'btn btn-quiet btn-small', dataset: { action }, text,
        disabled: current, title: current ? 'This is its value now' : `Set ${labelOf(entry.field)} back to “${describeValue(entry.field, side === 'old' ? entry.old : entry.new, ctx)}”`,
      });
      el.addEventListener('click', () => actions.restoreEntry(id, entry, side));
      return el;
    };
    const earlier = oldest && entry.version > 1 ? button('old', 'restore-old', 'Restore the value before') : null;
    return h('div', { class: 'entry-actions' }, button('new', 'restore', 'Restore this value'), earlier);
  }

  function historyItem(entry, oldest) {
    const user = entry.user || { id: 0, name: 'System' };
    const label = labelOf(entry.field);
    let what = ` changed ${label}`;
    let change = entry.old === undefined && entry.new === undefined ? null : changeOf(entry, ctx);
    if (entry.field === 'deleted') {
      what = entry.new ? ' deleted the case' : ' restored the case from the trash';
      change = null;
    } else if (entry.restored_from) {
      what = ` restored ${label} from entry #${entry.restored_from}`;
    }
    return h('li', { class: 'event history-entry', dataset: { entryId: String(entry.id) } },
      h('span', { class: `avatar avatar-sm avatar-c${colourSlot(user.id)}`, 'aria-hidden': 'true', text: initials(user.name) }),
      h('div', { class: 'event-body' },
        h('p', {}, h('strong', { text: user.name }), what, h('span', { class: 'muted entry-number', text: ` #${entry.id}` })),
        change,
        h('time', { datetime: entry.at, title: absoluteTime(entry.at), text: relativeTime(entry.at) }),
        restoreButtons(entry, oldest)));
  }

  async function loadHistory() {
    if (caseId === null) return;
    const request = ++historyRequest;
    const id = caseId;
    if (!timeline.childElementCount) historyNote.textContent = 'Loading…';
    try {
      const entries = await actions.loadHistory(id, HISTORY_LIMIT);
      if (request !== historyRequest || id !== caseId) return;
      history = entries;
      const oldest = new Map(entries.map((entry) => [entry.field, entry])); // newest first: the last one stays
      timeline.replaceChildren(...entries.map((entry) => historyItem(entry, oldest.get(entry.field) === entry)));
      historyNote.textContent = entries.length ? '' : 'No changes yet.';
    } catch (err) {
      if (request === historyRequest) historyNote.textContent = `Could not load history: ${err.message}`;
    }
  }

  function open(id, { focus = true } = {}) {
    if (!ctx.store.getCase(id)) return false;
    const switching = id !== caseId;
    caseId = id;
    if (switching) {
      timeline.replaceChildren();
      history = [];
    }
    element.hidden = false;
    element.dataset.caseId = String(id);
    renderHeader();
    renderFields({ force: true });
    loadHistory();
    if (focus) closeButton.focus();
    onShown(id);
    return true;
  }

  function close({ focus = true } = {}) {
    if (caseId === null) return;
    const id = caseId;
    if (element.contains(document.activeElement)) document.activeElement.blur();
    element.hidden = true;
    caseId = null;
    delete element.dataset.caseId;
    onShown(null);
    if (focus) ctx.focusCaseLink(id);
  }

  async function remove() {
    const json = ctx.store.getCase(caseId);
    if (!json) return;
    const sure = await confirm(`Delete ${json.case_number}?`, `The case of ${json.customer_name || 'this customer'} leaves the table for everyone. It stays in the trash, with its history, where managers can restore it until it is purged.`, 'Delete case');
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
    presenceLine,
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
