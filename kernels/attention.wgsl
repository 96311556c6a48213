// attention.wgsl — fused multi-head attention, unmasked or causal, forward and backward, flash
// style: the [N, N] score matrix of a head never reaches global memory, and neither does a mask.
// dtypes: f32, f16
//
// Layout: q, k, v, out and their gradients are [B, N, H, Dh] row-major, the layout of a linear
// layer's [B, N, H*Dh] output after a free reshape. Element (b, i, h, d) sits at
//   ((b * N + i) * H + h) * Dh + d
// so the rows of one (b, h) head are H*Dh elements apart. lse and delta are [B, H, N]:
// (b, h, i) at (b * H + h) * N + i.
//
// Types: q, k, v, out, dout, dq, dk, dv have the storage type T (f32 or f16). lse and delta are
// f32 for either T: one value per row, and every recomputed P_ij = exp(S_ij - lse_i) depends on
// lse_i absolutely (an f16 lse of ~5 would be off by ~2e-3, i.e. every P by 0.2%). All math is
// f32: elements are widened on load (load4), the scores, the running max and sum, the output and
// gradient accumulators and the shared tiles are f32, and only out, dq, dk, dv are rounded to T
// when stored.
//
// Math, per (b, h), with s = scale:
//   forward:   S = s·Q Kᵀ, P = softmax_rows(S), O = P V, lse_i = log Σ_j exp(S_ij)
//              computed with an online softmax over key tiles (running max m, sum l).
//   delta:     Δ_i = Σ_d dO_id · O_id
//   backward:  P_ij = exp(S_ij - lse_i) (recomputed), dP_ij = dO_i · V_j,
//              dS_ij = P_ij (dP_ij - Δ_i)
//              dQ_i = s Σ_j dS_ij K_j                      (backward_dq, parallel over query rows)
//              dK_j = s Σ_i dS_ij Q_i,  dV_j = Σ_i P_ij dO_i   (backward_dkv, parallel over key rows)
//   No atomics: every output row is owned by exactly one invocation.
//   Causal (CAUSAL = 1, a text encoder's mask): query i sees keys j ≤ i only, i.e. S_ij = -inf and
//   P_ij = 0 for j > i. The mask is a comparison of indices inside the kernels: masked keys are
//   skipped, never scored (forward: they add nothing to m, l or the accumulator; backward: P_ij
//   and dS_ij are 0). Whole tiles are skipped where that is cheap: a query workgroup stops
//   streaming keys after its last row, a key workgroup starts streaming queries at its first row,
//   and an invocation leaves a tile's key loop after its own last row. Every row keeps key 0, so
//   l > 0 and lse is finite.
//
// Bindings (group 0), array<T> except lse and delta (array<f32>):
//   0  p:          P (uniform)          { n, heads, rows (B·H·N, delta only), _pad: u32, scale: f32 }
//   forward, backward_dq, backward_dkv read
//   1  q:          array<T> (read)      [B, N, H, Dh]
//   2  k:          array<T> (read)      [B, N, H, Dh]
//   3  v:          array<T> (read)      [B, N, H, Dh]
//   forward writes
//   4  out:        array<T> (write)     [B, N, H, Dh]
//   5  lse:        array<f32> (write)   [B, H, N] log-sum-exp of each query's scores
//   backward_dq and backward_dkv also read
//   4  dout:       array<T> (read)      dL/dout
//   5  lse_in:     array<f32> (read)    lse
//   6  delta_in:   array<f32> (read)    delta
//   and write
//   7  dq:         array<T> (write)     (backward_dq)
//   7  dk:         array<T> (write)     (backward_dkv)
//   8  dv:         array<T> (write)     (backward_dkv)
//   delta
//   1  delta_dout: array<T> (read)      dL/dout
//   2  delta_o:    array<T> (read)      out
//   3  delta:      array<f32> (write)   [B, H, N] rowsum(dout ⊙ out)
//
// Dispatch: forward, backward_dq, backward_dkv: [ceil(N / (RB·ROWS)), H, B] with RB = BLOCK/SPLIT.
// A workgroup owns RB·ROWS consecutive rows (queries, or keys for backward_dkv) of one head and
// streams the other side through workgroup memory, TILE rows at a time. Invocation t has row slot
// t % RB (rows slot, slot + RB, ...: ROWS of them) and part t / RB: of every tile it takes the
// rows ≡ part (mod SPLIT). With SPLIT > 1 the parts are merged at the end through workgroup
// memory, part 0 absorbing parts 1, 2, ... in order (forward: the online-softmax states
// (m, l, acc) are rescaled to the larger max and added; backward: partial sums are added), and
// part 0 writes. SPLIT > 1 is for GPUs when B·H·N is small: the same work in SPLIT× more
// workgroups (needs RB·ROWS ≤ TILE). delta: 1-D over B*H*N rows, folded into y (idx = gid.x + gid.y*nwg.x*BLOCK).
// Each invocation keeps its rows in private vec4 arrays (head dim zero-padded to a multiple of
// 4). ROWS > 1 is register blocking for CPU adapters: on lavapipe every load from storage or
// workgroup memory inside a loop is done lane by lane, so a loaded K/V (or Q/dO) value should
// feed several rows; GPUs use ROWS = 1.
// The forward softmax is online per key: a running max m and sum l per row, rescaling the
// accumulator only when a key raises the max (rare after the first few keys).
//
// Overrides:
//   HEAD_DIM  Dh, 1..128 (specialised so the d loops have constant trip counts and unroll)
//   BLOCK     invocations per workgroup
//   ROWS      rows per invocation, 1..ROWS_MAX (8)
//   SPLIT     invocations sharing a row slot (splitting the other side's rows), divides BLOCK
//   RB        row slots per workgroup (= BLOCK / SPLIT; derived, not set by the host)
//   TILE      rows per shared-memory tile; shared memory use is 2·TILE·ceil(Dh/4)·16 bytes
//             (+ 8·TILE for forward and backward_dkv)
//   CAUSAL    1: causal mask (key j > query i excluded); 0: no mask

