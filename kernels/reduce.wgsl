// reduce.wgsl — sum / mean over one axis, and its adjoint (broadcast back along that axis).
// uses: lib/grid
// dtypes: f32, f16
//
// The input is viewed as [outer, K, inner] with the reduced axis in the middle.
//
// Bindings (group 0), elements of the storage type T (f32 or f16):
//   0  p: P (uniform) { outer: u32, k: u32, inner: u32, _pad: u32, alpha: f32 }
//   1  x:   array<T> (read)
//   2  out: array<T> (write)
//
// Math:
//   reduce_axis: out[o, i]    = alpha * sum_{j<K} x[o, j, i]     (alpha = 1 for sum, 1/K for mean)
//   expand_axis: out[o, j, i] = alpha * x[o, i]                  (adjoint of reduce_axis)
//
// One invocation per output element; reduce_axis accumulates sequentially in f32 for either
// storage type (simple, deterministic; the tuned reductions come later), and each result is
// rounded to T once, when stored. Dispatch is 1-D folded into y:
// idx = gid.x + gid.y * nwg.x * WG.
// Overrides: WG (lib/grid: workgroup size, default 256).

struct P { outer: u32, k: u32, inner: u32, _pad: u32, alpha: f32 }

@compute @workgroup_size(WG)
fn reduce_axis(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = flat_index(gid, nwg);
  if (idx >= p.outer * p.inner) { return; }
  let o = idx / p.inner;
  let i = idx % p.inner;
  let base = o * p.k * p.inner + i;
  var s = 0.0;
  for (var j = 0u; j < p.k; j++) {
    s += f32(x[base + j * p.inner]);
  }
  out[idx] = T(p.alpha * s);
}

@compute @workgroup_size(WG)
fn expand_axis(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = flat_index(gid, nwg);
  let total = p.outer * p.k * p.inner;
  if (idx >= total) { return; }
  let i = idx % p.inner;
  let o = idx / (p.k * p.inner);
  out[idx] = T(p.alpha * f32(x[o * p.inner + i]));
}
