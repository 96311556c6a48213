// CLIP pretraining against Hugging Face's CLIPModel (scripts/fixtures/fx_clip_pretrain.py): one
// step of both towers trained in full on 4 pairs — the symmetric loss with the learnable
// logit_scale, weight gradients of every kind (token, position, patch and class embeddings,
// LayerNorms, attention, projections, logit_scale), the clipped global norm and the AdamW update
// with decay on the matrices only.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { getDevice } from '../../src/gpu/device.ts';
import { loadClip } from '../../src/io/hf-checkpoint.ts';
import { ClipPretrainer, MAX_LOGIT_SCALE, decaysWeight } from '../../src/train/clip-pretrain.ts';
import { expectedShapes } from '../../src/nn/vit.ts';
import { fromArray, type Tensor } from '../../src/tensor/tensor.ts';
import { liveGradNodes } from '../../src/tensor/autograd.ts';
import { FIXTURE_DIR, assertClose, fixture } from '../helpers/fixtures.ts';

const DIR = join(FIXTURE_DIR, 'clip-pretrain');

function idsOf(key: string): number[][] {
  const t = fixture('clip_pretrain').get(key);
  const [B, N] = t.shape;
  return Array.from({ length: B }, (_, b) => Array.from(t.data.subarray(b * N, (b + 1) * N)));
}

// f32 through two layers per tower against float64: the loss to 1e-5 relative (measured 7e-8);
// each gradient to 1e-5 of its largest entry (measured worst 2.0e-6, visual_projection); the
// parameters after the update to 5e-6 absolute, 0.5% of the first Adam step (±lr = 1e-3). Adam's
// first step is lr · g / (|g| + eps): entries whose clipped gradient is near eps = 1e-6 turn an f32
// gradient error into an update error (measured worst 3.5e-6, an entry of the patch embedding;
// the other tensors ≤ 1.4e-7).
test('one pretraining step: loss, weight gradients, grad norm and the AdamW update match HF CLIPModel', async () => {
  const device = await getDevice();
  const fx = fixture('clip_pretrain');
  const clip = loadClip(DIR, device);
  const vision = clip.vision.model;
  const pre = new ClipPretrainer(vision, clip.text, { lr: Number(fx.metadata.lr), totalSteps: 100, weightDecay: 0.2, maxGradNorm: 1, logitScale: clip.logitScale });
  let pixels: Tensor | null = null;
  try {
    const px = fx.get('pixels');
    pixels = fromArray(px.data, px.shape, device).keep();
    const ids = idsOf('ids');
    const byName = new Map(pre.parameters.map((p) => [p.name!, p]));

    const { loss, accuracy } = pre.lossAndGradients(pixels, ids);
    assertClose([await loss.item()], fx.get('loss').data, { rtol: 1e-5, atol: 0 }, 'loss');
    loss.dispose();
    accuracy.dispose();
    for (const key of fx.tensors.keys()) {
      if (!key.startsWith('grad.')) continue;
      const name = key.slice(5);
      const got = await byName.get(name)!.grad!.read();
      const want = fx.get(key).data;
      const scale = want.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      assert.ok(scale > 0, `${name}: the reference gradient is not all zero`);
      assertClose(got, want, { rtol: 0, atol: 1e-5 * scale }, `d loss / d ${name}`);
    }
    for (const p of pre.parameters) p.zeroGrad();

    const result = await pre.step(pixels, ids);
    assertClose([result.gradNorm], fx.get('grad_norm').data, { rtol: 1e-5, atol: 0 }, 'grad norm');
    assert.ok(result.gradNorm > 1, 'the step clips (the test covers clipping)');
    for (const key of fx.tensors.keys()) {
      if (!key.startsWith('after.')) continue;
      const name = key.slice(6);
      assertClose(await byName.get(name)!.read(), fx.get(key).data, { rtol: 0, atol: 5e-6 }, `${name} after the update`);
    }
  } finally {
    pixels?.dispose();
    pre.dispose();
    vision.dispose();
    clip.text.dispose();
  }
});

