// The one place genalign acquires a WebGPU adapter and device: the GPU object comes from the
// platform (platform/node.ts: Dawn via npm `webgpu`, with its GENALIGN_* environment overrides;
// platform/browser.ts: navigator.gpu).
import { requestGpu, type DeviceOptions } from '../platform/index.ts';
import { BufferPool } from './pool.ts';
import { CommandBatch } from './encoder.ts';
import { KernelRegistry } from './kernels.ts';

export interface AdapterDescription {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  backend: string;
  /** Human-readable one-liner used in bench output and errors. */
  name: string;
}

export type { DeviceOptions } from '../platform/index.ts';

/** Features genalign turns on whenever the adapter offers them. */
const WANTED_FEATURES = [
  'shader-f16',
  'subgroups',
  'timestamp-query',
  'chromium-experimental-subgroup-matrix',
] as const;

/** Limits requested at the adapter's maximum (the defaults are far lower). */
const MAX_LIMITS = [
  'maxStorageBufferBindingSize',
  'maxBufferSize',
  'maxComputeWorkgroupStorageSize',
  'maxStorageBuffersPerShaderStage',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupSizeY',
  'maxComputeWorkgroupSizeZ',
  'maxComputeWorkgroupsPerDimension',
  'maxBindGroups',
  'maxUniformBufferBindingSize',
] as const;

export const NO_ADAPTER_HELP =
  'No WebGPU adapter found. genalign needs a GPU with a Vulkan, Metal or D3D12 driver, or a software driver. ' +
  'Fix: install your GPU vendor\'s driver (with Vulkan support on Linux), or on Debian/Ubuntu without a GPU run ' +
  '`bash scripts/setup-software-gpu.sh` to install Mesa lavapipe >= 25. ' +
  'Set GENALIGN_ADAPTER=<name substring> or GENALIGN_BACKEND=<vulkan|metal|d3d12> to pick a specific adapter.';

/**
 * Whether an adapter runs kernels on CPU cores (llvmpipe/lavapipe, SwiftShader, WARP) or is a
 * GPU. Kernels are blocked differently for the two: a CPU adapter runs a small workgroup as one
 * SIMD vector and loads memory lane by lane, a GPU wants wide workgroups.
 */
export type AdapterClass = 'cpu' | 'gpu';

export function adapterClassOf(adapter: { readonly name: string; readonly architecture: string; readonly vendor: string }): AdapterClass {
  const s = `${adapter.name} ${adapter.architecture} ${adapter.vendor}`.toLowerCase();
  return /llvmpipe|lavapipe|swiftshader|software|warp/.test(s) ? 'cpu' : 'gpu';
}

/**
 * Choices that tests and benches inject per device (production code leaves them at their
 * defaults): `device.settings.blockingClass = 'gpu'` makes a CPU adapter block its kernels as
 * a GPU does, so both blockings run and are checked on whichever adapter is present.
 */
export interface DeviceSettings {
  /** Adapter class the per-class kernel blockings follow (null: the detected one). */
  blockingClass: AdapterClass | null;
}

let nextDeviceId = 1;

/** A WebGPU device plus everything that hangs off it: buffer pool, kernels and the command batch. */
export class Device {
  readonly id = nextDeviceId++;
  readonly gpu: GPUDevice;
  readonly adapter: AdapterDescription;
  readonly features: ReadonlySet<string>;
  readonly limits: GPUSupportedLimits;
  readonly subgroupMatrixConfigs: readonly unknown[];
  /** Detected from the adapter's name (adapterClassOf). */
  readonly adapterClass: AdapterClass;
  /** The adapter's subgroup size range, from its adapter info (absent: not reported). */
  readonly subgroupSize?: { readonly min: number; readonly max: number };
  readonly settings: DeviceSettings = { blockingClass: null };
  readonly pool: BufferPool;
  readonly kernels: KernelRegistry;
  readonly batch: CommandBatch;
  private lostReason: string | null = null;
  /** The dawn.node GPU object this device came from; kept alive on purpose (see createDevice). */
  instance: GPU | null = null;

  constructor(gpu: GPUDevice, adapter: AdapterDescription, subgroupMatrixConfigs: readonly unknown[]) {
    this.gpu = gpu;
    this.adapter = adapter;
    this.features = new Set([...gpu.features]);
    this.limits = gpu.limits;
    this.subgroupMatrixConfigs = subgroupMatrixConfigs;
    this.adapterClass = adapterClassOf(adapter);
    const info = (gpu as unknown as { adapterInfo?: { subgroupMinSize?: number; subgroupMaxSize?: number } }).adapterInfo;
    const [min, max] = [info?.subgroupMinSize, info?.subgroupMaxSize];
    if (typeof min === 'number' && typeof max === 'number') this.subgroupSize = { min, max };
    this.pool = new BufferPool(gpu);
    this.kernels = new KernelRegistry(gpu, (n) => this.features.has(n));
    this.batch = new CommandBatch(this);
    gpu.lost.then((info) => {
      this.lostReason = `${info.reason}: ${info.message}`;
    });
    gpu.addEventListener('uncapturederror', (ev) => {
      const e = (ev as GPUUncapturedErrorEvent).error;
      this.batch.recordError(e.message);
    });
  }

