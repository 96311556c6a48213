// HF checkpoint loading: config defaults, sharded index, F16/BF16 conversion, ignored tensors,
// one error listing every problem, and the safetensors-only message for .bin checkpoints.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync, copyFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { getDevice } from '../../src/gpu/device.ts';
import { loadClipVision, loadModel, preprocessingOf } from '../../src/io/hf-checkpoint.ts';
import { parseHfConfig, HF_DEFAULTS } from '../../src/nn/config.ts';
import { SafetensorsFile, readSafetensors } from '../../src/io/safetensors.ts';
import { FIXTURE_DIR } from '../helpers/fixtures.ts';

const MODEL = join(FIXTURE_DIR, 'clip-tiny');

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'genalign-hf-'));
}

function f32ToF16(v: number): number {
  const f = new Float32Array([v]);
  const x = new Uint32Array(f.buffer)[0];
  const sign = (x >>> 16) & 0x8000;
  let e = ((x >>> 23) & 0xff) - 127 + 15;
  let m = x & 0x7fffff;
  if (e <= 0) {
    if (e < -10) return sign;
    m = (m | 0x800000) >> (1 - e);
    return sign | ((m + 0x1000) >> 13);
  }
  if (e >= 31) return sign | 0x7c00;
  const r = sign | (e << 10) | (m >> 13);
  return m & 0x1000 ? r + 1 : r;
}

/** Writes tensors in a given float dtype (F16/BF16) as safetensors. */
function writeTyped(path: string, tensors: Map<string, { shape: number[]; data: Float32Array }>, dtype: 'F16' | 'BF16'): void {
  const header: Record<string, unknown> = {};
  const blobs: Buffer[] = [];
  let off = 0;
  for (const [name, t] of tensors) {
    const b = Buffer.alloc(t.data.length * 2);
    for (let i = 0; i < t.data.length; i++) {
      const v = dtype === 'F16' ? f32ToF16(t.data[i]) : new Uint32Array(new Float32Array([t.data[i]]).buffer)[0] >>> 16;
      b.writeUInt16LE(v, i * 2);
    }
    header[name] = { dtype, shape: t.shape, data_offsets: [off, off + b.length] };
    off += b.length;
    blobs.push(b);
  }
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(path, Buffer.concat([len, json, ...blobs]));
}

test('config defaults: HF omits fields equal to CLIPVisionConfig defaults', () => {
  const cfg = parseHfConfig({ vision_config: { hidden_size: 96 }, projection_dim: 32 }, 'x');
  assert.is(cfg.hiddenSize, 96);
  assert.is(cfg.projectionDim, 32);
  assert.is(cfg.numHiddenLayers, HF_DEFAULTS.numHiddenLayers);
  assert.is(cfg.hiddenAct, 'quick_gelu');
  assert.is(cfg.layerNormEps, 1e-5);
  assert.is(cfg.patchSize, 32);
  assert.is(cfg.imageSize, 224);
  assert.throws(() => parseHfConfig({ hidden_act: 'relu' }, 'cfg.json'), /cfg\.json: hidden_act 'relu' is not supported/);
  // A CLIPVisionConfig on its own (no vision_config wrapper).
  assert.is(parseHfConfig({ hidden_size: 1024, num_attention_heads: 16, patch_size: 14 }, 'x').patchSize, 14);
});

test('sharded checkpoint in F16 and BF16 loads and ignores text tensors', async () => {
  const device = await getDevice();
  const all = readSafetensors(join(MODEL, 'model.safetensors')).tensors;
  const ref = loadClipVision(MODEL, device);
  for (const dtype of ['F16', 'BF16'] as const) {
    const dir = tmp();
    copyFileSync(join(MODEL, 'config.json'), join(dir, 'config.json'));
    const names = [...all.keys()];
    const half = Math.ceil(names.length / 2);
    const shards = [names.slice(0, half), names.slice(half)];
    const weightMap: Record<string, string> = {};
    shards.forEach((ns, i) => {
      const file = `model-0000${i + 1}-of-00002.safetensors`;
      writeTyped(join(dir, file), new Map(ns.map((n) => [n, all.get(n)!])), dtype);
      for (const n of ns) weightMap[n] = file;
    });
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
    const { model } = loadClipVision(dir, device);
    const name = 'vision_model.encoder.layers.1.mlp.fc1.weight';
    const a = await model.w(name).read();
    const b = await ref.model.w(name).read();
    // writeTyped rounds to F16 (half an ulp: 2^-11 relative, 2^-25 absolute among subnormals) and
    // truncates to BF16 (under one ulp: 2^-7 relative); the loaded weight must be exactly that value.
    const [rel, abs] = dtype === 'F16' ? [2 ** -11, 2 ** -25] : [2 ** -7, 0];
    for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i] - b[i]) <= rel * Math.abs(b[i]) + abs, `${dtype} ${name}[${i}]: ${a[i]} vs ${b[i]}`);
    model.dispose();
  }
  ref.model.dispose();
});

