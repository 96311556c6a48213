// Bench harness: what a bench case is, how it is timed, checked and reported.
//
// A suite (bench/suites/<family>.ts) is a list of BenchCase objects. For each case the harness
//   1. uploads the case's host inputs (in the case's inputDtype),
//   2. runs our op once (warmup), reads the output and measures max |ours - reference|,
//   3. times `reps` more runs and keeps the median,
//   4. does the same for the peer (tfjs-backend-webgpu) when the case has one,
// and returns one Row per case. Rows become the printed table and the JSON report.
//
// Timing of our ops: with 'timestamp-query' the harness brackets the op's dispatches with two
// GPU timestamps (CommandBatch.writeTimestamp) after waiting for the queue to drain, so the time
// is GPU execution from the first dispatch to the end of the last. Without the feature it falls
// back to wall time around the enqueue plus `await device.sync()`.
import type { Device } from '../src/gpu/device.ts';
import { Tensor, type DType } from '../src/tensor/tensor.ts';
import type { Peer, PeerTensor } from './peer-tfjs.ts';

export interface HostTensor {
  shape: number[];
  data: Float32Array;
}

/** How a case's max_abs_err is obtained. */
export interface Check {
  /** Written into the report: what the output was compared against. */
  reference: string;
  /** max |ours - reference| given our output and the host inputs. */
  maxAbsErr(out: Float32Array, inputs: HostTensor[]): number;
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
  /** Enqueues our op once. Timed; must not read back. The harness disposes the result. */
  run(inputs: Tensor[]): Tensor;
  /** Correctness reference; 'peer' compares against the peer's output (needs peer). */
  check: Check | 'peer';
  /** The same computation through the peer (absent: no peer numbers for this case). */
  peer?(peer: Peer, inputs: PeerTensor[]): PeerTensor;
}

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
}

export interface BenchOptions {
  reps: number;
  warmup: number;
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

/** Runs one case: correctness check, then timing of ours and of the peer. */
export async function runCase(c: BenchCase, device: Device, timer: Timer, peer: Peer | null, peerCache: PeerCache, opts: BenchOptions): Promise<Row> {
  const host = c.inputs();
  const inputs = host.map((h) => {
    const t = Tensor.empty(h.shape, device, c.inputDtype ?? 'f32').keep();
    t.write(h.data);
    return t;
  });
  const usePeer = peer !== null && c.peer !== undefined;
  try {
    // Warmup run (compiles pipelines) doubles as the correctness run.
    let ours: Float32Array;
    {
      const out = c.run(inputs).keep();
      try {
        ours = await out.read();
      } finally {
        out.dispose();
      }
    }
    for (let i = 1; i < opts.warmup; i++) c.run(inputs).dispose();

    let peerResult: PeerResult | null = null;
    if (usePeer) {
      // Variant rows of one shape share the peer measurement.
      const key = `${c.kernel}|${c.shape}|${c.dtype}`;
      peerResult = peerCache.get(key) ?? null;
      if (!peerResult) {
        const peerInputs = host.map((h) => peer.upload(h));
        try {
          const run = (): PeerTensor => c.peer!(peer, peerInputs);
          const out = await peer.warmup(run, opts.warmup);
          const times: number[] = [];
          for (let r = 0; r < opts.reps; r++) times.push(await peer.time(run));
          peerResult = { ms: median(times), out: c.check === 'peer' ? out : null };
          peerCache.set(key, peerResult);
        } finally {
          for (const t of peerInputs) peer.dispose(t);
        }
      }
    }
    const peerMs = peerResult ? peerResult.ms : null;
    const peerOut = peerResult ? peerResult.out : null;

    let maxAbsErr: number | null;
    let reference: string;
    if (c.check === 'peer') {
      reference = peer ? `${peer.name} output` : 'none (peer disabled)';
      maxAbsErr = peerOut ? maxAbsDiff(ours, peerOut) : null;
    } else {
      reference = c.check.reference;
      maxAbsErr = c.check.maxAbsErr(ours, host);
    }

    const times: number[] = [];
    const walls: number[] = [];
    for (let r = 0; r < opts.reps; r++) {
      const [ms, wall] = await timer.measure(() => c.run(inputs).dispose());
      times.push(ms);
      walls.push(wall);
    }
    const ms = median(times);
    const row: Row = {
      kernel: c.kernel,
      variant: c.variant ?? 'default',
      shape: c.shape,
      dtype: c.dtype,
      ms,
      max_abs_err: maxAbsErr,
      reference,
      peer: usePeer ? peer.name : null,
      peer_ms: peerMs,
      ratio: peerMs !== null ? peerMs / ms : null,
      wall_ms: median(walls),
    };
    if (c.flops !== undefined) row.gflops = c.flops / (ms * 1e6);
    if (c.bytes !== undefined) row.gbps = c.bytes / (ms * 1e6);
    return row;
  } finally {
    for (const t of inputs) t.dispose();
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

/** Rows as a Markdown table (also how the bench prints them). */
export function formatTable(rows: Row[]): string {
  const head = ['kernel', 'variant', 'shape', 'dtype', 'ms', 'GFLOP/s', 'GB/s', 'max_abs_err', 'peer_ms', 'ratio'];
  const body = rows.map((r) => [
    r.kernel,
    r.variant,
    r.shape,
    r.dtype,
    fmt(r.ms),
    fmt(r.gflops, 2),
    fmt(r.gbps, 2),
    r.max_abs_err === null ? '-' : r.max_abs_err === 0 ? '0' : r.max_abs_err.toExponential(2),
    fmt(r.peer_ms),
    fmt(r.ratio, 2),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]): string => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(' | ')} |`;
  return [line(head), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...body.map(line)].join('\n');
}

/** File-name-safe adapter name: "llvmpipe: Mesa 25.0.7 ..." -> "llvmpipe-mesa-25-0-7-...". */
export function adapterSlug(name: string): string {
  return name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 60) || 'unknown-adapter';
}
