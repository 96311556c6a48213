// Smoke test of `npm run bench`: runs the bench in --quick mode (tiny shapes, no peer) in this
// process and checks the JSON report's structure and that every kernel's output is close to its
// reference. Asserts no times beyond their plausibility (GPU time fits inside the wall time).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { main } from '../../bench/run.ts';
import { formatTable, matchesFilter, median, type BenchCase, type Report } from '../../bench/harness.ts';

const ROW_KEYS = ['kernel', 'variant', 'shape', 'dtype', 'ms', 'max_abs_err', 'peer', 'peer_ms', 'ratio'];

const outDir = mkdtempSync(join(tmpdir(), 'genalign-bench-'));
const quiet = (): void => {};

test.after(() => {
  rmSync(outDir, { recursive: true, force: true });
});

test('quick bench writes a well-formed report with accurate kernels', async () => {
  const { path, report } = await main(['--quick', '--no-peer', '--reps', '2', '--out', outDir], quiet);
  assert.ok(existsSync(path), `report written to ${path}`);
  assert.match(basename(path), /^\d{4}-\d{2}-\d{2}-[a-z0-9-]+\.json$/);
  const json = JSON.parse(readFileSync(path, 'utf8')) as Report;
  assert.equal(json, report, 'file holds the returned report');

  for (const k of ['name', 'vendor', 'backend'] as const) assert.type(json.adapter[k], 'string', `adapter.${k}`);
  assert.ok(json.adapter.name.length > 0, 'adapter name is set');
  assert.ok(!Number.isNaN(Date.parse(json.date)), `date '${json.date}' parses`);
  assert.ok(['gpu-timestamp', 'wall'].includes(json.timing.ours), `timing method ${json.timing.ours}`);
  assert.equal(json.failures, undefined, `no case failed: ${JSON.stringify(json.failures)}`);

  const kernels = new Set(json.results.map((r) => r.kernel));
  assert.ok(kernels.has('add') && kernels.has('matmul'), `both suites ran (got ${[...kernels]})`);
  const layouts = new Set(json.results.filter((r) => r.kernel === 'matmul').map((r) => r.shape.split(' ')[1]));
  assert.equal([...layouts].sort(), ['NN', 'NT', 'TN'], 'matmul covers the forward and both backward layouts');
  assert.ok(json.results.filter((r) => r.kernel === 'matmul').some((r) => !r.variant.startsWith('auto')), 'forced variants are listed');

  for (const r of json.results) {
    const what = `${r.kernel} ${r.variant} ${r.shape} ${r.dtype}`;
    for (const k of ROW_KEYS) assert.ok(k in r, `${what}: has '${k}'`);
    assert.ok((r.gflops === undefined) !== (r.gbps === undefined), `${what}: exactly one of gflops / gbps`);
    const rate = r.gflops ?? r.gbps ?? 0;
    assert.ok(r.ms > 0 && Number.isFinite(r.ms), `${what}: ms = ${r.ms}`);
    assert.ok(rate > 0 && Number.isFinite(rate), `${what}: rate = ${rate}`);
    // The timed span lies inside the wall-clock span around it (timestamps in ms, not ns/µs).
    assert.ok(r.ms <= r.wall_ms * 1.1 + 0.1, `${what}: GPU time ${r.ms} ms exceeds the wall time ${r.wall_ms} ms`);
    assert.is(r.peer, null);
    assert.is(r.peer_ms, null);
    assert.is(r.ratio, null);
    assert.type(r.reference, 'string');
    assert.type(r.max_abs_err, 'number', `${what}: max_abs_err measured`);
    // f32 at K <= 100 with O(1) inputs: a few ulps of O(10) values. f16 rows are stored in f16,
    // whose half-ulp at |y| ~ 8..16 is 4e-3.
    const tol = r.dtype === 'f16' ? 2e-2 : 1e-4;
    assert.ok(r.max_abs_err! <= tol, `${what}: max_abs_err ${r.max_abs_err} > ${tol}`);
  }
});

test('--filter keeps only matching cases', async () => {
  const { report } = await main(['--quick', '--no-peer', '--reps', '1', '--filter', 'bias', '--out', outDir], quiet);
  assert.ok(report.results.length > 0, 'something matched');
  for (const r of report.results) assert.is(r.kernel, 'add');
});

test('harness helpers: median, filter, table', () => {
  assert.is(median([5, 1, 3]), 3);
  assert.is(median([4, 1, 3, 2]), 2.5);
  const c = { kernel: 'matmul', variant: 'tiled_64', shape: 'fc1.fwd NT 1600x768x3072', dtype: 'f16' } as BenchCase;
  assert.ok(matchesFilter(c, 'fc1'));
  assert.ok(matchesFilter(c, 'MATMUL'));
  assert.ok(matchesFilter(c, 'f16'));
  assert.not.ok(matchesFilter(c, 'fc2'));
  const table = formatTable([
    { kernel: 'add', variant: 'v', shape: 's', dtype: 'f32', ms: 1.5, gbps: 2, max_abs_err: 0, reference: 'r', peer: null, peer_ms: null, ratio: null, wall_ms: 2 },
  ]);
  assert.match(table, /\| add +\| v +\| s +\| f32 +\| 1\.500 \|/);
});

test.run();
