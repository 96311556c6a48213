// lib/infonce_io.wgsl — uniforms, tile-kernel bindings and shared math of the fused InfoNCE loss
// (kernels/infonce.wgsl, whose header gives the math and the buffer layouts, and
// kernels/infonce_sg.wgsl).
//
// Uniform P { b, m, d, flags, ntc, ntr: u32, eps, inv_tau, cos_w: f32 }: G is [b, d], R is [m, d];
// flags bit 0: tau comes from logtau[0] (learnable); bit 1: symmetric; bit 2: the cosine term
// cos_w * mean_i(1 - cos(G_i, R_i)) is added (cos_w > 0); ntc / ntr: column / row tiles of S in
// the forward tile kernel.
// Bindings it declares (group 0):
//   0  p: P (uniform)                  for every entry point of both kernels
//   forward tile (fwd_tile, fwd_tile_sg):
//   1  ft_g:      array<f32> (read)    G
//   2  ft_r:      array<f32> (read)    R
//   3  ft_logtau: array<f32> (read)    [1]; any buffer when not learnable
//   4  ft_s:      array<f32> (write)   S [B, M]
//   5  ft_part:   array<f32> (write)   part
//   6  ft_stats:  array<f32> (write)   stats (norms, and cos_ii when the cosine term is on)
//   backward tile (bwd_tile, bwd_tile_sg):
//   1  bt_g:      array<f32> (read)    G
//   2  bt_r:      array<f32> (read)    R
//   3  bt_s:      array<f32> (read)    S
//   4  bt_stats:  array<f32> (read)    stats
//   5  bt_logtau: array<f32> (read)    [1]
//   6  bt_gloss:  array<f32> (read)    [1] dL/dloss
//   7  bt_dg:     array<f32> (write)   dG [B, D]
//   8  bt_dlogtau_rows: array<f32> (write)  [B]
// Workgroup memory it declares: sa, sb (f32) and si (u32), 1024 each: the tile kernels' staging
//   and their per-invocation softmax partials (max, Σexp, argmax) of the rows of a tile.
// Functions: learnable(), symmetric(), tau_inverse(logtau) = 1/tau, and
//   dlogit(i, j, s, lse_i, clse_j, coef) = dL/dS_ij
//     = coef * (exp(s - lse_i) - [i == j]  +  (symmetric) exp(s - clse_j) - [i == j])
//   with coef = gl/B (halved when symmetric), s = S_ij, clse_j the column's logsumexp;
//   write_row_partial(base, count, o) merges the count partials of one row at sa/sb/si[base ..]
//   into part[o .. o+2] = (max, Σ exp(S - max), argmax as bitcast u32; ties: the first).
// The cosine term (flags bit 2), whose diagonal cosines cos_ii = gh_i . rh_i = S_ii * tau sit in
//   stats[cosine_slot(i)] = stats[4B + 3M + i]:
//   store_diagonal_cosine(i, j, s, inv_tau) (forward tiles) stores S_ij * tau there when j == i;
//   cosine_grad(i, j, rinv_j, gl) = its dL/dgh_i contribution, as a multiple of R_j:
//     -gl * cos_w / B * rinv_j when j == i, else 0 (not halved when symmetric);
//   cosine_projection(i, gl) = gh_i . (that contribution) = -gl * cos_w / B * cos_ii.
//   Its loss does not depend on tau, so it adds nothing to dlogtau.

struct P { b: u32, m: u32, d: u32, flags: u32, ntc: u32, ntr: u32, eps: f32, inv_tau: f32, cos_w: f32 }

// A finite "minus infinity" for running maxima, and "no column yet" for argmax.
const NEG_BIG: f32 = -3.0e38;
const NO_INDEX: u32 = 0xffffffffu;

fn learnable() -> bool { return (p.flags & 1u) != 0u; }
fn symmetric() -> bool { return (p.flags & 2u) != 0u; }
fn tau_inverse(logtau: f32) -> f32 { return select(p.inv_tau, exp(-logtau), learnable()); }
fn cosine() -> bool { return (p.flags & 4u) != 0u; }
fn cosine_slot(i: u32) -> u32 { return 4u * p.b + 3u * p.m + i; }

fn store_diagonal_cosine(i: u32, j: u32, s: f32, inv_tau: f32) {
  if (cosine() && i == j && i < p.b) { ft_stats[cosine_slot(i)] = s / inv_tau; }
}

fn cosine_grad(i: u32, j: u32, rinv_j: f32, gl: f32) -> f32 {
  if (cosine() && i == j) { return -gl * p.cos_w / f32(p.b) * rinv_j; }
  return 0.0;
}

fn cosine_projection(i: u32, gl: f32) -> f32 {
  if (cosine()) { return -gl * p.cos_w / f32(p.b) * bt_stats[cosine_slot(i)]; }
  return 0.0;
}

fn dlogit(i: u32, j: u32, s: f32, lse_i: f32, clse_j: f32, coef: f32) -> f32 {
  let pos = select(0.0, 1.0, j == i);
  var v = exp(s - lse_i) - pos;
  if (symmetric()) { v += exp(s - clse_j) - pos; }
  return coef * v;
}

/// clse_j (the logsumexp of column j, stored by fwd_merge) when symmetric, else 0 (unused).
fn column_lse(j: u32) -> f32 {
  if (symmetric()) { return bt_stats[4u * p.b + p.m + 2u * j]; }
  return 0.0;
}

var<workgroup> sa: array<f32, 1024>;
var<workgroup> sb: array<f32, 1024>;
var<workgroup> si: array<u32, 1024>;

fn write_row_partial(base: u32, count: u32, o: u32) {
  var mx = NEG_BIG;
  var am = NO_INDEX;
  for (var x = 0u; x < count; x++) {
    let v = sa[base + x];
    if (v > mx) { mx = v; am = si[base + x]; }
  }
  var se = 0.0;
  for (var x = 0u; x < count; x++) { se += sb[base + x] * exp(sa[base + x] - mx); }
  ft_part[o] = mx;
  ft_part[o + 1u] = se;
  ft_part[o + 2u] = bitcast<f32>(am);
}
