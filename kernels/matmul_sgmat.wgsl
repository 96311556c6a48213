// matmul_sgmat.wgsl — matmul on subgroup matrices (tensor cores / simdgroup matrices) through
// Chromium's experimental WGSL extension chromium_experimental_subgroup_matrix.
// uses: lib/matmul_io, lib/matmul_vec4, lib/matmul_epilogue
// dtypes: f32, f16
// accumulators: f32, f16
// consts: SG_M, SG_N, SG_K
//
// One kernel per device config (src/ops/matmul-select.ts sgmatVariant): matrix types need
// const-expression sizes, so the config's M, N, K come in as the consts SG_M, SG_N, SG_K of the
// prelude; its component type is the storage type T and its result type the accumulation type
// Acc (f32 where the device offers it). The variant is chosen only when the adapter lists that
// config and its subgroup size is fixed (subgroupMinSize == subgroupMaxSize == SG_SIZE), e.g.
// NVIDIA 16x16x16 f16->f32, size 32.
//
// Math, epilogue and edge rules: as kernels/matmul.wgsl (lib/matmul_epilogue: z = op(A)·op(B) +
// bias, act, residual, pre); the epilogue computes in f32 whatever Acc is. Operands are read as
// vec4 (lib/matmul_vec4: contiguous dimensions multiples of 4; the host runs the variant's
// vec4Fallback elsewhere).
//
// Tiling: a workgroup is WG_SM x WG_SN subgroups (WG_SM*WG_SN*SG_SIZE invocations); each subgroup
//   owns a block of 4 x 2 result matrices (4*SG_M rows x 2*SG_N columns, held in 8 accumulator
//   matrices with constant indices), so the workgroup tile is TM x TN = WG_SM*4*SG_M x
//   WG_SN*2*SG_N (128 x 128 for 16x16x16 and the default 2 x 4 subgroups). Per SG_K step a
//   subgroup loads 4 left and 2 right matrices for 8 multiply-accumulates.
//   K advances in slabs of TK = KSTEPS*SG_K staged in workgroup memory in T, row-major:
//     As[m][k] (stride TK), Bs[k][n] (stride TN),
//   in two buffers: the next slab's vec4 global loads go to registers while the current slab is
//   multiplied, then to the other buffer, with one barrier per slab. Whole tiles inside the
//   matrices (K a multiple of TK included) load without clamps or masks.
//   Results: each subgroup stores one result matrix at a time to its own SG_M x SG_N slot of Cs
//   (Acc) in workgroup memory, and its lanes run the bounds-checked epilogue on it (the matrix
//   store itself cannot clip edges or apply the epilogue).
// Builtins (new-style signatures of this Dawn):
//   subgroupMatrixLoad<subgroup_matrix_left<T, SG_K, SG_M>, row_major>(&As, offset, stride)
//   subgroupMatrixLoad<subgroup_matrix_right<T, SG_N, SG_K>, row_major>(&Bs, offset, stride)
//   subgroupMatrixMultiplyAccumulate(left, right, acc) -> subgroup_matrix_result<Acc, SG_N, SG_M>
//   subgroupMatrixStore<row_major>(&Cs, offset, value, stride)
// The subgroup index comes from @builtin(subgroup_id) (the extension's builtin): Tint treats it as
// subgroup-uniform, which the matrix load/store offsets must be (an index computed as
// local_invocation_index / subgroup_size is rejected: "requires argument 1 to be uniform"). The
// offsets are still not workgroup-uniform, hence `diagnostic(off, chromium_experimental.subgroup_matrix_uniformity);`
// below (the assembler moves directives to the top of the kernel).
//
// Bindings: those of lib/matmul_io, operands through lib/matmul_vec4's A4 / B4. The low-rank
//   addend (LR_RANK > 0) is added per output in the epilogue loop (lr_dot).
// Dispatch: [ceil(N/TN), ceil(M/TM), batch chunk] (batch in z as in matmul.wgsl).
// Overrides: those of lib/matmul_io and lib/matmul_epilogue, SG_SIZE (the device's subgroup
//   size), WG_SM, WG_SN (subgroups along M and N), KSTEPS (SG_K steps per slab). The host's
//   variant table keeps A_LOADS and B_LOADS (vec4 loads per invocation and slab) whole and <= 8.

enable chromium_experimental_subgroup_matrix;
enable subgroups;
diagnostic(off, chromium_experimental.subgroup_matrix_uniformity);

