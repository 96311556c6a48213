// Fused multi-head attention (kernels/attention.wgsl), forward and backward, flash style: the
// B×H×N×N scores are never stored. Forward keeps a running softmax over key tiles and saves
// the per-row log-sum-exp; backward recomputes the scores from it. Backward runs three kernels
// and no atomics: Δ = rowsum(dO ⊙ O), then dQ parallel over query rows, then dK and dV
// parallel over key rows.
// Causal (text encoders): query i sees keys j ≤ i. The mask is an index comparison inside the
// kernels (override CAUSAL), so no mask tensor exists; masked tiles are skipped, not scored.
// f32 and f16 tensors (q, k, v in one dtype): f16 storage with f32 math (scores, running max and
// sum, accumulators); the saved lse and the backward's Δ are f32 for either dtype. The output and
// the gradients have the input's dtype.
import { Tensor, shapeStr, type DType } from '../tensor/tensor.ts';
import { record } from '../tensor/autograd.ts';
import type { Device } from '../gpu/device.ts';
import type { KernelRef } from '../gpu/kernels.ts';
import { checkInputs, checkSameDtype, grid1d, params, sameShape, shapeError, F32_F16 } from './util.ts';

export interface AttentionOptions {
  /** Multiplier on Q Kᵀ before the softmax; default headDim^-0.5. */
  scale?: number;
  /**
   * Causal mask: query i attends to keys j ≤ i only (softmax over S_i0 .. S_ii), as the CLIP
   * text encoder's causal_attention_mask. Default false (no mask, ViT).
   */
  causal?: boolean;
  /**
   * Invocations sharing each row slot (1, 2, 4, ... dividing the block), forward and backward;
   * default: the automatic rule of attentionBlocking. For benches tuning the rule and tests.
   */
  split?: number;
}

/** Largest head dim the kernels hold in registers (kernels/attention.wgsl D4_MAX · 4). */
export const MAX_HEAD_DIM = 128;
const DELTA_WG = 256;

export type AttentionKernel = 'forward' | 'backward_dq' | 'backward_dkv';

export interface Blocking {
  /** Invocations per workgroup. */
  block: number;
  /** Rows each invocation owns (register blocking; kernel limit ROWS_MAX = 8). */
  rows: number;
  /** Rows per shared-memory tile. */
  tile: number;
  /** Invocations sharing each row slot, each taking every split-th row of a tile (1 = none). */
  split: number;
}

/** GPU blocking: the split is raised (1 → 2 → 4) while a dispatch would have fewer workgroups. */
const GPU_MIN_WORKGROUPS = 2048;

/**
 * Blocking per adapter class and kernel. CPU adapters (lavapipe) load memory lane by lane, so
 * each invocation owns several rows to reuse every loaded K/V (Q/dO) value; measured on
 * lavapipe at B=1, H=12, N=197, Dh=64 (see docs/kernels.md): forward best at 4 rows, the
 * backward kernels (twice the registers per row) at 2. GPUs: one row per invocation, 64 per
 * workgroup; when B·H·N is small (the bench's B=2, N=197: 96 workgroups of 64 for a GPU with
 * 100+ compute units) the other side's rows are split among 2 or 4 invocations per row, so
 * the same work runs in 2–4× more workgroups (a heuristic: GPU_MIN_WORKGROUPS, not yet tuned
 * on a GPU; see docs/kernels.md). The tile is halved until it fits the adapter's workgroup
 * storage (head dims past 64); a split needs (block / split) · rows ≤ tile.
 */
export function attentionBlocking(cls: 'cpu' | 'gpu', entry: AttentionKernel, d: Dims, maxWorkgroupStorage: number, split: number | null = null): Blocking {
  const cpu = cls === 'cpu';
  const b: Blocking = cpu ? { block: 16, rows: entry === 'forward' ? 4 : 2, tile: 32, split: 1 } : { block: 64, rows: 1, tile: 32, split: 1 };
  const rowBytes = 2 * 16 * Math.ceil(d.headDim / 4) + (entry === 'backward_dq' ? 0 : 8);
  while (b.tile > 1 && b.tile * rowBytes > maxWorkgroupStorage) b.tile /= 2;
  const groups = (s: number): number => Math.ceil(d.n / ((b.block / s) * b.rows)) * d.heads * d.batch;
  if (split !== null) b.split = split;
  else if (!cpu) while (b.split < 4 && groups(b.split) < GPU_MIN_WORKGROUPS) b.split *= 2;
  if (b.block % b.split !== 0 || (b.split > 1 && (b.block / b.split) * b.rows > b.tile)) b.split = 1;
  return b;
}

function dispatchBlocked(device: Device, entry: AttentionKernel, d: Problem, u: ArrayBuffer, inputs: GPUBuffer[], outputs: GPUBuffer[]): void {
  const b = attentionBlocking(device.blockingClass, entry, d, device.limits.maxComputeWorkgroupStorageSize, d.split ?? null);
  const overrides = { HEAD_DIM: d.headDim, BLOCK: b.block, ROWS: b.rows, TILE: b.tile, ...(b.split > 1 ? { SPLIT: b.split } : {}), ...(d.causal ? { CAUSAL: 1 } : {}) };
  const ref: KernelRef = { file: 'attention', entry, dtype: d.dtype, overrides };
  device.batch.dispatch(ref, u, inputs, outputs, [Math.ceil(d.n / ((b.block / b.split) * b.rows)), d.heads, d.batch]);
}

