// The toolbar above the table: search, filters, the count and the "new
// cases" notice, export and (for managers) import of CSV. The view it
// describes (caselist.js) is answered by the server; this only says which.

import { h } from './dom.js';
import { defaultView, openStatuses, viewQuery } from './caselist.js';

const SEARCH_DEBOUNCE_MS = 250;
const OPEN = 'open';
const REPORT_ROWS = 200; // bad rows listed in the dialog; the rest are counted

/**
 * @param {object} ctx shared view context
 * @param {{config: object, list: object, onView: (view: object) => void, onShowNew: () => void,
 *   importCsv: (file: File, dryRun: boolean) => Promise<object>, toast: Function,
 *   onNewCase: () => void, tools?: HTMLElement[]}} deps
 * tools: more controls, after the spacer and before Export (undo, redo, the trash)
 */
export function createToolbar(ctx, { config, list, onView, onShowNew, importCsv, toast, onNewCase, tools = [] }) {
  const search = h('input', { type: 'search', id: 'search', class: 'search', placeholder: 'Search cases  ( / )', 'aria-label': 'Search cases', autocomplete: 'off' });
  const statusFilter = h('select', { id: 'status-filter', class: 'filter', 'aria-label': 'Filter by status' },
    h('option', { value: OPEN, text: 'Open cases', selected: true }),
    h('option', { value: '', text: 'All statuses' }),
    ctx.options('status').map((o) => h('option', { value: o.value, text: o.label })));
  const assigneeFilter = h('select', { id: 'assignee-filter', class: 'filter', 'aria-label': 'Filter by assignee' },
    h('option', { value: '', text: 'Anyone' }), h('option', { value: 'me', text: 'Assigned to me' }),
    h('option', { value: 'none', text: 'Unassigned' }), ctx.members.map((m) => h('option', { value: String(m.id), text: m.name })));
  const count = h('span', { class: 'count', id: 'case-count', 'aria-live': 'polite' });
  const notice = h('button', { type: 'button', id: 'new-cases', class: 'btn btn-small notice', hidden: true });
  const viewOnly = h('span', { id: 'view-only', class: 'badge badge-view-only', title: 'You can read this branch’s cases but not change them.', text: 'View only', hidden: true });
  const exportLink = h('a', { id: 'export-csv', class: 'btn', download: '', text: 'Export', title: 'Download the cases shown, as CSV' });
  const file = h('input', { type: 'file', accept: '.csv,text/csv', id: 'import-file', class: 'visually-hidden', tabindex: '-1', 'aria-hidden': 'true' });
  const importButton = h('button', { type: 'button', id: 'import-csv', class: 'btn', text: 'Import…', hidden: true, title: 'Create cases from a CSV file' });
  const newCase = h('button', { type: 'button', id: 'new-case', class: 'btn btn-primary', text: 'New case' });
  const columns = h('div', { class: 'columns-wrap' });
  const element = h('div', { class: 'toolbar' }, search, statusFilter, assigneeFilter, count, notice, viewOnly,
    h('span', { class: 'spacer' }), ...tools, exportLink, importButton, file, columns, newCase);
  const report = createImportDialog({ importCsv, toast });
  const numbers = new Intl.NumberFormat();
  let searchTimer = null;

  function current() {
    const status = statusFilter.value;
    return {
      ...defaultView(),
      q: search.value.trim(),
      statuses: status === OPEN ? openStatuses() : status ? [status] : [],
      assignee: assigneeFilter.value,
      sort: list.view.sort,
    };
  }

  function changed() {
    clearTimeout(searchTimer);
    onView(current());
  }

  function caption() {
    const status = statusFilter.value;
    const parts = [
      status === OPEN ? 'open' : status ? `status ${statusFilter.selectedOptions[0].text}` : '',
      assigneeFilter.value && `assignee ${assigneeFilter.selectedOptions[0].text}`,
      search.value.trim() && `matching “${search.value.trim()}”`,
    ].filter(Boolean);
    return `${config.branch_name || ''} — ${parts.length ? `cases ${parts.join(', ')}` : 'all cases'}`;
  }

  search.addEventListener('input', () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(changed, SEARCH_DEBOUNCE_MS);
  });
  search.addEventListener('keydown', (event) => {
    if (event.key === 'Enter') changed();
  });
  statusFilter.addEventListener('change', changed);
  assigneeFilter.addEventListener('change', changed);
  notice.addEventListener('click', () => onShowNew());
  newCase.addEventListener('click', () => onNewCase());
  importButton.addEventListener('click', () => file.click());
  file.addEventListener('change', () => {
    const chosen = file.files && file.files[0];
    file.value = '';
    if (chosen) report.open(chosen);
  });

  return {
    element,
    search,
    columns,
    caption,
    /** The list's total and the notice, as the window has them now. */
    renderCount({ loaded }) {
      const total = list.total;
      count.textContent = loaded ? `${numbers.format(total)} case${total === 1 ? '' : 's'}` : '';
      const pending = list.pending;
      notice.hidden = pending === 0;
      notice.textContent = `${numbers.format(pending)} new case${pending === 1 ? '' : 's'} match — show`;
    },
    /** Export what is shown: the same query, the whole list. */
    renderExport() {
      exportLink.href = `/api/branches/${config.branch_id}/cases.csv?${viewQuery(list.view)}`;
    },
    setRole(role) {
      newCase.hidden = role === 'viewer';
      viewOnly.hidden = role !== 'viewer';
      importButton.hidden = role !== 'manager';
    },
  };
}

