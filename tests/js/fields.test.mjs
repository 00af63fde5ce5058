import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { FIELD_TABLE } from './fakes.mjs';

const MODULE = '../../src/warrantysync/web/static/js/fields.js';
let copies = 0;

/** A module instance of its own, so each test installs (or not) its own table. */
async function freshFields(table = FIELD_TABLE) {
  copies += 1;
  const fields = await import(`${MODULE}?copy=${copies}`);
  if (table) fields.installFields(table);
  return fields;
}

function row(name, extra = {}) {
  return {
    name, label: name.toUpperCase(), json_type: 'string', editable: true, kind: 'text', save: 'debounced',
    max_length: 10, required: false, nullable: false, choices: null, not_future: false,
    member_of_branch: false, default: '', ...extra,
  };
}

describe('fields.js before the table is installed', () => {
  test('every question throws instead of guessing', async () => {
    const fields = await freshFields(null);
    for (const ask of [() => fields.isDebounced('notes'), () => fields.labelOf('notes'), () => fields.editableFields()]) {
      assert.throws(ask, /installFields\(config\.fields\) has not run/);
    }
  });

  test('a page config without a table is refused', async () => {
    const fields = await freshFields(null);
    for (const bad of [undefined, null, [], {}, 'fields']) {
      assert.throws(() => fields.installFields(bad), TypeError);
    }
    assert.throws(() => fields.installFields([{ label: 'no name' }]), TypeError);
  });
});

describe('fields.js with the server table', () => {
  test('the editable fields, in the order of a case', async () => {
    const fields = await freshFields();
    assert.deepEqual(fields.editableFields(), [
      'customer_name', 'customer_phone', 'customer_email', 'product', 'serial_number',
      'purchase_date', 'issue', 'status', 'priority', 'assignee_id', 'notes',
    ]);
    assert.equal(fields.isEditable('notes'), true);
    for (const name of ['id', 'case_number', 'version', 'updated_at', 'colour']) assert.equal(fields.isEditable(name), false, name);
  });

  test('text saves debounced, dropdowns and dates at once', async () => {
    const fields = await freshFields();
    for (const name of ['customer_name', 'customer_email', 'serial_number', 'issue', 'notes']) assert.equal(fields.isDebounced(name), true, name);
    for (const name of ['purchase_date', 'status', 'priority', 'assignee_id', 'case_number', 'colour']) assert.equal(fields.isDebounced(name), false, name);
  });

  test('kinds, labels and limits', async () => {
    const fields = await freshFields();
    assert.equal(fields.kindOf('customer_phone'), 'text');
    assert.equal(fields.kindOf('issue'), 'multiline');
    assert.equal(fields.kindOf('assignee_id'), 'select');
    assert.equal(fields.kindOf('purchase_date'), 'date');
    assert.equal(fields.kindOf('case_number'), null);
    assert.equal(fields.labelOf('serial_number'), 'Serial no.');
    assert.equal(fields.labelOf('case_number'), 'Case');
    assert.equal(fields.labelOf('colour'), 'colour');
    assert.equal(fields.maxLengthOf('customer_name'), 120);
    assert.equal(fields.maxLengthOf('customer_email'), 254);
    assert.equal(fields.maxLengthOf('notes'), 5000);
    assert.equal(fields.maxLengthOf('status'), undefined);
    assert.equal(fields.isRequired('customer_name'), true);
    assert.equal(fields.isRequired('product'), false);
    assert.equal(fields.isNotFuture('purchase_date'), true);
    assert.equal(fields.isMemberField('assignee_id'), true);
    assert.equal(fields.isMemberField('status'), false);
  });

  test('choices and defaults', async () => {
    const fields = await freshFields();
    assert.deepEqual(fields.choicesOf('priority'), [
      { value: 'low', label: 'Low' }, { value: 'normal', label: 'Normal' },
      { value: 'high', label: 'High' }, { value: 'urgent', label: 'Urgent' },
    ]);
    assert.deepEqual(fields.choicesOf('status').map((o) => o.value),
      ['new', 'diagnosing', 'awaiting_parts', 'in_repair', 'ready', 'closed', 'rejected']);
    assert.equal(fields.choicesOf('status')[2].label, 'Awaiting parts');
    assert.equal(fields.choicesOf('assignee_id'), null);
    assert.equal(fields.choicesOf('notes'), null);
    assert.equal(fields.defaultOf('status'), 'new');
    assert.equal(fields.defaultOf('priority'), 'normal');
    assert.equal(fields.defaultOf('notes'), '');
    assert.equal(fields.defaultOf('customer_name'), null);
    assert.equal(fields.defaultOf('assignee_id'), null);
  });

  test('a control value becomes the JSON value the server expects', async () => {
    const fields = await freshFields();
    assert.equal(fields.fromControl('assignee_id', ''), null);
    assert.equal(fields.fromControl('assignee_id', '7'), 7);
    assert.equal(fields.fromControl('purchase_date', ''), null);
    assert.equal(fields.fromControl('purchase_date', '2024-02-29'), '2024-02-29');
    assert.equal(fields.fromControl('notes', ''), '');
    assert.equal(fields.fromControl('status', 'ready'), 'ready');
  });
});

describe('fields.js answers from the installed table only', () => {
  test('another table, other answers: nothing is kept on the side', async () => {
    const fields = await freshFields([
      row('notes', { kind: 'select', save: 'immediate', max_length: null, choices: ['a_b', 'c'], default: 'c' }),
      row('memo', { kind: 'multiline', max_length: 3, required: true }),
      row('seen_at', { editable: false, kind: null, save: null, json_type: 'timestamp' }),
    ]);
    assert.deepEqual(fields.editableFields(), ['notes', 'memo']);
    assert.equal(fields.isDebounced('notes'), false);
    assert.equal(fields.isDebounced('memo'), true);
    assert.equal(fields.isEditable('customer_name'), false);
    assert.equal(fields.labelOf('memo'), 'MEMO');
    assert.equal(fields.maxLengthOf('memo'), 3);
    assert.equal(fields.maxLengthOf('customer_name'), undefined);
    assert.deepEqual(fields.choicesOf('notes'), [{ value: 'a_b', label: 'A b' }, { value: 'c', label: 'C' }]);
    assert.equal(fields.defaultOf('notes'), 'c');
    assert.equal(fields.isRequired('memo'), true);
  });

  test('the installed rows are copies: changing the config afterwards changes nothing', async () => {
    const table = [row('memo', { choices: ['x'] })];
    const fields = await freshFields(table);
    table[0].save = 'immediate';
    table[0].choices.push('y');
    table.push(row('other'));
    assert.equal(fields.isDebounced('memo'), true);
    assert.deepEqual(fields.choicesOf('memo').map((o) => o.value), ['x']);
    assert.deepEqual(fields.editableFields(), ['memo']);
    assert.throws(() => { fields.editableFields().push('z'); }, TypeError);
  });
});
