import assert from 'node:assert/strict';
import { beforeEach, describe, test } from 'node:test';

import {
  BURST_INSERTS, compareCases, createCaseWindow, defaultView, matchesView, openStatuses, viewQuery,
} from '../../src/warrantysync/web/static/js/caselist.js';
import { installFields } from '../../src/warrantysync/web/static/js/fields.js';
import { FIELD_TABLE, makeCase } from './fakes.mjs';

installFields(FIELD_TABLE);
const SEARCHABLE = FIELD_TABLE.filter((f) => f.searchable).map((f) => f.name);
const MEMBERS = [{ id: 7, name: 'Zoe' }, { id: 3, name: 'Adam' }, { id: 5, name: 'mia' }];
const ORDER = {
  memberCount: () => MEMBERS.length,
  memberRank(id) {
    const sorted = [...MEMBERS].sort((a, b) => a.name.toLowerCase().localeCompare(b.name.toLowerCase()));
    const at = sorted.findIndex((m) => m.id === id);
    return at < 0 ? null : at;
  },
};

/**
 * A stand-in for GET …/cases over `cases`, newest first: cursors are the
 * row's id (opaque to the window), `until` is inclusive, like the server's.
 */
function fakeServer(cases) {
  return {
    cases,
    answer(req) {
      const params = new URLSearchParams(req.query);
      const statuses = params.getAll('status');
      const rows = cases.filter((c) => !statuses.length || statuses.includes(c.status))
        .sort((a, b) => b.id - a.id);
      const after = params.get('cursor');
      const until = params.get('until');
      const limit = Number(params.get('limit'));
      let range = rows.filter((c) => (after === null || c.id < Number(after))
        && (until === null || c.id >= Number(until)));
      const more = range.length > limit;
      range = range.slice(0, limit);
      const cursors = range.map((c) => String(c.id));
      return {
        cases: range, cursors, total: rows.length, next_cursor: more ? cursors[cursors.length - 1] : null,
      };
    },
  };
}

function setup({ count = 1000, pageSize = 100, maxRows = 300, busy = new Set(), now } = {}) {
  const cases = Array.from({ length: count }, (_, n) => makeCase({ id: n + 1, case_number: `WC-${n + 1}`, status: 'new' }));
  const server = fakeServer(cases);
  const byId = new Map(cases.map((c) => [c.id, c]));
  const win = createCaseWindow({
    userId: 1, getCase: (id) => byId.get(id) ?? null, isBusy: (id) => busy.has(id),
    searchable: SEARCHABLE, order: ORDER, pageSize, maxRows, now,
  });
  win.setView({ ...defaultView(), statuses: [] });
  const load = (req) => (req ? win.apply(req, server.answer(req)) : null);
  return { win, server, byId, load, busy };
}

describe('the list query', () => {
  test('statuses repeat, the sort is always sent, paging only when asked', () => {
    const view = { q: '  Smith ', statuses: ['new', 'ready'], assignee: 'me', sort: 'customer_name' };
    assert.equal(viewQuery(view), 'q=Smith&status=new&status=ready&assignee=me&sort=customer_name');
    assert.equal(
      viewQuery({ ...view, q: '', statuses: [], assignee: '' }, { cursor: 'abc', until: 'xyz', limit: 100 }),
      'sort=customer_name&limit=100&cursor=abc&until=xyz',
    );
  });

  test('the default view is the open work, newest first', () => {
    assert.deepEqual(openStatuses(), ['new', 'diagnosing', 'awaiting_parts', 'in_repair', 'ready']);
    assert.equal(defaultView().sort, '-case_number');
  });
});