override SG_SIZE: u32 = 32u;
override WG_SM: u32 = 2u;
override WG_SN: u32 = 4u;
override KSTEPS: u32 = 2u;
override TM: u32 = WG_SM * 4u * SG_M;
override TN: u32 = WG_SN * 2u * SG_N;
override TK: u32 = KSTEPS * SG_K;
override NTHREADS: u32 = WG_SM * WG_SN * SG_SIZE;
override A_LOADS: u32 = TM * TK / (4u * NTHREADS);
override B_LOADS: u32 = TK * TN / (4u * NTHREADS);
const MAX_LOADS: u32 = 8u;

var<workgroup> As: array<T, 2u * TM * TK>;
var<workgroup> Bs: array<T, 2u * TK * TN>;
var<workgroup> Cs: array<Acc, WG_SM * WG_SN * SG_M * SG_N>;

/// Vec4 `v` of the A slab (a4_coord c) into buffer `buf` of As[m][k].
fn put_a(buf: u32, c: vec2u, v: vec4f) {
  let o = buf * TM * TK + c.x * TK + c.y;
  if (TRANS_A) {
    As[o] = T(v.x);
    As[o + TK] = T(v.y);
    As[o + 2u * TK] = T(v.z);
    As[o + 3u * TK] = T(v.w);
  } else {
    As[o] = T(v.x);
    As[o + 1u] = T(v.y);
    As[o + 2u] = T(v.z);
    As[o + 3u] = T(v.w);
  }
}

/// Vec4 `v` of the B slab (b4_coord c) into buffer `buf` of Bs[k][n].
fn put_b(buf: u32, c: vec2u, v: vec4f) {
  let o = buf * TK * TN + c.x * TN + c.y;
  if (TRANS_B) {
    Bs[o] = T(v.x);
    Bs[o + TN] = T(v.y);
    Bs[o + 2u * TN] = T(v.z);
    Bs[o + 3u * TN] = T(v.w);
  } else {
    Bs[o] = T(v.x);
    Bs[o + 1u] = T(v.y);
    Bs[o + 2u] = T(v.z);
    Bs[o + 3u] = T(v.w);
  }
}

/// The epilogue of the result matrix the subgroup just stored to its Cs slot `cs`, whose first
/// output is (row0, col0) of the batch element at `c_base`; lane `lane` takes every SG_SIZE-th.
fn flush(c_base: u32, cs: u32, row0: u32, col0: u32, lane: u32) {
  for (var e = lane; e < SG_M * SG_N; e += SG_SIZE) {
    let m = row0 + e / SG_N;
    let n = col0 + e % SG_N;
    if (m < p.M && n < p.N) {
      epilogue(c_base + m * p.N + n, n, f32(Cs[cs + e]) + lr_dot(m, n));
    }
  }
}

