// The training loop called directly (tiny model, 24 pairs at 32×32): gradient accumulation,
// the teacher cache, metrics.jsonl / config.json / eval metrics.json, and fault handling.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mkdtempSync } from 'node:fs';
import { getDevice } from '../../src/gpu/device.ts';
import { BufferTooLargeError } from '../../src/gpu/pool.ts';
import { OutOfMemoryError } from '../../src/gpu/encoder.ts';
import { ClipVisionModel } from '../../src/nn/vit.ts';
import type { ForwardOptions } from '../../src/nn/vit.ts';
import type { Tensor } from '../../src/tensor/tensor.ts';
import { ensureDemoDataset } from '../../src/io/demo-data.ts';
import { train, oomHelp, checkBatchFits, type TrainHooks, type TrainOptions, type TrainResult } from '../../src/train/trainer.ts';
import { runTrain } from '../../src/cli/train-command.ts';
import { ATTENTION_TARGETS } from '../../src/nn/lora.ts';
import { assertClose } from '../helpers/fixtures.ts';
import { testF16 } from '../helpers/f16.ts';
import { trainOptions } from '../helpers/train-options.ts';

const root = mkdtempSync(join(tmpdir(), 'genalign-trainer-'));
const data = join(root, 'data');
test.before(async () => {
  await ensureDemoDataset(data, { count: 24, size: 32, variants: 1 });
});
test.after(() => rmSync(root, { recursive: true, force: true }));

let runs = 0;
function options(over: Partial<TrainOptions> = {}): TrainOptions {
  return trainOptions({ data, out: join(root, `run${runs++}`), cacheDir: join(root, 'cache'), ...over });
}

interface Run {
  result: TrainResult;
  logs: string[];
  metrics: Record<string, number>[];
  adapter: Map<string, Float32Array>;
}

