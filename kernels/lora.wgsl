// lora.wgsl — the rank-r pieces of a LoRA projection; the dense part is the matmul kernels.
//
// LoRA (PEFT semantics): y = x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ with W [N, K] frozen, A [r, K], B [N, r],
// s = lora_alpha / r. src/ops/lora.ts computes
//   forward:  u  = s·x·Aᵀ [rows, r]                               (lowrank_proj, here)
//             y  = x·Wᵀ + b + u·Bᵀ                                 (ONE matmul: the frozen product
//                                                                  with u·Bᵀ as its low-rank addend,
//                                                                  kernels/matmul*.wgsl LR_RANK)
//   backward: du = s·dz·B [rows, r]                               (lowrank_proj with LR_T)
//             dx = dz·W + du·A                                     (ONE matmul, addend du·A)
//             dA = duᵀ·x [r, K],  dB = dzᵀ·u [N, r]               (lowrank_grad below)
// No operand is copied or packed, and no dW is ever formed: the frozen weight costs the same
// matmul as in a plain linear layer, plus r FMAs per output and three skinny passes over rows.
//
// lowrank_proj: a workgroup of TPR invocations owns RB consecutive rows; the invocations split K
//   (lane t reads k = t, t + TPR, …) and each carries all RB rows, so one load of lr(·, k) serves
//   RB rows. Partials go through workgroup memory; invocation i < RB sums row i's TPR partials in
//   lane order (deterministic). Ranks are done four at a time (one vec4 accumulator per row);
//   RANK > 4 re-reads the rows once per group of four.
//   1 x   array<f32> (read)  [rows, K]
//   2 lr  array<f32> (read)  the low-rank factor: A [r, K] (LR_T = false) or B [K, r] (LR_T = true,
//                             used for du = s·dz·B where the "K" of this pass is N)
//   3 u   array<f32> (write) [rows, r]: u[m, j] = s·Σ_k x[m, k]·lr(j, k)
// P { rows: u32, k: u32, r: u32, pad: u32, s: f32 }
// Overrides: RANK (r, so the rank loops have constant trip counts), TPR (workgroup size, default
//   64 on GPUs; CPU adapters 8 = one SIMD vector), RB (rows per workgroup, 1..8; GPUs 4, CPU
//   adapters 8, where every load is a per-lane gather and must feed as many FMAs as possible),
//   LR_T (bool, see above). RB·TPR ≤ 1024 (workgroup memory).
// Dispatch: ceil(rows / RB) workgroups, folded into y.
//
// Skinny backward reductions over rows (dA = duᵀ·x [r, K] and dB = dzᵀ·u [N, r]). Both are
//     G[j, c] = Σ_m low[m, j]·big[m, c]      low [rows, r], big [rows, C]
// written as [r, C] (OUT_T = false: dA with big = x, low = du, C = K) or as [C, r] (OUT_T = true:
// dB with big = dz, low = u, C = N). A general tiled matmul launches only ceil(r/tile)·ceil(C/tile)
// workgroups for this and walks all rows serially; instead the rows are split into chunks:
//   lowrank_grad: workgroup (wid.x, wid.y) = (block of GWG·CB columns, chunk of g.span rows);
//     invocation t owns columns c0 + i·GWG (i < CB, c0 = wid.x·GWG·CB + t), so consecutive lanes
//     read consecutive addresses of a row and each load of low[m, ·] serves CB columns; four
//     rank accumulators (a vec4) per column, RANK > 4 takes one pass over the chunk per four.
//     With g.chunks = 1 it writes the final layout directly; otherwise partial sums
//     part[chunk, j, c] ([chunks, r, C]).
//     1 big  array<f32> (read)  [rows, C]           (x or dz)
//     2 low  array<f32> (read)  [rows, r]           (du or u)
//     3 out  array<f32> (write) [chunks, r, C] partials, or (chunks = 1) [r, C] / [C, r] (OUT_T)
//   lowrank_grad_sum: 1-D over r·C (i = j·C + c, folded into y, workgroups of 256); sums the
//     partials over chunk = 0, 1, …, chunks − 1 in that fixed order (deterministic, no atomics).
//     1 part array<f32> (read)  [chunks, r, C]
//     2 res  array<f32> (write) [r, C] (OUT_T = false) or [C, r] (OUT_T = true)
// G { rows: u32, cols: u32 (C), r: u32, span: u32 (rows per chunk: 32, or a multiple of 32 when
//     rows would need more than the host's cap of 512 chunks), chunks: u32 (= ceil(rows / span)) }
// Overrides: RANK, GWG (lowrank_grad workgroup size, default 64), CB (columns per invocation,
//   1..8; GPUs 1, CPU adapters 4), OUT_T (bool, output layout, see above).
// Dispatch: lowrank_grad [ceil(C / (GWG·CB)), chunks, 1]; lowrank_grad_sum grid1d(r·C, 256).

override RANK: u32 = 4u;
override TPR: u32 = 64u;
override RB: u32 = 4u;
override LR_T: bool = false;

struct P {
  rows: u32,
  k: u32,
  r: u32,
  pad: u32,
  s: f32,
}

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> lr: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

