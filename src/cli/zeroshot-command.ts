// `npm run zeroshot -- --model DIR [--lora DIR | --student DIR] --images DIR [--templates FILE] [--out FILE.json]`
// Zero-shot classification with CLIP's prompt ensembling (src/train/downstream.ts): the images sit
// in class subfolders of --images (src/io/class-folders.ts) and the folder names are the class
// names ('_' read as a space in the prompts); every template of --templates (one per line, '{}'
// where the class name goes; default "a photo of a {}.") is filled with every class name and
// embedded by the frozen text tower. Images are embedded by the vision tower, or by the student
// (--lora, or a fully fine-tuned tower with --student; so generated images can be scored before
// and after alignment). Prints a
// short table and writes, with --out, a JSON report (top-1 / top-5 overall and per class).
// Everything that can be checked before the GPU is (flags, templates, folders, --out, the
// adapter's base model); corrupt images are skipped with a warning; nothing is written when no
// image decodes or an embedding is not finite.
import { readFileSync } from 'node:fs';
import { getDevice } from '../gpu/device.ts';
import { writeFileAtomic } from '../platform/atomic-file.ts';
import { listWithRest } from '../gpu/problem-list.ts';
import { loadModel, loadTextModel, modelPreprocessing } from '../io/hf-checkpoint.ts';
import { listClassFolders } from '../io/class-folders.ts';
import { checkPrecision } from '../train/trainer.ts';
import { embedPathsWith } from '../train/embedding.ts';
import { embedTexts } from '../train/text-embedding.ts';
import { ensembleClassEmbeddings, zeroShotAccuracy, type ZeroShotResult } from '../train/downstream.ts';
import { parseFlags, helpText, positive, PRECISION_FLAG, UsageError, type FlagSpec } from './args.ts';
import { baseDescription, outputPathProblem } from './embed-command.ts';
import { STUDENT_FLAG, openStudent, studentChoice } from './student-flag.ts';
import { TOKENIZER_FLAG } from './text-common.ts';
import { checkTokenizerFits, loadTokenizerFor } from '../train/text-tower.ts';
import { warn } from './terminal.ts';

export const DEFAULT_TEMPLATE = 'a photo of a {}.';

export const ZEROSHOT_FLAGS: FlagSpec[] = [
  { name: 'model', type: 'string', help: 'HF CLIPModel directory (both towers), or a preset: tiny, vit-b-32, vit-b-16, vit-l-14 (random weights; needs --tokenizer)' },
  { name: 'lora', type: 'string', help: 'PEFT LoRA adapter directory: embed the images with the student' },
  STUDENT_FLAG,
  { name: 'images', type: 'string', help: 'folder with one subfolder of images per class (the folder names are the class names)' },
  { name: 'templates', type: 'string', help: `text file, one prompt template per line with {} for the class name (default: "${DEFAULT_TEMPLATE}")` },
  { name: 'out', type: 'string', help: 'JSON report file (optional)' },
  TOKENIZER_FLAG,
  { name: 'batch', type: 'int', default: 16, help: 'images (and prompts) per GPU batch', check: positive },
  { name: 'seed', type: 'int', default: 0, help: 'seed for preset models' },
  PRECISION_FLAG,
];

/** Templates from a file: one per line, blank lines skipped; each must hold '{}' (errors name file:line). */
export function readTemplates(path: string): string[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new UsageError(`zeroshot: cannot read --templates ${path}: ${(e as Error).message}`);
  }
  const out: string[] = [];
  text.split(/\r?\n/).forEach((line, i) => {
    const t = line.trim();
    if (!t) return;
    if (!t.includes('{}')) throw new UsageError(`zeroshot: --templates ${path}:${i + 1}: "${t}" has no {} where the class name goes (e.g. "a photo of a {}.")`);
    out.push(t);
  });
  if (out.length === 0) throw new UsageError(`zeroshot: --templates ${path} holds no template (one per line, with {} for the class name)`);
  return out;
}

/** The readable name of a class folder: underscores become spaces. */
export function className(folder: string): string {
  return folder.replace(/_/g, ' ').trim();
}

export function formatZeroShot(res: ZeroShotResult, classes: readonly string[]): string {
  const w = Math.max(5, ...classes.map((c) => c.length));
  const lines = [`${'class'.padEnd(w)}  images  top-1   top-5`];
  for (const c of res.per_class) lines.push(`${c.name.padEnd(w)}  ${String(c.n).padStart(6)}  ${(100 * c.top1).toFixed(1).padStart(5)}%  ${(100 * c.top5).toFixed(1).padStart(5)}%`);
  lines.push(`${'all'.padEnd(w)}  ${String(res.n).padStart(6)}  ${(100 * res.top1).toFixed(1).padStart(5)}%  ${(100 * res.top5).toFixed(1).padStart(5)}%`);
  return lines.join('\n');
}