@compute @workgroup_size(NTHREADS, 1, 1)
fn mm_sgmat(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lidx: u32,
            @builtin(subgroup_id) sg: u32, @builtin(subgroup_invocation_id) lane: u32) {
  let base = batch_base(wid);
  let m0 = wid.y * TM;
  let n0 = wid.x * TN;
  let full = m0 + TM <= p.M && n0 + TN <= p.N && p.K % TK == 0u;
  let sub_m = (sg / WG_SN) * 4u * SG_M;   // this subgroup's first row in the tile
  let sub_n = (sg % WG_SN) * 2u * SG_N;   // and first column
  var acc: array<subgroup_matrix_result<Acc, SG_N, SG_M>, 8>;
  var pa: array<vec4f, MAX_LOADS>;
  var pb: array<vec4f, MAX_LOADS>;
  for (var i = 0u; i < A_LOADS; i++) {
    let c = a4_coord(lidx + i * NTHREADS, TM, TK);
    put_a(0u, c, fetch_a4(base.a, m0, 0u, c, full));
  }
  for (var i = 0u; i < B_LOADS; i++) {
    let c = b4_coord(lidx + i * NTHREADS, TK, TN);
    put_b(0u, c, fetch_b4(base.b, 0u, n0, c, full));
  }
  workgroupBarrier();
  var buf = 0u;
  for (var k0 = 0u; k0 < p.K; k0 += TK) {
    let k1 = k0 + TK;
    let more = k1 < p.K;
    if (more) {
      for (var i = 0u; i < A_LOADS; i++) {
        pa[i] = fetch_a4(base.a, m0, k1, a4_coord(lidx + i * NTHREADS, TM, TK), full);
      }
      for (var i = 0u; i < B_LOADS; i++) {
        pb[i] = fetch_b4(base.b, k1, n0, b4_coord(lidx + i * NTHREADS, TK, TN), full);
      }
    }
    let ao = buf * TM * TK + sub_m * TK;
    let bo = buf * TK * TN + sub_n;
    for (var kk = 0u; kk < TK; kk += SG_K) {
      let a0 = subgroupMatrixLoad<subgroup_matrix_left<T, SG_K, SG_M>, row_major>(&As, ao + kk, TK);
      let a1 = subgroupMatrixLoad<subgroup_matrix_left<T, SG_K, SG_M>, row_major>(&As, ao + SG_M * TK + kk, TK);
      let a2 = subgroupMatrixLoad<subgroup_matrix_left<T, SG_K, SG_M>, row_major>(&As, ao + 2u * SG_M * TK + kk, TK);
      let a3 = subgroupMatrixLoad<subgroup_matrix_left<T, SG_K, SG_M>, row_major>(&As, ao + 3u * SG_M * TK + kk, TK);
      let b0 = subgroupMatrixLoad<subgroup_matrix_right<T, SG_N, SG_K>, row_major>(&Bs, bo + kk * TN, TN);
      let b1 = subgroupMatrixLoad<subgroup_matrix_right<T, SG_N, SG_K>, row_major>(&Bs, bo + kk * TN + SG_N, TN);
      acc[0] = subgroupMatrixMultiplyAccumulate(a0, b0, acc[0]);
      acc[1] = subgroupMatrixMultiplyAccumulate(a0, b1, acc[1]);
      acc[2] = subgroupMatrixMultiplyAccumulate(a1, b0, acc[2]);
      acc[3] = subgroupMatrixMultiplyAccumulate(a1, b1, acc[3]);
      acc[4] = subgroupMatrixMultiplyAccumulate(a2, b0, acc[4]);
      acc[5] = subgroupMatrixMultiplyAccumulate(a2, b1, acc[5]);
      acc[6] = subgroupMatrixMultiplyAccumulate(a3, b0, acc[6]);
      acc[7] = subgroupMatrixMultiplyAccumulate(a3, b1, acc[7]);
    }
    if (more) {
      for (var i = 0u; i < A_LOADS; i++) {
        put_a(1u - buf, a4_coord(lidx + i * NTHREADS, TM, TK), pa[i]);
      }
      for (var i = 0u; i < B_LOADS; i++) {
        put_b(1u - buf, b4_coord(lidx + i * NTHREADS, TK, TN), pb[i]);
      }
    }
    workgroupBarrier();
    buf = 1u - buf;
  }
  // Results, one matrix at a time through this subgroup's Cs slot (barriers: the slot is re-used).
  let cs = sg * SG_M * SG_N;
  let r0 = m0 + sub_m;
  let c0 = n0 + sub_n;
  subgroupMatrixStore<row_major>(&Cs, cs, acc[0], SG_N);
  workgroupBarrier();
  flush(base.c, cs, r0, c0, lane);
  workgroupBarrier();
  subgroupMatrixStore<row_major>(&Cs, cs, acc[1], SG_N);
  workgroupBarrier();
  flush(base.c, cs, r0, c0 + SG_N, lane);
  workgroupBarrier();
  subgroupMatrixStore<row_major>(&Cs, cs, acc[2], SG_N);
  workgroupBarrier();
  flush(base.c, cs, r0 + SG_M, c0, lane);
  workgroupBarrier();
  subgroupMatrixStore<row_major>(&Cs, cs, acc[3], SG_N);
  workgroupBarrier();
  flush(base.c, cs, r0 + SG_M, c0 + SG_N, lane);
  workgroupBarrier();
  subgroupMatrixStore<row_major>(&Cs, cs, acc[4], SG_N);
  workgroupBarrier();
  flush(base.c, cs, r0 + 2u * SG_M, c0, lane);
  workgroupBarrier();
  subgroupMatrixStore<row_major>(&Cs, cs, acc[5], SG_N);
  workgroupBarrier();
  flush(base.c, cs, r0 + 2u * SG_M, c0 + SG_N, lane);
  workgroupBarrier();
  subgroupMatrixStore<row_major>(&Cs, cs, acc[6], SG_N);
  workgroupBarrier();
  flush(base.c, cs, r0 + 3u * SG_M, c0, lane);
  workgroupBarrier();
  subgroupMatrixStore<row_major>(&Cs, cs, acc[7], SG_N);
  workgroupBarrier();
  flush(base.c, cs, r0 + 3u * SG_M, c0 + SG_N, lane);
}
