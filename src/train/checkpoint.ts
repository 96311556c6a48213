// Checkpoints: the student's files (for Python users) plus the trainer state (for --resume), and
// the run directory's recovery after a crash.
//
// The student is saved in one of two formats (StudentFormat), chosen by the run's --rank:
//   LoRA (--rank r > 0)   adapter_model.safetensors  PEFT keys, lora_A [r, in], lora_B [out, r]
//                         adapter_config.json        published to adapter/ (a PEFT adapter)
//   full (--rank 0)       model.safetensors          every student weight under its HF name
//                         config.json                a CLIPVisionModelWithProjection config
//                         preprocessor_config.json   the base model's preprocessing
//                                                    published to model/ (an HF model folder)
// Layout inside the run directory (LoRA shown):
//   checkpoints/step-000120/adapter_model.safetensors
//   checkpoints/step-000120/adapter_config.json
//   checkpoints/step-000120/optimizer.safetensors       AdamW moments: m.<param>, v.<param>
//   checkpoints/step-000120/trainer_state.json          step, data position, schedule, seed, …
//   checkpoints/latest                                  name of the checkpoint to resume from
//   adapter/                                            the latest checkpoint's student (what users load)
//   checkpoints/step-000121.nonfinite                   a checkpoint whose weights gave a NaN/Inf
//                                                       loss on the next step, set aside so that
//                                                       --resume does not pick it up
// A checkpoint's format is read from its files (formatOf), so inspecting a run directory needs no
// options; a resume with another --rank is refused by the config hash.
//
// A checkpoint is complete when all its files are there and readable. Saving one is ordered so
// that a crash after any single file operation leaves a state the next start can recover:
//   1. write the files into checkpoints/.step-N.tmp
//   2. point `latest` at step-N (atomic rewrite)        — a crash here: latest names a missing
//                                                          checkpoint, recovery falls back to the
//                                                          newest complete one
//   3. rename .step-N.tmp → step-N                       — the checkpoint appears whole
//   4. publish adapter/ (or model/) from step-N, file by file, each by an atomic rename (see publishStudent)
//   5. retention: each old checkpoint is renamed to .step-K.deleting (so it stops counting at
//      once) and then removed.
// inspectRun reads a run directory and says what a crash left behind (temporary files, half-
// removed checkpoints, a stale `latest` or adapter/, metrics lines past the checkpoint);
// repairRun puts it right. Both run with the run directory locked, and repairRun only after
// everything a resume needs has been checked, so a refused resume changes nothing.
import type { StreamPosition } from '../io/shard-stream.ts';
import { existsSync, lstatSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { FileOpError, isAtomicTemp, nodeFiles, removeTree, makeDirs, writeFileAtomic, type FileOps } from '../platform/atomic-file.ts';
import { SafetensorsFile, encodeSafetensors, readSafetensors } from '../io/safetensors.ts';
import { readRegularTextFile } from '../platform/regular-file.ts';
import { inlineListWithRest } from '../gpu/problem-list.ts';
import type { AdamWState } from './optimizer.ts';
import { checkState, gradScalerStateProblem, type GradScalerState } from './grad-scaler.ts';

export const CHECKPOINTS_DIR = 'checkpoints';
export const ADAPTER_DIR = 'adapter';
export const MODEL_DIR = 'model';
export const METRICS_FILE = 'metrics.jsonl';
const STATE_FILES = ['optimizer.safetensors', 'trainer_state.json'] as const;

/** How a checkpoint holds the student, and where the run directory publishes it. */
export interface StudentFormat {
  kind: 'lora' | 'full';
  /** The run directory's folder that holds the latest checkpoint's student (what users load). */
  publishDir: string;
  /** The student's files in a checkpoint (all published). */
  files: readonly string[];
  /** Which of them are JSON and which safetensors (checked when a checkpoint is inspected). */
  json: readonly string[];
  safetensors: readonly string[];
}

export const LORA_FORMAT: StudentFormat = {
  kind: 'lora', publishDir: ADAPTER_DIR,
  files: ['adapter_config.json', 'adapter_model.safetensors'], json: ['adapter_config.json'], safetensors: ['adapter_model.safetensors'],
};

export const FULL_FORMAT: StudentFormat = {
  kind: 'full', publishDir: MODEL_DIR,
  files: ['config.json', 'model.safetensors', 'preprocessor_config.json'], json: ['config.json', 'preprocessor_config.json'], safetensors: ['model.safetensors'],
};

/** The student format of a checkpoint directory, read from its files (LoRA unless it holds a full model and no adapter). */
export function formatOf(dir: string): StudentFormat {
  const has = (f: string): boolean => existsSync(join(dir, f));
  return !LORA_FORMAT.files.some(has) && FULL_FORMAT.files.some(has) ? FULL_FORMAT : LORA_FORMAT;
}

/** A student ready to be written: its format and the bytes of each of its files. */
export interface StudentFiles {
  format: StudentFormat;
  files: Record<string, readonly (Uint8Array | string)[]>;
}

/** Every folder any format publishes into (a new run refuses a directory holding one). */
export const PUBLISH_DIRS: readonly string[] = [ADAPTER_DIR, MODEL_DIR];

export interface TrainerState {
  step: number;
  epoch: number;
  /** Index of the next batch within `epoch`. */
  batchInEpoch: number;
  seed: number;
  /** Hash of the options that must match on resume (model, data, batch, …). */
  configHash: string;
  /** Last logged loss (informational). */
  lastLoss: number | null;
  /** The scheduler is a pure function of step and these options. */
  schedule: Record<string, number>;
  /** Training time up to this checkpoint, so metrics.jsonl's elapsed_s continues after a resume. */
  elapsedS?: number;
  /** The dynamic loss scale of an f16 run (--precision f16), so a resume scales as the run would have. */
  gradScaler?: GradScalerState;
  /** A run on WebDataset shards: where the sample stream continues (io/shard-stream.ts); epoch/batchInEpoch are then informational. */
  stream?: StreamPosition;
}

export interface Checkpoint {
  dir: string;
  state: TrainerState;
  optimizer: AdamWState;
}

export function checkpointName(step: number): string {
  return `step-${String(step).padStart(6, '0')}`;
}

function stepOfName(name: string): number {
  return Number(name.slice('step-'.length));
}

/** Parses a JSON file of a run; a damaged file is an error that names it. */
export function readRunJson<T>(path: string, what: string): T {
  const text = readRegularTextFile(path, `the ${what} (a JSON file)`);
  try {
    return JSON.parse(text) as T;
  } catch (e) {
    throw new Error(`${path}: cannot read the ${what} (${(e as Error).message}); the file is damaged or truncated`);
  }
}

/** Checks trainer_state.json's fields (types and ranges); the error names the file and the field. */
export function parseTrainerState(json: unknown, path: string): TrainerState {
  const bad = (field: string, want: string, got: unknown): never => {
    throw new Error(`${path}: "${field}" must be ${want}, got ${JSON.stringify(got)}; the trainer state is damaged (use another checkpoint: write its name into checkpoints/latest)`);
  };
  if (!json || typeof json !== 'object' || Array.isArray(json)) bad('(file)', 'a JSON object', json);
  const s = json as Record<string, unknown>;
  const count = (field: string, min: number): number => {
    const v = s[field];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min) bad(field, `an integer >= ${min}`, v);
    return v as number;
  };
  const step = count('step', 1);
  const epoch = count('epoch', 0);
  const batchInEpoch = count('batchInEpoch', 0);
  if (typeof s.seed !== 'number' || !Number.isInteger(s.seed)) bad('seed', 'an integer', s.seed);
  if (typeof s.configHash !== 'string' || !/^[0-9a-f]{16}$/.test(s.configHash)) bad('configHash', '16 hex digits', s.configHash);
  if (s.lastLoss !== null && (typeof s.lastLoss !== 'number' || !Number.isFinite(s.lastLoss))) bad('lastLoss', 'a finite number or null', s.lastLoss);
  const schedule = s.schedule;
  if (!schedule || typeof schedule !== 'object' || Array.isArray(schedule)) bad('schedule', 'an object of numbers', schedule);
  for (const [k, v] of Object.entries(schedule as Record<string, unknown>)) if (typeof v !== 'number' || !Number.isFinite(v)) bad(`schedule.${k}`, 'a finite number', v);
  if (s.elapsedS !== undefined && (typeof s.elapsedS !== 'number' || !(s.elapsedS >= 0))) bad('elapsedS', 'a number >= 0', s.elapsedS);
  let gradScaler: GradScalerState | undefined;
  if (s.gradScaler !== undefined) {
    const problem = gradScalerStateProblem(s.gradScaler);
    if (problem) bad(problem.field, problem.want, problem.got);
    gradScaler = checkState(s.gradScaler as GradScalerState);
  }
  let stream: StreamPosition | undefined;
  if (s.stream !== undefined) {
    const st = s.stream as Record<string, unknown> | null;
    const uint = (v: unknown): boolean => typeof v === 'number' && Number.isInteger(v) && v >= 0;
    if (!st || typeof st !== 'object' || Array.isArray(st)) bad('stream', 'an object', st);
    for (const f of ['epoch', 'shard', 'sample', 'rng'] as const) if (!uint(st![f]) || (f === 'rng' && (st![f] as number) > 0xffffffff)) bad(`stream.${f}`, 'an integer >= 0', st![f]);
    if (!Array.isArray(st!.buffer) || !st!.buffer.every((r: unknown) => Array.isArray(r) && r.length === 2 && r.every(uint))) bad('stream.buffer', 'a list of [shard, sample] pairs', st!.buffer);
    stream = { epoch: st!.epoch as number, shard: st!.shard as number, sample: st!.sample as number, rng: st!.rng as number, buffer: st!.buffer as [number, number][] };
  }
  return {
    step, epoch, batchInEpoch, seed: s.seed as number, configHash: s.configHash as string, lastLoss: s.lastLoss as number | null,
    schedule: schedule as Record<string, number>, ...(s.elapsedS !== undefined ? { elapsedS: s.elapsedS as number } : {}),
    ...(gradScaler ? { gradScaler } : {}),
    ...(stream ? { stream } : {}),
  };
}

