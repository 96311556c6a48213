// matmul.wgsl — batched matrix product with a fused epilogue, f32 storage and f32 accumulation.
//
// Math (per batch element b, 0 <= m < M, 0 <= n < N):
//   z[b,m,n]   = sum_{k<K} opA(A)[b,m,k] * opB(B)[b,k,n]  + (HAS_BIAS ? bias[n] : 0)
//                + sum_{q<LR_RANK} lr_u[m,q] * V(q,n)      (low-rank addend, LoRA; batch 1)
//   out[b,m,n] = act(z[b,m,n]) + (HAS_RES ? residual[b,m,n] : 0)
//   pre[b,m,n] = z[b,m,n]                       (only when STORE_PRE; kept for act backward)
// with opA(A) = A ([M,K] row-major) or Aᵀ (A stored [K,M]) when TRANS_A,
//      opB(B) = B ([K,N] row-major) or Bᵀ (B stored [N,K]) when TRANS_B,
//      act    = identity (ACT 0), exact erf GELU (ACT 1), quick GELU x·sigmoid(1.702x) (ACT 2),
//      V(q,n) = lr_v[q*N + n] when LR_VT, lr_v[n*LR_RANK + q] otherwise.
// The low-rank addend is how src/ops/lora.ts folds s·(x·Aᵀ)·Bᵀ (forward: U = s·x·Aᵀ, V = B) and
// (s·dz·B)·A (dx: U = s·dz·B, V = A with LR_VT) into the frozen matmul: r more FMAs per output,
// added to the register block before it is stored, with no packed copies of the operands.
//
// Bindings (group 0):
//   0  uniform P { M, N, K, batch_offset, a_bs, b_bs, c_bs, n_elems: u32 }
//   1  A:        array<f32> (read)  batch b starts at b*a_bs (a_bs = 0 broadcasts A)
//   2  B:        array<f32> (read)  batch b starts at b*b_bs (b_bs = 0: shared weight)
//   3  bias:     array<f32> (read)  [N]; any buffer when !HAS_BIAS
//   4  residual: array<f32> (read)  same layout as out; any buffer when !HAS_RES
//   5  lr_u:     array<f32> (read)  [M, LR_RANK] (batch 1 only); any buffer when LR_RANK = 0
//   6  lr_v:     array<f32> (read)  [LR_RANK, N] (LR_VT) or [N, LR_RANK]; any buffer when LR_RANK = 0
//   7  out:      array<f32> (write) [batch, M, N] row-major, batch stride c_bs
//   8  pre:      array<f32> (write) like out; a 4-byte dummy when !STORE_PRE
//
// Entry points (all share the epilogue):
//   mm_tiled   workgroup-tiled for GPUs. Workgroup (WG_X, WG_Y) = (TILE_N/4, TILE_M/RM) computes a
//              TILE_M x TILE_N tile; slabs of TILE_K are staged k-major in workgroup memory
//              (As[k][m], Bs[k][n], vec4 rows) with coalesced loads for every layout; each thread
//              keeps an RM x 4 register block (RM = 4 or 8; rows ty*RM.., columns tx*4..).
//   mm_tiled_v4 mm_tiled with four-element global loads while staging (bindings 1 and 2 read as
//              vec4 arrays A4/B4); only when each operand's contiguous dimension (A: K, or M with
//              TRANS_A; B: N, or K with TRANS_B) is a multiple of 4 (the host checks).
//   mm_direct  no workgroup memory, for CPU adapters (llvmpipe/lavapipe run 8 invocations as one
//              SIMD vector): a workgroup of WG_X invocations computes RM rows x (4*WG_X) columns;
//              the A operands of a row block are workgroup-uniform (scalar loads + broadcast) and
//              each invocation loads one vec4 of B per k. No barriers, the CPU cache does the tiling.
//   act_grad   dz[i] = dy[i] * act'(pre[i])                 (bindings 1 = dy, 2 = pre, 3 = dz)
//   bias_grad  db[n] = sum_{r<rows} dz[r, n]                (bindings 1 = dz, 2 = db); P.M = rows
// Dispatch: mm_* use workgroup z for the batch (chunks of <= 65535, P.batch_offset = chunk start);
//   act_grad is 1-D folded into y (i = gid.x + gid.y * nwg.x * 256); bias_grad 1-D over N.
//
// Edges: any M, N, K. Out-of-range operands read as 0 (index clamped, value selected away);
//   out-of-range outputs are not written. Workgroup-uniform full-tile checks keep the common
//   interior path free of per-element masks where the layout allows.
//
// erf: |x| < 1 uses the Maclaurin series to x^21 (truncation < 1.3e-9); |x| >= 1 uses
//   Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7). Max abs error about 1.5e-7 in f32.
//
// Overrides: TRANS_A, TRANS_B, HAS_BIAS, HAS_RES, STORE_PRE (bool), ACT (u32 0/1/2),
//   LR_RANK (u32, 0 = no low-rank addend), LR_VT (bool, layout of lr_v), TILE_M, TILE_N, TILE_K (mm_tiled tile), WG_X, WG_Y (workgroup size), RM (rows per
//   invocation: 4 or 8 in mm_tiled, 1..16 in mm_direct).

