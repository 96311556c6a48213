// infonce_sg.wgsl — the InfoNCE tile kernels for CPU adapters (llvmpipe/lavapipe), f32.
// uses: lib/infonce_io, lib/subgroup_broadcast
//
// Same math, buffers, bindings and outputs as fwd_tile / bwd_tile in kernels/infonce.wgsl (read
// its header; P and the bindings are lib/infonce_io's; fwd_merge and reduce_dlogtau come from
// infonce.wgsl unchanged). Compiled only where the 'subgroups' feature exists and chosen only
// when the subgroup size is exactly 8, like kernels/matmul_sg.wgsl and for the same reason
// (lib/subgroup_broadcast): on Mesa 25's llvmpipe every load in a loop is a per-lane gather, so
// each lane loads ONE element of the row operand per 8 rows and subgroupBroadcast hands it to
// all 8 lanes from registers; the column operand is CN vec4s of the invocation's own columns.
// Per k: RG + 4*CN gathers (plus RG exps and 1-2 gathers of per-column
// stats in the backward) for 32*RG*CN vector FMAs.
//
// fwd_tile_sg: workgroup (WG_X) computes S rows wid.y*RM.. (RM = 8*RG), columns
//   wid.x*BN.. (BN = 4*CN*WG_X); invocation x owns columns n0 = (wid.x*WG_X + x)*4*CN .. +4*CN,
//   all RM rows. Lane l of each subgroup loads G[m0 + 8g + l, k] and accumulates that row's
//   ||G||^2; ||R_j||^2 comes from the invocation's own vec4 loads. Row partials are merged across
//   the WG_X invocations through workgroup memory; column partials (symmetric) are complete in
//   each invocation. Bindings as fwd_tile.
// bwd_tile_sg: rows wid.y*RM.., D coordinates n0 = (wid.x*WG_X + x)*4*CN..; the K loop runs over
//   the columns j of S: lane l computes a_j = dS_ij / tau / ||R_j|| for row i = m0 + 8g + l from S
//   (and proj_i += dS_ij S_ij), R[j, n0..] is read as vec4s. Bindings as bwd_tile.
// The cosine term (lib/infonce_io) enters as in infonce.wgsl: the forward stores the diagonal
//   cosines, the backward adds the diagonal's gradient to a_i and its projection to proj_i.
// Overrides: WG_X (invocations per workgroup, a multiple of 8), RG (row groups of 8), CN (vec4
//   column groups per invocation), RG*CN <= 2: the register block holds ACC_ROWS = 16 vec4s.

override WG_X: u32 = 32u;
override RG: u32 = 2u;
override CN: u32 = 1u;
override RM: u32 = 8u * RG;
const ACC_ROWS: u32 = 16u;

// ---- forward ----------------------------------------------------------------------------------

@compute @workgroup_size(WG_X, 1, 1)
fn fwd_tile_sg(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
               @builtin(subgroup_invocation_id) lane: u32) {
  let m0 = wid.y * RM;
  let n0 = (wid.x * WG_X + lid.x) * 4u * CN;
  let last_g = arrayLength(&ft_g) - 1u;
  let last_r = arrayLength(&ft_r) - 1u;
  var acc: array<vec4f, ACC_ROWS>;
  var gg: array<f32, 4>;
  var rr: array<vec4f, 4>;
  for (var k = 0u; k < p.d; k++) {
    var b: array<vec4f, 4>;
    for (var c = 0u; c < CN; c++) {
      var v: vec4f;
      for (var q = 0u; q < 4u; q++) {
        let j = n0 + 4u * c + q;
        v[q] = select(0.0, ft_r[min(j * p.d + k, last_r)], j < p.m);
      }
      b[c] = v;
      rr[c] += v * v;
    }
    for (var g = 0u; g < RG; g++) {
      let i = m0 + 8u * g + lane;
      let av = select(0.0, ft_g[min(i * p.d + k, last_g)], i < p.b);
      gg[g] += av * av;
      for (var c = 0u; c < CN; c++) {
        bcast8_fma(&acc, 8u * g * CN + c, av, b[c]);
      }
    }
  }
  let it = tau_inverse(ft_logtau[0]);
  // Row scales: lane l holds row 8g + l's norm.
  var rowscale: array<f32, 32>;
  for (var g = 0u; g < RG; g++) {
    let i = m0 + 8u * g + lane;
    let gn = sqrt(gg[g]);
    if (wid.x == 0u && lid.x < 8u && i < p.b) { ft_stats[4u * i + 3u] = gn; }
    let sc = bcast8(it / max(gn, p.eps));
    for (var l = 0u; l < 8u; l++) { rowscale[8u * g + l] = sc[l]; }
  }
  var rinv: array<vec4f, 4>;
  for (var c = 0u; c < CN; c++) {
    rinv[c] = 1.0 / max(sqrt(rr[c]), vec4f(p.eps));
    for (var q = 0u; q < 4u; q++) {
      let j = n0 + 4u * c + q;
      if (wid.y == 0u && j < p.m) { ft_stats[4u * p.b + j] = rinv[c][q]; }
    }
  }
  // S, and row partials over this invocation's 4*CN columns.
  for (var r = 0u; r < RM; r++) {
    let i = m0 + r;
    var mx = NEG_BIG;
    var am = NO_INDEX;
    for (var c = 0u; c < CN; c++) {
      let sv = acc[r * CN + c] * rowscale[r] * rinv[c];
      acc[r * CN + c] = sv;
      for (var q = 0u; q < 4u; q++) {
        let j = n0 + 4u * c + q;
        if (j < p.m) {
          if (i < p.b) { ft_s[i * p.m + j] = sv[q]; }
          store_diagonal_cosine(i, j, sv[q], it);
          if (sv[q] > mx) { mx = sv[q]; am = j; }
        }
      }
    }
    var se = 0.0;
    for (var c = 0u; c < CN; c++) {
      for (var q = 0u; q < 4u; q++) {
        if (n0 + 4u * c + q < p.m) { se += exp(acc[r * CN + c][q] - mx); }
      }
    }
    sa[r * WG_X + lid.x] = mx;
    sb[r * WG_X + lid.x] = se;
    si[r * WG_X + lid.x] = am;
  }
  workgroupBarrier();
  let t = lid.x;
  for (var r = t; r < RM; r += WG_X) {
    if (m0 + r < p.b) { write_row_partial(r * WG_X, WG_X, 3u * (wid.x * p.b + m0 + r)); }
  }
  if (symmetric()) {
    let nrow = min(RM, p.b - m0);
    for (var c = 0u; c < CN; c++) {
      var mx = vec4f(NEG_BIG);
      for (var r = 0u; r < nrow; r++) { mx = max(mx, acc[r * CN + c]); }
      var se = vec4f(0.0);
      for (var r = 0u; r < nrow; r++) { se += exp(acc[r * CN + c] - mx); }
      for (var q = 0u; q < 4u; q++) {
        let j = n0 + 4u * c + q;
        if (j < p.m) {
          let o = 3u * p.b * p.ntc + 2u * (wid.y * p.m + j);
          ft_part[o] = mx[q];
          ft_part[o + 1u] = se[q];
        }
      }
    }
  }
}