override HEAD_DIM: u32 = 64u;
override BLOCK: u32 = 64u;
override TILE: u32 = 32u;
override ROWS: u32 = 1u;
override SPLIT: u32 = 1u;
override CAUSAL: u32 = 0u;
override RB: u32 = BLOCK / SPLIT;
override D4: u32 = (HEAD_DIM + 3u) / 4u;

const D4_MAX: u32 = 32u;
const ROWS_MAX: u32 = 8u;
// A finite "minus infinity": exp(NEG_BIG - x) underflows to 0 without producing inf - inf.
const NEG_BIG: f32 = -3.0e38;

struct P {
  n: u32,
  heads: u32,
  rows: u32,  // B * H * N (delta only)
  _pad: u32,
  scale: f32,
}

// Shared tiles: forward and backward_dq stream K and V, backward_dkv streams Q, dO, lse, Δ.
var<workgroup> k_tile: array<vec4f, TILE * D4>;
var<workgroup> v_tile: array<vec4f, TILE * D4>;
var<workgroup> q_tile: array<vec4f, TILE * D4>;
var<workgroup> do_tile: array<vec4f, TILE * D4>;
var<workgroup> lse_tile: array<f32, TILE>;
var<workgroup> delta_tile: array<f32, TILE>;
// Forward with SPLIT > 1: the running (max, sum) of each row slot handed over in the combine.
var<workgroup> stat_tile: array<vec2f, TILE>;

/** Whether query i may see key j (always, unless causal). */
fn visible(i: u32, j: u32) -> bool {
  return CAUSAL == 0u || j <= i;
}

/**
 * End of the key range (exclusive) a workgroup of query rows row0 .. row0 + RB·ROWS - 1 streams:
 * all N keys, or with the causal mask only up to its last row.
 */
fn key_end(row0: u32, n: u32) -> u32 {
  if (CAUSAL == 0u) { return n; }
  return min(n, row0 + RB * ROWS);
}

// Element d of a row starting at `base`, or 0 past the head dim (the vec4 padding).
fn in_dim(d: u32) -> bool {
  return d < HEAD_DIM;
}

