// concat.wgsl — copies between slabs along one axis: the kernels behind concat and slice.
// uses: lib/grid
// dtypes: f32, f16
//
// Every tensor is viewed as [outer, axis_len, inner] (row-major), where `outer` is the product of
// the dims before the axis and `inner` the product of the dims after it.
//
// Bindings (group 0), elements of the storage type T (f32 or f16; copies, no arithmetic):
//   0  p: P (uniform) { n: u32, len: u32, inner: u32, src_axis: u32,
//                  src_off: u32, dst_axis: u32, dst_off: u32, _pad: u32 }
//   1  src: array<T> (read)   viewed as [outer, src_axis, inner]
//   2  dst: array<T> (write)  viewed as [outer, dst_axis, inner]
//
// Math (o < outer, a < len, i < inner; n = outer * len * inner for copy_slab,
//       n = outer * dst_axis * inner for pad_slab):
//   copy_slab: dst[o, dst_off + a, i] = src[o, src_off + a, i]
//              concat forward: one dispatch per input, src_off = 0, dst_off = its offset;
//              slice forward and concat backward: src_off = start, dst_off = 0, dst_axis = len.
//   pad_slab:  dst[o, b, i] = src[o, b - dst_off, i] if dst_off <= b < dst_off + len, else 0
//              (slice backward: the gradient scattered into zeros, every dst element written,
//              so no separate zero fill is needed; src_axis = len, src_off unused).
//
// Dispatch: one invocation per element written, 1-D folded into y past 65535 workgroups:
//   idx = gid.x + gid.y * nwg.x * WG.
// Overrides: WG (lib/grid: workgroup size, default 256).

struct P {
  n: u32, len: u32, inner: u32, src_axis: u32, src_off: u32, dst_axis: u32, dst_off: u32,
  _pad: u32
}

@compute @workgroup_size(WG)
fn copy_slab(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = flat_index(gid, nwg);
  if (idx >= p.n) { return; }
  let c = slab_coords(idx, p.len, p.inner);   // (o, a, i)
  dst[(c.x * p.dst_axis + p.dst_off + c.y) * p.inner + c.z] = src[(c.x * p.src_axis + p.src_off + c.y) * p.inner + c.z];
}

@compute @workgroup_size(WG)
fn pad_slab(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = flat_index(gid, nwg);
  if (idx >= p.n) { return; }
  let c = slab_coords(idx, p.dst_axis, p.inner);   // (o, b, i)
  var v = T(0.0);
  if (c.y >= p.dst_off && c.y < p.dst_off + p.len) {
    v = src[(c.x * p.src_axis + (c.y - p.dst_off)) * p.inner + c.z];
  }
  dst[idx] = v;
}