override TRANS_A: bool = false;
override TRANS_B: bool = false;
override HAS_BIAS: bool = false;
override HAS_RES: bool = false;
override STORE_PRE: bool = false;
override ACT: u32 = 0u;
override LR_RANK: u32 = 0u;
override LR_VT: bool = false;
override TILE_M: u32 = 64u;
override TILE_N: u32 = 64u;
override TILE_K: u32 = 16u;
override WG_X: u32 = 16u;
override WG_Y: u32 = 16u;
override RM: u32 = 4u;

struct P {
  M: u32,
  N: u32,
  K: u32,
  batch_offset: u32,
  a_bs: u32,
  b_bs: u32,
  c_bs: u32,
  n_elems: u32,
}

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read> B: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> residual: array<f32>;
@group(0) @binding(5) var<storage, read> lr_u: array<f32>;
@group(0) @binding(6) var<storage, read> lr_v: array<f32>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;
@group(0) @binding(8) var<storage, read_write> pre: array<f32>;
// Backward helpers' bindings (other entry points; see the header).
@group(0) @binding(1) var<storage, read> g_in: array<f32>;
@group(0) @binding(2) var<storage, read> g_pre: array<f32>;
@group(0) @binding(3) var<storage, read_write> g_out: array<f32>;
@group(0) @binding(2) var<storage, read_write> db_out: array<f32>;
// mm_tiled_v4's views of A and B, four elements per load (only that entry point uses them).
@group(0) @binding(1) var<storage, read> A4: array<vec4f>;
@group(0) @binding(2) var<storage, read> B4: array<vec4f>;

// Typed access (the f16 file converts here; everything below the marker is shared verbatim).
fn ld_a(i: u32) -> f32 { return A[i]; }
fn ld_b(i: u32) -> f32 { return B[i]; }
fn ld_bias(i: u32) -> f32 { return bias[i]; }
fn ld_res(i: u32) -> f32 { return residual[i]; }
fn ld_lu(i: u32) -> f32 { return lr_u[i]; }
fn ld_lv(i: u32) -> f32 { return lr_v[i]; }
fn st_out(i: u32, v: f32) { out[i] = v; }
fn st_pre(i: u32, v: f32) { pre[i] = v; }
fn ld_out(i: u32) -> f32 { return out[i]; }
fn ld_g(i: u32) -> f32 { return g_in[i]; }
fn ld_gpre(i: u32) -> f32 { return g_pre[i]; }
fn st_g(i: u32, v: f32) { g_out[i] = v; }
fn st_db(i: u32, v: f32) { db_out[i] = v; }
fn ld_a4(i: u32) -> vec4f { return A4[i]; }
fn ld_b4(i: u32) -> vec4f { return B4[i]; }
fn a4_len() -> u32 { return arrayLength(&A4); }
fn b4_len() -> u32 { return arrayLength(&B4); }

// ---- shared body: identical in matmul.wgsl and matmul_f16.wgsl (a test checks) ----

const INV_SQRT2: f32 = 0.70710678118654752;
const INV_SQRT_2PI: f32 = 0.39894228040143268;