/**
 * Why `dir` is not a complete checkpoint, or null when it is: every file of its format present
 * and a regular file, trainer_state.json valid, the safetensors headers intact, the JSON files JSON.
 */
export function checkpointProblem(dir: string): string | null {
  const format = formatOf(dir);
  for (const f of [...format.files, ...STATE_FILES]) {
    const p = join(dir, f);
    if (!existsSync(p)) return `${f} is missing`;
    if (!statSync(p).isFile()) return `${f} is not a file`;
  }
  try {
    parseTrainerState(readRunJson(join(dir, 'trainer_state.json'), 'trainer state'), join(dir, 'trainer_state.json'));
    for (const f of format.json) readRunJson(join(dir, f), `student's ${f}`);
    for (const f of [...format.safetensors, 'optimizer.safetensors']) SafetensorsFile.open(join(dir, f)).close();
  } catch (e) {
    return (e as Error).message;
  }
  return null;
}

/** Names of the complete checkpoints under `root`, oldest first (by step number: names pass 6 digits after step 999999). */
function completeCheckpoints(root: string): string[] {
  return stepDirs(root).filter((d) => checkpointProblem(join(root, d)) === null);
}

/** Every step-N directory under `root`, oldest first. */
function stepDirs(root: string): string[] {
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .filter((d) => /^step-\d+$/.test(d) && lstatSync(join(root, d)).isDirectory())
    .sort((a, b) => stepOfName(a) - stepOfName(b));
}

