// lib/matmul_block.wgsl — the store of a register-block matmul kernel (matmul.wgsl,
// matmul_sg.wgsl): low-rank addend, then the raw sums, then the epilogue.
// uses: lib/matmul_epilogue
//
// Register block: an invocation owns RM rows x 4*CN columns of the output at (m0, n0), row r
// and vec4 column group c in acc[r*CN + c] (columns n0 + 4c .. n0 + 4c + 3), in f32.
// Bindings: those of lib/matmul_io (out is written, then re-read by the epilogue).
// Expects from the kernel: RM and CN (overrides or consts) and const ACC_ROWS, the length of
//   the register-block array (>= RM * CN).

/// Adds the low-rank addend (LR_RANK > 0) to the register block and writes it at (m0, n0). The
/// raw sums are stored by an unrolled loop; the epilogue then runs in a loop with a runtime trip
/// count over the same outputs, so the activation code exists once per pipeline instead of
/// RM*4*CN inlined copies (llvmpipe compile time grew ~10x with the unrolled form). The re-read
/// hits the invocation's own fresh writes; with f16 storage it reads the f16-rounded sum.
fn store_block(c_base: u32, m0: u32, n0: u32, acc: ptr<function, array<vec4f, ACC_ROWS>>) {
  for (var q = 0u; q < LR_RANK; q++) {
    for (var c = 0u; c < CN; c++) {
      let v4 = lr_v4(q, n0 + 4u * c);
      for (var r = 0u; r < RM; r++) {
        (*acc)[r * CN + c] += lr_u_at(m0 + r, q) * v4;
      }
    }
  }
  for (var r = 0u; r < RM; r++) {
    let m = m0 + r;
    if (m < p.M) {
      for (var c = 0u; c < CN; c++) {
        for (var j = 0u; j < 4u; j++) {
          let n = n0 + 4u * c + j;
          if (n < p.N) {
            st_out(c_base + m * p.N + n, (*acc)[r * CN + c][j]);
          }
        }
      }
    }
  }
  if (HAS_BIAS || HAS_RES || STORE_PRE || ACT != 0u) {
    let rows = min(RM, p.M - min(m0, p.M));
    let cols = min(4u * CN, p.N - min(n0, p.N));
    for (var e = 0u; e < rows * cols; e++) {
      let idx = c_base + (m0 + e / cols) * p.N + n0 + e % cols;
      epilogue(idx, n0 + e % cols, ld_out(idx));
    }
  }
}
