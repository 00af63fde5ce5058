// Which tab leads the shared stream (tabs.js), and which tabs are still alive.
// Two ways, same interface: Web Locks where the page has them (secure
// contexts: HTTPS or localhost), else BroadcastChannel alone — a page served
// over plain HTTP on a LAN address has no navigator.locks. No DOM.
//
// election.start(onLead, onDepose)  onLead(): this tab leads now; onDepose(): it no longer does
// election.onMessage(message)       every channel message (the channel election reads them)
// election.liveTabs()               Promise<Set<client id>|null>: the tabs known to be alive
// election.follows(id)              may tab `id` speak as the leader?
// election.stop()                   the tab goes: give up the lead, stop timers

// The channel election: every tab says it is alive this often...
export const PING_MS = 500;
// ...a leader unheard for this long is gone (a crash; a closing one says so)...
export const TAKEOVER_MS = 1300;
// ...and a claim stands when no stronger one arrives within this.
export const CLAIM_WAIT_MS = 150;
// A tab that opens claims after this unless a leader answers its first ping
// (a leader answers a tab it has not heard before at once, timers or not).
export const START_WAIT_MS = 400;
// A tab unheard for this long has died. Long: a hidden tab's timers may run
// only once a minute, and a living tab must not lose its locks.
export const TAB_SILENT_MS = 90000;

function noop() {}

/** The browser grants one Web Lock: it frees it when the holding tab goes, however it goes. */
export function lockElection({ locks, names, clientId }) {
  let resign = null;
  let stopped = false;
  return {
    start(onLead) {
      // Held until the tab goes: the leader reads these to notice a tab that crashed.
      locks.request(names.tab + clientId, () => new Promise(noop)).catch(noop);
      locks.request(names.leader, () => new Promise((resolve) => {
        resign = resolve;
        if (stopped) resolve();
        else onLead();
      })).catch(noop);
    },
    onMessage: noop,
    follows: () => true, // the browser grants the lock to one tab at a time
    async liveTabs() {
      try {
        const snapshot = await locks.query();
        return new Set((snapshot.held || []).map((lock) => lock.name)
          .filter((name) => name.startsWith(names.tab)).map((name) => name.slice(names.tab.length)));
      } catch {
        return null;
      }
    },
    stop() {
      stopped = true;
      if (resign) resign();
    },
  };
}

/** (epoch, id): a higher epoch wins, then the smaller id. */
function beats(a, b) {
  return a.epoch > b.epoch || (a.epoch === b.epoch && a.id < b.id);
}

/**
 * Leader election over the channel: the leader pings; when it falls silent
 * the others claim the next epoch and the strongest claim wins. A leader that
 * hears a stronger one (it was frozen meanwhile) steps down.
 */
export function channelElection({ post, clientId, setTimeout, clearTimeout, now }) {
  const heard = new Map(); // client id -> when last heard
  let leader = null; // {id, epoch} of the tab leading, as far as we know
  let leaderHeardAt = -Infinity;
  let mine = null; // {id, epoch} while claiming or leading
  let leading = false;
  let timer = null;
  let claimTimer = null;
  let onLead = noop;
  let onDepose = noop;
  let stopped = false;

  function ping() {
    timer = null;
    if (stopped) return;
    post({ type: 'alive', from: clientId, leading, epoch: leading ? mine.epoch : null });
    if (!leading && mine === null && now() - leaderHeardAt > TAKEOVER_MS) claim();
    timer = setTimeout(ping, PING_MS);
  }

  function claim() {
    mine = { id: clientId, epoch: (leader ? leader.epoch : 0) + 1 };
    post({ type: 'claim', from: clientId, epoch: mine.epoch });
    claimTimer = setTimeout(() => {
      claimTimer = null;
      if (stopped || mine === null || leading) return;
      leading = true;
      leader = mine;
      post({ type: 'alive', from: clientId, leading: true, epoch: mine.epoch });
      onLead();
    }, CLAIM_WAIT_MS);
  }

  function yieldTo(other) {
    leader = other;
    leaderHeardAt = now();
    if (claimTimer !== null) clearTimeout(claimTimer);
    claimTimer = null;
    mine = null;
    if (leading) {
      leading = false;
      onDepose();
    }
  }

  return {
    start(lead, depose = noop) {
      onLead = lead;
      onDepose = depose;
      // Hear a standing leader first: it answers our first ping straight away.
      leaderHeardAt = now() - TAKEOVER_MS + START_WAIT_MS;
      ping();
    },
    onMessage(message) {
      if (stopped || !message || typeof message.from !== 'string' || message.from === clientId) return;
      const newcomer = !heard.has(message.from);
      heard.set(message.from, now());
      if (leading && newcomer && message.type === 'alive' && !message.leading) {
        post({ type: 'alive', from: clientId, leading: true, epoch: mine.epoch });
      }
      const other = { id: message.from, epoch: Number(message.epoch) || 0 };
      if (message.type === 'bye') heard.delete(message.from);
      if (message.type === 'bye' && leader && leader.id === message.from && !leading) {
        leaderHeardAt = -Infinity; // it said goodbye: take over at the next ping, not after a timeout
        if (timer !== null) clearTimeout(timer);
        ping();
      } else if (message.type === 'alive' && message.leading) {
        // A frozen leader that wakes up with an old epoch is not followed again.
        if (mine !== null ? beats(other, mine) : !leader || other.id === leader.id || beats(other, leader)) {
          yieldTo(other);
        }
      } else if (message.type === 'claim') {
        if (mine !== null && beats(other, mine)) yieldTo(other);
        else if (mine === null && (!leader || other.epoch > leader.epoch)) leaderHeardAt = now(); // let it win
      }
    },
    follows: (id) => leader !== null && leader.id === id,
    async liveTabs() {
      const cut = now() - TAB_SILENT_MS;
      return new Set([...heard].filter(([, at]) => at >= cut).map(([id]) => id));
    },
    stop() {
      stopped = true;
      if (timer !== null) clearTimeout(timer);
      if (claimTimer !== null) clearTimeout(claimTimer);
    },
  };
}
