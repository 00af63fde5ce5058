// What the client knows about case fields. No DOM here, and no copy of the
// field table: the server's table (src/warrantysync/casefields.py) arrives in
// the page config as `fields`, main.js installs it once before anything else
// runs, and every module asks here. A question asked before the table is
// installed throws, so no module can silently fall back on rules of its own.

let table = null; // field name -> its frozen row
let editable = Object.freeze([]);

function freezeRow(row) {
  if (!row || typeof row.name !== 'string') throw new TypeError('a field row needs a name');
  return Object.freeze({ ...row, choices: Array.isArray(row.choices) ? Object.freeze([...row.choices]) : null });
}

/** Install the table the page config carries (`config.fields`: one row per field, in order). */
export function installFields(rows) {
  if (!Array.isArray(rows) || rows.length === 0) throw new TypeError('the page config has no field table (`fields`)');
  const frozen = rows.map(freezeRow);
  table = new Map(frozen.map((row) => [row.name, row]));
  editable = Object.freeze(frozen.filter((row) => row.editable).map((row) => row.name));
}

function installed() {
  if (table === null) throw new Error('fields.js: installFields(config.fields) has not run');
  return table;
}

const row = (field) => installed().get(field) ?? null;

/** The editable fields, in the table's order. */
export function editableFields() {
  installed();
  return editable;
}

export const isEditable = (field) => Boolean(row(field)?.editable);
/** The control that edits it: 'text' | 'multiline' | 'select' | 'date', or null (read-only). */
export const kindOf = (field) => row(field)?.kind ?? null;
export const labelOf = (field) => row(field)?.label ?? field;
/** Characters allowed, or undefined when the field has no length limit. */
export const maxLengthOf = (field) => row(field)?.max_length ?? undefined;
export const isRequired = (field) => Boolean(row(field)?.required);
/** A date that may not be after today in the branch's time zone. */
export const isNotFuture = (field) => Boolean(row(field)?.not_future);
/** Its values are the ids of the branch's members (the page config's `members`). */
export const isMemberField = (field) => Boolean(row(field)?.member_of_branch);
/** The roles a member must have to be the field's value (empty: any member). */
export const memberRolesOf = (field) => row(field)?.member_roles ?? [];
/** The list can be ordered by it (`sort`, docs/protocol.md "Listing cases"). */
export const isSortable = (field) => Boolean(row(field)?.sortable);
/** The fields the list's search (`q`) looks in, in the table's order. */
export function searchableFields() {
  return [...installed().values()].filter((spec) => spec.searchable).map((spec) => spec.name);
}
/** The value a new case starts with. */
export const defaultOf = (field) => row(field)?.default ?? null;

/** Typing into it saves after a pause; everything else saves at once. */
export function isDebounced(field) {
  return row(field)?.save === 'debounced';
}

/** The value the control's text stands for: '' is null where null is allowed, ids are numbers. */
export function fromControl(field, raw) {
  const spec = row(field);
  if (spec?.nullable && raw === '') return null;
  if (spec?.json_type === 'integer') return Number(raw);
  return raw;
}

export function fieldKey(caseId, field) {
  return `${caseId}:${field}`;
}

function humanize(value) {
  const text = String(value ?? '').replace(/_/g, ' ');
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** The choices of an enum field as [{value, label}], or null when it has none. */
export function choicesOf(field) {
  const choices = row(field)?.choices;
  return choices ? choices.map((value) => ({ value, label: humanize(value) })) : null;
}

// null and undefined are the same "no value"; everything else compares strictly.
export function sameValue(a, b) {
  return (a ?? null) === (b ?? null);
}
