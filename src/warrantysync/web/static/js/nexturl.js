// Where to go after sign-in: only a path on this origin, never another site.

// Browsers drop tabs and newlines anywhere in a URL, trim spaces and control
// characters around it, read '\' as '/' and '%2e' as '.': '/\t/evil.example/'
// is '//evil.example/', another host. No path the server sends here contains
// any of them (the server's twin is safe_next in web/routes/pages.py).
const UNSAFE = /[\u0000-\u0020\u007f\\]|%2e/i;

/**
 * The same-origin path `value` names, after the browser's own normalisation,
 * or '/' for anything else (another origin, a scheme, junk).
 * @param {unknown} value the `next` parameter
 * @param {string} origin `location.origin`
 * @returns {string}
 */
export function safeNext(value, origin) {
  if (typeof value !== 'string' || !value.startsWith('/') || value.startsWith('//')) return '/';
  if (UNSAFE.test(value)) return '/';
  let url;
  try {
    url = new URL(value, origin);
  } catch {
    return '/';
  }
  if (url.origin !== origin) return '/';
  const path = url.pathname + url.search + url.hash;
  // '/.//evil.example' normalises to the path '//evil.example': assigned on
  // its own, that would be read as a host again.
  return path.startsWith('//') ? '/' : path;
}
