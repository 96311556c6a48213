// Checkpoints: layout, exact round trip of adapter + optimizer state, retention, `latest`, crash
// leftovers, and the errors --resume gives for checkpoints that do not fit.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getDevice } from '../../src/gpu/device.ts';
import { NAMED_CONFIGS } from '../../src/nn/config.ts';
import { LoraAdapter, ATTENTION_TARGETS } from '../../src/nn/lora.ts';
import { readAdapterBase, readPeftAdapter } from '../../src/io/peft.ts';
import { readSafetensors } from '../../src/io/safetensors.ts';
import { ensureDemoDataset } from '../../src/io/demo-data.ts';
import { saveCheckpoint, loadLatestCheckpoint, checkpointName, setAsideDivergedCheckpoint, type TrainerState } from '../../src/train/checkpoint.ts';
import type { AdamWState } from '../../src/train/optimizer.ts';
import { train, type TrainOptions } from '../../src/train/trainer.ts';
import { studentFiles } from '../../src/train/student.ts';
import { trainOptions } from '../helpers/train-options.ts';

const root = mkdtempSync(join(tmpdir(), 'genalign-ckpt-'));
test.after(() => rmSync(root, { recursive: true, force: true }));
const cfg = NAMED_CONFIGS.tiny;

function state(step: number): TrainerState {
  return { step, epoch: Math.floor(step / 3), batchInEpoch: step % 3, seed: 5, configHash: '0123456789abcdef', lastLoss: 1.5 + step, schedule: { baseLr: 1e-3, warmupSteps: 2 } };
}

/** The checkpoint files of a LoRA student on the preset base `tiny` (seed: state()'s). */
function loraFiles(lora: LoraAdapter): ReturnType<typeof studentFiles> {
  return studentFiles({ kind: 'lora', lora, projection: null, model: null, params: lora.parameters(), noWeightDecay: [] }, { source: 'tiny', preprocessor: null }, state(0).seed);
}

/** A deterministic optimizer state with distinct values per parameter and step. */
function optimizerState(lora: LoraAdapter, step: number): AdamWState {
  const m: Record<string, Float32Array> = {};
  const v: Record<string, Float32Array> = {};
  const paramSteps: Record<string, number> = {};
  lora.parameters().forEach((p, i) => {
    const name = p.name ?? `param${i}`;
    m[name] = Float32Array.from({ length: p.size }, (_, k) => Math.sin(step + i + k * 0.1));
    v[name] = Float32Array.from({ length: p.size }, (_, k) => (step + i + k) * 1e-3);
    paramSteps[name] = step - (i % 2);
  });
  return { step, m, v, paramSteps };
}

test('save → load: layout, trainer state, optimizer moments and adapter come back exactly', async () => {
  const device = await getDevice();
  const run = join(root, 'run1');
  const lora = LoraAdapter.create(cfg, { rank: 4, alpha: 8, targets: ATTENTION_TARGETS, seed: 3 }, device);
  // Non-zero B so both halves of each pair are checked.
  for (const p of lora.pairs.values()) p.b.write(Float32Array.from({ length: p.b.size }, (_, k) => ((k % 7) - 3) * 0.01));
  const opt = optimizerState(lora, 6);
  const dir = await saveCheckpoint(run, await loraFiles(lora), opt, state(6), 3);
  assert.is(dir, join(run, 'checkpoints', 'step-000006'));
  assert.equal(readdirSync(dir).sort(), ['adapter_config.json', 'adapter_model.safetensors', 'optimizer.safetensors', 'trainer_state.json']);
  assert.is(readFileSync(join(run, 'checkpoints', 'latest'), 'utf8'), 'step-000006\n');
  assert.equal(readFileSync(join(run, 'adapter', 'adapter_model.safetensors')), readFileSync(join(dir, 'adapter_model.safetensors')));
  assert.equal(readFileSync(join(run, 'adapter', 'adapter_config.json')), readFileSync(join(dir, 'adapter_config.json')));
  assert.equal(readdirSync(run).sort(), ['adapter', 'checkpoints'], 'no temporary directories left');

  const ck = loadLatestCheckpoint(run)!;
  assert.is(ck.dir, dir);
  assert.equal(ck.state, state(6));
  assert.is(ck.optimizer.step, 6);
  assert.equal(ck.optimizer.paramSteps, opt.paramSteps);
  assert.equal(Object.keys(ck.optimizer.m).sort(), Object.keys(opt.m).sort());
  for (const k of Object.keys(opt.m)) {
    assert.equal(Array.from(ck.optimizer.m[k]), Array.from(opt.m[k]), `m.${k}`);
    assert.equal(Array.from(ck.optimizer.v[k]), Array.from(opt.v[k]), `v.${k}`);
  }
  const back = readPeftAdapter(dir, cfg, device);
  assert.is(back.scaling, 2);
  for (const [path, p] of lora.pairs) {
    assert.equal(Array.from(await back.get(path)!.a.read()), Array.from(await p.a.read()), `${path} A`);
    assert.equal(Array.from(await back.get(path)!.b.read()), Array.from(await p.b.read()), `${path} B`);
  }
  back.dispose();
  // The preset base model's seed (its random weights depend on it) is recorded for embed/eval.
  assert.equal(readAdapterBase(dir), { model: 'tiny', seed: state(6).seed });
  lora.dispose();
});

