// The training options, declared once.
//
// Each entry of TRAIN_OPTIONS says everything about one option: its type, default, check,
// --help text, what --resume may do with it, and the value the demo (no --data) uses instead
// of the default. Everything else is derived from this table:
//   - TrainOptions, the options type (below);
//   - the train command's flags, their parsing and --help (src/cli/train-command.ts);
//   - config.json: the options a run saves (`savedOptions`) and how they are read back and
//     checked (`resumedOptions`);
//   - the resume rules and configHash.
//
// What --resume may do with an option (`onResume`):
//   'fixed'           part of the run's identity: saved, hashed into configHash (which every
//                     checkpoint records), and refused on --resume when given with another value.
//   'may-change'      saved; a flag given with --resume replaces it (how long to train, how
//                     often to checkpoint, whether to evaluate).
//   'per-invocation'  not saved: every invocation takes it from its own command line or
//                     environment. Paths that decide where genalign writes (the run directory,
//                     the teacher cache) are of this kind, so they never come from a file that
//                     genalign reads.
import { createHash } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { defaultCacheDir } from '../platform/cache-dir.ts';
import { ALL_TARGETS, ATTENTION_TARGETS, type LoraTarget } from '../nn/lora.ts';
import { absoluteShardSpec, isShardSpec } from '../io/webdataset.ts';

/** A dataset folder or a shard spec, made absolute. */
function dataSpec(v: string): string {
  return isShardSpec(v) ? absoluteShardSpec(v) : resolve(v);
}

export type OnResume = 'fixed' | 'may-change' | 'per-invocation';

/** A value that does not fit an option; the message leaves out the option's name (callers add the flag or the config.json key). */
export class OptionValueError extends Error {}

/** An option given on --resume that the run does not allow to change; names the flag. */
export class ResumeConflictError extends Error {}

/** A command-line value as the flag parser gives it (typed by `flagType`). */
export type FlagValue = string | number | boolean;

export interface OptionDecl<T> {
  /** The flag's value type on the command line (and in --help). */
  readonly flagType: 'string' | 'int' | 'float' | 'bool';
  readonly help: string;
  readonly onResume: OnResume;
  /** Value when the option is not given. A function for defaults read from the environment; undefined: required. */
  readonly default: T | (() => T) | undefined;
  /** What --help shows as the default when it is not a plain value. */
  readonly defaultText?: string;
  /** The demo's value (train without --data), when it differs from the default. */
  readonly demo?: T;
  /** Why the option is needed, when it is required and missing. */
  readonly required?: string;
  /**
   * A fixed option added after runs already existed: configHash leaves it out while it has its
   * default, so those runs (whose checkpoints carry the hash without it) still resume.
   */
  readonly hashOmitsDefault?: boolean;
  /** A parsed command-line value → the option's value; throws OptionValueError. */
  fromFlag(v: FlagValue): T;
  /** A value read from config.json → the option's value; throws OptionValueError. */
  fromJson(v: unknown): T;
  /** The canonical form that is saved, hashed and compared (absolute paths). */
  normalize(v: T): T;
}

type Check<T> = (v: T) => string | null;

interface DeclBase<T> {
  help: string;
  onResume: OnResume;
  default?: T | (() => T);
  defaultText?: string;
  demo?: T;
  required?: string;
  hashOmitsDefault?: boolean;
  check?: Check<T>;
}

/** What every kind of option carries from its declaration unchanged. */
function described<T>(d: DeclBase<T>): Pick<OptionDecl<T>, 'help' | 'onResume' | 'default' | 'defaultText' | 'demo' | 'required' | 'hashOmitsDefault'> {
  return { help: d.help, onResume: d.onResume, default: d.default, defaultText: d.defaultText, demo: d.demo, required: d.required, hashOmitsDefault: d.hashOmitsDefault };
}

function checked<T>(v: T, check: Check<T> | undefined): T {
  const problem = check?.(v);
  if (problem) throw new OptionValueError(problem);
  return v;
}

function numberOption(flagType: 'int' | 'float', d: DeclBase<number>): OptionDecl<number> {
  const parse = (v: unknown): number => {
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new OptionValueError(`must be a number, got ${JSON.stringify(v)}`);
    if (flagType === 'int' && !Number.isInteger(v)) throw new OptionValueError(`must be an integer, got ${v}`);
    return checked(v, d.check);
  };
  return { flagType, ...described(d), fromFlag: parse, fromJson: parse, normalize: (v) => v };
}

