// `npm run train` as a process: SIGKILL + --resume reproduces an uninterrupted run, Ctrl-C
// writes a checkpoint and exits 130, flag errors exit 2 naming the flag, --help lists every flag.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { appendFileSync, cpSync, existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TRAIN_FLAGS } from '../../src/cli/train-command.ts';
import { EMBED_FLAGS } from '../../src/cli/embed-command.ts';
import { EVAL_FLAGS } from '../../src/cli/eval-command.ts';
import type { FlagSpec } from '../../src/cli/args.ts';
import { FIXTURE_DIR } from '../helpers/fixtures.ts';
import { testF16 } from '../helpers/f16.ts';
import { tmp, tinyDataset, spawnCli, runCli, waitFor, waitForFile, fileSays, readMetrics, readAdapter, adapterDifference } from './helpers.ts';

const root = tmp('cli-train');
const data = join(root, 'data');
test.before(async () => {
  await tinyDataset(data, 24);
});
test.after(() => rmSync(root, { recursive: true, force: true }));

/** Options of the resume runs: 8 steps of batch 8 over 24 pairs (3 epochs), a checkpoint every 2 steps. */
function resumeArgs(cache: string): string[] {
  return ['--data', data, '--model', 'tiny', '--steps', '8', '--batch', '8', '--save-every', '2', '--no-eval', '--val-fraction', '0', '--lr', '1e-2', '--warmup', '2', '--log-every', '1', '--cache-dir', cache];
}

test('SIGKILL after checkpoint 4, then --resume: losses of steps 1..8 and the final adapter equal an uninterrupted run', async () => {
  const cache = join(root, 'cache-resume');
  const dirA = join(root, 'runA');
  const dirB = join(root, 'runB');
  const a = await runCli('train', [...resumeArgs(cache), '--out', dirA]);
  assert.is(a.code, 0, a.stderr);
  const lossA = readMetrics(dirA).map((m) => m.loss);
  assert.equal(readMetrics(dirA).map((m) => m.step), [1, 2, 3, 4, 5, 6, 7, 8]);
  // The run must actually train (the loss changes), or the comparison below proves nothing.
  assert.ok(Math.abs(lossA[7] - lossA[0]) > 1e-3, `loss did not move: ${lossA}`);

  const b = spawnCli('train-test', [...resumeArgs(cache), '--out', dirB], { GENALIGN_TEST_STEP_DELAY_MS: '300' });
  // `latest` names step-000004 and the checkpoint directory is in place (it is renamed in right after latest is written).
  const ckpt4 = fileSays(join(dirB, 'checkpoints', 'latest'), 'step-000004');
  await waitFor(() => ckpt4() && existsSync(join(dirB, 'checkpoints', 'step-000004')), 'checkpoint step-000004', 60_000, b.done);
  b.child.kill('SIGKILL');
  const killed = await b.done;
  assert.is(killed.signal, 'SIGKILL', 'run B was killed, not finished');
  const before = readMetrics(dirB);
  assert.ok(before.length >= 4 && before.length < 6, `killed mid-run (has ${before.length} steps logged)`);
  assert.not.ok(existsSync(join(dirB, 'checkpoints', 'step-000008')), 'no final checkpoint before the resume');

  // A metrics line torn by the kill (as after a crash mid-write) must not break the resume.
  appendFileSync(join(dirB, 'metrics.jsonl'), '{"step":99,"epoch":0,"lo');
  const c = await runCli('train', ['--resume', dirB]);
  assert.is(c.code, 0, c.stderr);
  assert.match(c.stderr, /resumed from .*step-000004 at step 4\n/, c.stderr);
  // The run was started with --no-eval; resuming keeps that (no eval message at all).
  assert.not.match(c.stderr, /eval/);
  const mb = readMetrics(dirB);
  assert.equal(mb.map((m) => m.step), [1, 2, 3, 4, 5, 6, 7, 8], 'metrics.jsonl reads as one run');
  const lossB = mb.map((m) => m.loss);
  let worst = 0;
  for (let i = 0; i < 8; i++) worst = Math.max(worst, Math.abs(lossB[i] - lossA[i]) / Math.abs(lossA[i]));
  assert.ok(worst <= 1e-5, `losses differ by ${worst} relative:\nA ${lossA}\nB ${lossB}`);
  assert.equal(mb.map((m) => m.lr), readMetrics(dirA).map((m) => m.lr), 'learning-rate schedule');
  // In practice the resumed run is bit-identical (same kernels, same order of operations).
  assert.equal(lossB, lossA, 'losses bit-identical');

  const ad = adapterDifference(readAdapter(join(dirB, 'adapter')), readAdapter(join(dirA, 'adapter')), 1e-6);
  assert.ok(ad.worst <= 1e-6, `final adapters differ: ${ad.where}`);
  const nonZeroB = [...readAdapter(join(dirA, 'adapter')).entries()].filter(([k]) => k.includes('lora_B')).some(([, t]) => t.data.some((v) => v !== 0));
  assert.ok(nonZeroB, 'training moved lora_B away from its zero init');
});