test('every tensor of both towers is trained; decay only on the weight matrices', async () => {
  const device = await getDevice();
  const clip = loadClip(DIR, device);
  const pre = new ClipPretrainer(clip.vision.model, clip.text, { lr: 1e-3, totalSteps: 10 });
  try {
    const names = pre.parameters.map((p) => p.name!).sort();
    const want = [...expectedShapes(clip.vision.model.cfg).keys(), ...clip.text.weights.keys(), 'logit_scale'].sort();
    assert.equal(names, want);
    assert.ok(pre.parameters.every((p) => p.requiresGrad));
    assert.equal(decaysWeight('text_model.encoder.layers.0.mlp.fc1.weight'), true);
    assert.equal(decaysWeight('vision_model.embeddings.patch_embedding.weight'), true);
    assert.equal(decaysWeight('visual_projection.weight'), true);
    for (const n of ['logit_scale', 'vision_model.embeddings.class_embedding', 'text_model.embeddings.token_embedding.weight', 'vision_model.embeddings.position_embedding.weight', 'vision_model.pre_layrnorm.weight', 'text_model.final_layer_norm.weight', 'text_model.encoder.layers.0.layer_norm1.weight', 'text_model.encoder.layers.0.mlp.fc1.bias']) {
      assert.equal(decaysWeight(n), false, n);
    }
  } finally {
    pre.dispose();
    clip.vision.model.dispose();
    clip.text.dispose();
  }
});

test('logit_scale is clamped at log(100) after an update', async () => {
  const device = await getDevice();
  const fx = fixture('clip_pretrain');
  const clip = loadClip(DIR, device);
  // Starting at the bound with a large learning rate, the update pushes it above (the loss falls as the scale grows on a batch it ranks well) or keeps it below: either way it must end ≤ log(100).
  const pre = new ClipPretrainer(clip.vision.model, clip.text, { lr: 0.5, totalSteps: 10, logitScale: MAX_LOGIT_SCALE });
  const px = fx.get('pixels');
  const pixels = fromArray(px.data, px.shape, device).keep();
  try {
    const ids = idsOf('ids');
    for (let i = 0; i < 3; i++) {
      const r = await pre.step(pixels, ids);
      assert.ok(r.logitScale <= Math.fround(MAX_LOGIT_SCALE), `step ${i}: logit_scale ${r.logitScale}`);
      assert.ok((await pre.logitScale.item()) <= Math.fround(MAX_LOGIT_SCALE));
    }
  } finally {
    pixels.dispose();
    pre.dispose();
    clip.vision.model.dispose();
    clip.text.dispose();
  }
});

test('pretraining steps leave no GPU memory or tape nodes behind; dispose frees what the pretrainer owns', async () => {
  const device = await getDevice();
  const fx = fixture('clip_pretrain');
  const live0 = device.pool.stats().liveBytes;
  const nodes0 = liveGradNodes();
  const clip = loadClip(DIR, device);
  const pre = new ClipPretrainer(clip.vision.model, clip.text, { lr: 1e-3, totalSteps: 10 });
  const px = fx.get('pixels');
  const pixels = fromArray(px.data, px.shape, device).keep();
  try {
    const ids = idsOf('ids');
    await pre.step(pixels, ids);
    const live1 = device.pool.stats().liveBytes;
    for (let i = 0; i < 3; i++) await pre.step(pixels, ids);
    assert.is(device.pool.stats().liveBytes, live1, 'steady state after the first step');
    assert.is(liveGradNodes(), nodes0, 'no tape node outlives a step');
    assert.ok(pre.parameters.every((p) => p.grad === null), 'gradients are dropped after each update');
  } finally {
    pixels.dispose();
    pre.dispose();
    clip.vision.model.dispose();
    clip.text.dispose();
  }
  assert.is(device.pool.stats().liveBytes, live0, 'everything returned to the pool');
});

test.run();
