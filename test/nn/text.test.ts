// CLIP text tower parity with Hugging Face's CLIPTextModelWithProjection (scripts/fixtures/fx_text.py,
// run by transformers 5.18 in float64): the tiny preset's text config, ViT-B/16's (HF defaults:
// width 512, 12 layers) and a legacy eos_token_id = 2 config, on padded batches of 77 and 16
// tokens; gradients of the tiny tower; and the loaders on a CLIPModel folder HF saved itself.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { getDevice } from '../../src/gpu/device.ts';
import { scope, fromArray, type Tensor } from '../../src/tensor/tensor.ts';
import { noGrad, backward } from '../../src/tensor/autograd.ts';
import { mul, sum } from '../../src/ops/index.ts';
import { ClipTextModel, expectedTextShapes, poolPositions } from '../../src/nn/text.ts';
import { HF_TEXT_DEFAULTS, NAMED_CONFIGS, NAMED_TEXT_CONFIGS, parseHfTextConfig, type ClipTextConfig } from '../../src/nn/config.ts';
import { loadClip, loadClipText, loadClipVision, loadTextModel } from '../../src/io/hf-checkpoint.ts';
import { readSafetensors, writeSafetensors } from '../../src/io/safetensors.ts';
import { FIXTURE_DIR, fixture, assertClose, exactNormal, type Tolerance } from '../helpers/fixtures.ts';

// The bar: 1e-5 absolute on the embeddings and hidden states (unit-scale values after
// LayerNorm; the projections are 1/√D-scaled sums). Measured on lavapipe (f32 kernels against
// float64 HF), worst |err| of pooled / text_embeds / last_hidden_state rows: tiny 1.2e-6 /
// 1.3e-6 / 1.5e-6, legacy the same, ViT-B/16 (12 layers) 4.4e-6 / 4.5e-6 / 5.4e-6.
const TOL: Tolerance = { rtol: 0, atol: 1e-5 };

const FULL = join(FIXTURE_DIR, 'clip-tiny-full');

/** fx_text.scale_of: (scale, offset) of tensor `name` [.., fanIn]. */
function scaleOf(name: string, shape: number[]): [number, number] {
  if (name.endsWith('norm1.weight') || name.endsWith('norm2.weight') || name.endsWith('final_layer_norm.weight')) return [0.1, 1];
  if (name.endsWith('.bias')) return name.includes('norm') ? [0.1, 0] : [0.05, 0];
  if (name.includes('position_embedding')) return [0.2, 0];
  return [shape[shape.length - 1] ** -0.5, 0];
}

/** The fixture's weights, regenerated (fx_text.make_weights), as requested-grad-able f32 tensors. */
function fixtureWeights(cfg: ClipTextConfig, usedIds: Set<number>): Map<string, Tensor> {
  const weights = new Map<string, Tensor>();
  [...expectedTextShapes(cfg)].forEach(([name, shape], t) => {
    const n = shape.reduce((a, b) => a * b, 1);
    let data: Float32Array;
    if (name.endsWith('token_embedding.weight')) {
      const D = shape[1];
      data = new Float32Array(n);
      for (const r of usedIds) data.set(exactNormal(D, 100000 + r, 0.5), r * D);
    } else {
      const [s, offset] = scaleOf(name, shape);
      data = exactNormal(n, 5000 + t, s);
      if (offset !== 0) for (let i = 0; i < n; i++) data[i] = Math.fround(offset + data[i]);
    }
    weights.set(name, fromArray(data, shape).keep());
  });
  return weights;
}

function idsOf(key: string): number[][] {
  const t = fixture('text').get(key);
  const [B, N] = t.shape;
  return Array.from({ length: B }, (_, b) => Array.from(t.data.subarray(b * N, (b + 1) * N)));
}

function configOf(key: string): ClipTextConfig {
  const snake = (JSON.parse(fixture('text').metadata.configs) as Record<string, Record<string, unknown>>)[key];
  return parseHfTextConfig({ ...snake, model_type: 'clip_text_model' }, `fx_text ${key}`);
}

function usedIds(): Set<number> {
  return new Set([...idsOf('ids.a'), ...idsOf('ids.b')].flat());
}

