// `npm run probe -- --model DIR [--lora DIR | --student DIR] --train DIR --test DIR [--out FILE.json]`
// "Train on generated, test on real" (GMAIL's probe): a multinomial logistic regression
// (src/train/downstream.ts fitLinearProbe: genalign's linear + crossEntropy + AdamW on the GPU,
// full batch, from zero weights) is fitted on the normalised embeddings of the --train images
// (generated ones, in class subfolders) and scored on the --test images (real ones, same class
// names; every test class must exist in --train):
//   acc_before        train embedded by the frozen teacher (the vision tower of --model)
//   acc_after         train embedded by the student (--lora or --student; null without one)
//   acc_real_to_real  the ceiling: a probe fitted on one half of the real test images (a seeded
//                     per-class split) and scored on the other half, teacher embeddings
// Test images are always embedded by the teacher. Deterministic given --seed (the split and
// preset weights; the fit itself has no randomness). Corrupt images are skipped with a warning.
import { getDevice } from '../gpu/device.ts';
import { writeFileAtomic } from '../platform/atomic-file.ts';
import { loadModel, modelPreprocessing } from '../io/hf-checkpoint.ts';
import { listClassFolders, type ClassFolders } from '../io/class-folders.ts';
import { checkPrecision } from '../train/trainer.ts';
import { embedPathsWith, type EmbedVariant } from '../train/embedding.ts';
import { fitLinearProbe, probeAccuracy, stratifiedHalves } from '../train/downstream.ts';
import { PreprocessPool } from '../io/preprocess-pool.ts';
import { parseFlags, helpText, nonNegative, positive, PRECISION_FLAG, UsageError, type FlagSpec } from './args.ts';
import { baseDescription, outputPathProblem } from './embed-command.ts';
import { STUDENT_FLAG, openStudent, studentChoice } from './student-flag.ts';
import { warn } from './terminal.ts';
import type { ClipVisionModel } from '../nn/vit.ts';
import type { PreprocessConfig } from '../io/image.ts';
import type { Device } from '../gpu/device.ts';

export const PROBE_FLAGS: FlagSpec[] = [
  { name: 'model', type: 'string', help: 'HF CLIP model directory, or a preset: tiny, vit-b-32, vit-b-16, vit-l-14 (random weights)' },
  { name: 'lora', type: 'string', help: 'PEFT LoRA adapter directory: the student whose embeddings give acc_after' },
  STUDENT_FLAG,
  { name: 'train', type: 'string', help: 'generated images, one subfolder per class (the probe is fitted on these)' },
  { name: 'test', type: 'string', help: 'real images, one subfolder per class with the same class names (the probe is scored on these)' },
  { name: 'out', type: 'string', help: 'JSON report file (optional)' },
  { name: 'steps', type: 'int', default: 300, help: 'full-batch AdamW steps of the fit', check: positive },
  { name: 'lr', type: 'float', default: 0.1, help: 'AdamW learning rate of the fit', check: positive },
  { name: 'weight-decay', type: 'float', default: 1e-4, help: 'AdamW weight decay of the fit', check: nonNegative },
  { name: 'batch', type: 'int', default: 16, help: 'images per GPU batch while embedding', check: positive },
  { name: 'seed', type: 'int', default: 0, help: 'seed of the real→real split (and of preset models)' },
  PRECISION_FLAG,
];

export interface ProbeReport {
  acc_before: number;
  acc_after: number | null;
  acc_real_to_real: number;
  classes: string[];
  n_train: number;
  n_test: number;
  n_real_fit: number;
  n_real_test: number;
  steps: number;
  lr: number;
  weight_decay: number;
  seed: number;
}


function listed(dir: string, flag: string): ClassFolders {
  try {
    const f = listClassFolders(dir, flag);
    for (const w of f.warnings) warn(`warning: probe: ${w}`);
    return f;
  } catch (e) {
    throw new UsageError(`probe: ${(e as Error).message}`);
  }
}

interface Embedded {
  embeds: Float32Array;
  labels: number[];
}

/** Embeds a class folder with each variant (decoded once); labels of the images that decoded. */
async function embedFolder(device: Device, model: ClipVisionModel, variants: EmbedVariant[], folders: ClassFolders, labelOf: (c: number) => number, pre: PreprocessConfig, batch: number, pool: PreprocessPool): Promise<Embedded[]> {
  const res = await embedPathsWith(device, model, variants, folders.files.map((f) => f.path), pre, batch, {
    onSkip: (p, reason) => warn(`warning: probe: skipping ${p}: ${reason}`),
    pool,
  });
  const labels = folders.files.filter((_, i) => res[0].ok[i]).map((f) => labelOf(f.label));
  if (labels.length === 0) throw new Error(`probe: none of the ${folders.files.length} image(s) under ${folders.dir} could be decoded`);
  return res.map((r) => ({ embeds: r.embeds, labels }));
}