test('--resume refuses to change an option that changes the loss sequence (exit 2, names the flag)', async () => {
  const r = await runCli('train', ['--resume', join(root, 'runA'), '--lr', '0.5']);
  assert.is(r.code, 2, r.stderr);
  assert.match(r.stderr, /--lr cannot be changed when resuming/);
});

test('Ctrl-C (SIGINT): checkpoint at the current step, exit code 130, message says how to --resume', async () => {
  const dir = join(root, 'runInt');
  const s = spawnCli('train-test', ['--data', data, '--model', 'tiny', '--steps', '200', '--batch', '8', '--save-every', '1000', '--no-eval', '--val-fraction', '0', '--cache-dir', join(root, 'cache-int'), '--out', dir], { GENALIGN_TEST_STEP_DELAY_MS: '100' });
  // metrics.jsonl appears after step 1, long after the SIGINT handler is installed.
  await waitForFile(join(dir, 'metrics.jsonl'), 60_000, s.done);
  s.child.kill('SIGINT');
  const r = await s.done;
  assert.is(r.code, 130, r.stderr);
  assert.match(r.stderr, /Ctrl-C: finishing this step/);
  assert.ok(r.stderr.includes(`--resume ${dir}`), `stderr tells how to resume (--resume ${dir})`);
  const latest = readFileSync(join(dir, 'checkpoints', 'latest'), 'utf8').trim();
  const steps = readMetrics(dir).length;
  assert.ok(steps >= 1 && steps < 200, `stopped early (${steps} steps)`);
  // No --save-every checkpoint was due: the one there was written because of Ctrl-C, at the last step.
  assert.is(latest, `step-${String(steps).padStart(6, '0')}`);
  assert.ok(existsSync(join(dir, 'checkpoints', latest, 'trainer_state.json')));
  assert.ok(existsSync(join(dir, 'adapter', 'adapter_model.safetensors')));
  assert.not.match(r.stderr, /error/);
});

for (const [args, flag, why] of [
  [['--bogus', '3'], '--bogus', /unknown flag/],
  [['--batch', '0'], '--batch', /must be > 0/],
  [['--batch', '1.5'], '--batch', /expects an integer/],
  [['--lr', 'fast'], '--lr', /expects a number/],
  [['--plot', 'umap'], '--plot', /must be tsne or pca/],
  [['--eval=maybe'], '--eval', /expects true or false/],
  [['--data', data, '--steps'], '--steps', /needs a value/],
  [['--data=', '--model', 'tiny'], '--data', /needs a value, got an empty string/],
  [['--data', data], '--model', /required with --data/],
  [['--data', data, '--model', 'tiny', '--targets', 'q_proj,xyz'], '--targets', /unknown module 'xyz'/],
] as const) {
  test(`train ${args.join(' ')}: usage error naming ${flag}, exit code 2`, async () => {
    const r = await runCli('train', [...args]);
    assert.is(r.code, 2, r.stderr);
    assert.ok(r.stderr.includes(flag), `stderr names ${flag}: ${r.stderr}`);
    assert.match(r.stderr, why);
    assert.not.match(r.stderr, /at .*\.ts:\d+/, 'no stack trace');
  });
}

test('train --validate: lists every unreadable image of the dataset, trains nothing, exit 1; a clean dataset exits 0', async () => {
  const clean = await runCli('train', ['--validate', '--data', data, '--model', 'tiny']);
  assert.is(clean.code, 0, clean.stderr);
  assert.match(clean.stderr, /validate: 48 image files checked, 0 could not be used: no problems found\./);
  const dirty = join(root, 'data-dirty');
  cpSync(data, dirty, { recursive: true });
  const generated = join(dirty, 'generated', readdirSync(join(dirty, 'generated')).sort()[0]);
  writeFileSync(generated, readFileSync(generated).subarray(0, 200));
  writeFileSync(join(dirty, 'real', readdirSync(join(dirty, 'real')).sort()[1]), 'not an image');
  const r = await runCli('train', ['--validate', '--data', dirty, '--model', 'tiny', '--out', join(root, 'run-validate')]);
  assert.is(r.code, 1, r.stderr);
  assert.is(r.stderr.match(/^bad image: /gm)?.length, 2, r.stderr);
  assert.ok(r.stderr.includes(`bad image: ${generated}: `), r.stderr);
  assert.match(r.stderr, /validate: 48 image files checked, 2 could not be used\. Training skips bad images/);
  assert.not.ok(existsSync(join(root, 'run-validate')), 'nothing trained, no run directory');
});

