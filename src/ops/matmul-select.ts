// Every choice between matmul variants lives here: chooseMatmulVariant() maps (adapter
// capabilities, problem shape) to one kernel configuration. matmul.ts only executes what this
// returns. Autotuning (opt-in) times the candidate configurations of a shape class once per
// adapter and caches the winner on disk; without it a fixed default table is used, so tests
// are deterministic.
//
// Variants:
//   sg_*      kernels/matmul_sg.wgsl:mm_sg    subgroup-broadcast kernel for CPU adapters whose
//                                             subgroup size is 8 (llvmpipe): the fast f32 path there
//   direct_*  kernels/matmul.wgsl:mm_direct   no workgroup memory; CPU fallback (and f16 on CPU)
//   tiled_*   kernels/matmul.wgsl:mm_tiled    workgroup-tiled; for GPUs
//   tile8_*   kernels/matmul_tile8.wgsl       8x8 register blocks, vec4 loads, double-buffered
//                                             workgroup memory; for GPUs (aligned operands)
//   *_f16     the same kernel file assembled with the f16 prelude (f16 storage, f32 accumulation)
//   sgmat_*   kernels/matmul_sgmat.wgsl       chromium_experimental_subgroup_matrix (tensor cores)
import { cacheFilePath, env, readCacheText, writeCacheText } from '../platform/index.ts';
import type { AdapterClass } from '../gpu/device.ts';
import type { KernelDType, OverrideValues } from '../gpu/kernels.ts';

export type MatmulLayout = 'NN' | 'NT' | 'TN' | 'TT';
export type MatmulDType = 'f32' | 'f16';

export interface MatmulShape {
  batch: number;
  M: number;
  N: number;
  K: number;
  layout: MatmulLayout;
  dtype: MatmulDType;
}

/** One subgroup-matrix configuration as Dawn reports it in adapter info. */
export interface SubgroupMatrixConfig {
  componentType: string;
  resultComponentType: string;
  M: number;
  N: number;
  K: number;
}

/** What the selection needs to know about a device (a Device satisfies it; tests pass fakes). */
export interface MatmulCapabilities {
  hasFeature(name: string): boolean;
  /** CPU or GPU adapter (Device.adapterClass; adapterClassOf for fakes). */
  readonly adapterClass: AdapterClass;
  readonly subgroupMatrixConfigs: readonly unknown[];
  readonly adapter: { readonly name: string; readonly architecture: string; readonly backend: string; readonly vendor: string };
  readonly limits: { readonly maxComputeWorkgroupStorageSize: number; readonly maxComputeInvocationsPerWorkgroup: number };
  /** Subgroup size range from the adapter info (absent: unknown). */
  readonly subgroupSize?: { readonly min: number; readonly max: number };
}

export interface MatmulVariant {
  /** Stable name, usable as MatmulOptions.variant. */
  name: string;
  /** Kernel file under kernels/ and entry point. */
  file: string;
  entry: string;
  /** Accumulation type of the kernel's prelude (f16 only for subgroup-matrix configs without f32 results). */
  accumulator?: KernelDType;
  /** Const-expression parameters of the kernel (subgroup-matrix shapes). */
  consts?: Record<string, number>;
  /** Tile/workgroup overrides (layout and epilogue overrides are added by matmul.ts). */
  overrides: OverrideValues;
  /** Output rows and columns covered by one workgroup (for the dispatch grid). */
  tileM: number;
  tileN: number;
  dtype: MatmulDType;
  /** Workgroup memory bytes the variant needs (checked against the device limit). */
  workgroupBytes: number;
  /**
   * For kernels that read the operands as vec4 (each operand's contiguous dimension a multiple
   * of 4): what runs instead where a shape is not aligned (src/ops/matmul.ts).
   */
  vec4Fallback?: MatmulVariant;
}

// ---------------------------------------------------------------------------------------------
// Candidate configurations (the autotune search space).

