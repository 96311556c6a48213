// GPU buffer pool: size buckets with reuse and explicit release. Nothing here waits on the
// garbage collector; a buffer comes back to the pool only when its owner releases it.
//
// Buckets: sizes are rounded up to 4 steps per power of two (so at most 25% slack), with a
// 256-byte floor. Free buffers are kept per bucket and handed out again before allocating.

// GPUBufferUsage is a Dawn global only after the module loads; read it lazily.
const storageUsage = (): number => GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;

export interface PoolStats {
  /** Bytes in buffers currently handed out (by bucket size). */
  liveBytes: number;
  /** Number of buffers currently handed out. */
  liveBuffers: number;
  /** Bytes sitting in free lists, ready for reuse. */
  freeBytes: number;
  /** Bytes of all buffers the pool owns (live + free). */
  totalBytes: number;
  /** Buffers created since the pool started (reuse keeps this flat). */
  allocations: number;
  /** Highest liveBytes since the pool started or since resetPeak(). */
  peakLiveBytes: number;
}

/** A single tensor larger than the adapter allows (reported like an out-of-memory condition). */
export class BufferTooLargeError extends Error {}

export function bucketSize(bytes: number): number {
  const n = Math.max(256, Math.ceil(bytes));
  const p = 2 ** Math.floor(Math.log2(n));
  if (p === n) return n;
  const step = p / 4;
  return Math.ceil(n / step) * step;
}

export class BufferPool {
  private readonly free = new Map<number, GPUBuffer[]>();
  private readonly live = new Map<GPUBuffer, number>();
  private freeBytes = 0;
  private liveBytes = 0;
  private allocations = 0;
  private peakLiveBytes = 0;
  /** Set by destroyAll: tensors disposed after their device was destroyed release nothing. */
  private destroyed = false;
  constructor(private readonly device: GPUDevice) {}

  acquire(bytes: number, label = 'tensor'): GPUBuffer {
    const size = bucketSize(bytes);
    const limit = Math.min(this.device.limits.maxStorageBufferBindingSize, this.device.limits.maxBufferSize);
    if (size > limit) {
      throw new BufferTooLargeError(
        `A ${label} of ${(bytes / 2 ** 20).toFixed(1)} MiB exceeds this GPU's largest storage buffer ` +
          `(${(limit / 2 ** 20).toFixed(0)} MiB). Use a smaller --batch (with --accum to keep the effective batch).`,
      );
    }
    const list = this.free.get(size);
    let buf = list?.pop();
    if (buf) {
      this.freeBytes -= size;
    } else {
      buf = this.device.createBuffer({ size, usage: storageUsage(), label });
      this.allocations++;
    }
    this.live.set(buf, size);
    this.liveBytes += size;
    if (this.liveBytes > this.peakLiveBytes) this.peakLiveBytes = this.liveBytes;
    return buf;
  }

  release(buf: GPUBuffer): void {
    const size = this.live.get(buf);
    if (size === undefined) {
      if (this.destroyed) return;
      throw new Error('BufferPool.release: buffer is not live in this pool (released twice?)');
    }
    this.live.delete(buf);
    this.liveBytes -= size;
    let list = this.free.get(size);
    if (!list) this.free.set(size, (list = []));
    list.push(buf);
    this.freeBytes += size;
  }

  /** Starts a new peak measurement from the current live bytes. */
  resetPeak(): void {
    this.peakLiveBytes = this.liveBytes;
  }

  /** Destroys all free buffers (live ones are untouched). */
  trim(): void {
    for (const list of this.free.values()) for (const b of list) b.destroy();
    this.free.clear();
    this.freeBytes = 0;
  }

  destroyAll(): void {
    this.destroyed = true;
    this.trim();
    for (const b of this.live.keys()) b.destroy();
    this.live.clear();
    this.liveBytes = 0;
  }

  stats(): PoolStats {
    return {
      liveBytes: this.liveBytes,
      liveBuffers: this.live.size,
      freeBytes: this.freeBytes,
      totalBytes: this.liveBytes + this.freeBytes,
      allocations: this.allocations,
      peakLiveBytes: this.peakLiveBytes,
    };
  }
}
