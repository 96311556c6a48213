// matmul_sg.wgsl — the matmul family's kernel for CPU adapters (llvmpipe/lavapipe), f32.
// uses: lib/matmul_io, lib/matmul_block, lib/subgroup_broadcast
//
// Same math, bindings, epilogue and edge rules as kernels/matmul.wgsl (lib/matmul_io and
// lib/matmul_epilogue); this file holds one more entry point, compiled only where the
// 'subgroups' feature exists and chosen only when the subgroup size is exactly 8 (llvmpipe with
// 256-bit vectors).
//
// Why: on llvmpipe every load inside a loop is a per-lane gather (lib/subgroup_broadcast), so
// the cost of a matmul is the number of gathers per FMA. Here each invocation loads ONE element
// of A per row group (lane i loads row m0 + 8g + i) and subgroupBroadcast hands row r's value
// to all 8 lanes from registers, so one gather feeds 8 rows; B is loaded as CN vec4s of the
// invocation's own columns. Per k: RG + 4*CN gathers for 32*RG*CN vector FMAs (RG=2, CN=1: 6
// gathers per 64 FMAs).
//
// mm_sg: workgroup (WG_X) invocations along N; the workgroup computes RM = 8*RG rows x
//   4*CN*WG_X columns; invocation x owns columns n0 = (wid.x*WG_X + x)*4*CN .. +4*CN, its
//   register block acc[r*CN + c] (row m0 + r, columns n0 + 4c ..). Batch in workgroup z
//   (P.batch_offset as in matmul.wgsl).
// Overrides: those of lib/matmul_io and lib/matmul_epilogue, WG_X (invocations per workgroup, a
//   multiple of 8), RG (row groups of 8, 1..4), CN (vec4 column groups per invocation, 1..4).
//   RG*CN <= 4.

override WG_X: u32 = 64u;
override RG: u32 = 2u;
override CN: u32 = 1u;
override RM: u32 = 8u * RG;
const ACC_ROWS: u32 = 32u;

@compute @workgroup_size(WG_X, 1, 1)
fn mm_sg(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
         @builtin(subgroup_invocation_id) lane: u32) {
  let base = batch_base(wid);
  let m0 = wid.y * RM;
  let n0 = (wid.x * WG_X + lid.x) * 4u * CN;
  let last_a = arrayLength(&A) - 1u;
  let last_b = arrayLength(&B) - 1u;
  var acc: array<vec4f, ACC_ROWS>;
  for (var k = 0u; k < p.K; k++) {
    var b: array<vec4f, 4>;
    for (var c = 0u; c < CN; c++) {
      b[c] = b4_at(base.b, k, n0 + 4u * c, last_b);
    }
    for (var g = 0u; g < RG; g++) {
      let av = a_at(base.a, m0 + 8u * g + lane, k, last_a);
      for (var c = 0u; c < CN; c++) {
        bcast8_fma(&acc, 8u * g * CN + c, av, b[c]);
      }
    }
  }
  store_block(base.c, m0, n0, &acc);
}
