// cross_entropy.wgsl — mean softmax cross-entropy over a batch of logit rows, and its backward.
// Matches torch.nn.functional.cross_entropy(logits, targets) (reduction='mean', no weights).
// uses: lib/grid, lib/workgroup_reduce
//
// Buffers (row-major):
//   logits:  f32 [B, C]
//   targets: i32 [B]          class index per row, 0 <= t_i < C (validated on the host)
//   rowstat: f32 [B, 2]       per row: (lse_i, loss_i)  with lse_i = logsumexp_c logits[i, c]
//
// Bindings (group 0):
//   0  p:         P (uniform)           { b: u32, c: u32 }
//   forward_rows:
//   1  f_logits:  array<f32> (read)     logits
//   2  f_targets: array<i32> (read)     targets
//   3  f_rowstat: array<f32> (write)    rowstat
//   mean_loss:
//   1  m_rowstat: array<f32> (read)     rowstat
//   2  m_loss:    array<f32> (write)    [1] the mean loss
//   backward_rows:
//   1  b_logits:  array<f32> (read)     logits
//   2  b_targets: array<i32> (read)     targets
//   3  b_rowstat: array<f32> (read)     rowstat
//   4  b_gloss:   array<f32> (read)     [1] dL/dloss
//   5  b_dlogits: array<f32> (write)    [B, C]
//
// Math:
//   loss_i = lse_i - logits[i, t_i];   loss = (1/B) sum_i loss_i
//   dlogits[i, c] = gloss * (exp(logits[i, c] - lse_i) - [c == t_i]) / B
//
// forward_rows and backward_rows run one workgroup per row (row = wid.x + wid.y * nwg.x); the
// WG invocations stride over C and combine max / sum with a shared-memory tree reduction
// (lib/workgroup_reduce). mean_loss is a single workgroup. Overrides: WG (lib/grid: workgroup
// size, a power of two, default 256).

struct P { b: u32, c: u32 }

const NEG_BIG: f32 = -3.0e38;

// ---- forward ----------------------------------------------------------------------------------

@compute @workgroup_size(WG)
fn forward_rows(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) t: u32) {
  let row = row_index(wid, nwg);
  if (row >= p.b) { return; }
  let base = row * p.c;
  var m = NEG_BIG;
  for (var k = t; k < p.c; k += WG) { m = max(m, f_logits[base + k]); }
  let rmax = workgroup_max(t, m);
  var s = 0.0;
  for (var k = t; k < p.c; k += WG) { s += exp(f_logits[base + k] - rmax); }
  let lse = rmax + log(workgroup_sum(t, s));
  if (t == 0u) {
    let tgt = u32(f_targets[row]);
    f_rowstat[2u * row] = lse;
    f_rowstat[2u * row + 1u] = lse - f_logits[base + tgt];
  }
}

@compute @workgroup_size(WG)
fn mean_loss(@builtin(local_invocation_index) t: u32) {
  var s = 0.0;
  for (var i = t; i < p.b; i += WG) { s += m_rowstat[2u * i + 1u]; }
  let total = workgroup_sum(t, s);
  if (t == 0u) { m_loss[0] = total / f32(p.b); }
}

// ---- backward ---------------------------------------------------------------------------------

@compute @workgroup_size(WG)
fn backward_rows(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) t: u32) {
  let row = row_index(wid, nwg);
  if (row >= p.b) { return; }
  let base = row * p.c;
  let lse = b_rowstat[2u * row];
  let tgt = u32(b_targets[row]);
  let scale = b_gloss[0] / f32(p.b);
  for (var k = t; k < p.c; k += WG) {
    let prob = exp(b_logits[base + k] - lse);
    b_dlogits[base + k] = scale * (prob - select(0.0, 1.0, k == tgt));
  }
}