test('retention keeps the newest N by step number (also past step 999999); latest names the newest', async () => {
  const device = await getDevice();
  const run = join(root, 'run2');
  const lora = LoraAdapter.create(cfg, { rank: 2, alpha: 2, targets: ['q_proj'], seed: 0 }, device);
  for (const s of [2, 4, 6, 999_998, 1_000_000, 1_000_002]) await saveCheckpoint(run, await loraFiles(lora), optimizerState(lora, s), state(s), 2);
  assert.equal(readdirSync(join(run, 'checkpoints')).sort(), ['latest', checkpointName(1_000_000), checkpointName(1_000_002)].sort());
  assert.is(loadLatestCheckpoint(run)!.state.step, 1_000_002);
  lora.dispose();
});

test('crash leftovers: a half-written temp dir is ignored; latest naming a missing checkpoint falls back to the newest complete one, a damaged one is an error; no latest → null', async () => {
  const device = await getDevice();
  const run = join(root, 'run3');
  assert.is(loadLatestCheckpoint(run), null);
  const lora = LoraAdapter.create(cfg, { rank: 2, alpha: 2, targets: ['v_proj'], seed: 0 }, device);
  await saveCheckpoint(run, await loraFiles(lora), optimizerState(lora, 2), state(2), 3);
  // A crash while writing step 4 leaves only its temporary directory.
  mkdirSync(join(run, 'checkpoints', '.step-000004.tmp-99999'));
  writeFileSync(join(run, 'checkpoints', '.step-000004.tmp-99999', 'adapter_model.safetensors'), 'partial');
  assert.is(loadLatestCheckpoint(run)!.state.step, 2);
  // latest is written just before its checkpoint is renamed into place: a crash in between leaves
  // it naming a checkpoint that does not exist, and the newest complete one is used.
  writeFileSync(join(run, 'checkpoints', 'latest'), 'step-000004\n');
  assert.is(loadLatestCheckpoint(run)!.state.step, 2);
  // A checkpoint that exists but is damaged is named, not passed over: the user chooses.
  await saveCheckpoint(run, await loraFiles(lora), optimizerState(lora, 3), state(3), 3);
  writeFileSync(join(run, 'checkpoints', 'step-000003', 'trainer_state.json'), '{"step": 3, "ep');
  assert.throws(() => loadLatestCheckpoint(run), /latest points to step-000003, which is incomplete or damaged \(.*step-000003\/trainer_state\.json: cannot read the trainer state \(.*\); the file is damaged or truncated\)\. Complete checkpoints here: step-000002; to resume from one, write its name into .*latest \(e\.g\. echo step-000002 > /);
  lora.dispose();
});

test('setAsideDivergedCheckpoint: the checkpoint of the given step is renamed, latest and adapter/ go back one', async () => {
  const device = await getDevice();
  const run = join(root, 'run-aside');
  const lora = LoraAdapter.create(cfg, { rank: 2, alpha: 2, targets: ['v_proj'], seed: 0 }, device);
  for (const step of [1, 2, 3]) {
    lora.pairs.values().next().value!.b.write(new Float32Array(lora.pairs.values().next().value!.b.size).fill(step));
    await saveCheckpoint(run, await loraFiles(lora), optimizerState(lora, step), state(step), 3);
  }
  const adapterOf = (dir: string): Buffer => readFileSync(join(dir, 'adapter_model.safetensors'));
  assert.equal(setAsideDivergedCheckpoint(run, 3), { setAside: 'step-000003.nonfinite', latest: 'step-000002' });
  assert.equal(readdirSync(join(run, 'checkpoints')).sort(), ['latest', 'step-000001', 'step-000002', 'step-000003.nonfinite']);
  assert.is(loadLatestCheckpoint(run)!.state.step, 2);
  assert.equal(adapterOf(join(run, 'adapter')), adapterOf(join(run, 'checkpoints', 'step-000002')));
  // A step without a checkpoint changes nothing and reports the newest one.
  assert.equal(setAsideDivergedCheckpoint(run, 5), { setAside: null, latest: 'step-000002' });
  assert.equal(setAsideDivergedCheckpoint(run, 2), { setAside: 'step-000002.nonfinite', latest: 'step-000001' });
  assert.equal(setAsideDivergedCheckpoint(run, 1), { setAside: 'step-000001.nonfinite', latest: null });
  assert.is(loadLatestCheckpoint(run), null);
  assert.not.ok(existsSync(join(run, 'adapter')));
  assert.ok(existsSync(join(run, 'adapter.nonfinite', 'adapter_model.safetensors')));
  lora.dispose();
});

test('--resume with a checkpoint that does not fit: wrong-rank adapter and changed options are clear errors', async () => {
  const device = await getDevice();
  const data = join(root, 'data');
  await ensureDemoDataset(data, { count: 24, size: 32, variants: 1 });
  const o: TrainOptions = trainOptions({ data, out: join(root, 'run4'), cacheDir: join(root, 'cache'), saveEvery: 1 });
  const r = await train(device, o, { log: () => undefined });
  r.lora!.dispose();
  r.model.model.dispose();
  const resume = async (over: Partial<TrainOptions>): Promise<string> => {
    try {
      const x = await train(device, { ...o, steps: 4, resume: o.out, ...over }, { log: () => undefined });
      x.lora!.dispose();
      x.model.model.dispose();
    } catch (e) {
      return (e as Error).message;
    }
    return 'no error';
  };
  assert.match(await resume({ lr: 5e-2 }), /--resume .*: .*step-000002 was trained with other options than .*config\.json holds/);
  const ckpt = join(o.out, 'checkpoints', 'step-000002');
  const cfgPath = join(ckpt, 'adapter_config.json');
  const saved = JSON.parse(readFileSync(cfgPath, 'utf8')) as Record<string, unknown>;
  writeFileSync(cfgPath, JSON.stringify({ ...saved, r: 8 }));
  const msg = await resume({});
  assert.match(msg, /step-000002\/adapter_model\.safetensors: adapter does not fit the model/);
  assert.match(msg, /lora_A\.weight: expected \[8, 64\], found \[4, 64\]/);
  // The failed resumes changed nothing on disk.
  assert.is(readFileSync(join(o.out, 'checkpoints', 'latest'), 'utf8').trim(), 'step-000002');
  assert.is(readFileSync(join(o.out, 'metrics.jsonl'), 'utf8').trim().split('\n').length, 2);
  assert.ok(existsSync(join(o.out, 'adapter', 'adapter_model.safetensors')));
  assert.ok(readSafetensors(join(o.out, 'adapter', 'adapter_model.safetensors')).tensors.size === 16);
});

test.run();
