// adamw.wgsl — fused AdamW update over flat optimizer buffers, with global-norm gradient
// clipping (PyTorch torch.optim.AdamW + torch.nn.utils.clip_grad_norm_ semantics).
//
// The optimizer (src/train/optimizer.ts) keeps all trainable parameters in flat f32 buffers
// at fixed offsets: param[N], grad[N], m[N], v[N]. A step touches one or more element ranges
// [begin, end) (normally the whole buffer; params without a grad are left out of every range).
//
// Entry sumsq_partials — stage 1 of the global norm (deterministic, no atomics)
//   Bindings (group 0):
//     0  uniform PartialsP { begin: u32, end: u32, chunk: u32, out_offset: u32 }
//     1  grad:     array<f32> (read)   flat gradients
//     2  partials: array<f32> (write)  one sum of squares per workgroup
//   Math: workgroup w owns [begin + w*chunk, min(begin + (w+1)*chunk, end)) and writes
//         partials[out_offset + w] = sum grad[i]^2 over it (strided per thread, then a tree).
//   Grid: 1-D, ceil((end - begin) / chunk) workgroups (≤ a few thousand; the host caps it).
//
// Entry update — stage 2 of the norm fused with the AdamW update
//   Bindings (group 0):
//     0  uniform UpdateP { begin, end, n_partials, write_norm: u32,
//                          decay, step_size, inv_sqrt_bc2, beta1, one_minus_beta1,
//                          beta2, one_minus_beta2, eps, max_norm: f32 }
//     1  grad:     array<f32> (read)   flat gradients
//     2  partials: array<f32> (read)   n_partials sums of squares from sumsq_partials
//     3  param:    array<f32> (read_write)
//     4  m:        array<f32> (read_write)  first moment
//     5  v:        array<f32> (read_write)  second moment
//     6  norm_out: array<f32> (write)  [1]: the global norm before clipping
//   Math: every workgroup re-sums all partials in the same fixed order, so all of them see the
//   bit-identical norm = sqrt(sum partials) without a separate pass or atomics. Then
//     c  = max_norm > 0 ? min(1, max_norm / (norm + 1e-6)) : 1
//     g  = c * grad[i]
//     m  = beta1 * m + (1 - beta1) * g
//     v  = beta2 * v + (1 - beta2) * g^2
//     p  = p * decay                                   decay = 1 - lr * weight_decay
//     p  = p - step_size * m / (sqrt(v) * inv_sqrt_bc2 + eps)
//   with step_size = lr / (1 - beta1^t) and inv_sqrt_bc2 = 1 / sqrt(1 - beta2^t) computed on
//   the host in f64 (t = the parameter's own step count, as in PyTorch). Workgroup
//   (wid.x + wid.y * nwg.x) updates elements begin + wg * WG * ITEMS + k * WG + lid, k < ITEMS.
//   Only workgroup 0 of a dispatch with write_norm = 1 writes norm_out.
//   Grid: 2-D (grid1d) over ceil((end - begin) / ITEMS) invocations.
//
// Overrides: WG (workgroup size, power of two, default 256), ITEMS (elements per invocation in
// update, default 4: amortises the per-workgroup re-sum of the partials).

override WG: u32 = 256u;
override ITEMS: u32 = 4u;

struct PartialsP {
  begin: u32,
  end: u32,
  chunk: u32,
  out_offset: u32,
}

struct UpdateP {
  begin: u32,
  end: u32,
  n_partials: u32,
  write_norm: u32,
  decay: f32,
  step_size: f32,
  inv_sqrt_bc2: f32,
  beta1: f32,
  one_minus_beta1: f32,
  beta2: f32,
  one_minus_beta2: f32,
  eps: f32,
  max_norm: f32,
}

// sumsq_partials bindings
@group(0) @binding(0) var<uniform> pp: PartialsP;
@group(0) @binding(1) var<storage, read> grad_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> partials_out: array<f32>;

// update bindings
@group(0) @binding(0) var<uniform> up: UpdateP;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read> partials: array<f32>;
@group(0) @binding(3) var<storage, read_write> param: array<f32>;
@group(0) @binding(4) var<storage, read_write> m: array<f32>;
@group(0) @binding(5) var<storage, read_write> v: array<f32>;
@group(0) @binding(6) var<storage, read_write> norm_out: array<f32>;

var<workgroup> red: array<f32, WG>;

// Tree-sums red[0..WG) into red[0]; every invocation must call it (it has barriers).
fn tree_sum(lid: u32) -> f32 {
  workgroupBarrier();
  for (var off = WG / 2u; off > 0u; off = off >> 1u) {
    if (lid < off) {
      red[lid] += red[lid + off];
    }
    workgroupBarrier();
  }
  return red[0];
}

@compute @workgroup_size(WG)
fn sumsq_partials(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let w = wid.x + wid.y * nwg.x;
  let start = pp.begin + w * pp.chunk;
  let stop = min(start + pp.chunk, pp.end);
  var s = 0.0;
  for (var i = start + lid; i < stop; i += WG) {
    let g = grad_in[i];
    s += g * g;
  }
  red[lid] = s;
  let total = tree_sum(lid);
  if (lid == 0u) {
    partials_out[pp.out_offset + w] = total;
  }
}

@compute @workgroup_size(WG)
fn update(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  var s = 0.0;
  for (var j = lid; j < up.n_partials; j += WG) {
    s += partials[j];
  }
  red[lid] = s;
  let norm = sqrt(tree_sum(lid));
  let w = wid.x + wid.y * nwg.x;
  if (up.write_norm == 1u && w == 0u && lid == 0u) {
    norm_out[0] = norm;
  }
  var c = 1.0;
  if (up.max_norm > 0.0) {
    c = min(1.0, up.max_norm / (norm + 1e-6));
  }
  let base = up.begin + w * WG * ITEMS + lid;
  for (var k = 0u; k < ITEMS; k++) {
    let i = base + k * WG;
    if (i >= up.end) {
      break;
    }
    let g = c * grad[i];
    let mi = up.beta1 * m[i] + up.one_minus_beta1 * g;
    let vi = up.beta2 * v[i] + up.one_minus_beta2 * (g * g);
    m[i] = mi;
    v[i] = vi;
    let decayed = param[i] * up.decay;
    param[i] = decayed - up.step_size * mi / (sqrt(vi) * up.inv_sqrt_bc2 + up.eps);
  }
}
