// Bench harness: what a bench case is, how it is timed, checked and reported.
//
// A suite (bench/suites/<family>.ts) is a list of BenchCase objects. For each case the harness
//   1. uploads the case's host inputs (in the case's inputDtype),
//   2. runs our op once (warmup), reads the output and measures max |ours - reference|,
//   3. times `reps` more runs and keeps the median,
//   4. does the same for the peer (tfjs-backend-webgpu) when the case has one, or, for cases whose
//      peer is our own composition of simpler ops (peerKind 'composed'), times that composition
//      with the same timer (the row's peer is then 'genalign-composed'),
// and returns one Row per case. Rows become the printed table and the JSON report.
//
// A case's run may enqueue any amount of work (a fused op, forward + backward under its own
// scope, a whole train step) as long as it does not wait on the GPU; it returns the tensor(s)
// the correctness check reads. Cases that hold state between runs (models, optimizers) create it
// lazily in run and free it in dispose().
//
// Timing of our ops: with 'timestamp-query' the harness brackets the op's dispatches with two
// GPU timestamps (CommandBatch.writeTimestamp) after waiting for the queue to drain, so the time
// is GPU execution from the first dispatch to the end of the last. Without the feature it falls
// back to wall time around the enqueue plus `await device.sync()`.
import { DispatchProfiler } from '../src/gpu/profiler.ts';
import type { Device } from '../src/gpu/device.ts';
import { Tensor, scope, type DType } from '../src/tensor/tensor.ts';
import { backward } from '../src/tensor/autograd.ts';
import type { Peer, PeerTensor } from './peer-tfjs.ts';

export interface HostTensor {
  shape: number[];
  data: Float32Array;
}

/** How a case's max_abs_err is obtained. */
export interface Check {
  /** Written into the report: what the output was compared against. */
  reference: string;
  /** max |ours - reference| given our output and the host inputs (may run GPU work of its own). */
  maxAbsErr(out: Float32Array, inputs: HostTensor[]): number | Promise<number>;
}

export interface BenchCase {
  kernel: string;
  /** Kernel variant (e.g. a registered matmul variant); 'default' when the op picks. */
  variant?: string;
  /** Shape label shown in the table and matched by --filter. */
  shape: string;
  dtype: string;
  /** Work per run: flops gives GFLOP/s, bytes gives GB/s (exactly one of them). */
  flops?: number;
  bytes?: number;
  /** Host inputs; the same data feeds our op, the reference and the peer (always f32). */
  inputs(): HostTensor[];
  /** Storage dtype our op's inputs are uploaded in (rounded on the host); default f32. */
  inputDtype?: DType;
  /**
   * Enqueues our op once. Timed; must not read back. The harness disposes the result; several
   * outputs are read in order and concatenated for the check.
   */
  run(inputs: Tensor[]): Tensor | Tensor[];
  /**
   * Correctness reference: a host check; 'peer' compares against the tfjs peer's output (needs
   * peer); 'composed' against the output of `composed` (run once, untimed unless peerKind is 'composed').
   */
  check: Check | 'peer' | 'composed';
  /** The same computation through the peer (absent: no peer numbers for this case). */
  peer?(peer: Peer, inputs: PeerTensor[]): PeerTensor | PeerTensor[];
  /** The peer computation uses tf.grads: skipped (no peer numbers) when the peer has no gradients. */
  peerNeedsGradients?: boolean;
  /** The same computation composed from genalign's simpler ops (same outputs, in the same order as run's). */
  composed?(inputs: Tensor[]): Tensor | Tensor[];
  /** Which peer fills peer_ms: tfjs (default) or `composed`, timed like ours (peer 'genalign-composed'). */
  peerKind?: 'tfjs' | 'composed';
  /** At most this many timed reps (heavy cases such as a whole train step); default --reps. */
  maxReps?: number;
  /**
   * A baseline timed in alternation with `run`, rep by rep, after the main timing (warmed once
   * first): extra[name] = the median of the per-rep ratios ours / baseline. Slow drifts of the
   * machine (seen as ±15% between runs on a shared 2-core host) cancel in such a ratio, which a
   * ratio of two rows measured seconds apart does not do.
   */
  pairedBaseline?: { name: string; run(inputs: Tensor[]): Tensor | Tensor[] };
  /** Numbers derived from the row and the rows measured before it in this run (e.g. images/s), put under `extra`. */
  derived?(row: Row, earlier: readonly Row[]): Record<string, number>;
  /**
   * After the timed reps, run once more with every dispatch timed on its own (GPU timestamps,
   * src/gpu/profiler.ts) and report the GPU time per kernel family in Row.breakdown.
   */
  breakdown?: boolean;
  /** Frees what the case created for itself (called once after the case, also when it failed). */
  dispose?(): void;
}

