// layernorm.wgsl — LayerNorm over the last dim, fused forward and backward.
// uses: lib/grid
// dtypes: f32, f16
//
// x is viewed as [rows, D] (row-major). x, weight, bias, y, g, dx, dweight, dbias have the
// storage type T (f32 or f16; weight and bias have x's dtype). mean and rstd ([rows]) and the
// dweight / dbias partial sums are f32 for either T: they are small, and the backward needs the
// statistics unrounded. weight, bias, dweight, dbias are [D].
// All math is f32: elements are widened on load (f32(x[i])); the Welford statistics, the affine,
// the backward's row sums and the column sums over rows are f32 (so is the workgroup memory), and
// only y, dx, dweight and dbias are rounded to T when stored.
//
// Entry points and bindings (group 0). A binding number is reused across entry points, never
// inside one; each entry's layout is listed in order.
//     0  p:        P (uniform)          { rows: u32, d: u32, chunk_rows: u32, chunks: u32, eps: f32 }
//   ln_forward              one workgroup per row
//     1  x:        array<T> (read)      [rows, D]
//     2  weight:   array<T> (read)      [D]
//     3  bias:     array<T> (read)      [D]
//     4  y:        array<T> (write)     [rows, D]
//     5  mean_out: array<f32> (write)   [rows]
//     6  rstd_out: array<f32> (write)   [rows]
//   ln_backward_input       one workgroup per row: 1 x, 2 weight, then
//     3  g:        array<T> (read)      dL/dy [rows, D]
//     4  mean_s:   array<f32> (read)    [rows]
//     5  rstd_s:   array<f32> (read)    [rows]
//     6  dx:       array<T> (write)     [rows, D]
//   ln_backward_params_partial   2-D grid [ceil(D / WG), chunks], one invocation per (column,
//     chunk): 1 x, 2 weight (bound, unused: keeps the layout of ln_backward_input), 3 g,
//     4 mean_s, 5 rstd_s, then
//     6  part:     array<f32> (write)   [2, chunks, D]
//   ln_backward_params_final     1-D grid over D
//     1  partials: array<f32> (read)    [2, chunks, D]
//     2  dweight:  array<T> (write)     [D]
//     3  dbias:    array<T> (write)     [D]
//
// Math, per row r with n = D:
//   forward:  mean = sum_i x_i / n,  var = sum_i (x_i - mean)^2 / n  (biased, as PyTorch),
//             rstd = 1 / sqrt(var + eps),  xhat_i = (x_i - mean) * rstd,  y_i = xhat_i * w_i + b_i
//             Statistics in one sweep with Welford's update per invocation (over its strided
//             elements), then Chan's pairwise merge of (count, mean, M2) in a tree in workgroup
//             memory: stable for rows with a large mean, unlike E[x^2] - E[x]^2.
//   backward: gw_i = g_i * w_i
//             dx_i = rstd * (gw_i - mean_j(gw_j) - xhat_i * mean_j(gw_j * xhat_j))
//             dweight_i = sum_r g_ri * xhat_ri,   dbias_i = sum_r g_ri
//   The parameter gradients are reduced over all rows without atomics, deterministically:
//   ln_backward_params_partial sums chunk_rows consecutive rows per chunk into
//   part[0, chunk, i] (dweight) and part[1, chunk, i] (dbias); ln_backward_params_final sums
//   the chunks in order. Adjacent invocations read adjacent columns (coalesced).
//
// Row dispatch: row = wid.x + wid.y * nwg.x (folded past 65535 workgroups); the row < rows
// guard is workgroup-uniform, so the barriers after it are legal.
// Overrides: WG (lib/grid: workgroup size, a power of two for the row kernels; the host picks 32..256
// from D for the row kernels and 64 for the column kernels).

struct P { rows: u32, d: u32, chunk_rows: u32, chunks: u32, eps: f32 }

var<workgroup> w_count: array<f32, WG>;
var<workgroup> w_mean: array<f32, WG>;
var<workgroup> w_m2: array<f32, WG>;
var<workgroup> red2: array<vec2f, WG>;

