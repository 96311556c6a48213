// infonce.wgsl — fused gen->real InfoNCE loss (GMAIL Eq. 1) with in-kernel L2 normalisation,
// top-1 accuracy, and the backward into the student embeddings G (and the learnable log tau).
// Tiled like a matmul; kernels/infonce_sg.wgsl holds the subgroup-broadcast variants of the two
// tile kernels for CPU adapters (llvmpipe, subgroup size 8), same bindings and buffers.
// uses: lib/grid, lib/workgroup_reduce, lib/infonce_io
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
//   cosine term (cos_w > 0): cos_i = gh_i . rh_i = S_ii * tau, cosine = (1/B) sum_i (1 - cos_i),
//                        loss += cos_w * cosine      (added to either variant, not halved)
// Backward (gl = dL/dloss):
//   dS_ij  = gl/B * (softmax_j(S_i.)_j - [i==j])                      (x 0.5 and
//            + gl/B * (softmax_i(S_.j)_i - [i==j])  when symmetric     both terms)
//   dgh_i  = sum_j dS_ij / tau * rh_j              (a [B, M] x [M, D] product)
//            - gl * cos_w / B * rh_i               (cosine term: its diagonal, in the same product)
//   proj_i = gh_i . dgh_i = sum_j dS_ij S_ij       (so it needs no pass over D)
//            - gl * cos_w / B * cos_i              (cosine term)
//   dG_i   = (dgh_i - gh_i proj_i) / ||G_i||       (||G_i|| <= eps: dG_i = dgh_i / eps)
//   dlogtau = -sum_i sum_j dS_ij S_ij              (dS/dlogtau = -S; the cosine term has no tau)
// R gets no gradient: the teacher is frozen.
//
// Buffers:
//   stats (f32, 4B + 3M, + B with the cosine term):
//     [4i+0] lse_i  [4i+1] loss_i  [4i+2] correct_i  [4i+3] ||G_i|| (unclamped)   for i < B
//     [4B + j]                1 / max(||R_j||, eps)                               for j < M
//     [4B + M + 2j], [+1]     clse_j, closs_j (symmetric only)                    for j < M
//     [4B + 3M + i]           cos_i (cosine term only; written by the tile)        for i < B
//   part (f32, 3 B ntc + 2 M ntr): per-tile softmax partials of S.
//     [3 (c B + i)] + 0,1,2   max, sum exp(S - max), argmax (bitcast u32) of row i over column tile c
//     [3 B ntc + 2 (r M + j)] + 0,1   max, sum exp of column j over row tile r (symmetric only)
//
// Bindings (group 0), P = uniform { b, m, d, flags, ntc, ntr: u32, eps, inv_tau, cos_w: f32 }
//   (lib/infonce_io, which declares P and the tile kernels' bindings)
//   fwd_tile:  1 G, 2 R, 3 logtau [1] (any buffer when not learnable), 4 S [B, M] (w),
//              5 part (w), 6 stats (w: norms, and cos_i with the cosine term)
//   bwd_tile:  1 G, 2 R, 3 S, 4 stats, 5 logtau, 6 gloss [1], 7 dG [B, D] (w), 8 dlogtau_rows [B] (w)
//   fwd_merge, fwd_merge_cosine (declared here):
//     1  fm_part:  array<f32> (read)   part
//     2  fm_s:     array<f32> (read)   S
//     3  fm_stats: array<f32> (write)  stats (read and written)
//     4  fm_loss:  array<f32> (write)  [1]
//     5  fm_acc:   array<f32> (write)  [1] accuracy
//   fwd_merge_cosine only (the cosine term; fwd_merge runs without it):
//     6  fm_terms: array<f32> (write)  [2] the loss's two terms: InfoNCE, cosine
//   reduce_dlogtau (declared here):
//     1  rd_rows: array<f32> (read)    dlogtau_rows
//     2  rd_out:  array<f32> (write)   [1] dlogtau
//
// Structure:
//   fwd_tile: workgroup (x, y) computes the S tile rows y*BM.., columns x*BN.. (BM = TM*WY,
//     BN = TN*WX); invocation (tx, ty) owns TM x TN outputs (rows ty*TM+r, columns tx*TN+c).
//     G and R tiles of BK coordinates of D are staged in workgroup memory with loads coalesced
//     along D; the norms ||G_i||^2, ||R_j||^2 are accumulated from the same staged values. Then
//     S is scaled and stored, and per-row (and, when symmetric, per-column) max / sum-exp /
//     argmax over the tile are merged through workgroup memory into `part`.
//   fwd_merge: one workgroup (WG) merges the ntc (ntr) partials per row (column), writes the
//     per-row stats and reduces loss and accuracy (and, as fwd_merge_cosine, the cosine term and
//     the two terms apart). Forward = 2 dispatches, symmetric and cosine term included.
//   bwd_tile: workgroup (x, y) computes dG rows y*BM.., coordinates x*BN.. of D; the K loop runs
//     over the columns j of S: the A tile is dS_ij / tau / ||R_j|| computed from S while staging
//     (loads coalesced along j), the B tile is R (coalesced along D). The staging invocations also
//     accumulate proj_i = sum_j dS_ij S_ij, reduced through workgroup memory; the epilogue projects
//     and scales. Workgroups x = 0 write -proj_i for dlogtau. The cosine term adds its diagonal
//     to the A tile and its projection in the epilogue. Backward = 1 dispatch (2 learnable).
//   reduce_dlogtau: one workgroup.
// Overrides: WG (lib/grid: fwd_merge / reduce_dlogtau workgroup size, a power of two, default 256);
//   TM, TN (outputs per invocation along rows / columns, 1..4, default 4), WX = WY = 16 and
//   BK = 16 (fixed in practice: staging arrays hold 1024 = BK * 64 floats, so BK*TM*WY <= 1024,
//   BK*TN*WX <= 1024, and BK == WX == WY for the partial-reduction reuse of those arrays).

