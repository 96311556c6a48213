// adamw.wgsl — fused AdamW update over flat optimizer buffers, with global-norm gradient
// clipping (PyTorch torch.optim.AdamW + torch.nn.utils.clip_grad_norm_ semantics).
// uses: lib/grid, lib/workgroup_reduce
//
// The optimizer (src/train/optimizer.ts) keeps all trainable parameters in flat f32 buffers
// at fixed offsets: param[N], grad[N], m[N], v[N]. A step touches one or more element ranges
// [begin, end) (normally the whole buffer; params without a grad are left out of every range).
//
// A step is three kinds of dispatch, all deterministic and without atomics:
//   sumsq_partials (per range) -> norm_finalize (once) -> update (per range).
// The norm is one two-stage reduction; the update kernel has no barriers (it reads the finished
// norm), which matters on CPU adapters, where every workgroup barrier costs a round of
// coroutine switches (lavapipe), and costs nothing extra on GPUs.
//
// Entry sumsq_partials — stage 1 of the global norm
//   Bindings (group 0):
//     0  pp:           PartialsP (uniform)  { begin, end, chunk, out_offset: u32, grad_scale: f32 }
//     1  grad_in:      array<f32> (read)    flat gradients
//     2  partials_out: array<f32> (write)   one sum of squares per workgroup
//   Math: workgroup w owns [begin + w*chunk, min(begin + (w+1)*chunk, end)) and writes
//         partials[out_offset + w] = sum (grad_scale * grad[i])^2 over it (strided per
//         invocation, then a tree, lib/workgroup_reduce). grad_scale is 1, or 1/loss_scale
//         when the gradients come from a scaled loss (f16 mixed precision): the norm is then
//         the unscaled one, and an overflowed (Inf/NaN) gradient makes it non-finite.
//   Grid: 1-D, ceil((end - begin) / chunk) workgroups (the host caps the count: a few dozen on
//   CPU adapters, at most 1024 per range on GPUs).
//
// Entry norm_finalize — stage 2 of the global norm, ONE workgroup
//   Bindings (group 0):
//     0  fp:       FinalP (uniform)    { n_partials: u32 }
//     1  partials: array<f32> (read)   the stage-1 sums of every range of this step
//     2  norm_out: array<f32> (write)  [1]: sqrt(sum of partials), the norm before clipping
//   Math: a strided sum per invocation then a tree, in a fixed order (bit-reproducible).
//
// Entry update — the AdamW update of one range
//   Bindings (group 0):
//     0  up:       UpdateP (uniform)  { begin, end, pad, pad: u32,
//                          decay, step_size, inv_sqrt_bc2, beta1, one_minus_beta1,
//                          beta2, one_minus_beta2, eps, max_norm, grad_scale: f32 }
//     1  grad:     array<f32> (read)   flat gradients
//     2  norm:     array<f32> (read)   [1] from norm_finalize
//     3  param:    array<f32> (read_write)
//     4  m:        array<f32> (read_write)  first moment
//     5  v:        array<f32> (read_write)  second moment
//   Math (torch.optim.AdamW after clip_grad_norm_):
//     c  = max_norm > 0 ? min(1, max_norm / (norm + 1e-6)) : 1
//     g  = c * grad_scale * grad[i]        (grad_scale: as in sumsq_partials)
//     m  = beta1 * m + (1 - beta1) * g
//     v  = beta2 * v + (1 - beta2) * g^2
//     p  = p * decay                                   decay = 1 - lr * weight_decay
//     p  = p - step_size * m / (sqrt(v) * inv_sqrt_bc2 + eps)
//   with step_size = lr / (1 - beta1^t) and inv_sqrt_bc2 = 1 / sqrt(1 - beta2^t) computed on
//   the host in f64 (t = the parameter's own step count, as in PyTorch). Workgroup
//   (wid.x + wid.y * nwg.x) updates elements begin + wg * WG * ITEMS + k * WG + lid, k < ITEMS.
//   Grid: 2-D (grid1d) over ceil((end - begin) / ITEMS) invocations.
//
// Overrides: WG (lib/grid: workgroup size, power of two, default 256; the host uses 8 on CPU
// adapters, one SIMD vector, so the reductions' barriers are nearly free), ITEMS (elements per
// invocation in update, default 4; 32 on CPU adapters).

override ITEMS: u32 = 4u;

struct PartialsP { begin: u32, end: u32, chunk: u32, out_offset: u32, grad_scale: f32 }

struct FinalP { n_partials: u32 }

struct UpdateP {
  begin: u32, end: u32, pad0: u32, pad1: u32, decay: f32, step_size: f32, inv_sqrt_bc2: f32,
  beta1: f32, one_minus_beta1: f32, beta2: f32, one_minus_beta2: f32, eps: f32, max_norm: f32,
  grad_scale: f32
}

@compute @workgroup_size(WG)
fn sumsq_partials(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let w = row_index(wid, nwg);
  let start = pp.begin + w * pp.chunk;
  let stop = min(start + pp.chunk, pp.end);
  var s = 0.0;
  for (var i = start + lid; i < stop; i += WG) {
    let g = pp.grad_scale * grad_in[i];
    s += g * g;
  }
  let total = workgroup_sum(lid, s);
  if (lid == 0u) {
    partials_out[pp.out_offset + w] = total;
  }
}

@compute @workgroup_size(WG)
fn norm_finalize(@builtin(local_invocation_index) lid: u32) {
  var s = 0.0;
  for (var j = lid; j < fp.n_partials; j += WG) {
    s += partials[j];
  }
  let total = workgroup_sum(lid, s);
  if (lid == 0u) {
    norm_out[0] = sqrt(total);
  }
}

@compute @workgroup_size(WG)
fn update(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  var c = 1.0;
  if (up.max_norm > 0.0) {
    c = min(1.0, up.max_norm / (norm[0] + 1e-6));
  }
  let w = row_index(wid, nwg);
  let base = up.begin + w * WG * ITEMS + lid;
  for (var k = 0u; k < ITEMS; k++) {
    let i = base + k * WG;
    if (i >= up.end) {
      break;
    }
    let g = c * (up.grad_scale * grad[i]);
    let mi = up.beta1 * m[i] + up.one_minus_beta1 * g;
    let vi = up.beta2 * v[i] + up.one_minus_beta2 * (g * g);
    m[i] = mi;
    v[i] = vi;
    let decayed = param[i] * up.decay;
    param[i] = decayed - up.step_size * mi / (sqrt(vi) * up.inv_sqrt_bc2 + up.eps);
  }
}