export async function runZeroShot(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(helpText('zeroshot', 'Zero-shot classification of class folders with a CLIP model (prompt ensembling).', ZEROSHOT_FLAGS));
    return 0;
  }
  const f = parseFlags(argv, ZEROSHOT_FLAGS, 'zeroshot');
  for (const req of ['model', 'images'] as const) if (!f[req]) throw new UsageError(`zeroshot: --${req} is required (see --help)`);
  const out = f.out ? String(f.out) : undefined;
  if (out) {
    if (!out.endsWith('.json')) throw new UsageError(`zeroshot: --out must end with .json, got '${out}'`);
    const problem = outputPathProblem('--out', out, 'file', 'the JSON report');
    if (problem) throw new UsageError(`zeroshot: ${problem}`);
  }
  const templates = f.templates ? readTemplates(String(f.templates)) : [DEFAULT_TEMPLATE];
  let folders;
  try {
    folders = listClassFolders(String(f.images), '--images');
  } catch (e) {
    throw new UsageError(`zeroshot: ${(e as Error).message}`);
  }
  for (const w of folders.warnings) warn(`warning: zeroshot: ${w}`);
  const model = String(f.model);
  const tokenizerDir = f.tokenizer === undefined ? undefined : String(f.tokenizer);
  const tokenizer = loadTokenizerFor('zeroshot', model, tokenizerDir);
  const choice = studentChoice('zeroshot', f, model, Number(f.seed));

  const device = await getDevice();
  const precision = String(f.precision) as 'f32' | 'f16';
  checkPrecision(device, precision);
  const text = loadTextModel(model, device, Number(f.seed), precision, tokenizer);
  const vision = loadModel(model, device, Number(f.seed), precision);
  const student = choice ? openStudent(choice, vision, device, precision, out ?? 'the report') : null;
  try {
    checkTokenizerFits('zeroshot', tokenizer, text.model.cfg, model, tokenizerDir);
    if (text.model.cfg.projectionDim !== vision.model.cfg.projectionDim) {
      throw new Error(`zeroshot: the text tower projects to ${text.model.cfg.projectionDim} dims but the vision tower to ${vision.model.cfg.projectionDim} (${model}); use a CLIPModel checkpoint whose towers share projection_dim`);
    }
    const names = folders.classes.map(className);
    const prompts = templates.flatMap((t) => names.map((c) => t.split('{}').join(c)));
    const promptEmb = await embedTexts(device, text.model, tokenizer, prompts, Number(f.batch), { model: `the text tower of --model ${model}` });
    const dim = vision.model.cfg.projectionDim;
    const classEmb = ensembleClassEmbeddings(promptEmb, templates.length, names.length, dim);
    const skipped: { path: string; reason: string }[] = [];
    const variant = { ...(student?.variant ?? {}), name: student?.description ?? baseDescription(model, out ?? 'the report') };
    const [res] = await embedPathsWith(device, vision.model, [variant], folders.files.map((x) => x.path), modelPreprocessing(vision), Number(f.batch), {
      onSkip: (p, reason) => {
        skipped.push({ path: p, reason });
        warn(`warning: zeroshot: skipping ${p}: ${reason}`);
      },
    });
    const labels = folders.files.filter((_, i) => res.ok[i]).map((x) => x.label);
    if (labels.length === 0) {
      throw new Error(`zeroshot: none of the ${folders.files.length} image(s) under ${folders.dir} could be decoded${out ? `, so nothing was written to ${out}` : ''}:\n  ${listWithRest(skipped.map((s) => `${s.path}: ${s.reason}`), 5)}`);
    }
    const result = zeroShotAccuracy(res.embeds, labels, classEmb, names, dim);
    console.log(formatZeroShot(result, names));
    if (out) {
      const report = { model, ...(student?.record ?? {}), images: folders.dir, templates, classes: folders.classes, ...result, skipped: skipped.map((s) => s.path) };
      writeFileAtomic(out, JSON.stringify(report, null, 2) + '\n');
      warn(`zeroshot: wrote ${out}`);
    }
    return 0;
  } finally {
    student?.dispose();
    vision.model.dispose();
    text.model.dispose();
  }
}
