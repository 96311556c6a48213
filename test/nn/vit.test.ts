// CLIP vision parity with a PyTorch reference (scripts/fixtures/fx_clip.py): a random CLIP model
// in exact HF layout is loaded from disk and must reproduce the reference embeddings.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { getDevice } from '../../src/gpu/device.ts';
import { scope, fromArray } from '../../src/tensor/tensor.ts';
import { noGrad, backward } from '../../src/tensor/autograd.ts';
import { sum } from '../../src/ops/index.ts';
import { loadClipVision } from '../../src/io/hf-checkpoint.ts';
import { readPeftAdapter } from '../../src/io/peft.ts';
import { LoraAdapter, DEFAULT_LORA } from '../../src/nn/lora.ts';
import { ClipVisionModel } from '../../src/nn/vit.ts';
import { NAMED_CONFIGS } from '../../src/nn/config.ts';
import { FIXTURE_DIR, fixture, assertClose } from '../helpers/fixtures.ts';

// Embeddings are unit-scale. The bar is 1e-4 absolute; f32 through 2 layers vs float64
// does far better (worst 8.9e-7 on lavapipe), and a bar of 1e-4 would pass real bugs (a
// LayerNorm eps of 1e-6 instead of the config's 1e-5 moves the embeddings by ~2e-5). So 5e-6.
const EMB_TOL = { rtol: 0, atol: 5e-6 };

test('teacher forward matches the PyTorch reference (HF layout checkpoint)', async () => {
  const device = await getDevice();
  const fx = fixture('clip');
  const { model } = loadClipVision(join(FIXTURE_DIR, 'clip-tiny'), device);
  try {
    const px = fx.get('pixels');
    const out = scope(() => noGrad(() => model.forward(fromArray(px.data, px.shape))).keep());
    assert.equal([...out.shape], [3, 32]);
    assertClose(await out.read(), fx.get('teacher').data, EMB_TOL, 'teacher embeddings');
    out.dispose();
  } finally {
    model.dispose();
  }
});

test('student with a PEFT adapter (non-zero B) matches W + s·B·A in PyTorch', async () => {
  const device = await getDevice();
  const fx = fixture('clip');
  const { model } = loadClipVision(join(FIXTURE_DIR, 'clip-tiny'), device);
  const lora = readPeftAdapter(join(FIXTURE_DIR, 'clip-tiny-lora'), model.cfg, device);
  try {
    assert.is(lora.scaling, Number(fx.metadata.lora_scaling));
    const px = fx.get('pixels');
    const out = scope(() => noGrad(() => model.forward(fromArray(px.data, px.shape), { lora })).keep());
    assertClose(await out.read(), fx.get('student').data, EMB_TOL, 'student embeddings');
    out.dispose();
  } finally {
    lora.dispose();
    model.dispose();
  }
});

test('gelu hidden_act is honoured', async () => {
  const device = await getDevice();
  const fx = fixture('clip');
  const { model } = loadClipVision(join(FIXTURE_DIR, 'clip-tiny'), device);
  try {
    (model.cfg as { hiddenAct: string }).hiddenAct = 'gelu';
    const px = fx.get('pixels');
    const out = scope(() => noGrad(() => model.forward(fromArray(px.data, px.shape))).keep());
    assertClose(await out.read(), fx.get('teacher_gelu').data, EMB_TOL, 'gelu embeddings');
    out.dispose();
  } finally {
    model.dispose();
  }
});

test('PEFT-initialised student equals the teacher at step 0, and only LoRA gets gradients', async () => {
  const device = await getDevice();
  const model = ClipVisionModel.random(NAMED_CONFIGS.tiny, 3, device);
  const lora = LoraAdapter.create(model.cfg, { ...DEFAULT_LORA, seed: 5 }, device);
  try {
    const px = new Float32Array(2 * 3 * 32 * 32).map((_, i) => Math.sin(i * 0.37));
    const teacher = scope(() => noGrad(() => model.forward(fromArray(px, [2, 3, 32, 32]))).keep());
    const student = scope(() => {
      const s = model.forward(fromArray(px, [2, 3, 32, 32]), { lora });
      backward(sum(s));
      return s.keep();
    });
    const t = await teacher.read();
    const s = await student.read();
    assertClose(s, t, { rtol: 0, atol: 1e-6 }, 'student == teacher at init');
    for (const p of lora.parameters()) {
      assert.ok(p.grad, `${p.name} has a gradient`);
    }
    // B starts at zero, so dL/dA = 0 exactly and dL/dB is non-zero.
    const pair = [...lora.pairs.values()][0];
    const gA = await pair.a.grad!.read();
    const gB = await pair.b.grad!.read();
    assert.ok(gA.every((v) => v === 0), 'dA is zero while B is zero');
    assert.ok(gB.some((v) => v !== 0), 'dB is non-zero');
    for (const w of model.weights.values()) assert.is(w.grad, null, 'frozen weights get no gradient');
    teacher.dispose();
    student.dispose();
  } finally {
    lora.dispose();
    model.dispose();
  }
});

test('mis-shaped checkpoint gives one error: how many problems, the first 20, and how many more', async () => {
  const device = await getDevice();
  const weights = new Map();
  const cfg = NAMED_CONFIGS.tiny;
  weights.set('vision_model.embeddings.class_embedding', fromArray(new Float32Array(63), [63], device));
  try {
    ClipVisionModel.fromWeights(cfg, weights, device);
    assert.unreachable('should throw');
  } catch (e) {
    const msg = (e as Error).message;
    assert.match(msg, /^CLIP vision weights do not fit the config \(40 problems\):\n/);
    assert.match(msg, /class_embedding: expected \[64\], found \[63\]/);
    assert.match(msg, /missing vision_model\.encoder\.layers\.0\.self_attn\.q_proj\.weight \(expected \[64, 64\]\)/);
    assert.is(msg.split('\n').length, 1 + 20 + 1);
    assert.match(msg, /\n  \.\.\. and 20 more$/);
  }
  for (const t of weights.values()) t.dispose();
});

test.run();