describe('matching and order, as the server has them', () => {
  test('statuses, assignee and a search in any searched field, ignoring case', () => {
    const c = makeCase({ status: 'ready', assignee_id: 1, customer_name: 'Ann Smith', serial_number: 'SN-77' });
    const view = defaultView();
    assert.equal(matchesView(c, view, 1, SEARCHABLE), true);
    assert.equal(matchesView({ ...c, status: 'closed' }, view, 1, SEARCHABLE), false);
    assert.equal(matchesView(c, { ...view, assignee: 'me' }, 1, SEARCHABLE), true);
    assert.equal(matchesView(c, { ...view, assignee: 'me' }, 2, SEARCHABLE), false);
    assert.equal(matchesView(c, { ...view, assignee: 'none' }, 1, SEARCHABLE), false);
    assert.equal(matchesView(c, { ...view, assignee: '1' }, 9, SEARCHABLE), true);
    assert.equal(matchesView(c, { ...view, q: 'smith' }, 1, SEARCHABLE), true);
    assert.equal(matchesView(c, { ...view, q: 'sn-7' }, 1, SEARCHABLE), true);
    assert.equal(matchesView({ ...c, notes: 'smith' }, { ...view, q: 'zzz' }, 1, SEARCHABLE), false);
    assert.equal(matchesView(c, { ...view, q: 'screen' }, 1, SEARCHABLE), false, 'notes and issue are not searched');
  });

  const sorted = (cases, sort) => [...cases].sort((a, b) => compareCases(a, b, sort, ORDER)).map((c) => c.id);

  test('choices in the table order, reversed when descending', () => {
    const cases = ['closed', 'new', 'ready', 'new'].map((status, n) => makeCase({ id: n + 1, status }));
    assert.deepEqual(sorted(cases, 'status'), [2, 4, 3, 1]);
    assert.deepEqual(sorted(cases, '-status'), [1, 3, 4, 2]);
  });

  test('an empty date comes last both ways; ties go by id', () => {
    const cases = [null, '2024-01-02', '2023-05-01', null, '2024-01-02']
      .map((purchase_date, n) => makeCase({ id: n + 1, purchase_date }));
    assert.deepEqual(sorted(cases, 'purchase_date'), [3, 2, 5, 1, 4]);
    assert.deepEqual(sorted(cases, '-purchase_date'), [5, 2, 3, 4, 1]);
  });

  test('the assignee by name, former members after, unassigned last', () => {
    const cases = [7, null, 3, 99, 5, 3].map((assignee_id, n) => makeCase({ id: n + 1, assignee_id }));
    assert.deepEqual(sorted(cases, 'assignee_id'), [3, 6, 5, 1, 4, 2]);
    assert.deepEqual(sorted(cases, '-assignee_id'), [1, 5, 6, 3, 4, 2]);
  });

  test('text by code point, the case number by id', () => {
    const cases = ['b', 'B', 'a', 'b'].map((customer_name, n) => makeCase({ id: n + 1, customer_name }));
    assert.deepEqual(sorted(cases, 'customer_name'), [2, 3, 1, 4]);
    assert.deepEqual(sorted(cases, '-case_number'), [4, 3, 2, 1]);
  });
});

