// The caption-using commands as a user meets them, on the tiny preset with the committed test
// tokenizer (test/fixtures/clip-tokenizer): embed --texts, zeroshot, probe, and eval's caption
// retrieval keys. Numbers from a random model mean nothing; these tests check that each command
// measures what it says (against the library functions the unit tests check against PyTorch),
// writes what it documents, and refuses bad input by name without writing anything.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readSafetensors } from '../../src/io/safetensors.ts';
import { FIXTURE_DIR } from '../helpers/fixtures.ts';
import { tmp, tinyDataset, runCli, seededPresetAdapter } from './helpers.ts';

const root = tmp('cli-text');
const TOK = join(FIXTURE_DIR, 'clip-tokenizer');
test.after(() => rmSync(root, { recursive: true, force: true }));

let data = '';
let classes = '';
test.before(async () => {
  data = await tinyDataset(join(root, 'data'), 12);
  // Class folders from the demo images: two classes, real and generated sides.
  classes = join(root, 'classes');
  for (const side of ['real', 'gen']) {
    for (let i = 0; i < 12; i++) {
      const cls = i % 2 ? 'red_circle' : 'blue_square';
      mkdirSync(join(classes, side, cls), { recursive: true });
      const id = String(i).padStart(2, '0');
      cpSync(join(data, side === 'real' ? `real/${id}.png` : `generated/${id}_0.jpg`), join(classes, side, cls, side === 'real' ? `${id}.png` : `${id}.jpg`));
    }
  }
});

test('embed --texts writes text_embeds [N, P] with the texts in row order; blank lines skipped', async () => {
  const file = join(root, 'texts.txt');
  writeFileSync(file, '\ufeffa red circle\r\n\nthe same, in CAPITALS: A RED CIRCLE\nCafé 🎉\n');
  const out = join(root, 'texts.safetensors');
  const r = await runCli('embed', ['--model', 'tiny', '--tokenizer', TOK, '--texts', file, '--out', out]);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stderr, 'skipping 1 blank line(s)');
  const st = readSafetensors(out);
  const t = st.tensors.get('text_embeds')!;
  assert.equal(t.shape, [3, 32]);
  assert.equal(JSON.parse(st.metadata.texts), ['a red circle', 'the same, in CAPITALS: A RED CIRCLE', 'Café 🎉']);
  assert.ok(t.data.every(Number.isFinite));
  // Lowercasing happens in the tokenizer: "a red circle" and "A RED CIRCLE" differ only by the prefix.
  const row = (i: number): number[] => Array.from(t.data.subarray(i * 32, (i + 1) * 32));
  assert.not.equal(row(0), row(1));
});

test('embed --texts refuses bad input by name and writes nothing', async () => {
  const out = join(root, 'bad.safetensors');
  const bad = join(root, 'latin1.txt');
  writeFileSync(bad, Buffer.from([0x61, 0x0a, 0x63, 0x61, 0x66, 0xe9, 0x0a]));
  const r1 = await runCli('embed', ['--model', 'tiny', '--tokenizer', TOK, '--texts', bad, '--out', out]);
  assert.is(r1.code, 2, r1.stderr);
  assert.match(r1.stderr, `--texts ${bad}:2 is not valid UTF-8`);
  const ok = join(root, 'ok.txt');
  writeFileSync(ok, 'hello\n');
  const r2 = await runCli('embed', ['--model', 'tiny', '--texts', ok, '--out', out]);
  assert.is(r2.code, 1, r2.stderr);
  assert.match(r2.stderr, /--model tiny is a preset with random weights and no tokenizer files; pass --tokenizer DIR/);
  const r3 = await runCli('embed', ['--model', 'tiny', '--tokenizer', TOK, '--texts', ok, '--images', data, '--out', out]);
  assert.is(r3.code, 2);
  assert.match(r3.stderr, 'give --images or --texts, not both');
  // A tokenizer from another model: clip-tiny-full's text tower has 300 tokens.
  const r4 = await runCli('embed', ['--model', join(FIXTURE_DIR, 'clip-tiny-full'), '--tokenizer', TOK, '--texts', ok, '--out', out]);
  assert.is(r4.code, 1, r4.stderr);
  assert.match(r4.stderr, /ends texts with id 1117 but the text tower .* pools at eos_token_id 299|has 1118 tokens but the text tower .* has vocab_size 300/);
  assert.not.ok(existsSync(out), 'nothing written');
});

