// The periodic sync (docs/architecture.md, "The browser client"): GET …/cases
// with If-None-Match every SYNC_INTERVAL_MS and whenever the stream reports a
// gap or sync-required. Overlapping
// requests are folded into one. No DOM.
//
// `url` may be a function, asked at each request: the bundled page re-reads
// only the table's window (caselist.js `refresh()`), whose range changes as
// the user scrolls. An ETag is only ever sent back to the URL it came from.

import { ApiError } from './api.js';
import { DEFAULT_DELAYS_MS, backoffDelay } from './backoff.js';

function noop() {}

/**
 * @param {object} options
 * @param {object} options.api
 * @param {string|(() => string)} options.url e.g. /api/branches/1/cases
 * @param {number} options.intervalMs
 * @param {Function} options.setTimeout
 * @param {Function} options.clearTimeout
 * @param {(snapshot: object, url: string) => void} options.onSnapshot
 * @param {(error: ApiError) => void} [options.onError]
 */
export function createSync(options) {
  const {
    api, url, intervalMs, setTimeout, clearTimeout, onSnapshot,
    onError = noop, random = Math.random, retryDelaysMs = DEFAULT_DELAYS_MS,
  } = options;
  let etag = null;
  let etagUrl = null;
  let inflight = null;
  let again = null; // {force} when a request came in while one was running
  let timer = null;
  let failures = 0;
  let running = false;

  function schedule(delay) {
    if (timer !== null) clearTimeout(timer);
    timer = running ? setTimeout(() => {
      timer = null;
      now();
    }, delay) : null;
  }

  async function fetchOnce(force) {
    const target = typeof url === 'function' ? url() : url;
    try {
      const answer = await api.get(target, { ifNoneMatch: force || target !== etagUrl ? null : etag });
      failures = 0;
      if (answer.status !== 304) {
        etag = answer.etag;
        etagUrl = target;
        onSnapshot(answer.data, target);
      }
      schedule(intervalMs);
      return true;
    } catch (err) {
      failures += 1;
      onError(err instanceof ApiError ? err : new ApiError(0, 'network', String(err)));
      schedule(Math.min(intervalMs, backoffDelay(failures - 1, retryDelaysMs, random)));
      return false;
    }
  }

  /** Fetch now; `force` skips If-None-Match (after sync-required). Resolves true on success. */
  function now({ force = false } = {}) {
    if (inflight) {
      again = { force: force || (again ? again.force : false) };
      return inflight;
    }
    inflight = fetchOnce(force).then(async (ok) => {
      inflight = null;
      if (!again) return ok;
      const next = again;
      again = null;
      return now(next);
    });
    return inflight;
  }

  return {
    now,
    start() {
      running = true;
      if (timer === null && !inflight) schedule(intervalMs);
    },
    stop() {
      running = false;
      schedule(0);
    },
    get etag() {
      return etag;
    },
  };
}