const int = (d: DeclBase<number>): OptionDecl<number> => numberOption('int', d);
const float = (d: DeclBase<number>): OptionDecl<number> => numberOption('float', d);

function bool(d: DeclBase<boolean>): OptionDecl<boolean> {
  const parse = (v: unknown): boolean => {
    if (typeof v !== 'boolean') throw new OptionValueError(`must be true or false, got ${JSON.stringify(v)}`);
    return v;
  };
  return { flagType: 'bool', ...described(d), fromFlag: parse, fromJson: parse, normalize: (v) => v };
}

function text(d: DeclBase<string> & { normalize?: (v: string) => string }): OptionDecl<string> {
  const parse = (v: unknown): string => {
    if (typeof v !== 'string' || v.trim() === '') throw new OptionValueError(`must be a non-empty string, got ${JSON.stringify(v)}`);
    return checked(v, d.check);
  };
  return { flagType: 'string', ...described(d), fromFlag: parse, fromJson: parse, normalize: d.normalize ?? ((v) => v) };
}

/** A string option that may be absent (null). */
function optionalText(d: DeclBase<string | null> & { normalize?: (v: string) => string }): OptionDecl<string | null> {
  const parse = (v: unknown): string | null => {
    if (v === null) return null;
    if (typeof v !== 'string' || v.trim() === '') throw new OptionValueError(`must be a non-empty string, got ${JSON.stringify(v)}`);
    return v;
  };
  return { flagType: 'string', ...described(d), default: d.default ?? null, fromFlag: parse, fromJson: parse, normalize: (v) => (v === null ? v : (d.normalize ?? resolve)(v)) };
}

function choice<C extends string>(values: readonly C[], d: DeclBase<C>): OptionDecl<C> {
  const parse = (v: unknown): C => {
    if (typeof v !== 'string' || !(values as readonly string[]).includes(v)) throw new OptionValueError(`must be ${values.join(' or ')}, got ${JSON.stringify(v)}`);
    return v as C;
  };
  return { flagType: 'string', ...described(d), fromFlag: parse, fromJson: parse, normalize: (v) => v };
}

/** A comma-separated list of names from `values` on the command line; a JSON array in config.json. */
function nameList<C extends string>(values: readonly C[], d: DeclBase<C[]>): OptionDecl<C[]> {
  const check = (list: readonly unknown[]): C[] => {
    if (list.length === 0) throw new OptionValueError('is empty');
    for (const t of list) if (typeof t !== 'string' || !(values as readonly string[]).includes(t)) throw new OptionValueError(`has unknown module '${String(t)}' (choose from ${values.join(', ')})`);
    return [...new Set(list as C[])];
  };
  return {
    flagType: 'string',
    ...described(d),
    fromFlag: (v) => check(String(v).split(',').map((t) => t.trim()).filter(Boolean)),
    fromJson: (v) => {
      if (!Array.isArray(v)) throw new OptionValueError(`must be a list, got ${JSON.stringify(v)}`);
      return check(v);
    },
    normalize: (v) => v,
  };
}

const positive: Check<number> = (v) => (v > 0 ? null : 'must be > 0');
const nonNegative: Check<number> = (v) => (v >= 0 ? null : 'must be >= 0');
const fraction: Check<number> = (v) => (v >= 0 && v < 1 ? null : 'must be in [0, 1)');

/** The demo dataset's directory (built by `train` without --data), relative to the working directory. */
export const DEMO_DATA_DIR = join('data', 'demo');

/**
 * The demo's teacher, relative to the working directory (the repository root under npm run): a
 * tiny CLIP that `npm run make-demo-model` pretrained on other scenes of the demo's generator
 * (committed; see models/demo-clip/README.md).
 */
export const DEMO_MODEL_DIR = join('models', 'demo-clip');

/** An HF model directory becomes its absolute path; a preset name stays as it is. */
function modelSpec(v: string): string {
  return existsSync(v) && statSync(v).isDirectory() ? resolve(v) : v;
}