async function checkConfig(key: 'tiny' | 'b16' | 'legacy'): Promise<void> {
  const device = await getDevice();
  const fx = fixture('text');
  const cfg = configOf(key);
  assert.is([...expectedTextShapes(cfg).keys()].join(';'), fx.metadata[`${key}.tensors`], 'tensor order (the seeds) as in fx_text');
  const model = ClipTextModel.fromWeights(cfg, fixtureWeights(cfg, usedIds()), device);
  const rows = fx.metadata.hidden_rows.split(',').map(Number);
  try {
    for (const batch of ['a', 'b']) {
      const ids = idsOf(`ids.${batch}`);
      const p = `${key}.${batch}`;
      assert.is(poolPositions(ids, cfg.eosTokenId).join(','), fx.metadata[`${p}.pool_positions`], `${p} pooling positions as HF`);
      const out = scope(() => noGrad(() => {
        const o = model.encode(ids, { hidden: true });
        return { pooled: o.pooled.keep(), embeds: o.embeds.keep(), hidden: o.lastHiddenState!.keep() };
      }));
      try {
        const D = cfg.hiddenSize;
        const N = ids[0].length;
        const full = await out.hidden.read();
        const hidden = new Float32Array(ids.length * rows.length * D);
        ids.forEach((_, b) => rows.forEach((r, k) => hidden.set(full.subarray((b * N + r) * D, (b * N + r + 1) * D), (b * rows.length + k) * D)));
        assertClose(await out.pooled.read(), fx.get(`${p}.pooled`).data, TOL, `${p} pooled`);
        assertClose(await out.embeds.read(), fx.get(`${p}.embeds`).data, TOL, `${p} text_embeds`);
        assertClose(hidden, fx.get(`${p}.hidden`).data, TOL, `${p} last_hidden_state rows`);
        // forward() pools before final_layer_norm (per row): the same embeddings.
        const fwd = scope(() => noGrad(() => model.forward(ids).keep()));
        assertClose(await fwd.read(), await out.embeds.read(), { rtol: 0, atol: 1e-6 }, `${p} forward vs encode`);
        fwd.dispose();
      } finally {
        for (const t of Object.values(out)) t.dispose();
      }
    }
  } finally {
    model.dispose();
  }
}

test('tiny text tower matches HF CLIPTextModelWithProjection (pooled, text_embeds, last_hidden_state) within 1e-5', async () => {
  await checkConfig('tiny');
});

test('legacy eos_token_id 2: pooled at the argmax of the ids, as HF', async () => {
  await checkConfig('legacy');
});

test('ViT-B/16 text config (width 512, 12 layers, 8 heads, 77 tokens) matches HF within 1e-5', async () => {
  await checkConfig('b16');
});

// Gradients of sum(text_embeds · g) with respect to weights of every kind: the projection, the
// final LayerNorm, a q_proj inside the causal attention, an MLP bias, the position table and the
// token table (the rows the ids use). Sums over 385 tokens and 2 layers of f32: tolerance
// 2e-5 relative to the largest entry of each gradient; measured worst 7.0e-7 of it (q_proj).
test('tiny text tower is differentiable: weight gradients match HF autograd', async () => {
  const device = await getDevice();
  const fx = fixture('text');
  const cfg = configOf('tiny');
  const weights = fixtureWeights(cfg, usedIds());
  const model = ClipTextModel.fromWeights(cfg, weights, device);
  const names = ['text_projection.weight', 'text_model.final_layer_norm.weight', 'text_model.final_layer_norm.bias', 'text_model.encoder.layers.0.self_attn.q_proj.weight', 'text_model.encoder.layers.1.mlp.fc2.bias', 'text_model.embeddings.position_embedding.weight', 'text_model.embeddings.token_embedding.weight'];
  for (const n of names) model.w(n).requiresGrad = true;
  try {
    const ids = idsOf('ids.a');
    scope(() => {
      const e = model.forward(ids);
      backward(sum(mul(e, fromArray(exactNormal(e.size, 7000), e.shape))));
    });
    const tokenRows = fx.metadata['tiny.a.grad.token_rows'].split(',').map(Number);
    for (const n of names) {
      let got = await model.w(n).grad!.read();
      if (n.endsWith('token_embedding.weight')) {
        const D = cfg.hiddenSize;
        const rows = new Float32Array(tokenRows.length * D);
        tokenRows.forEach((r, k) => rows.set(got.subarray(r * D, (r + 1) * D), k * D));
        got = rows;
      }
      const want = fx.get(`tiny.a.grad.${n}`).data;
      const scale = want.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      assertClose(got, want, { rtol: 0, atol: 2e-5 * scale }, `d ${n}`);
    }
  } finally {
    model.dispose();
  }
});

test('causal mask alone: tokens after the end-of-text token change no embedding', async () => {
  const device = await getDevice();
  const model = ClipTextModel.random(NAMED_TEXT_CONFIGS.tiny, 4, device);
  try {
    const eos = model.cfg.eosTokenId;
    const a = [49406, 320, 1929, 539, eos, eos, eos, eos, eos, eos];
    const b = [49406, 320, 1929, 539, eos, 0, 77, 4000, 12, 9];
    const out = scope(() => noGrad(() => model.forward([a, b]).keep()));
    const e = await out.read();
    out.dispose();
    const P = model.cfg.projectionDim;
    assert.ok(e.subarray(0, P).every((v, i) => Object.is(v, e[P + i])), 'identical embeddings');
  } finally {
    model.dispose();
  }
});

