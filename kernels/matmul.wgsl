// matmul.wgsl — batched matrix product with a fused epilogue: f32 accumulation, storage T
// (f32, or f16 where the device has 'shader-f16').
// uses: lib/matmul_io, lib/matmul_vec4, lib/matmul_kmajor, lib/matmul_block
// dtypes: f32, f16
//
// Math (per batch element b, 0 <= m < M, 0 <= n < N):
//   out[b,m,n] = act(opA(A)[b]·opB(B)[b] + bias + low-rank addend) + residual   (lib/matmul_epilogue)
// Bindings: those of lib/matmul_io (0 uniform P, 1 A, 2 B, 3 bias, 4 residual, 5 lr_u, 6 lr_v,
//   7 out, 8 pre); mm_tiled_v4 reads bindings 1 and 2 through lib/matmul_vec4's vec4 views A4, B4;
//   bias_grad below.
//
// Entry points (all but bias_grad end in store_block: low-rank addend, epilogue, store):
//   mm_tiled   workgroup-tiled for GPUs. Workgroup (WG_X, WG_Y) = (TILE_N/4, TILE_M/RM) computes a
//              TILE_M x TILE_N tile; slabs of TILE_K are staged k-major in workgroup memory
//              (As[k][m], Bs[k][n], vec4 rows) with coalesced loads for every layout; each thread
//              keeps an RM x 4 register block (RM = 4 or 8; rows ty*RM.., columns tx*4..).
//   mm_tiled_v4 mm_tiled with four-element global loads while staging (lib/matmul_vec4, stored
//              by lib/matmul_kmajor); only when each operand's contiguous dimension (A: K, or M
//              with TRANS_A; B: N, or K with TRANS_B) is a multiple of 4 (the host checks).
//   mm_direct  no workgroup memory, for CPU adapters (llvmpipe/lavapipe run 8 invocations as one
//              SIMD vector): a workgroup of WG_X invocations computes RM rows x (4*WG_X) columns;
//              the A operands of a row block are workgroup-uniform (scalar loads + broadcast) and
//              each invocation loads one vec4 of B per k. No barriers, the CPU cache does the tiling.
//   bias_grad  db[n] = sum_{r<rows} dz[r, n]; P.M = rows, with
//                1  dz_in:  array<T> (read)   dz [rows, N]
//                2  db_out: array<T> (write)  db [N]
// With f16 storage the loads widen to f32 and the stores round to f16; the epilogue re-reads
// the stored (f16-rounded) sum, so a fused bias/act sees it rounded.
// Dispatch: mm_* use workgroup z for the batch (chunks of <= 65535, P.batch_offset = chunk start);
//   bias_grad 1-D over N.
//
// Edges: any M, N, K. Out-of-range operands read as 0 (index clamped, value selected away);
//   out-of-range outputs are not written. Workgroup-uniform full-tile checks keep the common
//   interior path free of per-element masks where the layout allows.
//
// Overrides: those of lib/matmul_io and lib/matmul_epilogue (TRANS_A, TRANS_B, HAS_BIAS, HAS_RES,
//   STORE_PRE, ACT, LR_RANK, LR_VT), TILE_M, TILE_N, TILE_K (mm_tiled tile), WG_X, WG_Y
//   (workgroup size), RM (rows per invocation: 4 or 8 in mm_tiled, 1..16 in mm_direct).

override TILE_M: u32 = 64u;
override TILE_N: u32 = 64u;
override TILE_K: u32 = 16u;
override WG_X: u32 = 16u;
override WG_Y: u32 = 16u;
override RM: u32 = 4u;
/// One vec4 column group per invocation (store_block's layout of the register block).
const CN: u32 = 1u;
const ACC_ROWS: u32 = 16u;

// ---------------------------------------------------------------------------------------------
// mm_tiled

var<workgroup> As: array<vec4f, TILE_K * TILE_M / 4u>;
var<workgroup> Bs: array<vec4f, TILE_K * TILE_N / 4u>;

/// The staged slabs' product into this invocation's RM x 4 block (mm_tiled and mm_tiled_v4).
/// RM (4 or 8) rows = RM/4 vec4 chunks of the As row. Every acc index is a constant (no loop
/// over chunks), so the block can stay in registers once inlined (store_block takes the same
/// pointer): indexing it with a loop variable can put the whole array in local memory on GPU
/// compilers that do not unroll (suspected cause of RM = 8 running at ~2 TFLOP/s on an H200).
fn slab_product(lid: vec3u, acc: ptr<function, array<vec4f, ACC_ROWS>>) {
  for (var kk = 0u; kk < TILE_K; kk++) {
    let b4 = Bs[kk * (TILE_N / 4u) + lid.x];
    let a_row = (kk * TILE_M + lid.y * RM) / 4u;
    let a4 = As[a_row];
    (*acc)[0] += a4.x * b4;
    (*acc)[1] += a4.y * b4;
    (*acc)[2] += a4.z * b4;
    (*acc)[3] += a4.w * b4;
    if (RM == 8u) {
      let a4h = As[a_row + 1u];
      (*acc)[4] += a4h.x * b4;
      (*acc)[5] += a4h.y * b4;
      (*acc)[6] += a4h.z * b4;
      (*acc)[7] += a4h.w * b4;
    }
  }
}