export const TRAIN_OPTIONS = {
  data: text({
    help: "dataset directory (pairs.jsonl, or real/ + generated/), or WebDataset tar shards ('shards/{00000..00099}.tar', or a comma-separated list), streamed through a shuffle buffer; omit to train on the embedded demo",
    onResume: 'fixed',
    demo: DEMO_DATA_DIR,
    normalize: dataSpec,
  }),
  model: text({
    help: 'HF CLIP model directory or preset (tiny, vit-b-32, vit-b-16, vit-l-14); required with --data',
    onResume: 'fixed',
    demo: DEMO_MODEL_DIR,
    required: 'is required with --data (an HF CLIP directory, or a preset such as vit-b-32)',
    normalize: modelSpec,
  }),
  out: text({ help: 'run directory: a new or empty directory', onResume: 'per-invocation', default: () => defaultRunDir(), defaultText: 'runs/<timestamp>', normalize: (v) => resolve(v) }),
  resume: optionalText({ help: 'continue the run in this run directory from its newest checkpoint (or from step 0 if it has none yet)', onResume: 'per-invocation' }),
  steps: int({ help: 'optimizer steps (0 = use --epochs)', onResume: 'may-change', default: 0, demo: 60, check: nonNegative }),
  epochs: int({ help: 'epochs over the training pairs when --steps is 0', onResume: 'may-change', default: 1, check: positive }),
  batch: int({ help: 'pairs per micro-batch on the GPU', onResume: 'fixed', default: 32, demo: 32, check: positive }),
  accum: int({ help: 'micro-batches per step (effective batch = batch × accum; the paper used 256)', onResume: 'fixed', default: 1, check: positive }),
  lr: float({ help: 'AdamW peak learning rate', onResume: 'fixed', default: 1e-4, demo: 3e-3, check: positive }),
  minLr: float({ help: 'learning rate at the end of each cosine cycle', onResume: 'fixed', default: 0, check: nonNegative }),
  weightDecay: float({ help: 'AdamW decoupled weight decay', onResume: 'fixed', default: 0.01, check: nonNegative }),
  beta1: float({ help: 'AdamW beta1', onResume: 'fixed', default: 0.9, check: fraction }),
  beta2: float({ help: 'AdamW beta2', onResume: 'fixed', default: 0.999, check: fraction }),
  eps: float({ help: 'AdamW epsilon', onResume: 'fixed', default: 1e-8, check: positive }),
  clip: float({ help: 'clip the global gradient L2 norm to this (0 = off)', onResume: 'fixed', default: 1.0, check: nonNegative }),
  warmup: int({ help: 'linear warmup steps', onResume: 'fixed', default: 100, demo: 5, check: nonNegative }),
  restartPeriod: int({ help: 'cosine warm-restart period in steps (0 = one cosine decay, no restarts)', onResume: 'fixed', default: 0, check: nonNegative }),
  restartMult: float({ help: 'period multiplier after each warm restart', onResume: 'fixed', default: 1, check: positive }),
  rank: int({ help: "LoRA rank r; 0 = full fine-tuning (every weight of the student's vision tower trains, f32; published as an HF CLIPVisionModelWithProjection in model/ instead of adapter/)", onResume: 'fixed', default: 4, check: nonNegative }),
  alpha: float({ help: 'LoRA alpha; updates are scaled by alpha / rank', onResume: 'fixed', default: 4, demo: 8, check: positive }),
  targets: nameList<LoraTarget>(ALL_TARGETS, { help: `LoRA target modules, comma-separated from ${ALL_TARGETS.join(',')}`, onResume: 'fixed', default: [...ATTENTION_TARGETS], defaultText: ATTENTION_TARGETS.join(',') }),
  dualProjection: bool({ help: "train the student's own copy of visual_projection (the paper's dual projection)", onResume: 'fixed', default: false }),
  precision: choice(['f32', 'f16'] as const, {
    help: "f16: mixed precision (frozen weights and activations in f16, needs the adapter's shader-f16; LoRA masters, gradients, AdamW state, the loss and statistics in f32; dynamic loss scaling)",
    onResume: 'fixed',
    default: 'f32',
    hashOmitsDefault: true,
  }),
  tau: float({ help: 'InfoNCE temperature (fixed)', onResume: 'fixed', default: 0.07, check: positive }),
  cosineWeight: float({
    help: "weight λ of an absolute alignment term added to the InfoNCE loss: λ · mean(1 − cos(generated_i, real_i)) over the pairs (0 = the paper's loss alone)",
    onResume: 'fixed',
    default: 0,
    hashOmitsDefault: true,
    check: nonNegative,
  }),
  seed: int({ help: 'seed for LoRA init, data order, generated-image choice, and the random weights of a preset --model (embed/eval then need the same --seed)', onResume: 'fixed', default: 0 }),
  valFraction: float({ help: 'held-out fraction of pairs (deterministic by id) for the final eval', onResume: 'fixed', default: 0.1, demo: 0.25, check: fraction }),
  valData: optionalText({ help: 'with shard --data: shards held out as the validation split (then no pair of --data is held out)', onResume: 'fixed', hashOmitsDefault: true, normalize: dataSpec }),
  shuffleBuffer: int({ help: 'with shard --data: samples in the shuffle buffer (as WebDataset\'s shuffle(n)); memory holds this many samples\' encoded images', onResume: 'fixed', default: 1000, hashOmitsDefault: true, check: positive }),
  evalMax: int({ help: 'with shard --data: at most this many val samples (the first ones in shard order) for the final eval', onResume: 'may-change', default: 2000, check: positive }),
  devices: text({
    help: "data-parallel training over this many Dawn devices in one process ('all': one per GENALIGN_ADAPTERS entry): micro-batch k of a step runs on device k mod N (--accum a multiple of N), gradients are summed, one AdamW step; device k opens the k-th GENALIGN_ADAPTERS name, else the run's adapter",
    onResume: 'may-change',
    default: '1',
    check: (v) => (/^(all|[1-9]\d*)$/.test(v) ? null : "must be a positive integer or 'all'"),
  }),
  teacherCache: bool({ help: 'cache teacher embeddings of real images (--no-teacher-cache to recompute every step)', onResume: 'may-change', default: true }),
  cacheDir: text({ help: 'teacher cache directory', onResume: 'per-invocation', default: () => defaultCacheDir(), defaultText: '$GENALIGN_CACHE_DIR or ~/.cache/genalign', normalize: (v) => resolve(v) }),
  saveEvery: int({ help: 'write a checkpoint every N steps (and at the end)', onResume: 'may-change', default: 500, demo: 30, check: positive }),
  logEvery: int({ help: 'plain-text progress line every N steps when not on a TTY', onResume: 'may-change', default: 10, check: positive }),
  keepCheckpoints: int({ help: 'how many checkpoints to keep', onResume: 'may-change', default: 3, check: positive }),
  maxBadFraction: float({ help: 'abort when more than this fraction of images fail to decode', onResume: 'may-change', default: 0.05, check: fraction }),
  eval: bool({ help: 'evaluate on the val split at the end (--no-eval to skip)', onResume: 'may-change', default: true }),
  plot: choice(['tsne', 'pca'] as const, { help: 'Figure-3 projection: tsne or pca', onResume: 'may-change', default: 'tsne' }),
};

