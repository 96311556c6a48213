// matmul_sgmat.wgsl — matmul on subgroup matrices (tensor cores / simdgroup matrices) through
// Chromium's experimental WGSL extension chromium_experimental_subgroup_matrix.
// uses: lib/matmul_io, lib/matmul_epilogue
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
// bias, act, residual, pre); the epilogue computes in f32 whatever Acc is.
//
// Tiling: workgroup = 4 subgroups (4*SG_SIZE invocations) in a 2x2 grid; each subgroup owns a
//   2x2 block of SG_M x SG_N result matrices, so the workgroup tile is TM x TN = 4*SG_M x 4*SG_N
//   (64x64 for 16x16x16). K advances in slabs of TK = 2*SG_K staged in workgroup memory:
//     As[m][k] (row-major, stride TK), Bs[k][n] (row-major, stride TN), in T and
//     zero-filled outside the matrices so any M, N, K works; the loads read along each operand's
//     contiguous dimension for every layout (TRANS_A / TRANS_B).
//   Results go through Cs[m][n] (Acc, stride TN) in workgroup memory for the bounds-checked
//   epilogue (the subgroup-matrix store itself cannot clip edges).
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
// Bindings: those of lib/matmul_io, all array<T>. The low-rank addend (LR_RANK > 0) is added
//   per output in the epilogue loop (lr_dot).
// Dispatch: [ceil(N/TN), ceil(M/TM), batch chunk] (batch in z as in matmul.wgsl).
// Overrides: those of lib/matmul_io and lib/matmul_epilogue, SG_SIZE (the device's subgroup
//   size; workgroup = 4*SG_SIZE).

enable chromium_experimental_subgroup_matrix;
enable subgroups;
diagnostic(off, chromium_experimental.subgroup_matrix_uniformity);

override SG_SIZE: u32 = 32u;

const TM: u32 = 4u * SG_M;
const TN: u32 = 4u * SG_N;
const TK: u32 = 2u * SG_K;

var<workgroup> As: array<T, TM * TK>;
var<workgroup> Bs: array<T, TK * TN>;
var<workgroup> Cs: array<Acc, TM * TN>;

@compute @workgroup_size(4u * SG_SIZE, 1, 1)
fn mm_sgmat(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lidx: u32,
            @builtin(subgroup_id) sg: u32) {
  let base = batch_base(wid);
  let tile_m0 = wid.y * TM;
  let tile_n0 = wid.x * TN;
  let nthreads = 4u * SG_SIZE;
  let sub_m = (sg / 2u) * 2u * SG_M;   // this subgroup's first row in the tile
  let sub_n = (sg % 2u) * 2u * SG_N;   // and first column
  let last_a = arrayLength(&A) - 1u;
  let last_b = arrayLength(&B) - 1u;
  var acc: array<subgroup_matrix_result<Acc, SG_N, SG_M>, 4>;
  for (var k0 = 0u; k0 < p.K; k0 += TK) {
    for (var t = lidx; t < TM * TK; t += nthreads) {
      let c = a_tile_coord(t, TM, TK);
      As[c.x * TK + c.y] = T(a_tile_value(base.a, tile_m0, k0, c, last_a));
    }
    for (var t = lidx; t < TK * TN; t += nthreads) {
      let c = b_tile_coord(t, TK, TN);
      Bs[c.x * TN + c.y] = T(b_tile_value(base.b, k0, tile_n0, c, last_b));
    }
    workgroupBarrier();
    for (var kk = 0u; kk < TK; kk += SG_K) {
      let a0 = subgroupMatrixLoad<subgroup_matrix_left<T, SG_K, SG_M>, row_major>(&As, sub_m * TK + kk, TK);
      let a1 = subgroupMatrixLoad<subgroup_matrix_left<T, SG_K, SG_M>, row_major>(&As, (sub_m + SG_M) * TK + kk, TK);
      let b0 = subgroupMatrixLoad<subgroup_matrix_right<T, SG_N, SG_K>, row_major>(&Bs, kk * TN + sub_n, TN);
      let b1 = subgroupMatrixLoad<subgroup_matrix_right<T, SG_N, SG_K>, row_major>(&Bs, kk * TN + sub_n + SG_N, TN);
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
  for (var e = lidx; e < TM * TN; e += nthreads) {
    let m = tile_m0 + e / TN;
    let n = tile_n0 + e % TN;
    if (m < p.M && n < p.N) {
      epilogue(base.c + m * p.N + n, n, f32(Cs[e]) + lr_dot(m, n));
    }
  }
}