/**
 * Writes the checkpoint of `state.step` (see the header for the order of operations), publishes
 * its student, and keeps the newest `keep` checkpoints up to this step.
 */
export function saveCheckpoint(runDir: string, student: StudentFiles, optimizer: AdamWState, state: TrainerState, keep = 3, files: FileOps = nodeFiles): string {
  const root = join(runDir, CHECKPOINTS_DIR);
  const name = checkpointName(state.step);
  const missing = student.format.files.filter((f) => !student.files[f]);
  if (missing.length) throw new Error(`internal: the student's ${missing.join(', ')} were not encoded`);
  const tensors: Record<string, { shape: number[]; data: Float32Array }> = {};
  for (const [k, v] of Object.entries(optimizer.m)) tensors[`m.${k}`] = { shape: [v.length], data: v };
  for (const [k, v] of Object.entries(optimizer.v)) tensors[`v.${k}`] = { shape: [v.length], data: v };
  const optimizerBytes = encodeSafetensors(tensors, { step: String(optimizer.step), paramSteps: JSON.stringify(optimizer.paramSteps ?? {}) });

  makeDirs(root, files);
  const tmp = join(root, `.${name}.tmp`);
  removeTree(tmp, files);
  files.mkdir(tmp);
  for (const f of student.format.files) files.write(join(tmp, f), student.files[f]);
  files.write(join(tmp, 'optimizer.safetensors'), optimizerBytes);
  files.write(join(tmp, 'trainer_state.json'), [JSON.stringify(state, null, 2) + '\n']);
  const final = join(root, name);
  // A checkpoint of this step from before a rollback of `latest` is replaced.
  if (existsSync(final)) retire(root, name, files);
  writeFileAtomic(join(root, 'latest'), name + '\n', files);
  files.rename(tmp, final);
  publishStudent(runDir, final, files);
  const older = completeCheckpoints(root).filter((d) => stepOfName(d) <= state.step);
  for (const old of older.slice(0, Math.max(0, older.length - keep))) retire(root, old, files);
  return final;
}

