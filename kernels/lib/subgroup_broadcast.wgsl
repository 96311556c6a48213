// lib/subgroup_broadcast.wgsl — one load serves 8 rows: the register-block update of the
// subgroup-broadcast kernels for CPU adapters (matmul_sg.wgsl, infonce_sg.wgsl).
//
// Why: llvmpipe runs 8 invocations as one SIMD vector, and on Mesa 25 every memory load inside a
// loop is a per-lane gather, even when the address is uniform; the cost of a product is the
// number of gathers per FMA. So lane l of a subgroup of 8 loads the row operand of row 8g + l,
// and subgroupBroadcast hands row r's value to all 8 lanes from registers: one gather feeds 8
// rows. The kernels using this are chosen only where the subgroup size is exactly 8.
//
// Functions (no bindings):
//   bcast8(v)                      lanes 0..7's values of v, to every lane
//   bcast8_fma(acc, r, av, b)      acc[r + l*CN] += (lane l's av) * b for l = 0..7
// Expects from the kernel: CN (vec4 column groups per invocation; override or const) and const
// ACC_ROWS (the length of the register-block array). Needs the 'subgroups' feature.

enable subgroups;

/// Lane l's value v to all lanes, as 8 values (lanes 0..7).
fn bcast8(v: f32) -> array<f32, 8> {
  return array<f32, 8>(subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u), subgroupBroadcast(v, 2u),
    subgroupBroadcast(v, 3u), subgroupBroadcast(v, 4u), subgroupBroadcast(v, 5u),
    subgroupBroadcast(v, 6u), subgroupBroadcast(v, 7u));
}

/// The 8 rows of one row group times one vec4 column group: row l of the group (lane l's av)
/// accumulates into acc[r + l*CN], r = the group's first row times CN plus the column group.
fn bcast8_fma(acc: ptr<function, array<vec4f, ACC_ROWS>>, r: u32, av: f32, b: vec4f) {
  (*acc)[r + 0u * CN] += subgroupBroadcast(av, 0u) * b;
  (*acc)[r + 1u * CN] += subgroupBroadcast(av, 1u) * b;
  (*acc)[r + 2u * CN] += subgroupBroadcast(av, 2u) * b;
  (*acc)[r + 3u * CN] += subgroupBroadcast(av, 3u) * b;
  (*acc)[r + 4u * CN] += subgroupBroadcast(av, 4u) * b;
  (*acc)[r + 5u * CN] += subgroupBroadcast(av, 5u) * b;
  (*acc)[r + 6u * CN] += subgroupBroadcast(av, 6u) * b;
  (*acc)[r + 7u * CN] += subgroupBroadcast(av, 7u) * b;
}
