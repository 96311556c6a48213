// `npm run embed` end to end, and the PEFT round trip: a trained adapter written by the trainer,
// loaded by `embed --lora`, gives the in-memory student's embeddings; its keys, shapes and config
// are what PEFT writes for CLIPVisionModelWithProjection (test/fixtures/peft_keys.json).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, cpSync, mkdirSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { getDevice } from '../../src/gpu/device.ts';
import { NAMED_CONFIGS } from '../../src/nn/config.ts';
import { readPeftAdapter } from '../../src/io/peft.ts';
import { parsePreprocessorConfig } from '../../src/io/image.ts';
import { readSafetensors } from '../../src/io/safetensors.ts';
import { livePreprocessWorkers } from '../../src/io/preprocess-pool.ts';
import { embedPaths } from '../../src/train/embedding.ts';
import { train, type TrainOptions } from '../../src/train/trainer.ts';
import { assertClose, fixture, FIXTURE_DIR } from '../helpers/fixtures.ts';
import { testF16 } from '../helpers/f16.ts';
import { tmp, tinyDataset, runCli, spawnCli, divergedAdapter, seededPresetAdapter, type CliResult } from './helpers.ts';
import { listImages } from '../../src/cli/embed-command.ts';
import { trainOptions } from '../helpers/train-options.ts';

const root = tmp('cli-embed');
const MODEL = join(FIXTURE_DIR, 'clip-tiny');
const IMAGES = join(FIXTURE_DIR, 'images');
test.after(() => rmSync(root, { recursive: true, force: true }));

test('embed: a model-sized PNG plus a corrupt .jpg → exit 0, warning names the file, row equals the PyTorch teacher', async () => {
  const dir = join(root, 'imgs');
  mkdirSync(dir);
  copyFileSync(join(IMAGES, 'a_square32.png'), join(dir, 'a_square32.png'));
  writeFileSync(join(dir, 'broken.jpg'), Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0, 16, 0x4a, 0x46, 0x49, 0x46, 0, 1, 2, 3]));
  const out = join(root, 'x.safetensors');
  const r = await runCli('embed', ['--model', MODEL, '--images', dir, '--out', out]);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stderr, new RegExp(`warning: skipping .*broken\\.jpg`));
  // The path once, then the decoder's reason.
  assert.match(r.stderr, `warning: skipping ${join(dir, 'broken.jpg')}: cannot decode image (`);
  assert.match(r.stderr, /wrote 1 embeddings \[1, 32\].*skipped 1 unreadable/);
  const st = readSafetensors(out);
  assert.equal(JSON.parse(st.metadata.files), ['a_square32.png']);
  assert.is(st.metadata.model, MODEL);
  const emb = st.tensors.get('image_embeds')!;
  assert.equal(emb.shape, [1, 32]);
  const fx = fixture('clip');
  const names = JSON.parse(fx.metadata.image_files) as string[];
  const row = names.indexOf('a_square32.png');
  assert.is(row, 0);
  const ref = fx.get('images_teacher').data.subarray(row * 32, (row + 1) * 32);
  // Whole-model f32 forward vs a float64 PyTorch reference, as in test/nn/vit.test.ts (worst
  // 4.8e-7 measured on lavapipe; the image is passed through without resizing).
  assertClose(emb.data, ref, { rtol: 0, atol: 5e-6 }, 'image_embeds[a_square32]');
});