type Declared = typeof TRAIN_OPTIONS;
export type OptionKey = keyof Declared;
type ValueOf<D> = D extends OptionDecl<infer T> ? T : never;

/** The resolved options of a training run. */
export type TrainOptions = { [K in OptionKey]: ValueOf<Declared[K]> };

export const OPTION_KEYS = Object.keys(TRAIN_OPTIONS) as OptionKey[];

function decl(key: OptionKey): OptionDecl<unknown> {
  return TRAIN_OPTIONS[key] as OptionDecl<unknown>;
}

/** The command-line flag of an option: its key in kebab-case (`weightDecay` → `weight-decay`). */
export function flagName(key: OptionKey): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

function defaultOf(key: OptionKey): unknown {
  const d = decl(key).default;
  return typeof d === 'function' ? (d as () => unknown)() : d;
}

/** runs/<local time>, with -2, -3, … when a run started in the same second already has that name. */
export function defaultRunDir(): string {
  const d = new Date();
  const p = (n: number): string => String(n).padStart(2, '0');
  const base = join('runs', `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`);
  let dir = base;
  for (let k = 2; existsSync(dir); k++) dir = `${base}-${k}`;
  return dir;
}

/** Values given on the command line, already converted by each option's fromFlag. */
export type GivenOptions = Partial<Record<OptionKey, unknown>>;

/** Converts parsed flag values (keyed by option) to option values; errors name the flag. */
export function optionsFromFlags(flags: Partial<Record<OptionKey, FlagValue>>): GivenOptions {
  const out: GivenOptions = {};
  for (const key of OPTION_KEYS) {
    const v = flags[key];
    if (v === undefined) continue;
    try {
      out[key] = decl(key).fromFlag(v);
    } catch (e) {
      if (e instanceof OptionValueError) throw new OptionValueError(`--${flagName(key)} ${e.message}`);
      throw e;
    }
  }
  return out;
}

function normalized(key: OptionKey, v: unknown): unknown {
  return v === null || v === undefined ? v : decl(key).normalize(v);
}

/**
 * The options of a new run: each given value, else (for the demo, run without --data) the
 * demo's value, else the default. A required option that is missing is an OptionValueError.
 */