test('zeroshot: per-class table and JSON report; bad templates and folders refused', async () => {
  const tpl = join(root, 'tpl.txt');
  writeFileSync(tpl, 'a photo of a {}.\n\na drawing of a {}\n');
  const out = join(root, 'zs.json');
  const r = await runCli('zeroshot', ['--model', 'tiny', '--tokenizer', TOK, '--images', join(classes, 'real'), '--templates', tpl, '--out', out]);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /blue square\s+6\s/);
  assert.match(r.stdout, /red circle\s+6\s/);
  const rep = JSON.parse(readFileSync(out, 'utf8')) as { classes: string[]; templates: string[]; n: number; top1: number; top5: number; per_class: { name: string; n: number; top1: number }[] };
  assert.equal(rep.classes, ['blue_square', 'red_circle']);
  assert.equal(rep.templates, ['a photo of a {}.', 'a drawing of a {}']);
  assert.is(rep.n, 12);
  assert.is(rep.top5, 1, 'two classes: always in the top 5');
  assert.ok(Math.abs(rep.top1 - (rep.per_class[0].top1 * 6 + rep.per_class[1].top1 * 6) / 12) < 1e-12, 'overall = image-weighted mean of the classes');
  const noBraces = join(root, 'tpl-bad.txt');
  writeFileSync(noBraces, 'a photo of a {}.\na photo\n');
  const r2 = await runCli('zeroshot', ['--model', 'tiny', '--tokenizer', TOK, '--images', join(classes, 'real'), '--templates', noBraces]);
  assert.is(r2.code, 2);
  assert.match(r2.stderr, `--templates ${noBraces}:2: "a photo" has no {}`);
  const r3 = await runCli('zeroshot', ['--model', 'tiny', '--tokenizer', TOK, '--images', join(data, 'real')]);
  assert.is(r3.code, 2);
  assert.match(r3.stderr, /--images .*: no class folder with images/);
});

test('probe: before/after/ceiling reported and deterministic; class names must match', async () => {
  const lora = await seededPresetAdapter(join(root, 'lora'));
  const out = join(root, 'probe.json');
  const args = ['--model', 'tiny', '--seed', '5', '--lora', lora, '--train', join(classes, 'gen'), '--test', join(classes, 'real'), '--steps', '50'];
  const r = await runCli('probe', [...args, '--out', out]);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /acc_before\s+\d+\.\d%/);
  assert.match(r.stdout, /acc_real_to_real\s+\d+\.\d%\s+\(ceiling: fitted on 6 real, scored on the other 6\)/);
  const rep = JSON.parse(readFileSync(out, 'utf8')) as Record<string, unknown>;
  for (const k of ['acc_before', 'acc_after', 'acc_real_to_real']) assert.type(rep[k], 'number', k);
  assert.equal([rep.n_train, rep.n_test, rep.steps], [12, 12, 50]);
  // A fresh adapter (B = 0) embeds like the teacher: the same probe, the same accuracy.
  assert.is(rep.acc_after, rep.acc_before);
  const again = await runCli('probe', [...args, '--out', join(root, 'probe2.json')]);
  assert.is(again.code, 0, again.stderr);
  assert.equal(JSON.parse(readFileSync(join(root, 'probe2.json'), 'utf8')), rep, 'deterministic given --seed');
  mkdirSync(join(root, 'other', 'green_bar'), { recursive: true });
  cpSync(join(data, 'real/00.png'), join(root, 'other', 'green_bar', '00.png'));
  const r2 = await runCli('probe', ['--model', 'tiny', '--train', join(classes, 'gen'), '--test', join(root, 'other')]);
  assert.is(r2.code, 2);
  assert.match(r2.stderr, /--test .*other has class folder\(s\) that --train .* lacks: green_bar/);
});

