// lib/workgroup_reduce.wgsl — the sum or the max of one f32 per invocation over a workgroup.
// uses: lib/grid
//
// A tree in workgroup memory: log2(WG) rounds, each halving the active invocations, with a
// barrier per round; WG (lib/grid) must be a power of two. Every invocation gets the result.
// Both functions contain barriers, so every invocation of the workgroup must call them (from
// workgroup-uniform control flow). The result is read before a last barrier, so red can be
// reused by the next call. Sums are in a fixed order: deterministic run to run.
// Workgroup memory it declares: red: array<f32, WG>.

var<workgroup> red: array<f32, WG>;

/// Σ v (take_max false) or max v (take_max true) over the workgroup; t = local_invocation_index.
fn workgroup_reduce(t: u32, v: f32, take_max: bool) -> f32 {
  red[t] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s / 2u) {
    if (t < s) {
      let a = red[t];
      let b = red[t + s];
      red[t] = select(a + b, max(a, b), take_max);
    }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}

fn workgroup_sum(t: u32, v: f32) -> f32 {
  return workgroup_reduce(t, v, false);
}

fn workgroup_max(t: u32, v: f32) -> f32 {
  return workgroup_reduce(t, v, true);
}
