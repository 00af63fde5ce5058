// The full value of a table cell, without taking a lock: a tooltip under a
// cell whose text is cut off, on hover and when the keyboard lands on it.

import { h } from './dom.js';

const HOVER_DELAY_MS = 400;

function truncated(control) {
  if (!control) return false;
  if (control.tagName === 'TEXTAREA') return control.value.includes('\n') || control.scrollWidth > control.clientWidth + 1;
  if (control.tagName === 'SELECT') return control.scrollWidth > control.clientWidth + 1;
  return control.scrollWidth > control.clientWidth + 1;
}

/**
 * @param {object} ctx shared view context (store, describeFull)
 */
export function createPeek(ctx) {
  const text = h('p', { class: 'peek-text' });
  const note = h('p', { class: 'peek-note', hidden: true });
  const element = h('div', { id: 'cell-peek', class: 'peek', role: 'tooltip', hidden: true }, text, note);
  let timer = null;
  let shownFor = null;

  function hide() {
    clearTimeout(timer);
    timer = null;
    if (shownFor) shownFor.removeAttribute('aria-describedby');
    shownFor = null;
    element.hidden = true;
  }

  function place(td) {
    const box = td.getBoundingClientRect();
    element.hidden = false;
    const width = element.offsetWidth;
    const height = element.offsetHeight;
    const left = Math.max(8, Math.min(box.left, window.innerWidth - width - 8));
    const below = box.bottom + 4;
    const top = below + height > window.innerHeight - 8 ? Math.max(8, box.top - height - 4) : below;
    element.style.left = `${Math.round(left)}px`;
    element.style.top = `${Math.round(top)}px`;
  }

  /** Show the cell's whole value if the cell cuts it off (or a lock note to say). */
  function showFor(td, { keyboard = false } = {}) {
    if (!td || !td.dataset.field) {
      hide();
      return;
    }
    const tr = td.closest('tr[data-case-id]');
    const control = td.querySelector('[data-control]');
    const caseId = Number(tr && tr.dataset.caseId);
    const field = td.dataset.field;
    const lockedBy = td.dataset.lockedBy;
    if (!truncated(control) && !(keyboard && lockedBy)) {
      hide();
      return;
    }
    text.textContent = ctx.describeFull(field, ctx.store.displayValue(caseId, field));
    note.hidden = !lockedBy;
    note.textContent = lockedBy ? `Locked by ${lockedBy}` : '';
    shownFor = td;
    td.setAttribute('aria-describedby', element.id);
    place(td);
  }

  function bind(root) {
    root.addEventListener('pointerover', (event) => {
      const td = event.target.closest && event.target.closest('td[data-field]');
      if (!td || td === shownFor) return;
      clearTimeout(timer);
      if (td.contains(document.activeElement) && document.activeElement !== td) return; // editing: the control shows it
      timer = setTimeout(() => showFor(td), HOVER_DELAY_MS);
    });
    root.addEventListener('pointerout', (event) => {
      const td = event.target.closest && event.target.closest('td[data-field]');
      if (td && !td.contains(event.relatedTarget)) {
        clearTimeout(timer);
        if (shownFor === td && document.activeElement !== td) hide();
      }
    });
    // Follow the cell when the table scrolls (a keyboard move scrolls it into view).
    window.addEventListener('scroll', () => { if (shownFor) place(shownFor); }, true);
  }

  return { element, showFor, hide, bind };
}
