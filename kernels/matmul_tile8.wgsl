// matmul_tile8.wgsl — the matmul family's large-tile GPU kernel: 8x8 register blocks, vec4 global
// loads, double-buffered workgroup memory with register prefetch, and no bounds checks on
// interior tiles.
// uses: lib/matmul_io, lib/matmul_vec4, lib/matmul_kmajor, lib/matmul_block
// dtypes: f32, f16
//
// Same math, epilogue and edge rules as kernels/matmul.wgsl (lib/matmul_io, lib/matmul_epilogue):
//   out[b,m,n] = act(opA(A)[b]·opB(B)[b] + bias + low-rank addend) + residual.
// Needs each operand's contiguous dimension to be a multiple of 4 (lib/matmul_vec4); the host
// (src/ops/matmul.ts) runs the variant's vec4Fallback elsewhere.
//
// Bindings: those of lib/matmul_io, the operands read only through lib/matmul_vec4's A4 / B4.
//
// Tiling (mm_tile8): workgroup (WG_X, WG_Y) = (TILE_N/8, TILE_M/8) computes a TILE_M x TILE_N tile
//   (128 x 128 by default); each invocation owns an 8 x 8 block of it (rows lid.y*8.., columns
//   lid.x*8..) as 16 vec4 accumulators acc[r*2 + c] (lib/matmul_block with RM = 8, CN = 2).
//   K advances in slabs of TILE_K staged k-major in workgroup memory (lib/matmul_kmajor: As[k][m],
//   Bs[k][n], vec4 rows, f32 whatever T is), in two buffers: while the slab in one buffer is multiplied, the
//   next slab's global loads are already in flight into registers (A_LOADS + B_LOADS vec4 per
//   invocation), and are written to the other buffer afterwards, so one barrier per slab suffices
//   (the other buffer was last read before the previous barrier).
//   Per k in a slab an invocation reads 2 vec4 of A and 2 of B from workgroup memory for 64 FMAs
//   (16 vec4 FMAs), against 1 + 1 for 16 in mm_tiled's 4x4 block.
// Full tiles: a workgroup-uniform test (whole tile inside M x N, K a multiple of TILE_K) takes the
//   loads without index clamps or masks.
// Dispatch: [ceil(N/TILE_N), ceil(M/TILE_M), batch chunk] (batch in z as in matmul.wgsl).
// Overrides: those of lib/matmul_io and lib/matmul_epilogue, TILE_M, TILE_N (multiples of 32),
//   TILE_K (multiple of 4), WG_X = TILE_N/8, WG_Y = TILE_M/8; A_LOADS = TILE_M*TILE_K/(4*WG_X*WG_Y)
//   and B_LOADS = TILE_K*TILE_N/(4*WG_X*WG_Y) must be whole numbers <= MAX_LOADS (the host's
//   variant table only lists such tiles).

override TILE_M: u32 = 128u;
override TILE_N: u32 = 128u;
override TILE_K: u32 = 16u;
override WG_X: u32 = 16u;
override WG_Y: u32 = 16u;
override A_LOADS: u32 = TILE_M * TILE_K / (4u * WG_X * WG_Y);
override B_LOADS: u32 = TILE_K * TILE_N / (4u * WG_X * WG_Y);
const RM: u32 = 8u;
const CN: u32 = 2u;
const ACC_ROWS: u32 = 16u;
const MAX_LOADS: u32 = 4u;

/// Vec4 rows of one slab buffer.
override A_SLAB: u32 = TILE_K * TILE_M / 4u;
override B_SLAB: u32 = TILE_K * TILE_N / 4u;
var<workgroup> As: array<vec4f, 2u * A_SLAB>;
var<workgroup> Bs: array<vec4f, 2u * B_SLAB>;