describe('the window', () => {
  let s;
  beforeEach(() => {
    s = setup();
  });

  test('loads a page, then the next ones, and never holds more than maxRows', () => {
    s.load(s.win.first());
    assert.equal(s.win.ids().length, 100);
    assert.equal(s.win.ids()[0], 1000);
    assert.equal(s.win.total, 1000);
    assert.equal(s.win.hasMore, true);
    assert.equal(s.win.hasAbove, false);
    s.load(s.win.next());
    s.load(s.win.next());
    assert.deepEqual([s.win.ids().length, s.win.ids()[299]], [300, 701]);
    const dropped = s.load(s.win.next());
    assert.equal(s.win.ids().length, 300);
    assert.deepEqual(dropped, Array.from({ length: 100 }, (_, n) => 1000 - n));
    assert.equal(s.win.ids()[0], 900);
    assert.equal(s.win.hasAbove, true);
  });

  test('scrolling back up loads exactly the range that was dropped', () => {
    s.load(s.win.first());
    for (let n = 0; n < 5; n += 1) s.load(s.win.next());
    assert.deepEqual([s.win.ids()[0], s.win.ids().at(-1)], [700, 401]);
    const req = s.win.previous();
    const params = new URLSearchParams(req.query);
    assert.equal(params.get('cursor'), '801');
    assert.equal(params.get('until'), '701');
    s.load(req);
    assert.deepEqual([s.win.ids()[0], s.win.ids().at(-1), s.win.ids().length], [800, 501, 300]);
    assert.equal(s.win.hasMore, true);
    s.load(s.win.previous());
    s.load(s.win.previous());
    assert.deepEqual([s.win.ids()[0], s.win.hasAbove, s.win.previous()], [1000, false, null]);
  });

  test('a range re-read after cases came and went in it comes back as it is now', () => {
    s.load(s.win.first());
    for (let n = 0; n < 3; n += 1) s.load(s.win.next());
    s.server.cases.splice(s.server.cases.findIndex((c) => c.id === 950), 1);
    s.server.cases.push(makeCase({ id: 1001 }), makeCase({ id: 1002 }));
    s.byId.set(1001, s.server.cases.at(-2));
    s.byId.set(1002, s.server.cases.at(-1));
    s.load(s.win.previous());
    const ids = s.win.ids();
    assert.deepEqual([ids[0], ids[1], ids.includes(950), ids.indexOf(901)], [1002, 1001, false, 100]);
    assert.equal(ids[101], 900, 'no gap between the range and the rows below it');
  });

  test('the sync re-reads the window exactly: from its start to its end', () => {
    s.load(s.win.first());
    for (let n = 0; n < 4; n += 1) s.load(s.win.next());
    const req = s.win.refresh();
    const params = new URLSearchParams(req.query);
    assert.deepEqual([params.get('cursor'), params.get('until'), params.get('limit')], ['801', '501', '300']);
    s.server.cases.push(makeCase({ id: 1001, status: 'new' }));
    s.load(req);
    assert.deepEqual([s.win.ids()[0], s.win.ids().at(-1), s.win.total], [800, 501, 1001]);
  });

  test('an answer for a view the user has left is ignored', () => {
    const old = s.win.first();
    s.win.setView({ ...defaultView(), statuses: ['ready'] });
    assert.equal(s.load(old), null);
    assert.deepEqual(s.win.ids(), []);
    assert.equal(s.win.loaded, false);
  });

  test('a short list has no more pages', () => {
    const small = setup({ count: 25 });
    small.load(small.win.first());
    assert.deepEqual([small.win.ids().length, small.win.hasMore, small.win.next()], [25, false, null]);
    const params = new URLSearchParams(small.win.refresh().query);
    assert.equal(params.get('until'), null, 'a case added at the end will come with the sync');
  });
});

