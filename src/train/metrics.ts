// Alignment metrics for `eval`, computed on the host in float64 from [n, dim] embedding
// matrices (row i of `gen` is the generated image made from the caption of real image i):
//
//   paired_cosine  mean_i cos(gen_i, real_i)                      (GMAIL Table 14: 0.52 → 0.89)
//   r1, r5         gen→real retrieval among the n reals: rank_i = 1 + #{j : s_ij > s_ii} with
//                  s_ij = cos(gen_i, real_j); R@k = fraction of i with rank_i ≤ k
//   gap            ‖mean_i real_i/‖real_i‖ − mean_i gen_i/‖gen_i‖‖₂, the centroid distance of the
//                  normalised embeddings ("modality gap", Liang et al. 2022, "Mind the Gap")
//
// Tie rule: only reals scoring STRICTLY above the paired real push the rank down, so a real
// that ties s_ii (e.g. the same COCO image listed once per caption, which gives bit-identical
// teacher embeddings) counts in the query's favour. Ties are exact because every s_ij, the
// diagonal included, is summed in one fixed order (below), so equal rows give equal bits.
//
// Retrieval needs all n² dot products: 5000² × 1024 multiply-adds is 26 G, about 18 s in
// scalar JavaScript. A small WebAssembly SIMD kernel (f64x2, 4 gen × 2 real rows per step,
// assembled below) does it in about 3 s on one core; a scalar path with the same summation
// order is the fallback where WebAssembly SIMD is missing, and tests check the two agree bit
// for bit. Summation order of every dot product: two lanes, lane 0 over even k and lane 1
// over odd k (each in increasing k), then lane0 + lane1.

export interface AlignmentMetrics {
  paired_cosine: number;
  r1: number;
  r5: number;
  gap: number;
  n: number;
}

/** Retrieval among held-out (image, caption) pairs when the model has a text tower (src/train/downstream.ts). */
export type RetrievalKey = `${'t2i' | 'i2t'}_r${1 | 5 | 10}_${'real' | 'gen_before' | 'gen_after'}`;

/** Zero-shot accuracy over the held-out pairs' labels (src/train/downstream.ts). */
export type ZeroShotKey = `zeroshot_top${1 | 5}_${'real' | 'gen_before' | 'gen_after'}`;

export interface EvalReport extends Partial<Record<RetrievalKey | ZeroShotKey, number>> {
  /** Pairs the retrieval keys were measured on (held-out pairs with a caption that decoded). */
  n_text?: number;
  /** Pairs and classes the zero-shot keys were measured on (held-out pairs with a label). */
  n_zeroshot?: number;
  zeroshot_classes?: number;
  paired_cosine_before: number;
  paired_cosine_after: number;
  r1_before: number;
  r1_after: number;
  r5_before: number;
  r5_after: number;
  gap_before: number;
  gap_after: number;
  n_val: number;
}

export interface RetrievalOptions {
  /** false forces the portable scalar path (same summation order, so the same bits). */
  simd?: boolean;
}

/** All alignment metrics for n (gen_i, real_i) pairs; both matrices are row-major [n, dim]. */
export function alignmentMetrics(gen: Float32Array, real: Float32Array, n: number, dim: number, opts: RetrievalOptions = {}): AlignmentMetrics {
  const g = normalizedRows(gen, n, dim, 'gen');
  const r = normalizedRows(real, n, dim, 'real');
  const ranks = ranksOfNormalized(g, r, n, dim, opts);
  let cosSum = 0;
  let hit1 = 0;
  let hit5 = 0;
  for (let i = 0; i < n; i++) {
    cosSum += laneDot(g, i * dim, r, i * dim, dim);
    if (ranks[i] <= 1) hit1++;
    if (ranks[i] <= 5) hit5++;
  }
  return { paired_cosine: cosSum / n, r1: hit1 / n, r5: hit5 / n, gap: centroidGap(g, r, n, dim), n };
}

/** gen→real retrieval rank of the paired real for every gen row (1 = best; tie rule above). */
export function retrievalRanks(gen: Float32Array, real: Float32Array, n: number, dim: number, opts: RetrievalOptions = {}): Int32Array {
  return ranksOfNormalized(normalizedRows(gen, n, dim, 'gen'), normalizedRows(real, n, dim, 'real'), n, dim, opts);
}

/**
 * For each of the query rows `rows` (of queries [qn, dim]), the indices of its `k` most
 * cosine-similar rows of keys [kn, dim] (best first; ties to the lower index).
 */
