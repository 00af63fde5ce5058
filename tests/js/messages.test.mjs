import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { ApiError } from '../../src/warrantysync/web/static/js/api.js';
import { installFields } from '../../src/warrantysync/web/static/js/fields.js';
import { describeError } from '../../src/warrantysync/web/static/js/messages.js';
import { FIELD_TABLE } from './fakes.mjs';

installFields(FIELD_TABLE);

function refused(field, rule, message = `${field}: is wrong`) {
  return new ApiError(422, 'validation_error', message, { error: 'validation_error', message, field, rule });
}

describe('describeError', () => {
  test('a refused field is worded with its label, not its API name', () => {
    const raw = 'customer_email: is not a valid email address (An email address must have an @-sign.)';
    const text = describeError(refused('customer_email', 'email', raw));
    assert.equal(text, 'Email must be an email address, like name@example.com.');
    assert.doesNotMatch(text, /customer_email/);
  });

  test('limits come from the field table', () => {
    assert.equal(describeError(refused('notes', 'max_length')), 'Notes can be at most 5,000 characters.');
    assert.equal(describeError(refused('customer_name', 'required')), 'Customer cannot be empty.');
    assert.equal(describeError(refused('purchase_date', 'not_future')), 'Purchased cannot be after today.');
    assert.match(describeError(refused('assignee_id', 'assignable')), /^Assignee must be an editor or a manager/);
  });

  test('an unknown rule keeps the server text after the field name', () => {
    assert.equal(describeError(refused('new_password', 'min_length', 'new_password: must be at least 8 characters')),
      'New password must be at least 8 characters.');
  });

  test('other errors keep their message as a sentence', () => {
    assert.equal(describeError(new ApiError(423, 'locked', 'notes is locked by Bob Smith')), 'Notes is locked by Bob Smith.');
    assert.equal(describeError(new ApiError(0, 'network', 'Cannot reach the server. Check your connection.')),
      'Cannot reach the server. Check your connection.');
    assert.equal(describeError(null), 'Something went wrong.');
  });
});
