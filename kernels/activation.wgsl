// activation.wgsl — elementwise erf, GELU (exact erf form) and QuickGELU, forward and backward.
// uses: lib/grid, lib/erf, lib/activations
// dtypes: f32, f16
//
// Bindings (group 0), elements of the storage type T (f32 or f16; math in f32). The two entry
// points use different layouts; a binding number is reused across entry points, never inside one.
//   forward:
//     0  p: P (uniform) { n: u32 }   (padded to 16 bytes)
//     1  x:  array<T> (read)        n elements
//     2  y:  array<T> (write)       n elements
//   backward:
//     0  p: P (uniform) { n: u32 }
//     1  x:  array<T> (read)        the saved forward input, n elements
//     2  g:  array<T> (read)        dL/dy, n elements
//     3  dx: array<T> (write)       dL/dx = g * f'(x), n elements
// backward is also the activation backward of matmul's fused epilogue (x = the saved
// pre-activation z; src/ops/activation.ts activationBackward).
//
// Math: y = f(x) and dx = g * f'(x) with f = act_fwd, f' = act_deriv of lib/activations, picked
// by ACT: 1 GELU, 2 QuickGELU, 3 erf.
//
// Dispatch: 1-D over n, folded into y past 65535 workgroups: i = gid.x + gid.y * nwg.x * WG.
// Overrides: ACT (lib/activations), WG (lib/grid: workgroup size, default 256).

struct P { n: u32 }

@compute @workgroup_size(WG)
fn forward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat_index(gid, nwg);
  if (i >= p.n) { return; }
  y[i] = T(act_fwd(f32(x[i])));
}

@compute @workgroup_size(WG)
fn backward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat_index(gid, nwg);
  if (i >= p.n) { return; }
  dx[i] = T(f32(g[i]) * act_deriv(f32(x[i])));
}
