// The run directory as users find it: folders the trainer did not create are never written,
// damaged or half-written checkpoints are recognised, --resume repairs what a crash left, and
// every refusal changes nothing. (test/train/crash.test.ts proves recovery at every file
// operation; these are the states an audit reported, one by one.)
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { getDevice } from '../../src/gpu/device.ts';
import { train, type TrainHooks, type TrainResult } from '../../src/train/trainer.ts';
import { trainOptionsOf } from '../../src/cli/train-command.ts';
import { FIXTURE_DIR } from '../helpers/fixtures.ts';
import { FaultyFiles } from '../helpers/faulty-files.ts';
import { tmp, tinyDataset } from '../cli/helpers.ts';

const root = tmp('run-dir');
const data = join(root, 'data');
test.before(async () => {
  await tinyDataset(data, 24);
});
test.after(() => rmSync(root, { recursive: true, force: true }));

const common = (): string[] => ['--data', data, '--model', 'tiny', '--batch', '8', '--val-fraction', '0', '--no-eval', '--no-teacher-cache', '--lr', '1e-2', '--warmup', '1'];

/** Runs `npm run train -- <argv>` in this process; returns the logs, or the error message. */
async function trainArgs(argv: string[], hooks: TrainHooks = {}): Promise<{ error: string | null; logs: string[] }> {
  const logs: string[] = [];
  let r: TrainResult | null = null;
  try {
    r = await train(await getDevice(), trainOptionsOf(argv), { ...hooks, log: (l) => logs.push(l) });
    return { error: null, logs };
  } catch (e) {
    return { error: (e as Error).message, logs };
  } finally {
    r?.lora?.dispose();
    r?.projection?.dispose();
    r?.model.model.dispose();
  }
}

/** Every file under `dir` with its bytes, to prove a refusal changed nothing. */
function contents(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.set(p, readFileSync(p).toString('base64'));
    }
  };
  walk(dir);
  return out;
}

test('D2: --out at an HF model directory (or any non-empty folder) is refused and nothing there is written', async () => {
  const model = join(root, 'hf-model');
  cpSync(join(FIXTURE_DIR, 'clip-tiny'), model, { recursive: true });
  const before = contents(model);
  const r = await trainArgs([...common(), '--steps', '1', '--out', model]);
  assert.match(r.error ?? '', /Output directory .*hf-model is not empty \(config\.json, model\.safetensors\): a new run uses only a new or empty directory, so that nothing already there is overwritten; nothing there was changed\. Choose another --out/);
  assert.equal(contents(model), before, 'the model folder is exactly as it was');
  assert.equal(readdirSync(model).sort(), ['config.json', 'model.safetensors']);
  // --resume of a model folder is refused the same way: its config.json is not a run's.
  assert.throws(() => trainOptionsOf(['--resume', model]), /--resume .*hf-model: .*hf-model\/config\.json is not the config\.json of a genalign run \(it has no configHash\)/);
  assert.equal(contents(model), before);
  // An empty folder, and a new one, are fine.
  mkdirSync(join(root, 'empty-out'));
  assert.is((await trainArgs([...common(), '--steps', '1', '--out', join(root, 'empty-out')])).error, null);
});