test('bad token ids are refused with the sequence, position and range', async () => {
  const device = await getDevice();
  const model = ClipTextModel.random(NAMED_TEXT_CONFIGS.tiny, 4, device);
  try {
    assert.throws(() => model.forward([[1, 2, 49408]]), /ClipTextModel: token 2 of sequence 0 is 49408, outside the vocabulary 0\.\.49407/);
    assert.throws(() => model.forward([[1, 2], [3]]), /sequence 1 has 1 tokens but sequence 0 has 2/);
    assert.throws(() => model.forward([new Array<number>(78).fill(3)]), /sequences must have 1\.\.77 tokens \(max_position_embeddings\), got 78/);
    assert.throws(() => model.forward([]), /no sequences given/);
  } finally {
    model.dispose();
  }
});

// ---------------------------------------------------------------------------------------------
// Config and loading.

test("text config: HF CLIPTextConfig's defaults; CLIPModel takes projection_dim from its root", () => {
  assert.equal(parseHfTextConfig({ model_type: 'clip_text_model' }, 'x'), HF_TEXT_DEFAULTS);
  assert.equal(HF_TEXT_DEFAULTS, {
    vocabSize: 49408, hiddenSize: 512, intermediateSize: 2048, numHiddenLayers: 12, numAttentionHeads: 8, maxPositionEmbeddings: 77,
    hiddenAct: 'quick_gelu', layerNormEps: 1e-5, projectionDim: 512, padTokenId: 1, bosTokenId: 49406, eosTokenId: 49407,
  });
  // clip-tiny-full's text_config says projection_dim 512 (HF writes the sub-config's default); CLIPModel uses the root's 16.
  const full = JSON.parse(readFileSync(join(FULL, 'config.json'), 'utf8')) as Record<string, unknown>;
  assert.is(parseHfTextConfig(full, 'c').projectionDim, 16);
  assert.is(parseHfTextConfig({ text_config: {}, vision_config: {} }, 'c').projectionDim, 512);
  assert.is(parseHfTextConfig({ model_type: 'clip_text_model', projection_dim: 24 }, 'c').projectionDim, 24);
  assert.throws(() => parseHfTextConfig({ model_type: 'clip_text_model', eos_token_id: [2, 3] }, 'cfg.json'), /cfg\.json: text eos_token_id must be a non-negative integer token id, got \[2,3\] \(a list of ids is not supported/);
  assert.throws(() => parseHfTextConfig({ model_type: 'clip_text_model', hidden_size: 500 }, 'cfg.json'), /cfg\.json: invalid CLIP text config:\n  - hidden_size 500 is not divisible by num_attention_heads 8/);
  assert.throws(() => parseHfTextConfig({ model_type: 'clip_vision_model', hidden_size: 64 }, 'v.json'), /v\.json: this is a CLIP vision config \(no text_config\); the checkpoint has no text tower/);
});

test('every vision preset has a text tower: OpenAI text configs, and a tiny one with the same projection width', () => {
  assert.equal(Object.keys(NAMED_TEXT_CONFIGS), Object.keys(NAMED_CONFIGS));
  for (const [name, text] of Object.entries(NAMED_TEXT_CONFIGS)) assert.is(text.projectionDim, NAMED_CONFIGS[name].projectionDim, `${name} projection widths`);
  assert.equal(NAMED_TEXT_CONFIGS['vit-b-16'], HF_TEXT_DEFAULTS);
  assert.equal(NAMED_TEXT_CONFIGS['vit-b-32'], HF_TEXT_DEFAULTS);
  assert.equal(NAMED_TEXT_CONFIGS['vit-l-14'], { ...HF_TEXT_DEFAULTS, hiddenSize: 768, intermediateSize: 3072, numAttentionHeads: 12, projectionDim: 768 });
});

test('a preset text tower builds from --model NAME with random weights', async () => {
  const device = await getDevice();
  const { model, logitScale } = loadTextModel('tiny', device, 3);
  try {
    assert.is(logitScale, null);
    const out = scope(() => noGrad(() => model.forward([[49406, 320, 49407]]).keep()));
    assert.equal([...out.shape], [1, 32]);
    assert.ok((await out.read()).every(Number.isFinite));
    out.dispose();
  } finally {
    model.dispose();
  }
});

// HF ran clip-tiny-full in f32 (as saved), so this compares two f32 computations: 1e-5 is loose.
test('CLIPModel folder saved by HF: text tower, vision tower and logit_scale load and match HF', async () => {
  const device = await getDevice();
  const fx = fixture('text');
  const ids = idsOf('full.ids');
  const pixels = exactNormal(2 * 3 * 16 * 16, 7100);
  const text = loadClipText(FULL, device);
  const vision = loadClipVision(FULL, device);
  const both = loadClip(FULL, device);
  try {
    assert.ok(Math.abs(text.logitScale! - Number(fx.metadata['full.logit_scale'])) < 1e-7);
    assert.is(both.logitScale, text.logitScale);
    for (const [label, m] of [['loadClipText', text.model], ['loadClip', both.text]] as const) {
      const e = scope(() => noGrad(() => m.forward(ids).keep()));
      assertClose(await e.read(), fx.get('full.text_embeds').data, TOL, `${label} text_embeds`);
      e.dispose();
    }
    for (const [label, m] of [['loadClipVision', vision.model], ['loadClip', both.vision.model]] as const) {
      const e = scope(() => noGrad(() => m.forward(fromArray(pixels, [2, 3, 16, 16])).keep()));
      assertClose(await e.read(), fx.get('full.image_embeds').data, TOL, `${label} image_embeds`);
      e.dispose();
    }
  } finally {
    for (const m of [text.model, vision.model, both.text, both.vision.model]) m.dispose();
  }
});

/** A CLIPTextModelWithProjection folder made from clip-tiny-full: its text_config (with the model's projection_dim) and the text tensors, as HF saves that class. */
function textOnlyFolder(edit?: (tensors: Map<string, { shape: number[]; data: Float32Array }>) => void): string {
  const dir = mkdtempSync(join(tmpdir(), 'genalign-text-'));
  const full = JSON.parse(readFileSync(join(FULL, 'config.json'), 'utf8')) as { text_config: Record<string, unknown>; projection_dim: number };
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...full.text_config, architectures: ['CLIPTextModelWithProjection'], projection_dim: full.projection_dim }));
  const all = readSafetensors(join(FULL, 'model.safetensors')).tensors;
  const text = new Map([...all].filter(([name]) => name.startsWith('text_model.') || name === 'text_projection.weight'));
  edit?.(text);
  writeSafetensors(join(dir, 'model.safetensors'), Object.fromEntries(text));
  return dir;
}