// ---- backward ---------------------------------------------------------------------------------

@compute @workgroup_size(WG_X, 1, 1)
fn bwd_tile_sg(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
               @builtin(subgroup_invocation_id) lane: u32) {
  let m0 = wid.y * RM;
  let n0 = (wid.x * WG_X + lid.x) * 4u * CN;
  let last_r = arrayLength(&bt_r) - 1u;
  let last_s = arrayLength(&bt_s) - 1u;
  let it = tau_inverse(bt_logtau[0]);
  let gl = bt_gloss[0];
  let coef = gl / f32(p.b) * select(1.0, 0.5, symmetric());
  var lse: array<f32, 4>;
  for (var g = 0u; g < RG; g++) { lse[g] = bt_stats[4u * min(m0 + 8u * g + lane, p.b - 1u)]; }
  var acc: array<vec4f, ACC_ROWS>;
  var pj: array<f32, 4>;
  for (var j = 0u; j < p.m; j++) {
    var b: array<vec4f, 4>;
    for (var c = 0u; c < CN; c++) {
      var v: vec4f;
      for (var q = 0u; q < 4u; q++) {
        let k = n0 + 4u * c + q;
        v[q] = select(0.0, bt_r[min(j * p.d + k, last_r)], k < p.d);
      }
      b[c] = v;
    }
    let rinv = bt_stats[4u * p.b + j];
    let cscale = it * rinv;
    let clse = column_lse(j);
    for (var g = 0u; g < RG; g++) {
      let i = m0 + 8u * g + lane;
      let s = bt_s[min(i * p.m + j, last_s)];
      let ds = select(0.0, dlogit(i, j, s, lse[g], clse, coef), i < p.b);
      pj[g] += ds * s;
      let av = ds * cscale + select(0.0, cosine_grad(i, j, rinv, gl), i < p.b);
      for (var c = 0u; c < CN; c++) {
        bcast8_fma(&acc, 8u * g * CN + c, av, b[c]);
      }
    }
  }
  // Lane l holds row 8g + l: its -proj for dlogtau, then (ginv, ginv^2 * proj) to all lanes.
  var ginv: array<f32, 32>;
  var pg: array<f32, 32>;
  for (var g = 0u; g < RG; g++) {
    let i = m0 + 8u * g + lane;
    if (wid.x == 0u && lid.x < 8u && i < p.b) { bt_dlogtau_rows[i] = -pj[g]; }
    let gnorm = bt_stats[4u * min(i, p.b - 1u) + 3u];
    let gi = 1.0 / max(gnorm, p.eps);
    let proj = select(0.0, pj[g] + cosine_projection(min(i, p.b - 1u), gl), gnorm > p.eps);
    let a = bcast8(gi);
    let c = bcast8(gi * gi * proj);
    for (var l = 0u; l < 8u; l++) {
      ginv[8u * g + l] = a[l];
      pg[8u * g + l] = c[l];
    }
  }
  for (var r = 0u; r < RM; r++) {
    let i = m0 + r;
    if (i < p.b) {
      for (var c = 0u; c < CN; c++) {
        for (var q = 0u; q < 4u; q++) {
          let k = n0 + 4u * c + q;
          if (k < p.d) {
            let idx = i * p.d + k;
            bt_dg[idx] = acc[r * CN + c][q] * ginv[r] - bt_g[idx] * pg[r];
          }
        }
      }
    }
  }
}