/** Removes checkpoint `name`: renamed first (it stops counting as a checkpoint at once), then deleted. */
function retire(root: string, name: string, files: FileOps): void {
  const doomed = join(root, `.${name}.deleting`);
  removeTree(doomed, files);
  files.rename(join(root, name), doomed);
  removeTree(doomed, files);
}

function sameBytes(path: string, bytes: Buffer): boolean {
  try {
    return statSync(path).isFile() && readFileSync(path).equals(bytes);
  } catch {
    return false;
  }
}

/**
 * Makes adapter/ (LoRA) or model/ (full) hold `checkpointDir`'s student files. The first time,
 * the folder appears whole (a temporary directory renamed into place). After that each file that
 * differs is replaced by an atomic rename, so the folder always holds complete files; within a
 * run the JSON files do not change, so only the weights are replaced. Files users put into the
 * folder are left alone.
 */
export function publishStudent(runDir: string, checkpointDir: string, files: FileOps = nodeFiles): void {
  const format = formatOf(checkpointDir);
  const dest = join(runDir, format.publishDir);
  const what = format.kind === 'lora' ? 'adapter' : 'student model';
  if (existsSync(dest) && !lstatSync(dest).isDirectory()) throw new Error(`${dest} is not a directory: genalign publishes the latest ${what} there. Move that file away and run the same command again.`);
  if (!existsSync(dest)) {
    const tmp = join(runDir, `.${format.publishDir}.tmp`);
    removeTree(tmp, files);
    files.mkdir(tmp);
    for (const f of format.files) files.write(join(tmp, f), [readFileSync(join(checkpointDir, f))]);
    files.rename(tmp, dest);
    return;
  }
  for (const f of format.files) {
    const want = readFileSync(join(checkpointDir, f));
    if (sameBytes(join(dest, f), want)) continue;
    const tmp = join(runDir, `.${format.publishDir}-${f}.tmp`);
    files.write(tmp, [want]);
    files.rename(tmp, join(dest, f));
  }
}

/** Whether the publish folder holds exactly the student files of `checkpointDir`. */
function publishedMatches(runDir: string, checkpointDir: string): boolean {
  const format = formatOf(checkpointDir);
  return format.files.every((f) => sameBytes(join(runDir, format.publishDir, f), readFileSync(join(checkpointDir, f))));
}

