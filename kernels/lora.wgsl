// lora.wgsl — operand packing that turns a LoRA projection into ONE matmul (forward and dx).
//
// LoRA (PEFT semantics): y = x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ with W [N, K] frozen, A [r, K], B [N, r],
// s = lora_alpha / r. Appending r columns to both operands folds the low-rank path into the
// frozen matmul's K loop:
//     y = [x | s·x·Aᵀ] · [W | B]ᵀ + b           (K' = K + r)
// Backward, with dz = dy (after the activation), du = s·dz·B [rows, r]:
//     dx = [dz | du] · [W ; A]                     (one matmul with K' = N + r)
//     dA = duᵀ·x,  dB = dzᵀ·(s·u)                  (rank-r products, cheap)
// No dW is ever formed: the frozen weight costs the same as in a plain linear layer.
//
// Entry points and bindings (group 0, binding 0 = uniform P):
//   pack_rows: one workgroup per row of x.
//     1 x   array<f32> (read)  [rows, K]
//     2 lr  array<f32> (read)  the low-rank factor: A [r, K] (LR_T = false) or B [K, r] (LR_T = true,
//                               used for du = s·dz·B where the "K" of this pass is N)
//     3 out array<f32> (write) [rows, K + r]: out[m, k] = x[m, k]; out[m, K + j] = s·Σ_k x[m, k]·lr(j, k)
//     4 u   array<f32> (write) [rows, r]:     u[m, j] = s·Σ_k x[m, k]·lr(j, k)   (kept for backward)
//   pack_cols: 1-D over N·(K + r).
//     1 w   array<f32> (read)  [N, K]
//     2 b   array<f32> (read)  [N, r]
//     3 out array<f32> (write) [N, K + r]: out[n, k] = w[n, k] (k < K), b[n, k − K] (k ≥ K)
//
// P { rows: u32, k: u32, r: u32, n: u32, s: f32 }
// Overrides: WG (pack_rows workgroup size, a power of two ≤ 256, default 64), LR_T (bool, see
//   above). Ranks are processed in chunks of CHUNK = 8 (private accumulators); ranks ≤ 8 — the
//   usual 4 — take one pass over the row, larger ranks re-read the row once per chunk.
// Dispatch: pack_rows over rows folded into y (row = wid.x + wid.y·nwg.x); pack_cols 1-D folded
//   into y with workgroups of 256.

override WG: u32 = 64u;
const CHUNK: u32 = 8u;
override LR_T: bool = false;

struct P {
  rows: u32,
  k: u32,
  r: u32,
  n: u32,
  s: f32,
}

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> lr: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> u: array<f32>;

var<workgroup> partial: array<f32, 2048>; // CHUNK * WG <= 2048

fn lr_at(j: u32, k: u32) -> f32 {
  if (LR_T) {
    return lr[k * p.r + j];
  }
  return lr[j * p.k + k];
}

@compute @workgroup_size(WG)
fn pack_rows(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * nwg.x;
  // Uniform per workgroup: every invocation of this workgroup returns or none does.
  if (row >= p.rows) { return; }
  let kp = p.k + p.r;
  for (var j0 = 0u; j0 < p.r; j0 += CHUNK) {
    let nj = min(CHUNK, p.r - j0);
    var acc: array<f32, CHUNK>;
    for (var j = 0u; j < CHUNK; j++) { acc[j] = 0.0; }
    for (var k = lid; k < p.k; k += WG) {
      let v = x[row * p.k + k];
      if (j0 == 0u) { out[row * kp + k] = v; }
      for (var j = 0u; j < nj; j++) {
        acc[j] += v * lr_at(j0 + j, k);
      }
    }
    for (var j = 0u; j < nj; j++) {
      partial[j * WG + lid] = acc[j];
    }
    workgroupBarrier();
    // Tree reduction over the WG invocations, for every rank of the chunk at once.
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
      if (lid < stride) {
        for (var j = 0u; j < nj; j++) {
          partial[j * WG + lid] += partial[j * WG + lid + stride];
        }
      }
      workgroupBarrier();
    }
    if (lid < nj) {
      let v = p.s * partial[lid * WG];
      out[row * kp + p.k + j0 + lid] = v;
      u[row * p.r + j0 + lid] = v;
    }
    workgroupBarrier();
  }
}

@group(0) @binding(1) var<storage, read> w_in: array<f32>;
@group(0) @binding(2) var<storage, read> b_in: array<f32>;

@compute @workgroup_size(256)
fn pack_cols(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  let kp = p.k + p.r;
  if (i >= p.n * kp) { return; }
  let n = i / kp;
  let c = i % kp;
  if (c < p.k) {
    out[i] = w_in[n * p.k + c];
  } else {
    out[i] = b_in[n * p.r + (c - p.k)];
  }
}