testF16('embed --precision f16: F32 embeddings within f16 rounding of the PyTorch teacher; a bad --precision is a usage error', async () => {
  const dir = join(root, 'imgs-f16');
  mkdirSync(dir);
  copyFileSync(join(IMAGES, 'a_square32.png'), join(dir, 'a_square32.png'));
  const out = join(root, 'x16.safetensors');
  const r = await runCli('embed', ['--model', MODEL, '--images', dir, '--out', out, '--precision', 'f16']);
  assert.is(r.code, 0, r.stderr);
  const emb = readSafetensors(out).tensors.get('image_embeds')!;
  assert.equal(emb.shape, [1, 32]);
  const fx = fixture('clip');
  const ref = fx.get('images_teacher').data.subarray(0, 32);
  // Two layers of f16 storage: about 30 roundings on a path, each ≤ 2^-11 relative and mostly
  // cancelling; measured 1.05e-3 × max|ref| on lavapipe, held to 4e-3 (8 f16 unit roundoffs).
  // The f32 embedding is within 5e-6.
  const m = ref.reduce((a, v) => Math.max(a, Math.abs(v)), 0);
  const err = emb.data.reduce((a, v, i) => Math.max(a, Math.abs(v - ref[i])), 0);
  console.log(`  embed f16: max error ${(err / m).toExponential(2)} × max|ref|`);
  assertClose(emb.data, ref, { rtol: 0, atol: 4e-3 * m }, 'image_embeds f16');
  const bad = await runCli('embed', ['--model', MODEL, '--images', dir, '--out', join(root, 'x17.safetensors'), '--precision', 'bf16']);
  assert.is(bad.code, 2, bad.stderr);
  assert.match(bad.stderr, /--precision must be f32 or f16/);
});

test('embed errors: --out not .safetensors and a missing --images dir exit 2; a .bin model dir exits 1', async () => {
  const bad = await runCli('embed', ['--model', MODEL, '--images', IMAGES, '--out', join(root, 'x.npy')]);
  assert.is(bad.code, 2, bad.stderr);
  assert.match(bad.stderr, /embed: --out must end with \.safetensors, got '.*x\.npy'/);
  const missing = await runCli('embed', ['--model', MODEL, '--images', join(root, 'no-such-dir'), '--out', join(root, 'y.safetensors')]);
  assert.is(missing.code, 2, missing.stderr);
  assert.match(missing.stderr, /^embed: --images .*no-such-dir: not a directory/);
  const binDir = join(root, 'bin-model');
  mkdirSync(binDir);
  copyFileSync(join(MODEL, 'config.json'), join(binDir, 'config.json'));
  writeFileSync(join(binDir, 'pytorch_model.bin'), 'not read');
  const bin = await runCli('embed', ['--model', binDir, '--images', IMAGES, '--out', join(root, 'z.safetensors')]);
  assert.is(bin.code, 1, bin.stderr);
  assert.match(bin.stderr, /error: .*bin-model: found pytorch_model\.bin but no model\.safetensors/);
  assert.match(bin.stderr, /safe_serialization=True/);
  assert.not.ok(existsSync(join(root, 'z.safetensors')) || existsSync(join(root, 'y.safetensors')));
});

test('embed --out checked before any image is embedded: a directory, a path under a file, an unwritable place', async () => {
  const asDir = join(root, 'out-dir.safetensors');
  mkdirSync(asDir);
  const dir = await runCli('embed', ['--model', MODEL, '--images', IMAGES, '--out', asDir]);
  assert.is(dir.code, 2, dir.stderr);
  assert.match(dir.stderr, `embed: --out ${asDir} is a directory, but --out names a file`);
  const file = join(root, 'plain-file');
  writeFileSync(file, 'x');
  const underFile = join(file, 'e.safetensors');
  const under = await runCli('embed', ['--model', MODEL, '--images', IMAGES, '--out', underFile]);
  assert.is(under.code, 2, under.stderr);
  assert.match(under.stderr, `embed: --out ${underFile}: ${file} is a file`);
  let target: string;
  if (process.getuid?.() === 0) {
    target = '/proc/genalign-embed-test/e.safetensors'; // root ignores modes; /proc takes no new files
  } else {
    const ro = join(root, 'read-only');
    mkdirSync(ro);
    chmodSync(ro, 0o555);
    target = join(ro, 'e.safetensors');
  }
  const unwritable = await runCli('embed', ['--model', MODEL, '--images', IMAGES, '--out', target]);
  assert.is(unwritable.code, 2, unwritable.stderr);
  assert.match(unwritable.stderr, `embed: --out ${target}: cannot write into `);
  for (const r of [dir, under, unwritable]) assert.not.match(r.stderr, /embed \d+\/\d+|EACCES|ENOTDIR|\.tmp/, 'failed before embedding, without a bare Node error');
});