function direct(rm: number, wgx: number, dtype: MatmulDType): MatmulVariant {
  const suffix = dtype === 'f16' ? '_f16' : '';
  return {
    name: `direct_r${rm}_w${wgx}${suffix}`,
    file: 'matmul',
    entry: 'mm_direct',
    overrides: { RM: rm, WG_X: wgx },
    tileM: rm,
    tileN: 4 * wgx,
    dtype,
    workgroupBytes: 0,
  };
}

function subgroupBroadcast(rg: number, cn: number, wgx: number): MatmulVariant {
  return {
    name: `sg_r${8 * rg}_c${4 * cn}_w${wgx}`,
    file: 'matmul_sg',
    entry: 'mm_sg',
    overrides: { RG: rg, CN: cn, WG_X: wgx },
    tileM: 8 * rg,
    tileN: 4 * cn * wgx,
    dtype: 'f32',
    workgroupBytes: 0,
  };
}

/** The subgroup-broadcast kernel broadcasts lanes 0..7 explicitly: subgroup size must be 8. */
function hasSubgroupsOf8(caps: MatmulCapabilities): boolean {
  return caps.hasFeature('subgroups') && caps.subgroupSize?.min === 8 && caps.subgroupSize.max === 8;
}

/**
 * mm_tiled with TILE_M x TILE_N x TILE_K tiles and an RM x 4 register block. `vec4`: the
 * mm_tiled_v4 entry (four-element global loads while staging), used where both operands'
 * contiguous dimensions are multiples of 4 (matmul.ts falls back to mm_tiled elsewhere).
 */
function tiled(tm: number, tn: number, tk: number, rm: 4 | 8, dtype: MatmulDType, vec4 = false): MatmulVariant {
  const suffix = `${vec4 ? '_v4' : ''}${dtype === 'f16' ? '_f16' : ''}`;
  const v: MatmulVariant = {
    name: `tiled_${tm}x${tn}x${tk}_r${rm}${suffix}`,
    file: 'matmul',
    entry: vec4 ? 'mm_tiled_v4' : 'mm_tiled',
    overrides: { TILE_M: tm, TILE_N: tn, TILE_K: tk, RM: rm, WG_X: tn / 4, WG_Y: tm / rm },
    tileM: tm,
    tileN: tn,
    dtype,
    // Staged as vec4<f32> rows whatever the storage type.
    workgroupBytes: (tm + tn) * tk * 4,
  };
  // The same tiles with scalar staging loads.
  if (vec4) v.vec4Fallback = { ...v, name: `tiled_${tm}x${tn}x${tk}_r${rm}${dtype === 'f16' ? '_f16' : ''}`, entry: 'mm_tiled' };
  return v;
}

/**
 * mm_tile8 (kernels/matmul_tile8.wgsl): TILE_M x TILE_N tiles of 8x8 register blocks, slabs of
 * TILE_K double-buffered in workgroup memory (as f32 vec4 rows: 2·(tm + tn)·tk·4 bytes). Vec4
 * loads only: unaligned shapes run the 64x64 mm_tiled tiles instead.
 */
function tile8(tm: number, tn: number, tk: number, dtype: MatmulDType): MatmulVariant {
  const [wgx, wgy] = [tn / 8, tm / 8];
  return {
    name: `tile8_${tm}x${tn}x${tk}${dtype === 'f16' ? '_f16' : ''}`,
    file: 'matmul_tile8',
    entry: 'mm_tile8',
    overrides: { TILE_M: tm, TILE_N: tn, TILE_K: tk, WG_X: wgx, WG_Y: wgy },
    tileM: tm,
    tileN: tn,
    dtype,
    workgroupBytes: 2 * (tm + tn) * tk * 4,
    vec4Fallback: tiled(64, 64, 16, 4, dtype),
  };
}

/** Whether a tile8 configuration is one the kernel supports (whole vec4 loads, at most 4 per operand and invocation). */
export function tile8Valid(tm: number, tn: number, tk: number): boolean {
  const threads = (tm / 8) * (tn / 8);
  const aLoads = (tm * tk) / (4 * threads);
  const bLoads = (tk * tn) / (4 * threads);
  return tm % 32 === 0 && tn % 32 === 0 && tk % 4 === 0 && Number.isInteger(aLoads) && Number.isInteger(bLoads) && aLoads >= 1 && bLoads >= 1 && aLoads <= 4 && bLoads <= 4;
}

