// readPeftAdapter and PEFT's LoraConfig semantics: a missing lora_alpha is PEFT's default 8 (not r),
// and per-module rank_pattern / alpha_pattern, which would change some modules' scaling, are refused.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getDevice } from '../../src/gpu/device.ts';
import { readModelConfig } from '../../src/io/hf-checkpoint.ts';
import { readPeftAdapter } from '../../src/io/peft.ts';
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

test.run();
