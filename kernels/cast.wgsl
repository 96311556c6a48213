// cast.wgsl — f32 <-> f16 conversion without the f16 shader extension.
// uses: lib/grid
//
// f16 tensors are stored as packed IEEE binary16 pairs: element 2j in the low 16 bits of u32 j,
// element 2j+1 in the high 16 bits (little-endian, the same bytes as an array<f16>). The
// conversion uses pack2x16float / unpack2x16float, so this module compiles on every device.
//
// Bindings (group 0):
//   0  p:  P (uniform)           { n: u32 }, n = element count
//   to_f16:
//   1  xf: array<f32> (read)      n elements
//   2  yh: array<u32> (write)     ceil(n/2) words
//   to_f32:
//   1  xh: array<u32> (read)      ceil(n/2) words
//   2  yf: array<f32> (write)     n elements
//
// Math: to_f16 rounds each value to the nearest f16 (overflow -> ±inf); an odd tail packs 0 in
// the high half. to_f32 is exact.
// Dispatch: 1-D over u32 words (to_f16) or elements (to_f32), folded into y past 65535
// workgroups: i = gid.x + gid.y * nwg.x * WG. Overrides: WG (lib/grid: workgroup size, default 256).

struct P { n: u32 }

@compute @workgroup_size(WG)
fn to_f16(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let j = flat_index(gid, nwg);
  let words = (p.n + 1u) / 2u;
  if (j >= words) { return; }
  let lo = xf[2u * j];
  var hi = 0.0;
  if (2u * j + 1u < p.n) {
    hi = xf[2u * j + 1u];
  }
  yh[j] = pack2x16float(vec2f(lo, hi));
}

@compute @workgroup_size(WG)
fn to_f32(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat_index(gid, nwg);
  if (i >= p.n) { return; }
  let pair = unpack2x16float(xh[i / 2u]);
  yf[i] = select(pair.x, pair.y, (i & 1u) == 1u);
}
