// Entry point of the branch page: reads the page config, makes this tab's
// client id, wires store, stream, saver, locks, sync and view together.
// The template provides only <script type="application/json" id="ws-config">
// and <div id="app">; everything else is built here (CSP: no inline script).

import { createApi } from './api.js';
import { createDrafts, draftsKey } from './drafts.js';
import { installFields, labelOf } from './fields.js';
import { createLocks } from './locks.js';
import { createSaver, retryToastKey } from './saver.js';
import { createStore, ownedBy } from './store.js';
import { createSync } from './sync.js';
import { createSharedConnection } from './tabs.js';
import { createUndo, undoKey } from './undo.js';
import { createView } from './view.js';
import { createLockRequests, createRowPresence, createRowReporter } from './where.js';

const CLIENT_ID_KEY = 'warrantysync:tab_id';
const BROWSER_ID_KEY = 'warrantysync:browser_id';
const RELOADED_FOR_KEY = 'warrantysync:reloaded_for';
const CLIENT_ID_RE = /^[A-Za-z0-9_-]{1,31}$/;

function readConfig() {
  const raw = JSON.parse(document.getElementById('ws-config').textContent);
  // Timing constants may sit at the top level or under `config`/`client_config`.
  return { ...raw, ...(raw.client_config || {}), ...(raw.config || {}) };
}

function randomId() {
  // Hex, 24 digits: a tab's client id is `<browser>.<tab>`, at most 64 characters.
  return [...crypto.getRandomValues(new Uint8Array(12))].map((b) => b.toString(16).padStart(2, '0')).join('');
}

/** One id per browser profile: its tabs share the stream opened with it (tabs.js). */
function browserId() {
  const storage = safeStorage();
  let id = null;
  try { id = storage && storage.getItem(BROWSER_ID_KEY); } catch { /* ignore */ }
  if (id && CLIENT_ID_RE.test(id)) return id;
  id = randomId();
  try { if (storage) storage.setItem(BROWSER_ID_KEY, id); } catch { /* ignore */ }
  return id;
}

/** The server runs another client version than this page: reload, once per version. */
function reloadForVersion(config, data) {
  if (!data.version || !config.version || data.version === config.version) return;
  try {
    if (sessionStorage.getItem(RELOADED_FOR_KEY) === data.version) return;
    sessionStorage.setItem(RELOADED_FOR_KEY, data.version);
  } catch { /* ignore */ }
  location.reload();
}

function lockHolderMessage(result, userId) {
  const holder = result.holder;
  if (holder && holder.id === userId) return 'Open in your other tab';
  return holder && holder.name ? `Locked by ${holder.name}` : result.message;
}

/**
 * One id per tab, kept across reloads (so the tab still owns its locks) but
 * not copied by "Duplicate tab": the id is taken out of sessionStorage while
 * the page lives and put back only when it is hidden or unloaded.
 */
function tabClientId() {
  let id = null;
  try {
    id = sessionStorage.getItem(CLIENT_ID_KEY);
    sessionStorage.removeItem(CLIENT_ID_KEY);
  } catch {
    // storage disabled: a fresh id per load is still correct
  }
  if (!id || !CLIENT_ID_RE.test(id)) id = randomId();
  const park = () => { try { sessionStorage.setItem(CLIENT_ID_KEY, id); } catch { /* ignore */ } };
  const unpark = () => { try { sessionStorage.removeItem(CLIENT_ID_KEY); } catch { /* ignore */ } };
  window.addEventListener('pagehide', park);
  window.addEventListener('pageshow', (event) => { if (event.persisted) unpark(); });
  return id;
}

function safeStorage() {
  try {
    return window.localStorage;
  } catch {
    return null;
  }
}

function safeSessionStorage() {
  try {
    return window.sessionStorage;
  } catch {
    return null;
  }
}

function goToLogin() {
  const next = encodeURIComponent(location.pathname + location.search);
  location.assign(`/login?next=${next}`);
}

