// Tiny fetch wrapper: JSON in and out, CSRF and client id headers, and one
// error type carrying the server's {error, message} body.

export class ApiError extends Error {
  /**
   * @param {number} status 0 for a network failure
   * @param {string} code server `error` code, or `network` / `http_<status>`
   * @param {string} message human text, shown in toasts
   * @param {object|null} body parsed error body
   * @param {number|null} retryAfter milliseconds from `Retry-After`, if any
   */
  constructor(status, code, message, body = null, retryAfter = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.body = body;
    this.retryAfter = retryAfter;
  }

  /** Worth sending again unchanged: the request may not have reached the server. */
  get retryable() {
    return this.status === 0 || this.status === 408 || this.status === 429 || this.status >= 500;
  }
}

/** `Retry-After` is either seconds or an HTTP date; returns milliseconds. */
export function parseRetryAfter(value, now = Date.now()) {
  if (value === null || value === undefined || value === '') return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, Math.round(seconds * 1000));
  const at = Date.parse(value);
  return Number.isNaN(at) ? null : Math.max(0, at - now);
}

const SAFE_METHODS = new Set(['GET', 'HEAD']);

async function readBody(response) {
  const text = await response.text().catch(() => '');
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

function toError(response, body, now) {
  const code = body && typeof body.error === 'string' ? body.error : `http_${response.status}`;
  const message = body && typeof body.message === 'string'
    ? body.message
    : `The server answered ${response.status}${response.statusText ? ` ${response.statusText}` : ''}.`;
  const retryAfter = parseRetryAfter(response.headers.get('Retry-After'), now());
  return new ApiError(response.status, code, message, body, retryAfter);
}

/**
 * @param {{fetch: Function, csrfToken?: string, clientId?: string, now?: () => number}} deps
 */
export function createApi({ fetch, csrfToken = '', clientId = '', now = Date.now }) {
  let csrf = csrfToken;

  async function request(method, path, options = {}) {
    // `raw`: a body sent as it is (a File, text), with its own Content-Type in `headers`.
    const { body, raw, headers = {}, ifNoneMatch, keepalive = false } = options;
    const sent = { Accept: 'application/json', ...headers };
    if (!SAFE_METHODS.has(method)) {
      if (csrf) sent['X-CSRF-Token'] = csrf;
      if (clientId) sent['X-Client-Id'] = clientId;
    }
    if (body !== undefined) sent['Content-Type'] = 'application/json';
    if (ifNoneMatch) sent['If-None-Match'] = ifNoneMatch;
    let response;
    try {
      response = await fetch(path, {
        method,
        headers: sent,
        body: raw !== undefined ? raw : body === undefined ? undefined : JSON.stringify(body),
        credentials: 'same-origin',
        keepalive,
      });
    } catch {
      throw new ApiError(0, 'network', 'Cannot reach the server. Check your connection.');
    }
    const etag = response.headers.get('ETag');
    if (response.status === 304) return { status: 304, data: null, etag };
    const data = await readBody(response);
    if (!response.ok) throw toError(response, data, now);
    return { status: response.status, data, etag };
  }

  return {
    request,
    get: (path, options) => request('GET', path, options),
    post: (path, body, options = {}) => request('POST', path, { ...options, body }),
    patch: (path, body, options = {}) => request('PATCH', path, { ...options, body }),
    put: (path, body, options = {}) => request('PUT', path, { ...options, body }),
    del: (path, options) => request('DELETE', path, options),
    setCsrfToken(token) {
      csrf = token;
    },
  };
}