describe('live cases entering and leaving', () => {
  let s;
  let clock;
  beforeEach(() => {
    clock = 0;
    s = setup({ count: 200, now: () => clock });
    s.load(s.win.first());
  });

  function add(json) {
    s.byId.set(json.id, json);
    return json;
  }

  test('a new case at the top goes in while the user rests there', () => {
    const json = add(makeCase({ id: 500, status: 'new' }));
    const outcome = s.win.created(json, { first: 0, last: 20 }, { atTop: true });
    assert.deepEqual([outcome.action, outcome.index], ['insert', 0]);
    assert.equal(s.win.ids()[0], 500);
    assert.equal(s.win.total, 201);
  });

  test('among the rows on screen it waits in the notice instead', () => {
    const json = add(makeCase({ id: 500, status: 'new' }));
    assert.equal(s.win.created(json, { first: 0, last: 20 }, { atTop: false }).action, 'notice');
    assert.equal(s.win.created(add(makeCase({ id: 501 })), { first: 0, last: 20 }, { atTop: true, editing: true }).action, 'notice');
    assert.deepEqual([s.win.pending, s.win.total, s.win.ids()[0]], [2, 202, 200]);
    assert.equal(s.win.takePending(), 2);
    assert.equal(s.win.pending, 0);
  });

  test('above the rows on screen it goes in (the view keeps its place)', () => {
    const json = add(makeCase({ id: 500 }));
    assert.equal(s.win.created(json, { first: 30, last: 50 }).action, 'insert');
  });

  test('one that does not match changes nothing; one beyond the loaded rows is only counted', () => {
    s.win.setView(defaultView()); // the open work
    s.load(s.win.first());
    assert.equal(s.win.created(add(makeCase({ id: 600, status: 'closed' })), null, {}).action, 'none');
    assert.equal(s.win.total, 200);
    const filtered = setup({ count: 200 });
    filtered.win.setView({ ...defaultView(), sort: 'case_number', statuses: [] });
    filtered.load(filtered.win.first());
    filtered.byId.set(700, makeCase({ id: 700 }));
    // Oldest first: a new case belongs after the last loaded row, with more to come.
    assert.equal(filtered.win.created(makeCase({ id: 700 }), null, {}).action, 'outside');
    assert.equal(filtered.win.total, 201);
  });

  test('a burst only counts after the first few', () => {
    const actions = [];
    for (let n = 0; n < BURST_INSERTS + 30; n += 1) {
      actions.push(s.win.created(add(makeCase({ id: 1000 + n })), { first: 0, last: 20 }, { atTop: true }).action);
    }
    assert.equal(actions.filter((a) => a === 'insert').length, BURST_INSERTS);
    assert.equal(s.win.pending, 30);
    clock += 5000;
    // Once the notice is up, later matches join it rather than slipping in above it.
    assert.equal(s.win.created(add(makeCase({ id: 2000 })), { first: 0, last: 20 }, { atTop: true }).action, 'notice');
  });

  test('a window of maxRows stays that long when a case comes in', () => {
    const big = setup({ count: 1000, maxRows: 300 });
    big.load(big.win.first());
    big.load(big.win.next());
    big.load(big.win.next());
    big.byId.set(5000, makeCase({ id: 5000 }));
    const outcome = big.win.created(big.byId.get(5000), { first: 0, last: 20 }, { atTop: true });
    assert.equal(outcome.action, 'insert');
    assert.equal(big.win.ids().length, 300);
    assert.equal(big.win.hasMore, true);
    assert.deepEqual(new URLSearchParams(big.win.next().query).get('cursor'), '702');
  });

  test('a case that stops matching leaves, unless the user is in it: then it leaves when they are done', () => {
    s.byId.get(150).status = 'closed';
    s.win.setView({ ...defaultView() });
    s.load(s.win.first());
    s.byId.get(180).status = 'closed';
    assert.equal(s.win.updated(180), 'leave');
    assert.equal(s.win.has(180), false);
    s.busy.add(170);
    s.byId.get(170).status = 'rejected';
    assert.equal(s.win.updated(170), 'stay');
    assert.equal(s.win.has(170), true);
    assert.equal(s.win.idle(170), false, 'still busy');
    s.busy.delete(170);
    assert.equal(s.win.idle(170), true);
    assert.equal(s.win.has(170), false);
    // Back in the view before the user is done: it simply stays.
    s.busy.add(160);
    s.byId.get(160).status = 'closed';
    s.win.updated(160);
    s.byId.get(160).status = 'ready';
    s.win.updated(160);
    s.busy.delete(160);
    assert.equal(s.win.idle(160), false);
    assert.equal(s.win.has(160), true);
  });

  test('a reload keeps the row the user is in, even when the server no longer lists it', () => {
    s.win.setView({ ...defaultView() });
    s.load(s.win.first());
    const before = s.win.ids().indexOf(195);
    assert.ok(before > 0);
    s.busy.add(195);
    s.server.cases.find((c) => c.id === 195).status = 'closed';
    s.load(s.win.refresh());
    assert.equal(s.win.ids().indexOf(195), before);
    s.busy.delete(195);
    assert.equal(s.win.idle(195), true);
  });

  test('which changes outside the window might concern it', () => {
    assert.equal(s.win.concerns(['notes']), false);
    s.win.setView(defaultView());
    assert.equal(s.win.concerns(['status']), true);
    assert.equal(s.win.concerns(['customer_name']), false);
    s.win.setView({ ...defaultView(), q: 'x', sort: 'priority' });
    assert.equal(s.win.concerns(['customer_name']), true);
    assert.equal(s.win.concerns(['priority']), true);
    assert.equal(s.win.concerns(['issue']), false);
  });
});
