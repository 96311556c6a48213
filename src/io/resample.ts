// Bicubic resizing of 8-bit images that reproduces PIL's `Image.resize(size, Image.BICUBIC)`
// (what HF's CLIPImageProcessor uses) bit for bit, computing only a window of the output (the
// center crop), so the cost is bounded by the crop size and not by the resized image's size.
// Pure TypeScript without Node imports, so it can run in a browser too.
//
// The algorithm, as PIL (Pillow's libImaging/Resample.c) defines it:
//
// * Separable: first a horizontal pass (each needed source row resampled to the output width),
//   whose results are rounded and clipped to 8 bits, then a vertical pass over those 8-bit rows.
//   An axis whose size does not change is not resampled at all.
// * Pixel centres sit at i + 0.5. Output pixel o of an axis scaled from `inSize` to `outSize`
//   has its centre at c = (o + 0.5) · scale in source coordinates, scale = inSize / outSize.
// * The kernel is the bicubic convolution kernel with a = −0.5:
//     k(x) = (a + 2)|x|³ − (a + 3)|x|² + 1          for |x| < 1
//     k(x) = a(|x|³ − 5|x|² + 8|x| − 4)              for 1 ≤ |x| < 2,   0 beyond.
//   When downscaling (scale > 1) it is stretched by the scale: support 2 · scale, and source
//   pixel i gets weight k((i − c + 0.5) / scale) (the division done as a multiplication by
//   1 / scale). When upscaling the support is 2 and the weight k(i − c + 0.5).
// * The source pixels used are i ∈ [trunc(c − support + 0.5), trunc(c + support + 0.5)), clipped
//   to the image; the weights of those pixels are divided by their sum (so near the edges the
//   kernel is cut off and renormalised rather than extended with edge pixels).
// * Weights become fixed point with 22 fractional bits (PIL's PRECISION_BITS = 32 − 8 − 2),
//   each rounded half away from zero: trunc(w · 2²² ± 0.5). A pixel is the integer sum
//   2²¹ + Σ pixel · weight (the 2²¹ rounds to nearest), shifted right by 22 (floor) and clipped
//   to 0..255.
// All of this is integer or IEEE double arithmetic in the same order as PIL, so JavaScript gets
// the same bits.

/** 8-bit pixels: `channels` interleaved bytes per pixel, rows top to bottom. */
export interface Pixels {
  width: number;
  height: number;
  /** 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA. Alpha is ignored; grey is repeated into R, G and B. */
  channels: 1 | 2 | 3 | 4;
  data: Uint8Array;
}

/** A rectangle of the resized image; it may reach outside it (those pixels are 0). */
export interface Window {
  left: number;
  top: number;
  width: number;
  height: number;
}

/** Fractional bits of the fixed-point weights. */
const PRECISION_BITS = 22;
const ONE = 1 << PRECISION_BITS;
/** Added to every sum so that the final shift rounds to nearest. */
const HALF = 1 << (PRECISION_BITS - 1);
/** Support (half-width) of the bicubic kernel at scale 1. */
const BICUBIC_SUPPORT = 2;

