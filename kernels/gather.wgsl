// gather.wgsl — select rows along one axis by integer indices, and the adjoint (scatter-add).
// uses: lib/grid
// dtypes: f32, f16
//
// Tensors are viewed as [outer, axis_len, inner] (row-major) around the gathered axis.
//
// Bindings (group 0), src and dst elements of the storage type T (f32 or f16):
//   0  p: P (uniform) { n: u32, inner: u32, src_axis: u32, dst_axis: u32 }
//   1  src:   array<T>   (read)   viewed as [outer, src_axis, inner]
//   2  index: array<u32> (read)   layout depends on the entry point (below)
//   3  dst:   array<T>   (write)  viewed as [outer, dst_axis, inner], n = outer * dst_axis * inner
//
// gather_rows (forward; src = x [outer, A, inner], dst = out [outer, K, inner]):
//   index = idx[0..K), every value < A
//   dst[o, k, i] = src[o, idx[k], i]
//
// scatter_rows (backward; src = g [outer, K, inner], dst = gx [outer, A, inner]):
//   index = [ start[0..A+1) | ks[0..K) ], a CSR inverse of idx built on the host:
//   the positions k with idx[k] == a are ks[start[a] .. start[a+1]), in increasing k.
//   dst[o, a, i] = sum_{k : idx[k] == a} src[o, k, i]
//   One invocation per dst element loops over its own positions: repeated indices are summed
//   without float atomics, in a fixed order (deterministic), in f32 for either storage type,
//   and rounded to T once, when stored.
//
// Dispatch: one invocation per dst element, 1-D folded into y past 65535 workgroups:
//   idx = gid.x + gid.y * nwg.x * WG.
// Overrides: WG (lib/grid: workgroup size, default 256).

struct P { n: u32, inner: u32, src_axis: u32, dst_axis: u32 }

@compute @workgroup_size(WG)
fn gather_rows(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = flat_index(gid, nwg);
  if (idx >= p.n) { return; }
  let c = slab_coords(idx, p.dst_axis, p.inner);   // (o, k, i)
  dst[idx] = src[(c.x * p.src_axis + index[c.y]) * p.inner + c.z];
}

@compute @workgroup_size(WG)
fn scatter_rows(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = flat_index(gid, nwg);
  if (idx >= p.n) { return; }
  let c = slab_coords(idx, p.dst_axis, p.inner);   // (o, a, i)
  let ks = p.dst_axis + 1u;       // where the position list starts in `index`
  var s = 0.0;
  for (var j = index[c.y]; j < index[c.y + 1u]; j++) {
    s += f32(src[(c.x * p.src_axis + index[ks + j]) * p.inner + c.z]);
  }
  dst[idx] = T(s);
}
