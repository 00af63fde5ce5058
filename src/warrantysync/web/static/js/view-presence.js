// Who is where, on screen: initials avatars on the rows and a line in the side
// panel for the people on each case, the 🔒 tooltip's timing, and the holder's
// notice when someone asks for a field (`#lock-requests`). Reads the row
// presence model and the store; renders rows only as the table has them.

import { colourSlot, h, initials } from './dom.js';
import { labelOf } from './fields.js';
import { describePerson, lockTiming, peopleOnCase } from './where.js';

const MAX_ROW_AVATARS = 3;
const TICK_MS = 5000;

function locksOfCase(store, caseId) {
  return store.allLocks().filter((lock) => lock.case_id === caseId);
}

/** A notice button that leaves the focus where it is: the holder may be mid-edit. */
function button(action, text, className, run) {
  return h('button', {
    type: 'button', class: className, dataset: { action }, text,
    onpointerdown: (event) => event.preventDefault(),
    onmousedown: (event) => event.preventDefault(),
    onclick: run,
  });
}

/** The avatars of one row into `slot` (a span in the row's first cell). */
export function renderRowAvatars(slot, people) {
  const shown = people.slice(0, MAX_ROW_AVATARS).map((person) => h('span', {
    class: `row-avatar avatar-c${colourSlot(person.user.id)}`,
    title: describePerson(person, labelOf),
    dataset: { presenceUser: person.user.name, presenceState: person.state },
  }, h('span', { 'aria-hidden': 'true', text: initials(person.user.name) }),
  h('span', { class: 'visually-hidden', text: ` ${describePerson(person, labelOf)}` })));
  if (people.length > MAX_ROW_AVATARS) {
    const rest = people.slice(MAX_ROW_AVATARS);
    shown.push(h('span', { class: 'row-avatar avatar-more', title: rest.map((p) => describePerson(p, labelOf)).join(', '), text: `+${rest.length}` }));
  }
  slot.replaceChildren(...shown);
}

/**
 * @param {object} ctx the view context (store, userId)
 * @param {{rows: object, table: object, panel: object,
 *   answer: (id: string, answer: 'release'|'keep') => void, caseName: (id) => string}} deps
 */
export function createWhereView(ctx, { rows, table, panel, answer, caseName }) {
  const notices = h('section', { id: 'lock-requests', class: 'lock-requests', 'aria-label': 'Requests for your fields', 'aria-live': 'assertive' });

  function peopleOn(caseId) {
    return peopleOnCase(rows.forCase(caseId), locksOfCase(ctx.store, caseId), ctx.userId);
  }

  function renderRow(caseId) {
    const slot = table.presenceSlot(caseId);
    if (slot) renderRowAvatars(slot, peopleOn(caseId));
  }

  function renderPanel() {
    const caseId = panel.caseId;
    const line = panel.presenceLine;
    if (!line) return;
    if (caseId === null) {
      line.replaceChildren();
      return;
    }
    const items = peopleOn(caseId).map((person) => {
      const lock = person.state === 'editing' && person.field ? ctx.store.lock(caseId, person.field) : null;
      const timing = lock && lock.user.id === person.user.id ? ` (${lockTiming(lock)})` : '';
      return h('li', { dataset: { presenceUser: person.user.name, presenceState: person.state } },
        h('span', { class: `row-avatar avatar-c${colourSlot(person.user.id)}`, 'aria-hidden': 'true', text: initials(person.user.name) }),
        ` ${describePerson(person, labelOf)}${timing}`);
    });
    line.replaceChildren(...items);
    line.hidden = items.length === 0;
  }

  function renderNotices(requests) {
    notices.replaceChildren(...requests.map((request) => {
      const what = `${labelOf(request.field)} of ${caseName(request.case_id)}`;
      return h('div', { class: 'lock-request', role: 'alertdialog', 'aria-label': `${request.asker.name} asks for ${what}`, dataset: { requestId: request.id } },
        h('p', { class: 'lock-request-text', text: `${request.asker.name} asks for ${what}.` }),
        h('div', { class: 'lock-request-actions' },
          button('release', 'Release now', 'btn btn-primary btn-small', () => answer(request.id, 'release')),
          button('keep', 'Keep editing', 'btn btn-small', () => answer(request.id, 'keep'))));
    }));
    notices.hidden = requests.length === 0;
  }
  renderNotices([]);

  rows.subscribe((changed) => {
    for (const caseId of changed) renderRow(caseId);
    if (panel.caseId !== null && changed.has(panel.caseId)) renderPanel();
  });
  ctx.store.subscribe((change) => {
    // A lock makes its holder "editing" on the row at once.
    if (change.type === 'lock') renderRow(change.caseId);
    else if (change.type === 'locks') for (const caseId of table.rows.keys()) renderRow(caseId);
    if ((change.type === 'lock' || change.type === 'locks') && panel.caseId !== null) renderPanel();
  });
  // Idle times move on: refresh the 🔒 tooltips of the locks and the panel's line.
  setInterval(() => {
    for (const lock of ctx.store.allLocks()) table.renderCell(lock.case_id, lock.field);
    renderPanel();
  }, TICK_MS);

  return {
    element: notices,
    renderRow,
    renderPanel,
    showRequests: renderNotices,
  };
}
