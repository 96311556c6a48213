// Command batching: many dispatches are recorded into one command encoder (inside one compute
// pass where possible) and submitted together. Work is submitted only at a readback, at an
// explicit sync(), or when the batch grows past MAX_DISPATCHES (submit without waiting).
//
// Uniform params for all dispatches of a batch live in one arena (256-byte slots) that is
// written with queue.writeBuffer right before the submit, so queue order keeps it correct.
// Uploads use a mapped staging buffer copied inside the encoder, so an upload into a pooled
// buffer can never overtake an earlier, not yet submitted dispatch that used the same buffer.
import type { DispatchProfiler } from './profiler.ts';
import type { Device } from './device.ts';
import type { KernelRef } from './kernels.ts';

const SLOT = 256;
const ARENA_SLOTS = 1024;
const MAX_DISPATCHES = 1000;

export type Workgroups = [number, number?, number?];

interface ErrorCheck {
  kernels: string[];
  promise: Promise<GPUError | null>;
}

export class OutOfMemoryError extends Error {}

export class GpuError extends Error {}

export class CommandBatch {
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private readonly arenaCpu = new Uint8Array(SLOT * ARENA_SLOTS);
  private arenaGpu: GPUBuffer;
  private slots = 0;
  private dispatches = 0;
  private kernelsInBatch: string[] = [];
  /** While set, each dispatch runs in a pass of its own with GPU timestamps (src/gpu/profiler.ts). */
  profiler: DispatchProfiler | null = null;
  private staging: GPUBuffer[] = [];
  private retired: GPUBuffer[] = [];
  private readonly checks: ErrorCheck[] = [];
  private readonly uncaptured: string[] = [];
  /** Total dispatches ever recorded (for tests and stats). */
  totalDispatches = 0;
  totalSubmits = 0;

  constructor(private readonly device: Device) {
    this.arenaGpu = device.gpu.createBuffer({
      size: SLOT * ARENA_SLOTS,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
      label: 'uniform arena',
    });
  }

  recordError(message: string): void {
    this.uncaptured.push(message);
  }

  private begin(): GPUCommandEncoder {
    if (!this.encoder) {
      this.device.gpu.pushErrorScope('out-of-memory');
      this.device.gpu.pushErrorScope('validation');
      this.encoder = this.device.gpu.createCommandEncoder({ label: 'genalign batch' });
    }
    return this.encoder;
  }

  private endPass(): void {
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
  }

  dispatch(kernel: KernelRef, params: ArrayBuffer | ArrayBufferView, inputs: GPUBuffer[], outputs: GPUBuffer[], workgroups: Workgroups): void {
    this.device.assertAlive(`kernel ${kernel.file}:${kernel.entry}`);
    const [x, y = 1, z = 1] = workgroups;
    if (x === 0 || y === 0 || z === 0) return;
    const max = this.device.limits.maxComputeWorkgroupsPerDimension;
    if (x > max || y > max || z > max) {
      throw new Error(`internal: kernel ${kernel.file}:${kernel.entry} needs workgroups [${x},${y},${z}] beyond the limit ${max}`);
    }
    if (this.slots >= ARENA_SLOTS || this.dispatches >= MAX_DISPATCHES) this.flush();
    const compiled = this.device.kernels.get(kernel, inputs.length, outputs.length);
    const bytes = params instanceof ArrayBuffer ? new Uint8Array(params) : new Uint8Array(params.buffer, params.byteOffset, params.byteLength);
    if (bytes.byteLength > SLOT) throw new Error(`internal: params for ${compiled.label} exceed ${SLOT} bytes`);
    const encoder = this.begin();
    const offset = this.slots * SLOT;
    this.arenaCpu.fill(0, offset, offset + SLOT);
    this.arenaCpu.set(bytes, offset);
    this.slots++;
    const entries: GPUBindGroupEntry[] = [{ binding: 0, resource: { buffer: this.arenaGpu, offset, size: SLOT } }];
    inputs.forEach((b, i) => entries.push({ binding: 1 + i, resource: { buffer: b } }));
    outputs.forEach((b, i) => entries.push({ binding: 1 + inputs.length + i, resource: { buffer: b } }));
    const bindGroup = this.device.gpu.createBindGroup({ layout: compiled.layout, entries, label: compiled.label });
    const slots = this.profiler?.reserve({ family: kernel.file, label: compiled.label });
    if (slots) {
      this.endPass();
      const [begin, end] = slots;
      this.pass = encoder.beginComputePass({ label: 'genalign profiled pass', timestampWrites: { querySet: this.profiler!.querySet, beginningOfPassWriteIndex: begin, endOfPassWriteIndex: end } });
    } else if (!this.pass) this.pass = encoder.beginComputePass({ label: 'genalign pass' });
    this.pass.setPipeline(compiled.pipeline);
    this.pass.setBindGroup(0, bindGroup);
    this.pass.dispatchWorkgroups(x, y, z);
    if (slots) this.endPass();
    this.dispatches++;
    this.totalDispatches++;
    if (this.kernelsInBatch[this.kernelsInBatch.length - 1] !== compiled.label) this.kernelsInBatch.push(compiled.label);
  }

