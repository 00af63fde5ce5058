// Shared retry timing for the stream, saves and snapshot fetches.

export const DEFAULT_DELAYS_MS = Object.freeze([1000, 2000, 4000, 8000, 16000, 30000]);

// ±20 %: a deploy drops every tab at once; spreading their returns keeps the
// reconnect storm from arriving as one spike.
export const JITTER = 0.2;

/**
 * Delay before retry number `attempt` (0 = first retry). The last step repeats.
 * @param {number} attempt
 * @param {number[]} [delays]
 * @param {() => number} [random]
 */
export function backoffDelay(attempt, delays = DEFAULT_DELAYS_MS, random = Math.random) {
  const steps = delays && delays.length ? delays : DEFAULT_DELAYS_MS;
  const base = steps[Math.min(Math.max(attempt, 0), steps.length - 1)];
  return Math.round(base * (1 - JITTER + 2 * JITTER * random()));
}
