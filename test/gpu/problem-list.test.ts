// The bounded lists every problem message uses: at most `limit` items, then "... and K more".
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { inlineListWithRest, listWithRest, LIST_LIMIT } from '../../src/gpu/problem-list.ts';

const items = (n: number): string[] => Array.from({ length: n }, (_, i) => `item${i}`);

test('listWithRest: every item when there are at most `limit`; else the first `limit` and how many more', () => {
  assert.is(listWithRest([]), '');
  assert.is(listWithRest(items(3)), 'item0\n  item1\n  item2');
  assert.is(listWithRest(items(LIST_LIMIT)).split('\n').length, LIST_LIMIT);
  const long = listWithRest(items(100_000), 20, '- ').split('\n  ');
  assert.is(long.length, 21);
  assert.is(long[0], '- item0');
  assert.is(long[19], '- item19');
  assert.is(long[20], '... and 99980 more');
  assert.is(listWithRest(items(6), 5), 'item0\n  item1\n  item2\n  item3\n  item4\n  ... and 1 more');
});

test('inlineListWithRest: comma-separated, capped the same way', () => {
  assert.is(inlineListWithRest(items(2)), 'item0, item1');
  assert.is(inlineListWithRest(items(7), 5), 'item0, item1, item2, item3, item4, ... and 2 more');
});

test.run();