override TM: u32 = 4u;
override TN: u32 = 4u;
override WX: u32 = 16u;
override WY: u32 = 16u;
override BK: u32 = 16u;
override BM: u32 = TM * WY;
override BN: u32 = TN * WX;

var<workgroup> sv: array<f32, 64>;

// ---- forward tile: S tile + norms + softmax partials ------------------------------------------

@compute @workgroup_size(WX, WY, 1)
fn fwd_tile(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
            @builtin(local_invocation_index) t: u32) {
  let i0 = wid.y * BM;
  let j0 = wid.x * BN;
  let tx = lid.x;
  let ty = lid.y;
  var acc: array<array<f32, 4>, 4>;
  var gg: array<f32, 4>;
  var rr: array<f32, 4>;
  for (var k0 = 0u; k0 < p.d; k0 += BK) {
    // Stage G[i0.., k0..] as sa[kk * BM + m] and R[j0.., k0..] as sb[kk * BN + n], kk fastest.
    for (var e = t; e < BK * BM; e += WX * WY) {
      let kk = e % BK;
      let m = e / BK;
      let i = i0 + m;
      let k = k0 + kk;
      sa[kk * BM + m] = select(0.0, ft_g[min(i * p.d + k, arrayLength(&ft_g) - 1u)], i < p.b && k < p.d);
    }
    for (var e = t; e < BK * BN; e += WX * WY) {
      let kk = e % BK;
      let n = e / BK;
      let j = j0 + n;
      let k = k0 + kk;
      sb[kk * BN + n] = select(0.0, ft_r[min(j * p.d + k, arrayLength(&ft_r) - 1u)], j < p.m && k < p.d);
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk++) {
      var a: array<f32, 4>;
      var bv: array<f32, 4>;
      for (var r = 0u; r < TM; r++) { a[r] = sa[kk * BM + ty * TM + r]; gg[r] += a[r] * a[r]; }
      for (var c = 0u; c < TN; c++) { bv[c] = sb[kk * BN + tx * TN + c]; rr[c] += bv[c] * bv[c]; }
      for (var r = 0u; r < TM; r++) {
        for (var c = 0u; c < TN; c++) { acc[r][c] += a[r] * bv[c]; }
      }
    }
    workgroupBarrier();
  }
  let it = tau_inverse(ft_logtau[0]);
  var ginv: array<f32, 4>;
  var rinv: array<f32, 4>;
  for (var r = 0u; r < TM; r++) {
    let i = i0 + ty * TM + r;
    let gn = sqrt(gg[r]);
    ginv[r] = it / max(gn, p.eps);
    if (i < p.b && wid.x == 0u && tx == 0u) { ft_stats[4u * i + 3u] = gn; }
  }
  for (var c = 0u; c < TN; c++) {
    let j = j0 + tx * TN + c;
    rinv[c] = 1.0 / max(sqrt(rr[c]), p.eps);
    if (j < p.m && wid.y == 0u && ty == 0u) { ft_stats[4u * p.b + j] = rinv[c]; }
  }
  let ncol = min(BN, p.m - j0);
  let nrow = min(BM, p.b - i0);
  // S, and this invocation's row partials over its TN columns -> sa/sb/si[m * WX + tx].
  for (var r = 0u; r < TM; r++) {
    let i = i0 + ty * TM + r;
    var mx = NEG_BIG;
    var am = NO_INDEX;
    for (var c = 0u; c < TN; c++) {
      let s = acc[r][c] * ginv[r] * rinv[c];
      acc[r][c] = s;
      let j = j0 + tx * TN + c;
      if (j < p.m) {
        if (i < p.b) { ft_s[i * p.m + j] = s; }
        store_diagonal_cosine(i, j, s, it);
        if (s > mx) { mx = s; am = j; }
      }
    }
    var se = 0.0;
    for (var c = 0u; c < TN; c++) {
      if (j0 + tx * TN + c < p.m) { se += exp(acc[r][c] - mx); }
    }
    let slot = (ty * TM + r) * WX + tx;
    sa[slot] = mx;
    sb[slot] = se;
    si[slot] = am;
  }
  workgroupBarrier();
  if (t < nrow) { write_row_partial(t * WX, WX, 3u * (wid.x * p.b + i0 + t)); }
  if (symmetric()) {
    workgroupBarrier();
    for (var c = 0u; c < TN; c++) {
      var mx = NEG_BIG;
      for (var r = 0u; r < TM; r++) {
        if (i0 + ty * TM + r < p.b) { mx = max(mx, acc[r][c]); }
      }
      var se = 0.0;
      for (var r = 0u; r < TM; r++) {
        if (i0 + ty * TM + r < p.b) { se += exp(acc[r][c] - mx); }
      }
      let slot = (tx * TN + c) * WY + ty;
      sa[slot] = mx;
      sb[slot] = se;
    }
    workgroupBarrier();
    if (t < ncol) {
      var mx = NEG_BIG;
      for (var y = 0u; y < WY; y++) { mx = max(mx, sa[t * WY + y]); }
      var se = 0.0;
      for (var y = 0u; y < WY; y++) { se += sb[t * WY + y] * exp(sa[t * WY + y] - mx); }
      let o = 3u * p.b * p.ntc + 2u * (wid.y * p.m + j0 + t);
      ft_part[o] = mx;
      ft_part[o + 1u] = se;
    }
  }
}