test('embed --lora with diverged weights (1e30): an error naming the adapter directory, nothing written', async () => {
  const big = divergedAdapter(join(root, 'lora-1e30'), 1e30);
  const out = join(root, 'diverged.safetensors');
  const r = await runCli('embed', ['--model', MODEL, '--lora', big, '--images', IMAGES, '--out', out]);
  assert.is(r.code, 1, r.stderr);
  assert.match(r.stderr, `error: embeddings of the LoRA student (--lora ${big}) are not finite (NaN or ±Inf)`);
  assert.match(r.stderr, `Nothing was written to ${out}.`);
  assert.not.ok(existsSync(out));
});

test('embed --lora of an adapter trained on preset tiny with --seed 5: refused without --seed 5, accepted with it', async () => {
  const dir = await seededPresetAdapter(join(root, 'tiny-seed5'));
  const out = join(root, 'seed.safetensors');
  const wrong = await runCli('embed', ['--model', 'tiny', '--lora', dir, '--images', IMAGES, '--out', out]);
  assert.is(wrong.code, 2, wrong.stderr);
  assert.match(wrong.stderr, `embed: --lora ${dir} was trained on the preset model 'tiny' with --seed 5`);
  assert.match(wrong.stderr, /Pass --seed 5\./);
  assert.not.ok(existsSync(out));
  const other = await runCli('embed', ['--model', 'vit-b-32', '--lora', dir, '--images', IMAGES, '--out', out]);
  assert.is(other.code, 2, other.stderr);
  assert.match(other.stderr, /not on 'vit-b-32': pass --model tiny --seed 5\./);
  // A preset's random weights fit no checkpoint directory either (clip-tiny has the same shapes).
  const onDir = await runCli('embed', ['--model', MODEL, '--seed', '5', '--lora', dir, '--images', IMAGES, '--out', out]);
  assert.is(onDir.code, 2, onDir.stderr);
  assert.match(onDir.stderr, `not on '${MODEL}': pass --model tiny --seed 5.`);
  assert.not.ok(existsSync(out));
  const right = await runCli('embed', ['--model', 'tiny', '--seed', '5', '--lora', dir, '--images', IMAGES, '--out', out]);
  assert.is(right.code, 0, right.stderr);
  assert.ok(existsSync(out));
});

test('embed: a preprocessor_config.json whose crop does not fit the model is an error naming the file', async () => {
  const model = join(root, 'model-crop48');
  cpSync(MODEL, model, { recursive: true });
  writeFileSync(join(model, 'preprocessor_config.json'), JSON.stringify({ size: { shortest_edge: 48 }, crop_size: { height: 48, width: 48 } }));
  const out = join(root, 'crop.safetensors');
  const r = await runCli('embed', ['--model', model, '--images', IMAGES, '--out', out]);
  assert.is(r.code, 1, r.stderr);
  assert.ok(r.stderr.includes(`error: ${join(model, 'preprocessor_config.json')}: crop_size 48x48 does not match the model's image_size 32 (config.json); the crop must be 32x32.`), r.stderr);
  assert.not.ok(existsSync(out));
});

test('embed: a folder named like an image in --images is not an image (not listed, not reported as undecodable)', async () => {
  const images = join(root, 'images-with-folder');
  cpSync(IMAGES, images, { recursive: true });
  mkdirSync(join(images, 'album.png'));
  const withFolder = listImages(images);
  assert.not.ok(withFolder.names.includes('album.png'));
  assert.equal(withFolder.names, listImages(IMAGES).names);
  assert.equal(withFolder.skipped, [{ name: 'album.png', kind: 'a directory' }]);
});

/** Runs the CLI, killing it after `ms` (a hang fails the test instead of blocking the suite). */
async function runWithin(ms: number, command: 'embed' | 'eval', args: string[]): Promise<CliResult> {
  const { child, done } = spawnCli(command, args);
  const timer = setTimeout(() => child.kill('SIGKILL'), ms);
  try {
    return await done;
  } finally {
    clearTimeout(timer);
  }
}