/**
 * Who is where (docs/protocol.md, "Row presence" and "Asking for a locked field"):
 * this tab's spot reported as it changes, everyone's kept for the view, and
 * asking for / being asked for locked fields. `view()` is the view once made.
 */
function createWhere({ api, branchId, clientId, userId, store, saver, timers, view, caseName }) {
  const rows = createRowPresence();
  const reporter = createRowReporter({ api, branchId, ...timers });
  let shownCase = null; // the side panel's case
  let focusedCase = null; // the case of the row the focus is in

  function report() {
    const focus = store.focused();
    const caseId = focus?.caseId ?? focusedCase ?? shownCase;
    if (!caseId) {
      reporter.set(null);
      return;
    }
    const mine = store.allLocks().some((lock) => lock.case_id === caseId && ownedBy(lock, userId, clientId));
    const editing = mine || store.editsFor(caseId).size > 0;
    reporter.set({ caseId, field: focus && focus.caseId === caseId ? focus.field : null, editing });
  }

  function answered(request, answer) {
    const what = `${labelOf(request.field)} of ${caseName(request.case_id)}`;
    const key = `ask:${request.case_id}:${request.field}`;
    const holder = request.holder.name;
    if (answer === 'kept') {
      view().toast(`${holder} is still editing ${what}.`, 'warning', { key });
    } else if (answer === 'released' || answer === 'timeout' || answer === 'lock_gone') {
      view().openField(request.case_id, request.field);
      const why = answer === 'released' ? `${holder} released ${what}` : answer === 'timeout'
        ? `${holder} did not answer and stopped typing` : `${holder} no longer holds ${what}`;
      view().toast(`${why}: it is yours to edit.`, 'success', { key });
    }
  }

  const requests = createLockRequests({
    api, clientId, userId,
    onIncoming: (list) => view().showLockRequests(list),
    onAnswer: answered,
    onTyping: (caseId, field) => saver.flush(caseId, field),
  });

  document.addEventListener('focusin', (event) => {
    const row = event.target.closest && event.target.closest('tr[data-case-id]');
    focusedCase = row ? Number(row.dataset.caseId) : null;
    report();
  });
  for (const type of ['keydown', 'pointerdown']) document.addEventListener(type, () => reporter.activity(), true);
  store.subscribe(({ type }) => { if (type === 'edit' || type === 'lock' || type === 'locks') report(); });

  window.addEventListener('pagehide', () => reporter.leave());

  return {
    rows,
    typing: (caseId, field) => requests.typing(caseId, field),
    handleEvent(name, data) {
      rows.handleEvent(name, data);
      requests.handleEvent(name, data);
      if (name === 'ready') reporter.resend();
    },
    actions: {
      async askRelease(caseId, field) {
        const key = `ask:${caseId}:${field}`;
        const result = await requests.ask(caseId, field);
        if (result.granted) {
          view().openField(caseId, field);
        } else if (result.request) {
          view().toast(`Asked ${result.request.holder.name} for ${labelOf(field)}. It opens for you when they release it.`, 'info', { key });
        } else {
          view().toast(result.error.message, 'warning', { key });
        }
      },
      async answerRequest(id, choice) {
        const request = requests.incoming().find((r) => r.id === id);
        // Release: what the holder typed is saved before the lock goes.
        if (choice === 'release' && request) await saver.flush(request.case_id, request.field);
        const result = await requests.answer(id, choice);
        if (!result.ok && result.error && result.error.status !== 404) view().toast(result.error.message, 'warning');
      },
      caseShown(caseId) {
        shownCase = caseId;
        report();
      },
    },
  };
}