// ---- forward merge: per-row stats, loss, accuracy -----------------------------------------------

/// Merges the partials, writes the stats, loss and accuracy; returns the loss's two terms
/// (InfoNCE, and the cosine term's mean (1 - cos_i), 0 without it) to every invocation.
fn merge(t: u32) -> vec2f {
  var ls = 0.0;
  var cs = 0.0;
  var dis = 0.0;
  for (var i = t; i < p.b; i += WG) {
    var mx = NEG_BIG;
    var am = NO_INDEX;
    for (var c = 0u; c < p.ntc; c++) {
      let v = fm_part[3u * (c * p.b + i)];
      if (v > mx) { mx = v; am = bitcast<u32>(fm_part[3u * (c * p.b + i) + 2u]); }
    }
    var se = 0.0;
    for (var c = 0u; c < p.ntc; c++) {
      let o = 3u * (c * p.b + i);
      se += fm_part[o + 1u] * exp(fm_part[o] - mx);
    }
    let lse = mx + log(se);
    let li = lse - fm_s[i * p.m + i];
    let ok = select(0.0, 1.0, am == i);
    fm_stats[4u * i] = lse;
    fm_stats[4u * i + 1u] = li;
    fm_stats[4u * i + 2u] = ok;
    ls += li;
    cs += ok;
    if (cosine()) { dis += 1.0 - fm_stats[cosine_slot(i)]; }
  }
  var col = 0.0;
  if (symmetric()) {
    let base = 3u * p.b * p.ntc;
    for (var j = t; j < p.m; j += WG) {
      var mx = NEG_BIG;
      for (var r = 0u; r < p.ntr; r++) { mx = max(mx, fm_part[base + 2u * (r * p.m + j)]); }
      var se = 0.0;
      for (var r = 0u; r < p.ntr; r++) {
        let o = base + 2u * (r * p.m + j);
        se += fm_part[o + 1u] * exp(fm_part[o] - mx);
      }
      let clse = mx + log(se);
      let cl = clse - fm_s[j * p.m + j];
      fm_stats[4u * p.b + p.m + 2u * j] = clse;
      fm_stats[4u * p.b + p.m + 2u * j + 1u] = cl;
      col += cl;
    }
  }
  let row_loss = workgroup_sum(t, ls) / f32(p.b);
  let correct = workgroup_sum(t, cs);
  let col_loss = workgroup_sum(t, col) / f32(p.m);
  let nce = select(row_loss, 0.5 * (row_loss + col_loss), symmetric());
  var cosine_term = 0.0;
  if (cosine()) { cosine_term = workgroup_sum(t, dis) / f32(p.b); }
  if (t == 0u) {
    fm_loss[0] = select(nce, nce + p.cos_w * cosine_term, cosine());
    fm_acc[0] = correct / f32(p.b);
  }
  return vec2f(nce, cosine_term);
}