export interface SetAside {
  /** The checkpoint moved aside (`step-N.nonfinite`), or null when there was none of that step. */
  setAside: string | null;
  /** The checkpoint `latest` and adapter/ now point to, or null when none is left. */
  latest: string | null;
}

/**
 * After the loss of step `step + 1` came out non-finite, the checkpoint written after step
 * `step` holds the weights that produced it, so --resume must not pick it up: it is renamed to
 * `step-N.nonfinite` (kept for inspection, not deleted), and `latest` and adapter/ go back to
 * the newest remaining checkpoint. Older checkpoints are untouched: their weights gave a finite
 * loss on the step after them. A crash part-way is recovered like any other: `latest` naming a
 * missing checkpoint falls back to the newest complete one.
 */
export function setAsideDivergedCheckpoint(runDir: string, step: number, files: FileOps = nodeFiles): SetAside {
  const root = join(runDir, CHECKPOINTS_DIR);
  const name = checkpointName(step);
  if (!existsSync(join(root, name))) {
    const left = completeCheckpoints(root);
    return { setAside: null, latest: left.length ? left[left.length - 1] : null };
  }
  const aside = `${name}.nonfinite`;
  removeTree(join(root, aside), files);
  files.rename(join(root, name), join(root, aside));
  const left = completeCheckpoints(root);
  const latest = left.length ? left[left.length - 1] : null;
  if (latest) {
    writeFileAtomic(join(root, 'latest'), latest + '\n', files);
    publishStudent(runDir, join(root, latest), files);
  } else {
    if (existsSync(join(root, 'latest'))) files.unlink(join(root, 'latest'));
    const published = formatOf(join(root, aside)).publishDir;
    if (existsSync(join(runDir, published))) {
      removeTree(join(runDir, `${published}.nonfinite`), files);
      files.rename(join(runDir, published), join(runDir, `${published}.nonfinite`));
    }
  }
  return { setAside: aside, latest };
}

/** Whether the run directory holds a complete checkpoint (something --resume can continue from). */
export function loadableCheckpointExists(runDir: string): boolean {
  return completeCheckpoints(join(runDir, CHECKPOINTS_DIR)).length > 0;
}

/** Temporary entries a crash leaves in the run directory (`.adapter.tmp`, `.model.tmp`, writeFileAtomic's temps, a lock set aside, a write probe). */
export function isRunTemp(name: string): boolean {
  return isAtomicTemp(name) || /^\.(adapter|model)(\.tmp(-\d+)?|-.+\.tmp)$/.test(name) || /^\.run\.lock\.stale-\d+$/.test(name) || /^\.genalign-write-test-\d+$/.test(name);
}

/** Temporary entries a crash leaves in checkpoints/ (a checkpoint being written or removed, latest's temp). */
function isCheckpointTemp(name: string): boolean {
  return isAtomicTemp(name) || /^\.step-\d+\.(tmp(-\d+)?|deleting)$/.test(name);
}

export interface RunInspection {
  runDir: string;
  /** The checkpoint to resume from, or null when there is none. */
  latest: { name: string; dir: string; step: number } | null;
  /** Things the repair will do, one line each, for the log (empty when nothing was left by a crash). */
  notes: string[];
  /** Temporary files and directories to remove. */
  litter: string[];
  /** Step directories to remove: incomplete ones older than `latest` (a removal that was cut short). */
  halfRemoved: string[];
  /** checkpoints/latest does not name `latest` and must be rewritten. */
  latestFileStale: boolean;
  /** adapter/ (or model/) does not hold `latest`'s student. */
  adapterStale: boolean;
  /** metrics.jsonl has lines past `latest`'s step (or torn lines) and must be cut back. */
  metricsStale: boolean;
}

/**
 * Reads the state a run directory was left in (nothing is changed). `latest` is taken from
 * checkpoints/latest when it names a complete checkpoint. When it is missing or names a checkpoint
 * that does not exist (a crash between writing `latest` and renaming the checkpoint into place,
 * or while setting a diverged checkpoint aside), the newest complete checkpoint is used. When it
 * names a checkpoint that exists but is damaged, that is an error: the user chooses.
 */
