// Kernel registry: assembles a kernel's WGSL from the files in kernels/ and compiles it into
// pipelines, cached by (module list, prelude, entry point, override constants, binding layout).
//
// A kernel is an ordered list of WGSL modules plus a typed prelude (assembleKernel):
//   1. directives: `enable f16;` when the storage or accumulation type is f16, then every
//      `enable`, `requires` and `diagnostic` line of the modules (WGSL wants them first);
//   2. the prelude: `alias T = f32|f16;` (the storage element type of the kernel's tensors),
//      `alias T4 = vec4<T>;`, `alias Acc = f32|f16;` (the accumulation type; f32 unless a
//      kernel that lists f16 in `// accumulators:` asks for it), then the ref's `consts`;
//   3. the modules named by the file's `// uses:` lines, resolved recursively, dependencies
//      first, each once (a module's own `// uses:` lines count too);
//   4. the kernel file itself.
// Header lines a file may carry (in its leading comment block):
//   // uses: lib/erf, lib/workgroup_reduce    modules this file needs (paths under kernels/)
//   // dtypes: f32, f16                       storage types it is written for (default: f32)
//   // accumulators: f32, f16                 accumulation types it accepts (default: f32)
//   // consts: SG_M, SG_N                     u32 consts the ref must supply (see KernelRef)
//   //   N  name: TYPE (ACCESS) comment       a binding: the registry declares it, so the header
//                                            that documents a kernel's interface is also its
//                                            only declaration. ACCESS is uniform, read, write or
//                                            read_write; `//   1  x: array<T> (read)  n elements`
//                                            becomes `@group(0) @binding(1) var<storage, read>
//                                            x: array<T>;`. A binding number may be reused by
//                                            another entry point under another name.
// Specialisation (tile and workgroup sizes, flags) goes through WGSL `override` constants,
// never through the source text.
//
// Binding convention for every kernel (group 0):
//   binding 0            uniform params (a small struct; may be unused)
//   bindings 1..nIn      read-only storage inputs      (var<storage, read>)
//   bindings nIn+1..     read-write storage outputs    (var<storage, read_write>)
import { kernelFilesOnDisk, kernelSourceFromDisk } from '../platform/index.ts';

export type OverrideValues = Record<string, number>;

/** Element types a kernel's storage buffers (and its accumulators) can have. */
export type KernelDType = 'f32' | 'f16';

export interface KernelRef {
  /** The kernel file under kernels/, without `.wgsl` (e.g. 'matmul'). */
  file: string;
  entry: string;
  /** Storage element type T (default f32); the file must list it in `// dtypes:`. */
  dtype?: KernelDType;
  /** Accumulation type Acc (default f32); the file must list it in `// accumulators:`. */
  accumulator?: KernelDType;
  /**
   * u32 consts added to the prelude, only for values WGSL requires as const-expressions
   * (subgroup-matrix shapes); everything else is an override. The file's `// consts:` line
   * names the ones it needs.
   */
  consts?: Record<string, number>;
  overrides?: OverrideValues;
}

const DTYPES: readonly KernelDType[] = ['f32', 'f16'];

const sources = new Map<string, string>();

/**
 * Used by bundled builds (scripts/build.mjs embeds every kernels/**\/*.wgsl, keyed by its path
 * under kernels/ without `.wgsl`) so no file system lookup is needed; tests register extra ones.
 */
export function registerKernelSources(map: Record<string, string>): void {
  for (const [k, v] of Object.entries(map)) sources.set(k, v);
  assembled.clear();
}

/** The text of one file under kernels/ (a kernel or a module), by its name without `.wgsl`: registered (bundles), else read from disk (platform). */
export function kernelSource(file: string): string {
  const known = sources.get(file);
  if (known !== undefined) return known;
  const src = kernelSourceFromDisk(file);
  sources.set(file, src);
  return src;
}

/** Every file under kernels/ (registered or on disk), by name without `.wgsl`, sorted. */
export function kernelFiles(): string[] {
  return [...new Set([...sources.keys(), ...kernelFilesOnDisk()])].sort();
}