@compute @workgroup_size(WG)
fn fwd_merge(@builtin(local_invocation_index) t: u32) {
  merge(t);
}

@compute @workgroup_size(WG)
fn fwd_merge_cosine(@builtin(local_invocation_index) t: u32) {
  let terms = merge(t);
  if (t == 0u) {
    fm_terms[0] = terms.x;
    fm_terms[1] = terms.y;
  }
}

// ---- backward tile: dG = project(dS / tau . rh) -------------------------------------------------

@compute @workgroup_size(WX, WY, 1)
fn bwd_tile(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
            @builtin(local_invocation_index) t: u32) {
  let i0 = wid.y * BM;
  let n0 = wid.x * BN;
  let tx = lid.x;
  let ty = lid.y;
  let it = tau_inverse(bt_logtau[0]);
  let gl = bt_gloss[0];
  let coef = gl / f32(p.b) * select(1.0, 0.5, symmetric());
  var acc: array<array<f32, 4>, 4>;
  // Staging element e = t + q*WX*WY of the A tile is (row e / BK, column e % BK): invocation t
  // always stages column t % BK of rows t / BK + q * (WX*WY/BK); pj[q] sums dS*S over its j.
  var pj: array<f32, 4>;
  for (var j0 = 0u; j0 < p.m; j0 += BK) {
    var q = 0u;
    for (var e = t; e < BK * BM; e += WX * WY) {
      let kk = e % BK;
      let m = e / BK;
      let i = i0 + m;
      let j = j0 + kk;
      var v = 0.0;
      if (i < p.b && j < p.m) {
        let s = bt_s[i * p.m + j];
        let ds = dlogit(i, j, s, bt_stats[4u * i], column_lse(j), coef);
        pj[q] += ds * s;
        let rinv = bt_stats[4u * p.b + j];
        v = ds * it * rinv + cosine_grad(i, j, rinv, gl);
      }
      sa[kk * BM + m] = v;
      q++;
    }
    for (var e = t; e < BK * BN; e += WX * WY) {
      let n = e % BN;
      let kk = e / BN;
      let j = j0 + kk;
      let k = n0 + n;
      sb[kk * BN + n] = select(0.0, bt_r[min(j * p.d + k, arrayLength(&bt_r) - 1u)], j < p.m && k < p.d);
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk++) {
      var a: array<f32, 4>;
      var bv: array<f32, 4>;
      for (var r = 0u; r < TM; r++) { a[r] = sa[kk * BM + ty * TM + r]; }
      for (var c = 0u; c < TN; c++) { bv[c] = sb[kk * BN + tx * TN + c]; }
      for (var r = 0u; r < TM; r++) {
        for (var c = 0u; c < TN; c++) { acc[r][c] += a[r] * bv[c]; }
      }
    }
    workgroupBarrier();
  }
  // proj_i: reduce the staging partials (slot = row * BK + column-in-chunk).
  var q = 0u;
  for (var e = t; e < BK * BM; e += WX * WY) {
    sa[(e / BK) * BK + e % BK] = pj[q];
    q++;
  }
  workgroupBarrier();
  if (t < BM) {
    var s = 0.0;
    for (var kk = 0u; kk < BK; kk++) { s += sa[t * BK + kk]; }
    sv[t] = s;
    if (wid.x == 0u && i0 + t < p.b) { bt_dlogtau_rows[i0 + t] = -s; }
  }
  workgroupBarrier();
  for (var r = 0u; r < TM; r++) {
    let m = ty * TM + r;
    let i = i0 + m;
    if (i < p.b) {
      let gnorm = bt_stats[4u * i + 3u];
      let ginv = 1.0 / max(gnorm, p.eps);
      let proj = select(0.0, sv[m] + cosine_projection(i, gl), gnorm > p.eps);
      for (var c = 0u; c < TN; c++) {
        let k = n0 + tx * TN + c;
        if (k < p.d) {
          let idx = i * p.d + k;
          bt_dg[idx] = (acc[r][c] - bt_g[idx] * ginv * proj) * ginv;
        }
      }
    }
  }
}

@compute @workgroup_size(WG)
fn reduce_dlogtau(@builtin(local_invocation_index) t: u32) {
  var s = 0.0;
  for (var i = t; i < p.b; i += WG) { s += rd_rows[i]; }
  let total = workgroup_sum(t, s);
  if (t == 0u) { rd_out[0] = total; }
}
