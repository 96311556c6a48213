// `npm run autotune` end to end: one step's matmul shapes (forward and backward) are tuned among
// the requested variants and the winners land in the autotune cache under this adapter's key.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { FIXTURE_DIR } from '../helpers/fixtures.ts';
import { tmp, runCli } from './helpers.ts';

const root = tmp('cli-autotune');
const MODEL = join(FIXTURE_DIR, 'clip-tiny');
test.after(() => rmSync(root, { recursive: true, force: true }));

const CHOICES = ['direct_r4_w64', 'direct_r16_w64'];

test('autotune: every forward and backward shape class of a step gets a winner among --variants, stored in the cache', async () => {
  const cache = join(root, 'cache');
  const r = await runCli('autotune', ['--model', MODEL, '--batch', '2', '--reps', '1', '--variants', CHOICES.join(',')], { GENALIGN_CACHE_DIR: cache });
  assert.is(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.match(lines[0], /^shape class\s+before\s+GFLOP\/s\s+winner\s+GFLOP\/s\s+speedup$/);
  const rows = lines.slice(1).map((l) => l.split(/\s+/));
  const classes = rows.map((c) => c[0]);
  // Forward products are NT (x·Wᵀ), the input gradients NN (dz·W): both must have been seen.
  assert.ok(classes.some((c) => c.startsWith('f32:NT:')), `a forward class in ${classes.join(', ')}`);
  assert.ok(classes.some((c) => c.startsWith('f32:NN:')), `a backward class in ${classes.join(', ')}`);
  for (const row of rows) assert.ok(CHOICES.includes(row[3]), `winner ${row[3]} of ${row[0]} is one of --variants`);
  const file = join(cache, 'autotune.json');
  assert.ok(existsSync(file), 'cache written');
  const json = JSON.parse(readFileSync(file, 'utf8')) as Record<string, Record<string, { variant: string; gflops: number }>>;
  const keys = Object.keys(json);
  assert.is(keys.length, 1, 'one adapter key');
  assert.ok(r.stderr.includes(`under '${keys[0]}'`), `stderr names the adapter key '${keys[0]}'`);
  for (const row of rows) {
    assert.is(json[keys[0]][row[0]]?.variant, row[3], `cached winner of ${row[0]}`);
    assert.ok(json[keys[0]][row[0]].gflops > 0);
  }
});

test('autotune: an unknown --variants name exits 2 and lists the candidates', async () => {
  const r = await runCli('autotune', ['--model', 'tiny', '--variants', 'direct_r4_w64,nope'], { GENALIGN_CACHE_DIR: join(root, 'c2') });
  assert.is(r.code, 2, r.stderr);
  assert.match(r.stderr, /--variants has 'nope', which is not a candidate on .*\(candidates: .*direct_r4_w64/);
  assert.not.ok(existsSync(join(root, 'c2', 'autotune.json')), 'nothing written');
});

test.run();
