// softmax.wgsl — softmax over the last axis, forward and backward, one workgroup per row.
// uses: lib/grid, lib/workgroup_reduce
// dtypes: f32, f16
//
// The input is viewed as [rows, D] (row-major, D = last dim). Each workgroup owns one row;
// its WG invocations stride over the row (element i is handled by invocation i % WG) and
// combine their partial results with a tree reduction in workgroup memory
// (lib/workgroup_reduce). Rows of any length work; D up to a few thousand costs D / WG loads
// per invocation per sweep.
//
// Bindings (group 0), elements of the storage type T (f32 or f16). A binding number is reused
// across entry points, never inside one.
//   softmax_forward:
//     0  p:  P (uniform)         { rows: u32, d: u32 }
//     1  x:  array<T> (read)    [rows, D]
//     2  y:  array<T> (write)   [rows, D]
//   softmax_backward:
//     0  p:  P (uniform)         { rows: u32, d: u32 }
//     1  ys: array<T> (read)    [rows, D]  the saved forward output y
//     2  g:  array<T> (read)    [rows, D]  dL/dy
//     3  dx: array<T> (write)   [rows, D]  dL/dx
//
// Math (per row, numerically stable):
//   forward:  m = max_j x_j;  s = sum_j exp(x_j - m);  y_i = exp(x_i - m) / s
//             (-inf entries, e.g. masked scores, give y_i = 0; a row that is all -inf gives NaN,
//              as in PyTorch)
//   backward: dx_i = y_i * (g_i - sum_j g_j * y_j)
// All math is f32 whatever T is: elements are widened on load (f32(x[i])), the max, the sum of
// exponentials and the dot product are f32 (so is the workgroup memory of the reductions), and
// only the stored y / dx are rounded to T.
// Sweeps: forward reads the row three times (max, sum, write), backward twice (dot, write);
// rows are short enough to stay in cache, and this keeps no per-row state in registers.
//
// Dispatch: one workgroup per row, rows folded into y past 65535 workgroups:
//   row = wid.x + wid.y * nwg.x  (the guard row < rows is workgroup-uniform, so barriers are legal).
// Overrides: WG (lib/grid: workgroup size, a power of two, default 256; the host picks it from D).

struct P { rows: u32, d: u32 }

// -FLT_MAX: the identity for max over finite values (and larger than -inf).
const LOWEST: f32 = -3.40282346638528859812e+38;

@compute @workgroup_size(WG)
fn softmax_forward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                   @builtin(local_invocation_index) lid: u32) {
  let row = row_index(wid, nwg);
  if (row >= p.rows) { return; }
  let base = row * p.d;
  var m = LOWEST;
  for (var i = lid; i < p.d; i += WG) { m = max(m, f32(x[base + i])); }
  m = workgroup_max(lid, m);
  var s = 0.0;
  for (var i = lid; i < p.d; i += WG) { s += exp(f32(x[base + i]) - m); }
  s = workgroup_sum(lid, s);
  for (var i = lid; i < p.d; i += WG) { y[base + i] = T(exp(f32(x[base + i]) - m) / s); }
}

@compute @workgroup_size(WG)
fn softmax_backward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                    @builtin(local_invocation_index) lid: u32) {
  let row = row_index(wid, nwg);
  if (row >= p.rows) { return; }
  let base = row * p.d;
  var dot = 0.0;
  for (var i = lid; i < p.d; i += WG) { dot += f32(g[base + i]) * f32(ys[base + i]); }
  dot = workgroup_sum(lid, dot);
  for (var i = lid; i < p.d; i += WG) { dx[base + i] = T(f32(ys[base + i]) * (f32(g[base + i]) - dot)); }
}
