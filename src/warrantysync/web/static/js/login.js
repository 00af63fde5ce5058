// Progressive enhancement of the sign-in form: without JS it still posts.

import { safeNext } from './nexturl.js';

const form = document.getElementById('login-form');
const errorBox = document.getElementById('login-error');

/** Only same-origin paths, so ?next= cannot bounce the user to another site. */
function nextUrl() {
  const next = form.dataset.next || new URLSearchParams(location.search).get('next');
  return safeNext(next, location.origin);
}

function showError(message) {
  errorBox.textContent = message;
  errorBox.hidden = false;
}

if (form && errorBox) {
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const submit = form.querySelector('button[type=submit]');
    const email = form.elements.email.value.trim();
    const password = form.elements.password.value;
    errorBox.hidden = true;
    // Nothing to check yet: say what is missing rather than "wrong".
    if (!email || !password) {
      showError(!email && !password ? 'Enter your email and password.' : !email ? 'Enter your email.' : 'Enter your password.');
      (email ? form.elements.password : form.elements.email).focus();
      return;
    }
    submit.disabled = true;
    try {
      const response = await fetch('/api/auth/login', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        credentials: 'same-origin',
        body: JSON.stringify({ email, password }),
      });
      if (response.ok) {
        location.assign(nextUrl());
        return;
      }
      const body = await response.json().catch(() => null);
      const retry = response.headers.get('Retry-After');
      let message = body && body.message ? body.message : 'Sign-in failed. Please try again.';
      if (response.status === 429 && retry && !/\d/.test(message)) message += ` Try again in ${retry} s.`;
      showError(message);
      form.elements.password.select();
    } catch {
      showError('Cannot reach the server. Check your connection and try again.');
    } finally {
      submit.disabled = false;
    }
  });
}
