// elementwise.wgsl — binary arithmetic with broadcasting over leading dimensions, and scaling.
//
// Bindings (group 0):
//   0  uniform P { n: u32, a_size: u32, b_size: u32, _pad: u32, alpha: f32 }
//   1  a:   array<f32>  (read)   a_size elements, row-major
//   2  b:   array<f32>  (read)   b_size elements, row-major   (absent for `scale`)
//   3  out: array<f32>  (write)  n elements
//
// Broadcasting: the smaller operand's shape is a suffix of the output shape, so its flat
// index is i % size (a_size or b_size equals n for the full-size operand, which skips the modulo).
//
// Math:
//   add:   out[i] = a[i % a_size] + b[i % b_size]
//   sub:   out[i] = a[i % a_size] - b[i % b_size]
//   mul:   out[i] = a[i % a_size] * b[i % b_size]
//   axpy:  out[i] = a[i % a_size] + alpha * b[i % b_size]
//   scale: out[i] = alpha * a[i]          (bindings: 1 = a, 2 = out)
//
// Vector entry points add4 / sub4 / mul4 / axpy4 do the same on vec4<f32> views of the same
// buffers (bindings 1–3 re-declared as arrays of vec4) when n, a_size and b_size are all
// multiples of 4; then P.n, P.a_size and P.b_size are given in vec4 units. Four elements per
// invocation and one broadcast index per four elements (CPU adapters gain most).
//
// Dispatch: 1-D over n, folded into y past 65535 workgroups: i = gid.x + gid.y * nwg.x * WG.
// Overrides: WG (workgroup size, default 256).

override WG: u32 = 256u;

struct P {
  n: u32,
  a_size: u32,
  b_size: u32,
  _pad: u32,
  alpha: f32,
}

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

fn flat(gid: vec3u, nwg: vec3u) -> u32 {
  return gid.x + gid.y * nwg.x * WG;
}

// Index into an operand of `size` elements; the full-size operand skips the integer modulo
// (a per-element division is the costliest instruction here on CPU adapters).
fn bidx(i: u32, size: u32) -> u32 {
  if (size == p.n) { return i; }
  return i % size;
}

@compute @workgroup_size(WG)
fn add(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }
  out[i] = a[bidx(i, p.a_size)] + b[bidx(i, p.b_size)];
}

@compute @workgroup_size(WG)
fn sub(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }
  out[i] = a[bidx(i, p.a_size)] - b[bidx(i, p.b_size)];
}

@compute @workgroup_size(WG)
fn mul(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }
  out[i] = a[bidx(i, p.a_size)] * b[bidx(i, p.b_size)];
}

@compute @workgroup_size(WG)
fn axpy(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }
  out[i] = a[bidx(i, p.a_size)] + p.alpha * b[bidx(i, p.b_size)];
}

@group(0) @binding(1) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> out4: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn add4(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }
  out4[i] = a4[bidx(i, p.a_size)] + b4[bidx(i, p.b_size)];
}

@compute @workgroup_size(WG)
fn sub4(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }
  out4[i] = a4[bidx(i, p.a_size)] - b4[bidx(i, p.b_size)];
}

@compute @workgroup_size(WG)
fn mul4(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }
  out4[i] = a4[bidx(i, p.a_size)] * b4[bidx(i, p.b_size)];
}

@compute @workgroup_size(WG)
fn axpy4(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }
  out4[i] = a4[bidx(i, p.a_size)] + p.alpha * b4[bidx(i, p.b_size)];
}
