// Error answers in words a person at the counter understands. No DOM.
// The server's messages name fields the way the API does
// ("customer_email: is not a valid email address (…)"); a refusal that names
// a field and a rule is worded from the field table instead.

import { labelOf, maxLengthOf } from './fields.js';

// Fields of other requests than a case's (docs/protocol.md, "Changing the password").
const OTHER_LABELS = { current_password: 'Current password', new_password: 'New password', email: 'Email', password: 'Password' };

function label(field) {
  return OTHER_LABELS[field] ?? labelOf(field);
}

function sentence(text) {
  const trimmed = String(text).trim();
  if (!trimmed) return trimmed;
  const first = trimmed.charAt(0).toUpperCase() + trimmed.slice(1);
  return /[.!?…)]$/.test(first) ? first : `${first}.`;
}

/** The server's text without its leading "field: ". */
function detail(message, field) {
  const text = String(message || '');
  return text.startsWith(`${field}: `) ? text.slice(field.length + 2) : text;
}

function ruleText(field, rule, message) {
  const name = label(field);
  switch (rule) {
    case 'required': return `${name} cannot be empty.`;
    case 'blank': return `${name} cannot be only spaces.`;
    case 'max_length': {
      const limit = maxLengthOf(field);
      return limit ? `${name} can be at most ${limit.toLocaleString()} characters.` : sentence(`${name} ${detail(message, field)}`);
    }
    case 'email': return `${name} must be an email address, like name@example.com.`;
    case 'not_future': return `${name} cannot be after today.`;
    case 'date': return `${name} must be a date.`;
    case 'choice': return `${name} must be one of the listed choices.`;
    case 'member': return `${name} must be a member of this branch.`;
    case 'assignable': return `${name} must be an editor or a manager of this branch; viewers cannot be assigned.`;
    case 'characters': return `${name} contains a character that cannot be stored.`;
    case 'incorrect': return `${name} is not right.`;
    default: return sentence(`${name} ${detail(message, field)}`);
  }
}

/**
 * @param {{status?: number, code?: string, message?: string, body?: object|null}} error an ApiError
 * @returns {string}
 */
export function describeError(error) {
  const body = (error && error.body) || {};
  if (error && error.code === 'validation_error' && typeof body.field === 'string') {
    return ruleText(body.field, body.rule, error.message);
  }
  return sentence((error && error.message) || 'Something went wrong.');
}
