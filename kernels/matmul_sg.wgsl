// matmul_sg.wgsl — the matmul family's kernel for CPU adapters (llvmpipe/lavapipe), f32.
//
// Same math, bindings, epilogue and edge rules as kernels/matmul.wgsl (read its header); this
// file holds one more entry point, compiled only where the 'subgroups' feature exists (the
// `enable subgroups;` below fails to compile elsewhere) and chosen only when the subgroup size
// is exactly 8 (llvmpipe with 256-bit vectors).
//
// Why: llvmpipe runs 8 invocations as one SIMD vector, and on this Mesa every memory load inside
// a loop is a per-lane gather, even when the address is uniform. The cost of a matmul is then
// the number of gathers per FMA. Here each invocation loads ONE element of A per row group
// (lane i loads row m0 + 8g + i) and subgroupBroadcast hands row r's value to all 8 lanes from
// registers, so one gather feeds 8 rows; B is loaded as CN vec4s of the invocation's own columns.
// Per k: RG + 4*CN gathers for 32*RG*CN vector FMAs (RG=2, CN=1: 6 gathers per 64 FMAs).
//
// mm_sg: workgroup (WG_X) invocations along N; the workgroup computes RM = 8*RG rows x
//   4*CN*WG_X columns; invocation x owns columns n0 = (wid.x*WG_X + x)*4*CN .. +4*CN.
//   Batch in workgroup z (P.batch_offset as in matmul.wgsl).
// Bindings (group 0): 0 uniform P, 1 A, 2 B, 3 bias, 4 residual, 5 lr_u, 6 lr_v (read),
//   7 out, 8 pre (write), all array<f32>, layouts as in matmul.wgsl.
// Overrides: TRANS_A, TRANS_B, HAS_BIAS, HAS_RES, STORE_PRE, ACT, LR_RANK, LR_VT (epilogue and
//   low-rank addend, as matmul.wgsl),
//   WG_X (invocations per workgroup, a multiple of 8), RG (row groups of 8, 1..4),
//   CN (vec4 column groups per invocation, 1..4). RG*CN <= 4.

enable subgroups;

override TRANS_A: bool = false;
override TRANS_B: bool = false;
override HAS_BIAS: bool = false;
override HAS_RES: bool = false;
override STORE_PRE: bool = false;
override ACT: u32 = 0u;
override LR_RANK: u32 = 0u;
override LR_VT: bool = false;
override WG_X: u32 = 64u;
override RG: u32 = 2u;
override CN: u32 = 1u;
override RM: u32 = 8u * RG;

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

fn ld_a(i: u32) -> f32 { return A[i]; }
fn ld_b(i: u32) -> f32 { return B[i]; }
fn ld_bias(i: u32) -> f32 { return bias[i]; }
fn ld_res(i: u32) -> f32 { return residual[i]; }
fn ld_lu(i: u32) -> f32 { return lr_u[i]; }
fn ld_lv(i: u32) -> f32 { return lr_v[i]; }
fn st_out(i: u32, v: f32) { out[i] = v; }
fn st_pre(i: u32, v: f32) { pre[i] = v; }
fn ld_out(i: u32) -> f32 { return out[i]; }

// ---- epilogue and indexing (same as matmul.wgsl) ----


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

/// Adds the low-rank addend (LR_RANK > 0) to an RM x (4*CN) register block and writes it at (m0, n0). The raw sums are stored by an unrolled loop;
/// the epilogue then runs in a loop with a runtime trip count over the same outputs, so the
/// activation code exists once per pipeline instead of RM*4 inlined copies (llvmpipe compile
/// time grew ~10x with the unrolled form). The re-read hits the invocation's own fresh writes.
fn store_block(c_base: u32, m0: u32, n0: u32, acc: ptr<function, array<vec4f, 32>>) {
  for (var q = 0u; q < LR_RANK; q++) {
    for (var c = 0u; c < CN; c++) {
      let v4 = lr_v4(q, n0 + 4u * c);
      for (var r = 0u; r < RM; r++) {
        (*acc)[r * CN + c] += lr_u_at(m0 + r, q) * v4;
      }
    }
  }
  for (var r = 0u; r < RM; r++) {
    let m = m0 + r;
    if (m < p.M) {
      for (var c = 0u; c < CN; c++) {
        for (var j = 0u; j < 4u; j++) {
          let n = n0 + 4u * c + j;
          if (n < p.N) {
            st_out(c_base + m * p.N + n, (*acc)[r * CN + c][j]);
          }
        }
      }
    }
  }
  if (HAS_BIAS || HAS_RES || STORE_PRE || ACT != 0u) {
    let rows = min(RM, p.M - min(m0, p.M));
    let cols = min(4u * CN, p.N - min(n0, p.N));
    for (var e = 0u; e < rows * cols; e++) {
      let idx = c_base + (m0 + e / cols) * p.N + n0 + e % cols;
      epilogue(idx, n0 + e % cols, ld_out(idx));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// mm_sg

/// opA(A)[m, k], 0 outside the matrix (index clamped so the load stays in the buffer).
fn a_at(base: u32, m: u32, k: u32, last: u32) -> f32 {
  return select(0.0, ld_a(min(base + a_index(m, k), last)), m < p.M);
}

/// opB(B)[k, n..n+4], 0 outside the matrix.
fn b4_at(base: u32, k: u32, n: u32, last: u32) -> vec4f {
  var v: vec4f;
  for (var j = 0u; j < 4u; j++) {
    v[j] = select(0.0, ld_b(min(base + b_index(k, n + j), last)), n + j < p.N);
  }
  return v;
}

@compute @workgroup_size(WG_X, 1, 1)
fn mm_sg(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
         @builtin(subgroup_invocation_id) lane: u32) {
  let batch = wid.z + p.batch_offset;
  let a_base = batch * p.a_bs;
  let b_base = batch * p.b_bs;
  let m0 = wid.y * RM;
  let n0 = (wid.x * WG_X + lid.x) * 4u * CN;
  let last_a = arrayLength(&A) - 1u;
  let last_b = arrayLength(&B) - 1u;
  var acc: array<vec4f, 32>;
  for (var k = 0u; k < p.K; k++) {
    var b: array<vec4f, 4>;
    for (var c = 0u; c < CN; c++) {
      b[c] = b4_at(b_base, k, n0 + 4u * c, last_b);
    }
    for (var g = 0u; g < RG; g++) {
      let av = a_at(a_base, m0 + 8u * g + lane, k, last_a);
      let r = 8u * g * CN;
      for (var c = 0u; c < CN; c++) {
        acc[r + 0u * CN + c] += subgroupBroadcast(av, 0u) * b[c];
        acc[r + 1u * CN + c] += subgroupBroadcast(av, 1u) * b[c];
        acc[r + 2u * CN + c] += subgroupBroadcast(av, 2u) * b[c];
        acc[r + 3u * CN + c] += subgroupBroadcast(av, 3u) * b[c];
        acc[r + 4u * CN + c] += subgroupBroadcast(av, 4u) * b[c];
        acc[r + 5u * CN + c] += subgroupBroadcast(av, 5u) * b[c];
        acc[r + 6u * CN + c] += subgroupBroadcast(av, 6u) * b[c];
        acc[r + 7u * CN + c] += subgroupBroadcast(av, 7u) * b[c];
      }
    }
  }
  store_block(batch * p.c_bs, m0, n0, &acc);
}
