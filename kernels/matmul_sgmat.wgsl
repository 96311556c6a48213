// matmul_sgmat.wgsl — matmul on subgroup matrices (tensor cores / simdgroup matrices) through
// Chromium's experimental WGSL extension chromium_experimental_subgroup_matrix.
//
// This file is not compiled on its own: src/ops/matmul-select.ts (ensureSgmatSource) prepends a
// prelude per device config, because matrix types need const-expression sizes:
//     enable chromium_experimental_subgroup_matrix; enable subgroups; [enable f16;]
//     diagnostic(off, chromium_experimental.subgroup_matrix_uniformity);
//     alias CT = f16|f32;  alias RT = f16|f32;          (component / result type)
//     const SG_M, SG_N, SG_K: u32                        (GPUSubgroupMatrixConfig M, N, K)
// The variant is chosen only when the adapter lists that config and its subgroup size is fixed
// (subgroupMinSize == subgroupMaxSize == SG_SIZE), e.g. NVIDIA 16x16x16 f16->f32, size 32.
//
// Math, epilogue and edge rules: as kernels/matmul.wgsl (z = op(A)·op(B) + bias, act, residual,
// pre). Storage element type is CT for every binding (the tensors' dtype equals the config's
// component type); accumulation is in RT (f32 where the device offers it).
//
// Tiling: workgroup = 4 subgroups (4*SG_SIZE invocations) in a 2x2 grid; each subgroup owns a
//   2x2 block of SG_M x SG_N result matrices, so the workgroup tile is TM x TN = 4*SG_M x 4*SG_N
//   (64x64 for 16x16x16). K advances in slabs of TK = 2*SG_K staged in workgroup memory:
//     As[m][k] (row-major, stride TK), Bs[k][n] (row-major, stride TN), converted to CT and
//     zero-filled outside the matrices so any M, N, K works; the loads read along each operand's
//     contiguous dimension for every layout (TRANS_A / TRANS_B).
//   Results go through Cs[m][n] (RT, stride TN) in workgroup memory for the bounds-checked
//   epilogue (the subgroup-matrix store itself cannot clip edges).
// Builtins (new-style signatures of this Dawn):
//   subgroupMatrixLoad<subgroup_matrix_left<CT, SG_K, SG_M>, row_major>(&As, offset, stride)
//   subgroupMatrixLoad<subgroup_matrix_right<CT, SG_N, SG_K>, row_major>(&Bs, offset, stride)
//   subgroupMatrixMultiplyAccumulate(left, right, acc) -> subgroup_matrix_result<RT, SG_N, SG_M>
//   subgroupMatrixStore<row_major>(&Cs, offset, value, stride)
// The subgroup index comes from @builtin(subgroup_id) (the extension's builtin): Tint treats it as
// subgroup-uniform, which the matrix load/store offsets must be (an index computed as
// local_invocation_index / subgroup_size is rejected: "requires argument 1 to be uniform"). The
// offsets are still not workgroup-uniform, hence `diagnostic(off, chromium_experimental.subgroup_matrix_uniformity);`
// in the prelude (a directive must precede the prelude's declarations).
//
// Bindings (group 0): 0 uniform P (as matmul.wgsl), 1 A, 2 B, 3 bias, 4 residual, 5 lr_u,
//   6 lr_v (read), 7 out, 8 pre (write); all array<CT>. The low-rank addend (LR_RANK > 0) is
//   added per output in the epilogue loop (lr_dot).
// Dispatch: [ceil(N/TN), ceil(M/TM), batch chunk] (batch in z as in matmul.wgsl).
// Overrides: TRANS_A, TRANS_B, HAS_BIAS, HAS_RES, STORE_PRE, ACT (as matmul.wgsl), SG_SIZE
//   (the device's subgroup size; workgroup = 4*SG_SIZE), LR_RANK, LR_VT (as matmul.wgsl).

override TRANS_A: bool = false;
override TRANS_B: bool = false;
override HAS_BIAS: bool = false;
override HAS_RES: bool = false;
override STORE_PRE: bool = false;
override ACT: u32 = 0u;
override LR_RANK: u32 = 0u;
override LR_VT: bool = false;
override SG_SIZE: u32 = 32u;

const TM: u32 = 4u * SG_M;
const TN: u32 = 4u * SG_N;
const TK: u32 = 2u * SG_K;

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
@group(0) @binding(1) var<storage, read> A: array<CT>;
@group(0) @binding(2) var<storage, read> B: array<CT>;
@group(0) @binding(3) var<storage, read> bias: array<CT>;
@group(0) @binding(4) var<storage, read> residual: array<CT>;
@group(0) @binding(5) var<storage, read> lr_u: array<CT>;
@group(0) @binding(6) var<storage, read> lr_v: array<CT>;
@group(0) @binding(7) var<storage, read_write> out: array<CT>;
@group(0) @binding(8) var<storage, read_write> pre: array<CT>;