const SG_CANDIDATES = (): MatmulVariant[] => [subgroupBroadcast(2, 2, 32), subgroupBroadcast(2, 1, 64), subgroupBroadcast(4, 1, 32), subgroupBroadcast(1, 4, 16), subgroupBroadcast(2, 2, 16), subgroupBroadcast(1, 2, 32)];

const CANDIDATES: Record<'cpu' | 'gpu', (d: MatmulDType) => MatmulVariant[]> = {
  // direct(1, 64) is the default for 1-2 rows, so autotune measures it against the others there.
  cpu: (d) => [direct(16, 64, d), direct(16, 32, d), direct(4, 64, d), direct(8, 64, d), direct(8, 32, d), direct(4, 128, d), direct(2, 64, d), direct(1, 64, d), tiled(32, 64, 32, 4, d)],
  // RM = 8 ran at ~2 TFLOP/s on an H200 (vs 15 for 64x64 RM = 4) when mm_tiled indexed its
  // accumulators with a loop variable; the loop is gone (constant indices), so the RM = 8 tiles
  // are candidates again (autotune / --all-variants), not defaults, and so are the vec4-staging
  // (_v4) tiles: neither has been measured on a GPU yet.
  // tile8: the large-tile kernel written for issue 14 (not measured on a GPU yet).
  gpu: (d) => [
    tile8(128, 128, 16, d),
    tile8(128, 128, 8, d),
    tile8(128, 64, 16, d),
    tile8(64, 128, 16, d),
    tile8(64, 64, 16, d),
    tiled(64, 64, 16, 4, d, true),
    tiled(64, 64, 16, 8, d, true),
    tiled(128, 64, 16, 8, d, true),
    tiled(64, 64, 16, 4, d),
    tiled(32, 32, 16, 4, d),
    tiled(64, 64, 32, 4, d),
    tiled(128, 64, 16, 4, d),
    tiled(64, 64, 16, 8, d),
    tiled(128, 64, 16, 8, d),
    tiled(128, 128, 16, 8, d),
  ],
};

/** Defaults per adapter class; measured on lavapipe (see docs/kernels.md). */
const DEFAULTS: Record<'cpu' | 'gpu', (d: MatmulDType, s: MatmulShape, caps: MatmulCapabilities) => MatmulVariant> = {
  cpu: (d, s, caps) => {
    if (s.M * s.batch <= 2) return direct(1, 64, d);
    if (d === 'f32' && hasSubgroupsOf8(caps)) {
      if (s.M * s.batch <= 8) return subgroupBroadcast(1, 2, 32);
      // Narrow outputs (the tiny model's width 64 / 128): a 256-column workgroup leaves most
      // lanes idle; the 128-column one measured 1.7-1.9x faster at N = 64 and 128 (autotune, lavapipe).
      return s.N <= 128 ? subgroupBroadcast(2, 2, 16) : subgroupBroadcast(2, 2, 32);
    }
    return direct(16, 64, d);
  },
  // Big products: the 128x128 tile8 kernel (unaligned shapes fall back to tiled 64x64 inside
  // matmul.ts); its tiles need 256 rows and columns of output to fill a GPU at all.
  gpu: (d, s) => (s.M * s.batch <= 32 || s.N <= 32 ? tiled(32, 32, 16, 4, d) : s.M * s.batch >= 256 && s.N >= 256 ? tile8(128, 128, 16, d) : tiled(64, 64, 16, 4, d)),
};

// ---------------------------------------------------------------------------------------------
// Subgroup matrix

/** The subgroup-matrix config to use for a dtype, or null. f32 tensors only use f32 configs
 *  (an f16 config would silently drop input precision); f16 tensors use f16 configs. */
