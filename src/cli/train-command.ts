// `npm run train -- --data DIR --model DIR|NAME [flags]` — GMAIL training end to end.
// With no --data it builds (or reuses) the embedded demo dataset and aligns to the committed demo teacher (models/demo-clip).
// The flags are derived from the option table in src/train/options.ts (types, defaults, checks,
// help, the demo's values, and what --resume may change); --validate is this command's own.
import type { EvalReport } from '../train/metrics.ts';
import { join, resolve } from 'node:path';
import { existsSync, statSync } from 'node:fs';
import { getDevice } from '../gpu/device.ts';
import { ensureDemoDataset } from '../io/demo-data.ts';
import { disposeStudent } from '../train/student.ts';
import { train, type TrainHooks } from '../train/trainer.ts';
import { expandShardSpec, isShardSpec, validateShards } from '../io/webdataset.ts';
import { readRunJson } from '../train/checkpoint.ts';
import {
  TRAIN_OPTIONS, OPTION_KEYS, DEMO_DATA_DIR, flagName, optionsFromFlags, newRunOptions, resumedOptions, OptionValueError, ResumeConflictError,
  type OptionDecl, type OptionKey, type TrainOptions, type FlagValue, type GivenOptions,
} from '../train/options.ts';
import { loadDataset, validateImages } from '../io/dataset.ts';
import { isModelDir, preprocessingOf } from '../io/hf-checkpoint.ts';
import { NAMED_CONFIGS } from '../nn/config.ts';
import { parseFlags, helpText, UsageError, type FlagSpec } from './args.ts';
import { Progress } from './progress.ts';
import { escapeForTerminal } from './terminal.ts';

/** Writes to stderr with control characters of file names shown as escapes. */
function printErr(text: string): void {
  process.stderr.write(escapeForTerminal(text));
}

/** The demo's own values, as flags: "--model tiny, --steps 60, ..." (from the option table). */
function demoDefaults(): string {
  return OPTION_KEYS.filter((k) => k !== 'data' && TRAIN_OPTIONS[k].demo !== undefined)
    .map((k) => `--${flagName(k)} ${String(TRAIN_OPTIONS[k].demo)}`)
    .join(', ');
}

/** The flag of one option: parsed by its type, checked by the option's own conversion, --help from its declaration. */
function optionFlag(key: OptionKey): FlagSpec {
  const d = TRAIN_OPTIONS[key] as OptionDecl<unknown>;
  const literal = typeof d.default === 'function' || d.default === undefined || d.default === null ? undefined : Array.isArray(d.default) ? d.default.join(',') : String(d.default);
  return {
    name: flagName(key),
    type: d.flagType,
    help: d.onResume === 'may-change' ? `${d.help}; may be changed on --resume` : d.help,
    defaultText: d.defaultText ?? literal,
    check: (v) => {
      try {
        d.fromFlag(v);
        return null;
      } catch (e) {
        if (e instanceof OptionValueError) return e.message;
        throw e;
      }
    },
  };
}

export const TRAIN_FLAGS: FlagSpec[] = [
  ...OPTION_KEYS.map(optionFlag),
  { name: 'validate', type: 'bool', default: false, help: "check the dataset only: decode and preprocess every image (as --model's preprocessing would), list every problem, train nothing" },
];

/** --validate of WebDataset shards: every sample read, every image decoded from its member; exit 0 when nothing is wrong, 1 otherwise. */
async function validateShardData(spec: string, model: string): Promise<number> {
  let shards: string[];
  try {
    shards = expandShardSpec(spec);
  } catch (e) {
    throw new UsageError(`train: --data ${spec}: ${(e as Error).message}`);
  }
  const { pre, problem: modelProblem } = preprocessingOf(model);
  const modelProblems = modelProblem ? [modelProblem] : [];
  if (modelProblem) printErr(`problem: ${modelProblem}\n`);
  printErr(`validate: reading ${shards.length} shard(s) and decoding their images at ${pre.cropWidth}x${pre.cropHeight} (--model ${model})…\n`);
  const res = await validateShards(shards, pre);
  for (const p of res.problems) printErr(`${p}\n`);
  const problems = res.problems.length + modelProblems.length;
  printErr(`validate: ${res.shards} shard(s), ${res.samples} samples, ${res.images} images checked` + (problems ? `; ${problems} problem(s) above.\n` : ': no problems found.\n'));
  return problems ? 1 : 0;
}

