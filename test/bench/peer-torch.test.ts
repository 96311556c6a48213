// bench/peer-torch.ts: the PyTorch peer's rows (bench/peer-torch/gmail_step.py) set beside
// genalign's train-step rows by kernel/variant/shape/dtype, and bad files refused by name.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mergeTorchRows, readTorchRows, type TorchRows } from '../../bench/peer-torch.ts';
import type { Report, Row } from '../../bench/harness.ts';

const dir = mkdtempSync(join(tmpdir(), 'genalign-peer-torch-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

function row(shape: string, dtype: string, ms: number, peer: string | null = null): Row {
  return { kernel: 'train-step', variant: 'teacher cache', shape, dtype, ms, max_abs_err: 0, reference: '', peer, peer_ms: peer ? 1 : null, ratio: peer ? 1 / ms : null, wall_ms: ms, extra: { images_per_s: 64000 / ms, peak_bytes: 3e9 } };
}

function report(rows: Row[]): Report {
  return { adapter: { name: 'x', vendor: 'v', backend: 'vulkan' }, date: '', command: '', timing: { ours: 'wall', peer: null, reps: 1, warmup: 0 }, host: { cpus: 1, loadavg_start: 0, loadavg_end: 0 }, results: rows };
}

const shape = 'vit-b-32 B=64 [64,3,224,224] P=512';

test('a torch row is set beside the genalign row of the same key, with ratio and memory', () => {
  const rep = report([row(shape, 'f32', 200), row(shape, 'f16', 100)]);
  const torch: TorchRows = {
    rows: [
      { kernel: 'train-step', variant: 'teacher cache', shape, dtype: 'f32', peer: 'torch-2.5 fp32', peer_ms: 160, extra: { peer_images_per_s: 400, peer_peak_bytes: 2e9 } },
      { kernel: 'train-step', variant: 'teacher cache', shape, dtype: 'f16', peer: 'torch-2.5 bf16-autocast', peer_ms: 50, extra: { peer_images_per_s: 1280, peer_peak_bytes: 4e9 } },
      { kernel: 'train-step', variant: 'teacher cache', shape: 'vit-b-32 B=128 [128,3,224,224] P=512', dtype: 'f32', peer: 'torch-2.5 fp32', peer_ms: 300 },
    ],
  };
  const unmatched = mergeTorchRows(rep, torch);
  assert.is(rep.results.length, 2, 'no rows added: both had no peer');
  const [f32, f16] = rep.results;
  assert.is(f32.peer, 'torch-2.5 fp32');
  assert.is(f32.peer_ms, 160);
  assert.ok(Math.abs(f32.ratio! - 0.8) < 1e-12, `ratio = peer_ms / ms, got ${f32.ratio}`);
  assert.ok(Math.abs(f32.extra!.peak_over_peer - 1.5) < 1e-12);
  assert.is(f32.extra!.peer_images_per_s, 400);
  assert.is(f16.peer, 'torch-2.5 bf16-autocast', 'f16 compared with bf16 autocast');
  assert.ok(Math.abs(f16.ratio! - 0.5) < 1e-12);
  assert.ok(Math.abs(f16.extra!.peak_over_peer - 0.75) < 1e-12);
  assert.is(unmatched.length, 1, 'the micro-batch 128 row has no genalign counterpart');
  assert.equal(rep.torch_unmatched, unmatched, 'and is kept in the report');
});

test('a genalign row that already has a peer keeps it; the torch comparison is a second row', () => {
  const rep = report([row(shape, 'f32', 200, 'tfjs')]);
  mergeTorchRows(rep, { rows: [{ kernel: 'train-step', variant: 'teacher cache', shape, dtype: 'f32', peer: 'torch-2.5 fp32', peer_ms: 100 }] });
  assert.is(rep.results.length, 2);
  assert.is(rep.results[0].peer, 'tfjs');
  assert.is(rep.results[1].peer, 'torch-2.5 fp32');
  assert.ok(Math.abs(rep.results[1].ratio! - 0.5) < 1e-12);
});

test('readTorchRows reads the script output and refuses bad files by name', () => {
  const good = join(dir, 'good.json');
  writeFileSync(good, JSON.stringify({ rows: [{ kernel: 'train-step', variant: 'teacher cache', shape, dtype: 'f32', peer: 'torch fp32', peer_ms: 12.5 }], failures: [] }));
  assert.is(readTorchRows(good).rows[0].peer_ms, 12.5);
  const missing = join(dir, 'missing.json');
  assert.throws(() => readTorchRows(missing), (e: Error) => e.message.includes(missing) && e.message.includes('gmail_step.py'));
  const bad = join(dir, 'bad.json');
  writeFileSync(bad, JSON.stringify({ rows: [{ kernel: 'train-step', peer_ms: -1 }] }));
  assert.throws(() => readTorchRows(bad), (e: Error) => e.message.includes(bad) && e.message.includes('rows[0]'));
  const notRows = join(dir, 'list.json');
  writeFileSync(notRows, '[]');
  assert.throws(() => readTorchRows(notRows), (e: Error) => e.message.includes(notRows) && e.message.includes('"rows"'));
});

test.run();