test('D3: --resume of a finished run repairs adapter/ in every state a crash in publishing can leave', async () => {
  const out = join(root, 'published');
  assert.is((await trainArgs([...common(), '--steps', '2', '--save-every', '1', '--out', out])).error, null);
  const adapter = join(out, 'adapter');
  const latest = join(out, 'checkpoints', 'step-000002');
  const want = (f: string): Buffer => readFileSync(join(latest, f));
  const older = join(root, 'older-adapter');
  // The adapter of step 1, from a second run with 1 step: "the previous checkpoint's weights".
  assert.is((await trainArgs([...common(), '--steps', '1', '--out', join(root, 'one-step')])).error, null);
  cpSync(join(root, 'one-step', 'adapter'), older, { recursive: true });
  const states: [string, () => void][] = [
    ['adapter/ missing', () => rmSync(adapter, { recursive: true })],
    ['adapter/ empty', () => {
      rmSync(adapter, { recursive: true });
      mkdirSync(adapter);
    }],
    ['adapter/ holding only adapter_model.safetensors', () => unlinkSync(join(adapter, 'adapter_config.json'))],
    ["adapter/ holding the previous checkpoint's weights", () => cpSync(join(older, 'adapter_model.safetensors'), join(adapter, 'adapter_model.safetensors'))],
  ];
  for (const [name, damage] of states) {
    damage();
    const r = await trainArgs(['--resume', out]);
    assert.is(r.error, null, `${name}: ${r.error}`);
    assert.ok(r.logs.some((l) => /recovery: .*adapter does not hold step-000002's adapter; publishing it again/.test(l)), `${name}: ${r.logs.join('\n')}`);
    assert.ok(r.logs.some((l) => /nothing to do: the run is already at step 2\/2/.test(l)), name);
    for (const f of ['adapter_model.safetensors', 'adapter_config.json']) assert.equal(readFileSync(join(adapter, f)), want(f), `${name}: adapter/${f}`);
    assert.equal(readdirSync(out).sort(), ['adapter', 'checkpoints', 'config.json', 'metrics.jsonl'], `${name}: no litter`);
  }
});

test('temporary files of an interrupted run (this version\'s and the earlier names) are removed by the next start; other files stay', async () => {
  const out = join(root, 'litter');
  assert.is((await trainArgs([...common(), '--steps', '2', '--save-every', '1', '--out', out])).error, null);
  const litter = [
    'checkpoints/.step-000003.tmp-4242/adapter_model.safetensors', 'checkpoints/.step-000003.tmp/trainer_state.json', 'checkpoints/.step-000001.deleting/optimizer.safetensors',
    'checkpoints/.latest.4242.1764670000000.tmp', '.adapter.tmp-4242/adapter_config.json', '.adapter.tmp/adapter_model.safetensors', '.adapter-adapter_model.safetensors.tmp',
    '.config.json.4242.1764670000000.tmp', '.metrics.jsonl.4242.1764670000000.tmp', '.run.lock.stale-4242',
  ];
  for (const f of litter) {
    mkdirSync(join(out, f, '..'), { recursive: true });
    writeFileSync(join(out, f), 'partial');
  }
  writeFileSync(join(out, 'notes.txt'), 'mine');
  const r = await trainArgs(['--resume', out]);
  assert.is(r.error, null, r.error ?? '');
  assert.ok(r.logs.some((l) => /recovery: removing 10 temporary file\(s\) left by an interrupted run/.test(l)), r.logs.join('\n'));
  assert.equal(readdirSync(out).sort(), ['adapter', 'checkpoints', 'config.json', 'metrics.jsonl', 'notes.txt']);
  assert.equal(readdirSync(join(out, 'checkpoints')).sort(), ['latest', 'step-000001', 'step-000002']);
});

test('D4: a half-removed checkpoint does not count; a NaN rollback never moves latest to it, and resume still works', async () => {
  const out = join(root, 'half-removed');
  assert.is((await trainArgs([...common(), '--steps', '2', '--save-every', '1', '--keep-checkpoints', '3', '--out', out])).error, null);
  // Killed during the old retention, which removed trainer_state.json last: the other files are gone.
  for (const f of ['adapter_model.safetensors', 'adapter_config.json', 'optimizer.safetensors']) unlinkSync(join(out, 'checkpoints', 'step-000001', f));
  // Step 3's loss is NaN: checkpoint 2 is set aside; step 1 is not complete, so nothing is left to point to.
  const r = await trainArgs(['--resume', out, '--steps', '4'], { transformLoss: (s, l) => (s === 3 ? Number.NaN : l) });
  assert.match(r.error ?? '', /Loss became NaN at step 3; .*moved to .*step-000002\.nonfinite, and no earlier checkpoint is left/);
  assert.not.ok(existsSync(join(out, 'checkpoints', 'latest')), 'latest names no incomplete checkpoint');
  // The half-removed step-000001 (older than the checkpoint resumed from) was removed by that resume's repair.
  assert.equal(readdirSync(join(out, 'checkpoints')).sort(), ['step-000002.nonfinite']);
  const again = await trainArgs(['--resume', out, '--steps', '4']);
  assert.is(again.error, null, again.error ?? '');
  assert.ok(again.logs.some((l) => /no checkpoint in .* yet: starting the run from step 0/.test(l)));
  assert.equal(readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { step: number }).step), [1, 2, 3, 4]);
});

