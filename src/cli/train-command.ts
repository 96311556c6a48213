// `npm run train -- --data DIR --model DIR|NAME [flags]` — GMAIL training end to end.
// With no --data it builds (or reuses) the embedded demo dataset and trains the `tiny` model.
import { defaultCacheDir } from '../gpu/cache-dir.ts';
import { join, resolve } from 'node:path';
import { existsSync, readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { getDevice } from '../gpu/device.ts';
import { ALL_TARGETS, ATTENTION_TARGETS, type LoraTarget } from '../nn/lora.ts';
import { ensureDemoDataset } from '../io/demo-data.ts';
import { train, type TrainOptions } from '../train/trainer.ts';
import { evaluatePairs } from '../train/evaluate.ts';
import { readRunJson } from '../train/checkpoint.ts';
import { loadDataset, validateImages } from '../io/dataset.ts';
import { isModelDir, preprocessingOf } from '../io/hf-checkpoint.ts';
import { NAMED_CONFIGS } from '../nn/config.ts';
import { parseFlags, helpText, positive, nonNegative, fraction, UsageError, type FlagSpec } from './args.ts';
import { Progress } from './progress.ts';
import { studentDescription } from './embed-command.ts';

export const DEMO_DIR = 'data/demo';

/** Settings the demo uses instead of the paper's (a 3-minute CPU run, not 50k steps). */
export const DEMO_OVERRIDES = { model: 'tiny', steps: 60, batch: 32, lr: 3e-3, warmup: 5, valFraction: 0.25, saveEvery: 30, alpha: 8 };

/** "--steps 60, --batch 32, ..." from DEMO_OVERRIDES (flag names are the kebab-case keys). */
function demoDefaults(): string {
  return Object.entries(DEMO_OVERRIDES)
    .map(([k, v]) => `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} ${v}`)
    .join(', ');
}

export const TRAIN_FLAGS: FlagSpec[] = [
  { name: 'data', type: 'string', help: 'dataset directory (pairs.jsonl, or real/ + generated/); omit to train on the embedded demo' },
  { name: 'model', type: 'string', help: 'HF CLIP model directory or preset (tiny, vit-b-32, vit-b-16, vit-l-14); required with --data' },
  { name: 'out', type: 'string', help: 'run directory (default runs/<timestamp>)' },
  { name: 'steps', type: 'int', default: 0, help: 'optimizer steps (0 = use --epochs)', check: nonNegative },
  { name: 'epochs', type: 'int', default: 1, help: 'epochs over the training pairs when --steps is 0', check: positive },
  { name: 'batch', type: 'int', default: 32, help: 'pairs per micro-batch on the GPU', check: positive },
  { name: 'accum', type: 'int', default: 1, help: 'micro-batches per step (effective batch = batch × accum; the paper used 256)', check: positive },
  { name: 'lr', type: 'float', default: 1e-4, help: 'AdamW peak learning rate', check: positive },
  { name: 'min-lr', type: 'float', default: 0, help: 'learning rate at the end of each cosine cycle', check: nonNegative },
  { name: 'weight-decay', type: 'float', default: 0.01, help: 'AdamW decoupled weight decay', check: nonNegative },
  { name: 'beta1', type: 'float', default: 0.9, help: 'AdamW beta1', check: fraction },
  { name: 'beta2', type: 'float', default: 0.999, help: 'AdamW beta2', check: fraction },
  { name: 'eps', type: 'float', default: 1e-8, help: 'AdamW epsilon', check: positive },
  { name: 'clip', type: 'float', default: 1.0, help: 'clip the global gradient L2 norm to this (0 = off)', check: nonNegative },
  { name: 'warmup', type: 'int', default: 100, help: 'linear warmup steps', check: nonNegative },
  { name: 'restart-period', type: 'int', default: 0, help: 'cosine warm-restart period in steps (0 = one cosine decay, no restarts)', check: nonNegative },
  { name: 'restart-mult', type: 'float', default: 1, help: 'period multiplier after each warm restart', check: positive },
  { name: 'rank', type: 'int', default: 4, help: 'LoRA rank r', check: positive },
  { name: 'alpha', type: 'float', default: 4, help: 'LoRA alpha; updates are scaled by alpha / rank', check: positive },
  { name: 'targets', type: 'string', default: ATTENTION_TARGETS.join(','), help: `LoRA target modules, comma-separated from ${ALL_TARGETS.join(',')}` },
  { name: 'dual-projection', type: 'bool', default: false, help: "train the student's own copy of visual_projection (the paper's dual projection)" },
  { name: 'tau', type: 'float', default: 0.07, help: 'InfoNCE temperature (fixed)', check: positive },
  { name: 'seed', type: 'int', default: 0, help: 'seed for LoRA init, data order, generated-image choice, and the random weights of a preset --model (embed/eval then need the same --seed)' },
  { name: 'val-fraction', type: 'float', default: 0.1, help: 'held-out fraction of pairs (deterministic by id) for the final eval', check: fraction },
  { name: 'resume', type: 'string', help: 'continue the run in this run directory from its newest checkpoint' },
  { name: 'teacher-cache', type: 'bool', default: true, help: 'cache teacher embeddings of real images (--no-teacher-cache to recompute every step)' },
  { name: 'cache-dir', type: 'string', help: 'teacher cache directory (default $GENALIGN_CACHE_DIR or ~/.cache/genalign)' },
  { name: 'save-every', type: 'int', default: 500, help: 'write a checkpoint every N steps (and at the end)', check: positive },
  { name: 'log-every', type: 'int', default: 10, help: 'plain-text progress line every N steps when not on a TTY', check: positive },
  { name: 'keep-checkpoints', type: 'int', default: 3, help: 'how many checkpoints to keep', check: positive },
  { name: 'max-bad-fraction', type: 'float', default: 0.05, help: 'abort when more than this fraction of images fail to decode', check: fraction },
  { name: 'eval', type: 'bool', default: true, help: 'evaluate on the val split at the end (--no-eval to skip)' },
  { name: 'plot', type: 'string', default: 'tsne', help: 'Figure-3 projection: tsne or pca', check: (v) => (v === 'tsne' || v === 'pca' ? null : 'must be tsne or pca') },
  { name: 'validate', type: 'bool', default: false, help: "check the dataset only: decode and preprocess every image (as --model's preprocessing would), list every problem, train nothing" },
];

/** --validate: every pair's files are checked; exit 0 when nothing is wrong, 1 otherwise. */
async function validateDataset(data: string, model: string): Promise<number> {
  const warnings: string[] = [];
  const dataset = loadDataset(data, { onWarn: (w) => (warnings.push(w), process.stderr.write(w + '\n')) });
  const { pre, problem: modelProblem } = preprocessingOf(model);
  if (modelProblem) {
    warnings.push(modelProblem);
    process.stderr.write(`problem: ${modelProblem}\n`);
  }
  process.stderr.write(`validate: decoding ${dataset.pairs.length} pairs' images in ${dataset.dir} at ${pre.cropWidth}x${pre.cropHeight} (--model ${model})…\n`);
  let progress: Progress | null = null;
  const res = await validateImages(dataset, {
    preprocess: pre,
    concurrency: Math.max(2, cpus().length),
    onProgress: (done, total) => (progress ??= new Progress(total, 'validate')).update(done),
  });
  for (const b of res.bad) process.stderr.write(`bad image: ${b.message}\n`);
  const problems = res.bad.length + warnings.length;
  process.stderr.write(
    `validate: ${res.checked} image files checked, ${res.bad.length} could not be used` +
      (warnings.length ? `; ${warnings.length} other problem(s) above` : '') +
      (res.bad.length ? '. Training skips bad images (and aborts past --max-bad-fraction); re-encode or remove them.\n' : problems ? '.\n' : ': no problems found.\n'),
  );
  return problems ? 1 : 0;
}

/** runs/<local time>, with -2, -3, … when a run started in the same second already has that name. */
function defaultRunDir(): string {
  const d = new Date();
  const p = (n: number): string => String(n).padStart(2, '0');
  const base = join('runs', `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`);
  let dir = base;
  for (let k = 2; existsSync(dir); k++) dir = `${base}-${k}`;
  return dir;
}

function parseTargets(s: string): LoraTarget[] {
  const list = s.split(',').map((t) => t.trim()).filter(Boolean);
  if (!list.length) throw new UsageError('train: --targets is empty');
  for (const t of list) if (!(ALL_TARGETS as readonly string[]).includes(t)) throw new UsageError(`train: --targets has unknown module '${t}' (choose from ${ALL_TARGETS.join(', ')})`);
  return list as LoraTarget[];
}


/** Options of a run being resumed come from its config.json; flags given now may not change them. */
function resumeOptions(dir: string, f: Record<string, unknown>, argv: string[]): TrainOptions {
  const p = join(dir, 'config.json');
  if (!existsSync(p)) throw new UsageError(`train: --resume ${dir}: no config.json there (is it a run directory?)`);
  const saved = readRunJson<TrainOptions>(p, 'run options');
  const allowed = new Set(['resume', 'steps', 'epochs', 'save-every', 'log-every', 'eval', 'plot', 'cache-dir', 'teacher-cache', 'no-teacher-cache', 'no-eval', 'keep-checkpoints', 'max-bad-fraction']);
  for (const a of argv) {
    if (!a.startsWith('--')) continue;
    const name = a.slice(2).split('=')[0];
    if (!allowed.has(name)) throw new UsageError(`train: --${name} cannot be changed when resuming (the run's options are in ${p})`);
  }
  // A flag given now wins; otherwise the run keeps its saved value (not the flag's default:
  // a run started with --no-eval must not evaluate after --resume).
  const given = (name: string): boolean => argv.some((a) => a === `--${name}` || a.startsWith(`--${name}=`) || a === `--no-${name}`);
  const pick = <T>(name: string, savedValue: T): T => (given(name) ? (f[name] as T) : savedValue);
  return {
    ...saved,
    out: dir,
    resume: dir,
    steps: pick('steps', saved.steps),
    epochs: pick('epochs', saved.epochs),
    saveEvery: pick('save-every', saved.saveEvery),
    logEvery: pick('log-every', saved.logEvery),
    keepCheckpoints: pick('keep-checkpoints', saved.keepCheckpoints),
    maxBadFraction: pick('max-bad-fraction', saved.maxBadFraction),
    eval: pick('eval', saved.eval),
    plot: pick('plot', saved.plot),
    teacherCache: pick('teacher-cache', saved.teacherCache),
    cacheDir: pick('cache-dir', saved.cacheDir),
  };
}

export async function runTrain(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(helpText('train', `GMAIL: train a LoRA student (generated images) to align with a frozen CLIP teacher (real images).\nWith no --data, trains the tiny model on the embedded demo dataset (not diffusion outputs; see README),\nwith its own defaults where no flag is given: ${demoDefaults()}.`, TRAIN_FLAGS));
    return 0;
  }
  const f = parseFlags(argv, TRAIN_FLAGS, 'train');
  if (f.validate) {
    if (f.resume) throw new UsageError('train: --validate checks a dataset (--data); it does not go with --resume');
    if (f.data && !f.model) throw new UsageError('train: --model is required with --data (its preprocessing decides the crop the images are checked at)');
    if (f.model && !isModelDir(String(f.model)) && !Object.hasOwn(NAMED_CONFIGS, String(f.model))) {
      throw new UsageError(`train: --model ${String(f.model)}: not a directory and not a preset (presets: ${Object.keys(NAMED_CONFIGS).join(', ')})`);
    }
    if (!f.data) await ensureDemoDataset(resolve(DEMO_DIR), {});
    return validateDataset(f.data ? String(f.data) : resolve(DEMO_DIR), f.model ? String(f.model) : DEMO_OVERRIDES.model);
  }
  let o: TrainOptions;
  if (f.resume) {
    o = resumeOptions(resolve(String(f.resume)), f, argv);
  } else {
    const demo = !f.data;
    const given = (name: string): boolean => argv.some((a) => a === `--${name}` || a.startsWith(`--${name}=`));
    if (demo) {
      const dir = resolve(DEMO_DIR);
      process.stderr.write(`No --data given: using the embedded demo dataset in ${dir}.\n` +
        'Its "generated" images are a systematic rendering shift of the "real" ones, not diffusion outputs; see the README for real pairs.\n');
      await ensureDemoDataset(dir, {});
      f.data = dir;
    } else if (!f.model) {
      throw new UsageError('train: --model is required with --data (an HF CLIP directory, or a preset such as vit-b-32)');
    }
    const pick = <T>(name: string, demoValue: T): T => (demo && !given(name) ? demoValue : (f[name] as T));
    o = {
      data: String(f.data),
      model: pick('model', DEMO_OVERRIDES.model),
      out: (f.out as string | undefined) ?? defaultRunDir(),
      steps: pick('steps', DEMO_OVERRIDES.steps),
      epochs: Number(f.epochs),
      batch: pick('batch', DEMO_OVERRIDES.batch),
      accum: Number(f.accum),
      lr: pick('lr', DEMO_OVERRIDES.lr),
      minLr: Number(f['min-lr']),
      weightDecay: Number(f['weight-decay']),
      beta1: Number(f.beta1),
      beta2: Number(f.beta2),
      eps: Number(f.eps),
      clip: Number(f.clip),
      warmup: pick('warmup', DEMO_OVERRIDES.warmup),
      restartPeriod: Number(f['restart-period']),
      restartMult: Number(f['restart-mult']),
      rank: Number(f.rank),
      alpha: pick('alpha', DEMO_OVERRIDES.alpha),
      targets: parseTargets(String(f.targets)),
      dualProjection: Boolean(f['dual-projection']),
      tau: Number(f.tau),
      seed: Number(f.seed),
      valFraction: pick('val-fraction', DEMO_OVERRIDES.valFraction),
      teacherCache: Boolean(f['teacher-cache']),
      cacheDir: (f['cache-dir'] as string | undefined) ?? defaultCacheDir(),
      saveEvery: pick('save-every', DEMO_OVERRIDES.saveEvery),
      logEvery: Number(f['log-every']),
      keepCheckpoints: Number(f['keep-checkpoints']),
      maxBadFraction: Number(f['max-bad-fraction']),
      eval: Boolean(f.eval),
      plot: f.plot as 'tsne' | 'pca',
      resume: null,
    };
  }

  const device = await getDevice();
  let stop = false;
  const onSigint = (): void => {
    if (stop) {
      process.stderr.write('\nsecond Ctrl-C: exiting without a checkpoint\n');
      process.exit(130);
    }
    stop = true;
    process.stderr.write('\nCtrl-C: finishing this step and writing a checkpoint (Ctrl-C again to quit now)\n');
  };
  process.on('SIGINT', onSigint);
  let progress: Progress | null = null;
  let lastPlain = 0;
  const result = await train(device, o, {
    log: (l) => (progress ? progress.log(l) : process.stderr.write(l + '\n')),
    onStart: (i) => {
      process.stderr.write(`run: ${i.runDir}\nadapter: ${i.adapter}\ntraining ${i.totalSteps} steps (from ${i.startStep}) on ${i.trainPairs} pairs, effective batch ${o.batch * o.accum}\n`);
      progress = new Progress(i.totalSteps, 'train', process.stderr, Number.POSITIVE_INFINITY);
      if (i.startStep) progress.update(i.startStep);
    },
    onStep: (r, total) => {
      const fields = { epoch: r.epoch, loss: r.loss, acc: r.accuracy, 'img/s': r.images_per_s, lr: r.lr };
      if (process.stderr.isTTY && process.env.CI !== 'true') progress!.update(r.step, fields);
      else if (r.step - lastPlain >= o.logEvery || r.step === total || r.step === 1) {
        lastPlain = r.step;
        process.stderr.write(`step ${r.step}/${total}  epoch ${r.epoch}  loss ${r.loss.toFixed(4)}  acc ${r.accuracy.toFixed(3)}  ${r.images_per_s.toFixed(1)} img/s  lr ${r.lr.toExponential(2)}  |g| ${r.grad_norm.toFixed(3)}\n`);
      }
    },
    shouldStop: () => stop,
  });
  process.off('SIGINT', onSigint);
  if (result.stoppedEarly) return 130;
  process.stderr.write(`adapter (PEFT): ${join(result.runDir, 'adapter')}\n`);
  if (o.eval && result.valPairs.length >= 2) {
    process.stderr.write(`eval on ${result.valPairs.length} held-out pairs…\n`);
    const ev = await evaluatePairs(device, result.model.model, result.lora, result.projection ?? undefined, result.pre, result.valPairs, result.runDir, { batch: o.batch, plot: o.plot, seed: o.seed, student: studentDescription(join(result.runDir, 'adapter'), result.runDir) }, result.teacherCache);
    const r = ev.report;
    process.stderr.write(
      `paired cosine ${r.paired_cosine_before.toFixed(4)} → ${r.paired_cosine_after.toFixed(4)}  ` +
        `R@1 ${r.r1_before.toFixed(3)} → ${r.r1_after.toFixed(3)}  R@5 ${r.r5_before.toFixed(3)} → ${r.r5_after.toFixed(3)}  ` +
        `gap ${r.gap_before.toFixed(4)} → ${r.gap_after.toFixed(4)}  (n=${r.n_val})\n` +
        `wrote ${ev.files.join(', ')}\n`,
    );
  } else if (o.eval) {
    process.stderr.write('eval skipped: fewer than 2 val pairs (raise --val-fraction)\n');
  }
  result.lora.dispose();
  result.projection?.dispose();
  result.model.model.dispose();
  return 0;
}
