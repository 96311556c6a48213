// train --rank 0 (full fine-tuning of the student, the paper's ablation) as a user runs it:
// model/ is an HF CLIPVisionModelWithProjection folder that genalign loads back and embeds with
// exactly as the in-memory student; the teacher is not changed; the final eval compares the
// student's own tower with the teacher; a run stopped and resumed ends byte for byte like an
// uninterrupted one; --precision f16 and a resume with another --rank are refused before
// anything is written. (The step's numbers against PyTorch: trainstep.test.ts; every file
// operation's crash: crash.test.ts.)
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { getDevice } from '../../src/gpu/device.ts';
import { ensureDemoDataset } from '../../src/io/demo-data.ts';
import { loadModel } from '../../src/io/hf-checkpoint.ts';
import { fromArray, scope } from '../../src/tensor/tensor.ts';
import { noGrad } from '../../src/tensor/autograd.ts';
import { train, type TrainOptions, type TrainResult } from '../../src/train/trainer.ts';
import { disposeStudent } from '../../src/train/student.ts';
import type { ClipVisionModel } from '../../src/nn/vit.ts';
import { tmp } from '../cli/helpers.ts';
import { trainOptions } from '../helpers/train-options.ts';

const root = tmp('full-ft');
const data = join(root, 'data');
test.before(async () => {
  await ensureDemoDataset(data, { count: 24, size: 32, variants: 1 });
});
test.after(() => rmSync(root, { recursive: true, force: true }));

function options(out: string, over: Partial<TrainOptions> = {}): TrainOptions {
  return trainOptions({ data, out, cacheDir: join(root, 'cache'), steps: 4, lr: 1e-3, warmup: 1, rank: 0, teacherCache: false, saveEvery: 2, ...over });
}

function dispose(r: TrainResult): void {
  disposeStudent(r.student);
  r.model.model.dispose();
}

async function embed(model: ClipVisionModel, pixels: Float32Array, n: number): Promise<Float32Array> {
  const S = model.cfg.imageSize;
  const t = scope(() => noGrad(() => model.forward(fromArray(pixels, [n, 3, S, S], model.device))).keep());
  const out = await t.read();
  t.dispose();
  return out;
}

async function message(run: () => Promise<TrainResult>): Promise<string> {
  try {
    dispose(await run());
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error('expected the run to be refused');
}

async function weightsOf(model: ClipVisionModel): Promise<Map<string, Float32Array>> {
  return new Map(await Promise.all([...model.weights].map(async ([n, t]) => [n, await t.read()] as const)));
}

test('--rank 0: model/ is an HF vision model that loads back and embeds exactly as the trained student; the teacher is unchanged; eval compares the two towers', async () => {
  const device = await getDevice();
  const out = join(root, 'run');
  const logs: string[] = [];
  const r = await train(device, options(out, { eval: true, valFraction: 0.25 }), { log: (l) => logs.push(l) });
  try {
    assert.is(r.student.kind, 'full');
    assert.is(r.lora, null);
    assert.ok(logs.some((l) => l === `student (HF CLIPVisionModelWithProjection): ${join(out, 'model')}`), logs.join('\n'));
    assert.equal(readdirSync(join(out, 'model')).sort(), ['config.json', 'model.safetensors', 'preprocessor_config.json']);
    assert.not.ok(existsSync(join(out, 'adapter')));
    const config = JSON.parse(readFileSync(join(out, 'model', 'config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(config.architectures, ['CLIPVisionModelWithProjection']);
    assert.is(config.model_type, 'clip_vision_model');
    assert.equal(readFileSync(join(out, 'model', 'model.safetensors')), readFileSync(join(out, 'checkpoints', 'step-000004', 'model.safetensors')));

    // Loaded back: the same weights, so the same embeddings, bit for bit.
    const back = loadModel(join(out, 'model'), device).model;
    const fresh = loadModel('tiny', device, 0).model;
    try {
      const n = 3;
      const pixels = Float32Array.from({ length: n * 3 * 32 * 32 }, (_, i) => Math.sin(i * 0.37));
      const student = await embed(r.student.model!, pixels, n);
      assert.equal(Array.from(await embed(back, pixels, n)), Array.from(student), 'model/ embeds exactly as the in-memory student');
      // The teacher is the preset's weights as loaded; the student moved away from them.
      const teacher = await weightsOf(r.model.model);
      const trained = await weightsOf(r.student.model!);
      let moved = 0;
      for (const [name, w] of await weightsOf(fresh)) {
        assert.equal(Array.from(teacher.get(name)!), Array.from(w), `teacher ${name} unchanged`);
        if (trained.get(name)!.some((v, i) => v !== w[i])) moved++;
      }
      assert.is(moved, r.student.params.length, 'every weight of the student was updated');
      const before = await embed(r.model.model, pixels, n);
      assert.ok(before.some((v, i) => v !== student[i]), 'student and teacher differ');
    } finally {
      back.dispose();
      fresh.dispose();
    }

    // The final eval: "before" is the teacher, "after" the student's own tower.
    const report = r.eval!.report;
    assert.ok(report.n_val >= 2);
    assert.ok(Number.isFinite(report.paired_cosine_after) && report.paired_cosine_after !== report.paired_cosine_before, 'after is not the teacher');
    assert.ok(existsSync(join(out, 'metrics.json')));
  } finally {
    dispose(r);
  }
});

test('--rank 0: stopped at step 2 and resumed to 4 ends byte for byte like the uninterrupted run (weights and AdamW moments)', async () => {
  const device = await getDevice();
  const whole = join(root, 'whole');
  dispose(await train(device, options(whole), { log: () => undefined }));
  const part = join(root, 'part');
  let steps = 0;
  const stopped = await train(device, options(part), { log: () => undefined, shouldStop: () => ++steps >= 2 });
  assert.ok(stopped.stoppedEarly);
  dispose(stopped);
  const logs: string[] = [];
  dispose(await train(device, { ...options(part), resume: part }, { log: (l) => logs.push(l) }));
  assert.ok(logs.some((l) => /resumed from .*step-000002 at step 2/.test(l)), logs.join('\n'));
  for (const f of ['model.safetensors', 'optimizer.safetensors']) {
    assert.ok(readFileSync(join(part, 'checkpoints', 'step-000004', f)).equals(readFileSync(join(whole, 'checkpoints', 'step-000004', f))), `${f} of step 4`);
  }
  assert.ok(readFileSync(join(part, 'model', 'model.safetensors')).equals(readFileSync(join(whole, 'model', 'model.safetensors'))));
});

test('--rank 0 with --precision f16, and a resume with another --rank, are refused before anything is written', async () => {
  const device = await getDevice();
  const out = join(root, 'f16');
  assert.match(await message(() => train(device, options(out, { precision: 'f16' }), { log: () => undefined })), /--rank 0 \(full fine-tuning\) trains every weight of the student as an f32 master.*use --precision f32 with --rank 0/);
  assert.not.ok(existsSync(out), 'no run directory');
  // A full run's checkpoint does not resume as a LoRA run: the options hash differs.
  const full = join(root, 'whole');
  const before = readFileSync(join(full, 'checkpoints', 'latest'), 'utf8');
  assert.match(await message(() => train(device, { ...options(full, { rank: 4, steps: 6 }), resume: full }, { log: () => undefined })), /was trained with other options/);
  assert.is(readFileSync(join(full, 'checkpoints', 'latest'), 'utf8'), before);
});

test.run();
