// `npm run eval` as a user meets it: a bad --out fails before any GPU work with a message that
// names the flag; a diverged adapter is an error (no NaN metrics written); an adapter trained
// on a seeded random preset refuses another --seed; decode warnings name the file once with
// the decoder's reason.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { chmodSync, cpSync, existsSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { BASE_SEED_KEY, readAdapterBase } from '../../src/io/peft.ts';
import { readSafetensors } from '../../src/io/safetensors.ts';
import { FIXTURE_DIR } from '../helpers/fixtures.ts';
import { testF16 } from '../helpers/f16.ts';
import { tmp, tinyDataset, runCli, divergedAdapter, seededPresetAdapter } from './helpers.ts';

const root = tmp('cli-eval');
const MODEL = join(FIXTURE_DIR, 'clip-tiny');
const FIXTURE_LORA = join(FIXTURE_DIR, 'clip-tiny-lora');
test.after(() => rmSync(root, { recursive: true, force: true }));

let data = '';
test.before(async () => {
  data = await tinyDataset(join(root, 'data'), 8);
});

test('eval --out: an existing file, a path under a file and an unwritable place fail up front, naming --out', async () => {
  const file = join(data, 'pairs.jsonl');
  const isFile = await runCli('eval', ['--data', data, '--model', MODEL, '--out', file]);
  assert.is(isFile.code, 2, isFile.stderr);
  assert.match(isFile.stderr, `eval: --out ${file} is an existing file, but --out names a directory (for metrics.json and figure3.svg/png)`);
  assert.not.match(isFile.stderr, /EEXIST/);
  const under = await runCli('eval', ['--data', data, '--model', MODEL, '--out', join(file, 'sub')]);
  assert.is(under.code, 2, under.stderr);
  assert.match(under.stderr, `eval: --out ${join(file, 'sub')}: ${file} is a file`);
  // Unwritable: a read-only directory for a normal user; root writes anywhere a mode allows, so
  // it gets /proc, which takes no new files.
  let target: string;
  let why: RegExp;
  if (process.getuid?.() === 0) {
    target = '/proc/genalign-eval-test';
    why = /cannot write into \/proc \(/;
  } else {
    const ro = join(root, 'read-only');
    mkdirSync(ro);
    chmodSync(ro, 0o555);
    target = join(ro, 'out');
    why = /cannot write into .*read-only \(permission denied\)/;
  }
  const unwritable = await runCli('eval', ['--data', data, '--model', MODEL, '--out', target]);
  assert.is(unwritable.code, 2, unwritable.stderr);
  assert.match(unwritable.stderr, `eval: --out ${target}: `);
  assert.match(unwritable.stderr, why);
  assert.not.match(unwritable.stderr, /EACCES|adapter:/, 'no bare Node error, and no GPU started');
});

testF16('eval --precision f16 with the fixture adapter: the metrics of the f32 eval within f16 rounding', async () => {
  const outs: Record<string, Record<string, number>> = {};
  for (const precision of ['f32', 'f16']) {
    const out = join(root, `eval-${precision}`);
    const r = await runCli('eval', ['--data', data, '--model', MODEL, '--lora', FIXTURE_LORA, '--out', out, '--plot', 'none', '--precision', precision]);
    assert.is(r.code, 0, r.stderr);
    outs[precision] = JSON.parse(readFileSync(join(out, 'metrics.json'), 'utf8')) as Record<string, number>;
  }
  // Cosines of f16 embeddings (each within ~1e-3 relative of the f32 one, test/cli/embed.test.ts)
  // move by a few 1e-3; recall on 8 pairs is a count, which such a change may not flip.
  assert.equal(Object.keys(outs.f16).sort(), Object.keys(outs.f32).sort());
  for (const key of ['paired_cosine_before', 'paired_cosine_after', 'gap_before', 'gap_after']) {
    assert.ok(Math.abs(outs.f32[key] - outs.f16[key]) <= 5e-3, `${key}: f32 ${outs.f32[key]} vs f16 ${outs.f16[key]}`);
  }
  for (const key of ['r1_before', 'r1_after', 'r5_before', 'r5_after']) {
    assert.ok(Math.abs(outs.f32[key] - outs.f16[key]) <= 1 / 8, `${key}: at most one of 8 pairs changes rank (f32 ${outs.f32[key]} vs f16 ${outs.f16[key]})`);
  }
  assert.is(outs.f16.n_val, outs.f32.n_val);
});

test('eval --lora with diverged weights: an error naming the adapter, and nothing written', async () => {
  const big = divergedAdapter(join(root, 'lora-1e30'), 1e30);
  const out = join(root, 'eval-1e30');
  const r = await runCli('eval', ['--data', data, '--model', MODEL, '--lora', big, '--out', out, '--plot', 'none']);
  assert.is(r.code, 1, r.stderr);
  assert.match(r.stderr, `error: embeddings of the LoRA student (--lora ${big}) are not finite (NaN or ±Inf)`);
  assert.match(r.stderr, /diverged/);
  assert.not.ok(existsSync(out), 'no metrics.json (nor its directory)');
  assert.not.match(r.stdout, /NaN|null/);
  // NaN weights are refused when the adapter is read, naming the file and a tensor.
  const nan = divergedAdapter(join(root, 'lora-nan'), NaN);
  const n = await runCli('eval', ['--data', data, '--model', MODEL, '--lora', nan, '--out', out, '--plot', 'none']);
  assert.is(n.code, 1, n.stderr);
  assert.match(n.stderr, `error: ${join(nan, 'adapter_model.safetensors')}: adapter weights are not finite (NaN or ±Inf) in 16 tensor(s)`);
  assert.match(n.stderr, /layers\.0\.self_attn\.q_proj\.lora_A\.weight \(first at index 0: NaN\)/);
  assert.not.ok(existsSync(out));
});

test('adapter of a seeded random preset: the seed travels in the safetensors metadata and eval refuses another --seed', async () => {
  const dir = await seededPresetAdapter(join(root, 'tiny-seed5'));
  // A directory base model records nothing (its weights do not depend on a seed).
  const fromDir = await seededPresetAdapter(join(root, 'dir-base'), MODEL);
  assert.equal(readAdapterBase(dir), { model: 'tiny', seed: 5 });
  assert.is(readAdapterBase(fromDir), null);
  assert.is(readAdapterBase(FIXTURE_LORA), null);
  assert.is(readSafetensors(join(dir, 'adapter_model.safetensors')).metadata[BASE_SEED_KEY], '5');
  // adapter_config.json keeps exactly PEFT's keys: PEFT before 0.14 rejects unknown ones.
  const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
  assert.equal(Object.keys(cfg).sort(), ['base_model_name_or_path', 'bias', 'inference_mode', 'lora_alpha', 'lora_dropout', 'modules_to_save', 'peft_type', 'r', 'target_modules', 'task_type']);

  const out = join(root, 'eval-seed');
  const wrong = await runCli('eval', ['--data', data, '--model', 'tiny', '--lora', dir, '--out', out, '--plot', 'none']);
  assert.is(wrong.code, 2, wrong.stderr);
  assert.match(wrong.stderr, `eval: --lora ${dir} was trained on the preset model 'tiny' with --seed 5`);
  assert.match(wrong.stderr, /but --seed is 0\. Pass --seed 5\./);
  assert.not.ok(existsSync(out));
  const right = await runCli('eval', ['--data', data, '--model', 'tiny', '--lora', dir, '--seed', '5', '--out', out, '--plot', 'none']);
  assert.is(right.code, 0, right.stderr);
  assert.ok(existsSync(join(out, 'metrics.json')));
});

test('eval decode warnings name the file once, with the decoder\'s reason', async () => {
  const d = join(root, 'data-cut');
  cpSync(data, d, { recursive: true });
  const cut = [join(d, 'generated', '1_0.jpg'), join(d, 'generated', '2_0.jpg'), join(d, 'generated', '3_0.jpg')];
  for (const p of cut) {
    const bytes = readFileSync(p);
    writeFileSync(p, bytes.subarray(0, bytes.length >> 1));
  }
  const r = await runCli('eval', ['--data', d, '--model', MODEL, '--out', join(root, 'eval-cut'), '--plot', 'none']);
  assert.is(r.code, 0, r.stderr);
  for (const p of cut) {
    const lines = r.stderr.split('\n').filter((l) => l.includes(p));
    assert.is(lines.length, 1, r.stderr);
    assert.is(lines[0].split(p).length, 2, `the path once: ${lines[0]}`);
    // libjpeg words a cut file as "premature end of JPEG image" or "Premature end of JPEG file".
    assert.ok(/^warning: eval: skipping \S+: cannot decode image \([^()]*premature end of JPEG (image|file)\)$/i.test(lines[0]), lines[0]);
  }
  assert.not.match(r.stderr, /Unknown error/);
});

test('eval: file names with terminal escapes or a right-to-left override are printed escaped, never raw', async () => {
  const d = join(root, 'data-evil');
  cpSync(data, d, { recursive: true });
  const evil = '\x1b[2J\x1b[31mevil.png';
  writeFileSync(join(d, 'generated', evil), 'not an image');
  const lines = [
    // A corrupt generated image with an escape sequence in its name: reported as undecodable.
    { id: 'evil', real: 'real/0.png', generated: `generated/${evil}` },
    // A missing one with a right-to-left override: reported as missing by the dataset check.
    { id: 'gone', real: 'real/1.png', generated: ['generated/1_0.jpg', 'generated/\u202egnp.exe.png'] },
  ];
  writeFileSync(join(d, 'pairs.jsonl'), readFileSync(join(d, 'pairs.jsonl'), 'utf8') + lines.map((l) => JSON.stringify(l)).join('\n') + '\n');
  const r = await runCli('eval', ['--data', d, '--model', MODEL, '--out', join(root, 'eval-evil'), '--plot', 'none']);
  assert.is(r.code, 0, r.stderr);
  for (const [name, text] of [['stdout', r.stdout], ['stderr', r.stderr]]) {
    assert.not.ok(text.includes('\x1b'), `no raw ESC byte on ${name}`);
    assert.not.ok(text.includes('\u202e'), `no raw U+202E on ${name}`);
  }
  assert.ok(r.stderr.includes(`warning: eval: skipping ${join(d, 'generated', '\\x1b[2J\\x1b[31mevil.png')}: cannot decode image (`), r.stderr);
  assert.ok(r.stderr.includes(`\n  ${join(d, 'generated', '\\u202egnp.exe.png')}\n`), r.stderr);
  assert.ok(r.stderr.includes(`wrote ${join(root, 'eval-evil', 'metrics.json')}`), r.stderr);
});

test.run();