/** The peer label of rows timed against `composed`. */
export const COMPOSED_PEER = 'genalign-composed';

export interface SuiteOptions {
  /** Tiny shapes for the smoke test. */
  quick: boolean;
  /** Every registered variant on every shape (default: variants side by side on one shape). */
  allVariants: boolean;
  device: Device;
}

export interface Suite {
  name: string;
  cases(opts: SuiteOptions): BenchCase[];
}

export interface Row {
  kernel: string;
  variant: string;
  shape: string;
  dtype: string;
  ms: number;
  gflops?: number;
  gbps?: number;
  max_abs_err: number | null;
  reference: string;
  peer: string | null;
  peer_ms: number | null;
  /** peer_ms / ms: above 1 means we are faster. */
  ratio: number | null;
  /** Median wall time of our runs (enqueue to sync), for comparison with the GPU time. */
  wall_ms: number;
  /** Compute dispatches one run of ours records (counted on the warmup run). */
  dispatches?: number;
  /** Case-specific numbers (BenchCase.derived), e.g. images_per_s, ratio_to_matmul, peer_dispatches. */
  extra?: Record<string, number>;
  /**
   * BenchCase.breakdown: GPU ms per kernel family in one profiled run (each dispatch in its own
   * timestamped pass, so the sum exceeds `ms` somewhat), largest first.
   */
  breakdown?: Record<string, number>;
}

/** A case that threw (reported next to the results, never silently dropped). */
export interface Failure {
  kernel: string;
  variant: string;
  shape: string;
  dtype: string;
  error: string;
}

export interface Report {
  adapter: { name: string; vendor: string; backend: string };
  date: string;
  command: string;
  timing: { ours: string; peer: string | null; reps: number; warmup: number };
  /** The machine running the bench: on CPU adapters (lavapipe) other load skews every number. */
  host: { cpus: number; loadavg_start: number; loadavg_end: number };
  results: Row[];
  failures?: Failure[];
  /** PyTorch peer rows (--torch-rows) that matched no row of this run (bench/peer-torch.ts). */
  torch_unmatched?: { kernel: string; variant: string; shape: string; dtype: string; peer: string; peer_ms: number; extra?: Record<string, number> }[];
}

