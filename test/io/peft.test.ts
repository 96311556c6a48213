// readPeftAdapter and PEFT's LoraConfig semantics: a missing lora_alpha is PEFT's default 8 (not r),
// and per-module rank_pattern / alpha_pattern, which would change some modules' scaling, are refused.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getDevice } from '../../src/gpu/device.ts';
import { readModelConfig } from '../../src/io/hf-checkpoint.ts';
import { readPeftAdapter } from '../../src/io/peft.ts';
import { readSafetensors, writeSafetensors } from '../../src/io/safetensors.ts';
import { FIXTURE_DIR } from '../helpers/fixtures.ts';

const root = mkdtempSync(join(tmpdir(), 'genalign-peft-'));
test.after(() => rmSync(root, { recursive: true, force: true }));
const cfg = readModelConfig(join(FIXTURE_DIR, 'clip-tiny'));

function adapterWith(name: string, edit: (c: Record<string, unknown>) => void): string {
  const dir = join(root, name);
  cpSync(join(FIXTURE_DIR, 'clip-tiny-lora'), dir, { recursive: true });
  const c = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
  edit(c);
  writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify(c));
  return dir;
}

test('lora_alpha absent: PEFT\'s default 8, so the scaling of the rank-4 fixture adapter is 2', async () => {
  const device = await getDevice();
  const a = readPeftAdapter(adapterWith('no-alpha', (c) => delete c.lora_alpha), cfg, device);
  assert.is(a.scaling, 8 / 4);
  a.dispose();
  const b = readPeftAdapter(adapterWith('alpha-16', (c) => (c.lora_alpha = 16)), cfg, device);
  assert.is(b.scaling, 16 / 4);
  b.dispose();
});

test('rank_pattern / alpha_pattern with entries are refused, naming the key; empty ones are fine', async () => {
  const device = await getDevice();
  assert.throws(() => readPeftAdapter(adapterWith('alpha-pattern', (c) => (c.alpha_pattern = { q_proj: 16 })), cfg, device), /adapter_config\.json: alpha_pattern is set \(q_proj\); per-module ranks or alphas are not supported/);
  assert.throws(() => readPeftAdapter(adapterWith('rank-pattern', (c) => (c.rank_pattern = { 'layers.0': 2 })), cfg, device), /rank_pattern is set \(layers\.0\)/);
  const ok = readPeftAdapter(adapterWith('empty-patterns', (c) => Object.assign(c, { rank_pattern: {}, alpha_pattern: {} })), cfg, device);
  assert.is(ok.scaling, 2);
  ok.dispose();
});

test('adapter_config.json or adapter_model.safetensors that is a directory: the error names it and what was expected', async () => {
  const device = await getDevice();
  for (const [name, expected] of [
    ['adapter_config.json', "the adapter's configuration (the JSON file adapter_config.json that PEFT's save_pretrained writes)"],
    ['adapter_model.safetensors', "the adapter's weights (the safetensors file adapter_model.safetensors that PEFT's save_pretrained writes)"],
  ]) {
    const dir = adapterWith(`dir-${name}`, () => undefined);
    rmSync(join(dir, name));
    mkdirSync(join(dir, name));
    assert.throws(() => readPeftAdapter(dir, cfg, device), (e: Error) => e.message === `${join(dir, name)} is a directory; expected ${expected}`);
  }
});

test('an adapter with hundreds of foreign tensors: the error lists the first 20 and how many more', async () => {
  const device = await getDevice();
  const dir = adapterWith('foreign-keys', () => undefined);
  const path = join(dir, 'adapter_model.safetensors');
  const st = readSafetensors(path);
  const tensors: Record<string, { shape: number[]; data: Float32Array }> = Object.fromEntries(st.tensors);
  for (let i = 0; i < 300; i++) tensors[`base_model.model.text_model.layers.${i}.lora_A.weight`] = { shape: [4, 64], data: new Float32Array(256) };
  writeSafetensors(path, tensors, st.metadata);
  try {
    readPeftAdapter(dir, cfg, device);
    assert.unreachable();
  } catch (e) {
    const m = (e as Error).message;
    assert.match(m, `${path}: adapter does not fit the model (300 problems):`);
    const lines = m.split('\n');
    assert.is(lines.length, 1 + 20 + 1, m);
    assert.match(lines[1], /^  - base_model\.model\.text_model\.layers\.\d+\.lora_A\.weight: not a LoRA weight of this CLIP vision model/);
    assert.is(lines[21], '  ... and 280 more');
  }
});

test.run();
