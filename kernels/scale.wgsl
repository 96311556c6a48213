// scale.wgsl — out = alpha * a + beta (elementwise affine by scalars).
// uses: lib/grid
//
// Bindings (group 0):
//   0  uniform P { n: u32, _pad0..2: u32, alpha: f32, beta: f32 }
//   1  a:   array<f32> (read)   n elements
//   2  out: array<f32> (write)  n elements
//
// Math: out[i] = alpha * a[i] + beta
// Dispatch: 1-D over n, folded into y: i = gid.x + gid.y * nwg.x * WG.
// Overrides: WG (lib/grid: workgroup size, default 256).

struct P {
  n: u32,
  _p0: u32,
  _p1: u32,
  _p2: u32,
  alpha: f32,
  beta: f32,
}

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat_index(gid, nwg);
  if (i >= p.n) { return; }
  out[i] = p.alpha * a[i] + p.beta;
}
