// Fakes for tabs.js: one browser's Web Locks and BroadcastChannel, shared by
// the tabs a test opens. A tab that "crashes" drops its locks and channels
// without a word, as a killed renderer does.

export class FakeBrowser {
  constructor() {
    this.held = new Map(); // name -> {tab, release}
    this.waiting = []; // [{name, tab, callback, resolve}]
    this.channels = new Set();
    this.dead = new Set(); // crashed tabs: their code no longer runs
  }

  /** `navigator.locks` and `BroadcastChannel` as one tab sees them. */
  tab(name) {
    const browser = this;
    const locks = {
      request: (lockName, callback) => new Promise((resolve, reject) => {
        browser.waiting.push({ name: lockName, tab: name, callback, resolve, reject });
        browser.grant();
      }),
      query: async () => ({
        held: [...browser.held.entries()].map(([lockName, h]) => ({ name: lockName, clientId: h.tab })),
        pending: browser.waiting.map((w) => ({ name: w.name, clientId: w.tab })),
      }),
    };
    class Channel {
      constructor(channelName) {
        this.name = channelName;
        this.tab = name;
        this.onmessage = null;
        this.closed = false;
        browser.channels.add(this);
      }

      postMessage(message) {
        if (browser.dead.has(name)) return; // its timers still fire in the shared fake clock
        if (this.closed) throw new Error('InvalidStateError: channel closed');
        const copy = structuredClone(message);
        for (const other of browser.channels) {
          if (other !== this && other.name === this.name) {
            setImmediate(() => {
              if (!other.closed && !browser.dead.has(other.tab) && other.onmessage) other.onmessage({ data: copy });
            });
          }
        }
      }

      close() {
        this.closed = true;
        browser.channels.delete(this);
      }
    }
    return { locks, BroadcastChannelImpl: Channel };
  }

  grant() {
    for (const w of [...this.waiting]) {
      if (this.held.has(w.name)) continue;
      this.waiting.splice(this.waiting.indexOf(w), 1);
      const entry = { tab: w.tab };
      this.held.set(w.name, entry);
      const done = Promise.resolve().then(() => w.callback({ name: w.name }));
      entry.done = done;
      done.finally(() => {
        if (this.held.get(w.name) === entry) {
          this.held.delete(w.name);
          this.grant();
        }
      }).then(w.resolve, w.reject);
    }
  }

  /** The tab's process dies: its locks are freed, its channels go quiet. */
  crash(name) {
    this.dead.add(name);
    for (const [lockName, entry] of [...this.held]) if (entry.tab === name) this.held.delete(lockName);
    this.waiting = this.waiting.filter((w) => w.tab !== name);
    for (const channel of [...this.channels]) if (channel.tab === name) channel.close();
    this.grant();
  }
}
