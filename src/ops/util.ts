// Shared helpers for op files: input validation, uniform params, dispatch grids.
import type { Device } from '../gpu/device.ts';
import type { Workgroups } from '../gpu/encoder.ts';
import { Tensor, shapeStr, type DType } from '../tensor/tensor.ts';

/** The dtypes of an op written for f32 only (the default of checkInputs). */
export const F32_ONLY: readonly DType[] = ['f32'];
/** The dtypes of an op whose kernels are assembled for f32 and f16 storage. */
export const F32_F16: readonly DType[] = ['f32', 'f16'];

/**
 * Validates op inputs: none disposed, all on one device, each of a dtype the op runs on (an op
 * refuses a dtype by name rather than run an f32 kernel on f16 bytes). Returns that device.
 * `inputs` maps argument names to tensors so the error names the argument.
 */
export function checkInputs(op: string, inputs: Record<string, Tensor>, dtypes: readonly DType[] = F32_ONLY): Device {
  let device: Device | null = null;
  let first = '';
  for (const [name, t] of Object.entries(inputs)) {
    if (!(t instanceof Tensor)) throw new Error(`${op}: argument '${name}' is not a Tensor`);
    if (t.disposed) throw new Error(`${op}: argument '${name}' (${t.describe()}) was used after dispose()`);
    if (!dtypes.includes(t.dtype)) {
      throw new Error(`${op}: argument '${name}' (${t.describe()}) is ${t.dtype}, and ${op} runs on ${dtypes.join(' and ')} tensors; convert it with ${t.dtype === 'f16' ? 'toF32' : 'toF16'}`);
    }
    if (t.device.lost) t.device.assertAlive(op);
    if (!device) {
      device = t.device;
      first = name;
    } else if (t.device !== device) {
      throw new Error(`${op}: tensors are on different devices ('${first}' on device #${device.id}, '${name}' on device #${t.device.id}); move them to one device first`);
    }
  }
  if (!device) throw new Error(`${op}: no tensor arguments`);
  return device;
}

/**
 * Throws unless every tensor has the dtype of the first one (whose dtype it returns). For ops
 * whose kernel has one storage type T for all its tensors: a mix (an f16 x with an f32 weight)
 * is refused by name, never run on the wrong bytes. Call it after checkInputs.
 */
export function checkSameDtype(op: string, inputs: Record<string, Tensor>): DType {
  const [[firstName, first], ...rest] = Object.entries(inputs);
  for (const [name, t] of rest) {
    if (t.dtype !== first.dtype) {
      throw new Error(
        `${op}: argument '${name}' (${t.describe()}) is ${t.dtype} but '${firstName}' (${first.describe()}) is ${first.dtype}; ` +
          `${op} runs on tensors of one dtype: convert '${name}' with ${t.dtype === 'f16' ? 'toF32' : 'toF16'} (or '${firstName}' with ${first.dtype === 'f16' ? 'toF32' : 'toF16'})`,
      );
    }
  }
  return first.dtype;
}

/** checkInputs (f32 or f16 by default), then checkSameDtype. Returns the device. */
export function checkInputsOneDtype(op: string, inputs: Record<string, Tensor>, dtypes: readonly DType[] = F32_F16): Device {
  const device = checkInputs(op, inputs, dtypes);
  checkSameDtype(op, inputs);
  return device;
}

export function shapeError(op: string, detail: string, inputs: Record<string, Tensor>): Error {
  const shapes = Object.entries(inputs).map(([k, t]) => `${k}=${shapeStr(t.shape)}`).join(', ');
  return new Error(`${op}: ${detail} (got ${shapes})`);
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** Packs a uniform struct of u32 fields followed by f32 fields (16 u32 + 16 f32 max). */
export function params(u32: number[], f32: number[] = []): ArrayBuffer {
  const buf = new ArrayBuffer(Math.max(16, Math.ceil((u32.length + f32.length) / 4) * 16));
  const u = new Uint32Array(buf);
  const f = new Float32Array(buf);
  u32.forEach((v, i) => {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new Error(`internal: u32 param ${i} = ${v}`);
    u[i] = v;
  });
  f32.forEach((v, i) => (f[u32.length + i] = v));
  return buf;
}

/**
 * Workgroups for a 1-D problem of n invocations with workgroup size wg, folded into y when
 * x would pass the per-dimension limit. Kernels recover the index as
 *   i = gid.x + gid.y * (num_workgroups.x * WG).
 */
export function grid1d(device: Device, n: number, wg: number): Workgroups {
  const groups = Math.ceil(n / wg);
  const max = device.limits.maxComputeWorkgroupsPerDimension;
  if (groups <= max) return [groups, 1, 1];
  const y = Math.ceil(groups / max);
  return [Math.ceil(groups / y), y, 1];
}

export function product(dims: readonly number[]): number {
  return dims.reduce((a, b) => a * b, 1);
}

/** Normalises a possibly negative axis. */
export function normAxis(op: string, axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(a) || a < 0 || a >= rank) throw new Error(`${op}: axis ${axis} is out of range for a rank-${rank} tensor`);
  return a;
}

/**
 * A small buffer (16 bytes), one per device and kept for its lifetime, bound where a kernel's
 * optional output is unused (it is never written: the kernel's overrides or uniforms skip it).
 */
const unusedOutputs = new WeakMap<Device, Tensor>();
export function unusedOutput(device: Device): GPUBuffer {
  let t = unusedOutputs.get(device);
  if (!t || t.disposed) {
    t = Tensor.empty([4], device).keep();
    unusedOutputs.set(device, t);
  }
  return t.buffer;
}