export interface BenchOptions {
  reps: number;
  warmup: number;
  /** Time peers (false with --no-peer: also skips timing `composed`, which still serves as a reference). */
  peers?: boolean;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`bench check: output has ${a.length} values, reference ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    // NaN or Inf where the reference is finite must not read as "small".
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}

/** Deterministic uniform values in [-scale, scale) (mulberry32), so runs are reproducible. */
export function uniform(n: number, seed: number, scale = 1): Float32Array {
  let a = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = scale * (2 * (((t ^ (t >>> 14)) >>> 0) / 4294967296) - 1);
  }
  return out;
}

/**
 * Forward + backward for fwd+bwd cases: runs `forward` on fresh views of `inputs` (those with
 * needGrad[i] require grad), backpropagates `gradOutput` (a scalar output needs none) and
 * returns the gradients of the inputs that required one, in order. Intermediates are freed.
 */
export function forwardBackward(inputs: readonly Tensor[], needGrad: readonly boolean[], forward: (xs: Tensor[]) => Tensor, gradOutput?: Tensor): Tensor[] {
  return scope(() => {
    const xs = inputs.map((t, i) => {
      const v = t.view();
      v.requiresGrad = needGrad[i] ?? false;
      return v;
    });
    backward(forward(xs), gradOutput);
    const grads: Tensor[] = [];
    xs.forEach((x, i) => {
      if (!needGrad[i]) return;
      if (!x.grad) throw new Error(`bench forwardBackward: input ${i} got no gradient`);
      grads.push(x.grad);
      x.grad = null;
    });
    return grads;
  });
}

/** Measures how long the GPU takes for the work one callback enqueues. */
export interface Timer {
  /** 'gpu-timestamp' or 'wall'. */
  readonly method: string;
  readonly description: string;
  /** Runs enqueue once on an idle queue; returns [timed ms, wall ms]. */
  measure(enqueue: () => void): Promise<[number, number]>;
  dispose(): void;
}

class TimestampTimer implements Timer {
  readonly method = 'gpu-timestamp';
  readonly description = 'GPU timestamps (timestamp-query) around the dispatches, queue drained before each rep';
  private readonly querySet: GPUQuerySet;
  private readonly resolveBuf: GPUBuffer;
  private readonly readBuf: GPUBuffer;

  constructor(private readonly device: Device) {
    const gpu = device.gpu;
    this.querySet = gpu.createQuerySet({ type: 'timestamp', count: 2, label: 'bench timestamps' });
    this.resolveBuf = gpu.createBuffer({ size: 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC, label: 'bench resolve' });
    this.readBuf = gpu.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, label: 'bench readback' });
  }

  async measure(enqueue: () => void): Promise<[number, number]> {
    const { device } = this;
    await device.sync();
    const t0 = performance.now();
    device.batch.writeTimestamp(this.querySet, 0);
    enqueue();
    device.batch.writeTimestamp(this.querySet, 1);
    device.batch.flush();
    // Resolved in a command buffer of our own: queue order puts it after the batch.
    const enc = device.gpu.createCommandEncoder({ label: 'bench resolve' });
    enc.resolveQuerySet(this.querySet, 0, 2, this.resolveBuf, 0);
    enc.copyBufferToBuffer(this.resolveBuf, 0, this.readBuf, 0, 16);
    device.gpu.queue.submit([enc.finish()]);
    await device.sync();
    const wall = performance.now() - t0;
    await this.readBuf.mapAsync(GPUMapMode.READ);
    const [begin, end] = new BigUint64Array(this.readBuf.getMappedRange().slice(0));
    this.readBuf.unmap();
    if (end <= begin) throw new Error(`bench: GPU timestamps did not advance (${begin} -> ${end}); rerun with GENALIGN_BENCH_WALL=1`);
    return [Number(end - begin) / 1e6, wall];
  }

  dispose(): void {
    this.querySet.destroy();
    this.resolveBuf.destroy();
    this.readBuf.destroy();
  }
}

class WallTimer implements Timer {
  readonly method = 'wall';
  readonly description = 'wall clock around enqueue + await device.sync(), queue drained before each rep';
  constructor(private readonly device: Device) {}

  async measure(enqueue: () => void): Promise<[number, number]> {
    await this.device.sync();
    const t0 = performance.now();
    enqueue();
    await this.device.sync();
    const ms = performance.now() - t0;
    return [ms, ms];
  }

  dispose(): void {}
}

/** GPU timestamps when the device has them (unless GENALIGN_BENCH_WALL=1), else wall time. */
export function createTimer(device: Device): Timer {
  if (device.hasFeature('timestamp-query') && process.env.GENALIGN_BENCH_WALL !== '1') return new TimestampTimer(device);
  return new WallTimer(device);
}

export interface PeerResult {
  ms: number;
  /** Kept only for cases checked against the peer. */
  out: Float32Array | null;
}

/** Peer measurements by kernel|shape|dtype, shared by the variant rows of one shape. */
export type PeerCache = Map<string, PeerResult>;

/** Several outputs as one array, in order (ours and the peer's are checked this way). */
export function concatOutputs(parts: Float32Array[]): Float32Array {
  if (parts.length === 1) return parts[0];
  const all = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let off = 0;
  for (const p of parts) {
    all.set(p, off);
    off += p.length;
  }
  return all;
}

/** Our outputs (one tensor or several) read back in order and concatenated; all disposed. */
async function readOutputs(result: Tensor | Tensor[]): Promise<Float32Array> {
  const outs = Array.isArray(result) ? result : [result];
  for (const t of outs) t.keep();
  try {
    const parts: Float32Array[] = [];
    for (const t of outs) parts.push(await t.read());
    return concatOutputs(parts);
  } finally {
    for (const t of outs) t.dispose();
  }
}

function disposeOutputs(result: Tensor | Tensor[]): void {
  for (const t of Array.isArray(result) ? result : [result]) t.dispose();
}

/** Times `enqueue` reps times; [median timed ms, median wall ms]. */
async function timeReps(timer: Timer, reps: number, enqueue: () => void): Promise<[number, number]> {
  const times: number[] = [];
  const walls: number[] = [];
  for (let r = 0; r < reps; r++) {
    const [ms, wall] = await timer.measure(enqueue);
    times.push(ms);
    walls.push(wall);
  }
  return [median(times), median(walls)];
}

/** Runs one case: correctness check, then timing of ours and of the peer. */
export async function runCase(c: BenchCase, device: Device, timer: Timer, peer: Peer | null, peerCache: PeerCache, opts: BenchOptions, earlier: readonly Row[] = []): Promise<Row> {
  const host = c.inputs();
  const inputs = host.map((h) => {
    const t = Tensor.empty(h.shape, device, c.inputDtype ?? 'f32').keep();
    t.write(h.data);
    return t;
  });
  const timeComposed = c.peerKind === 'composed' && opts.peers !== false;
  const peerKind = c.peerKind === 'composed' ? (timeComposed ? 'composed' : 'none') : 'tfjs';
  if ((c.peerKind === 'composed' || c.check === 'composed') && !c.composed) throw new Error(`bench case ${c.kernel} ${c.shape}: uses its composition but has no composed()`);
  const usePeer = peerKind === 'tfjs' && peer !== null && c.peer !== undefined && (!c.peerNeedsGradients || peer.hasGradients);
  const reps = Math.min(opts.reps, c.maxReps ?? opts.reps);
  try {
    // Warmup run (compiles pipelines) doubles as the correctness run.
    const dispatches0 = device.batch.totalDispatches;
    const ours = await readOutputs(c.run(inputs));
    const dispatches = device.batch.totalDispatches - dispatches0;
    for (let i = 1; i < opts.warmup; i++) disposeOutputs(c.run(inputs));

    let peerResult: PeerResult | null = null;
    if (usePeer) {
      // Variant rows of one shape share the peer measurement.
      const key = `${c.kernel}|${c.shape}|${c.dtype}`;
      peerResult = peerCache.get(key) ?? null;
      if (!peerResult) {
        const peerInputs = host.map((h) => peer.upload(h));
        try {
          const run = (): PeerTensor | PeerTensor[] => c.peer!(peer, peerInputs);
          const out = await peer.warmup(run, opts.warmup);
          const times: number[] = [];
          for (let r = 0; r < reps; r++) times.push(await peer.time(run));
          peerResult = { ms: median(times), out };
          peerCache.set(key, peerResult);
        } finally {
          for (const t of peerInputs) peer.dispose(t);
        }
      }
    }
    let peerMs = peerResult ? peerResult.ms : null;
    const peerOut = peerResult ? peerResult.out : null;

    // Our own composition: the reference of 'composed' checks and/or the timed peer.
    let composedOut: Float32Array | null = null;
    let composedDispatches: number | null = null;
    if (c.composed && (c.check === 'composed' || peerKind === 'composed')) {
      const d0 = device.batch.totalDispatches;
      composedOut = await readOutputs(c.composed(inputs));
      composedDispatches = device.batch.totalDispatches - d0;
      if (peerKind === 'composed') {
        for (let i = 1; i < opts.warmup; i++) disposeOutputs(c.composed(inputs));
        [peerMs] = await timeReps(timer, reps, () => disposeOutputs(c.composed!(inputs)));
      }
    }

    let maxAbsErr: number | null;
    let reference: string;
    if (c.check === 'peer') {
      reference = peer ? `${peer.name} output` : 'none (peer disabled)';
      maxAbsErr = peerOut ? maxAbsDiff(ours, peerOut) : null;
    } else if (c.check === 'composed') {
      reference = `${COMPOSED_PEER} output`;
      maxAbsErr = maxAbsDiff(ours, composedOut!);
    } else {
      reference = c.check.reference;
      maxAbsErr = await c.check.maxAbsErr(ours, host);
    }

    const [ms, wallMs] = await timeReps(timer, reps, () => disposeOutputs(c.run(inputs)));
    const row: Row = {
      kernel: c.kernel,
      variant: c.variant ?? 'default',
      shape: c.shape,
      dtype: c.dtype,
      ms,
      max_abs_err: maxAbsErr,
      reference,
      peer: peerKind === 'composed' ? COMPOSED_PEER : usePeer ? peer.name : null,
      peer_ms: peerMs,
      ratio: peerMs !== null ? peerMs / ms : null,
      wall_ms: wallMs,
      dispatches,
    };
    if (c.flops !== undefined) row.gflops = c.flops / (ms * 1e6);
    if (c.bytes !== undefined) row.gbps = c.bytes / (ms * 1e6);
    const extra: Record<string, number> = {};
    if (peerKind === 'composed' && composedDispatches !== null) extra.peer_dispatches = composedDispatches;
    // The tfjs peer computes the same outputs in the same order: how far apart are they?
    if (usePeer && c.check !== 'peer' && peerOut && peerOut.length === ours.length) extra.peer_max_abs_diff = maxAbsDiff(ours, peerOut);
    if (c.pairedBaseline) {
      const base = c.pairedBaseline;
      disposeOutputs(base.run(inputs));
      const ratios: number[] = [];
      for (let r = 0; r < reps; r++) {
        const [b] = await timer.measure(() => disposeOutputs(base.run(inputs)));
        const [o] = await timer.measure(() => disposeOutputs(c.run(inputs)));
        ratios.push(o / b);
      }
      extra[base.name] = median(ratios);
    }
    if (c.breakdown && device.hasFeature('timestamp-query')) {
      const profiler = new DispatchProfiler(device);
      try {
        await device.sync();
        device.batch.profiler = profiler;
        disposeOutputs(c.run(inputs));
        device.batch.profiler = null;
        const p = await profiler.collect();
        row.breakdown = Object.fromEntries(p.byFamily);
      } finally {
        device.batch.profiler = null;
        profiler.dispose();
      }
    }
    row.extra = extra; // derived() sees the extras measured so far (e.g. a paired ratio)
    Object.assign(extra, c.derived?.(row, earlier));
    if (!Object.keys(extra).length) delete row.extra;
    return row;
  } finally {
    for (const t of inputs) t.dispose();
    c.dispose?.();
  }
}

export function matchesFilter(c: BenchCase, filter: string | undefined): boolean {
  if (!filter) return true;
  const hay = `${c.kernel} ${c.variant ?? 'default'} ${c.shape} ${c.dtype}`.toLowerCase();
  return hay.includes(filter.toLowerCase());
}

function fmt(x: number | null | undefined, digits = 3): string {
  if (x === null || x === undefined) return '-';
  if (x === 0) return '0';
  if (!Number.isFinite(x)) return String(x);
  const a = Math.abs(x);
  if (a >= 1e4 || a < 1e-3) return x.toExponential(2);
  return x.toFixed(a >= 100 ? 1 : digits);
}

/** `matmul 61% (4.1 ms), attention 12% (0.8 ms), …` from a Row.breakdown. */
export function formatBreakdown(b: Record<string, number>): string {
  const total = Object.values(b).reduce((a, v) => a + v, 0);
  return Object.entries(b).map(([f, ms]) => `${f} ${total > 0 ? Math.round((100 * ms) / total) : 0}% (${fmt(ms)} ms)`).join(', ');
}

/** Rows as a Markdown table (also how the bench prints them). */
export function formatTable(rows: Row[]): string {
  // Peer and extra columns only when some row has them (tables of older suites stay as they were).
  const peers = rows.some((r) => r.peer !== null && r.peer !== COMPOSED_PEER) && rows.some((r) => r.peer === COMPOSED_PEER);
  const extras = rows.some((r) => r.extra);
  const head = ['kernel', 'variant', 'shape', 'dtype', 'ms', 'GFLOP/s', 'GB/s', 'max_abs_err', ...(peers ? ['peer'] : []), 'peer_ms', 'ratio', ...(extras ? ['extra'] : [])];
  const body = rows.map((r) => [
    r.kernel,
    r.variant,
    r.shape,
    r.dtype,
    fmt(r.ms),
    fmt(r.gflops, 2),
    fmt(r.gbps, 2),
    r.max_abs_err === null ? '-' : r.max_abs_err === 0 ? '0' : r.max_abs_err.toExponential(2),
    ...(peers ? [r.peer === COMPOSED_PEER ? 'composed' : r.peer === null ? '-' : 'tfjs'] : []),
    fmt(r.peer_ms),
    fmt(r.ratio, 2),
    ...(extras ? [Object.entries(r.extra ?? {}).map(([k, v]) => `${k}=${Number.isInteger(v) ? v : fmt(v, 2)}`).join(' ')] : []),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]): string => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(' | ')} |`;
  return [line(head), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...body.map(line)].join('\n');
}

/** File-name-safe adapter name: "llvmpipe: Mesa 25.0.7 ..." -> "llvmpipe-mesa-25-0-7-...". */
export function adapterSlug(name: string): string {
  return name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 60) || 'unknown-adapter';
}
