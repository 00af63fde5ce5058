// The printable case sheet: every field of a case, a summary of its history
// and lines for the customer's signature. Shown only when printing from the
// panel (app.css, @media print); printing from the table prints the table.

import { absoluteTime, h } from './dom.js';
import { editableFields, labelOf } from './fields.js';

const HISTORY_LINES = 12;

/**
 * @param {object} ctx shared view context (store, describeFull, memberName)
 * @param {{branchName: string}} options
 */
export function createCaseSheet(ctx, { branchName }) {
  const element = h('section', { id: 'case-sheet', class: 'case-sheet', 'aria-hidden': 'true' });

  function historyLines(entries) {
    if (!entries.length) return [h('p', { text: 'No changes since the case was opened.' })];
    const lines = entries.slice(0, HISTORY_LINES).map((entry) => h('li', {},
      `${absoluteTime(entry.at)} — ${(entry.user && entry.user.name) || 'System'} set ${labelOf(entry.field)} to `,
      h('q', { text: ctx.describe(entry.field, entry.new) })));
    const more = entries.length > HISTORY_LINES ? h('p', { text: `…and ${entries.length - HISTORY_LINES} earlier changes.` }) : null;
    return [h('ol', { class: 'sheet-history' }, lines), more];
  }

  function fill(caseId, history) {
    const json = ctx.store.getCase(caseId);
    const rows = editableFields().map((field) => [
      h('dt', { text: labelOf(field) }),
      h('dd', { text: ctx.describeFull(field, ctx.store.displayValue(caseId, field)) }),
    ]);
    element.replaceChildren(
      h('header', { class: 'sheet-head' },
        h('p', { class: 'sheet-branch', text: branchName }),
        h('h1', { text: `Warranty case ${json.case_number}` }),
        h('p', { class: 'sheet-meta', text: `Opened ${absoluteTime(json.created_at)} · printed ${new Date().toLocaleString()}` })),
      h('dl', { class: 'sheet-fields' }, rows),
      h('h2', { text: 'History' }),
      ...historyLines(history),
      h('div', { class: 'sheet-signatures' },
        h('p', { class: 'signature', text: 'Customer signature' }),
        h('p', { class: 'signature', text: 'Date' }),
        h('p', { class: 'signature', text: 'For the shop' })),
    );
  }

  return {
    element,
    /** Print the case sheet of `caseId` (the history as the panel loaded it). */
    print(caseId, history) {
      fill(caseId, history || []);
      document.body.dataset.print = 'case';
      // The flag stays until the print dialog closes (afterprint), as browsers print asynchronously.
      window.addEventListener('afterprint', () => { delete document.body.dataset.print; }, { once: true });
      window.print();
    },
  };
}