@compute @workgroup_size(WG)
fn ln_forward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
              @builtin(local_invocation_index) lid: u32) {
  let row = row_index(wid, nwg);
  if (row >= p.rows) { return; }
  let base = row * p.d;
  // Welford over this invocation's elements lid, lid + WG, ...
  var n = 0.0;
  var m = 0.0;
  var m2 = 0.0;
  for (var i = lid; i < p.d; i += WG) {
    let v = f32(x[base + i]);
    n += 1.0;
    let delta = v - m;
    m += delta / n;
    m2 += delta * (v - m);
  }
  w_count[lid] = n;
  w_mean[lid] = m;
  w_m2[lid] = m2;
  workgroupBarrier();
  // Chan's merge of (count, mean, M2) pairs.
  for (var s = WG / 2u; s > 0u; s = s >> 1u) {
    if (lid < s) {
      let na = w_count[lid];
      let nb = w_count[lid + s];
      let nt = na + nb;
      if (nb > 0.0) {
        let delta = w_mean[lid + s] - w_mean[lid];
        let fb = nb / nt;
        w_mean[lid] = w_mean[lid] + delta * fb;
        w_m2[lid] = w_m2[lid] + w_m2[lid + s] + delta * delta * na * fb;
        w_count[lid] = nt;
      }
    }
    workgroupBarrier();
  }
  let mean = w_mean[0];
  let rstd = 1.0 / sqrt(w_m2[0] / f32(p.d) + p.eps);
  for (var i = lid; i < p.d; i += WG) {
    y[base + i] = T((f32(x[base + i]) - mean) * rstd * f32(weight[i]) + f32(bias[i]));
  }
  if (lid == 0u) {
    mean_out[row] = mean;
    rstd_out[row] = rstd;
  }
}

@compute @workgroup_size(WG)
fn ln_backward_input(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                     @builtin(local_invocation_index) lid: u32) {
  let row = row_index(wid, nwg);
  if (row >= p.rows) { return; }
  let base = row * p.d;
  let mean = mean_s[row];
  let rstd = rstd_s[row];
  var acc = vec2f(0.0);
  for (var i = lid; i < p.d; i += WG) {
    let gw = f32(g[base + i]) * f32(weight[i]);
    let xhat = (f32(x[base + i]) - mean) * rstd;
    acc += vec2f(gw, gw * xhat);
  }
  red2[lid] = acc;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s >> 1u) {
    if (lid < s) { red2[lid] = red2[lid] + red2[lid + s]; }
    workgroupBarrier();
  }
  let inv_d = 1.0 / f32(p.d);
  let mean_gw = red2[0].x * inv_d;
  let mean_gwx = red2[0].y * inv_d;
  for (var i = lid; i < p.d; i += WG) {
    let gw = f32(g[base + i]) * f32(weight[i]);
    let xhat = (f32(x[base + i]) - mean) * rstd;
    dx[base + i] = T(rstd * (gw - mean_gw - xhat * mean_gwx));
  }
}

@compute @workgroup_size(WG)
fn ln_backward_params_partial(@builtin(global_invocation_id) gid: vec3u) {
  let col = gid.x;
  let chunk = gid.y;
  if (col >= p.d || chunk >= p.chunks) { return; }
  let r0 = chunk * p.chunk_rows;
  let r1 = min(r0 + p.chunk_rows, p.rows);
  var sw = 0.0;
  var sb = 0.0;
  for (var r = r0; r < r1; r++) {
    let gv = f32(g[r * p.d + col]);
    sw += gv * (f32(x[r * p.d + col]) - mean_s[r]) * rstd_s[r];
    sb += gv;
  }
  part[chunk * p.d + col] = sw;
  part[(p.chunks + chunk) * p.d + col] = sb;
}

@compute @workgroup_size(WG)
fn ln_backward_params_final(@builtin(global_invocation_id) gid: vec3u) {
  let col = gid.x;
  if (col >= p.d) { return; }
  var sw = 0.0;
  var sb = 0.0;
  for (var c = 0u; c < p.chunks; c++) {
    sw += partials[c * p.d + col];
    sb += partials[(p.chunks + c) * p.d + col];
  }
  dweight[col] = T(sw);
  dbias[col] = T(sb);
}