test('eval: caption retrieval keys with a text tower; none (and a line saying why) without', async () => {
  const out = join(root, 'eval');
  const r = await runCli('eval', ['--data', data, '--model', 'tiny', '--tokenizer', TOK, '--out', out, '--plot', 'none']);
  assert.is(r.code, 0, r.stderr);
  const m = JSON.parse(readFileSync(join(out, 'metrics.json'), 'utf8')) as Record<string, number>;
  assert.is(m.n_text, 12);
  for (const dir of ['t2i', 'i2t']) {
    for (const k of [1, 5, 10]) {
      for (const side of ['real', 'gen_before', 'gen_after']) {
        const v = m[`${dir}_r${k}_${side}`];
        assert.ok(v >= 0 && v <= 1, `${dir}_r${k}_${side} = ${v}`);
      }
    }
    assert.ok(m[`${dir}_r1_real`] <= m[`${dir}_r5_real`] && m[`${dir}_r5_real`] <= m[`${dir}_r10_real`], 'R@K grows with K');
    assert.is(m[`${dir}_r10_gen_after`], m[`${dir}_r10_gen_before`], 'no --lora: after is before');
  }
  // The demo pairs carry labels (the largest shape's kind): zero-shot over them.
  assert.is(m.n_zeroshot, 12);
  assert.ok(m.zeroshot_classes >= 2 && m.zeroshot_classes <= 6, `classes ${m.zeroshot_classes}`);
  for (const side of ['real', 'gen_before', 'gen_after']) assert.ok(m[`zeroshot_top1_${side}`] >= 0 && m[`zeroshot_top1_${side}`] <= m[`zeroshot_top5_${side}`], side);
  const out2 = join(root, 'eval2');
  const r2 = await runCli('eval', ['--data', data, '--model', 'tiny', '--out', out2, '--plot', 'none']);
  assert.is(r2.code, 0, r2.stderr);
  assert.match(r2.stderr, 'no caption measures: --model tiny is a preset without tokenizer files');
  assert.is(JSON.parse(readFileSync(join(out2, 'metrics.json'), 'utf8')).t2i_r1_real, undefined);
});

test('--student (a --rank 0 run\'s model/): eval gives the training run\'s own final eval; zeroshot and probe embed with it; bad --student refused up front', async () => {
  const run = join(root, 'full-run');
  const t = await runCli('train', ['--data', data, '--model', 'tiny', '--rank', '0', '--steps', '3', '--batch', '4', '--val-fraction', '0.5', '--lr', '1e-3', '--plot', 'pca', '--no-teacher-cache', '--out', run]);
  assert.is(t.code, 0, t.stderr);
  assert.match(t.stderr, `student (HF CLIPVisionModelWithProjection): ${join(run, 'model')}`);
  const student = join(run, 'model');
  const out = join(root, 'eval-student');
  const e = await runCli('eval', ['--data', data, '--model', 'tiny', '--student', student, '--val-fraction', '0.5', '--batch', '4', '--out', out, '--plot', 'none']);
  assert.is(e.code, 0, e.stderr);
  const got = JSON.parse(readFileSync(join(out, 'metrics.json'), 'utf8')) as Record<string, number>;
  const want = JSON.parse(readFileSync(join(run, 'metrics.json'), 'utf8')) as Record<string, number>;
  for (const k of ['n_val', 'paired_cosine_before', 'paired_cosine_after', 'r1_after', 'gap_after']) assert.ok(Math.abs(got[k] - want[k]) <= 1e-6, `${k}: eval --student ${got[k]}, train's eval ${want[k]}`);
  assert.ok(got.paired_cosine_after !== got.paired_cosine_before, 'after is the student, not the teacher');

  const zs = join(root, 'zs-student.json');
  const z = await runCli('zeroshot', ['--model', 'tiny', '--tokenizer', TOK, '--student', student, '--images', join(classes, 'gen'), '--out', zs]);
  assert.is(z.code, 0, z.stderr);
  const zr = JSON.parse(readFileSync(zs, 'utf8')) as { student: string; n: number };
  assert.equal([zr.student, zr.n], [student, 12]);
  const pr = join(root, 'probe-student.json');
  const p = await runCli('probe', ['--model', 'tiny', '--student', student, '--train', join(classes, 'gen'), '--test', join(classes, 'real'), '--steps', '50', '--out', pr]);
  assert.is(p.code, 0, p.stderr);
  const prep = JSON.parse(readFileSync(pr, 'utf8')) as { student: string; acc_after: number | null };
  assert.is(prep.student, student);
  assert.type(prep.acc_after, 'number');

  const both = await runCli('eval', ['--data', data, '--model', 'tiny', '--student', student, '--lora', student, '--out', join(root, 'x')]);
  assert.is(both.code, 2);
  assert.match(both.stderr, 'eval: --lora and --student both name a student; give one');
  const other = await runCli('probe', ['--model', 'vit-b-32', '--student', student, '--train', join(classes, 'gen'), '--test', join(classes, 'real')]);
  assert.is(other.code, 2);
  assert.match(other.stderr, `probe: --student ${student} is not a fine-tune of --model vit-b-32: its vision config differs in hiddenSize (64 vs 768)`);
  assert.not.match(other.stderr, /adapter:/, 'refused before the GPU');
  const missing = await runCli('zeroshot', ['--model', 'tiny', '--tokenizer', TOK, '--student', join(root, 'nope'), '--images', join(classes, 'gen')]);
  assert.is(missing.code, 2);
  assert.match(missing.stderr, /zeroshot: --student .*nope: not a directory/);
  assert.not.ok(existsSync(join(root, 'x')));
});

test.run();