export function pickSubgroupMatrixConfig(caps: MatmulCapabilities, dtype: MatmulDType): SubgroupMatrixConfig | null {
  if (!caps.hasFeature('chromium-experimental-subgroup-matrix') || !caps.hasFeature('subgroups')) return null;
  // The kernel sizes its workgroup as 4 subgroups: the subgroup size must be fixed and known.
  const sg = caps.subgroupSize;
  if (!sg || sg.min !== sg.max || sg.min < 4 || sg.min > 64) return null;
  if (dtype === 'f16' && !caps.hasFeature('shader-f16')) return null;
  const configs = caps.subgroupMatrixConfigs.filter(isSubgroupMatrixConfig);
  const usable = configs.filter(
    (c) => c.componentType === dtype && (c.resultComponentType === 'f32' || c.resultComponentType === dtype) && [8, 16].includes(c.M) && [8, 16].includes(c.N) && [8, 16].includes(c.K),
  );
  // Prefer an f32 accumulator, then the larger (fewer instructions per FLOP) shape.
  usable.sort((a, b) => Number(b.resultComponentType === 'f32') - Number(a.resultComponentType === 'f32') || b.M * b.N * b.K - a.M * a.N * a.K);
  return usable[0] ?? null;
}

function isSubgroupMatrixConfig(c: unknown): c is SubgroupMatrixConfig {
  if (!c || typeof c !== 'object') return false;
  const o = c as Record<string, unknown>;
  return typeof o.componentType === 'string' && typeof o.resultComponentType === 'string' && typeof o.M === 'number' && typeof o.N === 'number' && typeof o.K === 'number';
}

/** A workgroup layout of the subgroup-matrix kernel: WG_SM x WG_SN subgroups, KSTEPS SG_K steps per slab. */
export interface SgmatLayout {
  wgSm: number;
  wgSn: number;
  ksteps: number;
}

/** Layouts tried (autotune candidates), the default first: 128x128 tiles for 16x16 matrices. */
export const SGMAT_LAYOUTS: readonly SgmatLayout[] = [
  { wgSm: 2, wgSn: 4, ksteps: 2 },
  { wgSm: 2, wgSn: 4, ksteps: 1 },
  { wgSm: 2, wgSn: 2, ksteps: 2 },
  { wgSm: 1, wgSn: 2, ksteps: 2 },
];

/**
 * kernels/matmul_sgmat.wgsl for one device config: each subgroup owns 4 x 2 result matrices, the
 * workgroup WG_SM x WG_SN subgroups, so its tile is (4·WG_SM·M) x (2·WG_SN·N); slabs of
 * KSTEPS·K double-buffered in T plus one result-matrix slot per subgroup in workgroup memory.
 * Null when the layout's vec4 loads per invocation are not whole or exceed the kernel's 8.
 */
export function sgmatVariant(cfg: SubgroupMatrixConfig, subgroupSize = 32, layout: SgmatLayout = SGMAT_LAYOUTS[0]): MatmulVariant | null {
  const { wgSm, wgSn, ksteps } = layout;
  const [tm, tn, tk] = [wgSm * 4 * cfg.M, wgSn * 2 * cfg.N, ksteps * cfg.K];
  const threads = wgSm * wgSn * subgroupSize;
  const loads = [(tm * tk) / (4 * threads), (tk * tn) / (4 * threads)];
  if (loads.some((l) => !Number.isInteger(l) || l < 1 || l > 8)) return null;
  const inBytes = cfg.componentType === 'f16' ? 2 : 4;
  const resBytes = cfg.resultComponentType === 'f16' ? 2 : 4;
  const dtype = cfg.componentType as MatmulDType;
  return {
    name: `sgmat_${cfg.componentType}_${cfg.resultComponentType}_${cfg.M}x${cfg.N}x${cfg.K}_w${wgSm}x${wgSn}_k${ksteps}`,
    file: 'matmul_sgmat',
    entry: 'mm_sgmat',
    accumulator: cfg.resultComponentType as KernelDType,
    consts: { SG_M: cfg.M, SG_N: cfg.N, SG_K: cfg.K },
    overrides: { SG_SIZE: subgroupSize, WG_SM: wgSm, WG_SN: wgSn, KSTEPS: ksteps },
    tileM: tm,
    tileN: tn,
    dtype,
    workgroupBytes: 2 * (tm * tk + tk * tn) * inBytes + wgSm * wgSn * cfg.M * cfg.N * resBytes,
    vec4Fallback: tiled(64, 64, 16, 4, dtype),
  };
}

