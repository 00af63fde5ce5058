import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { HEADER, fittingColumns, keyAction, moveTarget, stepTarget } from '../../src/warrantysync/web/static/js/grid.js';

const rows = [HEADER, 11, 12, 13, 14, 15];
const cols = ['case_number', 'customer_name', 'status', 'notes'];
const grid = { rows, cols, pageRows: 2 };
const at = (row, col) => ({ row, col });

describe('moveTarget', () => {
  test('arrows move one cell and stop at the edges', () => {
    assert.deepEqual(moveTarget(at(12, 'status'), 'ArrowDown', grid), at(13, 'status'));
    assert.deepEqual(moveTarget(at(12, 'status'), 'ArrowRight', grid), at(12, 'notes'));
    assert.deepEqual(moveTarget(at(12, 'notes'), 'ArrowRight', grid), at(12, 'notes'));
    assert.deepEqual(moveTarget(at(15, 'notes'), 'ArrowDown', grid), at(15, 'notes'));
    assert.deepEqual(moveTarget(at(12, 'case_number'), 'ArrowLeft', grid), at(12, 'case_number'));
  });

  test('up from the first row reaches the header, and no further', () => {
    assert.deepEqual(moveTarget(at(11, 'status'), 'ArrowUp', grid), at(HEADER, 'status'));
    assert.deepEqual(moveTarget(at(HEADER, 'status'), 'ArrowUp', grid), at(HEADER, 'status'));
    assert.deepEqual(moveTarget(at(HEADER, 'status'), 'ArrowDown', grid), at(11, 'status'));
  });

  test('Home and End go along the row; with Ctrl to the corners of the body', () => {
    assert.deepEqual(moveTarget(at(13, 'status'), 'Home', grid), at(13, 'case_number'));
    assert.deepEqual(moveTarget(at(13, 'status'), 'End', grid), at(13, 'notes'));
    assert.deepEqual(moveTarget(at(13, 'status'), 'Home', { ...grid, ctrl: true }), at(11, 'case_number'));
    assert.deepEqual(moveTarget(at(13, 'status'), 'End', { ...grid, ctrl: true }), at(15, 'notes'));
  });

  test('PageUp and PageDown move a page of rows and never land on the header', () => {
    assert.deepEqual(moveTarget(at(11, 'status'), 'PageDown', grid), at(13, 'status'));
    assert.deepEqual(moveTarget(at(14, 'status'), 'PageDown', grid), at(15, 'status'));
    assert.deepEqual(moveTarget(at(14, 'status'), 'PageUp', grid), at(12, 'status'));
    assert.deepEqual(moveTarget(at(12, 'status'), 'PageUp', grid), at(11, 'status'));
  });

  test('a row or column no longer shown starts from the first body cell', () => {
    assert.deepEqual(moveTarget(at(99, 'gone'), 'ArrowRight', grid), at(11, 'customer_name'));
  });

  test('other keys are no move', () => {
    assert.equal(moveTarget(at(11, 'status'), 'Enter', grid), null);
    assert.equal(moveTarget(at(11, 'status'), 'ArrowDown', { rows: [], cols }), null);
  });

  test('stepTarget moves for Enter and Tab but never onto the header', () => {
    assert.deepEqual(stepTarget(at(11, 'status'), 'down', grid), at(12, 'status'));
    assert.deepEqual(stepTarget(at(11, 'status'), 'up', grid), at(11, 'status'));
    assert.deepEqual(stepTarget(at(11, 'status'), 'right', grid), at(11, 'notes'));
    assert.deepEqual(stepTarget(at(11, 'status'), null, grid), at(11, 'status'));
  });
});

const key = (k, mods = {}) => ({ key: k, shiftKey: false, ctrlKey: false, metaKey: false, altKey: false, ...mods });