/** Trains, reads back the adapter and metrics, and frees the GPU state. */
async function run(over: Partial<TrainOptions> = {}): Promise<Run> {
  const device = await getDevice();
  const logs: string[] = [];
  const o = options(over);
  const result = await train(device, o, { log: (l) => logs.push(l) });
  const adapter = new Map<string, Float32Array>();
  for (const [path, p] of result.lora!.pairs) {
    adapter.set(`${path}.A`, await p.a.read());
    adapter.set(`${path}.B`, await p.b.read());
  }
  result.lora!.dispose();
  result.projection?.dispose();
  result.model.model.dispose();
  const metrics = readFileSync(join(result.runDir, 'metrics.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, number>);
  return { result, logs, metrics, adapter };
}

async function failure(over: Partial<TrainOptions>, hooks: TrainHooks = {}): Promise<{ message: string; logs: string[] }> {
  const device = await getDevice();
  const logs: string[] = [];
  try {
    const r = await train(device, options(over), { ...hooks, log: (l) => logs.push(l) });
    r.lora!.dispose();
    r.model.model.dispose();
  } catch (e) {
    return { message: (e as Error).message, logs };
  }
  throw new Error(`expected train(${JSON.stringify(over)}) to fail`);
}

/** failure() with the loss of step `step` replaced by NaN (the trainer's transformLoss hook). */
async function failureWithNanAt(step: number, over: Partial<TrainOptions>): Promise<{ message: string; logs: string[] }> {
  return failure(over, { transformLoss: (s, loss) => (s === step ? Number.NaN : loss) });
}

/** Counts forward passes without a LoRA adapter (= teacher forwards) while `fn` runs. */
async function countTeacherForwards<T>(fn: () => Promise<T>): Promise<{ value: T; teacher: number; student: number }> {
  const original = ClipVisionModel.prototype.forward;
  let teacher = 0;
  let student = 0;
  ClipVisionModel.prototype.forward = function (this: ClipVisionModel, pixels: Tensor, opts: ForwardOptions = {}): Tensor {
    if (opts.lora) student++;
    else teacher++;
    return original.call(this, pixels, opts);
  };
  try {
    return { value: await fn(), teacher, student };
  } finally {
    ClipVisionModel.prototype.forward = original;
  }
}

function maxRelDiff(a: number[], b: number[]): number {
  return Math.max(...a.map((x, i) => Math.abs(x - b[i]) / Math.abs(b[i])));
}

// ---------------------------------------------------------------------------------------------

test('gradient accumulation: batch 4 × accum 2 equals batch 8 × accum 1 (losses, grad norms, adapter)', async () => {
  // eps 0.1 makes the Adam update depend on the gradient's size, not only its sign, so a
  // mis-scaled accumulated gradient shows up in the adapter (the grad norm checks it directly).
  const common = { steps: 2, eps: 0.1, cacheDir: join(root, 'cache-accum') };
  const full = await run({ ...common, batch: 8, accum: 1 });
  const acc = await run({ ...common, batch: 4, accum: 2 });
  assert.is(full.metrics.length, 2);
  assert.is(acc.metrics.length, 2);
  const key = (r: Run, k: string): number[] => r.metrics.map((m) => m[k]);
  assert.ok(maxRelDiff(key(acc, 'loss'), key(full, 'loss')) <= 1e-5, `loss ${key(acc, 'loss')} vs ${key(full, 'loss')}`);
  assert.ok(maxRelDiff(key(acc, 'grad_norm'), key(full, 'grad_norm')) <= 1e-5, `grad norm ${key(acc, 'grad_norm')} vs ${key(full, 'grad_norm')}`);
  assert.equal(key(acc, 'accuracy'), key(full, 'accuracy'));
  for (const [k, v] of full.adapter) assertClose(acc.adapter.get(k)!, v, { rtol: 1e-5, atol: 1e-7 }, `adapter ${k}`);
  // The update moved B off zero (else the comparison would be trivial).
  assert.ok([...full.adapter].some(([k, v]) => k.endsWith('.B') && v.some((x) => Math.abs(x) > 1e-4)));
});

test('teacher cache: the second run embeds no real image again; --no-teacher-cache gives the same step-1 loss', async () => {
  const cacheDir = join(root, 'cache-reuse');
  const first = await countTeacherForwards(() => run({ steps: 1, cacheDir }));
  assert.ok(first.value.logs.some((l) => /teacher cache: embedding 24 real images in 1 block\(s\) \(0 already cached\)/.test(l)), first.value.logs.join('\n'));
  assert.ok(first.teacher > 0, 'first run runs the teacher to fill the cache');
  const chunkDir = readdirSync(cacheDir).find((f) => /^teacher-[0-9a-f]+$/.test(f));
  assert.ok(chunkDir && readdirSync(join(cacheDir, chunkDir)).some((f) => /^chunk-[0-9a-f]+\.safetensors$/.test(f)), 'a chunk file in teacher-<key>/');

  const second = await countTeacherForwards(() => run({ steps: 1, cacheDir }));
  assert.ok(second.value.logs.some((l) => /teacher cache: all 24 real images cached/.test(l)), second.value.logs.join('\n'));
  assert.is(second.teacher, 0, 'no teacher forward when everything is cached');
  assert.is(second.student, 1);
  assert.is(second.value.metrics[0].loss, first.value.metrics[0].loss);

  const none = await countTeacherForwards(() => run({ steps: 1, teacherCache: false, cacheDir: join(root, 'cache-unused') }));
  assert.not.ok(existsSync(join(root, 'cache-unused')), '--no-teacher-cache writes no cache');
  assert.is(none.teacher, 1, 'the teacher runs on the step batch');
  assert.not.ok(none.value.logs.some((l) => l.includes('teacher cache')));
  const l0 = first.value.metrics[0].loss;
  const l1 = none.value.metrics[0].loss;
  assert.ok(Math.abs(l1 - l0) <= 1e-5 * Math.abs(l0), `step-1 loss ${l1} (no cache) vs ${l0} (cached)`);
});

test('metrics.jsonl: one line per step with the StepRecord keys; config.json holds the resolved options', async () => {
  const r = await run({ steps: 3, saveEvery: 2 });
  assert.equal(r.metrics.map((m) => m.step), [1, 2, 3]);
  for (const m of r.metrics) {
    assert.equal(Object.keys(m).sort(), ['accuracy', 'elapsed_s', 'epoch', 'grad_norm', 'images_per_s', 'loss', 'lr', 'step'].sort());
    for (const v of Object.values(m)) assert.ok(Number.isFinite(v));
    assert.ok(m.loss > 0 && m.accuracy >= 0 && m.accuracy <= 1 && m.grad_norm > 0);
  }
  assert.is(r.metrics[0].lr, 1e-2, 'no warmup: step 1 at the peak lr');
  assert.ok(r.metrics[2].lr < r.metrics[1].lr, 'cosine decay');
  const cfg = JSON.parse(readFileSync(join(r.result.runDir, 'config.json'), 'utf8')) as Record<string, unknown>;
  assert.is(cfg.data, data);
  // Where the run and the cache live is per invocation: never read back from config.json.
  assert.not.ok('out' in cfg || 'cacheDir' in cfg || 'resume' in cfg, Object.keys(cfg).join(', '));
  assert.is(cfg.model, 'tiny');
  assert.is(cfg.batch, 8);
  assert.is(cfg.steps, 3);
  assert.equal(cfg.targets, [...ATTENTION_TARGETS]);
  assert.match(String(cfg.configHash), /^[0-9a-f]{16}$/);
  assert.is((cfg.modelConfig as { hiddenSize: number }).hiddenSize, 64);
  assert.equal(readdirSync(join(r.result.runDir, 'checkpoints')).sort(), ['latest', 'step-000002', 'step-000003']);
});

test('--cosine-weight: metrics.jsonl records loss_infonce and loss_cosine (loss = loss_infonce + λ loss_cosine, over 2 micro-batches); step 1\'s InfoNCE is the λ = 0 loss', async () => {
  const common = { batch: 4, accum: 2, cacheDir: join(root, 'cache-cosine') };
  const plain = await run({ ...common, steps: 1 });
  assert.not.ok('loss_infonce' in plain.metrics[0] || 'loss_cosine' in plain.metrics[0], 'λ = 0 logs the loss alone');
  const r = await run({ ...common, steps: 2, cosineWeight: 0.5 });
  assert.is(r.metrics.length, 2);
  for (const m of r.metrics) {
    assert.ok(m.loss_cosine > 0 && m.loss_cosine < 2, `loss_cosine ${m.loss_cosine} is a mean of 1 − cos`);
    assert.ok(Math.abs(m.loss_infonce + 0.5 * m.loss_cosine - m.loss) <= 1e-6 * m.loss, `${m.loss_infonce} + 0.5 × ${m.loss_cosine} vs ${m.loss}`);
  }
  // Step 1 sees the same weights and batch as the λ = 0 run: only the added term differs.
  assertClose([r.metrics[0].loss_infonce], [plain.metrics[0].loss], { rtol: 1e-6, atol: 0 }, 'step-1 InfoNCE term');
  const cfg = JSON.parse(readFileSync(join(r.result.runDir, 'config.json'), 'utf8')) as Record<string, unknown>;
  assert.is(cfg.cosineWeight, 0.5);
});

test('runTrain with eval: metrics.json has exactly the documented keys; figure3 written', async () => {
  const out = join(root, 'run-eval');
  const code = await runTrain(['--data', data, '--model', 'tiny', '--steps', '2', '--batch', '8', '--val-fraction', '0.25', '--plot', 'pca', '--cache-dir', join(root, 'cache'), '--out', out]);
  assert.is(code, 0);
  const m = JSON.parse(readFileSync(join(out, 'metrics.json'), 'utf8')) as Record<string, number>;
  assert.equal(Object.keys(m).sort(), ['gap_after', 'gap_before', 'n_val', 'paired_cosine_after', 'paired_cosine_before', 'r1_after', 'r1_before', 'r5_after', 'r5_before'].sort());
  assert.ok(m.n_val >= 2 && m.n_val < 24 && Number.isInteger(m.n_val));
  for (const k of ['r1_before', 'r1_after', 'r5_before', 'r5_after']) assert.ok(m[k] >= 0 && m[k] <= 1, k);
  assert.ok(m.r5_after >= m.r1_after);
  assert.ok(existsSync(join(out, 'figure3.svg')) && existsSync(join(out, 'figure3.png')));
});

// --- fault handling -----------------------------------------------------------------------------

/** A copy of the dataset with some generated images replaced by garbage or truncated. */
function damagedCopy(name: string, bad: number): { dir: string; files: string[] } {
  const dir = join(root, name);
  cpSync(data, dir, { recursive: true });
  const gen = readdirSync(join(dir, 'generated')).sort();
  const files: string[] = [];
  for (let i = 0; i < bad; i++) {
    const p = join(dir, 'generated', gen[i]);
    if (i % 2 === 0) writeFileSync(p, readFileSync(p).subarray(0, 40)); // truncated JPEG
    else writeFileSync(p, Buffer.from('definitely not an image'));
    files.push(p);
  }
  return { dir, files };
}

test('a corrupt and a truncated image in the data are skipped with warnings naming them, and counted', async () => {
  const { dir, files } = damagedCopy('data-2bad', 2);
  // 2 bad of 48 files is 4.2%, under the default 5%. Two epochs of batch 8 visit every pair.
  const r = await run({ data: dir, steps: 6, batch: 8 });
  assert.is(r.metrics.length, 6);
  for (const f of files) assert.ok(r.logs.some((l) => l.startsWith('warning: skipping pair') && l.includes(f)), `a warning names ${f}:\n${r.logs.join('\n')}`);
  assert.ok(r.logs.some((l) => /skipped 2 unreadable image file\(s\)/.test(l)), r.logs.join('\n'));
  for (const m of r.metrics) assert.ok(Number.isFinite(m.loss));
});

test('too many unreadable images: the run aborts with a clear message', async () => {
  const { dir } = damagedCopy('data-5bad', 5);
  const f = await failure({ data: dir, steps: 6 });
  assert.match(f.message, /too many unreadable images: \d+ of \d+ decoded files failed \(more than 5\.0% allowed\)/);
  assert.match(f.message, /cannot decode image/);
});

test('missing, empty and manifest-broken data directories fail before any GPU work', async () => {
  assert.match((await failure({ data: join(root, 'nope') })).message, /data directory .*nope does not exist/);
  mkdirSync(join(root, 'empty'));
  assert.match((await failure({ data: join(root, 'empty') })).message, /data directory .*empty is empty: expected pairs\.jsonl/);
  const bad = join(root, 'data-badjson');
  cpSync(data, bad, { recursive: true });
  const lines = readFileSync(join(bad, 'pairs.jsonl'), 'utf8').split('\n');
  lines[4] = '{"real": "real/04.png", "generated": ';
  writeFileSync(join(bad, 'pairs.jsonl'), lines.join('\n'));
  assert.match((await failure({ data: bad })).message, /pairs\.jsonl line 5: not valid JSON/);
});

test('a model directory without model.safetensors, or with a .bin, is a clear error', async () => {
  const dir = join(root, 'model-nofile');
  mkdirSync(dir);
  cpSync(join('test', 'fixtures', 'clip-tiny', 'config.json'), join(dir, 'config.json'));
  assert.match((await failure({ model: dir })).message, /model-nofile: no model\.safetensors or model\.safetensors\.index\.json found/);
  writeFileSync(join(dir, 'pytorch_model.bin'), 'pickle');
  assert.match((await failure({ model: dir })).message, /found pytorch_model\.bin but no model\.safetensors/);
  assert.match((await failure({ model: 'vit-h-99' })).message, /--model vit-h-99: not a directory and not a preset/);
});

test('NaN loss (absurd --lr 1e30): the checkpoint whose weights gave it is set aside, not left as the one to resume', async () => {
  // Step 1's update (lr 1e30) leaves weights ~1e30: finite, so checkpoint 1 is written, but the
  // loss of step 2 is NaN. Checkpoint 1 is what produced it, and there is no earlier one.
  const out = join(root, 'run-nan-lr');
  const f = await failure({ out, lr: 1e30, clip: 0, steps: 6, saveEvery: 1 });
  assert.match(f.message, /Loss became NaN at step 2; stopping without applying this update/);
  assert.match(f.message, /The weights saved after step 1 gave this, so that checkpoint was moved to .*step-000001\.nonfinite, and no earlier checkpoint is left\./);
  assert.match(f.message, /Start a new run \(another --out, or delete .*run-nan-lr\) with a lower --lr \(now 1e\+30\)/);
  assert.equal(readdirSync(join(out, 'checkpoints')).sort(), ['step-000001.nonfinite']);
  assert.not.ok(existsSync(join(out, 'adapter')), 'adapter/ no longer offers the diverged weights');
  assert.ok(existsSync(join(out, 'adapter.nonfinite', 'adapter_model.safetensors')), 'the diverged adapter is kept aside, not deleted');
  assert.is(readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').length, 1);
  // --resume with no checkpoint left starts the run again from step 0 (and it diverges again).
  const again = await failure({ out, lr: 1e30, clip: 0, steps: 6, saveEvery: 1, resume: out });
  assert.ok(again.logs.some((l) => /no checkpoint in .*checkpoints yet: starting the run from step 0 with its saved options/.test(l)), again.logs.join('\n'));
  assert.match(again.message, /Loss became NaN at step 2/);
});

test('NaN loss at step 3 (transformLoss hook): checkpoint 2 is set aside, checkpoint 1 becomes latest and adapter/', async () => {
  const out = join(root, 'run-nan-hook');
  const f = await failureWithNanAt(3, { out, steps: 6, saveEvery: 1 });
  assert.match(f.message, /Loss became NaN at step 3/);
  assert.match(f.message, /checkpoints\/latest and adapter\/ now point to step-000001, the newest checkpoint whose weights gave a finite loss/);
  assert.is(readFileSync(join(out, 'checkpoints', 'latest'), 'utf8').trim(), 'step-000001');
  assert.equal(readdirSync(join(out, 'checkpoints')).sort(), ['latest', 'step-000001', 'step-000002.nonfinite']);
  assert.equal(readFileSync(join(out, 'adapter', 'adapter_model.safetensors')), readFileSync(join(out, 'checkpoints', 'step-000001', 'adapter_model.safetensors')));
});

test('NaN loss after an older checkpoint: that checkpoint is kept and named (its weights gave a finite loss)', async () => {
  const out = join(root, 'run-nan-old');
  const f = await failureWithNanAt(4, { out, steps: 6, saveEvery: 2 });
  assert.match(f.message, /The newest checkpoint, .*step-000002, is kept \(its weights gave a finite loss on the step after it\)/);
  assert.equal(readdirSync(join(out, 'checkpoints')).sort(), ['latest', 'step-000002']);
});

testF16('--precision f16: loss_scale in metrics.jsonl, overflowed steps skipped (scale halved, adapter untouched), the scale saved and resumed exactly', async () => {
  const device = await getDevice();
  // Scaled by 2^40 every gradient overflows f16 (65504): steps are skipped, halving the scale
  // until it fits; growth every 3 good steps shows the doubling too.
  const scaler = { initScale: 2 ** 40, growthFactor: 2, backoffFactor: 0.5, growthInterval: 3 };
  const o = options({ precision: 'f16', steps: 24, saveEvery: 1, keepCheckpoints: 30 });
  const whole = await train(device, o, { gradScaler: scaler, log: () => {} });
  const metrics = readFileSync(join(whole.runDir, 'metrics.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
  whole.lora!.dispose();
  whole.model.model.dispose();
  assert.is(metrics.length, 24);
  const skipped = metrics.filter((m) => m.skipped === true);
  assert.ok(skipped.length >= 1, 'the first steps overflow');
  assert.is(metrics[0].loss_scale, 2 ** 40);
  assert.is(metrics[0].skipped, true);
  assert.is(metrics[0].grad_norm, null, 'a skipped step logs its non-finite norm as null');
  // GradScaler.update: halve after an overflow, double after 3 good steps in a row.
  let scale = 2 ** 40;
  let good = 0;
  for (const m of metrics) {
    assert.is(m.loss_scale, scale, `step ${m.step}: scale`);
    if (m.skipped) {
      scale /= 2;
      good = 0;
    } else if (++good === 3) {
      scale *= 2;
      good = 0;
    }
  }
  assert.ok(metrics.some((m) => !m.skipped && typeof m.grad_norm === 'number' && (m.grad_norm as number) > 0), 'later steps apply updates');
  // A skipped step leaves the adapter as the step before left it.
  const first = skipped[0].step as number;
  const a0 = readFileSync(join(whole.runDir, 'checkpoints', `step-${String(first).padStart(6, '0')}`, 'adapter_model.safetensors'));
  if (first > 1) assert.ok(a0.equals(readFileSync(join(whole.runDir, 'checkpoints', `step-${String(first - 1).padStart(6, '0')}`, 'adapter_model.safetensors'))));
  const state = JSON.parse(readFileSync(join(whole.runDir, 'checkpoints', 'step-000024', 'trainer_state.json'), 'utf8')) as { gradScaler: { scale: number; growthTracker: number } };
  assert.is(state.gradScaler.scale, scale, 'the checkpoint holds the scale after its step');
  // Stop at step 10, resume to 24: the same losses and scales as the uninterrupted run.
  const part = options({ precision: 'f16', steps: 10, saveEvery: 5 });
  const r1 = await train(device, part, { gradScaler: scaler, log: () => {} });
  r1.lora!.dispose();
  r1.model.model.dispose();
  const r2 = await train(device, { ...part, steps: 24, resume: part.out }, { gradScaler: scaler, log: () => {} });
  r2.lora!.dispose();
  r2.model.model.dispose();
  const resumed = readFileSync(join(part.out, 'metrics.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.equal(resumed.map((m) => [m.loss, m.loss_scale, m.skipped ?? false]), metrics.map((m) => [m.loss, m.loss_scale, m.skipped ?? false]));
});

test('a new run refuses a directory that holds a run; a failed start leaves no run directory behind', async () => {
  const first = await run({ steps: 1 });
  const out = first.result.runDir;
  const metricsBefore = readFileSync(join(out, 'metrics.jsonl'), 'utf8');
  const refused = await failure({ out, steps: 3 });
  assert.match(refused.message, /already holds a run \(adapter, checkpoints, config\.json, metrics\.jsonl\); nothing there was changed\. Continue it with: npm run train -- --resume /);
  assert.is(readFileSync(join(out, 'metrics.jsonl'), 'utf8'), metricsBefore);
  const fresh = join(root, 'run-failed-start');
  assert.match((await failure({ out: fresh, model: 'vit-h-99' })).message, /not a directory and not a preset/);
  assert.not.ok(existsSync(fresh), 'the run directory created for the failed run is gone');
});

test('a run that stopped before its first checkpoint: a new run there is refused, --resume starts it again from step 0', async () => {
  const out = join(root, 'run-no-checkpoint');
  assert.match((await failureWithNanAt(2, { out, steps: 4, saveEvery: 500 })).message, /No checkpoint had been written yet\. Start a new run \(another --out, or delete /);
  const metrics = readFileSync(join(out, 'metrics.jsonl'), 'utf8');
  const again = await failure({ out });
  assert.match(again.message, /already holds a run that stopped before its first checkpoint \(config\.json, metrics\.jsonl\); nothing there was changed\. Start it again from step 0 with its saved options: npm run train -- --resume /);
  assert.is(readFileSync(join(out, 'metrics.jsonl'), 'utf8'), metrics, 'the refused run changed nothing');
  const resumed = await run({ out, steps: 4, saveEvery: 500, resume: out });
  assert.equal(resumed.metrics.map((m) => m.step), [1, 2, 3, 4], 'metrics.jsonl restarts with the run');
});

test('run.lock: a second trainer on a directory in use is refused; a lock left by a dead process is taken over', async () => {
  const out = join(root, 'run-locked');
  mkdirSync(out, { recursive: true });
  // This test process is alive: its pid in the lock stands for another trainer.
  writeFileSync(join(out, 'run.lock'), `${process.ppid}\n`);
  const refused = await failure({ out });
  assert.match(refused.message, new RegExp(`is in use by another training process \\(pid ${process.ppid}, see .*run\\.lock\\); nothing there was changed`));
  assert.ok(existsSync(join(out, 'run.lock')), 'the other process keeps its lock');
  assert.not.ok(existsSync(join(out, 'metrics.jsonl')));
  // A pid that is not running: the lock is stale.
  writeFileSync(join(out, 'run.lock'), '2147483646\n');
  const r = await run({ out, steps: 1 });
  assert.is(r.metrics.length, 1);
  assert.not.ok(existsSync(join(out, 'run.lock')), 'released at the end');
});

test('resume with fewer --steps than the run already did: an error, and config.json is left as it was', async () => {
  const out = join(root, 'run-shorter');
  await run({ out, steps: 3, saveEvery: 1 });
  const config = readFileSync(join(out, 'config.json'), 'utf8');
  const f = await failure({ out, steps: 2, saveEvery: 1, resume: out });
  assert.match(f.message, /the run is already at step 3, past the 2 steps asked for; nothing was changed\. Resume with --steps 3 or more\./);
  assert.is(readFileSync(join(out, 'config.json'), 'utf8'), config);
});

test('batch settings are checked against the training pairs before any work', async () => {
  assert.throws(() => checkBatchFits({ batch: 1, accum: 1 }, 24), /Effective batch 1 \(--batch 1 × --accum 1\): the InfoNCE loss needs at least 2 pairs per step/);
  assert.throws(() => checkBatchFits({ batch: 30, accum: 1 }, 24), /--batch 30 is larger than the 24 training pairs\. Use --batch 24 or less/);
  assert.throws(() => checkBatchFits({ batch: 8, accum: 4 }, 24), /Effective batch 32 \(--batch 8 × --accum 4\) is larger than the 24 training pairs: .* Use --accum 3 or less/);
  assert.throws(() => checkBatchFits({ batch: 8, accum: 1 }, 1), /Only 1 training pair/);
  checkBatchFits({ batch: 1, accum: 2 }, 24);
  checkBatchFits({ batch: 8, accum: 3 }, 24);
  const out = join(root, 'run-batch-too-big');
  assert.match((await failure({ out, batch: 25 })).message, /--batch 25 is larger than the 24 training pairs/);
  assert.not.ok(existsSync(out));
});

test('an unwritable teacher cache directory fails before any GPU work, naming the flags to change', async () => {
  const file = join(root, 'cache-is-a-file');
  writeFileSync(file, 'x');
  const f = await failure({ cacheDir: join(file, 'cache') });
  assert.match(f.message, /Teacher cache directory .*cache-is-a-file\/cache: .*cache-is-a-file is a file, so nothing can be created under it\. Choose another --cache-dir \(or set GENALIGN_CACHE_DIR\), or pass --no-teacher-cache\./);
});

test('resuming with more --steps warns that the learning rate does not continue where it was', async () => {
  const out = join(root, 'run-extend');
  await run({ out, steps: 2, saveEvery: 1, warmup: 0 });
  const extended = await run({ out, steps: 4, saveEvery: 1, warmup: 0, resume: out });
  assert.ok(extended.logs.some((l) => /warning: the schedule now spans 4 steps instead of 2: step 3 uses learning rate .* where the run's schedule had .* \(step 2 used .*\)/.test(l)), extended.logs.join('\n'));
  assert.is(extended.metrics.length, 4);
  // Still in warmup, the learning rate does not depend on the run's length: no warning.
  const warm = join(root, 'run-extend-warmup');
  await run({ out: warm, steps: 2, saveEvery: 1, warmup: 10 });
  const warmExtended = await run({ out: warm, steps: 4, saveEvery: 1, warmup: 10, resume: warm });
  assert.not.ok(warmExtended.logs.some((l) => /schedule now spans/.test(l)), warmExtended.logs.join('\n'));
});

test('a failing run frees the model and the student (pool live bytes back to where they were)', async () => {
  const device = await getDevice();
  await device.sync();
  const before = device.pool.stats().liveBytes;
  // NaN at step 1 fails after the model, the student and the optimizer exist.
  assert.match((await failureWithNanAt(1, {})).message, /Loss became/);
  await device.sync();
  assert.is(device.pool.stats().liveBytes, before, 'no GPU memory held after the failure');
});

test('dual projection: the trained head is saved in the PEFT adapter (modules_to_save) and used when the adapter is loaded', async () => {
  const device = await getDevice();
  const o = options({ dualProjection: true, steps: 2, lr: 5e-2 });
  const result = await train(device, o, { log: () => undefined });
  try {
    const trained = await result.projection!.read();
    const shared = await result.model.model.w('visual_projection.weight').read();
    assert.ok(trained.some((v, i) => v !== shared[i]), 'the student head moved away from the shared projection');
    const cfg = JSON.parse(readFileSync(join(result.runDir, 'adapter', 'adapter_config.json'), 'utf8')) as { modules_to_save: string[] | null };
    assert.equal(cfg.modules_to_save, ['visual_projection']);
    const { readPeftAdapter } = await import('../../src/io/peft.ts');
    const back = readPeftAdapter(join(result.runDir, 'adapter'), result.model.model.cfg, device);
    try {
      assert.ok(back.projection, 'adapter read back carries the projection');
      assertClose(await back.projection!.read(), trained, { rtol: 0, atol: 0 }, 'projection round trip');
      const px = new Float32Array(2 * 3 * 32 * 32).map((_, i) => Math.sin(i * 0.1));
      const { fromArray, scope } = await import('../../src/tensor/tensor.ts');
      const { noGrad } = await import('../../src/tensor/autograd.ts');
      const embed = (opts: ForwardOptions): Tensor => scope(() => noGrad(() => result.model.model.forward(fromArray(px, [2, 3, 32, 32], device), opts)).keep());
      const inMemory = embed({ lora: result.lora!, projection: result.projection! });
      const loaded = embed({ lora: back });
      assertClose(await loaded.read(), await inMemory.read(), { rtol: 0, atol: 1e-6 }, 'loaded adapter == in-memory student');
      inMemory.dispose();
      loaded.dispose();
    } finally {
      back.dispose();
    }
  } finally {
    result.lora!.dispose();
    result.model.model.dispose();
  }
});

test('Ctrl-C while filling the teacher cache: it stops after a block, keeps what it embedded, and a rerun finishes', async () => {
  const device = await getDevice();
  const { warmTeacherCache } = await import('../../src/train/trainer.ts');
  const { TeacherCache, fileKey } = await import('../../src/train/teacher-cache.ts');
  const { loadDataset } = await import('../../src/io/dataset.ts');
  const { defaultPreprocess } = await import('../../src/io/image.ts');
  const { NAMED_CONFIGS } = await import('../../src/nn/config.ts');
  const model = ClipVisionModel.random(NAMED_CONFIGS.tiny, 0, device);
  try {
    const pairs = loadDataset(data, { onWarn: () => undefined }).pairs;
    const dir = mkdtempSync(join(root, 'stopcache-'));
    const keys = pairs.map((p) => fileKey(p.real));
    const cache = new TeacherCache(dir, 'k', model.cfg.projectionDim, keys, { blockRows: 8 });
    const complete = await warmTeacherCache(device, model, defaultPreprocess(32), pairs, cache, 8, () => undefined, () => true);
    assert.is(complete, false);
    assert.is(cache.size, 8, 'one block of 8 embedded before stopping');
    const again = new TeacherCache(dir, 'k', model.cfg.projectionDim, keys, { blockRows: 8 });
    assert.is(again.size, 8, 'the partial cache was saved');
    assert.is(await warmTeacherCache(device, model, defaultPreprocess(32), pairs, again, 8, () => undefined), true);
    assert.is(again.size, pairs.length);
  } finally {
    model.dispose();
  }
});

test('out of GPU memory: the error suggests a smaller --batch with --accum keeping the effective batch', async () => {
  const device = await getDevice();
  const limit = Math.min(device.limits.maxStorageBufferBindingSize, device.limits.maxBufferSize);
  let real: unknown;
  try {
    device.pool.acquire(limit + 1024, 'activation');
  } catch (e) {
    real = e;
  }
  assert.instance(real, BufferTooLargeError, 'the pool refuses a buffer over the binding limit before allocating');
  assert.throws(() => oomHelp(real, { batch: 32, accum: 1 }), (e: Error) => /exceeds this GPU's largest storage buffer/.test(e.message) && /try --batch 16 --accum 2 \(same effective batch\)/.test(e.message));
  assert.throws(() => oomHelp(new OutOfMemoryError('GPU out of memory'), { batch: 12, accum: 2 }), (e: Error) => /try --batch 6 --accum 4/.test(e.message));
  // 7 has no divisor but 1: batch 1 × accum 7·3 keeps 21.
  assert.throws(() => oomHelp(new OutOfMemoryError('GPU out of memory'), { batch: 7, accum: 3 }), (e: Error) => /try --batch 1 --accum 21/.test(e.message));
  assert.throws(() => oomHelp(new OutOfMemoryError('x'), { batch: 1, accum: 1 }), (e: Error) => /smaller model/.test(e.message));
  // Anything else passes through unchanged.
  const other = new Error('disk full');
  assert.throws(() => oomHelp(other, { batch: 8, accum: 1 }), (e: Error) => e === other);
});

test('unwritable output directory: fails before training (no metrics, no teacher cache, no step)', async () => {
  const file = join(root, 'a-file');
  writeFileSync(file, 'x');
  let steps = 0;
  const device = await getDevice();
  const cacheDir = join(root, 'cache-unwritable');
  let message = '';
  try {
    await train(device, options({ out: join(file, 'run'), cacheDir }), { onStep: () => void steps++, onStart: () => void steps++ });
  } catch (e) {
    message = (e as Error).message;
  }
  assert.match(message, /Output directory .*a-file\/run: .*a-file is a file, so nothing can be created under it\. Choose another --out\./);
  assert.is(steps, 0);
  assert.not.ok(existsSync(cacheDir), 'failed before filling the teacher cache');
});

test.run();
