// lib/matmul_io.wgsl — the bindings, typed loads/stores and operand indexing of the matmul
// family (matmul.wgsl, matmul_sg.wgsl, matmul_sgmat.wgsl).
//
// Bindings it declares (group 0); every array holds the storage type T of the prelude:
//   0  p: P (uniform) { M, N, K, batch_offset, a_bs, b_bs, c_bs, n_elems: u32 }
//   1  A:        array<T> (read)  opA(A), batch b starts at b*a_bs (a_bs = 0 broadcasts A)
//   2  B:        array<T> (read)  opB(B), batch b starts at b*b_bs (b_bs = 0: shared weight)
//   3  bias:     array<T> (read)  [N]; any buffer when !HAS_BIAS
//   4  residual: array<T> (read)  same layout as out; any buffer when !HAS_RES
//   5  lr_u:     array<T> (read)  [M, LR_RANK] (batch 1 only); any buffer when LR_RANK = 0
//   6  lr_v:     array<T> (read)  [LR_RANK, N] (LR_VT) or [N, LR_RANK]; any buffer when LR_RANK = 0
//   7  out:      array<T> (write) [batch, M, N] row-major, batch stride c_bs
//   8  pre:      array<T> (write) like out; a 16-byte dummy when !STORE_PRE
// Layouts: opA(A) = A ([M,K] row-major) or Aᵀ (A stored [K,M]) when TRANS_A;
//          opB(B) = B ([K,N] row-major) or Bᵀ (B stored [N,K]) when TRANS_B.
// Overrides it declares: TRANS_A, TRANS_B (bool).
// Loads widen T to f32 and stores round f32 to T (nearest): kernels compute in f32.
// Edges: a_at / b_at / b4_at read 0 for rows (columns) past M (N); the index is clamped into
// the buffer so the load itself is always in bounds, and the value is selected away; k must be
// < K. a_tile_value / b_tile_value also read 0 past K (tiles staged in slabs of K).
// Tile staging (workgroup-memory kernels): a_tile_coord / b_tile_coord map a staging index t to
// the element's offsets in the tile such that consecutive t read consecutive addresses of the
// operand in either layout (coalesced loads for NN, NT, TN and TT).

override TRANS_A: bool = false;
override TRANS_B: bool = false;

struct P {
  M: u32, N: u32, K: u32, batch_offset: u32, a_bs: u32, b_bs: u32, c_bs: u32, n_elems: u32
}

/// Where a workgroup's batch element (wid.z + P.batch_offset) starts in A, B and out.
struct BatchBase { a: u32, b: u32, c: u32 }

fn batch_base(wid: vec3u) -> BatchBase {
  let batch = wid.z + p.batch_offset;
  return BatchBase(batch * p.a_bs, batch * p.b_bs, batch * p.c_bs);
}

fn ld_a(i: u32) -> f32 { return f32(A[i]); }
fn ld_b(i: u32) -> f32 { return f32(B[i]); }
fn ld_bias(i: u32) -> f32 { return f32(bias[i]); }
fn ld_res(i: u32) -> f32 { return f32(residual[i]); }
fn ld_lu(i: u32) -> f32 { return f32(lr_u[i]); }
fn ld_lv(i: u32) -> f32 { return f32(lr_v[i]); }
fn ld_out(i: u32) -> f32 { return f32(out[i]); }
fn st_out(i: u32, v: f32) { out[i] = T(v); }
fn st_pre(i: u32, v: f32) { pre[i] = T(v); }

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

/// opA(A)[m, k] of the batch starting at `base`, 0 for m >= M (`last` = arrayLength(&A) - 1).
fn a_at(base: u32, m: u32, k: u32, last: u32) -> f32 {
  return select(0.0, ld_a(min(base + a_index(m, k), last)), m < p.M);
}

/// opB(B)[k, n] of the batch starting at `base`, 0 for n >= N (`last` = arrayLength(&B) - 1).
fn b_at(base: u32, k: u32, n: u32, last: u32) -> f32 {
  return select(0.0, ld_b(min(base + b_index(k, n), last)), n < p.N);
}

/// opB(B)[k, n..n+3] of the batch starting at `base`, 0 for columns >= N.
fn b4_at(base: u32, k: u32, n: u32, last: u32) -> vec4f {
  var v: vec4f;
  for (var j = 0u; j < 4u; j++) {
    v[j] = b_at(base, k, n + j, last);
  }
  return v;
}

/// (row, k) offsets of staging index t in a `rows` x `depth` tile of opA(A).
fn a_tile_coord(t: u32, rows: u32, depth: u32) -> vec2u {
  if (TRANS_A) {
    return vec2u(t % rows, t / rows);
  }
  return vec2u(t / depth, t % depth);
}

/// (k, column) offsets of staging index t in a `depth` x `cols` tile of opB(B).
fn b_tile_coord(t: u32, depth: u32, cols: u32) -> vec2u {
  if (TRANS_B) {
    return vec2u(t % depth, t / depth);
  }
  return vec2u(t / cols, t % cols);
}

/// Element c = (row, k) of the opA(A) tile at (m0, k0); 0 outside the matrix.
fn a_tile_value(base: u32, m0: u32, k0: u32, c: vec2u, last: u32) -> f32 {
  let k = k0 + c.y;
  return select(0.0, a_at(base, m0 + c.x, k, last), k < p.K);
}

/// Element c = (k, column) of the opB(B) tile at (k0, n0); 0 outside the matrix.
fn b_tile_value(base: u32, k0: u32, n0: u32, c: vec2u, last: u32) -> f32 {
  let k = k0 + c.x;
  return select(0.0, b_at(base, k, n0 + c.y, last), k < p.K);
}