/** Elements 4·d4 .. 4·d4+3 of the row starting at `base` in one of the [B, N, H, Dh] inputs, widened to f32, 0 past Dh. */
fn load4(buf: ptr<storage, array<T>, read>, base: u32, d4: u32) -> vec4f {
  var r = vec4f(0.0);
  for (var c = 0u; c < 4u; c++) {
    let d = d4 * 4u + c;
    if (in_dim(d)) { r[c] = f32((*buf)[base + d]); }
  }
  return r;
}

@compute @workgroup_size(BLOCK)
fn forward(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let n = p.n;
  let stride = p.heads * HEAD_DIM;
  let head0 = wid.z * n * stride + wid.y * HEAD_DIM;
  let slot = lid.x % RB;
  let part = lid.x / RB;
  let first = wid.x * RB * ROWS + slot;

  // This invocation's query rows first + r·RB, pre-multiplied by scale (rows past N stay
  // zero and are never written). It takes keys j ≡ part (mod SPLIT) of every tile.
  var qr: array<array<vec4f, D4_MAX>, ROWS_MAX>;
  var acc: array<array<vec4f, D4_MAX>, ROWS_MAX>;
  var m: array<f32, ROWS_MAX>;
  var l: array<f32, ROWS_MAX>;
  for (var r = 0u; r < ROWS; r++) {
    let i = first + r * RB;
    m[r] = NEG_BIG;
    l[r] = 0.0;
    for (var d4 = 0u; d4 < D4; d4++) {
      qr[r][d4] = vec4f(0.0);
      acc[r][d4] = vec4f(0.0);
      if (i < n) { qr[r][d4] = load4(&q, head0 + i * stride, d4) * p.scale; }
    }
  }

  // Causal: keys past the workgroup's last row are never loaded, and each invocation stops at
  // its own last row (first + (ROWS-1)·RB).
  let kend = key_end(wid.x * RB * ROWS, n);
  let last = first + (ROWS - 1u) * RB;
  for (var k0 = 0u; k0 < kend; k0 += TILE) {
    let kn = min(TILE, kend - k0);
    workgroupBarrier();
    for (var e = lid.x; e < kn * D4; e += BLOCK) {
      let src = head0 + (k0 + e / D4) * stride;
      k_tile[e] = load4(&k, src, e % D4);
      v_tile[e] = load4(&v, src, e % D4);
    }
    workgroupBarrier();

    for (var j = part; j < kn; j += SPLIT) {
      if (!visible(last, k0 + j)) { break; }
      var dots: array<vec4f, ROWS_MAX>;
      for (var r = 0u; r < ROWS; r++) { dots[r] = vec4f(0.0); }
      for (var d4 = 0u; d4 < D4; d4++) {
        let kv = k_tile[j * D4 + d4];
        for (var r = 0u; r < ROWS; r++) { dots[r] += qr[r][d4] * kv; }
      }
      var pr: array<f32, ROWS_MAX>;
      for (var r = 0u; r < ROWS; r++) {
        pr[r] = 0.0;
        // A masked key adds nothing (its score is never compared with the running max).
        if (!visible(first + r * RB, k0 + j)) { continue; }
        let sj = dots[r].x + dots[r].y + dots[r].z + dots[r].w;
        if (sj > m[r]) {
          // New running max: rescale what was accumulated (rare after the first keys).
          let corr = exp(m[r] - sj);
          l[r] *= corr;
          for (var d4 = 0u; d4 < D4; d4++) { acc[r][d4] *= corr; }
          m[r] = sj;
        }
        pr[r] = exp(sj - m[r]);
        l[r] += pr[r];
      }
      for (var d4 = 0u; d4 < D4; d4++) {
        let vv = v_tile[j * D4 + d4];
        for (var r = 0u; r < ROWS; r++) { acc[r][d4] += pr[r] * vv; }
      }
    }
  }

  // SPLIT > 1: part 0 merges the other parts' (m, l, acc) one part at a time through workgroup
  // memory (k_tile holds the accumulators, stat_tile m and l; RB·ROWS ≤ TILE).
  for (var sp = 1u; sp < SPLIT; sp++) {
    workgroupBarrier();
    if (part == sp) {
      for (var r = 0u; r < ROWS; r++) {
        let t = slot * ROWS + r;
        stat_tile[t] = vec2f(m[r], l[r]);
        for (var d4 = 0u; d4 < D4; d4++) { k_tile[t * D4 + d4] = acc[r][d4]; }
      }
    }
    workgroupBarrier();
    if (part == 0u) {
      for (var r = 0u; r < ROWS; r++) {
        let t = slot * ROWS + r;
        let o = stat_tile[t];
        let mx = max(m[r], o.x);
        let ca = exp(m[r] - mx);
        let cb = exp(o.x - mx);
        l[r] = l[r] * ca + o.y * cb;
        m[r] = mx;
        for (var d4 = 0u; d4 < D4; d4++) { acc[r][d4] = acc[r][d4] * ca + k_tile[t * D4 + d4] * cb; }
      }
    }
  }

  for (var r = 0u; r < ROWS; r++) {
    let i = first + r * RB;
    if (part == 0u && i < n) {
      let row = head0 + i * stride;
      let inv = 1.0 / l[r];
      for (var d4 = 0u; d4 < D4; d4++) {
        let o = acc[r][d4] * inv;
        for (var c = 0u; c < 4u; c++) {
          let d = d4 * 4u + c;
          if (in_dim(d)) { out[row + d] = T(o[c]); }
        }
      }
      lse[(wid.z * p.heads + wid.y) * n + i] = m[r] + log(l[r]);
    }
  }
}