export function newRunOptions(given: GivenOptions, demo: boolean): TrainOptions {
  const out: Record<string, unknown> = {};
  for (const key of OPTION_KEYS) {
    const d = decl(key);
    let v = given[key];
    if (v === undefined && demo) v = d.demo;
    if (v === undefined) v = defaultOf(key);
    if (v === undefined) throw new OptionValueError(`--${flagName(key)} ${d.required ?? 'is required'}`);
    out[key] = normalized(key, v);
  }
  out.resume = null;
  return out as TrainOptions;
}

/** The options a run saves in its config.json: every option but the per-invocation ones, in canonical form. */
export function savedOptions(o: TrainOptions): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of OPTION_KEYS) if (decl(key).onResume !== 'per-invocation') out[key] = normalized(key, o[key]);
  return out;
}

function sameValue(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * The options of a resumed run: `saved` is the run's config.json (read from `configPath`),
 * `given` what this command line sets. Fixed options keep their saved value (given with another
 * value: ResumeConflictError naming the flag); may-change options take the given value, else
 * the saved one; per-invocation options come only from `given` or their default, with `out` and
 * `resume` the run directory. A saved value that does not fit its option is an OptionValueError
 * naming config.json and the key; an option missing from an older config.json takes its default.
 */
export function resumedOptions(saved: unknown, configPath: string, given: GivenOptions, runDir: string): TrainOptions {
  if (!saved || typeof saved !== 'object' || Array.isArray(saved)) throw new OptionValueError(`${configPath}: not a JSON object of run options`);
  const file = saved as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const key of OPTION_KEYS) {
    const d = decl(key);
    const g = given[key] === undefined ? undefined : normalized(key, given[key]);
    if (d.onResume === 'per-invocation') {
      out[key] = g ?? normalized(key, defaultOf(key));
      continue;
    }
    let kept: unknown;
    if (key in file) {
      try {
        kept = normalized(key, d.fromJson(file[key]));
      } catch (e) {
        if (e instanceof OptionValueError) throw new OptionValueError(`${configPath}: "${key}" ${e.message}; the file is damaged or was edited (restore it, or start a new run)`);
        throw e;
      }
    } else {
      kept = normalized(key, defaultOf(key));
      if (kept === undefined) throw new OptionValueError(`${configPath}: "${key}" is missing; the file is damaged or was edited (restore it, or start a new run)`);
    }
    if (d.onResume === 'fixed' && g !== undefined && !sameValue(g, kept)) {
      throw new ResumeConflictError(
        `--${flagName(key)} cannot be changed when resuming: the run was started with ${JSON.stringify(kept)} (${configPath}), and checkpoints continue only with the same value. Start a new run (another --out) to use ${JSON.stringify(g)}.`,
      );
    }
    out[key] = d.onResume === 'may-change' && g !== undefined ? g : kept;
  }
  const dir = resolve(runDir);
  if (out.out !== dir && given.out !== undefined) throw new ResumeConflictError(`--out ${String(given.out)} does not go with --resume ${runDir}: a resumed run stays in its own directory`);
  out.out = dir;
  out.resume = dir;
  return out as TrainOptions;
}

/**
 * Hash of the fixed options (keys and canonical values, in declaration order). Every checkpoint
 * records it; --resume refuses a checkpoint whose hash differs from the run's options.
 */
export function configHash(o: TrainOptions): string {
  const fixed = OPTION_KEYS.filter((k) => decl(k).onResume === 'fixed' && !(decl(k).hashOmitsDefault && sameValue(o[k], defaultOf(k)))).map((k) => [k, normalized(k, o[k])]);
  return createHash('sha256').update(JSON.stringify(fixed)).digest('hex').slice(0, 16);
}

/**
 * The hash that checkpoints written before this option table carry (a fixed list of fields),
 * so runs started with an earlier genalign can still be resumed.
 */
export function configHashBeforeSchema(o: TrainOptions): string {
  const keyed = {
    data: resolve(o.data), model: o.model, batch: o.batch, accum: o.accum, lr: o.lr, minLr: o.minLr, wd: o.weightDecay,
    b1: o.beta1, b2: o.beta2, eps: o.eps, clip: o.clip, warmup: o.warmup, rp: o.restartPeriod, rm: o.restartMult,
    rank: o.rank, alpha: o.alpha, targets: o.targets, dual: o.dualProjection, tau: o.tau, seed: o.seed, val: o.valFraction,
  };
  return createHash('sha256').update(JSON.stringify(keyed)).digest('hex').slice(0, 16);
}