var<workgroup> partial: array<vec4f, 1024>; // RB * TPR <= 1024

/** lr(j, k), 0 past the rank (those accumulator lanes are never stored). */
fn lr_at(j: u32, k: u32) -> f32 {
  if (j >= RANK) {
    return 0.0;
  }
  if (LR_T) {
    return lr[k * RANK + j];
  }
  return lr[j * p.k + k];
}

@compute @workgroup_size(TPR)
fn lowrank_proj(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  // The TPR invocations split the K dimension (lane t reads k = t, t + TPR, ...: consecutive
  // lanes read consecutive addresses) and carry RB rows at once, so each load of the factor
  // lr(·, k) serves RB rows. Rows past the end are clamped to the last row: computed, not stored.
  let row0 = (wid.x + wid.y * nwg.x) * RB;
  let last = p.rows - 1u;
  for (var j0 = 0u; j0 < RANK; j0 += 4u) {
    var acc: array<vec4f, 8>;
    for (var i = 0u; i < RB; i++) {
      acc[i] = vec4f(0.0);
    }
    for (var k = lid; k < p.k; k += TPR) {
      let f = vec4f(lr_at(j0, k), lr_at(j0 + 1u, k), lr_at(j0 + 2u, k), lr_at(j0 + 3u, k));
      for (var i = 0u; i < RB; i++) {
        acc[i] += x[min(row0 + i, last) * p.k + k] * f;
      }
    }
    for (var i = 0u; i < RB; i++) {
      partial[i * TPR + lid] = acc[i];
    }
    workgroupBarrier();
    // Invocation i < RB sums row i's TPR partials in lane order (deterministic).
    if (lid < RB && row0 + lid < p.rows) {
      var sum = vec4f(0.0);
      for (var t = 0u; t < TPR; t++) {
        sum += partial[lid * TPR + t];
      }
      for (var j = 0u; j < 4u; j++) {
        if (j0 + j < RANK) {
          out[(row0 + lid) * RANK + j0 + j] = p.s * sum[j];
        }
      }
    }
    workgroupBarrier();
  }
}


// ---- skinny backward reductions over rows: G[j, c] = Σ_m low[m, j]·big[m, c] ----

override GWG: u32 = 64u;
override CB: u32 = 1u;
override OUT_T: bool = false;

struct G {
  rows: u32,
  cols: u32,
  r: u32,
  span: u32,
  chunks: u32,
}

@group(0) @binding(0) var<uniform> g: G;
// lowrank_grad: binding 1 = big (x above), binding 2 = low (lr above), binding 3 = out (above).
// lowrank_grad_sum: binding 1 = part (x above), binding 2 = res.
@group(0) @binding(2) var<storage, read_write> res: array<f32>;

/** low[m, j], 0 past the rank (those accumulator lanes are never stored). */
fn low_at(m: u32, j: u32) -> f32 {
  if (j >= RANK) {
    return 0.0;
  }
  return lr[m * RANK + j];
}

/** Final-layout index of G[j, c]. */
fn res_index(j: u32, c: u32) -> u32 {
  if (OUT_T) {
    return c * RANK + j;
  }
  return j * g.cols + c;
}

@compute @workgroup_size(GWG)
fn lowrank_grad(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  // Invocation lid owns columns c0 + i·GWG (i < CB) of the workgroup's GWG·CB columns, so each
  // load of low[m, ·] serves CB columns and consecutive lanes read consecutive addresses.
  let c0 = wid.x * GWG * CB + lid;
  if (c0 >= g.cols) { return; } // no barriers below
  let chunk = wid.y;
  let m0 = chunk * g.span;
  let m1 = min(g.rows, m0 + g.span);
  let last = g.cols - 1u;
  for (var j0 = 0u; j0 < RANK; j0 += 4u) {
    var acc: array<vec4f, 8>;
    for (var i = 0u; i < CB; i++) {
      acc[i] = vec4f(0.0);
    }
    for (var m = m0; m < m1; m++) {
      let f = vec4f(low_at(m, j0), low_at(m, j0 + 1u), low_at(m, j0 + 2u), low_at(m, j0 + 3u));
      for (var i = 0u; i < CB; i++) {
        acc[i] += x[m * g.cols + min(c0 + i * GWG, last)] * f;
      }
    }
    for (var i = 0u; i < CB; i++) {
      let c = c0 + i * GWG;
      if (c < g.cols) {
        for (var j = 0u; j < 4u; j++) {
          if (j0 + j < RANK) {
            if (g.chunks == 1u) {
              out[res_index(j0 + j, c)] = acc[i][j];
            } else {
              out[(chunk * RANK + j0 + j) * g.cols + c] = acc[i][j];
            }
          }
        }
      }
    }
  }
}

@compute @workgroup_size(256)
fn lowrank_grad_sum(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  let rc = RANK * g.cols;
  if (i >= rc) { return; }
  var acc = 0.0;
  for (var t = 0u; t < g.chunks; t++) {
    acc += x[t * rc + i];
  }
  res[res_index(i / g.cols, i % g.cols)] = acc;
}
