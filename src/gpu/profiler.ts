// Per-dispatch GPU timing, for finding where a step's time goes (the bench's breakdown by kernel
// family). While a CommandBatch has a profiler, every dispatch runs in a compute pass of its own
// whose beginning and end write GPU timestamps into the profiler's query set; collect() resolves
// them and sums the durations by kernel file (matmul, attention, layernorm, …). Ending the pass
// around each dispatch costs a little, so profiled runs are separate from timed ones.
// Needs the device's 'timestamp-query' feature.
import type { Device } from './device.ts';

export interface ProfileEntry {
  /** The kernel file, e.g. 'matmul' (what the breakdown sums by). */
  family: string;
  /** The pipeline's label: file, dtype, entry point and overrides. */
  label: string;
}

export interface Profile {
  /** GPU milliseconds per kernel family, largest first. */
  byFamily: [family: string, ms: number][];
  totalMs: number;
  dispatches: number;
  /** Dispatches past the query set's capacity, which ran untimed. */
  untimed: number;
}

export class DispatchProfiler {
  readonly querySet: GPUQuerySet;
  private readonly entries: ProfileEntry[] = [];
  private dropped = 0;

  /** `capacity` dispatches (two timestamps each; WebGPU allows 4096 queries per set). */
  constructor(
    private readonly device: Device,
    private readonly capacity = 2048,
  ) {
    if (!device.hasFeature('timestamp-query')) throw new Error(`DispatchProfiler: ${device.adapter.name} has no 'timestamp-query'; per-dispatch GPU times need it`);
    this.querySet = device.gpu.createQuerySet({ type: 'timestamp', count: 2 * capacity, label: 'dispatch profiler' });
  }

  /** The timestamp indices for the next dispatch, or null when the query set is full. */
  reserve(entry: ProfileEntry): [begin: number, end: number] | null {
    if (this.entries.length >= this.capacity) {
      this.dropped++;
      return null;
    }
    const k = this.entries.length;
    this.entries.push(entry);
    return [2 * k, 2 * k + 1];
  }

  /** Waits for the recorded work and sums each dispatch's GPU time by family. */
  async collect(): Promise<Profile> {
    const n = this.entries.length;
    const byFamily = new Map<string, number>();
    if (n > 0) {
      const gpu = this.device.gpu;
      this.device.batch.flush();
      const bytes = 16 * n;
      const resolve = gpu.createBuffer({ size: bytes, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC, label: 'profiler resolve' });
      const read = gpu.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, label: 'profiler readback' });
      try {
        const enc = gpu.createCommandEncoder({ label: 'profiler resolve' });
        enc.resolveQuerySet(this.querySet, 0, 2 * n, resolve, 0);
        enc.copyBufferToBuffer(resolve, 0, read, 0, bytes);
        gpu.queue.submit([enc.finish()]);
        await this.device.sync();
        await read.mapAsync(GPUMapMode.READ);
        const t = new BigUint64Array(read.getMappedRange().slice(0));
        read.unmap();
        this.entries.forEach((e, k) => {
          const ms = t[2 * k + 1] > t[2 * k] ? Number(t[2 * k + 1] - t[2 * k]) / 1e6 : 0;
          byFamily.set(e.family, (byFamily.get(e.family) ?? 0) + ms);
        });
      } finally {
        resolve.destroy();
        read.destroy();
      }
    }
    const sorted = [...byFamily].sort((a, b) => b[1] - a[1]);
    return { byFamily: sorted, totalMs: sorted.reduce((a, [, ms]) => a + ms, 0), dispatches: n, untimed: this.dropped };
  }

  dispose(): void {
    this.querySet.destroy();
  }
}