test('embed: a FIFO named pipe.png in --images is skipped with its reason instead of hanging; a link to an image is used', async () => {
  const dir = join(root, 'imgs-fifo');
  mkdirSync(dir);
  copyFileSync(join(IMAGES, 'a_square32.png'), join(dir, 'a_square32.png'));
  symlinkSync(join(dir, 'a_square32.png'), join(dir, 'b_link.png'));
  execFileSync('mkfifo', [join(dir, 'pipe.png')]);
  symlinkSync(join(dir, 'gone.png'), join(dir, 'c_dangling.png'));
  assert.equal(listImages(dir), {
    names: ['a_square32.png', 'b_link.png'],
    skipped: [
      { name: 'c_dangling.png', kind: 'a broken symbolic link' },
      { name: 'pipe.png', kind: 'a FIFO (named pipe)' },
    ],
  });
  const out = join(root, 'fifo.safetensors');
  const r = await runWithin(120_000, 'embed', ['--model', MODEL, '--images', dir, '--out', out]);
  assert.is(r.signal, null, `embed hung (killed after 120 s): ${r.stderr}`);
  assert.is(r.code, 0, r.stderr);
  assert.ok(r.stderr.includes(`warning: embed: skipping 2 entries of ${dir} named like images that are not regular files:\n  c_dangling.png (a broken symbolic link)\n  pipe.png (a FIFO (named pipe))\n`), r.stderr);
  assert.equal(JSON.parse(readSafetensors(out).metadata.files), ['a_square32.png', 'b_link.png']);
});

test('embed: when no image decodes, exit 1 naming the first files and their reasons, and nothing is written', async () => {
  const dir = join(root, 'imgs-all-bad');
  mkdirSync(dir);
  const bytes = readFileSync(join(IMAGES, 'a_square32.png'));
  writeFileSync(join(dir, 'a_cut.png'), bytes.subarray(0, bytes.length >> 1));
  for (let i = 0; i < 7; i++) writeFileSync(join(dir, `junk${i}.jpg`), 'not an image');
  const out = join(root, 'all-bad.safetensors');
  const r = await runCli('embed', ['--model', MODEL, '--images', dir, '--out', out]);
  assert.is(r.code, 1, r.stderr);
  assert.ok(r.stderr.includes(`error: embed: none of the 8 image(s) in ${dir} could be decoded, so nothing was written to ${out}:\n  ${join(dir, 'a_cut.png')}: cannot decode image (`), r.stderr);
  assert.ok(r.stderr.includes(`\n  ${join(dir, 'junk3.jpg')}: cannot decode image (`), r.stderr);
  assert.ok(r.stderr.includes('\n  ... and 3 more\n'), r.stderr);
  assert.not.match(r.stderr, /wrote \d+ embeddings/);
  assert.not.ok(existsSync(out));
});

test('embed: file names with terminal escapes or a right-to-left override are printed escaped, never raw', async () => {
  const dir = join(root, 'imgs-evil');
  mkdirSync(dir);
  copyFileSync(join(IMAGES, 'a_square32.png'), join(dir, 'a_square32.png'));
  const evil = '\x1b[2J\x1b[31mevil.png';
  const bidi = 'x\u202egnp.exe.png';
  writeFileSync(join(dir, evil), 'not an image');
  writeFileSync(join(dir, bidi), 'not an image');
  const out = join(root, 'evil.safetensors');
  const r = await runCli('embed', ['--model', MODEL, '--images', dir, '--out', out]);
  assert.is(r.code, 0, r.stderr);
  assert.not.ok(r.stderr.includes('\x1b') || r.stdout.includes('\x1b'), 'no raw ESC byte');
  assert.not.ok(r.stderr.includes('\u202e') || r.stdout.includes('\u202e'), 'no raw U+202E');
  assert.ok(r.stderr.includes(`warning: skipping ${join(dir, '\\x1b[2J\\x1b[31mevil.png')}: cannot decode image (`), r.stderr);
  assert.ok(r.stderr.includes(`warning: skipping ${join(dir, 'x\\u202egnp.exe.png')}: cannot decode image (`), r.stderr);
  // All bad: the error lists the names escaped as well.
  rmSync(join(dir, 'a_square32.png'));
  const bad = await runCli('embed', ['--model', MODEL, '--images', dir, '--out', out + '2.safetensors']);
  assert.is(bad.code, 1, bad.stderr);
  assert.not.ok(bad.stderr.includes('\x1b'), 'no raw ESC byte in the error');
  assert.match(bad.stderr, /error: embed: none of the 2 image\(s\)/);
  assert.ok(bad.stderr.includes('\\x1b[2J\\x1b[31mevil.png: cannot decode image'), bad.stderr);
});

