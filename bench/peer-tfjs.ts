// The bench's peer: tfjs-backend-webgpu, run in this process on the same Dawn adapter.
//
// tfjs finds WebGPU through navigator.gpu, and registers its backend when its module loads, so
// navigator.gpu must be set before the dynamic import below. We give it a Dawn GPU object made
// with the same options as src/gpu/device.ts; tfjs requests its own adapter and device from it.
//
// Timing: with 'timestamp-query', tf.time() brackets every program tfjs runs with timestamps and
// returns the summed GPU time (kernelMs); without it (or with GENALIGN_BENCH_WALL=1), wall time
// around the op plus `await data()`.
//
// Gradients: tfjs-core's Node entry (dist/tf-core.node.js) registers no gradient functions (the
// @tensorflow/tfjs union package does, through dist/register_all_gradients.js), and Node cannot
// import that ESM file directly (extensionless and directory imports). loadGradients() bundles it
// with esbuild once (cached next to genalign's other caches) and imports the bundle: its copy of
// tfjs-core registers into the same global registries and engine (tfjs keeps them on globalThis),
// so tf.grads then works for the webgpu backend. Bundled bench runs (the GPU box) carry a
// prebuilt tfjs-gradients.mjs next to bench.mjs (scripts/gpu-check/build.sh).
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { AdapterDescription } from '../src/gpu/device.ts';
import { dawnOptionsFromEnv } from '../src/platform/node.ts';
import { defaultCacheDir } from '../src/platform/cache-dir.ts';
import { writeFileAtomic } from '../src/platform/atomic-file.ts';
import { concatOutputs, type HostTensor } from './harness.ts';

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
    /** Whether tfjs's gradient functions are registered (tf.grads works); see loadGradients. */
    readonly hasGradients: boolean,
    /** Why not, when hasGradients is false. */
    readonly gradientsNote: string,
  ) {}

  /**
   * Forward and backward through tfjs: the gradients of sum(f(xs) ⊙ dy) with respect to xs
   * (tf.grads), in the order of xs. Needs hasGradients.
   */
  grads(f: (xs: PeerTensor[]) => PeerTensor, xs: PeerTensor[], dy: PeerTensor): PeerTensor[] {
    if (!this.hasGradients) throw new Error(`tfjs gradients unavailable: ${this.gradientsNote}`);
    const g = this.tf.grads((...args: PeerTensor[]) => f(args));
    return g(xs, dy);
  }

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

  /**
   * Runs the op `count` times (compiling tfjs's pipelines) and returns the last output (several
   * outputs, e.g. gradients, concatenated in order).
   */
  async warmup(run: () => PeerTensor | PeerTensor[], count: number): Promise<Float32Array> {
    let data: Float32Array = new Float32Array(0);
    for (let i = 0; i < Math.max(1, count); i++) {
      const outs = [run()].flat();
      data = concatOutputs(await Promise.all(outs.map(async (o) => (await o.data()) as Float32Array)));
      for (const o of outs) o.dispose();
    }
    return data;
  }

  /** Milliseconds for one run of the op (all of its outputs). */
  async time(run: () => PeerTensor | PeerTensor[]): Promise<number> {
    if (this.timestamps) {
      let outs: PeerTensor[] = [];
      const info = await this.tf.time(() => {
        outs = [run()].flat();
      });
      for (const o of outs) o.dispose();
      return info.kernelMs as number;
    }
    const t0 = performance.now();
    const outs = [run()].flat();
    await Promise.all(outs.map((o) => o.data()));
    const ms = performance.now() - t0;
    for (const o of outs) o.dispose();
    return ms;
  }
}

/**
 * Registers tfjs's gradient functions (see the header). Returns null when they are registered,
 * else the reason they are not.
 */
async function loadGradients(): Promise<string | null> {
  // Bundled runs: a prebuilt bundle next to this script.
  const here = dirname(fileURLToPath(import.meta.url));
  const prebuilt = join(here, 'tfjs-gradients.mjs');
  try {
    if (existsSync(prebuilt)) {
      await import(pathToFileURL(prebuilt).href);
      return null;
    }
    const require = createRequire(import.meta.url);
    const src = require.resolve('@tensorflow/tfjs-core/dist/register_all_gradients.js');
    const out = join(defaultCacheDir(), `tfjs-gradients-${tfjsVersion()}.mjs`);
    if (!existsSync(out)) {
      const esbuild = (await import('esbuild')) as typeof import('esbuild');
      const built = await esbuild.build({ entryPoints: [src], bundle: true, format: 'esm', platform: 'node', write: false, logLevel: 'warning' });
      writeFileAtomic(out, built.outputFiles[0].contents);
    }
    await import(pathToFileURL(out).href);
    return null;
  } catch (e) {
    return (e as Error).message.split('\n')[0];
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
  const gradientsMissing = await loadGradients();
  return new Peer(tf, `tfjs-backend-webgpu@${tfjsVersion()}`, name, timestamps, gradientsMissing === null, gradientsMissing ?? '');
}

/** Releases tfjs's backend (its device) before the process exits. */
export function stopPeer(peer: Peer): void {
  peer.tf.engine().reset();
  peer.tf.removeBackend('webgpu');
}