/** The bicubic convolution kernel with a = −0.5, evaluated in PIL's order of operations. */
function bicubic(x: number): number {
  const a = -0.5;
  if (x < 0) x = -x;
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

/**
 * Fixed-point weights for output pixels [from, to) of one axis: output pixel from + j reads
 * source pixels first[j] … first[j] + count[j] − 1 with weights[j · stride + t].
 */
export interface Taps {
  first: Int32Array;
  count: Int32Array;
  weights: Int32Array;
  stride: number;
}

/** The taps of an axis whose size does not change: each output pixel is its source pixel. */
function identityTaps(from: number, to: number): Taps {
  const n = to - from;
  const first = new Int32Array(n);
  for (let j = 0; j < n; j++) first[j] = from + j;
  return { first, count: new Int32Array(n).fill(1), weights: new Int32Array(n).fill(ONE), stride: 1 };
}

/** Bicubic taps for output pixels [from, to) of an axis resized from inSize to outSize pixels. */
export function bicubicTaps(inSize: number, outSize: number, from: number, to: number): Taps {
  if (inSize === outSize) return identityTaps(from, to);
  // PIL passes the source extent as a C float (exact below 2^24 pixels).
  const scale = Math.fround(inSize) / outSize;
  const filterScale = Math.max(scale, 1);
  const support = BICUBIC_SUPPORT * filterScale;
  const invFilterScale = 1 / filterScale;
  const stride = Math.ceil(support) * 2 + 1;
  const n = to - from;
  const first = new Int32Array(n);
  const count = new Int32Array(n);
  const weights = new Int32Array(n * stride);
  const w = new Float64Array(stride);
  for (let j = 0; j < n; j++) {
    const center = (from + j + 0.5) * scale;
    const lo = Math.max(0, Math.trunc(center - support + 0.5));
    const hi = Math.min(inSize, Math.trunc(center + support + 0.5));
    let sum = 0;
    for (let i = lo; i < hi; i++) {
      const v = bicubic((i - center + 0.5) * invFilterScale);
      w[i - lo] = v;
      sum += v;
    }
    for (let t = 0; t < hi - lo; t++) {
      const v = sum !== 0 ? w[t] / sum : w[t];
      weights[j * stride + t] = Math.trunc(v < 0 ? v * ONE - 0.5 : v * ONE + 0.5);
    }
    first[j] = lo;
    count[j] = hi - lo;
  }
  return { first, count, weights, stride };
}

/**
 * The RGB pixels (interleaved, window.width × window.height × 3 bytes) of `window` in `src`
 * resized to outWidth × outHeight with PIL's bicubic filter. Only the window is computed: the
 * horizontal pass runs over the source rows that the window's rows need, and only for the
 * window's columns. Window pixels outside the resized image are 0 (HF's center crop pads small
 * images with zeros). An axis whose size does not change is copied, as PIL skips its pass.
 */
export function resizeWindowRgb(src: Pixels, outWidth: number, outHeight: number, window: Window): Uint8Array {
  const { width: inW, height: inH, channels } = src;
  // A plain Uint8Array view (a Node Buffer is a subclass), so the loops below see one array type.
  const data = new Uint8Array(src.data.buffer, src.data.byteOffset, src.data.length);
  if (data.length < inW * inH * channels) throw new RangeError(`resizeWindowRgb: ${data.length} bytes for a ${inW}x${inH}x${channels} image`);
  const out = new Uint8Array(window.width * window.height * 3);
  // The part of the window inside the resized image.
  const col0 = Math.max(0, window.left);
  const col1 = Math.min(outWidth, window.left + window.width);
  const row0 = Math.max(0, window.top);
  const row1 = Math.min(outHeight, window.top + window.height);
  if (col0 >= col1 || row0 >= row1) return out;
  const cols = col1 - col0;
  const rows = row1 - row0;

  const vert = bicubicTaps(inH, outHeight, row0, row1);
  // Source rows the vertical pass reads.
  const srcRow0 = vert.first[0];
  const srcRow1 = vert.first[rows - 1] + vert.count[rows - 1];
  const source = { data, width: inW, channels };
  const mid =
    inW === outWidth
      ? copyColumns(source, srcRow0, srcRow1, col0, cols)
      : horizontalPass(source, srcRow0, srcRow1, bicubicTaps(inW, outWidth, col0, col1));
  const rowBytes = cols * 3;
  const outRowBytes = window.width * 3;
  const outLeft = (col0 - window.left) * 3;
  if (inH === outHeight) {
    for (let i = 0; i < rows; i++) out.set(mid.subarray(i * rowBytes, (i + 1) * rowBytes), (row0 - window.top + i) * outRowBytes + outLeft);
  } else {
    verticalPass(mid, rowBytes, srcRow0, vert, (i, row) => out.set(row, (row0 - window.top + i) * outRowBytes + outLeft));
  }
  return out;
}

interface Source {
  data: Uint8Array;
  width: number;
  channels: number;
}

/** Offset of green within a source pixel (blue is at twice it): 0 for grey, which is repeated. */
function greenOffset(channels: number): number {
  return channels >= 3 ? 1 : 0;
}

/** Source rows [rowFrom, rowTo), columns [col0, col0 + cols), as RGB rows without resampling. */
function copyColumns(src: Source, rowFrom: number, rowTo: number, col0: number, cols: number): Uint8Array {
  const { data, width, channels } = src;
  const g = greenOffset(channels);
  const mid = new Uint8Array((rowTo - rowFrom) * cols * 3);
  let o = 0;
  for (let y = rowFrom; y < rowTo; y++) {
    let p = (y * width + col0) * channels;
    for (let j = 0; j < cols; j++, p += channels) {
      mid[o++] = data[p];
      mid[o++] = data[p + g];
      mid[o++] = data[p + 2 * g];
    }
  }
  return mid;
}

/**
 * Horizontal pass: source rows [rowFrom, rowTo) resampled to the output columns of `taps`, as
 * 8-bit RGB rows. Sums stay within int32 (the |weights| of a pixel sum to less than 2 · 2²²),
 * so `| 0` keeps V8 on integer arithmetic; the Uint8ClampedArray store clips to 0..255.
 */
function horizontalPass(src: Source, rowFrom: number, rowTo: number, taps: Taps): Uint8Array {
  const { data, width, channels } = src;
  const { first, count, weights, stride } = taps;
  const cols = first.length;
  const g = greenOffset(channels);
  const b2 = 2 * g;
  const mid = new Uint8ClampedArray((rowTo - rowFrom) * cols * 3);
  let o = 0;
  for (let y = rowFrom; y < rowTo; y++) {
    const rowBase = y * width * channels;
    for (let j = 0; j < cols; j++) {
      let r = HALF;
      let gr = HALF;
      let b = HALF;
      let p = rowBase + first[j] * channels;
      const k0 = j * stride;
      const k1 = k0 + count[j];
      for (let t = k0; t < k1; t++, p += channels) {
        const k = weights[t];
        r = (r + data[p] * k) | 0;
        gr = (gr + data[p + g] * k) | 0;
        b = (b + data[p + b2] * k) | 0;
      }
      mid[o++] = r >> PRECISION_BITS;
      mid[o++] = gr >> PRECISION_BITS;
      mid[o++] = b >> PRECISION_BITS;
    }
  }
  return new Uint8Array(mid.buffer);
}

/**
 * Vertical pass: output row i (of `taps`) is the weighted sum of `mid` rows (mid row 0 is source
 * row midRow0), accumulated four rows at a time (integer sums, so the grouping does not change
 * the result); each finished row goes to `emit`, which must copy it.
 */
function verticalPass(mid: Uint8Array, rowBytes: number, midRow0: number, taps: Taps, emit: (i: number, row: Uint8ClampedArray) => void): void {
  const { first, count, weights, stride } = taps;
  const acc = new Int32Array(rowBytes);
  const row = new Uint8ClampedArray(rowBytes);
  for (let i = 0; i < first.length; i++) {
    acc.fill(HALF);
    const k1 = i * stride + count[i];
    let m = (first[i] - midRow0) * rowBytes;
    let t = i * stride;
    for (; t + 3 < k1; t += 4, m += 4 * rowBytes) {
      const ka = weights[t];
      const kb = weights[t + 1];
      const kc = weights[t + 2];
      const kd = weights[t + 3];
      const mb = m + rowBytes;
      const mc = mb + rowBytes;
      const md = mc + rowBytes;
      for (let x = 0; x < rowBytes; x++) acc[x] = (acc[x] + mid[m + x] * ka + mid[mb + x] * kb + mid[mc + x] * kc + mid[md + x] * kd) | 0;
    }
    for (; t < k1; t++, m += rowBytes) {
      const k = weights[t];
      for (let x = 0; x < rowBytes; x++) acc[x] = (acc[x] + mid[m + x] * k) | 0;
    }
    for (let x = 0; x < rowBytes; x++) row[x] = acc[x] >> PRECISION_BITS;
    emit(i, row);
  }
}