fn erf_approx(x: f32) -> f32 {
  let ax = abs(x);
  if (ax < 1.0) {
    // 2/sqrt(pi) * sum_n (-1)^n x^(2n+1) / (n! (2n+1)), n = 0..10, Horner in x^2.
    let z = x * x;
    var s = 1.48071928e-8;       // n = 10
    s = s * z - 1.63658447e-7;   // n = 9
    s = s * z + 1.64621144e-6;   // n = 8
    s = s * z - 1.49256504e-5;   // n = 7
    s = s * z + 1.20553330e-4;   // n = 6
    s = s * z - 8.54832702e-4;   // n = 5
    s = s * z + 5.22397763e-3;   // n = 4
    s = s * z - 2.68661706e-2;   // n = 3
    s = s * z + 1.12837917e-1;   // n = 2
    s = s * z - 3.76126389e-1;   // n = 1
    s = s * z + 1.12837917;      // n = 0
    return x * s;
  }
  let t = 1.0 / (1.0 + 0.3275911 * ax);
  let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  return sign(x) * (1.0 - poly * exp(-ax * ax));
}

fn act_fwd(z: f32) -> f32 {
  if (ACT == 1u) {
    return 0.5 * z * (1.0 + erf_approx(z * INV_SQRT2));
  }
  if (ACT == 2u) {
    return z / (1.0 + exp(-1.702 * z));
  }
  return z;
}

fn act_deriv(z: f32) -> f32 {
  if (ACT == 1u) {
    return 0.5 * (1.0 + erf_approx(z * INV_SQRT2)) + z * INV_SQRT_2PI * exp(-0.5 * z * z);
  }
  if (ACT == 2u) {
    let s = 1.0 / (1.0 + exp(-1.702 * z));
    return s + 1.702 * z * s * (1.0 - s);
  }
  return 1.0;
}

/// Bias, pre-activation store, activation, residual, store. `idx` is the flat output index.
fn epilogue(idx: u32, n: u32, v: f32) {
  var z = v;
  if (HAS_BIAS) {
    z += ld_bias(n);
  }
  if (STORE_PRE) {
    st_pre(idx, z);
  }
  var y = act_fwd(z);
  if (HAS_RES) {
    y += ld_res(idx);
  }
  st_out(idx, y);
}

/// U[m, q] of the low-rank addend, the row clamped into the matrix (edge lanes are never stored).
fn lr_u_at(m: u32, q: u32) -> f32 {
  return ld_lu(min(m, p.M - 1u) * LR_RANK + q);
}

/// V(q, n) of the low-rank addend, the column clamped into the matrix.
fn lr_v_at(q: u32, n: u32) -> f32 {
  let nc = min(n, p.N - 1u);
  if (LR_VT) {
    return ld_lv(q * p.N + nc);
  }
  return ld_lv(nc * LR_RANK + q);
}

/// V(q, n..n+3).
fn lr_v4(q: u32, n: u32) -> vec4f {
  return vec4f(lr_v_at(q, n), lr_v_at(q, n + 1u), lr_v_at(q, n + 2u), lr_v_at(q, n + 3u));
}

/// The whole low-rank addend at one output (0 when LR_RANK = 0).
fn lr_dot(m: u32, n: u32) -> f32 {
  var s = 0.0;
  for (var q = 0u; q < LR_RANK; q++) {
    s += lr_u_at(m, q) * lr_v_at(q, n);
  }
  return s;
}

/// Flat index of opA(A)[m, k] within a batch (no bounds check).
fn a_index(m: u32, k: u32) -> u32 {
  if (TRANS_A) {
    return k * p.M + m;
  }
  return m * p.K + k;
}

/// Flat index of opB(B)[k, n] within a batch (no bounds check).
fn b_index(k: u32, n: u32) -> u32 {
  if (TRANS_B) {
    return n * p.K + k;
  }
  return k * p.N + n;
}

