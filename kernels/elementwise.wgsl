// elementwise.wgsl — binary arithmetic with broadcasting over leading dimensions.
// uses: lib/grid
// dtypes: f32, f16
//
// Bindings (group 0), elements of the storage type T (f32 or f16; the math is in f32 and the
// result is rounded to T once, when stored):
//   0  p: P (uniform) { n: u32, a_size: u32, b_size: u32, _pad: u32, alpha: f32 }
//   1  a:   array<T>  (read)   a_size elements, row-major
//   2  b:   array<T>  (read)   b_size elements, row-major
//   3  out: array<T>  (write)  n elements
//   binary4 reads and writes the same buffers as vec4 arrays:
//   1  a4:   array<T4> (read)
//   2  b4:   array<T4> (read)
//   3  out4: array<T4> (write)
//
// Broadcasting: the smaller operand's shape is a suffix of the output shape, so its flat
// index is i % size (a_size or b_size equals n for the full-size operand, which skips the modulo).
//
// Math, out[i] = combine(a[i % a_size], b[i % b_size]) with the combination picked by OP:
//   OP 0 add:   x + y        OP 1 sub:   x - y        OP 2 mul:   x * y
//   OP 3 axpy:  x + alpha * y
//
// Entry points: binary (one element per invocation) and binary4, the same on T4 = vec4<T> views
// of the same buffers (bindings 1–3 re-declared as arrays of T4: 16-byte elements for f32, 8 for
// f16) when n, a_size and b_size are all multiples of 4; then P.n, P.a_size and P.b_size are
// given in vec4 units. Four elements per
// invocation and one broadcast index per four elements (CPU adapters gain most).
//
// Dispatch: 1-D over n, folded into y past 65535 workgroups: i = gid.x + gid.y * nwg.x * WG.
// Overrides: OP (u32, above), WG (lib/grid: workgroup size, default 256).

override OP: u32 = 0u;

struct P { n: u32, a_size: u32, b_size: u32, _pad: u32, alpha: f32 }

// Index into an operand of `size` elements; the full-size operand skips the integer modulo
// (a per-element division is the costliest instruction here on CPU adapters).
fn bidx(i: u32, size: u32) -> u32 {
  if (size == p.n) { return i; }
  return i % size;
}

fn combine(x: f32, y: f32) -> f32 {
  switch OP {
    case 1u: { return x - y; }
    case 2u: { return x * y; }
    case 3u: { return x + p.alpha * y; }
    default: { return x + y; }
  }
}

@compute @workgroup_size(WG)
fn binary(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat_index(gid, nwg);
  if (i >= p.n) { return; }
  out[i] = T(combine(f32(a[bidx(i, p.a_size)]), f32(b[bidx(i, p.b_size)])));
}

@compute @workgroup_size(WG)
fn binary4(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat_index(gid, nwg);
  if (i >= p.n) { return; }
  let x = vec4f(a4[bidx(i, p.a_size)]);
  let y = vec4f(b4[bidx(i, p.b_size)]);
  out4[i] = T4(vec4f(combine(x.x, y.x), combine(x.y, y.y), combine(x.z, y.z), combine(x.w, y.w)));
}