test('CLIPTextModelWithProjection folder loads as the text tower; as a vision model it is refused clearly', async () => {
  const device = await getDevice();
  const fx = fixture('text');
  const dir = textOnlyFolder();
  const { model, logitScale } = loadClipText(dir, device);
  try {
    assert.is(logitScale, null);
    const e = scope(() => noGrad(() => model.forward(idsOf('full.ids')).keep()));
    assertClose(await e.read(), fx.get('full.text_embeds').data, TOL, 'text-only checkpoint text_embeds');
    e.dispose();
  } finally {
    model.dispose();
  }
  assert.throws(() => loadClipVision(dir, device), /config\.json: this is a CLIP text config \(a CLIPTextModel checkpoint\); it has no vision tower/);
});

test('missing and mis-shaped text tensors: one error naming each tensor, the file and the expected shape', async () => {
  const device = await getDevice();
  const dir = textOnlyFolder((t) => {
    t.delete('text_projection.weight');
    t.set('text_model.encoder.layers.0.self_attn.k_proj.weight', { shape: [32, 31], data: new Float32Array(32 * 31) });
  });
  try {
    loadClipText(dir, device);
    assert.unreachable('should throw');
  } catch (e) {
    const m = (e as Error).message;
    assert.match(m, `${dir}: checkpoint does not match its config.json (2 problems):`);
    assert.match(m, /missing tensor text_projection\.weight \(expected \[16, 32\]\)/);
    assert.match(m, /text_model\.encoder\.layers\.0\.self_attn\.k_proj\.weight: expected \[32, 32\], found \[32, 31\] in model\.safetensors/);
  }
  // A CLIPModel without logit_scale loads its towers one by one, but not as a whole CLIP.
  const noScale = mkdtempSync(join(tmpdir(), 'genalign-text-'));
  copyFileSync(join(FULL, 'config.json'), join(noScale, 'config.json'));
  const all = readSafetensors(join(FULL, 'model.safetensors')).tensors;
  all.delete('logit_scale');
  writeSafetensors(join(noScale, 'model.safetensors'), Object.fromEntries(all));
  assert.throws(() => loadClip(noScale, device), /missing tensor logit_scale \(expected \[\]\)/);
});

test.run();
