// lora.wgsl — the rank-r pieces of a LoRA projection; the dense part is the matmul kernels.
// dtypes: f32, f16
//
// LoRA (PEFT semantics): y = x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ with W [N, K] frozen, A [r, K], B [N, r],
// s = lora_alpha / r. src/ops/lora.ts computes
//   forward:  u  = s·x·Aᵀ [rows, r]                               (lowrank_proj, here)
//             y  = x·Wᵀ + b + u·Bᵀ                                 (ONE matmul: the frozen product
//                                                                  with u·Bᵀ as its low-rank addend,
//                                                                  lib/matmul_epilogue, LR_RANK)
//   backward: du = s·dz·B [rows, r]                               (lowrank_proj with LR_T)
//             dx = dz·W + du·A                                     (ONE matmul, addend du·A)
//             dA = duᵀ·x [r, K],  dB = dzᵀ·u [N, r]               (lowrank_grad below, one dispatch)
// No operand is copied or packed, and no dW is ever formed: the frozen weight costs the same
// matmul as in a plain linear layer, plus r FMAs per output and three skinny passes over rows.
//
// Storage types (mixed precision): T (f32, or f16 with the f16 prelude) is the dtype of the
// activations x, dz and of the projections u, du (which the matmul's low-rank addend reads as
// T, with T copies of B and A as its second factor, made by src/ops/lora.ts). The LoRA factors
// A and B are f32 master parameters: lowrank_proj reads them as f32, and
// dA, dB (and the chunk partials) are written in f32, so the gradients reach the masters without
// an f16 rounding and small ones do not underflow. Every sum accumulates in f32; the only f16
// roundings are the stores of u and du.
//
// lowrank_proj: a workgroup of TPR invocations owns RB consecutive rows; the invocations split K
//   (lane t reads k = t, t + TPR, …) and each carries all RB rows, so one load of lr(·, k) serves
//   RB rows. Partials go through workgroup memory; invocation i < RB sums row i's TPR partials in
//   lane order (deterministic). Ranks are done four at a time (one vec4 accumulator per row);
//   RANK > 4 re-reads the rows once per group of four.
//   0  p:   P (uniform)        { rows: u32, k: u32, r: u32, pad: u32, s: f32 }
//   1  x:   array<T> (read)    [rows, K]
//   2  lr:  array<f32> (read)  the low-rank factor: A [r, K] (LR_T = false) or B [K, r] (LR_T =
//                              true, used for du = s·dz·B where the "K" of this pass is N)
//   3  out: array<T> (write)   u [rows, r]: u[m, j] = s·Σ_k x[m, k]·lr(j, k), summed in f32, one
//                              rounding to T at the store
// Overrides: RANK (r, so the rank loops have constant trip counts), TPR (workgroup size, default
//   64 on GPUs; CPU adapters 8 = one SIMD vector), RB (rows per workgroup, 1..8; GPUs 4, CPU
//   adapters 8, where every load is a per-lane gather and must feed as many FMAs as possible),
//   LR_T (bool, see above). RB·TPR ≤ 1024 (workgroup memory).
// Dispatch: ceil(rows / RB) workgroups, folded into y.
//
// Skinny backward reductions over rows, both in one dispatch (+ one summing dispatch):
//     problem 0: dA = duᵀ·x  [r, K]   (big0 = x  [rows, K], low0 = du [rows, r])
//     problem 1: dB = dzᵀ·u  [N, r]   (big1 = dz [rows, N], low1 = u  [rows, r])
// i.e. G[j, c] = Σ_m low[m, j]·big[m, c], stored [r, C] for problem 0 and [C, r] for problem 1.
// A general tiled matmul launches only ceil(r/tile)·ceil(C/tile) workgroups for these and walks
// all rows serially; instead the rows are split into chunks:
//   lowrank_grad: workgroup (wid.x, wid.y, wid.z) = (block of GWG·CB columns, chunk of g.span
//     rows, problem wid.z + g.z0); invocation t owns columns c0 + i·GWG (i < CB,
//     c0 = wid.x·GWG·CB + t), so consecutive lanes read consecutive addresses of a row and each
//     load of low[m, ·] serves CB columns; four rank accumulators (a vec4) per column, RANK > 4
//     takes one pass over the chunk per four. With g.chunks = 1 it writes dA to out0 and dB to
//     out1 directly; otherwise partial sums part[chunk, j, c'] ([chunks, r, cols0 + cols1],
//     problem 1's columns after problem 0's) to out0.
//     0  g:    G (uniform)         (below)
//     1  big0: array<T> (read)
//     2  low0: array<T> (read)
//     3  big1: array<T> (read)
//     4  low1: array<T> (read)
//     5  out0: array<f32> (write)  sums in f32
//     6  out1: array<f32> (write)  unused with chunks > 1
//   lowrank_grad_sum: 1-D over r·(cols0 + cols1) (folded into y, workgroups of 256); sums the
//     partials over chunk = 0, 1, …, chunks − 1 in that fixed order (deterministic, no atomics)
//     and writes dA [r, K] or dB [N, r].
//     1  part: array<f32> (read)
//     2  res0: array<f32> (write)  dA
//     3  res1: array<f32> (write)  dB
//   A problem that is not wanted has cols = 0 (its buffers are dummies); g.z0 = 1 skips problem 0.
// G { rows, cols0, cols1, span (rows per chunk: 32, or a multiple of 32 when rows would need
//     more than the host's cap of 512 chunks), chunks (= ceil(rows / span)), z0 }
// Overrides: RANK, GWG (lowrank_grad workgroup size, default 64), CB (columns per invocation,
//   1..8; GPUs 1, CPU adapters 4).
// Dispatch: lowrank_grad [ceil(max(cols0, cols1) / (GWG·CB)), chunks, number of problems];
//   lowrank_grad_sum grid1d(r·(cols0 + cols1), 256), only when chunks > 1.

