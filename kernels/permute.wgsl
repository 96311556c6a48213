// permute.wgsl — generic strided copy: out = x.permute(dims), materialised contiguously.
// uses: lib/grid
// dtypes: f32, f16
//
// Bindings (group 0), elements of the storage type T (f32 or f16; a copy, no arithmetic):
//   0  p: P (uniform) {
//        n: u32, rank: u32, _pad0: u32, _pad1: u32,
//        shape:  array<vec4u, 2>,   // output shape, dims 0..rank-1 in shape[d / 4][d % 4]
//        stride: array<vec4u, 2>,   // for output dim d, the stride (in elements) of x's dim dims[d]
//      }
//   1  x:   array<T> (read)   contiguous row-major input, n elements
//   2  out: array<T> (write)  contiguous row-major output, n elements, shape = P.shape
//
// Math: for each output flat index i with multi-index (j_0, ..., j_{rank-1}) over P.shape,
//   out[i] = x[sum_d j_d * stride[d]]
// where stride[d] = (row-major stride of x)[dims[d]]. rank <= 8 fits the struct; the host
// allows rank <= 6. All offsets fit u32 (tensors are < 2^32 elements).
//
// Dispatch: one invocation per output element, 1-D folded into y past 65535 workgroups:
//   i = gid.x + gid.y * nwg.x * WG.
// Overrides: WG (lib/grid: workgroup size, default 256).

struct P {
  n: u32,
  rank: u32,
  _pad0: u32,
  _pad1: u32,
  shape: array<vec4u, 2>,
  stride: array<vec4u, 2>,
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat_index(gid, nwg);
  if (i >= p.n) { return; }
  // Peel output coordinates from the innermost dim outwards.
  var rest = i;
  var src = 0u;
  for (var d = i32(p.rank) - 1; d >= 0; d--) {
    let k = u32(d);
    let dim = p.shape[k / 4u][k % 4u];
    src += (rest % dim) * p.stride[k / 4u][k % 4u];
    rest = rest / dim;
  }
  out[i] = x[src];
}
