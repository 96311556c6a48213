// Checkpoints: a PEFT adapter (for Python users) plus the trainer state (for --resume).
//
// Layout inside the run directory:
//   checkpoints/step-000120/adapter_model.safetensors   PEFT keys, lora_A [r, in], lora_B [out, r]
//   checkpoints/step-000120/adapter_config.json
//   checkpoints/step-000120/optimizer.safetensors       AdamW moments: m.<param>, v.<param>
//   checkpoints/step-000120/trainer_state.json          step, data position, schedule, RNG seed, …
//   checkpoints/latest                                  name of the newest complete checkpoint
//   adapter/                                            copy of the newest adapter (what users load)
//   checkpoints/step-000121.nonfinite                   a checkpoint whose weights gave a NaN/Inf
//                                                       loss on the next step, set aside so that
//                                                       --resume does not pick it up
// A checkpoint directory is written under a temporary name and renamed into place, and
// `latest` is rewritten atomically afterwards, so a crash never leaves a half checkpoint as
// the one --resume picks up.
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, cpSync } from 'node:fs';
import { join } from 'node:path';
import type { LoraAdapter } from '../nn/lora.ts';
import { writePeftAdapter } from '../io/peft.ts';
import { writeFileAtomic } from '../gpu/atomic-file.ts';
import { readSafetensors, writeSafetensors } from '../io/safetensors.ts';
import type { AdamWState } from './optimizer.ts';

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
}

export interface Checkpoint {
  dir: string;
  state: TrainerState;
  optimizer: AdamWState;
}

export function checkpointName(step: number): string {
  return `step-${String(step).padStart(6, '0')}`;
}

export async function saveCheckpoint(runDir: string, adapter: LoraAdapter, baseModel: string, optimizer: AdamWState, state: TrainerState, keep = 3): Promise<string> {
  const root = join(runDir, 'checkpoints');
  mkdirSync(root, { recursive: true });
  const name = checkpointName(state.step);
  const tmp = join(root, `.${name}.tmp-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  await writePeftAdapter(tmp, adapter, baseModel, state.seed);
  const tensors: Record<string, { shape: number[]; data: Float32Array }> = {};
  for (const [k, v] of Object.entries(optimizer.m)) tensors[`m.${k}`] = { shape: [v.length], data: v };
  for (const [k, v] of Object.entries(optimizer.v)) tensors[`v.${k}`] = { shape: [v.length], data: v };
  writeSafetensors(join(tmp, 'optimizer.safetensors'), tensors, {
    step: String(optimizer.step),
    paramSteps: JSON.stringify(optimizer.paramSteps ?? {}),
  });
  writeFileAtomic(join(tmp, 'trainer_state.json'), JSON.stringify(state, null, 2) + '\n');
  const final = join(root, name);
  rmSync(final, { recursive: true, force: true });
  renameSync(tmp, final);
  writeFileAtomic(join(root, 'latest'), name + '\n');
  publishAdapter(runDir, final);
  // Retention: keep the newest `keep` checkpoints.
  const all = completeCheckpoints(root);
  for (const old of all.slice(0, Math.max(0, all.length - keep))) rmSync(join(root, old), { recursive: true, force: true });
  return final;
}

/** The user-facing adapter/ copy of a checkpoint's adapter, replaced as a whole. */
function publishAdapter(runDir: string, checkpointDir: string): void {
  const adapterTmp = join(runDir, `.adapter.tmp-${process.pid}`);
  rmSync(adapterTmp, { recursive: true, force: true });
  mkdirSync(adapterTmp, { recursive: true });
  cpSync(join(checkpointDir, 'adapter_model.safetensors'), join(adapterTmp, 'adapter_model.safetensors'));
  cpSync(join(checkpointDir, 'adapter_config.json'), join(adapterTmp, 'adapter_config.json'));
  rmSync(join(runDir, 'adapter'), { recursive: true, force: true });
  renameSync(adapterTmp, join(runDir, 'adapter'));
}

/** Names of the complete checkpoints under `root`, oldest first (by step number: names pass 6 digits after step 999999). */
function completeCheckpoints(root: string): string[] {
  if (!existsSync(root)) return [];
  const stepOf = (d: string): number => Number(d.slice('step-'.length));
  return readdirSync(root)
    .filter((d) => /^step-\d+$/.test(d) && existsSync(join(root, d, 'trainer_state.json')))
    .sort((a, b) => stepOf(a) - stepOf(b));
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
 * loss on the step after them.
 */
export function setAsideDivergedCheckpoint(runDir: string, step: number): SetAside {
  const root = join(runDir, 'checkpoints');
  const name = checkpointName(step);
  if (!existsSync(join(root, name))) {
    const left = completeCheckpoints(root);
    return { setAside: null, latest: left.length ? left[left.length - 1] : null };
  }
  const aside = `${name}.nonfinite`;
  rmSync(join(root, aside), { recursive: true, force: true });
  renameSync(join(root, name), join(root, aside));
  const left = completeCheckpoints(root);
  const latest = left.length ? left[left.length - 1] : null;
  if (latest) {
    writeFileAtomic(join(root, 'latest'), latest + '\n');
    publishAdapter(runDir, join(root, latest));
  } else {
    rmSync(join(root, 'latest'), { force: true });
    if (existsSync(join(runDir, 'adapter'))) {
      rmSync(join(runDir, 'adapter.nonfinite'), { recursive: true, force: true });
      renameSync(join(runDir, 'adapter'), join(runDir, 'adapter.nonfinite'));
    }
  }
  return { setAside: aside, latest };
}

/** Whether the run directory holds a complete checkpoint (something --resume can continue from). */
export function loadableCheckpointExists(runDir: string): boolean {
  return completeCheckpoints(join(runDir, 'checkpoints')).length > 0;
}

/** Parses a JSON file of a run; a damaged file is an error that names it. */
export function readRunJson<T>(path: string, what: string): T {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as T;
  } catch (e) {
    throw new Error(`${path}: cannot read the ${what} (${(e as Error).message}); the file is damaged or truncated`);
  }
}

/** Loads the newest complete checkpoint of a run directory, or null if there is none. */
export function loadLatestCheckpoint(runDir: string): Checkpoint | null {
  const root = join(runDir, 'checkpoints');
  const latest = join(root, 'latest');
  if (!existsSync(latest)) return null;
  const name = readFileSync(latest, 'utf8').trim();
  const dir = join(root, name);
  if (!existsSync(join(dir, 'trainer_state.json'))) {
    const others = completeCheckpoints(root).filter((d) => d !== name);
    const hint = others.length
      ? ` Complete checkpoints here: ${others.join(', ')}; to resume from one, write its name into ${latest} (e.g. echo ${others[others.length - 1]} > ${latest}).`
      : ' No other complete checkpoint is left.';
    throw new Error(`${latest} points to ${name}, which is incomplete or missing.${hint}`);
  }
  const state = readRunJson<TrainerState>(join(dir, 'trainer_state.json'), 'trainer state');
  const st = readSafetensors(join(dir, 'optimizer.safetensors'));
  const m: Record<string, Float32Array> = {};
  const v: Record<string, Float32Array> = {};
  for (const [k, t] of st.tensors) {
    if (k.startsWith('m.')) m[k.slice(2)] = t.data;
    else if (k.startsWith('v.')) v[k.slice(2)] = t.data;
  }
  const paramSteps = st.metadata.paramSteps ? (JSON.parse(st.metadata.paramSteps) as Record<string, number>) : undefined;
  return { dir, state, optimizer: { step: Number(st.metadata.step ?? state.step), m, v, ...(paramSteps ? { paramSteps } : {}) } };
}
