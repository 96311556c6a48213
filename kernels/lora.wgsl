// lora.wgsl — operand packing that turns a LoRA projection into ONE matmul (forward and dx).
//
// LoRA (PEFT semantics): y = x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ with W [N, K] frozen, A [r, K], B [N, r],
// s = lora_alpha / r. Appending r columns to both operands folds the low-rank path into the
// frozen matmul's K loop:
//     y = [x | s·x·Aᵀ] · [W | B]ᵀ + b           (K' = K + r)
// Backward, with dz = dy (after the activation), du = s·dz·B [rows, r]:
//     dx = [dz | du] · [W ; A]                     (one matmul with K' = N + r)
//     dA = duᵀ·x,  dB = dzᵀ·(s·u)                  (rank-r products, cheap)
// No dW is ever formed: the frozen weight costs the same as in a plain linear layer.
//
// Entry points and bindings (group 0, binding 0 = uniform P):
//   pack_rows: TPR invocations per row of x, WG / TPR rows per workgroup.
//     1 x   array<f32> (read)  [rows, K]
//     2 lr  array<f32> (read)  the low-rank factor: A [r, K] (LR_T = false) or B [K, r] (LR_T = true,
//                               used for du = s·dz·B where the "K" of this pass is N)
//     3 out array<f32> (write) [rows, K + r]: out[m, k] = x[m, k]; out[m, K + j] = s·Σ_k x[m, k]·lr(j, k)
//     4 u   array<f32> (write) [rows, r]:     u[m, j] = s·Σ_k x[m, k]·lr(j, k)   (kept for backward)
//   pack_cols: 1-D over N·(K + r).
//     1 w   array<f32> (read)  [N, K]
//     2 b   array<f32> (read)  [N, r]
//     3 out array<f32> (write) [N, K + r]: out[n, k] = w[n, k] (k < K), b[n, k − K] (k ≥ K)
//
// P { rows: u32, k: u32, r: u32, n: u32, s: f32 }
// Overrides: WG (pack_rows workgroup size, a power of two ≤ 256, default 64), TPR (invocations
//   per row, a power of two with CHUNK (8) ≤ TPR ≤ WG, default 64: one row per workgroup on GPUs; CPU adapters use 8,
//   so eight rows share a workgroup and the reduction tree is 3 barriers deep), LR_T (bool, see
//   above). Ranks are processed in chunks of CHUNK = 8 (private accumulators); ranks ≤ 8 — the
//   usual 4 — take one pass over the row, larger ranks re-read the row once per chunk.
// Dispatch: pack_rows over ceil(rows / (WG/TPR)) workgroups folded into y; pack_cols 1-D folded
//   into y with workgroups of 256.
//
// Skinny backward reductions over rows (dA = duᵀ·x [r, K] and dB = dzᵀ·(s·u) [N, r]). Both are
//     G[j, c] = Σ_m low[m, j]·big[m, c]      low [rows, r], big [rows, C]
// written as [r, C] (OUT_T = false: dA with big = x, low = du, C = K) or as [C, r] (OUT_T = true:
// dB with big = dz, low = s·u, C = N). A general tiled matmul launches only ceil(r/tile)·ceil(C/tile)
// workgroups for this and walks all rows serially; instead the rows are split into chunks:
//   lowrank_grad: workgroup (wid.x, wid.y) = (block of GWG columns, chunk of g.span rows); each
//     invocation owns one column c and keeps ≤ 8 rank accumulators (two vec4s) over the chunk's rows,
//     reading big[m, c] — consecutive invocations read consecutive c of the same row (coalesced);
//     low[m, j] is uniform across the workgroup. Ranks > 8 take one pass over the chunk per
//     8-rank block. With g.chunks = 1 it writes the final layout directly; otherwise it writes
//     partial sums part[chunk, j, c] ([chunks, r, C]).
//     1 big  array<f32> (read)  [rows, C]           (x or dz)
//     2 low  array<f32> (read)  [rows, r]           (du or s·u)
//     3 out  array<f32> (write) [chunks, r, C] partials, or (chunks = 1) [r, C] / [C, r] (OUT_T)
//   lowrank_grad_sum: 1-D over r·C (i = j·C + c, folded into y, workgroups of 256); sums the
//     partials over chunk = 0, 1, …, chunks − 1 in that fixed order (deterministic, no atomics).
//     1 part array<f32> (read)  [chunks, r, C]
//     2 res  array<f32> (write) [r, C] (OUT_T = false) or [C, r] (OUT_T = true)
// G { rows: u32, cols: u32 (C), r: u32, span: u32 (rows per chunk, a multiple of ROWS_PER_WG),
//     chunks: u32 (= ceil(rows / span)) }
// Overrides: GWG (lowrank_grad workgroup size = columns per workgroup, default 64), ROWS_PER_WG
//   (row-chunk granule, default 32: span = ROWS_PER_WG unless rows would need more than the host's
//   chunk cap, then a multiple of it), OUT_T (bool, output layout, see above).
// Dispatch: lowrank_grad [ceil(C / GWG), chunks, 1]; lowrank_grad_sum grid1d(r·C, 256).

