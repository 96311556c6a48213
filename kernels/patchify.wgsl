// patchify.wgsl — unfold non-overlapping P×P patches (a stride-P convolution becomes a matmul).
// uses: lib/grid
// dtypes: f32, f16
//
// Bindings (group 0), elements of the storage type T (f32 or f16; copies, no arithmetic):
//   0  p: P (uniform) { batch: u32, channels: u32, height: u32, width: u32, psize: u32, total: u32 }
//   1  src: array<T> (read)
//   2  dst: array<T> (write)
//
// Layouts:
//   image   [B, C, H, W] row-major (NCHW, as PyTorch pixel_values)
//   patches [B, nP, C·P·P] with nP = (H/P)·(W/P), patch index p = py·(W/P) + px and feature
//           index f = c·P·P + ky·P + kx — the order of a flattened conv weight [D, C, P, P].
//
// Math:
//   unfold: patches[b, p, f] = image[b, c, py·P + ky, px·P + kx]
//   fold:   image[b, c, y, x] = patches[b, (y/P)·(W/P) + x/P, c·P·P + (y%P)·P + x%P]
//           (the exact inverse: patches do not overlap, so fold is the adjoint of unfold)
//
// One invocation per element of the destination, 1-D dispatch folded into y:
//   i = gid.x + gid.y * nwg.x * WG.
// Overrides: WG (lib/grid: workgroup size, default 256).

struct P { batch: u32, channels: u32, height: u32, width: u32, psize: u32, total: u32 }

/// The flat image index of element i of the patch layout [B, nP, C·P·P].
fn image_index(i: u32) -> u32 {
  let pp = p.psize * p.psize;
  let gw = p.width / p.psize;
  let e = slab_coords(i, (p.height / p.psize) * gw, p.channels * pp);   // (b, patch, feature)
  let c = e.z / pp;
  let y = (e.y / gw) * p.psize + (e.z % pp) / p.psize;
  let x = (e.y % gw) * p.psize + e.z % p.psize;
  return ((e.x * p.channels + c) * p.height + y) * p.width + x;
}

@compute @workgroup_size(WG)
fn unfold(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat_index(gid, nwg);
  if (i >= p.total) { return; }
  dst[i] = src[image_index(i)];
}

@compute @workgroup_size(WG)
fn fold(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  // i walks the patch layout and writes the image layout: still one writer per element.
  let i = flat_index(gid, nwg);
  if (i >= p.total) { return; }
  dst[image_index(i)] = src[i];
}
