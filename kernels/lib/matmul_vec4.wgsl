// lib/matmul_vec4.wgsl — four-element operand loads for the matmul family's aligned kernels
// (matmul_tile8.wgsl, matmul_sgmat.wgsl), which stage tiles of opA(A) and opB(B) in workgroup
// memory one vec4 per load.
// uses: lib/matmul_io
//
// Bindings: the operands' vec4 views (an entry point that uses these must not use A or B of
// lib/matmul_io: both views share a binding number):
//   1  A4: array<T4> (read)
//   2  B4: array<T4> (read)
// Needs each operand's contiguous dimension to be a multiple of 4 (A: K, or M with TRANS_A; B:
// N, or K with TRANS_B; the host checks and runs a fallback variant otherwise), so a vec4 lies
// wholly inside or wholly outside its matrix.
//
// Vec4 number t of a tile, counted along the operand's contiguous dimension so that consecutive t
// read consecutive addresses (coalesced for every layout):
//   a4_coord(t, rows, depth) -> (row, k) of its first element in a rows x depth tile of opA(A);
//     its four elements are rows row..row+3 of column k when TRANS_A, else k..k+3 of row `row`;
//   b4_coord(t, depth, cols) -> (k, col) in a depth x cols tile of opB(B); four k of column col
//     when TRANS_B, else four columns of row k.
// fetch_a4 / fetch_b4 read that vec4 of the tile at (m0, k0) / (k0, n0) as f32; zeros outside the
// matrix unless `full` (the caller's workgroup-uniform promise that the whole tile is inside,
// K included), which skips the index clamp and the mask.

fn a4_coord(t: u32, rows: u32, depth: u32) -> vec2u {
  if (TRANS_A) {
    return vec2u(4u * (t % (rows / 4u)), t / (rows / 4u));
  }
  return vec2u(t / (depth / 4u), 4u * (t % (depth / 4u)));
}

fn b4_coord(t: u32, depth: u32, cols: u32) -> vec2u {
  if (TRANS_B) {
    return vec2u(4u * (t % (depth / 4u)), t / (depth / 4u));
  }
  return vec2u(t / (cols / 4u), 4u * (t % (cols / 4u)));
}

fn fetch_a4(base: u32, m0: u32, k0: u32, c: vec2u, full: bool) -> vec4f {
  let m = m0 + c.x;
  let k = k0 + c.y;
  let i = (base + a_index(m, k)) / 4u;
  if (full) {
    return vec4f(A4[i]);
  }
  return select(vec4f(0.0), vec4f(A4[min(i, arrayLength(&A4) - 1u)]), m < p.M && k < p.K);
}

fn fetch_b4(base: u32, k0: u32, n0: u32, c: vec2u, full: bool) -> vec4f {
  let k = k0 + c.x;
  let n = n0 + c.y;
  let i = (base + b_index(k, n)) / 4u;
  if (full) {
    return vec4f(B4[i]);
  }
  return select(vec4f(0.0), vec4f(B4[min(i, arrayLength(&B4) - 1u)]), n < p.N && k < p.K);
}