/** --validate: every pair's files are checked; exit 0 when nothing is wrong, 1 otherwise. */
async function validateDataset(data: string, model: string): Promise<number> {
  if (isShardSpec(data)) return validateShardData(data, model);
  const warnings: string[] = [];
  const dataset = loadDataset(data, { onWarn: (w) => (warnings.push(w), printErr(w + '\n')) });
  const { pre, problem: modelProblem } = preprocessingOf(model);
  if (modelProblem) {
    warnings.push(modelProblem);
    printErr(`problem: ${modelProblem}\n`);
  }
  printErr(`validate: decoding ${dataset.pairs.length} pairs' images in ${dataset.dir} at ${pre.cropWidth}x${pre.cropHeight} (--model ${model})…\n`);
  let progress: Progress | null = null;
  const res = await validateImages(dataset, {
    preprocess: pre,
    onProgress: (done, total) => (progress ??= new Progress(total, 'validate')).update(done),
  });
  for (const b of res.bad) printErr(`bad image: ${b.message}\n`);
  const problems = res.bad.length + warnings.length;
  printErr(
    `validate: ${res.checked} image files checked, ${res.bad.length} could not be used` +
      (warnings.length ? `; ${warnings.length} other problem(s) above` : '') +
      (res.bad.length ? '. Training skips bad images (and aborts past --max-bad-fraction); re-encode or remove them.\n' : problems ? '.\n' : ': no problems found.\n'),
  );
  return problems ? 1 : 0;
}

/** The options given on this command line (flag values converted by each option), by option key. */
function givenOptions(f: Record<string, FlagValue | undefined>): GivenOptions {
  const flags: Partial<Record<OptionKey, FlagValue>> = {};
  for (const key of OPTION_KEYS) {
    const v = f[flagName(key)];
    if (v !== undefined) flags[key] = v;
  }
  try {
    return optionsFromFlags(flags);
  } catch (e) {
    if (e instanceof OptionValueError) throw new UsageError(`train: ${e.message}`);
    throw e;
  }
}

/** Options of a run being resumed: its config.json, with what this command line may change. */
function resumeOptions(dir: string, given: GivenOptions): TrainOptions {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new UsageError(`train: --resume ${dir}: not a directory (pass the run directory, e.g. runs/20261202-101500)`);
  const p = join(dir, 'config.json');
  if (!existsSync(p)) throw new UsageError(`train: --resume ${dir}: no config.json there (is it a run directory?)`);
  const saved = readRunJson<unknown>(p, 'run options');
  if (!saved || typeof saved !== 'object' || typeof (saved as Record<string, unknown>).configHash !== 'string') {
    throw new UsageError(`train: --resume ${dir}: ${p} is not the config.json of a genalign run (it has no configHash); pass a run directory that train created`);
  }
  try {
    return resumedOptions(saved, p, given, dir);
  } catch (e) {
    if (e instanceof ResumeConflictError) throw new UsageError(`train: ${e.message}`);
    throw e;
  }
}

/** The run's options from the options given on the command line: a resumed run's, or a new run's (the demo's when there is no --data). */
function resolveOptions(given: GivenOptions): { options: TrainOptions; demo: boolean } {
  if (given.resume) return { options: resumeOptions(resolve(String(given.resume)), given), demo: false };
  const demo = given.data === undefined;
  try {
    return { options: newRunOptions(given, demo), demo };
  } catch (e) {
    if (e instanceof OptionValueError) throw new UsageError(`train: ${e.message}`);
    throw e;
  }
}

/** The options `npm run train -- <argv>` would train with (usage errors as UsageError); nothing is built or written. */
export function trainOptionsOf(argv: string[]): TrainOptions {
  return resolveOptions(givenOptions(parseFlags(argv, TRAIN_FLAGS, 'train'))).options;
}

/**
 * The train command. `inject` plugs test doubles into the run (file operations that fail at a
 * chosen point, a delay after each step); the CLI entry point passes nothing.
 */
