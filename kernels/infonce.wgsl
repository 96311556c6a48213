// infonce.wgsl — fused gen->real InfoNCE loss (GMAIL Eq. 1) with in-kernel L2 normalisation,
// top-1 accuracy, and the backward into the student embeddings G (and the learnable log tau).
//
// Inputs: student embeddings G [B, D], teacher embeddings R [M, D] (M >= B; rows B..M-1 of R
// are extra negatives). The positive for row i is column i. All buffers row-major f32.
//
// Math (eps clamps norms like F.normalize; tau = exp(logtau) when learnable, else p.inv_tau = 1/tau):
//   gh_i = G_i / max(||G_i||, eps),  rh_j = R_j / max(||R_j||, eps)
//   S_ij = (gh_i . rh_j) / tau                                        S: [B, M]
//   lse_i = logsumexp_j S_ij,  loss_i = lse_i - S_ii,  correct_i = [argmax_j S_ij == i]
//   loss = (1/B) sum_i loss_i,  accuracy = (1/B) sum_i correct_i      (argmax ties -> lowest j)
//   symmetric (M == B): clse_j = logsumexp_i S_ij, closs_j = clse_j - S_jj,
//                        loss = 0.5 * ((1/B) sum_i loss_i + (1/M) sum_j closs_j)
// Backward (gl = dL/dloss):
//   dS_ij  = gl/B * (softmax_j(S_i.)_j - [i==j])                      (x 0.5 and
//            + gl/B * (softmax_i(S_.j)_i - [i==j])  when symmetric     both terms)
//   dgh_i  = sum_j dS_ij / tau * rh_j
//   dG_i   = (dgh_i - gh_i (gh_i . dgh_i)) / ||G_i||      (||G_i|| <= eps: dG_i = dgh_i / eps)
//   dlogtau = -sum_ij dS_ij S_ij                           (dS/dlogtau = -S)
// R gets no gradient: the teacher is frozen.
//
// stats buffer (f32, 4B + 3M):
//   [4i+0] lse_i  [4i+1] loss_i  [4i+2] correct_i  [4i+3] ||G_i|| (unclamped)     for i < B
//   [4B + j]                1 / max(||R_j||, eps)                                 for j < M
//   [4B + M + 2j], [+1]     clse_j, closs_j (symmetric only)                      for j < M
//
// Bindings (group 0), P = uniform { b, m, d, flags: u32, eps, inv_tau: f32 }
//   flags bit 0: tau comes from logtau[0] (learnable); bit 1: symmetric.
//   forward_rows:   1 G, 2 R, 3 logtau [1] (any buffer when not learnable), 4 S [B, M] (w), 5 stats (w)
//   forward_cols:   1 S, 2 stats (rw)                           (symmetric only)
//   reduce_forward: 1 stats, 2 loss [1] (w), 3 accuracy [1] (w)
//   backward_rows:  1 G, 2 R, 3 S, 4 stats, 5 logtau, 6 gloss [1], 7 dG [B, D] (w), 8 dlogtau_rows [B] (w)
//   reduce_dlogtau: 1 dlogtau_rows, 2 dlogtau [1] (w)
//
// Structure: forward_rows / backward_rows run one workgroup per row i of G (row = wid.x + wid.y *
// nwg.x); forward_cols one per column; the reduce_* kernels are one workgroup. In forward_rows
// invocation t owns columns j = t, t + WG, ...; the row G_i is staged through shared memory in
// WG-wide chunks of D and each invocation walks R_j sequentially, accumulating G_i.R_j and
// ||R_j||^2 in the same pass (so R is read once per row). S is written out and read back by the
// invocation that wrote it for the logsumexp pass; backward reuses the saved S. In backward_rows
// invocation t owns coordinates k = t, t + WG, ... of D (reads of R coalesced over k) and the
// per-column coefficients dS_ij / tau * rinv_j are staged through shared memory WG at a time.
// Overrides: WG (workgroup size, a power of two, default 256).

override WG: u32 = 256u;

struct P {
  b: u32,
  m: u32,
  d: u32,
  flags: u32,
  eps: f32,
  inv_tau: f32,
}

@group(0) @binding(0) var<uniform> p: P;

const NEG_BIG: f32 = -3.0e38;
const NO_INDEX: u32 = 0xffffffffu;

var<workgroup> red: array<f32, WG>;
var<workgroup> redi: array<u32, WG>;
var<workgroup> tile: array<f32, WG>;
var<workgroup> pos_logit: f32;

fn learnable() -> bool { return (p.flags & 1u) != 0u; }
fn symmetric() -> bool { return (p.flags & 2u) != 0u; }
fn tau_inverse(logtau: f32) -> f32 { return select(p.inv_tau, exp(-logtau), learnable()); }