test('f16 loading (--precision f16): F16 weights reach the GPU bit for bit, BF16/F32 are rounded to nearest f16, never through an f32 copy on the host', async () => {
  const device = await getDevice();
  const all = readSafetensors(join(MODEL, 'model.safetensors')).tensors;
  const name = 'vision_model.encoder.layers.1.mlp.fc1.weight';
  // Every host read of a tensor as f32 fails while the f16 model loads.
  const f32Read = SafetensorsFile.prototype.float32;
  for (const dtype of ['F16', 'BF16', 'F32'] as const) {
    const dir = tmp();
    copyFileSync(join(MODEL, 'config.json'), join(dir, 'config.json'));
    if (dtype === 'F32') copyFileSync(join(MODEL, 'model.safetensors'), join(dir, 'model.safetensors'));
    else writeTyped(join(dir, 'model.safetensors'), all, dtype);
    const stored = readSafetensors(join(dir, 'model.safetensors')).tensors.get(name)!.data;
    SafetensorsFile.prototype.float32 = () => {
      throw new Error('float32() called while loading in f16');
    };
    let model;
    try {
      model = loadClipVision(dir, device, 'f16').model;
    } finally {
      SafetensorsFile.prototype.float32 = f32Read;
    }
    assert.is(model.dtype, 'f16');
    for (const t of model.weights.values()) assert.is(t.dtype, 'f16');
    const f32Model = loadClipVision(MODEL, device).model;
    assert.is(model.weightBytes * 2, f32Model.weightBytes, 'half the bytes of the f32 model');
    f32Model.dispose();
    const got = await model.w(name).read();
    for (let i = 0; i < got.length; i++) {
      const v = stored[i];
      if (dtype === 'F16') assert.is(got[i], v, `${dtype}[${i}]: the stored value`);
      else {
        // Nearest f16: within half an f16 ulp (2^-11 relative; 2^-25 absolute among subnormals),
        // and on the f16 grid (an f16 value has at most 11 significant bits).
        assert.ok(Math.abs(got[i] - v) <= 2 ** -11 * Math.abs(v) + 2 ** -25, `${dtype}[${i}]: ${got[i]} vs ${v}`);
        const scaled = got[i] === 0 ? 0 : got[i] * 2 ** (10 - Math.max(-14, Math.floor(Math.log2(Math.abs(got[i])))));
        assert.ok(Number.isInteger(scaled), `${dtype}[${i}]: ${got[i]} is an f16 value`);
      }
    }
    model.dispose();
  }
});

test('missing and mis-shaped tensors are all listed in one error', async () => {
  const device = await getDevice();
  const dir = tmp();
  copyFileSync(join(MODEL, 'config.json'), join(dir, 'config.json'));
  const all = readSafetensors(join(MODEL, 'model.safetensors')).tensors;
  all.delete('vision_model.post_layernorm.bias');
  all.delete('visual_projection.weight');
  all.set('vision_model.encoder.layers.0.mlp.fc1.weight', { shape: [4, 4], data: new Float32Array(16) });
  const { writeSafetensors } = await import('../../src/io/safetensors.ts');
  writeSafetensors(join(dir, 'model.safetensors'), Object.fromEntries(all));
  try {
    loadClipVision(dir, device);
    assert.unreachable();
  } catch (e) {
    const m = (e as Error).message;
    assert.match(m, /3 problems/);
    assert.match(m, /missing tensor vision_model\.post_layernorm\.bias \(expected \[64\]\)/);
    assert.match(m, /missing tensor visual_projection\.weight \(expected \[32, 64\]\)/);
    assert.match(m, /layers\.0\.mlp\.fc1\.weight: expected \[128, 64\], found \[4, 4\] in model\.safetensors/);
  }
});

test('a checkpoint with thousands of problems: the error lists the first 20 and how many more', async () => {
  const device = await getDevice();
  const dir = tmp();
  // clip-tiny's 2 layers of weights under a config of 100 layers: 98 × 16 tensors are missing.
  const cfg = JSON.parse(readFileSync(join(MODEL, 'config.json'), 'utf8')) as { vision_config: Record<string, unknown> };
  cfg.vision_config.num_hidden_layers = 100;
  writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg));
  copyFileSync(join(MODEL, 'model.safetensors'), join(dir, 'model.safetensors'));
  try {
    loadClipVision(dir, device);
    assert.unreachable();
  } catch (e) {
    const m = (e as Error).message;
    assert.match(m, `${dir}: checkpoint does not match its config.json (1568 problems):`);
    const lines = m.split('\n');
    assert.is(lines.length, 1 + 20 + 1, m);
    assert.match(lines[1], /^  - missing tensor vision_model\.encoder\.layers\.2\./);
    assert.is(lines[21], '  ... and 1548 more');
  }
});