export function inspectRun(runDir: string): RunInspection {
  const root = join(runDir, CHECKPOINTS_DIR);
  const notes: string[] = [];
  const litter: string[] = [];
  if (existsSync(runDir)) for (const f of readdirSync(runDir)) if (isRunTemp(f)) litter.push(join(runDir, f));
  if (existsSync(root)) for (const f of readdirSync(root)) if (isCheckpointTemp(f)) litter.push(join(root, f));
  if (litter.length) notes.push(`removing ${litter.length} temporary file(s) left by an interrupted run`);

  const complete = completeCheckpoints(root);
  const latestFile = join(root, 'latest');
  let latestName: string | null = null;
  let latestFileStale = false;
  if (existsSync(latestFile)) {
    const named = readRunText(latestFile, 'the name of the checkpoint to resume from (a text file)').trim();
    if (!/^step-\d+$/.test(named)) throw new Error(`${latestFile} should hold a checkpoint name such as step-000120, but holds ${JSON.stringify(named.slice(0, 80))}. ${completeHint(complete, latestFile)}`);
    if (existsSync(join(root, named))) {
      const problem = checkpointProblem(join(root, named));
      if (problem) throw new Error(`${latestFile} points to ${named}, which is incomplete or damaged (${problem}). ${completeHint(complete.filter((d) => d !== named), latestFile)}`);
      latestName = named;
    } else {
      latestName = complete.length ? complete[complete.length - 1] : null;
      latestFileStale = true;
      notes.push(`${latestFile} names ${named}, which does not exist (a checkpoint was interrupted); ` + (latestName ? `continuing from ${latestName}, the newest complete checkpoint` : 'no complete checkpoint is left'));
    }
  } else if (complete.length) {
    latestName = complete[complete.length - 1];
    latestFileStale = true;
    notes.push(`${latestFile} is missing; continuing from ${latestName}, the newest complete checkpoint`);
  }
  const latestStep = latestName ? stepOfName(latestName) : 0;
  const halfRemoved = stepDirs(root)
    .filter((d) => stepOfName(d) < latestStep && !complete.includes(d))
    .map((d) => join(root, d));
  if (halfRemoved.length) notes.push(`removing ${halfRemoved.length} incomplete older checkpoint(s) whose removal was interrupted`);
  const latest = latestName ? { name: latestName, dir: join(root, latestName), step: latestStep } : null;
  const adapterStale = latest !== null && !publishedMatches(runDir, latest.dir);
  if (adapterStale) {
    const format = formatOf(latest.dir);
    notes.push(`${join(runDir, format.publishDir)} does not hold ${latest.name}'s ${format.kind === 'lora' ? 'adapter' : 'student model'}; publishing it again`);
  }
  return { runDir, latest, notes, litter, halfRemoved, latestFileStale, adapterStale, metricsStale: metricsLinesPast(runDir, latestStep) };
}

function readRunText(path: string, what: string): string {
  return readRegularTextFile(path, what);
}

function completeHint(others: string[], latestFile: string): string {
  return others.length
    ? `Complete checkpoints here: ${inlineListWithRest(others)}; to resume from one, write its name into ${latestFile} (e.g. echo ${others[others.length - 1]} > ${latestFile}).`
    : 'No other complete checkpoint is left.';
}

/** The step of a metrics.jsonl line; a line cut short by a crash counts as past every checkpoint. */
function stepOfLine(line: string): number {
  try {
    const step = (JSON.parse(line) as { step?: unknown }).step;
    return typeof step === 'number' ? step : Number.POSITIVE_INFINITY;
  } catch {
    return Number.POSITIVE_INFINITY;
  }
}

function metricsLinesPast(runDir: string, step: number): boolean {
  const path = join(runDir, METRICS_FILE);
  if (!existsSync(path)) return false;
  const text = readRunText(path, 'the training log (JSON lines)');
  if (text !== '' && !text.endsWith('\n')) return true;
  return text.split('\n').some((l) => l !== '' && stepOfLine(l) > step);
}