fn workgroup_sum(t: u32, v: f32) -> f32 {
  red[t] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s / 2u) {
    if (t < s) { red[t] += red[t + s]; }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}

fn workgroup_max(t: u32, v: f32) -> f32 {
  red[t] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s / 2u) {
    if (t < s) { red[t] = max(red[t], red[t + s]); }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}

// ---- forward: one workgroup per row of G ------------------------------------------------------

@group(0) @binding(1) var<storage, read> fr_g: array<f32>;
@group(0) @binding(2) var<storage, read> fr_r: array<f32>;
@group(0) @binding(3) var<storage, read> fr_logtau: array<f32>;
@group(0) @binding(4) var<storage, read_write> fr_s: array<f32>;
@group(0) @binding(5) var<storage, read_write> fr_stats: array<f32>;

@compute @workgroup_size(WG)
fn forward_rows(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) t: u32) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.b) { return; }
  let gbase = row * p.d;
  var gg = 0.0;
  for (var k = t; k < p.d; k += WG) {
    let v = fr_g[gbase + k];
    gg += v * v;
  }
  let gnorm = sqrt(workgroup_sum(t, gg));
  let scale = tau_inverse(fr_logtau[0]) / max(gnorm, p.eps);
  let sbase = row * p.m;

  // Pass 1: S_ij for the columns this invocation owns, with its running max / argmax.
  var best = NEG_BIG;
  var best_j = NO_INDEX;
  for (var j0 = 0u; j0 < p.m; j0 += WG) {
    let j = j0 + t;
    var dot = 0.0;
    var rr = 0.0;
    for (var d0 = 0u; d0 < p.d; d0 += WG) {
      workgroupBarrier();
      if (d0 + t < p.d) { tile[t] = fr_g[gbase + d0 + t]; }
      workgroupBarrier();
      if (j < p.m) {
        let kn = min(WG, p.d - d0);
        let rbase = j * p.d + d0;
        for (var kk = 0u; kk < kn; kk++) {
          let x = fr_r[rbase + kk];
          dot += tile[kk] * x;
          rr += x * x;
        }
      }
    }
    if (j < p.m) {
      let rinv = 1.0 / max(sqrt(rr), p.eps);
      let s = dot * scale * rinv;
      fr_s[sbase + j] = s;
      if (row == 0u) { fr_stats[4u * p.b + j] = rinv; }
      if (j == row) { pos_logit = s; }
      if (s > best) {
        best = s;
        best_j = j;
      }
    }
  }

  // Row max and argmax (ties -> lowest column, like torch.argmax).
  red[t] = best;
  redi[t] = best_j;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s / 2u) {
    if (t < s) {
      let v = red[t + s];
      let vi = redi[t + s];
      if (v > red[t] || (v == red[t] && vi < redi[t])) {
        red[t] = v;
        redi[t] = vi;
      }
    }
    workgroupBarrier();
  }
  let rmax = red[0];
  let amax = redi[0];
  workgroupBarrier();

  // Pass 2: logsumexp over the row (each invocation reads back the S values it wrote).
  var se = 0.0;
  for (var j = t; j < p.m; j += WG) { se += exp(fr_s[sbase + j] - rmax); }
  let lse = rmax + log(workgroup_sum(t, se));
  if (t == 0u) {
    let st = 4u * row;
    fr_stats[st] = lse;
    fr_stats[st + 1u] = lse - pos_logit;
    fr_stats[st + 2u] = select(0.0, 1.0, amax == row);
    fr_stats[st + 3u] = gnorm;
  }
}

// ---- forward (symmetric): one workgroup per column of S -----------------------------------------

@group(0) @binding(1) var<storage, read> fc_s: array<f32>;
@group(0) @binding(2) var<storage, read_write> fc_stats: array<f32>;

@compute @workgroup_size(WG)
fn forward_cols(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) t: u32) {
  let col = wid.x + wid.y * nwg.x;
  if (col >= p.m) { return; }
  var mx = NEG_BIG;
  for (var i = t; i < p.b; i += WG) { mx = max(mx, fc_s[i * p.m + col]); }
  let cmax = workgroup_max(t, mx);
  var se = 0.0;
  for (var i = t; i < p.b; i += WG) { se += exp(fc_s[i * p.m + col] - cmax); }
  let clse = cmax + log(workgroup_sum(t, se));
  if (t == 0u) {
    let st = 4u * p.b + p.m + 2u * col;
    fc_stats[st] = clse;
    fc_stats[st + 1u] = clse - fc_s[col * p.m + col];
  }
}

// ---- forward: scalars -------------------------------------------------------------------------

@group(0) @binding(1) var<storage, read> rf_stats: array<f32>;
@group(0) @binding(2) var<storage, read_write> rf_loss: array<f32>;
@group(0) @binding(3) var<storage, read_write> rf_acc: array<f32>;