export async function runTrain(argv: string[], inject: Pick<TrainHooks, 'files' | 'transformLoss' | 'onStep'> = {}): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(helpText('train', `GMAIL: train a LoRA student (generated images) to align with a frozen CLIP teacher (real images).\nWith no --data, aligns to the committed demo teacher (models/demo-clip, a tiny CLIP) on the embedded demo dataset (not diffusion outputs; see README),\nwith its own defaults where no flag is given: ${demoDefaults()}.`, TRAIN_FLAGS));
    return 0;
  }
  const f = parseFlags(argv, TRAIN_FLAGS, 'train');
  const given = givenOptions(f);
  const demoDir = resolve(DEMO_DATA_DIR);
  if (f.validate) {
    if (given.resume) throw new UsageError('train: --validate checks a dataset (--data); it does not go with --resume');
    if (given.data && !given.model) throw new UsageError('train: --model is required with --data (its preprocessing decides the crop the images are checked at)');
    const model = given.model === undefined ? String(TRAIN_OPTIONS.model.demo) : String(given.model);
    if (!isModelDir(model) && !Object.hasOwn(NAMED_CONFIGS, model)) {
      throw new UsageError(`train: --model ${model}: not a directory and not a preset (presets: ${Object.keys(NAMED_CONFIGS).join(', ')})`);
    }
    if (!given.data) await ensureDemoDataset(demoDir, {});
    return validateDataset(given.data ? String(given.data) : demoDir, model);
  }
  const { options: o, demo } = resolveOptions(given);
  if (demo) {
    printErr(`No --data given: using the embedded demo dataset in ${demoDir}.\n` +
      'Its "generated" images are a systematic rendering shift of the "real" ones, not diffusion outputs; see the README for real pairs.\n');
    await ensureDemoDataset(demoDir, {});
  }

  const device = await getDevice();
  let stop = false;
  const onSigint = (): void => {
    if (stop) {
      printErr('\nsecond Ctrl-C: exiting without a checkpoint\n');
      process.exit(130);
    }
    stop = true;
    printErr('\nCtrl-C: finishing this step and writing a checkpoint (Ctrl-C again to quit now)\n');
  };
  process.on('SIGINT', onSigint);
  let progress: Progress | null = null;
  let lastPlain = 0;
  const say = (l: string): void => (progress ? progress.log(l) : printErr(l + '\n'));
  const result = await train(device, o, {
    ...inject,
    log: say,
    onStart: (i) => {
      printErr(`run: ${i.runDir}\nadapter: ${i.adapter}\ntraining ${i.totalSteps} steps (from ${i.startStep}) on ${i.trainPairs === null ? 'streamed shard samples' : `${i.trainPairs} pairs`}, effective batch ${o.batch * o.accum}\n`);
      progress = new Progress(i.totalSteps, 'train', process.stderr, Number.POSITIVE_INFINITY);
      if (i.startStep) progress.update(i.startStep);
    },
    onStep: async (r, total) => {
      const fields = { epoch: r.epoch, loss: r.loss, acc: r.accuracy, 'img/s': r.images_per_s, lr: r.lr, ...(r.loss_scale !== undefined ? { scale: r.loss_scale } : {}) };
      if (process.stderr.isTTY && process.env.CI !== 'true') progress!.update(r.step, fields);
      else if (r.step - lastPlain >= o.logEvery || r.step === total || r.step === 1) {
        lastPlain = r.step;
        printErr(`step ${r.step}/${total}  epoch ${r.epoch}  loss ${r.loss.toFixed(4)}  acc ${r.accuracy.toFixed(3)}  ${r.images_per_s.toFixed(1)} img/s  lr ${r.lr.toExponential(2)}  |g| ${r.grad_norm.toFixed(3)}${r.loss_scale !== undefined ? `  scale ${r.loss_scale}${r.skipped ? ' (overflow: step skipped, scale halved)' : ''}` : ''}\n`);
      }
      await inject.onStep?.(r, total);
    },
    shouldStop: () => stop,
  });
  process.off('SIGINT', onSigint);
  try {
    if (result.stoppedEarly) return 130;
    if (result.eval) {
      const r = result.eval.report;
      printErr(
        `paired cosine ${r.paired_cosine_before.toFixed(4)} → ${r.paired_cosine_after.toFixed(4)}  ` +
          `R@1 ${r.r1_before.toFixed(3)} → ${r.r1_after.toFixed(3)}  R@5 ${r.r5_before.toFixed(3)} → ${r.r5_after.toFixed(3)}  ` +
          `gap ${r.gap_before.toFixed(4)} → ${r.gap_after.toFixed(4)}  (n=${r.n_val})\n` +
          downstreamLines(r) +
          `wrote ${result.eval.files.join(', ')}\n`,
      );
    }
    return 0;
  } finally {
    disposeStudent(result.student);
    result.model.model.dispose();
  }
}

/** The caption retrieval and zero-shot lines of the final eval (empty without a text tower). */
export function downstreamLines(r: EvalReport): string {
  const f = (x: number | undefined): string => (x === undefined ? '-' : x.toFixed(3));
  let out = '';
  if (r.n_text !== undefined) {
    out +=
      `text→image R@1  real ${f(r.t2i_r1_real)}  generated ${f(r.t2i_r1_gen_before)} → ${f(r.t2i_r1_gen_after)}   ` +
      `image→text R@1  real ${f(r.i2t_r1_real)}  generated ${f(r.i2t_r1_gen_before)} → ${f(r.i2t_r1_gen_after)}  (n=${r.n_text})\n`;
  }
  if (r.n_zeroshot !== undefined) {
    out += `zero-shot top-1  real ${f(r.zeroshot_top1_real)}  generated ${f(r.zeroshot_top1_gen_before)} → ${f(r.zeroshot_top1_gen_after)}  (${r.zeroshot_classes} classes, n=${r.n_zeroshot})\n`;
  }
  return out;
}