  get lost(): boolean {
    return this.lostReason !== null;
  }

  /** Throws a clear error if the device is gone; called before every dispatch and readback. */
  assertAlive(what: string): void {
    if (this.lostReason !== null) {
      throw new Error(
        `GPU device lost (${this.lostReason}) while running ${what}. ` +
          'All GPU tensors are invalid; checkpoints already written are intact. ' +
          'Restart the process; if it recurs, lower --batch or check the GPU driver (dmesg / nvidia-smi).',
      );
    }
  }

  hasFeature(name: string): boolean {
    return this.features.has(name);
  }

  /** The adapter class kernels are blocked for: settings.blockingClass, or the detected one. */
  get blockingClass(): AdapterClass {
    return this.settings.blockingClass ?? this.adapterClass;
  }

  /** The subgroup size when the device has the 'subgroups' feature with one fixed size (else null). */
  get fixedSubgroupSize(): number | null {
    const s = this.subgroupSize;
    return this.features.has('subgroups') && s && s.min === s.max ? s.min : null;
  }

  /** Submits pending work and waits for the GPU to finish it. Throws GPU errors recorded meanwhile. */
  async sync(): Promise<void> {
    await this.batch.sync();
  }

  /** Frees every pooled buffer and destroys the device. Tensors on it become unusable. */
  destroy(): void {
    this.batch.discard();
    this.pool.destroyAll();
    this.lostReason = 'destroyed: Device.destroy() was called';
    this.gpu.destroy();
    if (defaultDevice === this) defaultDevicePromise = null;
  }
}

export async function createDevice(opts: DeviceOptions = {}): Promise<Device> {
  const { gpu, backend, options } = await requestGpu(opts);
  let adapter: GPUAdapter | null;
  try {
    adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  } catch (e) {
    // Dawn rejects (rather than returning null) when the adapter= filter matches nothing;
    // its message lists the adapters it did find, which is what the user needs.
    throw new Error(NO_ADAPTER_HELP + ` (${options}; it says: ${(e as Error).message})`);
  }
  if (!adapter) throw new Error(NO_ADAPTER_HELP + ` (${options})`);
  const info = adapter.info;
  const features = WANTED_FEATURES.filter((f) => adapter.features.has(f)) as GPUFeatureName[];
  const requiredLimits: Record<string, number> = {};
  for (const name of MAX_LIMITS) {
    const v = (adapter.limits as unknown as Record<string, number | undefined>)[name];
    if (typeof v === 'number') requiredLimits[name] = v;
  }
  const device = await adapter.requestDevice({ requiredFeatures: features, requiredLimits });
  const desc: AdapterDescription = {
    vendor: info.vendor,
    architecture: info.architecture,
    device: info.device,
    description: info.description,
    backend,
    name: info.description || `${info.vendor} ${info.device}`.trim(),
  };
  const sgm = (info as unknown as { subgroupMatrixConfigs?: unknown[] }).subgroupMatrixConfigs ?? [];
  const d = new Device(device, desc, features.includes('chromium-experimental-subgroup-matrix' as GPUFeatureName) ? sgm : []);
  // dawn.node destroys the native instance when the GPU object is garbage collected, even
  // while devices made from it are still in use (a use-after-free that crashes the process
  // at a random later point). The device must hold the GPU object for its whole life.
  d.instance = gpu;
  return d;
}

let defaultDevicePromise: Promise<Device> | null = null;
let defaultDevice: Device | null = null;

/** The process-wide device, created on first use. */
export function getDevice(): Promise<Device> {
  if (!defaultDevicePromise) {
    defaultDevicePromise = createDevice().then((d) => {
      defaultDevice = d;
      return d;
    });
    defaultDevicePromise.catch(() => {
      defaultDevicePromise = null;
    });
  }
  return defaultDevicePromise;
}

/** The default device if it has been created (synchronous access for tensor factories). */
export function currentDevice(): Device {
  if (!defaultDevice) throw new Error('No GPU device yet: call `await getDevice()` (or `await init()`) before creating tensors.');
  return defaultDevice;
}