/** Choose a file, check it (a dry run), then import it or show every bad row. */
function createImportDialog({ importCsv, toast }) {
  const dialog = h('dialog', { class: 'dialog import-dialog', id: 'import-dialog', 'aria-labelledby': 'import-title' });
  document.body.append(dialog);
  const title = h('h2', { id: 'import-title', text: 'Import cases' });
  const status = h('p', { class: 'import-status', role: 'status' });
  const errors = h('ol', { class: 'import-errors' });
  const cancel = h('button', { type: 'button', class: 'btn', text: 'Cancel' });
  const go = h('button', { type: 'button', class: 'btn btn-primary', id: 'import-go', text: 'Import' });
  dialog.append(title, status, errors, h('div', { class: 'dialog-actions' }, cancel, go));
  let chosen = null;
  const numbers = new Intl.NumberFormat();

  function showErrors(error) {
    const body = error.body || {};
    const list = Array.isArray(body.errors) ? body.errors : [];
    const total = Number(body.error_count ?? list.length);
    errors.replaceChildren(...list.slice(0, REPORT_ROWS).map((e) => h('li', { dataset: { line: String(e.line) } },
      h('strong', { text: `Line ${e.line}` }), e.field ? ` · ${e.field}` : '', `: ${e.message}`)));
    const more = total - Math.min(list.length, REPORT_ROWS);
    if (more > 0) errors.append(h('li', { class: 'muted', text: `…and ${numbers.format(more)} more` }));
    status.textContent = list.length
      ? `Nothing was imported: fix these rows and choose the file again.`
      : error.message;
  }

  async function check(file) {
    chosen = file;
    status.textContent = `Checking ${file.name}…`;
    errors.replaceChildren();
    go.hidden = true;
    try {
      const answer = await importCsv(file, true);
      if (chosen !== file) return;
      status.textContent = `${numbers.format(answer.rows)} case${answer.rows === 1 ? '' : 's'} in ${file.name}, all valid.`;
      go.hidden = answer.rows === 0;
      go.textContent = `Import ${numbers.format(answer.rows)}`;
      if (!go.hidden) go.focus();
    } catch (error) {
      if (chosen === file) showErrors(error);
    }
  }

  go.addEventListener('click', async () => {
    const file = chosen;
    if (!file) return;
    go.hidden = true;
    status.textContent = `Importing ${file.name}…`;
    try {
      const answer = await importCsv(file, false);
      dialog.close();
      const [first, last] = answer.case_numbers || [];
      toast(`Imported ${numbers.format(answer.imported)} cases${first ? ` (${first} to ${last})` : ''}.`, 'success');
    } catch (error) {
      showErrors(error);
    }
  });
  cancel.addEventListener('click', () => {
    chosen = null;
    dialog.close();
  });
  dialog.addEventListener('close', () => { chosen = null; });

  return {
    open(file) {
      if (!dialog.open) dialog.showModal();
      check(file);
    },
  };
}
