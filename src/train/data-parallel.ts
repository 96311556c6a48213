// Data-parallel training in one process (train --devices N): the run's device holds the teacher,
// the student and the one AdamW; each further Dawn device (a replica) holds its own copy of the
// frozen model and of the student's trainable weights.
//
// A step: the teacher embeddings of the whole effective batch are computed once (cache or the
// run's device) and handed to every device, so each generated image still has every real image
// of the step as a negative: the loss is exactly the single-device loss. Micro-batch k of the
// step runs on device k mod N (train checks that --accum is a multiple of N, so every device runs
// the same number), each backward weighted by its rows' share of the step. The replicas'
// gradients are then added on the host to the run's device's gradients (in device order), one
// AdamW step (with clipping on the summed gradient) updates the run's device, and its new weights
// are written to every replica, so all devices hold identical weights for the next step.
//
// Which adapter a replica uses: device k (k ≥ 1) opens the k-th entry of GENALIGN_ADAPTERS (a
// comma-separated list of adapter-name substrings, as GENALIGN_ADAPTER names one), or else the
// same adapter as the run's device; several devices on one adapter share it (tests do that on
// lavapipe, where it measures the overhead, not a speed-up).
import { createDevice, type Device } from '../gpu/device.ts';
import { fromArray } from '../tensor/tensor.ts';
import type { ClipVisionModel } from '../nn/vit.ts';
import { loadModel } from '../io/hf-checkpoint.ts';
import { disposeStudent, makeStudent, type StudentState } from './student.ts';
import type { TrainOptions } from './options.ts';

/** A further device with its own copy of the model and the student. */
export interface Replica {
  device: Device;
  model: ClipVisionModel;
  student: StudentState;
}

/** The number of devices `--devices` asks for ('all': one per GENALIGN_ADAPTERS entry). */
export function deviceCount(spec: string, env: NodeJS.ProcessEnv = process.env): number {
  if (spec === 'all') return Math.max(1, adapterList(env).length);
  const n = Number(spec);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--devices ${spec}: must be a positive integer or 'all'`);
  return n;
}

function adapterList(env: NodeJS.ProcessEnv): string[] {
  return (env.GENALIGN_ADAPTERS ?? '').split(',').map((s) => s.trim()).filter(Boolean);
}

/** Why --devices does not fit the other options, or null. */
export function devicesProblem(o: Pick<TrainOptions, 'devices' | 'accum' | 'batch'>, env: NodeJS.ProcessEnv = process.env): string | null {
  const n = deviceCount(o.devices, env);
  if (n > 1 && o.accum % n !== 0) {
    return `--devices ${o.devices} runs the step's micro-batches (--accum ${o.accum}) spread over ${n} devices, so --accum must be a multiple of ${n}: use --accum ${Math.ceil(o.accum / n) * n} (and --batch ${Math.max(1, Math.floor((o.batch * o.accum) / (Math.ceil(o.accum / n) * n)))} to keep about the same effective batch)`;
  }
  return null;
}

/** Opens devices 1 … N−1 with the model and a student made as the run's (weights are set by broadcastWeights). */
export async function openReplicas(o: TrainOptions, primary: StudentState, log: (l: string) => void, env: NodeJS.ProcessEnv = process.env): Promise<Replica[]> {
  const n = deviceCount(o.devices, env);
  const names = adapterList(env);
  const replicas: Replica[] = [];
  try {
    for (let k = 1; k < n; k++) {
      const device = await createDevice(names[k] ? { adapter: names[k] } : {});
      let model: ClipVisionModel | null = null;
      try {
        model = loadModel(o.model, device, o.seed, o.precision).model;
        const student = makeStudent(model, o, device);
        if (student.params.length !== primary.params.length) throw new Error(`internal: the student on device ${k} has ${student.params.length} tensors, the run's ${primary.params.length}`);
        replicas.push({ device, model, student });
      } catch (e) {
        model?.dispose();
        device.destroy();
        throw e;
      }
      log(`device ${k}: ${device.adapter.name}`);
    }
    await broadcastWeights(primary, replicas);
    return replicas;
  } catch (e) {
    disposeReplicas(replicas);
    throw e;
  }
}

/** Adds each replica's gradients to the run's device's (host sums, device order) and clears the replicas'. */
export async function sumGradients(primary: StudentState, replicas: readonly Replica[]): Promise<void> {
  for (let i = 0; i < primary.params.length; i++) {
    const p = primary.params[i];
    let sum: Float32Array | null = p.grad ? await p.grad.read() : null;
    for (const r of replicas) {
      const g = r.student.params[i].grad;
      if (!g) continue;
      const data = await g.read();
      if (!sum) sum = data;
      else for (let j = 0; j < sum.length; j++) sum[j] += data[j];
      r.student.params[i].zeroGrad();
    }
    if (!sum) continue;
    if (p.grad) p.grad.write(sum);
    else p.grad = fromArray(sum, p.shape, p.device);
  }
}

/** Writes the run's device's trainable weights into every replica's student. */
export async function broadcastWeights(primary: StudentState, replicas: readonly Replica[]): Promise<void> {
  if (!replicas.length) return;
  for (let i = 0; i < primary.params.length; i++) {
    const w = await primary.params[i].read();
    for (const r of replicas) r.student.params[i].write(w);
  }
}

/** Frees each replica's student and model, then destroys its device. */
export function disposeReplicas(replicas: readonly Replica[]): void {
  for (const r of replicas) {
    disposeStudent(r.student);
    r.model.dispose();
    r.device.destroy();
  }
}