test('embed --lora with an adapter of the wrong rank: exit 1, the message names the tensor and both shapes', async () => {
  const dir = join(root, 'lora-wrong-rank');
  cpSync(join(FIXTURE_DIR, 'clip-tiny-lora'), dir, { recursive: true });
  const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
  writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify({ ...cfg, r: 8 }));
  const r = await runCli('embed', ['--model', MODEL, '--lora', dir, '--images', IMAGES, '--out', join(root, 'w.safetensors')]);
  assert.is(r.code, 1, r.stderr);
  assert.match(r.stderr, /adapter does not fit the model/);
  assert.match(r.stderr, /layers\.0\.self_attn\.q_proj\.lora_A\.weight: expected \[8, 64\], found \[4, 64\]/);
  // Same adapter against a model of another width: every tensor is reported.
  const device = await getDevice();
  assert.throws(() => readPeftAdapter(join(FIXTURE_DIR, 'clip-tiny-lora'), NAMED_CONFIGS['vit-b-32'], device), /expected \[4, 768\], found \[4, 64\]/);
});

test('PEFT round trip: trained adapter → embed --lora equals the in-memory student; keys/shapes/config match PEFT', async () => {
  const data = await tinyDataset(join(root, 'data'), 24);
  const device = await getDevice();
  const o: TrainOptions = trainOptions({ data, model: MODEL, out: join(root, 'run'), cacheDir: join(root, 'cache'), steps: 3, lr: 2e-2, alpha: 8 });
  const res = await train(device, o, { log: () => undefined });
  const adapterDir = join(res.runDir, 'adapter');
  const paths = readdirSync(IMAGES).sort().map((f) => join(IMAGES, f));
  const pre = parsePreprocessorConfig(null, res.model.model.cfg.imageSize);
  // The student as the trainer holds it in memory, and the same adapter read back from disk.
  const inMemory = await embedPaths(device, res.model.model, res.lora!, paths, pre, 16);
  const teacher = await embedPaths(device, res.model.model, undefined, paths, pre, 16);
  const readBack = readPeftAdapter(adapterDir, res.model.model.cfg, device);
  const fromDisk = await embedPaths(device, res.model.model, readBack, paths, pre, 16);
  assert.is(livePreprocessWorkers(), 0, 'train() and embedPaths ended the preprocessing pools they started');
  assert.equal(Array.from(fromDisk.embeds), Array.from(inMemory.embeds), 'read-back adapter gives bit-identical embeddings');
  assert.is(readBack.scaling, 2, 'lora_alpha 8 / r 4');
  readBack.dispose();
  res.lora!.dispose();
  res.model.model.dispose();
  // Training changed the student (else the comparison proves nothing about the adapter).
  let moved = 0;
  for (let i = 0; i < teacher.embeds.length; i++) moved = Math.max(moved, Math.abs(teacher.embeds[i] - inMemory.embeds[i]));
  assert.ok(moved > 1e-3, `student differs from teacher (max |Δ| ${moved})`);

  const out = join(root, 'student.safetensors');
  const r = await runCli('embed', ['--model', MODEL, '--lora', adapterDir, '--images', IMAGES, '--out', out]);
  assert.is(r.code, 0, r.stderr);
  const st = readSafetensors(out);
  assert.equal(JSON.parse(st.metadata.files), paths.map((p) => p.split('/').pop()));
  assert.is(st.metadata.lora, adapterDir);
  assertClose(st.tensors.get('image_embeds')!.data, inMemory.embeds, { rtol: 1e-5, atol: 1e-6 }, 'embed --lora vs in-memory student');

  // Keys and shapes: exactly PEFT's (scripts/fixtures/fx_peft_keys.py).
  const ref = JSON.parse(readFileSync(join(FIXTURE_DIR, 'peft_keys.json'), 'utf8')) as { keys: Record<string, number[]> };
  const written = readSafetensors(join(adapterDir, 'adapter_model.safetensors')).tensors;
  const got = Object.fromEntries([...written.entries()].map(([k, t]) => [k, t.shape]).sort(([a], [b]) => String(a).localeCompare(String(b))));
  assert.equal(got, ref.keys);
  // The PyTorch-written fixture adapter uses the same names.
  const fixtureKeys = [...readSafetensors(join(FIXTURE_DIR, 'clip-tiny-lora', 'adapter_model.safetensors')).tensors.keys()].sort();
  assert.equal(fixtureKeys, Object.keys(ref.keys).sort());
  const cfg = JSON.parse(readFileSync(join(adapterDir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
  assert.is(cfg.peft_type, 'LORA');
  assert.is(cfg.r, 4);
  assert.is(cfg.lora_alpha, 8);
  assert.equal(cfg.target_modules, ['q_proj', 'k_proj', 'v_proj', 'out_proj']);
  assert.is(cfg.lora_dropout, 0);
  assert.is(cfg.bias, 'none');
  assert.is(cfg.base_model_name_or_path, MODEL);
});

test('embed --shard I/N (and a Slurm array task): the shares hold every file once, each row as the unsharded run embeds it', async () => {
  const data = await tinyDataset(join(root, 'shard-data'), 7);
  const images = join(data, 'real');
  const whole = join(root, 'shard-whole.safetensors');
  assert.is((await runCli('embed', ['--model', 'tiny', '--images', images, '--out', whole])).code, 0);
  const ref = readSafetensors(whole);
  const refFiles = JSON.parse(ref.metadata.files) as string[];
  const refRows = ref.tensors.get('image_embeds')!;
  const D = refRows.shape[1];
  const seen: string[] = [];
  for (let i = 0; i < 3; i++) {
    const out = join(root, `shard-${i}.safetensors`);
    // Share 2 through the Slurm variables of an --array=1-3 job, the others through --shard.
    const r = i === 2
      ? await runCli('embed', ['--model', 'tiny', '--images', images, '--out', out], { SLURM_ARRAY_TASK_ID: '3', SLURM_ARRAY_TASK_MIN: '1', SLURM_ARRAY_TASK_COUNT: '3' })
      : await runCli('embed', ['--model', 'tiny', '--images', images, '--out', out, '--shard', `${i}/3`]);
    assert.is(r.code, 0, r.stderr);
    assert.match(r.stderr, `embed: share ${i} of 3`);
    const st = readSafetensors(out);
    assert.is(st.metadata.shard, `${i}/3`);
    const files = JSON.parse(st.metadata.files) as string[];
    assert.equal(files, refFiles.filter((_, k) => k % 3 === i), `share ${i}: every third file from the ${i}th`);
    files.forEach((f, k) => {
      const j = refFiles.indexOf(f);
      assertClose(st.tensors.get('image_embeds')!.data.subarray(k * D, (k + 1) * D), refRows.data.subarray(j * D, (j + 1) * D), { rtol: 0, atol: 1e-6 }, `${f} in share ${i}`);
    });
    seen.push(...files);
  }
  assert.equal(seen.sort(), [...refFiles].sort(), 'disjoint and complete');
  const bad = await runCli('embed', ['--model', 'tiny', '--images', images, '--out', join(root, 'x.safetensors'), '--shard', '3/3']);
  assert.is(bad.code, 2);
  assert.match(bad.stderr, 'embed: --shard 3/3: share 3 does not exist among 3 (0 to 2)');
});

test.run();