/** Every subgroup-matrix layout that is valid for the config (default layout first). */
function sgmatVariants(cfg: SubgroupMatrixConfig, subgroupSize: number | undefined): MatmulVariant[] {
  return SGMAT_LAYOUTS.map((l) => sgmatVariant(cfg, subgroupSize, l)).filter((v): v is MatmulVariant => v !== null);
}

// ---------------------------------------------------------------------------------------------
// Selection

export function layoutOf(transA: boolean, transB: boolean): MatmulLayout {
  return `${transA ? 'T' : 'N'}${transB ? 'T' : 'N'}` as MatmulLayout;
}

/** All variants that can run this dtype on this device (for forcing and autotuning). */
export function candidateVariants(caps: MatmulCapabilities, dtype: MatmulDType): MatmulVariant[] {
  const cls = caps.adapterClass;
  const list = [...CANDIDATES[cls](dtype)];
  if (cls === 'cpu' && dtype === 'f32' && hasSubgroupsOf8(caps)) list.unshift(...SG_CANDIDATES());
  const cfg = pickSubgroupMatrixConfig(caps, dtype);
  if (cfg) list.unshift(...sgmatVariants(cfg, caps.subgroupSize?.max));
  const wgBytes = caps.limits.maxComputeWorkgroupStorageSize;
  const wgThreads = caps.limits.maxComputeInvocationsPerWorkgroup;
  return list.filter((v) => v.workgroupBytes <= wgBytes && threadsOf(v) <= wgThreads);
}

function threadsOf(v: MatmulVariant): number {
  const o = v.overrides;
  if (v.entry === 'mm_sgmat') return (o.WG_SM ?? 2) * (o.WG_SN ?? 4) * (o.SG_SIZE ?? 32);
  return (o.WG_X ?? 1) * (o.WG_Y ?? 1);
}

/** Every variant name known for a dtype on any adapter (for error messages and forcing). */
function variantByName(caps: MatmulCapabilities, name: string, dtype: MatmulDType): MatmulVariant {
  const all = [...CANDIDATES.cpu(dtype), ...CANDIDATES.gpu(dtype)];
  if (dtype === 'f32' && caps.hasFeature('subgroups')) all.push(...SG_CANDIDATES());
  const cfg = pickSubgroupMatrixConfig(caps, dtype);
  if (cfg) all.push(...sgmatVariants(cfg, caps.subgroupSize?.max));
  const hit = all.find((v) => v.name === name);
  if (!hit) {
    throw new Error(`matmul: unknown variant '${name}' for dtype ${dtype} on ${caps.adapter.name}; known: ${[...new Set(all.map((v) => v.name))].join(', ')}`);
  }
  return hit;
}

/** Bucket of a shape for autotuning: powers of two of M (rows incl. batch), N, K, plus layout and dtype. */
export function shapeClass(s: MatmulShape): string {
  const b = (x: number): number => 2 ** Math.ceil(Math.log2(Math.max(1, x)));
  return `${s.dtype}:${s.layout}:m${b(s.M * s.batch)}:n${b(s.N)}:k${b(s.K)}`;
}

/**
 * Whether the subgroup-matrix kernel is the default (without autotuning) where it is usable.
 * On: the f16 path runs on tensor cores wherever the adapter lists a usable config (issue 14).
 * The first version (2x2 subgroups of 2x2 matrices, 64x64 tiles, scalar staging) ran 5.4
 * TFLOP/s at 4096^3 f16 on an H200 (2026-11-27); this one (128x128 tiles, vec4 loads, double
 * buffering) has not been measured yet: scripts/gpu-check measures it against the tiled kernels
 * and checks it against the f32 kernel on every shape it serves.
 */