/// The product of slab buffer `buf` into this invocation's 8 x 8 block. Constant accumulator
/// indices only (see kernels/matmul.wgsl slab_product for why).
fn slab_product8(buf: u32, lid: vec3u, acc: ptr<function, array<vec4f, ACC_ROWS>>) {
  let ao = buf * A_SLAB + lid.y * 2u;
  let bo = buf * B_SLAB + lid.x * 2u;
  for (var kk = 0u; kk < TILE_K; kk++) {
    let a0 = As[ao + kk * (TILE_M / 4u)];
    let a1 = As[ao + kk * (TILE_M / 4u) + 1u];
    let b0 = Bs[bo + kk * (TILE_N / 4u)];
    let b1 = Bs[bo + kk * (TILE_N / 4u) + 1u];
    (*acc)[0] += a0.x * b0;
    (*acc)[1] += a0.x * b1;
    (*acc)[2] += a0.y * b0;
    (*acc)[3] += a0.y * b1;
    (*acc)[4] += a0.z * b0;
    (*acc)[5] += a0.z * b1;
    (*acc)[6] += a0.w * b0;
    (*acc)[7] += a0.w * b1;
    (*acc)[8] += a1.x * b0;
    (*acc)[9] += a1.x * b1;
    (*acc)[10] += a1.y * b0;
    (*acc)[11] += a1.y * b1;
    (*acc)[12] += a1.z * b0;
    (*acc)[13] += a1.z * b1;
    (*acc)[14] += a1.w * b0;
    (*acc)[15] += a1.w * b1;
  }
}

@compute @workgroup_size(WG_X, WG_Y, 1)
fn mm_tile8(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
            @builtin(local_invocation_index) lidx: u32) {
  let base = batch_base(wid);
  let m0 = wid.y * TILE_M;
  let n0 = wid.x * TILE_N;
  let nthreads = WG_X * WG_Y;
  let full = m0 + TILE_M <= p.M && n0 + TILE_N <= p.N && p.K % TILE_K == 0u;
  var acc: array<vec4f, ACC_ROWS>;
  var pa: array<vec4f, MAX_LOADS>;
  var pb: array<vec4f, MAX_LOADS>;
  // Slab 0 into buffer 0.
  for (var i = 0u; i < A_LOADS; i++) {
    let c = a4_coord(lidx + i * nthreads, TILE_M, TILE_K);
    put_a_kmajor(0u, c, fetch_a4(base.a, m0, 0u, c, full));
  }
  for (var i = 0u; i < B_LOADS; i++) {
    let c = b4_coord(lidx + i * nthreads, TILE_K, TILE_N);
    put_b_kmajor(0u, c, fetch_b4(base.b, 0u, n0, c, full));
  }
  workgroupBarrier();
  var buf = 0u;
  for (var k0 = 0u; k0 < p.K; k0 += TILE_K) {
    let k1 = k0 + TILE_K;
    let more = k1 < p.K;
    if (more) {
      for (var i = 0u; i < A_LOADS; i++) {
        pa[i] = fetch_a4(base.a, m0, k1, a4_coord(lidx + i * nthreads, TILE_M, TILE_K), full);
      }
      for (var i = 0u; i < B_LOADS; i++) {
        pb[i] = fetch_b4(base.b, k1, n0, b4_coord(lidx + i * nthreads, TILE_K, TILE_N), full);
      }
    }
    slab_product8(buf, lid, &acc);
    if (more) {
      for (var i = 0u; i < A_LOADS; i++) {
        put_a_kmajor((1u - buf) * A_SLAB, a4_coord(lidx + i * nthreads, TILE_M, TILE_K), pa[i]);
      }
      for (var i = 0u; i < B_LOADS; i++) {
        put_b_kmajor((1u - buf) * B_SLAB, b4_coord(lidx + i * nthreads, TILE_K, TILE_N), pb[i]);
      }
    }
    workgroupBarrier();
    buf = 1u - buf;
  }
  store_block(base.c, m0 + lid.y * RM, n0 + lid.x * 4u * CN, &acc);
}
