// Kernel registry: WGSL lives in kernels/<family>.wgsl (one family per file). Pipelines are
// compiled once and cached by (file, entry point, override constants, binding layout).
// Specialisation (tile sizes, workgroup sizes) goes through WGSL `override` constants.
//
// Binding convention for every kernel (group 0):
//   binding 0            uniform params (a small struct; may be unused)
//   bindings 1..nIn      read-only storage inputs      (var<storage, read>)
//   bindings nIn+1..     read-write storage outputs    (var<storage, read_write>)
import { readFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export type OverrideValues = Record<string, number>;

export interface KernelRef {
  file: string;
  entry: string;
  overrides?: OverrideValues;
}

const embeddedSources = new Map<string, string>();

/** Used by bundled builds (esbuild inlines kernels/*.wgsl) so no file system lookup is needed. */
export function registerKernelSources(sources: Record<string, string>): void {
  for (const [k, v] of Object.entries(sources)) embeddedSources.set(k, v);
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

export function kernelSource(file: string): string {
  const embedded = embeddedSources.get(file);
  if (embedded !== undefined) return embedded;
  kernelDir ??= findKernelDir();
  const path = join(kernelDir, `${file}.wgsl`);
  if (!existsSync(path)) throw new Error(`Kernel file not found: ${path}`);
  const src = readFileSync(path, 'utf8');
  embeddedSources.set(file, src);
  return src;
}

export interface CompiledKernel {
  pipeline: GPUComputePipeline;
  layout: GPUBindGroupLayout;
  label: string;
}

export class KernelRegistry {
  private readonly modules = new Map<string, GPUShaderModule>();
  private readonly layouts = new Map<string, GPUBindGroupLayout>();
  private readonly pipelines = new Map<string, CompiledKernel>();
  /** Pending compile-error checks, resolved at the next sync point. */
  readonly compileChecks: Promise<string | null>[] = [];

  constructor(private readonly device: GPUDevice) {}

  get pipelineCount(): number {
    return this.pipelines.size;
  }

  private module(file: string): GPUShaderModule {
    let m = this.modules.get(file);
    if (!m) {
      this.device.pushErrorScope('validation');
      m = this.device.createShaderModule({ code: kernelSource(file), label: file });
      this.compileChecks.push(this.device.popErrorScope().then((e) => (e ? `WGSL compile error in kernels/${file}.wgsl: ${e.message}` : null)));
      this.modules.set(file, m);
    }
    return m;
  }

  private layout(nIn: number, nOut: number): GPUBindGroupLayout {
    const key = `${nIn}:${nOut}`;
    let l = this.layouts.get(key);
    if (!l) {
      const entries: GPUBindGroupLayoutEntry[] = [
        { binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'uniform' } },
      ];
      for (let i = 0; i < nIn; i++) entries.push({ binding: 1 + i, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'read-only-storage' } });
      for (let i = 0; i < nOut; i++) entries.push({ binding: 1 + nIn + i, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'storage' } });
      l = this.device.createBindGroupLayout({ entries, label: `layout u+${nIn}r+${nOut}w` });
      this.layouts.set(key, l);
    }
    return l;
  }

  get(ref: KernelRef, nIn: number, nOut: number): CompiledKernel {
    const ov = ref.overrides ?? {};
    const ovKey = Object.keys(ov).sort().map((k) => `${k}=${ov[k]}`).join(',');
    const key = `${ref.file}|${ref.entry}|${ovKey}|${nIn}:${nOut}`;
    let k = this.pipelines.get(key);
    if (!k) {
      const label = `${ref.file}:${ref.entry}${ovKey ? `[${ovKey}]` : ''}`;
      const layout = this.layout(nIn, nOut);
      const module = this.module(ref.file);
      this.device.pushErrorScope('validation');
      const pipeline = this.device.createComputePipeline({
        label,
        layout: this.device.createPipelineLayout({ bindGroupLayouts: [layout] }),
        compute: { module, entryPoint: ref.entry, ...(ovKey ? { constants: ov } : {}) },
      });
      this.compileChecks.push(this.device.popErrorScope().then((e) => (e ? `pipeline ${label}: ${e.message}` : null)));
      k = { pipeline, layout, label };
      this.pipelines.set(key, k);
    }
    return k;
  }
}