export function nearestRows(queries: Float32Array, qn: number, keys: Float32Array, kn: number, dim: number, rows: readonly number[], k: number): number[][] {
  const q = normalizedRows(queries, qn, dim, 'query');
  const r = normalizedRows(keys, kn, dim, 'key');
  const kk = Math.min(k, kn);
  return rows.map((i) => {
    const best: { j: number; s: number }[] = [];
    for (let j = 0; j < kn; j++) {
      const s = laneDot(q, i * dim, r, j * dim, dim);
      if (best.length < kk || s > best[best.length - 1].s) {
        let at = best.length;
        while (at > 0 && best[at - 1].s < s) at--;
        best.splice(at, 0, { j, s });
        if (best.length > kk) best.pop();
      }
    }
    return best.map((b) => b.j);
  });
}

/** For each of the gen rows `rows`, its `k` nearest real rows (the nearest real images of a generated image). */
export function nearestReals(gen: Float32Array, real: Float32Array, n: number, dim: number, rows: readonly number[], k: number): number[][] {
  return nearestRows(gen, n, real, n, dim, rows, k);
}

/** Side-by-side before/after numbers, the shape `eval` prints and writes as JSON. */
export function evalReport(before: AlignmentMetrics, after: AlignmentMetrics): EvalReport {
  if (before.n !== after.n) {
    throw new Error(`evalReport: before and after were measured on different sets (n=${before.n} vs n=${after.n}); use the same validation pairs for both`);
  }
  return {
    paired_cosine_before: before.paired_cosine,
    paired_cosine_after: after.paired_cosine,
    r1_before: before.r1,
    r1_after: after.r1,
    r5_before: before.r5,
    r5_after: after.r5,
    gap_before: before.gap,
    gap_after: after.gap,
    n_val: before.n,
  };
}

// ---------------------------------------------------------------------------------------------

export function normalizedRows(x: Float32Array, n: number, dim: number, label: string): Float64Array {
  if (!Number.isInteger(n) || n < 1 || !Number.isInteger(dim) || dim < 1) {
    throw new Error(`alignment metrics: need n ≥ 1 pairs and dim ≥ 1, got n=${n}, dim=${dim}`);
  }
  if (x.length !== n * dim) {
    throw new Error(`alignment metrics: ${label} embeddings hold ${x.length} values, expected n×dim = ${n}×${dim} = ${n * dim}`);
  }
  const out = new Float64Array(n * dim);
  for (let i = 0; i < n; i++) {
    const o = i * dim;
    let ss = 0;
    for (let k = 0; k < dim; k++) ss += x[o + k] * x[o + k];
    if (!Number.isFinite(ss)) throw new Error(`alignment metrics: ${label} embedding row ${i} has a NaN or infinite value`);
    if (ss === 0) throw new Error(`alignment metrics: ${label} embedding row ${i} is all zeros, so its cosine is undefined`);
    const inv = 1 / Math.sqrt(ss);
    for (let k = 0; k < dim; k++) out[o + k] = x[o + k] * inv;
  }
  return out;
}

function centroidGap(g: Float64Array, r: Float64Array, n: number, dim: number): number {
  let d2 = 0;
  for (let k = 0; k < dim; k++) {
    let sg = 0;
    let sr = 0;
    for (let i = 0; i < n; i++) {
      sg += g[i * dim + k];
      sr += r[i * dim + k];
    }
    const diff = (sr - sg) / n;
    d2 += diff * diff;
  }
  return Math.sqrt(d2);
}

/** Dot product in the fixed two-lane order shared with the SIMD kernel. */
function laneDot(a: Float64Array, ao: number, b: Float64Array, bo: number, dim: number): number {
  let l0 = 0;
  let l1 = 0;
  let k = 0;
  for (; k + 1 < dim; k += 2) {
    l0 += a[ao + k] * b[bo + k];
    l1 += a[ao + k + 1] * b[bo + k + 1];
  }
  if (k < dim) l0 += a[ao + k] * b[bo + k];
  return l0 + l1;
}

function ranksOfNormalized(g: Float64Array, r: Float64Array, n: number, dim: number, opts: RetrievalOptions): Int32Array {
  const diag = new Float64Array(n);
  for (let i = 0; i < n; i++) diag[i] = laneDot(g, i * dim, r, i * dim, dim);
  const above = new Int32Array(n);
  const kernel = opts.simd === false ? null : simdTileKernel(n, dim);
  if (kernel) kernel.countAbove(g, r, diag, above);
  else scalarCountAbove(g, r, diag, n, dim, above);
  for (let i = 0; i < n; i++) above[i] += 1;
  return above;
}

/** Real rows per cache block: 128 rows of up to 1024 doubles (1 MiB) stay in L2 across all gen rows. */
const REAL_BLOCK = 128;