test('train --validate: a preprocessor_config.json whose crop does not fit the model is reported (exit 1)', async () => {
  const model = join(root, 'model-crop48');
  cpSync(join(FIXTURE_DIR, 'clip-tiny'), model, { recursive: true });
  writeFileSync(join(model, 'preprocessor_config.json'), JSON.stringify({ size: { shortest_edge: 48 }, crop_size: { height: 48, width: 48 } }));
  const r = await runCli('train', ['--validate', '--data', data, '--model', model]);
  assert.is(r.code, 1, r.stderr);
  assert.ok(r.stderr.includes(`problem: ${join(model, 'preprocessor_config.json')}: crop_size 48x48 does not match the model's image_size 32`), r.stderr);
  assert.match(r.stderr, /0 could not be used; 1 other problem\(s\) above\.\n/);
});

test('D1: two trainers started on the same new --out: the one that loses the lock leaves the winner\'s run alone', async () => {
  // The first trainer loads a 300000-pair manifest (seconds), the second starts 0.3 s later on
  // a small dataset, so the second creates and locks the directory while the first is loading.
  const big = join(root, 'data-big');
  cpSync(join(data, 'real'), join(big, 'real'), { recursive: true });
  cpSync(join(data, 'generated'), join(big, 'generated'), { recursive: true });
  const base = readFileSync(join(data, 'pairs.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { real: string; generated: string[] });
  writeFileSync(join(big, 'pairs.jsonl'), Array.from({ length: 300_000 }, (_, i) => JSON.stringify({ id: `p${i}`, real: base[i % base.length].real, generated: base[i % base.length].generated })).join('\n') + '\n');
  const out = join(root, 'run-race');
  const common = ['--model', 'tiny', '--batch', '8', '--no-eval', '--val-fraction', '0', '--out', out];
  const slow = spawnCli('train-test', ['--data', big, '--steps', '1', '--cache-dir', join(root, 'cache-race-big'), ...common]);
  await new Promise((r) => setTimeout(r, 300));
  const fast = spawnCli('train-test', ['--data', data, '--steps', '3', '--cache-dir', join(root, 'cache-race'), ...common], { GENALIGN_TEST_STEP_DELAY_MS: '1000' });
  const [s, f] = await Promise.all([slow.done, fast.done]);
  const [winner, loser] = f.code === 0 ? [f, s] : [s, f];
  assert.is(winner.code, 0, `one trainer finished:\n${f.stderr}\n---\n${s.stderr}`);
  assert.is(loser.code, 1, loser.stderr);
  assert.match(loser.stderr, /is in use by another training process \(pid \d+, see .*run\.lock\); nothing there was changed|already holds a run .*; nothing there was changed/);
  const steps = winner === f ? 3 : 1;
  assert.equal(readMetrics(out).map((m) => m.step), Array.from({ length: steps }, (_, i) => i + 1), "the winner's run is whole");
  assert.is(readFileSync(join(out, 'checkpoints', 'latest'), 'utf8').trim(), `step-00000${steps}`);
  assert.ok(existsSync(join(out, 'adapter', 'adapter_model.safetensors')));
  assert.equal(readdirSync(out).sort(), ['adapter', 'checkpoints', 'config.json', 'metrics.jsonl']);
});

test('D16: a file name with terminal escape sequences is printed escaped', async () => {
  const dirty = join(root, 'data-escape');
  cpSync(data, dirty, { recursive: true });
  const evil = '\x1b[2J\x1b[31mevil.png';
  const manifest = readFileSync(join(dirty, 'pairs.jsonl'), 'utf8').trim().split('\n');
  writeFileSync(join(dirty, 'real', evil), 'not an image');
  manifest[0] = JSON.stringify({ ...(JSON.parse(manifest[0]) as object), real: `real/${evil}` });
  writeFileSync(join(dirty, 'pairs.jsonl'), manifest.join('\n') + '\n');
  const r = await runCli('train', ['--validate', '--data', dirty, '--model', 'tiny']);
  assert.is(r.code, 1, r.stderr);
  assert.not.ok(r.stderr.includes('\x1b'), 'no raw ESC reaches the terminal');
  assert.ok(r.stderr.includes('bad image: ') && r.stderr.includes('\\x1b[2J\\x1b[31mevil.png'), r.stderr);
});

function checkHelp(out: string, specs: readonly FlagSpec[], command: string): void {
  const lines = out.split('\n');
  for (const s of specs) {
    const line = lines.find((l) => l.trimStart().startsWith(`--${s.name} `) || l.trim() === `--${s.name}`);
    assert.ok(line, `${command} --help lists --${s.name}`);
    const shown = s.default === undefined ? s.defaultText : String(s.default);
    if (shown !== undefined) assert.ok(line.includes(`(default: ${shown})`), `${command} --help shows the default of --${s.name}: ${line}`);
  }
  assert.ok(lines.some((l) => l.trimStart().startsWith('--help')));
}

testF16('the embedded demo at --precision f16 aligns as the f32 demo does: paired cosine and R@1 within 0.02 (issue 13)', async () => {
  const metrics: Record<string, Record<string, number>> = {};
  for (const precision of ['f32', 'f16']) {
    const out = join(root, `demo-${precision}`);
    // The README's second command (no --data: the embedded demo), with its own teacher cache.
    const r = await runCli('train', ['--out', out, '--precision', precision, '--plot', 'pca', '--cache-dir', join(root, `demo-cache-${precision}`)]);
    assert.is(r.code, 0, r.stderr);
    metrics[precision] = JSON.parse(readFileSync(join(out, 'metrics.json'), 'utf8')) as Record<string, number>;
    if (precision === 'f16') assert.match(r.stderr, /scale 65536/, 'the loss scale is printed with the progress');
    // The demo teacher (models/demo-clip) has a text tower and the demo pairs have captions and
    // labels: the final eval prints and writes retrieval and zero-shot before and after.
    assert.match(r.stderr, /text→image R@1 {2}real \d\.\d{3} {2}generated \d\.\d{3} → \d\.\d{3}/);
    assert.match(r.stderr, /zero-shot top-1 {2}real \d\.\d{3} {2}generated \d\.\d{3} → \d\.\d{3} {2}\(6 classes, n=56\)/);
  }
  const m = metrics.f32;
  assert.is(m.n_text, 56);
  assert.is(m.n_zeroshot, 56);
  // What the demo shows (deterministic): aligned generated images are found from their captions
  // far more often than before alignment, though still less often than the real images.
  assert.ok(m.t2i_r1_gen_after > m.t2i_r1_gen_before + 0.05, `t2i R@1 ${m.t2i_r1_gen_before} -> ${m.t2i_r1_gen_after}`);
  assert.ok(m.i2t_r1_gen_after > m.i2t_r1_gen_before + 0.05, `i2t R@1 ${m.i2t_r1_gen_before} -> ${m.i2t_r1_gen_after}`);
  const [a, b] = [metrics.f32, metrics.f16];
  console.log(`  demo: paired cosine ${a.paired_cosine_after.toFixed(4)} (f32) vs ${b.paired_cosine_after.toFixed(4)} (f16), R@1 ${a.r1_after.toFixed(3)} vs ${b.r1_after.toFixed(3)}`);
  assert.ok(b.paired_cosine_after - b.paired_cosine_before > 0.03, 'the f16 student learned');
  for (const key of ['paired_cosine_before', 'paired_cosine_after', 'r1_before', 'r1_after']) {
    assert.ok(Math.abs(a[key] - b[key]) <= 0.02, `${key}: f32 ${a[key]} vs f16 ${b[key]}`);
  }
});

test('--help of train, embed and eval lists every flag with its default (exit 0)', async () => {
  const [t, e, v] = await Promise.all([runCli('train', ['--help']), runCli('embed', ['--help']), runCli('eval', ['--help'])]);
  for (const [r, specs, name] of [[t, TRAIN_FLAGS, 'train'], [e, EMBED_FLAGS, 'embed'], [v, EVAL_FLAGS, 'eval']] as const) {
    assert.is(r.code, 0, r.stderr);
    checkHelp(r.stdout, specs, name);
  }
  assert.match(t.stdout, /--batch <int>\s+pairs per micro-batch on the GPU \(default: 32\)/);
});

test.run();