function start() {
  const config = readConfig();
  installFields(config.fields);
  const branchId = config.branch_id;
  const tabId = tabClientId();
  const browser = browserId();
  const clientId = `${browser}.${tabId}`;
  const timers = { setTimeout: (fn, ms) => window.setTimeout(fn, ms), clearTimeout: (id) => window.clearTimeout(id) };
  const api = createApi({ fetch: (...args) => window.fetch(...args), csrfToken: config.csrf_token, clientId });
  const userId = config.user.id;
  const store = createStore({ clientId, userId });
  const caseName = (caseId) => store.getCase(caseId)?.case_number ?? 'this case';
  let view = null;
  let saver = null;
  let undo = null;
  let unauthorized = false;

  function onUnauthorized() {
    if (unauthorized) return;
    unauthorized = true;
    view.toast('Your session has ended. Taking you to sign in; unsaved edits are kept on this device.', 'error');
    window.setTimeout(goToLogin, 2000);
  }

  const locks = createLocks({
    api, clientId, userId, renewMs: config.LOCK_RENEW_MS || 10000, ...timers,
    onLost: (caseId, field, who, reason) => view.lockLost(caseId, field, who, reason,
      { label: labelOf(field), caseName: caseName(caseId) }),
  });

  saver = createSaver({
    store, api, ...timers,
    drafts: createDrafts({ storage: safeStorage(), key: draftsKey(config.user.id, branchId) }),
    debounceMs: config.DEBOUNCE_MS ?? 1000,
    retryDelaysMs: config.RECONNECT_DELAYS_MS,
    lockToken: (caseId, field) => locks.tokenFor(caseId, field),
    onConflict: (caseId, ...rest) => {
      // The conflict is the news now: "not saved yet, retrying" is stale.
      view.dismissToast(retryToastKey(caseId));
      return view.askConflict(caseId, ...rest);
    },
    onToast: (message, kind, options) => view.toast(message, kind, options),
    onUnauthorized,
    onLockLost: (caseId, field) => locks.forget(caseId, field),
    onSaved: (caseId, changes) => undo.record(caseId, changes),
  });

  // This tab's own saved changes, to undo and redo; kept across a reload of the tab.
  undo = createUndo({
    store, submit: saver.submit, settle: () => saver.flushAll(),
    onConflict: (...args) => view.askConflict(...args),
    onToast: (message, kind) => view.toast(message, kind),
    onChange: () => view.undoChanged(),
    describe: (field, value) => view.describe(field, value),
    storage: safeSessionStorage(), key: undoKey(userId, branchId),
  });

  const where = createWhere({ api, branchId, clientId, userId, store, saver, timers, view: () => view, caseName });

  let draftsOffered = false;
  const casesUrl = `/api/branches/${branchId}/cases`;
  let syncRequest = null; // the window's range the sync in flight asked for
  const sync = createSync({
    api, intervalMs: config.SYNC_INTERVAL_MS || 60000,
    // Only the table's window, so a branch of any size costs the same.
    url: () => {
      syncRequest = view.listRequest();
      return `${casesUrl}?${syncRequest.query}`;
    },
    retryDelaysMs: config.RECONNECT_DELAYS_MS, ...timers,
    onSnapshot(snapshot) {
      // Locks and presence: the live stream is fresher than a snapshot fetched beside it.
      view.applyList(syncRequest, snapshot, { ephemeral: connection.state !== 'connected' });
      if (connection.state !== 'connected') where.rows.applySnapshot(snapshot);
      connection.noteSnapshot(snapshot.last_event_id);
      if (!draftsOffered) {
        draftsOffered = true;
        undo.resume(); // before the drafts: their saves are new steps
        const restored = saver.restoreDrafts();
        if (restored) view.toast(`Restored ${restored} unsaved change${restored === 1 ? '' : 's'} from your last visit; saving now.`, 'info');
      }
    },
    onError: (error) => { if (error.status === 401) onUnauthorized(); },
  });

  const connection = createSharedConnection({
    url: `/api/branches/${branchId}/events`, browserId: browser, tabId, version: config.version, branchId,
    locks: navigator.locks || null, BroadcastChannelImpl: window.BroadcastChannel || null,
    currentState: () => ({
      locks: store.allLocks(), presence: store.presence(), row_presence: where.rows.all(), live_state: store.liveState(),
    }),
    releaseTab: (id) => api.del(`/api/branches/${branchId}/clients/${encodeURIComponent(id)}/locks`),
    EventSourceImpl: window.EventSource, ...timers,
    reconnectDelaysMs: config.RECONNECT_DELAYS_MS, heartbeatMs: config.HEARTBEAT_MS,
    probe: () => window.fetch('/healthz', { cache: 'no-store', credentials: 'omit' }).then((r) => r.ok, () => false),
    isOnline: () => navigator.onLine !== false,
    onEvent(name, data, id) {
      if (name === 'ready') reloadForVersion(config, data);
      locks.handleEvent(name, data);
      where.handleEvent(name, data);
      // A case the window does not hold: deleted, it still changes the count.
      const outside = name === 'case-deleted' && !store.getCase(data.case_id);
      if (!store.applyEvent(name, data, id) || outside) view.missed(name, data);
    },
    onStateChange: (state) => view.setConnectionState(state),
    onRoleChange: (role) => view.setStreamRole(role),
    onResync: (reason) => sync.now({ force: reason === 'sync-required' }),
  });

  const actions = {
    edit: (caseId, field, value, options) => {
      const result = saver.edit(caseId, field, value, options);
      where.typing(caseId, field); // asked for this field: saved every few seconds meanwhile
      return result;
    },
    discard: (caseId, field) => saver.discard(caseId, field),
    isDraft: (caseId, field) => saver.isHeld(caseId, field),
    holdDraft: (caseId, field) => saver.hold(caseId, field),
    async saveDraft(caseId, field) {
      // Saved under a fresh lock, so nobody can be typing there meanwhile. When the
      // manager's release still bars us from the lock, the save goes without one:
      // it carries `expected`, so the database refuses it if anyone changed the field.
      const result = await locks.acquire(caseId, field);
      if (result.ok || result.transient || result.forced) {
        await saver.flush(caseId, field);
      } else {
        const holder = result.holder && result.holder.name;
        view.toast(`${holder ? `${holder} is editing it now` : result.message}. Your draft is kept.`, 'warning');
      }
      await locks.release(caseId, field);
      view.renderField(caseId, field);
    },
    discardDraft(caseId, field) {
      saver.discard(caseId, field);
      view.renderField(caseId, field);
    },
    async focusField(caseId, field) {
      store.setFocus(caseId, field);
      if (config.role === 'viewer') return { ok: true };
      const result = await locks.acquire(caseId, field);
      // Editing on without the lock; say why when it is the user's own doing.
      if (result.code === 'too_many_locks') {
        view.toast('You are editing too many fields at once (other tabs?), so this one is not locked for you. Your changes are still saved.', 'warning');
      }
      if (result.ok || result.transient || result.cancelled) return { ok: true };
      store.clearFocus(caseId, field);
      // Text typed before the refusal goes; a draft kept from an earlier lock stays.
      if (!saver.isHeld(caseId, field)) saver.discard(caseId, field);
      return { ok: false, message: lockHolderMessage(result, userId) };
    },
    /** Editing ended; `save: false` when the lock was lost and the text stays a draft. */
    blurField(caseId, field, { save = true } = {}) {
      store.clearFocus(caseId, field);
      return locks.release(caseId, field, save ? saver.flush(caseId, field) : null);
    },
    async forceRelease(caseId, field) {
      // A manager's release; everyone (this tab too) hears lock-released "forced".
      try {
        await api.del(`/api/cases/${caseId}/locks/${field}`);
      } catch (error) {
        view.toast(error.message || 'Could not release the lock', 'error');
      }
    },
    async createCase(fields) {
      const answer = await api.post(`/api/branches/${branchId}/cases`, fields);
      store.addOwnCase(answer.data);
      return answer.data;
    },
    undo: () => undo.undo(),
    redo: () => undo.redo(),
    nextUndo: () => undo.nextUndo(),
    nextRedo: () => undo.nextRedo(),
    restoreEntry: (caseId, entry, side) => undo.restore(caseId, entry, side),
    async loadTrash() {
      const answer = await api.get(`/api/branches/${branchId}/trash`);
      return answer.data;
    },
    async restoreCase(caseId) {
      const answer = await api.post(`/api/cases/${caseId}/restore`, undefined, { headers: { 'Idempotency-Key': randomId() } });
      store.addOwnCase(answer.data);
      return answer.data;
    },
    async deleteCase(caseId) {
      await api.del(`/api/cases/${caseId}`);
      store.removeCase(caseId);
    },
    async loadHistory(caseId, limit) {
      const answer = await api.get(`/api/cases/${caseId}/history?limit=${limit}`);
      return Array.isArray(answer.data) ? answer.data : (answer.data && answer.data.history) || [];
    },
    async changePassword(current, next) {
      const answer = await api.post('/api/auth/password', { current_password: current, new_password: next });
      return answer.data;
    },
    async logout() {
      await saver.flushAll();
      locks.releaseAll();
      try { await api.post('/api/auth/logout'); } finally { location.assign('/login'); }
    },
    switchBranch: (id) => { if (id !== branchId) location.assign(`/branch/${id}`); },
    async loadList(query) {
      const answer = await api.get(`${casesUrl}?${query}`);
      return answer.data;
    },
    refresh: () => sync.now(),
    async loadCase(caseId) {
      const answer = await api.get(`/api/cases/${caseId}`);
      return answer.data;
    },
    async importCsv(file, dryRun) {
      const answer = await api.request('POST', `${casesUrl}/import?dry_run=${dryRun ? 'true' : 'false'}`, {
        raw: file, headers: { 'Content-Type': 'text/csv' },
      });
      return answer.data;
    },
    ...where.actions,
  };

  view = createView({ root: document.getElementById('app'), config, store, actions, rows: where.rows });
  view.mount();
  view.setStreamRole(connection.role);
  view.setConnectionInfo({
    nextAttemptAt: () => connection.nextAttemptAt,
    online: () => navigator.onLine !== false,
    retryNow: () => { connection.reconnectNow(); saver.retryNow(); sync.now(); },
  });
  if (Array.isArray(config.branches)) view.setBranches(config.branches, branchId);

  async function loadMe() {
    try {
      const { data } = await api.get('/api/me');
      if (data.csrf_token) api.setCsrfToken(data.csrf_token);
      const branches = data.branches || [];
      view.setBranches(branches, branchId);
      const here = branches.find((b) => b.id === branchId);
      if (here && here.role && here.role !== config.role) {
        config.role = here.role;
        view.setRole(here.role);
      }
    } catch (error) {
      if (error.status === 401) onUnauthorized();
    }
  }

  window.addEventListener('online', () => { connection.reconnectNow(); saver.retryNow(); sync.now(); });
  window.addEventListener('offline', () => connection.goOffline());
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') { connection.wake(); sync.now(); }
  });
  window.addEventListener('beforeunload', (event) => {
    if (!saver.hasPending()) return;
    saver.flushAll();
    event.preventDefault();
    event.returnValue = '';
  });
  window.addEventListener('pagehide', () => {
    locks.releaseAll();
    undo.park();
    connection.close();
  });
  // Back from the back/forward cache with the shared stream closed: start
  // afresh (the undo stacks parked above come back with the reload).
  window.addEventListener('pageshow', (event) => { if (event.persisted) location.reload(); });

  loadMe();
  sync.start();
  // Subscribe from the snapshot's last_event_id so nothing between the two is missed.
  sync.now().finally(() => connection.start());
}

start();
