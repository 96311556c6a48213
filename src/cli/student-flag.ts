// The student a command embeds generated images with (eval, zeroshot, probe): --lora DIR, a PEFT
// adapter on --model's weights, or --student DIR, a fully fine-tuned vision tower (the HF
// CLIPVisionModelWithProjection folder `train --rank 0` publishes as <run>/model). At most one.
// studentChoice checks the flags before the GPU is touched (both given; an adapter trained on
// another preset or seed; a student folder whose vision config is not --model's); openStudent
// loads it next to the base model.
import { isModelDir, loadModel, readModelConfig, visionConfigOf, type LoadedModel } from '../io/hf-checkpoint.ts';
import { adapterBaseProblem, readPeftAdapter } from '../io/peft.ts';
import type { ClipVisionConfig } from '../nn/config.ts';
import type { Device } from '../gpu/device.ts';
import type { DType } from '../tensor/tensor.ts';
import type { EmbedVariant } from '../train/embedding.ts';
import { UsageError, type FlagSpec, type ParsedFlags } from './args.ts';

export const STUDENT_FLAG: FlagSpec = {
  name: 'student',
  type: 'string',
  help: 'fully fine-tuned student instead of --lora: an HF CLIP vision model folder with the same vision config as --model (train --rank 0 publishes <run>/model)',
};

export interface StudentChoice {
  flag: '--lora' | '--student';
  dir: string;
}

/** The vision config of --model (a checkpoint folder or a preset), or null when it cannot be read (loadModel then says why). */
function baseConfig(model: string): ClipVisionConfig | null {
  try {
    return visionConfigOf(model);
  } catch {
    return null;
  }
}

/** The student named by --lora / --student (null: none), checked against --model before any GPU work. */
export function studentChoice(cmd: string, f: ParsedFlags, model: string, seed: number): StudentChoice | null {
  const lora = f.lora === undefined ? undefined : String(f.lora);
  const student = f.student === undefined ? undefined : String(f.student);
  if (lora !== undefined && student !== undefined) {
    throw new UsageError(`${cmd}: --lora and --student both name a student; give one (--lora for a PEFT adapter, --student for a fully fine-tuned model folder)`);
  }
  if (lora !== undefined) {
    const problem = adapterBaseProblem(lora, model, seed);
    if (problem) throw new UsageError(`${cmd}: ${problem}`);
    return { flag: '--lora', dir: lora };
  }
  if (student === undefined) return null;
  if (!isModelDir(student)) throw new UsageError(`${cmd}: --student ${student}: not a directory (pass an HF CLIP vision model folder, e.g. a --rank 0 run's model/)`);
  let cfg: ClipVisionConfig;
  try {
    cfg = readModelConfig(student);
  } catch (e) {
    throw new UsageError(`${cmd}: --student ${student}: ${(e as Error).message}`);
  }
  const base = baseConfig(model);
  if (base) {
    const differ = (Object.keys(base) as (keyof ClipVisionConfig)[]).filter((k) => base[k] !== cfg[k]);
    if (differ.length) {
      throw new UsageError(
        `${cmd}: --student ${student} is not a fine-tune of --model ${model}: its vision config differs in ${differ.map((k) => `${k} (${String(cfg[k])} vs ${String(base[k])})`).join(', ')}. Pass the base model the student was trained from.`,
      );
    }
  }
  return { flag: '--student', dir: student };
}

export interface OpenedStudent {
  choice: StudentChoice;
  /** How embedPathsWith runs it. */
  variant: Omit<EmbedVariant, 'name'>;
  /** How a non-finite embedding names it, and what to do (nothing was written to `out`). */
  description: { name: string; hint: string };
  /** The key and value a JSON report records it under ({ lora: dir } or { student: dir }). */
  record: Record<string, string>;
  dispose(): void;
}

/** Loads the chosen student onto the GPU next to `base` (its weights in `dtype`). */
export function openStudent(choice: StudentChoice, base: LoadedModel, device: Device, dtype: DType, out: string): OpenedStudent {
  const hint = `Its weights have likely diverged in training (too high a --lr): use an earlier checkpoint of that run (checkpoints/step-*), or retrain with a lower --lr. Nothing was written to ${out}.`;
  if (choice.flag === '--lora') {
    const lora = readPeftAdapter(choice.dir, base.model.cfg, device);
    return { choice, variant: { lora }, description: { name: `the LoRA student (--lora ${choice.dir})`, hint }, record: { lora: choice.dir }, dispose: () => lora.dispose() };
  }
  const model = loadModel(choice.dir, device, 0, dtype).model;
  return { choice, variant: { model }, description: { name: `the fully fine-tuned student (--student ${choice.dir})`, hint }, record: { student: choice.dir }, dispose: () => model.dispose() };
}