test('D8: a trainer_state.json with a bad step is named, and nothing (metrics.jsonl, latest, config.json) is changed', async () => {
  const out = join(root, 'bad-state');
  assert.is((await trainArgs([...common(), '--steps', '2', '--save-every', '1', '--out', out])).error, null);
  const state = join(out, 'checkpoints', 'step-000002', 'trainer_state.json');
  const good = JSON.parse(readFileSync(state, 'utf8')) as Record<string, unknown>;
  for (const step of ['abc', -5, 2.5, null]) {
    writeFileSync(state, JSON.stringify({ ...good, step }));
    const before = contents(out);
    const r = await trainArgs(['--resume', out, '--steps', '4']);
    assert.ok(r.error?.includes(`${state}: "step" must be an integer >= 1, got ${JSON.stringify(step)}`), `step ${JSON.stringify(step)}: ${r.error}`);
    assert.match(r.error!, /latest points to step-000002, which is incomplete or damaged/);
    assert.equal(contents(out), before, `step ${JSON.stringify(step)}: nothing changed`);
  }
});

test('D12: run.lock that is a directory (or a FIFO) is named, with what to do', async () => {
  const out = join(root, 'lock-dir');
  assert.is((await trainArgs([...common(), '--steps', '1', '--out', out])).error, null);
  mkdirSync(join(out, 'run.lock'));
  const r = await trainArgs(['--resume', out]);
  assert.match(r.error ?? '', /run\.lock is a directory; expected the lock file of a training run \("<pid> <host>"\); if no trainer uses this directory, remove .*run\.lock and run the command again/);
});

test('D13: a NaN loss before any update is not blamed on the learning rate; a non-finite teacher names the base model', async () => {
  const r = await trainArgs([...common(), '--steps', '2', '--out', join(root, 'nan-first')], { transformLoss: (s, l) => (s === 1 ? Number.NaN : l) });
  assert.match(r.error ?? '', /Loss became NaN at step 1; .*No update had been applied yet, so the learning rate is not the cause: the base model \(--model tiny\) or the images give non-finite values/);
  assert.not.match(r.error!, /lower --lr/);
  // A checkpoint whose weights overflow: the teacher's embeddings are Inf/NaN.
  const model = join(root, 'model-inf');
  cpSync(join(FIXTURE_DIR, 'clip-tiny'), model, { recursive: true });
  const { readSafetensors, writeSafetensors } = await import('../../src/io/safetensors.ts');
  const st = readSafetensors(join(model, 'model.safetensors'));
  const tensors = Object.fromEntries([...st.tensors].map(([k, t]) => [k, { shape: t.shape, data: k === 'visual_projection.weight' ? t.data.map(() => 3e38) : t.data }]));
  writeSafetensors(join(model, 'model.safetensors'), tensors, st.metadata);
  const t = await trainArgs(['--data', data, '--model', model, '--batch', '8', '--val-fraction', '0', '--no-eval', '--no-teacher-cache', '--steps', '1', '--out', join(root, 'teacher-inf')]);
  assert.match(t.error ?? '', /The teacher \(the base model, --model .*model-inf\) gives a non-finite embedding for .*real.*: its weights hold NaN\/Inf or overflow float32 on this image/);
});

test('D15: a full disk while appending metrics.jsonl names the file and says how to continue', async () => {
  const out = join(root, 'full-disk');
  // Find the first append (metrics.jsonl after step 1) in an uninterrupted run, then fail there.
  const probe = new FaultyFiles();
  assert.is((await trainArgs([...common(), '--steps', '2', '--out', join(root, 'probe')], { files: probe })).error, null);
  const at = probe.ops.find((r) => r.op === 'append')!.n;
  const r = await trainArgs([...common(), '--steps', '2', '--save-every', '1', '--out', out], { files: new FaultyFiles({ mode: 'enospc', at }) });
  assert.match(r.error ?? '', /Could not append to .*full-disk\/metrics\.jsonl: ENOSPC: no space left on device/);
  assert.match(r.error!, /The disk is full\. Nothing already written was lost: free some space, then continue the run with: npm run train -- --resume .*full-disk/);
  assert.is((await trainArgs(['--resume', out])).error, null);
  assert.equal(readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { step: number }).step), [1, 2]);
  // A full disk on the lock of a new run: the error names run.lock, and the directory the run had just created is gone.
  const lockAt = probe.ops.find((r) => r.op === 'write' && r.path.includes('.run.lock.'))!.n;
  const fresh = join(root, 'full-disk-lock');
  const l = await trainArgs([...common(), '--steps', '2', '--out', fresh], { files: new FaultyFiles({ mode: 'enospc', at: lockAt }) });
  assert.match(l.error ?? '', /Output directory .*full-disk-lock: cannot create .*full-disk-lock\/run\.lock \(no space left on device\)/);
  assert.not.ok(existsSync(fresh));
});

test.run();
