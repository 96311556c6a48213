// lib/matmul_epilogue.wgsl — what the matmul kernels do with a product before it is stored:
// the low-rank addend, bias, pre-activation store, activation and residual.
// uses: lib/matmul_io, lib/activations
//
// Math (per output (m, n) of batch element b, with v = sum_k opA(A)[m,k] * opB(B)[k,n]):
//   z          = v + sum_{q<LR_RANK} lr_u[m,q] * V(q,n)  + (HAS_BIAS ? bias[n] : 0)
//   out[b,m,n] = act(z) + (HAS_RES ? residual[b,m,n] : 0)
//   pre[b,m,n] = z                                     (only when STORE_PRE; kept for act backward)
// with act   = identity (ACT 0), exact erf GELU (ACT 1), quick GELU x·sigmoid(1.702x) (ACT 2):
//            act_fwd of lib/activations (the same code as the gelu / quickGelu ops);
//      V(q,n) = lr_v[q*N + n] when LR_VT, lr_v[n*LR_RANK + q] otherwise.
// The low-rank addend is how src/ops/lora.ts folds s·(x·Aᵀ)·Bᵀ (forward: U = s·x·Aᵀ, V = B) and
// (s·dz·B)·A (dx: U = s·dz·B, V = A with LR_VT) into the frozen matmul: r more FMAs per output,
// added to the register block before it is stored, with no packed copies of the operands.
// Bindings: those of lib/matmul_io (bias, residual, lr_u, lr_v read; out, pre written).
//
// Functions: epilogue(idx, n, v) applies bias .. residual to one output and stores it (and z);
//   lr_dot(m, n) is the low-rank addend of one output, lr_u_at / lr_v_at / lr_v4 its factors.
// Overrides it declares: HAS_BIAS, HAS_RES, STORE_PRE (bool), LR_RANK (u32, 0 = no low-rank
//   addend), LR_VT (bool, layout of lr_v); it uses ACT of lib/activations (0, 1 or 2 here).

override HAS_BIAS: bool = false;
override HAS_RES: bool = false;
override STORE_PRE: bool = false;
override LR_RANK: u32 = 0u;
override LR_VT: bool = false;

/// Bias, pre-activation store, activation, residual, store. `idx` is the flat output index.
fn epilogue(idx: u32, n: u32, v: f32) {
  var z = v;
  if (HAS_BIAS) {
    z += ld_bias(n);
  }
  if (STORE_PRE) {
    st_pre(idx, z);
  }
  var y = act_fwd(z);
  if (HAS_RES) {
    y += ld_res(idx);
  }
  st_out(idx, y);
}

/// U[m, q] of the low-rank addend, the row clamped into the matrix (edge lanes are never stored).
fn lr_u_at(m: u32, q: u32) -> f32 {
  return ld_lu(min(m, p.M - 1u) * LR_RANK + q);
}

/// V(q, n) of the low-rank addend, the column clamped into the matrix.
fn lr_v_at(q: u32, n: u32) -> f32 {
  let nc = min(n, p.N - 1u);
  if (LR_VT) {
    return ld_lv(q * p.N + nc);
  }
  return ld_lv(nc * LR_RANK + q);
}

/// V(q, n..n+3).
fn lr_v4(q: u32, n: u32) -> vec4f {
  return vec4f(lr_v_at(q, n), lr_v_at(q, n + 1u), lr_v_at(q, n + 2u), lr_v_at(q, n + 3u));
}

/// The whole low-rank addend at one output (0 when LR_RANK = 0).
fn lr_dot(m: u32, n: u32) -> f32 {
  var s = 0.0;
  for (var q = 0u; q < LR_RANK; q++) {
    s += lr_u_at(m, q) * lr_v_at(q, n);
  }
  return s;
}
