// The GMAIL student f_g: what trains, how it runs, and how it is saved and restored.
//
//   LoRA (--rank r > 0)  the teacher's frozen weights + a LoraAdapter on the --targets, and with
//                        --dual-projection its own copy of visual_projection. Saved as a PEFT
//                        adapter (adapter/).
//   full (--rank 0)      the paper's full fine-tuning ablation: a copy of the teacher's vision
//                        tower with every weight trainable (f32), its projection included. Saved
//                        as an HF CLIPVisionModelWithProjection folder (model/).
// The teacher is never changed: in both kinds it stays the frozen model the run loaded.
import type { Device } from '../gpu/device.ts';
import { Parameter, fromArray, type Tensor } from '../tensor/tensor.ts';
import { toF32 } from '../ops/index.ts';
import { LoraAdapter } from '../nn/lora.ts';
import { expectedShapes, type ClipVisionModel } from '../nn/vit.ts';
import { encodePeftAdapter, readPeftAdapter } from '../io/peft.ts';
import { visionModelFiles } from '../io/hf-save.ts';
import { readSafetensors } from '../io/safetensors.ts';
import type { LoadedModel } from '../io/hf-checkpoint.ts';
import { shapeStr } from '../tensor/tensor.ts';
import { join } from 'node:path';
import { FULL_FORMAT, LORA_FORMAT, type Checkpoint, type StudentFiles, type StudentFormat } from './checkpoint.ts';
import type { AdamW } from './optimizer.ts';
import type { EmbedVariant } from './embedding.ts';
import type { TrainOptions } from './options.ts';
import { decaysWeight } from './clip-pretrain.ts';

export interface StudentState {
  kind: 'lora' | 'full';
  /** The adapter of a LoRA student (null for a full one). */
  lora: LoraAdapter | null;
  /** A LoRA student's own projection (--dual-projection), else null. */
  projection: Parameter | null;
  /** A full student's own vision tower (every weight a Parameter), else null. */
  model: ClipVisionModel | null;
  /** What AdamW updates (the decayed ones first). */
  params: Parameter[];
  /** Those of `params` AdamW updates without weight decay (a full student's biases, LayerNorms and embeddings; see decaysWeight). */
  noWeightDecay: Parameter[];
}

export type StudentOptions = Pick<TrainOptions, 'rank' | 'alpha' | 'targets' | 'seed' | 'dualProjection'>;

/** Why these options cannot make a student for a `dtype` teacher, or null. */
export function studentProblem(o: Pick<TrainOptions, 'rank' | 'precision'>, flag = '--precision'): string | null {
  if (o.rank === 0 && o.precision !== 'f32') {
    return `--rank 0 (full fine-tuning) trains every weight of the student as an f32 master, and ${flag} ${o.precision} keeps the frozen weights in ${o.precision}; use ${flag} f32 with --rank 0, or a LoRA rank > 0 for mixed precision`;
  }
  return null;
}

/** The student for the run's options on top of `teacher` (its weights are not changed). */
export function makeStudent(teacher: ClipVisionModel, o: StudentOptions, device: Device): StudentState {
  if (o.rank === 0) {
    const model = teacher.copy();
    try {
      // As in CLIP training (clip-pretrain.ts): no weight decay on biases, LayerNorms and embeddings.
      const all = model.trainableParameters();
      const rest = all.filter((p) => !decaysWeight(p.name!));
      return { kind: 'full', lora: null, projection: null, model, params: [...all.filter((p) => decaysWeight(p.name!)), ...rest], noWeightDecay: rest };
    } catch (e) {
      model.dispose();
      throw e;
    }
  }
  const lora = LoraAdapter.create(teacher.cfg, { rank: o.rank, alpha: o.alpha, targets: o.targets, seed: o.seed }, device);
  let projection: Parameter | null = null;
  if (o.dualProjection) {
    // The student's own projection head starts as a copy of the shared one (an f32 master,
    // widened from the f16 weight in mixed precision).
    const shared = teacher.w('visual_projection.weight');
    const w = toF32(shared);
    projection = Parameter.fromTensor(fromArray(new Float32Array(w.size), w.shape, device), 'student.visual_projection.weight');
    device.batch.copy(w.buffer, 0, projection.buffer, 0, w.byteLength);
    w.dispose();
  }
  // The adapter owns the projection, so the PEFT files (and embed --lora) carry it.
  lora.projection = projection;
  return { kind: 'lora', lora, projection, model: null, params: [...lora.parameters(), ...(projection ? [projection] : [])], noWeightDecay: [] };
}

