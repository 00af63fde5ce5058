// What the client knows about case fields (DESIGN §2). No DOM here.

export const EDITABLE_FIELDS = Object.freeze([
  'customer_name', 'customer_phone', 'customer_email', 'product', 'serial_number',
  'purchase_date', 'status', 'priority', 'assignee_id', 'issue', 'notes',
]);

// text/multiline save debounced; select/date save at once.
export const FIELD_KINDS = Object.freeze({
  customer_name: 'text',
  customer_phone: 'text',
  customer_email: 'text',
  product: 'text',
  serial_number: 'text',
  purchase_date: 'date',
  issue: 'multiline',
  status: 'select',
  priority: 'select',
  assignee_id: 'select',
  notes: 'multiline',
});

export const FIELD_LABELS = Object.freeze({
  case_number: 'Case',
  customer_name: 'Customer',
  customer_phone: 'Phone',
  customer_email: 'Email',
  product: 'Product',
  serial_number: 'Serial no.',
  purchase_date: 'Purchased',
  issue: 'Issue',
  status: 'Status',
  priority: 'Priority',
  assignee_id: 'Assignee',
  notes: 'Notes',
  updated_at: 'Updated',
});

export const MAX_LENGTHS = Object.freeze({
  customer_name: 120,
  customer_phone: 40,
  customer_email: 254,
  product: 120,
  serial_number: 80,
  issue: 2000,
  notes: 5000,
});

export const DEFAULT_STATUSES = Object.freeze([
  'new', 'diagnosing', 'awaiting_parts', 'in_repair', 'ready', 'closed', 'rejected',
]);
export const DEFAULT_PRIORITIES = Object.freeze(['low', 'normal', 'high', 'urgent']);

export function isDebounced(field) {
  const kind = FIELD_KINDS[field];
  return kind === 'text' || kind === 'multiline';
}

export function fieldKey(caseId, field) {
  return `${caseId}:${field}`;
}

export function humanize(value) {
  const text = String(value ?? '').replace(/_/g, ' ');
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** Accepts ['new', …] or [{value, label}, …] from the page config. */
export function normalizeOptions(list, fallback) {
  const source = Array.isArray(list) && list.length ? list : fallback;
  return source.map((item) => (typeof item === 'object' && item !== null
    ? { value: String(item.value), label: String(item.label ?? humanize(item.value)) }
    : { value: String(item), label: humanize(item) }));
}

// null and undefined are the same "no value"; everything else compares strictly.
export function sameValue(a, b) {
  return (a ?? null) === (b ?? null);
}