fn ld_bias(i: u32) -> f32 { return f32(bias[i]); }
fn ld_res(i: u32) -> f32 { return f32(residual[i]); }
fn ld_lu(i: u32) -> f32 { return f32(lr_u[i]); }
fn ld_lv(i: u32) -> f32 { return f32(lr_v[i]); }
fn st_out(i: u32, v: f32) { out[i] = CT(v); }
fn st_pre(i: u32, v: f32) { pre[i] = CT(v); }

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

// ---------------------------------------------------------------------------------------------
// mm_sgmat

var<workgroup> As: array<CT, TM * TK>;
var<workgroup> Bs: array<CT, TK * TN>;
var<workgroup> Cs: array<RT, TM * TN>;

@compute @workgroup_size(4u * SG_SIZE, 1, 1)
fn mm_sgmat(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lidx: u32,
            @builtin(subgroup_id) sg: u32) {
  let batch = wid.z + p.batch_offset;
  let a_base = batch * p.a_bs;
  let b_base = batch * p.b_bs;
  let tile_m0 = wid.y * TM;
  let tile_n0 = wid.x * TN;
  let nthreads = 4u * SG_SIZE;
  let sub_m = (sg / 2u) * 2u * SG_M;   // this subgroup's first row in the tile
  let sub_n = (sg % 2u) * 2u * SG_N;   // and first column
  let last_a = arrayLength(&A) - 1u;
  let last_b = arrayLength(&B) - 1u;
  var acc: array<subgroup_matrix_result<RT, SG_N, SG_M>, 4>;
  for (var k0 = 0u; k0 < p.K; k0 += TK) {
    for (var t = lidx; t < TM * TK; t += nthreads) {
      var mm: u32;
      var kk: u32;
      if (TRANS_A) {
        mm = t % TM;
        kk = t / TM;
      } else {
        kk = t % TK;
        mm = t / TK;
      }
      let m = tile_m0 + mm;
      let k = k0 + kk;
      let v = A[min(a_base + a_index(m, k), last_a)];
      As[mm * TK + kk] = select(CT(0), v, m < p.M && k < p.K);
    }
    for (var t = lidx; t < TK * TN; t += nthreads) {
      var nn: u32;
      var kk: u32;
      if (TRANS_B) {
        kk = t % TK;
        nn = t / TK;
      } else {
        nn = t % TN;
        kk = t / TN;
      }
      let n = tile_n0 + nn;
      let k = k0 + kk;
      let v = B[min(b_base + b_index(k, n), last_b)];
      Bs[kk * TN + nn] = select(CT(0), v, n < p.N && k < p.K);
    }
    workgroupBarrier();
    for (var kk = 0u; kk < TK; kk += SG_K) {
      let a0 = subgroupMatrixLoad<subgroup_matrix_left<CT, SG_K, SG_M>, row_major>(&As, sub_m * TK + kk, TK);
      let a1 = subgroupMatrixLoad<subgroup_matrix_left<CT, SG_K, SG_M>, row_major>(&As, (sub_m + SG_M) * TK + kk, TK);
      let b0 = subgroupMatrixLoad<subgroup_matrix_right<CT, SG_N, SG_K>, row_major>(&Bs, kk * TN + sub_n, TN);
      let b1 = subgroupMatrixLoad<subgroup_matrix_right<CT, SG_N, SG_K>, row_major>(&Bs, kk * TN + sub_n + SG_N, TN);
      acc[0] = subgroupMatrixMultiplyAccumulate(a0, b0, acc[0]);
      acc[1] = subgroupMatrixMultiplyAccumulate(a0, b1, acc[1]);
      acc[2] = subgroupMatrixMultiplyAccumulate(a1, b0, acc[2]);
      acc[3] = subgroupMatrixMultiplyAccumulate(a1, b1, acc[3]);
    }
    workgroupBarrier();
  }
  subgroupMatrixStore<row_major>(&Cs, sub_m * TN + sub_n, acc[0], TN);
  subgroupMatrixStore<row_major>(&Cs, sub_m * TN + sub_n + SG_N, acc[1], TN);
  subgroupMatrixStore<row_major>(&Cs, (sub_m + SG_M) * TN + sub_n, acc[2], TN);
  subgroupMatrixStore<row_major>(&Cs, (sub_m + SG_M) * TN + sub_n + SG_N, acc[3], TN);
  workgroupBarrier();
  let c_base = batch * p.c_bs;
  for (var e = lidx; e < TM * TN; e += nthreads) {
    let m = tile_m0 + e / TN;
    let n = tile_n0 + e % TN;
    if (m < p.M && n < p.N) {
      epilogue(c_base + m * p.N + n, n, f32(Cs[e]) + lr_dot(m, n));
    }
  }
}