override WG: u32 = 64u;
override TPR: u32 = 64u;
const CHUNK: u32 = 8u;
override LR_T: bool = false;

struct P {
  rows: u32,
  k: u32,
  r: u32,
  n: u32,
  s: f32,
}

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> lr: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> u: array<f32>;

var<workgroup> partial: array<f32, 2048>; // CHUNK * WG <= 2048

fn lr_at(j: u32, k: u32) -> f32 {
  if (LR_T) {
    return lr[k * p.r + j];
  }
  return lr[j * p.k + k];
}

@compute @workgroup_size(WG)
fn pack_rows(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  // TPR invocations share a row; a workgroup handles WG / TPR rows. Rows past the end still
  // take part in the barriers (uniform control flow) but load and store nothing.
  let rpw = WG / TPR;
  let slot = lid / TPR;
  let t = lid % TPR;
  let row = (wid.x + wid.y * nwg.x) * rpw + slot;
  let live = row < p.rows;
  let kp = p.k + p.r;
  for (var j0 = 0u; j0 < p.r; j0 += CHUNK) {
    let nj = min(CHUNK, p.r - j0);
    var acc: array<f32, CHUNK>;
    for (var j = 0u; j < CHUNK; j++) { acc[j] = 0.0; }
    if (live) {
      for (var k = t; k < p.k; k += TPR) {
        let v = x[row * p.k + k];
        if (j0 == 0u) { out[row * kp + k] = v; }
        for (var j = 0u; j < nj; j++) {
          acc[j] += v * lr_at(j0 + j, k);
        }
      }
    }
    for (var j = 0u; j < nj; j++) {
      partial[j * WG + lid] = acc[j];
    }
    workgroupBarrier();
    // Tree reduction over the TPR invocations of each row, for every rank of the chunk at once.
    for (var stride = TPR / 2u; stride > 0u; stride /= 2u) {
      if (t < stride) {
        for (var j = 0u; j < nj; j++) {
          partial[j * WG + lid] += partial[j * WG + lid + stride];
        }
      }
      workgroupBarrier();
    }
    if (live && t < nj) {
      let v = p.s * partial[t * WG + slot * TPR];
      out[row * kp + p.k + j0 + t] = v;
      u[row * p.r + j0 + t] = v;
    }
    workgroupBarrier();
  }
}

@group(0) @binding(1) var<storage, read> w_in: array<f32>;
@group(0) @binding(2) var<storage, read> b_in: array<f32>;

@compute @workgroup_size(256)
fn pack_cols(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  let kp = p.k + p.r;
  if (i >= p.n * kp) { return; }
  let n = i / kp;
  let c = i % kp;
  if (c < p.k) {
    out[i] = w_in[n * p.k + c];
  } else {
    out[i] = b_in[n * p.r + (c - p.k)];
  }
}


// ---- skinny backward reductions over rows: G[j, c] = Σ_m low[m, j]·big[m, c] ----

override GWG: u32 = 64u;
override ROWS_PER_WG: u32 = 32u;
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
@group(0) @binding(2) var<storage, read_write> res: array<f32>;

/** low[m, j], zero past the rank (the padding lanes of the vec4 accumulators are never written). */
fn low_at(m: u32, j: u32) -> f32 {
  if (j < g.r) {
    return lr[m * g.r + j];
  }
  return 0.0;
}

/** Final-layout index of G[j, c]. */
fn res_index(j: u32, c: u32) -> u32 {
  if (OUT_T) {
    return c * g.r + j;
  }
  return j * g.cols + c;
}

@compute @workgroup_size(GWG)
fn lowrank_grad(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let c = wid.x * GWG + lid;
  // No barriers below, so out-of-range columns may leave early.
  if (c >= g.cols) { return; }
  let chunk = wid.y;
  let m0 = chunk * g.span;
  let m1 = min(g.rows, m0 + g.span);
  for (var j0 = 0u; j0 < g.r; j0 += CHUNK) {
    let nj = min(CHUNK, g.r - j0);
    let wide = nj > 4u; // uniform
    var a0 = vec4f(0.0);
    var a1 = vec4f(0.0);
    for (var m = m0; m < m1; m++) {
      let v = x[m * g.cols + c];
      a0 += v * vec4f(low_at(m, j0), low_at(m, j0 + 1u), low_at(m, j0 + 2u), low_at(m, j0 + 3u));
      if (wide) {
        a1 += v * vec4f(low_at(m, j0 + 4u), low_at(m, j0 + 5u), low_at(m, j0 + 6u), low_at(m, j0 + 7u));
      }
    }
    for (var j = 0u; j < nj; j++) {
      let val = select(a1[j % 4u], a0[j % 4u], j < 4u);
      if (g.chunks == 1u) {
        out[res_index(j0 + j, c)] = val;
      } else {
        out[(chunk * g.r + j0 + j) * g.cols + c] = val;
      }
    }
  }
}

@compute @workgroup_size(256)
fn lowrank_grad_sum(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  let rc = g.r * g.cols;
  if (i >= rc) { return; }
  var acc = 0.0;
  for (var t = 0u; t < g.chunks; t++) {
    acc += x[t * rc + i];
  }
  res[res_index(i / g.cols, i % g.cols)] = acc;
}
