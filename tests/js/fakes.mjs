// Hand-written fakes for the browser-client tests: a clock whose time only
// moves when a test says so, an EventSource the test drives, a fetch whose
// answers the test controls, and an in-memory Storage; and the server's field
// table as the branch page sends it.

import { readFileSync } from 'node:fs';

export const JS = '../../src/warrantysync/web/static/js';

/**
 * The page config's `fields`: written from src/warrantysync/casefields.py and
 * compared with what the branch page sends by tests/test_casefields.py, so
 * these tests and the server cannot drift apart.
 */
export const FIELD_TABLE = JSON.parse(readFileSync(new URL('./fields.json', import.meta.url), 'utf8'));

/** Let pending promise callbacks run (several rounds: chains await chains). */
export async function settle(rounds = 20) {
  for (let i = 0; i < rounds; i += 1) await new Promise((resolve) => setImmediate(resolve));
}

export class FakeClock {
  constructor(start = 1_000_000) {
    this.time = start;
    this.timers = new Map();
    this.nextId = 1;
    this.setTimeout = (fn, ms = 0) => {
      const id = this.nextId++;
      this.timers.set(id, { fn, at: this.time + Math.max(0, ms), id });
      return id;
    };
    this.clearTimeout = (id) => {
      this.timers.delete(id);
    };
    this.now = () => this.time;
  }

  pending() {
    return [...this.timers.values()].sort((a, b) => a.at - b.at || a.id - b.id);
  }

  /** Move time forward by `ms`, firing due timers in order and letting promises settle between them. */
  async tick(ms) {
    const target = this.time + ms;
    for (;;) {
      const due = this.pending().find((t) => t.at <= target);
      if (!due) break;
      this.timers.delete(due.id);
      this.time = due.at;
      due.fn();
      await settle();
    }
    this.time = target;
    await settle();
  }
}

export class FakeEventSource {
  static instances = [];

  static reset() {
    FakeEventSource.instances = [];
  }

  static get last() {
    return FakeEventSource.instances[FakeEventSource.instances.length - 1];
  }

  constructor(url) {
    this.url = url;
    this.listeners = new Map();
    this.closed = false;
    this.onerror = null;
    this.onopen = null;
    FakeEventSource.instances.push(this);
  }

  addEventListener(name, fn) {
    if (!this.listeners.has(name)) this.listeners.set(name, []);
    this.listeners.get(name).push(fn);
  }

  close() {
    this.closed = true;
  }

  emit(name, data, id = '') {
    for (const fn of this.listeners.get(name) || []) {
      fn({ type: name, data: JSON.stringify(data), lastEventId: id === null ? '' : String(id) });
    }
  }

  fail() {
    if (this.onerror) this.onerror({ type: 'error' });
  }

  get params() {
    return new URL(this.url, 'http://x').searchParams;
  }
}

export function makeResponse(status, body = null, headers = {}) {
  const lower = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), String(v)]));
  return {
    status,
    ok: status >= 200 && status < 300,
    statusText: '',
    headers: { get: (name) => lower[name.toLowerCase()] ?? null },
    text: async () => (body === null || body === undefined ? '' : JSON.stringify(body)),
  };
}

/**
 * fetch double. With a handler, answers at once; without, each call waits
 * until the test calls `call.respond(...)` / `call.fail()`.
 */
export class FakeFetch {
  constructor(handler = null) {
    this.handler = handler;
    this.calls = [];
    this.fetch = (url, init = {}) => this.call(url, init);
  }

  call(url, init) {
    return new Promise((resolve, reject) => {
      const entry = {
        url,
        method: init.method || 'GET',
        headers: init.headers || {},
        body: init.body ? JSON.parse(init.body) : undefined,
        keepalive: init.keepalive,
        done: false,
        respond: (status, body, headers) => {
          entry.done = true;
          resolve(makeResponse(status, body, headers));
        },
        fail: () => {
          entry.done = true;
          reject(new TypeError('Failed to fetch'));
        },
      };
      this.calls.push(entry);
      if (this.handler) {
        const answer = this.handler(entry);
        if (answer === 'network') entry.fail();
        else if (answer) entry.respond(answer.status, answer.body, answer.headers);
      }
    });
  }

  get pending() {
    return this.calls.filter((c) => !c.done);
  }

  get last() {
    return this.calls[this.calls.length - 1];
  }
}

export class MemoryStorage {
  constructor() {
    this.data = new Map();
  }

  getItem(key) {
    return this.data.has(key) ? this.data.get(key) : null;
  }

  setItem(key, value) {
    this.data.set(key, String(value));
  }

  removeItem(key) {
    this.data.delete(key);
  }
}

export function makeCase(overrides = {}) {
  return {
    id: 1,
    branch_id: 1,
    case_number: 'WC-000001',
    customer_name: 'Ann Lee',
    customer_phone: '',
    customer_email: '',
    product: 'Kettle',
    serial_number: '',
    purchase_date: null,
    issue: '',
    status: 'new',
    priority: 'normal',
    assignee_id: null,
    notes: '',
    version: 1,
    created_at: '2024-01-01T10:00:00Z',
    updated_at: '2024-01-01T10:00:00Z',
    updated_by: null,
    ...overrides,
  };
}