@compute @workgroup_size(WG)
fn reduce_forward(@builtin(local_invocation_index) t: u32) {
  var ls = 0.0;
  var cs = 0.0;
  for (var i = t; i < p.b; i += WG) {
    ls += rf_stats[4u * i + 1u];
    cs += rf_stats[4u * i + 2u];
  }
  var col = 0.0;
  if (symmetric()) {
    for (var j = t; j < p.m; j += WG) { col += rf_stats[4u * p.b + p.m + 2u * j + 1u]; }
  }
  let row_loss = workgroup_sum(t, ls) / f32(p.b);
  let correct = workgroup_sum(t, cs);
  let col_loss = workgroup_sum(t, col) / f32(p.m);
  if (t == 0u) {
    rf_loss[0] = select(row_loss, 0.5 * (row_loss + col_loss), symmetric());
    rf_acc[0] = correct / f32(p.b);
  }
}

// ---- backward: one workgroup per row of G -----------------------------------------------------

@group(0) @binding(1) var<storage, read> br_g: array<f32>;
@group(0) @binding(2) var<storage, read> br_r: array<f32>;
@group(0) @binding(3) var<storage, read> br_s: array<f32>;
@group(0) @binding(4) var<storage, read> br_stats: array<f32>;
@group(0) @binding(5) var<storage, read> br_logtau: array<f32>;
@group(0) @binding(6) var<storage, read> br_gloss: array<f32>;
@group(0) @binding(7) var<storage, read_write> br_dg: array<f32>;
@group(0) @binding(8) var<storage, read_write> br_dlogtau_rows: array<f32>;

// dL/dS_ij for this row (coef = gl/B, halved when symmetric).
fn dlogit(row: u32, j: u32, s: f32, lse: f32, coef: f32) -> f32 {
  let pos = select(0.0, 1.0, j == row);
  var v = exp(s - lse) - pos;
  if (symmetric()) { v += exp(s - br_stats[4u * p.b + p.m + 2u * j]) - pos; }
  return coef * v;
}

@compute @workgroup_size(WG)
fn backward_rows(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) t: u32) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.b) { return; }
  let it = tau_inverse(br_logtau[0]);
  let lse = br_stats[4u * row];
  let gnorm = br_stats[4u * row + 3u];
  let ginv = 1.0 / max(gnorm, p.eps);
  let coef = br_gloss[0] / f32(p.b) * select(1.0, 0.5, symmetric());
  let sbase = row * p.m;
  let gbase = row * p.d;

  // dlogtau contribution of this row: -sum_j dS_ij S_ij.
  var dt = 0.0;
  for (var j = t; j < p.m; j += WG) {
    let s = br_s[sbase + j];
    dt -= dlogit(row, j, s, lse, coef) * s;
  }
  let dt_row = workgroup_sum(t, dt);
  if (t == 0u) { br_dlogtau_rows[row] = dt_row; }

  // dgh_k = sum_j (dS_ij / tau * rinv_j) R_jk; also accumulates gh . dgh.
  var gd = 0.0;
  for (var k0 = 0u; k0 < p.d; k0 += WG) {
    let k = k0 + t;
    var acc = 0.0;
    for (var j0 = 0u; j0 < p.m; j0 += WG) {
      workgroupBarrier();
      let j = j0 + t;
      if (j < p.m) { tile[t] = dlogit(row, j, br_s[sbase + j], lse, coef) * it * br_stats[4u * p.b + j]; }
      workgroupBarrier();
      if (k < p.d) {
        let jn = min(WG, p.m - j0);
        for (var jj = 0u; jj < jn; jj++) { acc += tile[jj] * br_r[(j0 + jj) * p.d + k]; }
      }
    }
    if (k < p.d) {
      br_dg[gbase + k] = acc;
      gd += br_g[gbase + k] * ginv * acc;
    }
  }

  // Through the normalisation: project out the gh_i direction, divide by the norm.
  let proj = select(0.0, workgroup_sum(t, gd), gnorm > p.eps);
  for (var k = t; k < p.d; k += WG) {
    br_dg[gbase + k] = (br_dg[gbase + k] - br_g[gbase + k] * ginv * proj) * ginv;
  }
}

@group(0) @binding(1) var<storage, read> rd_rows: array<f32>;
@group(0) @binding(2) var<storage, read_write> rd_out: array<f32>;

@compute @workgroup_size(WG)
fn reduce_dlogtau(@builtin(local_invocation_index) t: u32) {
  var s = 0.0;
  for (var i = t; i < p.b; i += WG) { s += rd_rows[i]; }
  let total = workgroup_sum(t, s);
  if (t == 0u) { rd_out[0] = total; }
}