/// Adds the low-rank addend (LR_RANK > 0) to an RM x 4 register block and writes it at (m0, n0). The raw sums are stored by an unrolled loop;
/// the epilogue then runs in a loop with a runtime trip count over the same outputs, so the
/// activation code exists once per pipeline instead of RM*4 inlined copies (llvmpipe compile
/// time grew ~10x with the unrolled form). The re-read hits the invocation's own fresh writes.
fn store_block(c_base: u32, m0: u32, n0: u32, acc: ptr<function, array<vec4f, 16>>) {
  for (var q = 0u; q < LR_RANK; q++) {
    let v4 = lr_v4(q, n0);
    for (var r = 0u; r < RM; r++) {
      (*acc)[r] += lr_u_at(m0 + r, q) * v4;
    }
  }
  for (var r = 0u; r < RM; r++) {
    let m = m0 + r;
    if (m < p.M) {
      for (var j = 0u; j < 4u; j++) {
        if (n0 + j < p.N) {
          st_out(c_base + m * p.N + n0 + j, (*acc)[r][j]);
        }
      }
    }
  }
  if (HAS_BIAS || HAS_RES || STORE_PRE || ACT != 0u) {
    let rows = min(RM, p.M - min(m0, p.M));
    let cols = min(4u, p.N - min(n0, p.N));
    for (var e = 0u; e < rows * cols; e++) {
      let idx = c_base + (m0 + e / cols) * p.N + n0 + e % cols;
      epilogue(idx, n0 + e % cols, ld_out(idx));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// mm_tiled

var<workgroup> As: array<vec4f, TILE_K * TILE_M / 4u>;
var<workgroup> Bs: array<vec4f, TILE_K * TILE_N / 4u>;

/// The staged slabs' product into this invocation's RM x 4 block (mm_tiled and mm_tiled_v4).
/// RM (4 or 8) rows = RM/4 vec4 chunks of the As row. Every acc index is a constant (no loop
/// over chunks), so the block can stay in registers once inlined (store_block takes the same
/// pointer): indexing it with a loop variable can put the whole array in local memory on GPU
/// compilers that do not unroll (suspected cause of RM = 8 running at ~2 TFLOP/s on an H200).
fn slab_product(lid: vec3u, acc: ptr<function, array<vec4f, 16>>) {
  for (var kk = 0u; kk < TILE_K; kk++) {
    let b4 = Bs[kk * (TILE_N / 4u) + lid.x];
    let a_row = (kk * TILE_M + lid.y * RM) / 4u;
    let a4 = As[a_row];
    (*acc)[0] += a4.x * b4;
    (*acc)[1] += a4.y * b4;
    (*acc)[2] += a4.z * b4;
    (*acc)[3] += a4.w * b4;
    if (RM == 8u) {
      let a4h = As[a_row + 1u];
      (*acc)[4] += a4h.x * b4;
      (*acc)[5] += a4h.y * b4;
      (*acc)[6] += a4h.z * b4;
      (*acc)[7] += a4h.w * b4;
    }
  }
}

@compute @workgroup_size(WG_X, WG_Y, 1)
fn mm_tiled(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
            @builtin(local_invocation_index) lidx: u32) {
  let batch = wid.z + p.batch_offset;
  let a_base = batch * p.a_bs;
  let b_base = batch * p.b_bs;
  let tile_m0 = wid.y * TILE_M;
  let tile_n0 = wid.x * TILE_N;
  let nthreads = WG_X * WG_Y;
  let a_elems = TILE_M * TILE_K;
  let b_elems = TILE_K * TILE_N;
  var acc: array<vec4f, 16>;
  for (var r = 0u; r < RM; r++) {
    acc[r] = vec4f(0.0);
  }
  let last_a = arrayLength(&A) - 1u;
  let last_b = arrayLength(&B) - 1u;
  for (var k0 = 0u; k0 < p.K; k0 += TILE_K) {
    // Stage opA(A)[tile_m0.., k0..] as As[k][m], reading along A's contiguous dimension.
    for (var t = lidx; t < a_elems; t += nthreads) {
      var mm: u32;
      var kk: u32;
      if (TRANS_A) {
        mm = t % TILE_M;
        kk = t / TILE_M;
      } else {
        kk = t % TILE_K;
        mm = t / TILE_K;
      }
      let m = tile_m0 + mm;
      let k = k0 + kk;
      let ok = m < p.M && k < p.K;
      let v = ld_a(min(a_base + a_index(m, k), last_a));
      let slot = kk * TILE_M + mm;
      As[slot / 4u][slot % 4u] = select(0.0, v, ok);
    }
    // Stage opB(B)[k0.., tile_n0..] as Bs[k][n].
    for (var t = lidx; t < b_elems; t += nthreads) {
      var nn: u32;
      var kk: u32;
      if (TRANS_B) {
        kk = t % TILE_K;
        nn = t / TILE_K;
      } else {
        nn = t % TILE_N;
        kk = t / TILE_N;
      }
      let n = tile_n0 + nn;
      let k = k0 + kk;
      let ok = n < p.N && k < p.K;
      let v = ld_b(min(b_base + b_index(k, n), last_b));
      let slot = kk * TILE_N + nn;
      Bs[slot / 4u][slot % 4u] = select(0.0, v, ok);
    }
    workgroupBarrier();
    slab_product(lid, &acc);
    workgroupBarrier();
  }
  store_block(batch * p.c_bs, tile_m0 + lid.y * RM, tile_n0 + lid.x * 4u, &acc);
}

// ---------------------------------------------------------------------------------------------
// mm_tiled_v4: mm_tiled with four-element global loads in the staging. Needs the contiguous
// dimension of each operand to be a multiple of 4 (A: K, or M with TRANS_A; B: N, or K with
// TRANS_B; the host falls back to mm_tiled otherwise), so a vec4 is either wholly inside the
// matrix or wholly outside it. Same tiles, same workgroup layout, same register block.

@compute @workgroup_size(WG_X, WG_Y, 1)
fn mm_tiled_v4(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
               @builtin(local_invocation_index) lidx: u32) {
  let batch = wid.z + p.batch_offset;
  let a_base = batch * p.a_bs;
  let b_base = batch * p.b_bs;
  let tile_m0 = wid.y * TILE_M;
  let tile_n0 = wid.x * TILE_N;
  let nthreads = WG_X * WG_Y;
  var acc: array<vec4f, 16>;
  for (var r = 0u; r < RM; r++) {
    acc[r] = vec4f(0.0);
  }
  let last_a4 = a4_len() - 1u;
  let last_b4 = b4_len() - 1u;
  for (var k0 = 0u; k0 < p.K; k0 += TILE_K) {
    // Stage opA(A)[tile_m0.., k0..] as As[k][m]: TILE_M * TILE_K / 4 vec4 loads.
    for (var t = lidx; t < TILE_M * TILE_K / 4u; t += nthreads) {
      if (TRANS_A) {
        // A stored [K, M]: four consecutive m of one k, stored as one As vec4.
        let mm4 = t % (TILE_M / 4u);
        let kk = t / (TILE_M / 4u);
        let m = tile_m0 + 4u * mm4;
        let k = k0 + kk;
        let v = ld_a4(min((a_base + k * p.M + m) / 4u, last_a4));
        As[(kk * TILE_M) / 4u + mm4] = select(vec4f(0.0), v, m < p.M && k < p.K);
      } else {
        // A stored [M, K]: four consecutive k of one m, one As component in each of 4 rows.
        let kk4 = t % (TILE_K / 4u);
        let mm = t / (TILE_K / 4u);
        let m = tile_m0 + mm;
        let k = k0 + 4u * kk4;
        let v = select(vec4f(0.0), ld_a4(min((a_base + m * p.K + k) / 4u, last_a4)), m < p.M && k < p.K);
        let row = 4u * kk4 * (TILE_M / 4u) + mm / 4u;
        As[row][mm % 4u] = v.x;
        As[row + TILE_M / 4u][mm % 4u] = v.y;
        As[row + 2u * (TILE_M / 4u)][mm % 4u] = v.z;
        As[row + 3u * (TILE_M / 4u)][mm % 4u] = v.w;
      }
    }
    // Stage opB(B)[k0.., tile_n0..] as Bs[k][n].
    for (var t = lidx; t < TILE_K * TILE_N / 4u; t += nthreads) {
      if (TRANS_B) {
        // B stored [N, K]: four consecutive k of one n.
        let kk4 = t % (TILE_K / 4u);
        let nn = t / (TILE_K / 4u);
        let n = tile_n0 + nn;
        let k = k0 + 4u * kk4;
        let v = select(vec4f(0.0), ld_b4(min((b_base + n * p.K + k) / 4u, last_b4)), n < p.N && k < p.K);
        let row = 4u * kk4 * (TILE_N / 4u) + nn / 4u;
        Bs[row][nn % 4u] = v.x;
        Bs[row + TILE_N / 4u][nn % 4u] = v.y;
        Bs[row + 2u * (TILE_N / 4u)][nn % 4u] = v.z;
        Bs[row + 3u * (TILE_N / 4u)][nn % 4u] = v.w;
      } else {
        // B stored [K, N]: four consecutive n of one k, stored as one Bs vec4.
        let nn4 = t % (TILE_N / 4u);
        let kk = t / (TILE_N / 4u);
        let n = tile_n0 + 4u * nn4;
        let k = k0 + kk;
        let v = ld_b4(min((b_base + k * p.N + n) / 4u, last_b4));
        Bs[kk * (TILE_N / 4u) + nn4] = select(vec4f(0.0), v, n < p.N && k < p.K);
      }
    }
    workgroupBarrier();
    slab_product(lid, &acc);
    workgroupBarrier();
  }
  store_block(batch * p.c_bs, tile_m0 + lid.y * RM, tile_n0 + lid.x * 4u, &acc);
}

// ---------------------------------------------------------------------------------------------
// mm_direct

@compute @workgroup_size(WG_X, 1, 1)
fn mm_direct(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let batch = wid.z + p.batch_offset;
  let a_base = batch * p.a_bs;
  let b_base = batch * p.b_bs;
  let m0 = wid.y * RM;
  let n0 = (wid.x * WG_X + lid.x) * 4u;
  // Workgroup-uniform: every row and every column of this workgroup is in range.
  let full = m0 + RM <= p.M && (wid.x + 1u) * WG_X * 4u <= p.N;
  var acc: array<vec4f, 16>;
  for (var r = 0u; r < RM; r++) {
    acc[r] = vec4f(0.0);
  }
  if (full) {
    for (var k = 0u; k < p.K; k++) {
      var b4: vec4f;
      if (TRANS_B) {
        let bi = b_base + n0 * p.K + k;
        b4 = vec4f(ld_b(bi), ld_b(bi + p.K), ld_b(bi + 2u * p.K), ld_b(bi + 3u * p.K));
      } else {
        let bi = b_base + k * p.N + n0;
        b4 = vec4f(ld_b(bi), ld_b(bi + 1u), ld_b(bi + 2u), ld_b(bi + 3u));
      }
      for (var r = 0u; r < RM; r++) {
        acc[r] += ld_a(a_base + a_index(m0 + r, k)) * b4;
      }
    }
  } else {
    let last_a = arrayLength(&A) - 1u;
    let last_b = arrayLength(&B) - 1u;
    for (var k = 0u; k < p.K; k++) {
      var b4: vec4f;
      for (var j = 0u; j < 4u; j++) {
        let n = n0 + j;
        b4[j] = select(0.0, ld_b(min(b_base + b_index(k, n), last_b)), n < p.N);
      }
      for (var r = 0u; r < RM; r++) {
        let m = m0 + r;
        acc[r] += select(0.0, ld_a(min(a_base + a_index(m, k), last_a)), m < p.M) * b4;
      }
    }
  }
  store_block(batch * p.c_bs, m0, n0, &acc);
}

// ---------------------------------------------------------------------------------------------
// Backward helpers (bindings differ: see the header).

@compute @workgroup_size(256)
fn act_grad(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n_elems) {
    return;
  }
  st_g(i, ld_g(i) * act_deriv(ld_gpre(i)));
}

@compute @workgroup_size(64)
fn bias_grad(@builtin(global_invocation_id) gid: vec3u) {
  let n = gid.x;
  if (n >= p.N) {
    return;
  }
  var s = 0.0;
  for (var r = 0u; r < p.M; r++) {
    s += ld_g(r * p.N + n);
  }
  st_db(n, s);
}
