// The bench's peer: tfjs-backend-webgpu, run in this process on the same Dawn adapter.
//
// tfjs finds WebGPU through navigator.gpu, and registers its backend when its module loads, so
// navigator.gpu must be set before the dynamic import below. We give it a Dawn GPU object made
// with the same options as src/gpu/device.ts; tfjs requests its own adapter and device from it.
//
// Timing: with 'timestamp-query', tf.time() brackets every program tfjs runs with timestamps and
// returns the summed GPU time (kernelMs); without it (or with GENALIGN_BENCH_WALL=1), wall time
// around the op plus `await data()`.
import { createRequire } from 'node:module';
import { dawnOptionsFromEnv, type AdapterDescription } from '../src/gpu/device.ts';
import type { HostTensor } from './harness.ts';

type Tf = typeof import('@tensorflow/tfjs-core');
export type PeerTensor = import('@tensorflow/tfjs-core').Tensor;

/**
 * Strong reference to the Dawn GPU object handed to tfjs. dawn.node destroys its native instance
 * when this object is garbage collected, even while tfjs's device is still in use.
 */
let peerGpu: GPU | null = null;

interface WebGpuBackendLike {
  device: GPUDevice;
  supportTimestampQuery: boolean;
}

export class Peer {
  constructor(
    readonly tf: Tf,
    readonly name: string,
    readonly adapterName: string,
    private readonly timestamps: boolean,
  ) {}

  get timingDescription(): string {
    return this.timestamps
      ? 'tf.time() kernelMs: GPU timestamps around each tfjs program, summed'
      : 'wall clock around the op + await result.data() (includes the readback)';
  }

  upload(h: HostTensor): PeerTensor {
    return this.tf.tensor(h.data, h.shape, 'float32');
  }

  dispose(t: PeerTensor): void {
    t.dispose();
  }

  /** Runs the op `count` times (compiling tfjs's pipelines) and returns the last output. */
  async warmup(run: () => PeerTensor, count: number): Promise<Float32Array> {
    let data: Float32Array = new Float32Array(0);
    for (let i = 0; i < Math.max(1, count); i++) {
      const out = run();
      data = (await out.data()) as Float32Array;
      out.dispose();
    }
    return data;
  }

  /** Milliseconds for one run of the op. */
  async time(run: () => PeerTensor): Promise<number> {
    if (this.timestamps) {
      let out: PeerTensor | null = null;
      const info = await this.tf.time(() => {
        out = run();
      });
      (out as PeerTensor | null)?.dispose();
      return info.kernelMs as number;
    }
    const t0 = performance.now();
    const out = run();
    await out.data();
    const ms = performance.now() - t0;
    out.dispose();
    return ms;
  }
}

function tfjsVersion(): string {
  try {
    const require = createRequire(import.meta.url);
    const pkg = require('@tensorflow/tfjs-backend-webgpu/package.json') as { version: string };
    return pkg.version;
  } catch {
    // Bundled runs (the GPU box) have no node_modules to read the version from.
    return 'bundled';
  }
}

/**
 * Starts tfjs-backend-webgpu on the adapter our device uses. Returns the peer, or a reason why
 * there is none (package missing, backend failed, or tfjs landed on a different adapter).
 */
export async function startPeer(ours: AdapterDescription): Promise<Peer | string> {
  const require = createRequire(import.meta.url);
  const dawn = require('webgpu') as { create(options: string[]): GPU };
  peerGpu = dawn.create(dawnOptionsFromEnv());
  Object.defineProperty(globalThis, 'navigator', { value: { gpu: peerGpu }, configurable: true, writable: true });
  let tf: Tf;
  try {
    tf = await import('@tensorflow/tfjs-core');
    await import('@tensorflow/tfjs-backend-webgpu');
  } catch (e) {
    return `tfjs not installed (${(e as Error).message.split('\n')[0]}); run npm install`;
  }
  // tfjs-core greets Node users on console.warn when no tfjs-node backend is present; keep the table clean.
  const warn = console.warn;
  console.warn = () => {};
  let ok: boolean;
  try {
    ok = await tf.setBackend('webgpu');
    await tf.ready();
  } finally {
    console.warn = warn;
  }
  if (!ok || tf.getBackend() !== 'webgpu') return 'tf.setBackend("webgpu") failed';
  const backend = tf.backend() as unknown as WebGpuBackendLike;
  // GPUDevice.adapterInfo is recent; otherwise ask the instance for the adapter tfjs asked for.
  const info = (backend.device.adapterInfo as GPUAdapterInfo | undefined) ?? (await peerGpu.requestAdapter({ powerPreference: 'high-performance' }))?.info;
  if (!info) return 'cannot tell which adapter tfjs uses';
  const name = info.description || `${info.vendor} ${info.device}`.trim();
  if (info.vendor !== ours.vendor || info.device !== ours.device || info.description !== ours.description) {
    return `tfjs picked a different adapter (${name}) than genalign (${ours.name}); set GENALIGN_ADAPTER to pin one`;
  }
  // GENALIGN_BENCH_WALL=1 puts both sides on wall clock.
  const timestamps = backend.supportTimestampQuery && process.env.GENALIGN_BENCH_WALL !== '1';
  return new Peer(tf, `tfjs-backend-webgpu@${tfjsVersion()}`, name, timestamps);
}

/** Releases tfjs's backend (its device) before the process exits. */
export function stopPeer(peer: Peer): void {
  peer.tf.engine().reset();
  peer.tf.removeBackend('webgpu');
}