/**
 * Puts right what inspectRun found: removes temporary files and half-removed checkpoints,
 * rewrites `latest`, publishes adapter/ (or model/) from the latest checkpoint, finishes the retention that
 * a crash cut short (the newest `keep` checkpoints up to the latest stay), and cuts
 * metrics.jsonl back to the steps up to the latest checkpoint (so the log reads as one run when
 * the steps after it are trained again).
 */
export function repairRun(ins: RunInspection, keep: number, files: FileOps = nodeFiles, log: (l: string) => void = () => undefined): void {
  for (const note of ins.notes) log(`recovery: ${note}`);
  for (const p of [...ins.litter, ...ins.halfRemoved]) removeTree(p, files);
  const root = join(ins.runDir, CHECKPOINTS_DIR);
  if (ins.latest) {
    const older = completeCheckpoints(root).filter((d) => stepOfName(d) <= ins.latest!.step);
    const doomed = older.slice(0, Math.max(0, older.length - keep));
    if (doomed.length) log(`recovery: removing ${doomed.join(', ')} (--keep-checkpoints ${keep})`);
    for (const old of doomed) retire(root, old, files);
  }
  if (ins.latestFileStale) {
    if (ins.latest) writeFileAtomic(join(root, 'latest'), ins.latest.name + '\n', files);
    else if (existsSync(join(root, 'latest'))) files.unlink(join(root, 'latest'));
  }
  if (ins.latest && ins.adapterStale) publishStudent(ins.runDir, ins.latest.dir, files);
  if (ins.metricsStale) {
    const path = join(ins.runDir, METRICS_FILE);
    const step = ins.latest?.step ?? 0;
    const kept = readRunText(path, 'the training log (JSON lines)').split('\n').filter((l) => l !== '' && stepOfLine(l) <= step);
    writeFileAtomic(path, kept.map((l) => l + '\n').join(''), files);
  }
}

/** Reads checkpoint `dir` (complete, see checkpointProblem): trainer state and optimizer moments. */
export function loadCheckpoint(dir: string): Checkpoint {
  const problem = checkpointProblem(dir);
  if (problem) throw new Error(`${dir}: not a complete checkpoint (${problem})`);
  const statePath = join(dir, 'trainer_state.json');
  const state = parseTrainerState(readRunJson(statePath, 'trainer state'), statePath);
  const st = readSafetensors(join(dir, 'optimizer.safetensors'));
  const m: Record<string, Float32Array> = {};
  const v: Record<string, Float32Array> = {};
  for (const [k, t] of st.tensors) {
    if (k.startsWith('m.')) m[k.slice(2)] = t.data;
    else if (k.startsWith('v.')) v[k.slice(2)] = t.data;
  }
  let paramSteps: Record<string, number> | undefined;
  try {
    paramSteps = st.metadata.paramSteps ? (JSON.parse(st.metadata.paramSteps) as Record<string, number>) : undefined;
  } catch (e) {
    throw new Error(`${join(dir, 'optimizer.safetensors')}: metadata "paramSteps" is not JSON (${(e as Error).message})`);
  }
  const optStep = Number(st.metadata.step ?? state.step);
  if (!Number.isInteger(optStep) || optStep < 0) throw new Error(`${join(dir, 'optimizer.safetensors')}: metadata "step" must be an integer >= 0, got ${JSON.stringify(st.metadata.step)}`);
  return { dir, state, optimizer: { step: optStep, m, v, ...(paramSteps ? { paramSteps } : {}) } };
}

/** Loads the checkpoint a resume would continue from (inspectRun's choice), or null if there is none. */
export function loadLatestCheckpoint(runDir: string): Checkpoint | null {
  const ins = inspectRun(runDir);
  return ins.latest ? loadCheckpoint(ins.latest.dir) : null;
}

/** True for errors of a full disk (the run can be resumed once there is space). */
export function isNoSpace(e: unknown): boolean {
  return e instanceof FileOpError && (e.code === 'ENOSPC' || e.code === 'EDQUOT');
}
