// scale.wgsl — out = alpha * a + beta (elementwise affine by scalars).
// uses: lib/grid
// dtypes: f32, f16
//
// Bindings (group 0), elements of the storage type T (f32 or f16):
//   0  p: P (uniform) { n: u32, _pad0..2: u32, alpha: f32, beta: f32 }
//   1  a:   array<T> (read)   n elements
//   2  out: array<T> (write)  n elements
//
// Math: out[i] = alpha * a[i] + beta, in f32 (alpha and beta stay f32 for f16 storage), rounded
// to T when stored.
// Dispatch: 1-D over n, folded into y: i = gid.x + gid.y * nwg.x * WG.
// Overrides: WG (lib/grid: workgroup size, default 256).

struct P { n: u32, _p0: u32, _p1: u32, _p2: u32, alpha: f32, beta: f32 }

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat_index(gid, nwg);
  if (i >= p.n) { return; }
  out[i] = T(p.alpha * f32(a[i]) + p.beta);
}