@compute @workgroup_size(BLOCK)
fn delta_rows(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = gid.x + gid.y * nwg.x * BLOCK;  // (b, h, i) flattened as in lse
  let n = p.n;
  let heads = p.heads;
  if (idx >= p.rows) { return; }
  let i = idx % n;
  let bh = idx / n;
  let row = ((bh / heads) * n + i) * heads * HEAD_DIM + (bh % heads) * HEAD_DIM;
  var acc = 0.0;
  for (var d = 0u; d < HEAD_DIM; d++) { acc += f32(delta_dout[row + d]) * f32(delta_o[row + d]); }
  delta[idx] = acc;
}

@compute @workgroup_size(BLOCK)
fn backward_dq(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let n = p.n;
  let stride = p.heads * HEAD_DIM;
  let head0 = wid.z * n * stride + wid.y * HEAD_DIM;
  let rows0 = (wid.z * p.heads + wid.y) * n;
  let slot = lid.x % RB;
  let part = lid.x / RB;
  let first = wid.x * RB * ROWS + slot;

  // Query rows first + r·RB (q pre-multiplied by scale), their dO rows, lse and Δ; keys
  // j ≡ part (mod SPLIT) of every tile.
  var qr: array<array<vec4f, D4_MAX>, ROWS_MAX>;
  var dor: array<array<vec4f, D4_MAX>, ROWS_MAX>;
  var acc: array<array<vec4f, D4_MAX>, ROWS_MAX>;
  var lse_r: array<f32, ROWS_MAX>;
  var delta_r: array<f32, ROWS_MAX>;
  for (var r = 0u; r < ROWS; r++) {
    let i = first + r * RB;
    lse_r[r] = 0.0;
    delta_r[r] = 0.0;
    for (var d4 = 0u; d4 < D4; d4++) {
      qr[r][d4] = vec4f(0.0);
      dor[r][d4] = vec4f(0.0);
      acc[r][d4] = vec4f(0.0);
      if (i < n) {
        qr[r][d4] = load4(&q, head0 + i * stride, d4) * p.scale;
        dor[r][d4] = load4(&dout, head0 + i * stride, d4);
      }
    }
    if (i < n) {
      lse_r[r] = lse_in[rows0 + i];
      delta_r[r] = delta_in[rows0 + i];
    }
  }

  // Causal: the same key range as the forward.
  let kend = key_end(wid.x * RB * ROWS, n);
  let last = first + (ROWS - 1u) * RB;
  for (var k0 = 0u; k0 < kend; k0 += TILE) {
    let kn = min(TILE, kend - k0);
    workgroupBarrier();
    for (var e = lid.x; e < kn * D4; e += BLOCK) {
      let src = head0 + (k0 + e / D4) * stride;
      k_tile[e] = load4(&k, src, e % D4);
      v_tile[e] = load4(&v, src, e % D4);
    }
    workgroupBarrier();
    for (var j = part; j < kn; j += SPLIT) {
      if (!visible(last, k0 + j)) { break; }
      var s4: array<vec4f, ROWS_MAX>;
      var dp4: array<vec4f, ROWS_MAX>;
      for (var r = 0u; r < ROWS; r++) {
        s4[r] = vec4f(0.0);
        dp4[r] = vec4f(0.0);
      }
      // K_j is read from workgroup memory once and kept for the dQ update below.
      var kj: array<vec4f, D4_MAX>;
      for (var d4 = 0u; d4 < D4; d4++) {
        kj[d4] = k_tile[j * D4 + d4];
        let vv = v_tile[j * D4 + d4];
        for (var r = 0u; r < ROWS; r++) {
          s4[r] += qr[r][d4] * kj[d4];
          dp4[r] += dor[r][d4] * vv;
        }
      }
      var ds: array<f32, ROWS_MAX>;
      for (var r = 0u; r < ROWS; r++) {
        ds[r] = 0.0;
        if (!visible(first + r * RB, k0 + j)) { continue; }
        let pij = exp(s4[r].x + s4[r].y + s4[r].z + s4[r].w - lse_r[r]);
        ds[r] = pij * (dp4[r].x + dp4[r].y + dp4[r].z + dp4[r].w - delta_r[r]);
      }
      for (var d4 = 0u; d4 < D4; d4++) {
        for (var r = 0u; r < ROWS; r++) { acc[r][d4] += ds[r] * kj[d4]; }
      }
    }
  }

  // SPLIT > 1: part 0 adds the other parts' partial dQ, one part at a time (via k_tile).
  for (var sp = 1u; sp < SPLIT; sp++) {
    workgroupBarrier();
    if (part == sp) {
      for (var r = 0u; r < ROWS; r++) {
        for (var d4 = 0u; d4 < D4; d4++) { k_tile[(slot * ROWS + r) * D4 + d4] = acc[r][d4]; }
      }
    }
    workgroupBarrier();
    if (part == 0u) {
      for (var r = 0u; r < ROWS; r++) {
        for (var d4 = 0u; d4 < D4; d4++) { acc[r][d4] += k_tile[(slot * ROWS + r) * D4 + d4]; }
      }
    }
  }

  for (var r = 0u; r < ROWS; r++) {
    let i = first + r * RB;
    if (part == 0u && i < n) {
      let row = head0 + i * stride;
      for (var d4 = 0u; d4 < D4; d4++) {
        let g = acc[r][d4] * p.scale;
        for (var c = 0u; c < 4u; c++) {
          let d = d4 * 4u + c;
          if (in_dim(d)) { dq[row + d] = T(g[c]); }
        }
      }
    }
  }
}

