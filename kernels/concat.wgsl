// concat.wgsl — copies between slabs along one axis: the kernels behind concat and slice.
//
// Every tensor is viewed as [outer, axis_len, inner] (row-major), where `outer` is the product of
// the dims before the axis and `inner` the product of the dims after it.
//
// Bindings (group 0):
//   0  uniform P { n: u32, len: u32, inner: u32, src_axis: u32,
//                  src_off: u32, dst_axis: u32, dst_off: u32, _pad: u32 }
//   1  src: array<f32> (read)   viewed as [outer, src_axis, inner]
//   2  dst: array<f32> (write)  viewed as [outer, dst_axis, inner]
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
// Overrides: WG (workgroup size, default 256).

override WG: u32 = 256u;

struct P {
  n: u32,
  len: u32,
  inner: u32,
  src_axis: u32,
  src_off: u32,
  dst_axis: u32,
  dst_off: u32,
  _pad: u32,
}

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(WG)
fn copy_slab(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = gid.x + gid.y * nwg.x * WG;
  if (idx >= p.n) { return; }
  let i = idx % p.inner;
  let row = idx / p.inner;        // o * len + a
  let a = row % p.len;
  let o = row / p.len;
  dst[(o * p.dst_axis + p.dst_off + a) * p.inner + i] = src[(o * p.src_axis + p.src_off + a) * p.inner + i];
}

@compute @workgroup_size(WG)
fn pad_slab(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = gid.x + gid.y * nwg.x * WG;
  if (idx >= p.n) { return; }
  let i = idx % p.inner;
  let row = idx / p.inner;        // o * dst_axis + b
  let b = row % p.dst_axis;
  let o = row / p.dst_axis;
  var v = 0.0;
  if (b >= p.dst_off && b < p.dst_off + p.len) {
    v = src[(o * p.src_axis + (b - p.dst_off)) * p.inner + i];
  }
  dst[idx] = v;
}