/// Stages the TILE_K slab at k0: opA(A)[tile_m0.., k0..] as As[k][m] and opB(B)[k0.., tile_n0..]
/// as Bs[k][n], one element per load.
fn stage_slabs(base: BatchBase, tile_m0: u32, tile_n0: u32, k0: u32, lidx: u32) {
  let last_a = arrayLength(&A) - 1u;
  let last_b = arrayLength(&B) - 1u;
  for (var t = lidx; t < TILE_M * TILE_K; t += WG_X * WG_Y) {
    let c = a_tile_coord(t, TILE_M, TILE_K);
    let slot = c.y * TILE_M + c.x;
    As[slot / 4u][slot % 4u] = a_tile_value(base.a, tile_m0, k0, c, last_a);
  }
  for (var t = lidx; t < TILE_K * TILE_N; t += WG_X * WG_Y) {
    let c = b_tile_coord(t, TILE_K, TILE_N);
    let slot = c.x * TILE_N + c.y;
    Bs[slot / 4u][slot % 4u] = b_tile_value(base.b, k0, tile_n0, c, last_b);
  }
}

/// stage_slabs with four-element global loads (mm_tiled_v4; lib/matmul_vec4 and
/// lib/matmul_kmajor). Needs the contiguous dimension of each operand to be a multiple of 4 (the
/// host falls back to mm_tiled otherwise).
fn stage_slabs_v4(base: BatchBase, tile_m0: u32, tile_n0: u32, k0: u32, lidx: u32) {
  for (var t = lidx; t < TILE_M * TILE_K / 4u; t += WG_X * WG_Y) {
    let c = a4_coord(t, TILE_M, TILE_K);
    put_a_kmajor(0u, c, fetch_a4(base.a, tile_m0, k0, c, false));
  }
  for (var t = lidx; t < TILE_K * TILE_N / 4u; t += WG_X * WG_Y) {
    let c = b4_coord(t, TILE_K, TILE_N);
    put_b_kmajor(0u, c, fetch_b4(base.b, k0, tile_n0, c, false));
  }
}

// mm_tiled and mm_tiled_v4: for each TILE_K slab, stage it (mm_tiled_v4: four elements per
// global load), barrier, multiply into the register block, barrier; then store the block. Two
// entry points because a vec4 view of a binding may not share an entry point with its scalar view.

@compute @workgroup_size(WG_X, WG_Y, 1)
fn mm_tiled(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
            @builtin(local_invocation_index) lidx: u32) {
  let base = batch_base(wid);
  var acc: array<vec4f, ACC_ROWS>;
  for (var k0 = 0u; k0 < p.K; k0 += TILE_K) {
    stage_slabs(base, wid.y * TILE_M, wid.x * TILE_N, k0, lidx);
    workgroupBarrier();
    slab_product(lid, &acc);
    workgroupBarrier();
  }
  store_block(base.c, wid.y * TILE_M + lid.y * RM, wid.x * TILE_N + lid.x * 4u, &acc);
}

@compute @workgroup_size(WG_X, WG_Y, 1)
fn mm_tiled_v4(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
               @builtin(local_invocation_index) lidx: u32) {
  let base = batch_base(wid);
  var acc: array<vec4f, ACC_ROWS>;
  for (var k0 = 0u; k0 < p.K; k0 += TILE_K) {
    stage_slabs_v4(base, wid.y * TILE_M, wid.x * TILE_N, k0, lidx);
    workgroupBarrier();
    slab_product(lid, &acc);
    workgroupBarrier();
  }
  store_block(base.c, wid.y * TILE_M + lid.y * RM, wid.x * TILE_N + lid.x * 4u, &acc);
}

// ---------------------------------------------------------------------------------------------
// mm_direct

@compute @workgroup_size(WG_X, 1, 1)
fn mm_direct(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let base = batch_base(wid);
  let m0 = wid.y * RM;
  let n0 = (wid.x * WG_X + lid.x) * 4u;
  // Workgroup-uniform: every row and every column of this workgroup is in range.
  let full = m0 + RM <= p.M && (wid.x + 1u) * WG_X * 4u <= p.N;
  var acc: array<vec4f, ACC_ROWS>;   // zero-initialised
  if (full) {
    for (var k = 0u; k < p.K; k++) {
      var b4: vec4f;
      if (TRANS_B) {
        let bi = base.b + n0 * p.K + k;
        b4 = vec4f(ld_b(bi), ld_b(bi + p.K), ld_b(bi + 2u * p.K), ld_b(bi + 3u * p.K));
      } else {
        let bi = base.b + k * p.N + n0;
        b4 = vec4f(ld_b(bi), ld_b(bi + 1u), ld_b(bi + 2u), ld_b(bi + 3u));
      }
      for (var r = 0u; r < RM; r++) {
        acc[r] += ld_a(base.a + a_index(m0 + r, k)) * b4;
      }
    }
  } else {
    let last_a = arrayLength(&A) - 1u;
    let last_b = arrayLength(&B) - 1u;
    for (var k = 0u; k < p.K; k++) {
      let b4 = b4_at(base.b, k, n0, last_b);
      for (var r = 0u; r < RM; r++) {
        acc[r] += a_at(base.a, m0 + r, k, last_a) * b4;
      }
    }
  }
  store_block(base.c, m0, n0, &acc);
}

// ---------------------------------------------------------------------------------------------
// bias_grad (bindings 1 = dz, 2 = db; see the header)

@compute @workgroup_size(64)
fn bias_grad(@builtin(global_invocation_id) gid: vec3u) {
  let n = gid.x;
  if (n >= p.N) {
    return;
  }
  var s = 0.0;
  for (var r = 0u; r < p.M; r++) {
    s += f32(dz_in[r * p.N + n]);
  }
  db_out[n] = T(s);
}
