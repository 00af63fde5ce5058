// Unsaved edits mirrored to localStorage, so a reload or crash loses nothing.
// One key per user and branch; several tabs share it, so every write is a
// read-modify-write of single entries rather than a rewrite of the whole set.

const MAX_AGE_MS = 7 * 24 * 3600 * 1000;

export function draftsKey(userId, branchId) {
  return `warrantysync:drafts:${userId}:${branchId}`;
}

/**
 * @param {{storage: Storage|null, key: string, now?: () => number}} options
 */
export function createDrafts({ storage, key, now = Date.now }) {
  function read() {
    if (!storage) return {};
    try {
      const parsed = JSON.parse(storage.getItem(key) || '{}');
      return parsed && typeof parsed === 'object' ? parsed : {};
    } catch {
      return {};
    }
  }

  function write(entries) {
    if (!storage) return;
    try {
      if (Object.keys(entries).length) storage.setItem(key, JSON.stringify(entries));
      else storage.removeItem(key);
    } catch {
      // Quota or private mode: the edit still lives in memory and is being saved.
    }
  }

  return {
    /** `expected` is the value the edit was based on, for the 409 check after a reload. */
    put(caseId, field, value, expected) {
      const entries = read();
      entries[`${caseId}:${field}`] = { case_id: caseId, field, value, expected, at: now() };
      write(entries);
    },
    remove(caseId, field) {
      const entries = read();
      if (!(`${caseId}:${field}` in entries)) return;
      delete entries[`${caseId}:${field}`];
      write(entries);
    },
    /** Drafts young enough to be worth offering back; older ones are dropped. */
    list() {
      const entries = read();
      const fresh = Object.values(entries).filter((d) => d && now() - Number(d.at || 0) < MAX_AGE_MS);
      if (fresh.length !== Object.keys(entries).length) {
        write(Object.fromEntries(fresh.map((d) => [`${d.case_id}:${d.field}`, d])));
      }
      return fresh;
    },
  };
}