export const SGMAT_BY_DEFAULT = true;

/** Whether a shape is big enough for the subgroup-matrix kernel's tiles to pay off. */
function sgmatFits(caps: MatmulCapabilities, shape: MatmulShape): MatmulVariant | null {
  const cfg = pickSubgroupMatrixConfig(caps, shape.dtype);
  if (!cfg || shape.M * shape.batch < 32 || shape.N < 32 || shape.K < 2 * cfg.K) return null;
  return sgmatVariants(cfg, caps.subgroupSize?.max).find((v) => v.workgroupBytes <= caps.limits.maxComputeWorkgroupStorageSize) ?? null;
}

/**
 * THE variant choice. Order: forced name > autotuned winner for this shape class (cache, when
 * enabled) > subgroup matrix (if SGMAT_BY_DEFAULT and the device has a usable config and the
 * problem fills its tiles) > default table for the adapter class.
 */
export function chooseMatmulVariant(caps: MatmulCapabilities, shape: MatmulShape, forced?: string, sgmatByDefault = SGMAT_BY_DEFAULT): MatmulVariant {
  if (forced) return variantByName(caps, forced, shape.dtype);
  const tuned = lookupTuned(caps, shape);
  if (tuned) {
    const v = candidateVariants(caps, shape.dtype).find((c) => c.name === tuned);
    if (v) return v;
  }
  if (sgmatByDefault) {
    const v = sgmatFits(caps, shape);
    if (v) return v;
  }
  return DEFAULTS[caps.adapterClass](shape.dtype, shape, caps);
}

// ---------------------------------------------------------------------------------------------
// Autotune cache: { "<adapter name>|<backend>": { "<shape class>": { variant, gflops } } }

interface TuneEntry {
  variant: string;
  gflops: number;
}
type TuneFile = Record<string, Record<string, TuneEntry>>;

export function autotuneCachePath(): string {
  return cacheFilePath('autotune.json');
}

let cacheMemo: { path: string; data: TuneFile } | null = null;

function loadCache(): TuneFile {
  const path = autotuneCachePath();
  if (cacheMemo && cacheMemo.path === path) return cacheMemo.data;
  let data: TuneFile = {};
  const text = readCacheText(path);
  if (text !== null) {
    try {
      const parsed: unknown = JSON.parse(text);
      if (parsed && typeof parsed === 'object') data = parsed as TuneFile;
    } catch {
      // A corrupt cache is ignored (and overwritten by the next autotune run).
      data = {};
    }
  }
  cacheMemo = { path, data };
  return data;
}

export function adapterKey(caps: MatmulCapabilities): string {
  return `${caps.adapter.name}|${caps.adapter.backend}`;
}

/** Whether autotuning at first use of a shape class is on (GENALIGN_AUTOTUNE=1). */
export function autotuneEnabled(): boolean {
  return env('GENALIGN_AUTOTUNE') === '1';
}

function lookupTuned(caps: MatmulCapabilities, shape: MatmulShape): string | null {
  if (!autotuneEnabled()) return null;
  return loadCache()[adapterKey(caps)]?.[shapeClass(shape)]?.variant ?? null;
}

/** Reads the cached winner of a shape class (null when not tuned). */
export function tunedVariant(caps: MatmulCapabilities, shape: MatmulShape): TuneEntry | null {
  return loadCache()[adapterKey(caps)]?.[shapeClass(shape)] ?? null;
}

export function storeTuned(caps: MatmulCapabilities, shape: MatmulShape, entry: TuneEntry): void {
  const data = loadCache();
  const key = adapterKey(caps);
  data[key] = { ...(data[key] ?? {}), [shapeClass(shape)]: entry };
  writeCacheText(autotuneCachePath(), JSON.stringify(data, null, 1) + '\n');
}

/** For tests: forget the in-memory copy of the cache file. */
export function resetAutotuneMemo(): void {
  cacheMemo = null;
}