test('config.json with num_hidden_layers 1e8: loadClipVision fails at once, naming config.json and the field', async () => {
  const device = await getDevice();
  const dir = tmp();
  const cfg = JSON.parse(readFileSync(join(MODEL, 'config.json'), 'utf8')) as { vision_config: Record<string, unknown> };
  cfg.vision_config.num_hidden_layers = 1e8;
  writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg));
  copyFileSync(join(MODEL, 'model.safetensors'), join(dir, 'model.safetensors'));
  const t0 = Date.now();
  assert.throws(() => loadClipVision(dir, device), (e: Error) => e.message.startsWith(`${join(dir, 'config.json')}: invalid CLIP vision config:\n  - num_hidden_layers 100000000 is above genalign's limit of 256`));
  assert.ok(Date.now() - t0 < 1000, `${Date.now() - t0} ms`);
});

test('a directory where a file should be: config.json, model.safetensors, the index, a shard, preprocessor_config.json', async () => {
  const device = await getDevice();
  /** A copy of clip-tiny in which `edit` replaces files with directories; the error loadClipVision gives. */
  const loadError = (edit: (dir: string) => void): string => {
    const dir = tmp();
    cpSync(MODEL, dir, { recursive: true });
    edit(dir);
    try {
      loadClipVision(dir, device).model.dispose();
    } catch (e) {
      return (e as Error).message;
    }
    assert.unreachable('loaded');
    return '';
  };
  const asDir = (dir: string, name: string): void => {
    rmSync(join(dir, name), { force: true });
    mkdirSync(join(dir, name));
  };
  let dir = '';
  let m = loadError((d) => asDir((dir = d), 'config.json'));
  assert.is(m, `${join(dir, 'config.json')} is a directory; expected the model's configuration (the JSON file config.json of an HF CLIP model)`);
  m = loadError((d) => asDir((dir = d), 'model.safetensors'));
  assert.is(m, `${join(dir, 'model.safetensors')} is a directory; expected the model's weights (a safetensors file)`);
  m = loadError((d) => asDir((dir = d), 'model.safetensors.index.json'));
  assert.is(m, `${join(dir, 'model.safetensors.index.json')} is a directory; expected the JSON index of a sharded checkpoint (its weight_map names the shard files)`);
  m = loadError((d) => {
    dir = d;
    rmSync(join(d, 'model.safetensors'));
    mkdirSync(join(d, 'model-00001-of-00001.safetensors'));
    writeFileSync(join(d, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { 'visual_projection.weight': 'model-00001-of-00001.safetensors' } }));
  });
  assert.is(m, `${join(dir, 'model-00001-of-00001.safetensors')} is a directory; expected a checkpoint shard named in ${join(dir, 'model.safetensors.index.json')} (a safetensors file)`);
  m = loadError((d) => asDir((dir = d), 'preprocessor_config.json'));
  const preprocessor = `${join(dir, 'preprocessor_config.json')} is a directory; expected the model's image preprocessing settings (the JSON file preprocessor_config.json)`;
  assert.is(m, preprocessor);
  // --validate reads it without loading the weights.
  assert.throws(() => preprocessingOf(dir), (e: Error) => e.message === preprocessor);
});

test('.bin checkpoints get a safetensors-only explanation; bad model names are listed', async () => {
  const device = await getDevice();
  const dir = tmp();
  copyFileSync(join(MODEL, 'config.json'), join(dir, 'config.json'));
  writeFileSync(join(dir, 'pytorch_model.bin'), 'x');
  assert.throws(() => loadClipVision(dir, device), /pytorch_model\.bin.*only safetensors/s);
  assert.throws(() => loadModel('vit-h-99', device), /not a directory and not a preset \(presets: tiny, vit-b-32/);
});

test('a truncated checkpoint is reported with its file name', async () => {
  const device = await getDevice();
  const dir = tmp();
  copyFileSync(join(MODEL, 'config.json'), join(dir, 'config.json'));
  const bytes = readFileSync(join(MODEL, 'model.safetensors'));
  writeFileSync(join(dir, 'model.safetensors'), bytes.subarray(0, bytes.length - 1000));
  assert.throws(() => loadClipVision(dir, device), /model\.safetensors.*truncated/);
});

test.run();