export interface Dims {
  batch: number;
  n: number;
  heads: number;
  headDim: number;
  /** A forced split factor (AttentionOptions.split). */
  split?: number;
}

/** One call's problem: its dims, the mask and the storage type of q, k, v, the output and the gradients. */
type Problem = Dims & { dtype: DType; causal: boolean };

function validate(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): Problem & { scale: number } {
  const named = { q, k, v };
  const device = checkInputs('attention', named, F32_F16);
  const dtype = checkSameDtype('attention', named);
  if (q.shape.length !== 4) throw shapeError('attention', 'q, k and v must be [B, N, H, Dh]', named);
  if (!sameShape(q.shape, k.shape) || !sameShape(q.shape, v.shape)) {
    throw shapeError('attention', 'q, k and v must have the same shape [B, N, H, Dh]', named);
  }
  const [batch, n, heads, headDim] = q.shape;
  if (headDim < 1 || headDim > MAX_HEAD_DIM) {
    throw shapeError('attention', `head dim Dh = ${headDim} is outside 1..${MAX_HEAD_DIM}`, named);
  }
  const maxGroups = device.limits.maxComputeWorkgroupsPerDimension;
  if (batch > maxGroups || heads > maxGroups) {
    throw shapeError('attention', `batch and heads must each be at most ${maxGroups}`, named);
  }
  const scale = opts.scale ?? 1 / Math.sqrt(headDim);
  if (!Number.isFinite(scale)) throw new Error(`attention: scale ${scale} must be a finite number`);
  const split = opts.split;
  if (split !== undefined && !(Number.isInteger(split) && split >= 1)) throw new Error(`attention: split ${split} must be a positive integer (1, 2, 4, ...)`);
  const causal = opts.causal ?? false;
  if (typeof causal !== 'boolean') throw new Error(`attention: causal ${String(causal)} must be true or false`);
  return { batch, n, heads, headDim, dtype, causal, scale, ...(split !== undefined ? { split } : {}) };
}

function uniforms(d: Dims, scale: number): ArrayBuffer {
  return params([d.n, d.heads, d.batch * d.heads * d.n, Math.ceil(d.headDim / 4)], [scale]);
}

function forwardRaw(q: Tensor, k: Tensor, v: Tensor, d: Problem, scale: number): { out: Tensor; lse: Tensor } {
  const device = q.device;
  const out = Tensor.empty(q.shape, device, d.dtype);
  // f32 for either dtype: backward's P = exp(S - lse) needs lse unrounded.
  const lse = Tensor.empty([d.batch, d.heads, d.n], device);
  if (out.size === 0) return { out, lse };
  dispatchBlocked(device, 'forward', d, uniforms(d, scale), [q.buffer, k.buffer, v.buffer], [out.buffer, lse.buffer]);
  return { out, lse };
}

function backwardRaw(g: Tensor, saved: readonly Tensor[], d: Problem, scale: number): Tensor[] {
  const [q, k, v, out, lse] = saved;
  const device = q.device;
  const dq = Tensor.empty(q.shape, device, d.dtype);
  const dk = Tensor.empty(q.shape, device, d.dtype);
  const dv = Tensor.empty(q.shape, device, d.dtype);
  if (q.size === 0) return [dq, dk, dv];
  const u = uniforms(d, scale);
  const rows = d.batch * d.heads * d.n;
  const delta = Tensor.empty([d.batch, d.heads, d.n], device);
  device.batch.dispatch(
    { file: 'attention', entry: 'delta_rows', dtype: d.dtype, overrides: { HEAD_DIM: d.headDim, BLOCK: DELTA_WG } },
    u,
    [g.buffer, out.buffer],
    [delta.buffer],
    grid1d(device, rows, DELTA_WG),
  );
  const inputs = [q.buffer, k.buffer, v.buffer, g.buffer, lse.buffer, delta.buffer];
  dispatchBlocked(device, 'backward_dq', d, u, inputs, [dq.buffer]);
  dispatchBlocked(device, 'backward_dkv', d, u, inputs, [dk.buffer, dv.buffer]);
  delta.dispose();
  return [dq, dk, dv];
}

/**
 * softmax(Q Kᵀ · scale) V per batch element and head, without a mask (ViT) or with the causal
 * mask (`causal: true`: query i sees keys 0..i; the CLIP text encoder).
 * q, k, v: [B, N, H, Dh] (the layout a linear layer output [B, N, H*Dh] has after a free
 * reshape — no permute needed), Dh ≤ 128. Output: [B, N, H, Dh].
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions = {}): Tensor {
  const { scale, ...dims } = validate(q, k, v, opts);
  const { out, lse } = forwardRaw(q, k, v, dims, scale);
  const result = record('attention', [q, k, v], out, [q, k, v, out, lse], (g, saved) => {
    if (!sameShape(g.shape, saved[0].shape)) {
      throw new Error(`attention backward: gradient ${shapeStr(g.shape)} does not match the output ${shapeStr(saved[0].shape)}`);
    }
    checkSameDtype('attention backward', { out: saved[3], g });
    return backwardRaw(g, saved, dims, scale);
  });
  // The autograd node holds its own view of lse; without recording nothing needs it.
  lse.dispose();
  return result;
}