describe('keyAction while moving (the cell has the focus)', () => {
  const nav = (kind) => ({ editing: false, kind });

  test('arrows, Home, End and the page keys move', () => {
    for (const k of ['ArrowUp', 'ArrowDown', 'ArrowLeft', 'ArrowRight', 'Home', 'End', 'PageUp', 'PageDown']) {
      assert.deepEqual(keyAction(key(k), nav('text')), { type: 'move' }, k);
    }
  });

  test('Enter and F2 start editing and keep the value; a character replaces it', () => {
    assert.deepEqual(keyAction(key('Enter'), nav('text')), { type: 'edit' });
    assert.deepEqual(keyAction(key('F2'), nav('multiline')), { type: 'edit' });
    assert.deepEqual(keyAction(key('x'), nav('text')), { type: 'edit', text: 'x' });
    assert.deepEqual(keyAction(key('X', { shiftKey: true }), nav('multiline')), { type: 'edit', text: 'X' });
    assert.deepEqual(keyAction(key('Delete'), nav('text')), { type: 'edit', text: '' });
  });

  test('a dropdown or date opens for editing without taking the character', () => {
    assert.deepEqual(keyAction(key('a'), nav('select')), { type: 'edit' });
    assert.deepEqual(keyAction(key(' '), nav('select')), { type: 'edit' });
    assert.deepEqual(keyAction(key('ArrowDown', { altKey: true }), nav('date')), { type: 'move' });
    assert.equal(keyAction(key('Delete'), nav('select')), null);
  });

  test('Tab, shortcuts with Ctrl and the search key are left to the page', () => {
    assert.equal(keyAction(key('Tab'), nav('text')), null);
    assert.equal(keyAction(key('c', { ctrlKey: true }), nav('text')), null);
    assert.equal(keyAction(key('/'), nav('text')), null);
    assert.deepEqual(keyAction(key('?', { shiftKey: true }), nav('text')), { type: 'help' });
  });

  test('a cell without a control (case number, header) is activated by Enter or Space', () => {
    assert.deepEqual(keyAction(key('Enter'), nav(null)), { type: 'activate' });
    assert.deepEqual(keyAction(key(' '), nav(null)), { type: 'activate' });
    assert.equal(keyAction(key('x'), nav(null)), null);
    assert.deepEqual(keyAction(key('ArrowLeft'), nav(null)), { type: 'move' });
  });

  test('in the panel nothing moves: its fields are a form', () => {
    assert.equal(keyAction(key('ArrowDown'), { editing: false, kind: 'text', panel: true }), null);
  });
});

describe('keyAction while editing (the control has the focus)', () => {
  const edit = (kind, panel = false) => ({ editing: true, kind, panel });

  test('Escape cancels', () => {
    assert.deepEqual(keyAction(key('Escape'), edit('text')), { type: 'cancel' });
    assert.deepEqual(keyAction(key('Escape'), edit('select', true)), { type: 'cancel' });
  });

  test('Enter commits and moves down, Shift+Enter up; Tab right, Shift+Tab left', () => {
    assert.deepEqual(keyAction(key('Enter'), edit('text')), { type: 'commit', move: 'down' });
    assert.deepEqual(keyAction(key('Enter', { shiftKey: true }), edit('select')), { type: 'commit', move: 'up' });
    assert.deepEqual(keyAction(key('Tab'), edit('date')), { type: 'commit', move: 'right' });
    assert.deepEqual(keyAction(key('Tab', { shiftKey: true }), edit('text')), { type: 'commit', move: 'left' });
  });

  test('arrows belong to the control', () => {
    assert.equal(keyAction(key('ArrowDown'), edit('select')), null);
    assert.equal(keyAction(key('ArrowLeft'), edit('text')), null);
  });

  test('a table text box takes a new line with Shift+Enter or Alt+Enter', () => {
    assert.equal(keyAction(key('Enter', { shiftKey: true }), edit('multiline')), null);
    assert.equal(keyAction(key('Enter', { altKey: true }), edit('multiline')), null);
    assert.deepEqual(keyAction(key('Enter'), edit('multiline')), { type: 'commit', move: 'down' });
  });

  test('in the panel Enter is a new line in a text box, Ctrl+Enter commits; Tab is the browser\'s', () => {
    assert.equal(keyAction(key('Enter'), edit('multiline', true)), null);
    assert.deepEqual(keyAction(key('Enter', { ctrlKey: true }), edit('multiline', true)), { type: 'commit', move: null });
    assert.deepEqual(keyAction(key('Enter'), edit('text', true)), { type: 'commit', move: null });
    assert.equal(keyAction(key('Tab'), edit('text', true)), null);
  });
});

describe('fittingColumns', () => {
  const widths = [
    { field: 'case_number', width: 100 }, { field: 'customer_name', width: 160 },
    { field: 'status', width: 130 }, { field: 'notes', width: 200 },
  ];

  test('the longest prefix that fits', () => {
    assert.deepEqual(fittingColumns(widths, 400), ['case_number', 'customer_name', 'status']);
    assert.deepEqual(fittingColumns(widths, 590), ['case_number', 'customer_name', 'status', 'notes']);
    assert.deepEqual(fittingColumns(widths, 389), ['case_number', 'customer_name']);
  });

  test('the first column shows however narrow the window', () => {
    assert.deepEqual(fittingColumns(widths, 10), ['case_number']);
  });
});