export async function runProbe(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(helpText('probe', 'Fit a linear probe on generated images and test it on real ones (before and after alignment).', PROBE_FLAGS));
    return 0;
  }
  const f = parseFlags(argv, PROBE_FLAGS, 'probe');
  for (const req of ['model', 'train', 'test'] as const) if (!f[req]) throw new UsageError(`probe: --${req} is required (see --help)`);
  const out = f.out ? String(f.out) : undefined;
  if (out) {
    if (!out.endsWith('.json')) throw new UsageError(`probe: --out must end with .json, got '${out}'`);
    const problem = outputPathProblem('--out', out, 'file', 'the JSON report');
    if (problem) throw new UsageError(`probe: ${problem}`);
  }
  const train = listed(String(f.train), '--train');
  const test = listed(String(f.test), '--test');
  const missing = test.classes.filter((c) => !train.classes.includes(c));
  if (missing.length) {
    throw new UsageError(`probe: --test ${test.dir} has class folder(s) that --train ${train.dir} lacks: ${missing.join(', ')}; both folders need the same class names`);
  }
  const model = String(f.model);
  const choice = studentChoice('probe', f, model, Number(f.seed));
  const seed = Number(f.seed);
  const fit = { steps: Number(f.steps), lr: Number(f.lr), weightDecay: Number(f['weight-decay']) };

  const device = await getDevice();
  const precision = String(f.precision) as 'f32' | 'f16';
  checkPrecision(device, precision);
  const loaded = loadModel(model, device, seed, precision);
  const student = choice ? openStudent(choice, loaded, device, precision, out ?? 'the report') : null;
  const pool = new PreprocessPool();
  try {
    const pre = modelPreprocessing(loaded);
    const batch = Number(f.batch);
    const C = train.classes.length;
    const dim = loaded.model.cfg.projectionDim;
    const where = out ?? 'the report';
    const teacher = baseDescription(model, where);
    const testLabel = (c: number): number => train.classes.indexOf(test.classes[c]);
    // The generated images go through the teacher and (with --lora / --student) the student, decoded once.
    const trainVariants: EmbedVariant[] = [{ name: teacher }, ...(student ? [{ ...student.variant, name: student.description }] : [])];
    const [before, after = null] = await embedFolder(device, loaded.model, trainVariants, train, (c) => c, pre, batch, pool);
    const [real] = await embedFolder(device, loaded.model, [{ name: teacher }], test, testLabel, pre, batch, pool);

    const accOf = async (x: Embedded): Promise<number> => probeAccuracy(device, await fitLinearProbe(device, x.embeds, x.labels, C, dim, fit), real.embeds, real.labels);
    const accBefore = await accOf(before);
    const accAfter = after ? await accOf(after) : null;
    const split = stratifiedHalves(real.labels, seed);
    const rows = (idx: number[]): Embedded => ({ embeds: Float32Array.from(idx.flatMap((i) => Array.from(real.embeds.subarray(i * dim, (i + 1) * dim)))), labels: idx.map((i) => real.labels[i]) });
    const realFit = rows(split.fit);
    const realTest = rows(split.test);
    const accReal = realFit.labels.length ? await probeAccuracy(device, await fitLinearProbe(device, realFit.embeds, realFit.labels, C, dim, fit), realTest.embeds, realTest.labels) : 0;

    const report: ProbeReport = {
      acc_before: accBefore,
      acc_after: accAfter,
      acc_real_to_real: accReal,
      classes: train.classes,
      n_train: before.labels.length,
      n_test: real.labels.length,
      n_real_fit: realFit.labels.length,
      n_real_test: realTest.labels.length,
      steps: fit.steps,
      lr: fit.lr,
      weight_decay: fit.weightDecay,
      seed,
    };
    const pct = (x: number | null): string => (x === null ? '   -  ' : `${(100 * x).toFixed(1).padStart(5)}%`);
    console.log(`linear probe, ${C} classes: fitted on ${report.n_train} generated image(s) (--train), scored on ${report.n_test} real image(s) (--test)`);
    console.log(`  acc_before        ${pct(accBefore)}   (teacher embeddings of the generated images)`);
    console.log(`  acc_after         ${pct(accAfter)}   ${student ? '(student embeddings of the generated images)' : '(no --lora or --student given)'}`);
    console.log(`  acc_real_to_real  ${pct(accReal)}   (ceiling: fitted on ${report.n_real_fit} real, scored on the other ${report.n_real_test})`);
    if (out) {
      writeFileAtomic(out, JSON.stringify({ model, ...(student?.record ?? {}), train: train.dir, test: test.dir, ...report }, null, 2) + '\n');
      warn(`probe: wrote ${out}`);
    }
    return 0;
  } finally {
    await pool.close();
    student?.dispose();
    loaded.model.dispose();
  }
}