/** The student's embeddings of `pixels` [B, 3, S, S] (with grad when the caller records). */
export function studentForward(teacher: ClipVisionModel, student: StudentState, pixels: Tensor): Tensor {
  if (student.model) return student.model.forward(pixels);
  return teacher.forward(pixels, { lora: student.lora!, projection: student.projection ?? undefined });
}

/** How embedPathsWith runs the student (eval's "after" side). */
export function studentVariant(student: StudentState, name?: { name: string; hint?: string }): EmbedVariant {
  return student.model
    ? { model: student.model, ...(name ? { name } : {}) }
    : { lora: student.lora!, ...(student.projection ? { projection: student.projection } : {}), ...(name ? { name } : {}) };
}

export function studentFormat(student: Pick<StudentState, 'kind'>): StudentFormat {
  return student.kind === 'full' ? FULL_FORMAT : LORA_FORMAT;
}

/** The student's checkpoint files: a PEFT adapter naming `base`, or an HF vision model with the base's preprocessing. */
export async function studentFiles(student: StudentState, base: Pick<LoadedModel, 'source' | 'preprocessor'>, seed: number): Promise<StudentFiles> {
  if (student.model) return { format: FULL_FORMAT, files: await visionModelFiles(student.model, base.preprocessor) };
  const peft = await encodePeftAdapter(student.lora!, base.source, seed);
  return { format: LORA_FORMAT, files: { 'adapter_model.safetensors': peft['adapter_model.safetensors'], 'adapter_config.json': [peft['adapter_config.json']] } };
}

/** Copies a checkpoint's student weights into `student` and its moments into the optimizer. */
export async function restoreStudent(device: Device, teacher: ClipVisionModel, student: StudentState, optimizer: AdamW, ckpt: Checkpoint): Promise<void> {
  if (student.model) restoreFull(student.model, ckpt.dir);
  else await restoreLora(device, teacher, student, ckpt.dir);
  optimizer.loadStateDict(ckpt.optimizer);
}

function restoreFull(model: ClipVisionModel, dir: string): void {
  const path = join(dir, FULL_FORMAT.safetensors[0]);
  const saved = readSafetensors(path);
  const shapes = expectedShapes(model.cfg);
  const problems: string[] = [];
  for (const [name, shape] of shapes) {
    const t = saved.tensors.get(name);
    if (!t) problems.push(`missing ${name} ${shapeStr(shape)}`);
    else if (shapeStr(t.shape) !== shapeStr(shape)) problems.push(`${name}: expected ${shapeStr(shape)}, found ${shapeStr(t.shape)}`);
  }
  if (problems.length) throw new Error(`--resume: ${path} does not hold this run's student (${problems.slice(0, 5).join('; ')}${problems.length > 5 ? `; … ${problems.length} problems` : ''}); use another checkpoint (write its name into checkpoints/latest)`);
  // The patch embedding is held as [D, C·P·P], the same values in the same order as HF's [D, C, P, P].
  for (const [name, t] of model.weights) t.write(saved.tensors.get(name)!.data);
}

async function restoreLora(device: Device, teacher: ClipVisionModel, student: StudentState, dir: string): Promise<void> {
  const saved = readPeftAdapter(dir, teacher.cfg, device);
  try {
    for (const [path, pair] of student.lora!.pairs) {
      const s = saved.get(path);
      if (!s) throw new Error(`--resume: checkpoint ${dir} has no LoRA weights for ${path}`);
      device.batch.copy(s.a.buffer, 0, pair.a.buffer, 0, pair.a.byteLength);
      device.batch.copy(s.b.buffer, 0, pair.b.buffer, 0, pair.b.byteLength);
    }
    if (student.projection) {
      if (!saved.projection) throw new Error(`--resume: checkpoint ${dir} has no student projection (visual_projection in adapter_model.safetensors)`);
      device.batch.copy(saved.projection.buffer, 0, student.projection.buffer, 0, student.projection.byteLength);
    }
    await device.sync();
  } finally {
    saved.dispose();
  }
}

/** Frees the student's GPU memory (the teacher is the caller's). */
export function disposeStudent(student: StudentState): void {
  student.lora?.dispose();
  student.projection?.dispose();
  student.model?.dispose();
}