function scalarCountAbove(g: Float64Array, r: Float64Array, diag: Float64Array, n: number, dim: number, above: Int32Array): void {
  for (let j0 = 0; j0 < n; j0 += REAL_BLOCK) {
    const j1 = Math.min(n, j0 + REAL_BLOCK);
    for (let i = 0; i < n; i++) {
      const s = diag[i];
      let c = 0;
      for (let j = j0; j < j1; j++) if (laneDot(g, i * dim, r, j * dim, dim) > s) c++;
      above[i] += c;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// WebAssembly SIMD tile kernel.
//
// tile(g, r, nPairs, stride, kBytes, out): byte pointers into linear memory. Rows are f64,
// `stride` bytes apart (dim rounded up to even, zero padded, so rows are 16-byte aligned and
// the padding adds exact zeros). For the 4 gen rows at g, g+stride, g+2·stride, g+3·stride and
// nPairs pairs of real rows starting at r, it writes the 4×2 dot products of each pair to
// out[pair·8 + genRow·2 + realInPair] (f64), accumulating each product in an f64x2 register
// (lane 0: even k, lane 1: odd k) and storing lane0 + lane1.

interface TileKernel {
  countAbove(g: Float64Array, r: Float64Array, diag: Float64Array, above: Int32Array): void;
}

// The compiler's lib has no WebAssembly declarations (no DOM lib), so the few members used
// here are declared structurally.
interface WasmMemory {
  readonly buffer: ArrayBuffer;
}
interface WasmApi {
  validate(bytes: Uint8Array): boolean;
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: Record<string, Record<string, unknown>>) => { exports: Record<string, unknown> };
  Memory: new (desc: { initial: number }) => WasmMemory;
}
const wasm = (globalThis as unknown as { WebAssembly?: WasmApi }).WebAssembly;

let tileModule: object | null | undefined;

function simdTileKernel(n: number, dim: number): TileKernel | null {
  if (tileModule === undefined) {
    const bytes = assembleTileModule();
    tileModule = wasm?.validate(bytes) ? new wasm.Module(bytes) : null;
  }
  if (!tileModule || !wasm) return null;
  const api = wasm;
  const module = tileModule;
  const stride = dim + (dim & 1);
  const genRows = Math.ceil(n / 4) * 4;
  const realRows = Math.ceil(n / 2) * 2;
  const outDoubles = 8 * (REAL_BLOCK / 2);
  const totalBytes = (genRows + realRows) * stride * 8 + outDoubles * 8;
  if (totalBytes > 2 ** 31) return null; // beyond what one wasm32 memory comfortably holds
  return {
    countAbove(g, r, diag, above) {
      const memory = new api.Memory({ initial: Math.ceil(totalBytes / 65536) });
      const instance = new api.Instance(module, { env: { memory } });
      const tile = instance.exports.tile as (g: number, r: number, nPairs: number, stride: number, kBytes: number, out: number) => void;
      const mem = new Float64Array(memory.buffer);
      const realBase = genRows * stride;
      const outBase = realBase + realRows * stride;
      for (let i = 0; i < n; i++) {
        mem.set(g.subarray(i * dim, (i + 1) * dim), i * stride);
        mem.set(r.subarray(i * dim, (i + 1) * dim), realBase + i * stride);
      }
      const strideBytes = stride * 8;
      for (let j0 = 0; j0 < n; j0 += REAL_BLOCK) {
        const pairs = Math.ceil((Math.min(n, j0 + REAL_BLOCK) - j0) / 2);
        for (let i0 = 0; i0 < n; i0 += 4) {
          tile(i0 * strideBytes, (realBase + j0 * stride) * 8, pairs, strideBytes, strideBytes, outBase * 8);
          const rows = Math.min(4, n - i0);
          for (let c = 0; c < rows; c++) {
            const s = diag[i0 + c];
            let cnt = 0;
            for (let p = 0; p < pairs; p++) {
              const j = j0 + 2 * p;
              if (mem[outBase + p * 8 + c * 2] > s) cnt++;
              if (j + 1 < n && mem[outBase + p * 8 + c * 2 + 1] > s) cnt++;
            }
            above[i0 + c] += cnt;
          }
        }
      }
    },
  };
}

// Minimal WebAssembly binary assembler for the one function above.
const OP = {
  loop: 0x03,
  end: 0x0b,
  brIf: 0x0d,
  localGet: 0x20,
  localSet: 0x21,
  localTee: 0x22,
  f64Store: 0x39,
  i32Const: 0x41,
  i32LtU: 0x49,
  i32Add: 0x6a,
  i32Shl: 0x74,
  f64Add: 0xa0,
  i32: 0x7f,
  v128: 0x7b,
  voidBlock: 0x40,
} as const;
const SIMD = { load: 0x00, const: 0x0c, f64x2ExtractLane: 0x21, f64x2Add: 0xf0, f64x2Mul: 0xf2 } as const;

function uleb(v: number): number[] {
  const out: number[] = [];
  do {
    let b = v & 0x7f;
    v >>>= 7;
    if (v) b |= 0x80;
    out.push(b);
  } while (v);
  return out;
}

function sleb(v: number): number[] {
  const out: number[] = [];
  for (;;) {
    const b = v & 0x7f;
    v >>= 7;
    if ((v === 0 && !(b & 0x40)) || (v === -1 && b & 0x40)) {
      out.push(b);
      return out;
    }
    out.push(b | 0x80);
  }
}

function assembleTileModule(): Uint8Array {
  const simd = (op: number): number[] => [0xfd, ...uleb(op)];
  const get = (i: number): number[] => [OP.localGet, i];
  const set = (i: number): number[] => [OP.localSet, i];
  const tee = (i: number): number[] => [OP.localTee, i];
  const i32 = (v: number): number[] => [OP.i32Const, ...sleb(v)];
  // Params: 0 g, 1 r, 2 nPairs, 3 stride, 4 kBytes, 5 out.
  // i32 locals: 6..8 gen rows 1..3, 9 second real row, 10 k, 11 pair counter.
  // v128 locals: 12..19 accumulators acc[c*2+q], 20/21 real vectors, 22 gen vector.
  const [G1, G2, G3, R1, K, J, ACC, RV, GV] = [6, 7, 8, 9, 10, 11, 12, 20, 22];
  const genPtr = [0, G1, G2, G3];
  const b: number[] = [];
  const emit = (...parts: number[][]): void => {
    for (const p of parts) b.push(...p);
  };
  emit(get(0), get(3), [OP.i32Add], set(G1), get(G1), get(3), [OP.i32Add], set(G2), get(G2), get(3), [OP.i32Add], set(G3));
  emit(i32(0), set(J));
  emit([OP.loop, OP.voidBlock]); // over real pairs
  for (let a = 0; a < 8; a++) emit(simd(SIMD.const), new Array<number>(16).fill(0), set(ACC + a));
  emit(get(1), get(3), [OP.i32Add], set(R1), i32(0), set(K));
  emit([OP.loop, OP.voidBlock]); // over k, 2 doubles (16 bytes) per step
  emit(get(1), get(K), [OP.i32Add], simd(SIMD.load), [4, 0], set(RV));
  emit(get(R1), get(K), [OP.i32Add], simd(SIMD.load), [4, 0], set(RV + 1));
  for (let c = 0; c < 4; c++) {
    emit(get(genPtr[c]), get(K), [OP.i32Add], simd(SIMD.load), [4, 0], set(GV));
    for (let q = 0; q < 2; q++) {
      const acc = ACC + c * 2 + q;
      emit(get(acc), get(GV), get(RV + q), simd(SIMD.f64x2Mul), simd(SIMD.f64x2Add), set(acc));
    }
  }
  emit(get(K), i32(16), [OP.i32Add], tee(K), get(4), [OP.i32LtU], [OP.brIf, 0]);
  emit([OP.end]);
  for (let a = 0; a < 8; a++) {
    emit(get(5), get(ACC + a), simd(SIMD.f64x2ExtractLane), [0], get(ACC + a), simd(SIMD.f64x2ExtractLane), [1], [OP.f64Add]);
    emit([OP.f64Store, 3, ...uleb(a * 8)]);
  }
  emit(get(5), i32(64), [OP.i32Add], set(5));
  emit(get(1), get(3), i32(1), [OP.i32Shl], [OP.i32Add], set(1));
  emit(get(J), i32(1), [OP.i32Add], tee(J), get(2), [OP.i32LtU], [OP.brIf, 0]);
  emit([OP.end], [OP.end]);

  const body = [...uleb(2), ...uleb(6), OP.i32, ...uleb(11), OP.v128, ...b];
  const name = (s: string): number[] => [...uleb(s.length), ...Array.from(s, (ch) => ch.charCodeAt(0))];
  const section = (id: number, content: number[]): number[] => [id, ...uleb(content.length), ...content];
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, [1, 0x60, 6, OP.i32, OP.i32, OP.i32, OP.i32, OP.i32, OP.i32, 0]), // type: (i32×6) -> ()
    ...section(2, [1, ...name('env'), ...name('memory'), 0x02, 0x00, ...uleb(1)]), // import env.memory, min 1 page
    ...section(3, [1, 0]), // one function of type 0
    ...section(7, [1, ...name('tile'), 0x00, 0]), // export it as "tile"
    ...section(10, [1, ...uleb(body.length), ...body]),
  ]);
}
