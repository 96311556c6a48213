// The engine's platform in a browser (the bundle dist/browser/genalign.js resolves
// platform/index.ts here): WebGPU from navigator.gpu; no environment, no files (kernels are
// registered by the bundle, and caches live in memory only).
import type { DeviceOptions, GpuHandle } from './types.ts';

export type { DeviceOptions, GpuHandle } from './types.ts';

export const PLATFORM = 'browser';

export function env(_name: string): string | undefined {
  return undefined;
}

export function dawnOptionsFromEnv(_opts: DeviceOptions = {}): string[] {
  return [];
}

export async function requestGpu(_opts: DeviceOptions = {}): Promise<GpuHandle> {
  const gpu = (globalThis as { navigator?: { gpu?: GPU } }).navigator?.gpu;
  if (!gpu) {
    throw new Error('WebGPU is not available here (navigator.gpu is undefined): use a browser with WebGPU (Chrome/Edge 113+, Safari 26, Firefox 141+ on Windows), served over https or from localhost.');
  }
  return { gpu, backend: 'browser', options: 'navigator.gpu' };
}

export function kernelSourceFromDisk(file: string): string {
  throw new Error(`Kernel ${file} is not registered in this bundle (a browser has no kernels/ folder to read it from)`);
}

export function kernelFilesOnDisk(): string[] {
  return [];
}

export function cacheFilePath(name: string): string {
  return `(memory)/${name}`;
}

export function readCacheText(_path: string): string | null {
  return null;
}

export function writeCacheText(_path: string, _text: string): void {}