override RANK: u32 = 4u;
override TPR: u32 = 64u;
override RB: u32 = 4u;
override LR_T: bool = false;

struct P { rows: u32, k: u32, r: u32, pad: u32, s: f32 }

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
        acc[i] += f32(x[min(row0 + i, last) * p.k + k]) * f;
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
          out[(row0 + lid) * RANK + j0 + j] = T(p.s * sum[j]);
        }
      }
    }
    workgroupBarrier();
  }
}

// ---- skinny backward reductions over rows, dA and dB in one dispatch ----

override GWG: u32 = 64u;
override CB: u32 = 1u;

struct G {
  rows: u32,
  cols0: u32,  // C of problem 0 (dA: K), 0 when dA is not wanted
  cols1: u32,  // C of problem 1 (dB: N), 0 when dB is not wanted
  span: u32,
  chunks: u32,
  z0: u32,     // problem of workgroup z = 0 (1 when only dB is wanted)
}

/** low[m, j], 0 past the rank (those accumulator lanes are never stored). */
fn low_at(low: ptr<storage, array<T>, read>, m: u32, j: u32) -> f32 {
  if (j >= RANK) {
    return 0.0;
  }
  return f32((*low)[m * RANK + j]);
}

// The row loop of one problem. The buffers come in as pointers, so the choice between problem
// 0 and 1 is made once per workgroup, outside the loop (on llvmpipe a branch per row cost
// 4.9 ms against 3.7 ms for dA + dB at 1600 x 768). Ranks j0..j0+3 of columns c0 + i·GWG,
// rows m0..m1.
fn reduce_rows(big: ptr<storage, array<T>, read>, low: ptr<storage, array<T>, read>, m0: u32, m1: u32, j0: u32, c0: u32, cols: u32) -> array<vec4f, 8> {
  var acc: array<vec4f, 8>;
  let last = cols - 1u;
  for (var m = m0; m < m1; m++) {
    let f = vec4f(low_at(low, m, j0), low_at(low, m, j0 + 1u), low_at(low, m, j0 + 2u), low_at(low, m, j0 + 3u));
    for (var i = 0u; i < CB; i++) {
      acc[i] += f32((*big)[m * cols + min(c0 + i * GWG, last)]) * f;
    }
  }
  return acc;
}

@compute @workgroup_size(GWG)
fn lowrank_grad(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  // Invocation lid owns columns c0 + i·GWG (i < CB) of the workgroup's GWG·CB columns, so each
  // load of low[m, ·] serves CB columns and consecutive lanes read consecutive addresses.
  let prob = wid.z + g.z0; // workgroup-uniform
  let cols = select(g.cols1, g.cols0, prob == 0u);
  let c0 = wid.x * GWG * CB + lid;
  if (c0 >= cols) { return; } // no barriers below
  let chunk = wid.y;
  let m0 = chunk * g.span;
  let m1 = min(g.rows, m0 + g.span);
  let total = g.cols0 + g.cols1;
  let base = select(g.cols0, 0u, prob == 0u); // the problem's first column in the partials
  for (var j0 = 0u; j0 < RANK; j0 += 4u) {
    var acc: array<vec4f, 8>;
    if (prob == 0u) {
      acc = reduce_rows(&big0, &low0, m0, m1, j0, c0, cols);
    } else {
      acc = reduce_rows(&big1, &low1, m0, m1, j0, c0, cols);
    }
    for (var i = 0u; i < CB; i++) {
      let c = c0 + i * GWG;
      if (c < cols) {
        for (var j = 0u; j < 4u; j++) {
          if (j0 + j < RANK) {
            if (g.chunks > 1u) {
              out0[(chunk * RANK + j0 + j) * total + base + c] = acc[i][j];
            } else if (prob == 0u) {
              out0[(j0 + j) * cols + c] = acc[i][j];   // dA [r, K]
            } else {
              out1[c * RANK + j0 + j] = acc[i][j];     // dB [N, r]
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
  let total = g.cols0 + g.cols1;
  let rc = RANK * total;
  if (i >= rc) { return; }
  var acc = 0.0;
  for (var t = 0u; t < g.chunks; t++) {
    acc += part[t * rc + i];
  }
  let j = i / total;
  let c = i % total;
  if (c < g.cols0) {
    res0[j * g.cols0 + c] = acc;
  } else {
    res1[(c - g.cols0) * RANK + j] = acc;
  }
}