  /** Records a GPU-side copy (ordered after every dispatch recorded so far). */
  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void {
    this.device.assertAlive('buffer copy');
    if (bytes === 0) return;
    const enc = this.begin();
    this.endPass();
    enc.copyBufferToBuffer(src, srcOffset, dst, dstOffset, bytes);
  }

  /**
   * Records a GPU timestamp into querySet[index] at this point of the batch (used by the bench).
   * WebGPU writes timestamps only at compute-pass boundaries, so this closes the open pass and
   * records an empty pass whose end writes the timestamp (latched after the commands before it,
   * as vkCmdWriteTimestamp is). Later dispatches open a new pass. Needs 'timestamp-query'.
   */
  writeTimestamp(querySet: GPUQuerySet, index: number): void {
    this.device.assertAlive('timestamp');
    const enc = this.begin();
    this.endPass();
    enc.beginComputePass({ label: 'genalign timestamp', timestampWrites: { querySet, endOfPassWriteIndex: index } }).end();
  }

  /** Uploads host data into dst through a mapped staging buffer, in batch order. */
  upload(dst: GPUBuffer, data: ArrayBufferView, dstOffset = 0): void {
    this.device.assertAlive('upload');
    const bytes = data.byteLength;
    if (bytes === 0) return;
    const padded = Math.ceil(bytes / 4) * 4;
    const staging = this.device.gpu.createBuffer({ size: padded, usage: GPUBufferUsage.COPY_SRC, mappedAtCreation: true, label: 'upload staging' });
    new Uint8Array(staging.getMappedRange()).set(new Uint8Array(data.buffer, data.byteOffset, bytes));
    staging.unmap();
    this.staging.push(staging);
    this.copy(staging, 0, dst, dstOffset, padded);
  }

  /** Submits everything recorded so far without waiting for it. */
  flush(): void {
    if (!this.encoder) return;
    this.endPass();
    const cmd = this.encoder.finish();
    if (this.slots > 0) this.device.gpu.queue.writeBuffer(this.arenaGpu, 0, this.arenaCpu, 0, this.slots * SLOT);
    this.device.gpu.queue.submit([cmd]);
    this.totalSubmits++;
    const kernels = this.kernelsInBatch;
    const validation = this.device.gpu.popErrorScope();
    const oom = this.device.gpu.popErrorScope();
    this.checks.push({ kernels, promise: validation }, { kernels, promise: oom });
    // Staging buffers are destroyed only once the GPU is known to be done with them.
    this.retired.push(...this.staging);
    this.staging = [];
    this.encoder = null;
    this.slots = 0;
    this.dispatches = 0;
    this.kernelsInBatch = [];
    // The arena may be rewritten by the next batch's writeBuffer: queue order makes that safe.
  }

  /** Drops whatever is recorded (used when the device is being destroyed). */
  discard(): void {
    if (this.encoder) {
      this.endPass();
      this.encoder.finish();
      this.device.gpu.popErrorScope().catch(() => undefined);
      this.device.gpu.popErrorScope().catch(() => undefined);
    }
    for (const s of this.staging) s.destroy();
    this.staging = [];
    this.encoder = null;
    this.slots = 0;
    this.dispatches = 0;
  }

  /** Copies `bytes` from src to the host. Submits the batch and waits. */
  async read(src: GPUBuffer, bytes: number, srcOffset = 0): Promise<ArrayBuffer> {
    const padded = Math.ceil(bytes / 4) * 4;
    const staging = this.device.gpu.createBuffer({ size: Math.max(4, padded), usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, label: 'readback staging' });
    try {
      this.copy(src, srcOffset, staging, 0, padded);
      this.flush();
      await this.throwPendingErrors();
      this.device.assertAlive('readback');
      await staging.mapAsync(GPUMapMode.READ);
      const out = staging.getMappedRange().slice(0, bytes);
      staging.unmap();
      this.destroyRetired();
      return out;
    } finally {
      staging.destroy();
    }
  }

  async sync(): Promise<void> {
    this.flush();
    await this.device.gpu.queue.onSubmittedWorkDone();
    this.destroyRetired();
    await this.throwPendingErrors();
    this.device.assertAlive('sync');
  }

  private destroyRetired(): void {
    for (const b of this.retired) b.destroy();
    this.retired = [];
  }

  private async throwPendingErrors(): Promise<void> {
    const compile = this.device.kernels.compileChecks.splice(0);
    const checks = this.checks.splice(0);
    const messages: string[] = [];
    let oom = false;
    for (const c of compile) {
      const m = await c;
      if (m) messages.push(m);
    }
    for (const c of checks) {
      const e = await c.promise;
      if (!e) continue;
      if (e.constructor.name === 'GPUOutOfMemoryError' || /out of memory/i.test(e.message)) oom = true;
      const named = c.kernels.find((k) => e.message.includes(k));
      messages.push(named ? `kernel ${named}: ${e.message}` : `in a batch running [${c.kernels.slice(0, 8).join(', ')}]: ${e.message}`);
    }
    messages.push(...this.uncaptured.splice(0));
    if (messages.length === 0) return;
    if (oom) {
      throw new OutOfMemoryError(
        `GPU out of memory on ${this.device.adapter.name}. Use a smaller --batch (with --accum to keep the effective batch), ` +
          `or a smaller model. Details: ${messages[0]}`,
      );
    }
    throw new GpuError(`GPU error: ${messages.join('\n')}`);
  }
}