// ---------------------------------------------------------------------------------------------
// Assembly

/** What a file's header says about it (the `// name: a, b` lines of its leading comment block). */
export interface KernelHeader {
  uses: string[];
  dtypes: KernelDType[];
  accumulators: KernelDType[];
  consts: string[];
  /** The bindings its header declares, in header order (duplicates of one declaration once). */
  bindings: BindingDecl[];
}

export interface BindingDecl {
  binding: number;
  name: string;
  type: string;
  access: 'uniform' | 'read' | 'read_write';
}

/** `//   1  x: array<T> (read) …`: binding number, name, type, then the access in parentheses. */
const BINDING_LINE = /^\/\/\s+(\d+)\s+(\w+):\s+([\w<>]+)\s+\((uniform|read_write|read|write)\b/;

/** The WGSL declaration of a binding. */
export function bindingDeclaration(b: BindingDecl): string {
  const space = b.access === 'uniform' ? 'uniform' : `storage, ${b.access}`;
  return `@group(0) @binding(${b.binding}) var<${space}> ${b.name}: ${b.type};`;
}

function listAfter(line: string): string[] {
  return line
    .slice(line.indexOf(':') + 1)
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

function dtypeList(file: string, key: string, items: string[]): KernelDType[] {
  for (const d of items) {
    if (!DTYPES.includes(d as KernelDType)) throw new Error(`kernels/${file}.wgsl: '// ${key}:' names '${d}'; the known types are ${DTYPES.join(', ')}`);
  }
  return items as KernelDType[];
}

export function parseHeader(file: string, src: string): KernelHeader {
  const h: KernelHeader = { uses: [], dtypes: ['f32'], accumulators: ['f32'], consts: [], bindings: [] };
  for (const raw of src.split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    if (!line.startsWith('//')) break;
    const b = BINDING_LINE.exec(line);
    if (b) {
      const decl: BindingDecl = { binding: Number(b[1]), name: b[2], type: b[3], access: b[4] === 'write' ? 'read_write' : (b[4] as BindingDecl['access']) };
      const same = h.bindings.find((d) => d.name === decl.name);
      if (same && bindingDeclaration(same) !== bindingDeclaration(decl)) {
        throw new Error(`kernels/${file}.wgsl: the header declares binding '${decl.name}' twice, differently (${bindingDeclaration(same)} and ${bindingDeclaration(decl)})`);
      }
      if (!same) h.bindings.push(decl);
      continue;
    }
    const m = /^\/\/\s*(uses|dtypes|accumulators|consts):/.exec(line);
    if (!m) continue;
    const items = listAfter(line);
    if (m[1] === 'uses') h.uses.push(...items);
    else if (m[1] === 'consts') h.consts.push(...items);
    else if (m[1] === 'dtypes') h.dtypes = dtypeList(file, m[1], items);
    else h.accumulators = dtypeList(file, m[1], items);
  }
  return h;
}

/** Modules of `file` in assembly order: dependencies first, each once, `file` last. */
export function moduleOrder(file: string): string[] {
  const order: string[] = [];
  const done = new Set<string>();
  const visit = (name: string, path: string[]): void => {
    if (done.has(name)) return;
    if (path.includes(name)) throw new Error(`kernels: '// uses:' lines form a cycle: ${[...path.slice(path.indexOf(name)), name].join(' -> ')}`);
    let src: string;
    try {
      src = kernelSource(name);
    } catch (e) {
      if (path.length === 0) throw e;
      throw new Error(`kernels/${path[path.length - 1]}.wgsl uses '${name}', which does not exist (${(e as Error).message})`);
    }
    for (const dep of parseHeader(name, src).uses) visit(dep, [...path, name]);
    done.add(name);
    order.push(name);
  };
  visit(file, []);
  return order;
}

/** One part of an assembled kernel: which lines came from which file. */
interface Segment {
  /** First line (1-based) of the part in the assembled source. */
  start: number;
  lines: number;
  file: string;
  /** Set on the declarations generated from a header's binding lines. */
  generated?: boolean;
}

export interface AssembledKernel {
  /** The WGSL handed to createShaderModule. */
  code: string;
  /** Files in assembly order (modules first, the kernel file last). */
  modules: string[];
  /** The prelude's key: storage type, accumulation type and consts (e.g. `f16/f32`). */
  preludeKey: string;
  /** The prelude in words, for messages: `storage f16, accumulation f32`. */
  prelude: string;
  /** Whether the code enables f16 (then the device needs 'shader-f16'). */
  needsF16: boolean;
  segments: Segment[];
}

const DIRECTIVE = /^\s*(enable|requires|diagnostic)\b[^;]*;\s*(\/\/.*)?$/;

function preludeKeyOf(ref: Pick<KernelRef, 'dtype' | 'accumulator' | 'consts'>): string {
  const c = ref.consts ?? {};
  const consts = Object.keys(c).sort().map((k) => `${k}=${c[k]}`).join(',');
  return `${ref.dtype ?? 'f32'}/${ref.accumulator ?? 'f32'}${consts ? `/${consts}` : ''}`;
}

const assembled = new Map<string, AssembledKernel>();

/**
 * The WGSL of `ref.file` for its dtype (see the header of this file). Throws, naming the kernel,
 * when the file does not support the dtype or accumulator, or lacks a const it needs.
 */
export function assembleKernel(ref: Pick<KernelRef, 'file' | 'dtype' | 'accumulator' | 'consts'>): AssembledKernel {
  const preludeKey = preludeKeyOf(ref);
  const key = `${ref.file}|${preludeKey}`;
  const hit = assembled.get(key);
  if (hit) return hit;
  const dtype = ref.dtype ?? 'f32';
  const acc = ref.accumulator ?? 'f32';
  const header = parseHeader(ref.file, kernelSource(ref.file));
  if (!header.dtypes.includes(dtype)) {
    throw new Error(`kernel '${ref.file}' does not support dtype ${dtype} (kernels/${ref.file}.wgsl is written for ${header.dtypes.join(', ')}; '// dtypes:' in its header)`);
  }
  if (!header.accumulators.includes(acc)) {
    throw new Error(`kernel '${ref.file}' does not accumulate in ${acc} (it accepts ${header.accumulators.join(', ')}; '// accumulators:' in its header)`);
  }
  const consts = ref.consts ?? {};
  const missing = header.consts.filter((c) => consts[c] === undefined);
  if (missing.length) throw new Error(`kernel '${ref.file}' needs the consts ${missing.join(', ')} (KernelRef.consts; '// consts:' in its header)`);
  const extra = Object.keys(consts).filter((c) => !header.consts.includes(c));
  if (extra.length) throw new Error(`kernel '${ref.file}' takes no consts ${extra.join(', ')} (its header lists: ${header.consts.join(', ') || 'none'})`);

  const modules = moduleOrder(ref.file);
  const directives: string[] = dtype === 'f16' || acc === 'f16' ? ['enable f16;'] : [];
  const parts = modules.map((name) => {
    // Directive lines move to the top; a blank line keeps the part's line numbers.
    const src = kernelSource(name);
    const lines = src.replace(/\n$/, '').split('\n');
    return {
      name,
      lines: lines.map((l) => {
        if (!DIRECTIVE.test(l)) return l;
        const d = l.trim().replace(/\s*\/\/.*$/, '');
        if (!directives.includes(d)) directives.push(d);
        return '';
      }),
      bindings: parseHeader(name, src).bindings.map(bindingDeclaration),
    };
  });
  const out: string[] = [`// ${ref.file} assembled for storage ${dtype}, accumulation ${acc}: prelude, then ${modules.map((m) => `kernels/${m}.wgsl`).join(', ')}`];
  out.push(...directives, '', '// ---- prelude', `alias T = ${dtype};`, 'alias T4 = vec4<T>;', `alias Acc = ${acc};`);
  for (const c of Object.keys(consts).sort()) {
    const v = consts[c];
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new Error(`kernel '${ref.file}': const ${c} = ${v} is not a u32`);
    out.push(`const ${c}: u32 = ${v}u;`);
  }
  const segments: Segment[] = [];
  for (const p of parts) {
    out.push('', `// ---- kernels/${p.name}.wgsl`);
    segments.push({ start: out.length + 1, lines: p.lines.length, file: p.name });
    out.push(...p.lines);
    if (p.bindings.length) {
      out.push('', `// ---- bindings declared by the header of kernels/${p.name}.wgsl`);
      segments.push({ start: out.length + 1, lines: p.bindings.length, file: p.name, generated: true });
      out.push(...p.bindings);
    }
  }
  const result: AssembledKernel = { code: out.join('\n') + '\n', modules, preludeKey, prelude: `storage ${dtype}, accumulation ${acc}`, needsF16: directives.includes('enable f16;'), segments };
  assembled.set(key, result);
  return result;
}

/** Rewrites `:line:col` positions of a compiler message into `kernels/<file>.wgsl:line:col`. */
function locate(a: AssembledKernel, message: string): string {
  return message.replace(/(^|\s):(\d+):(\d+)(?=\s)/g, (all, pre: string, l: string, c: string) => {
    const line = Number(l);
    const s = a.segments.find((g) => line >= g.start && line < g.start + g.lines);
    if (s?.generated) return `${pre}kernels/${s.file}.wgsl (binding ${line - s.start + 1} of its header's binding lines)`;
    return s ? `${pre}kernels/${s.file}.wgsl:${line - s.start + 1}:${c}` : all;
  });
}

export interface CompiledKernel {
  pipeline: GPUComputePipeline;
  layout: GPUBindGroupLayout;
  label: string;
}

export class KernelRegistry {
  /** Shader modules by assembled source text. */
  private readonly modules = new Map<string, GPUShaderModule>();
  private readonly layouts = new Map<string, GPUBindGroupLayout>();
  private readonly pipelines = new Map<string, CompiledKernel>();
  /** Pending compile-error checks, resolved at the next sync point. */
  readonly compileChecks: Promise<string | null>[] = [];

  /** `hasFeature` is the device's: an f16 kernel on a device without 'shader-f16' is refused by name. */
  constructor(
    private readonly device: GPUDevice,
    private readonly hasFeature: (name: string) => boolean = () => true,
  ) {}

  get pipelineCount(): number {
    return this.pipelines.size;
  }

  private module(a: AssembledKernel, file: string): GPUShaderModule {
    let m = this.modules.get(a.code);
    if (!m) {
      this.device.pushErrorScope('validation');
      m = this.device.createShaderModule({ code: a.code, label: `${file}<${a.preludeKey}>` });
      this.compileChecks.push(
        this.device.popErrorScope().then((e) => (e ? `WGSL compile error in kernels/${file}.wgsl (${a.prelude}; modules ${a.modules.join(', ')}): ${locate(a, e.message)}` : null)),
      );
      this.modules.set(a.code, m);
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
    const a = assembleKernel(ref);
    const ov = ref.overrides ?? {};
    const ovKey = Object.keys(ov).sort().map((k) => `${k}=${ov[k]}`).join(',');
    const key = `${a.modules.join('+')}|${a.preludeKey}|${ref.entry}|${ovKey}|${nIn}:${nOut}`;
    let k = this.pipelines.get(key);
    if (!k) {
      if (a.needsF16 && !this.hasFeature('shader-f16')) {
        throw new Error(`kernel '${ref.file}' (${a.prelude}) needs the 'shader-f16' feature, which this adapter does not offer; use f32 tensors (toF32)`);
      }
      const dt = a.preludeKey === 'f32/f32' ? '' : `<${a.preludeKey}>`;
      const label = `${ref.file}${dt}:${ref.entry}${ovKey ? `[${ovKey}]` : ''}`;
      const layout = this.layout(nIn, nOut);
      const module = this.module(a, ref.file);
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
