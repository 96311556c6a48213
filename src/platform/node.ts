// The engine's platform in Node: WebGPU from Dawn's Node bindings (npm `webgpu`), environment
// variables, kernel sources on disk, and the per-user cache folder.
//
// Environment overrides of the adapter:
//   GENALIGN_BACKEND        Dawn backend: vulkan | metal | d3d12 | opengles | null
//   GENALIGN_ADAPTER        substring of the adapter name to pin (e.g. "llvmpipe", "NVIDIA")
//   GENALIGN_DAWN_ENABLE    comma-separated Dawn toggles to enable (e.g. vulkan_enable_f16_on_nvidia)
//   GENALIGN_DAWN_DISABLE   comma-separated Dawn toggles to disable
//   GENALIGN_UNSAFE_APIS=1  enable Dawn's allow_unsafe_apis (needed for subgroup-matrix)
import { createRequire } from 'node:module';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defaultCacheDir } from './cache-dir.ts';
import { writeFileAtomic } from './atomic-file.ts';
import type { DeviceOptions, GpuHandle } from './types.ts';

export type { DeviceOptions, GpuHandle } from './types.ts';

export const PLATFORM = 'node';

/** An environment variable (undefined where there is none). */
export function env(name: string): string | undefined {
  return process.env[name];
}

interface DawnModule {
  create(options: string[]): GPU;
  globals: object;
}

function loadDawn(): DawnModule {
  const require = createRequire(import.meta.url);
  const mod = require('webgpu') as DawnModule;
  Object.assign(globalThis, mod.globals);
  return mod;
}

function envList(name: string): string[] {
  const v = process.env[name];
  return v ? v.split(',').map((s) => s.trim()).filter(Boolean) : [];
}

export function dawnOptionsFromEnv(opts: DeviceOptions = {}): string[] {
  const options: string[] = [];
  const backend = opts.backend ?? process.env.GENALIGN_BACKEND;
  const adapter = opts.adapter ?? process.env.GENALIGN_ADAPTER;
  if (backend) options.push(`backend=${backend}`);
  if (adapter) options.push(`adapter=${adapter}`);
  const enable = [...(opts.enableToggles ?? []), ...envList('GENALIGN_DAWN_ENABLE')];
  // Unquantized timestamps for the bench; f16 on older NVIDIA drivers.
  const disable = ['timestamp_quantization', ...(opts.disableToggles ?? []), ...envList('GENALIGN_DAWN_DISABLE')];
  enable.push('vulkan_enable_f16_on_nvidia');
  if (opts.unsafeApis || process.env.GENALIGN_UNSAFE_APIS === '1') enable.push('allow_unsafe_apis');
  options.push(`enable-dawn-features=${[...new Set(enable)].join(',')}`);
  options.push(`disable-dawn-features=${[...new Set(disable)].join(',')}`);
  return options;
}

/** A Dawn GPU object made with the options (and the GENALIGN_* environment). */
export async function requestGpu(opts: DeviceOptions = {}): Promise<GpuHandle> {
  const dawn = loadDawn();
  const options = dawnOptionsFromEnv(opts);
  const backend = options.find((o) => o.startsWith('backend='))?.slice(8) ?? 'default';
  return { gpu: dawn.create(options), backend, options: `Dawn options: ${options.join(' ')}` };
}

function findKernelDir(): string {
  if (process.env.GENALIGN_KERNELS_DIR) return process.env.GENALIGN_KERNELS_DIR;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const candidate = join(dir, 'kernels');
    if (existsSync(join(candidate)) && existsSync(join(dir, 'package.json'))) return candidate;
    dir = dirname(dir);
  }
  throw new Error('Cannot find the kernels/ directory; set GENALIGN_KERNELS_DIR to the folder holding the .wgsl files.');
}

let kernelDir: string | null = null;

/** The text of kernels/<file>.wgsl from disk (the sources, not a bundle, which registers them). */
export function kernelSourceFromDisk(file: string): string {
  kernelDir ??= findKernelDir();
  const path = join(kernelDir, `${file}.wgsl`);
  if (!existsSync(path)) throw new Error(`Kernel file not found: ${path}`);
  return readFileSync(path, 'utf8');
}

/** Every kernels/**.wgsl on disk, by name without `.wgsl` (none in a bundle without kernels/). */
export function kernelFilesOnDisk(): string[] {
  let dir: string;
  try {
    dir = kernelDir ??= findKernelDir();
  } catch {
    return [];
  }
  const names: string[] = [];
  const walk = (sub: string): void => {
    for (const e of readdirSync(join(dir, sub), { withFileTypes: true })) {
      const rel = sub ? `${sub}/${e.name}` : e.name;
      if (e.isDirectory()) walk(rel);
      else if (e.name.endsWith('.wgsl')) names.push(rel.slice(0, -'.wgsl'.length));
    }
  };
  if (existsSync(dir)) walk('');
  return names;
}

/** Where the per-user cache file `name` lives ($GENALIGN_CACHE_DIR or ~/.cache/genalign). */
export function cacheFilePath(name: string): string {
  return join(defaultCacheDir(), name);
}

/** A cache file's text, or null when it does not exist. */
export function readCacheText(path: string): string | null {
  return existsSync(path) ? readFileSync(path, 'utf8') : null;
}

/** Writes a cache file atomically. */
export function writeCacheText(path: string, text: string): void {
  writeFileAtomic(path, text);
}
