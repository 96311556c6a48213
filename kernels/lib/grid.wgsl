// lib/grid.wgsl — the workgroup size WG and where an invocation or a workgroup sits in its grid.
//
// Override it declares: WG (invocations per workgroup, default 256; a power of two in the
// kernels that reduce over a workgroup, lib/workgroup_reduce).
// Functions (no bindings):
//   flat_index(gid, nwg)         one invocation per element of a 1-D problem that the host
//                                folded into y past 65535 workgroups (src/ops/util.ts grid1d):
//                                gid.x + gid.y * nwg.x * WG
//   row_index(wid, nwg)          one workgroup per row, rows folded the same way:
//                                wid.x + wid.y * nwg.x
//   slab_coords(idx, axis, inner)  (o, a, i) of flat index idx in a row-major
//                                [outer, axis, inner] view

override WG: u32 = 256u;

fn flat_index(gid: vec3u, nwg: vec3u) -> u32 {
  return gid.x + gid.y * nwg.x * WG;
}

fn row_index(wid: vec3u, nwg: vec3u) -> u32 {
  return wid.x + wid.y * nwg.x;
}

fn slab_coords(idx: u32, axis: u32, inner: u32) -> vec3u {
  let row = idx / inner;
  return vec3u(row / axis, row % axis, idx % inner);
}
