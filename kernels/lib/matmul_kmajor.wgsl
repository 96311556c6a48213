// lib/matmul_kmajor.wgsl — k-major staging of vec4 operand loads (lib/matmul_vec4) into
// workgroup memory, for the register-block GPU kernels (matmul.wgsl mm_tiled_v4,
// matmul_tile8.wgsl), whose inner loop reads one vec4 of A rows and one of B columns per k.
//
// Layout: As[k][m] and Bs[k][n] as rows of vec4<f32> (TILE_M/4 and TILE_N/4 per k), a slab
// starting at vec4 row `off` (a kernel with several slab buffers passes the buffer's start).
// put_a_kmajor(off, c, v) stores vec4 v of a4_coord c: one vec4 store when it holds four m
//   (TRANS_A), else one component in each of four k rows; put_b_kmajor likewise for b4_coord
//   (one vec4 store unless TRANS_B).
// No bindings. Expects from the kernel: `var<workgroup> As, Bs: array<vec4f, ...>` and the
//   overrides TILE_M, TILE_N.

fn put_a_kmajor(off: u32, c: vec2u, v: vec4f) {
  if (TRANS_A) {
    As[off + (c.y * TILE_M + c.x) / 4u] = v;
  } else {
    let row = off + c.y * (TILE_M / 4u) + c.x / 4u;
    As[row][c.x % 4u] = v.x;
    As[row + TILE_M / 4u][c.x % 4u] = v.y;
    As[row + 2u * (TILE_M / 4u)][c.x % 4u] = v.z;
    As[row + 3u * (TILE_M / 4u)][c.x % 4u] = v.w;
  }
}

fn put_b_kmajor(off: u32, c: vec2u, v: vec4f) {
  if (TRANS_B) {
    let row = off + c.x * (TILE_N / 4u) + c.y / 4u;
    Bs[row][c.y % 4u] = v.x;
    Bs[row + TILE_N / 4u][c.y % 4u] = v.y;
    Bs[row + 2u * (TILE_N / 4u)][c.y % 4u] = v.z;
    Bs[row + 3u * (TILE_N / 4u)][c.y % 4u] = v.w;
  } else {
    Bs[off + (c.x * TILE_N + c.y) / 4u] = v;
  }
}