@compute @workgroup_size(BLOCK)
fn backward_dkv(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let n = p.n;
  let stride = p.heads * HEAD_DIM;
  let head0 = wid.z * n * stride + wid.y * HEAD_DIM;
  let rows0 = (wid.z * p.heads + wid.y) * n;
  let slot = lid.x % RB;
  let part = lid.x / RB;
  let first = wid.x * RB * ROWS + slot;

  // Key rows first + r·RB (k pre-multiplied by scale) and their value rows; queries
  // i ≡ part (mod SPLIT) of every tile.
  var kr: array<array<vec4f, D4_MAX>, ROWS_MAX>;
  var vr: array<array<vec4f, D4_MAX>, ROWS_MAX>;
  var dk_acc: array<array<vec4f, D4_MAX>, ROWS_MAX>;
  var dv_acc: array<array<vec4f, D4_MAX>, ROWS_MAX>;
  for (var r = 0u; r < ROWS; r++) {
    let j = first + r * RB;
    for (var d4 = 0u; d4 < D4; d4++) {
      kr[r][d4] = vec4f(0.0);
      vr[r][d4] = vec4f(0.0);
      dk_acc[r][d4] = vec4f(0.0);
      dv_acc[r][d4] = vec4f(0.0);
      if (j < n) {
        kr[r][d4] = load4(&k, head0 + j * stride, d4) * p.scale;
        vr[r][d4] = load4(&v, head0 + j * stride, d4);
      }
    }
  }

  // Causal: queries before the workgroup's first key row see none of its keys and are never
  // loaded; an invocation skips the queries before its own first key.
  var istart = 0u;
  if (CAUSAL != 0u) { istart = wid.x * RB * ROWS; }
  for (var i0 = istart; i0 < n; i0 += TILE) {
    let qn = min(TILE, n - i0);
    workgroupBarrier();
    for (var e = lid.x; e < qn * D4; e += BLOCK) {
      let src = head0 + (i0 + e / D4) * stride;
      q_tile[e] = load4(&q, src, e % D4);
      do_tile[e] = load4(&dout, src, e % D4);
    }
    for (var e = lid.x; e < qn; e += BLOCK) {
      lse_tile[e] = lse_in[rows0 + i0 + e];
      delta_tile[e] = delta_in[rows0 + i0 + e];
    }
    workgroupBarrier();
    for (var i = part; i < qn; i += SPLIT) {
      if (!visible(i0 + i, first)) { continue; }
      var s4: array<vec4f, ROWS_MAX>;
      var dp4: array<vec4f, ROWS_MAX>;
      for (var r = 0u; r < ROWS; r++) {
        s4[r] = vec4f(0.0);
        dp4[r] = vec4f(0.0);
      }
      // Q_i and dO_i are read from workgroup memory once and kept for the updates below.
      var qi: array<vec4f, D4_MAX>;
      var doi: array<vec4f, D4_MAX>;
      for (var d4 = 0u; d4 < D4; d4++) {
        qi[d4] = q_tile[i * D4 + d4];
        doi[d4] = do_tile[i * D4 + d4];
        for (var r = 0u; r < ROWS; r++) {
          s4[r] += qi[d4] * kr[r][d4];
          dp4[r] += doi[d4] * vr[r][d4];
        }
      }
      let lse_i = lse_tile[i];
      let delta_i = delta_tile[i];
      var pr: array<f32, ROWS_MAX>;
      var ds: array<f32, ROWS_MAX>;
      for (var r = 0u; r < ROWS; r++) {
        pr[r] = 0.0;
        ds[r] = 0.0;
        if (!visible(i0 + i, first + r * RB)) { continue; }
        pr[r] = exp(s4[r].x + s4[r].y + s4[r].z + s4[r].w - lse_i);
        ds[r] = pr[r] * (dp4[r].x + dp4[r].y + dp4[r].z + dp4[r].w - delta_i);
      }
      for (var d4 = 0u; d4 < D4; d4++) {
        for (var r = 0u; r < ROWS; r++) {
          dv_acc[r][d4] += pr[r] * doi[d4];
          dk_acc[r][d4] += ds[r] * qi[d4];
        }
      }
    }
  }

  // SPLIT > 1: part 0 adds the other parts' partial dK (via q_tile) and dV (via do_tile).
  for (var sp = 1u; sp < SPLIT; sp++) {
    workgroupBarrier();
    if (part == sp) {
      for (var r = 0u; r < ROWS; r++) {
        for (var d4 = 0u; d4 < D4; d4++) {
          q_tile[(slot * ROWS + r) * D4 + d4] = dk_acc[r][d4];
          do_tile[(slot * ROWS + r) * D4 + d4] = dv_acc[r][d4];
        }
      }
    }
    workgroupBarrier();
    if (part == 0u) {
      for (var r = 0u; r < ROWS; r++) {
        for (var d4 = 0u; d4 < D4; d4++) {
          dk_acc[r][d4] += q_tile[(slot * ROWS + r) * D4 + d4];
          dv_acc[r][d4] += do_tile[(slot * ROWS + r) * D4 + d4];
        }
      }
    }
  }

  for (var r = 0u; r < ROWS; r++) {
    let j = first + r * RB;
    if (part == 0u && j < n) {
      let row = head0 + j * stride;
      for (var d4 = 0u; d4 < D4; d4++) {
        let gk = dk_acc[r][d4] * p.scale;
        let gv = dv_acc[r][d4];
        for (var c = 0u; c < 4u; c++) {
          let d = d4 * 4u + c;
          if (in_dim(d)) {
            dk[row + d] = T(gk[c]);
            dv[row + d] = T(gv[c]);
          }
        }
      }
    }
  }
}
