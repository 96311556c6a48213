// l2normalize.wgsl — row-wise L2 normalisation y = x / max(||x||, eps), and its backward.
// Matches torch.nn.functional.normalize(x, p=2, dim=-1, eps).
// uses: lib/grid, lib/workgroup_reduce
// dtypes: f32, f16
//
// The input is viewed as [rows, D] (rows over the last dim), row-major, elements of the storage
// type T (f32 or f16). The saved row norms are f32 for either T: [rows] floats, and backward
// divides by them.
//
// Bindings (group 0):
//   0  p:      P (uniform)           { rows: u32, d: u32, _pad0: u32, _pad1: u32, eps: f32 }
//   forward:
//   1  fx:     array<T> (read)       x [rows, D]
//   2  fy:     array<T> (write)      y [rows, D]
//   3  fnorms: array<f32> (write)    [rows] ||x_r||, unclamped, saved for backward
//   backward:
//   1  bgy:    array<T> (read)       dL/dy [rows, D]
//   2  by:     array<T> (read)       the forward output y [rows, D]
//   3  bnorms: array<f32> (read)     [rows]
//   4  bgx:    array<T> (write)      dL/dx [rows, D]
//
// Math (n = ||x_r||, m = max(n, eps)):
//   forward:  y = x / m
//   backward: n >  eps: gx = (gy - y * (y . gy)) / n      (projection off the unit direction)
//             n <= eps: gx = gy / eps                      (the clamp makes the map linear)
// All math is f32 whatever T is: elements are widened on load, Σx² and y·gy are f32 sums (as is
// the workgroup memory of the reduction), and only the stored y / gx are rounded to T.
//
// One workgroup per row; WG invocations stride over D and combine partial sums with a
// shared-memory tree reduction (lib/workgroup_reduce). Row index = wid.x + wid.y * nwg.x (the
// host folds rows > 65535 into y). Overrides: WG (lib/grid: workgroup size, a power of two,
// default 256).

struct P { rows: u32, d: u32, _pad0: u32, _pad1: u32, eps: f32 }

// ---- forward ----------------------------------------------------------------------------------

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) t: u32) {
  let row = row_index(wid, nwg);
  if (row >= p.rows) { return; }
  let base = row * p.d;
  var ss = 0.0;
  for (var k = t; k < p.d; k += WG) {
    let v = f32(fx[base + k]);
    ss += v * v;
  }
  let n = sqrt(workgroup_sum(t, ss));
  let inv = 1.0 / max(n, p.eps);
  for (var k = t; k < p.d; k += WG) {
    fy[base + k] = T(f32(fx[base + k]) * inv);
  }
  if (t == 0u) { fnorms[row] = n; }
}

// ---- backward ---------------------------------------------------------------------------------

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) t: u32) {
  let row = row_index(wid, nwg);
  if (row >= p.rows) { return; }
  let base = row * p.d;
  var dot = 0.0;
  for (var k = t; k < p.d; k += WG) {
    dot += f32(by[base + k]) * f32(bgy[base + k]);
  }
  let yg = workgroup_sum(t, dot);
  let n = bnorms[row];
  let inv = 1.0 / max(n, p.eps);
  let proj = select(0.0, yg, n > p.eps);
  for (var k = t; k < p.d; k += WG) {
    bgx[base + k] = T((f32(bgy[base + k]) - f32(by[base + k]) * proj) * inv);
  }
}
