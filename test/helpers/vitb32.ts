// Shared pieces of the tests that compare ops with the ViT-B/32-shape PyTorch fixture
// (scripts/fixtures/fx_vitb32.py → test/fixtures/vitb32.safetensors): batch 8 × 50 tokens,
// width 768, 12 heads of 64, MLP 3072. Inputs are regenerated bit-exactly (exactNormal, seeds
// 3000 + 100·case + input); the fixture stores slices of the outputs (rows, whole heads,
// weight-gradient rows) and whole reductions.
//
// Tolerance: rtol 1e-5 with atol 1e-6 × the largest |reference| of the tensor: the long
// reductions at these shapes (768- and 3072-term dot products, dW and dγ sums over 400 rows)
// carry absolute f32 rounding error that a fixed atol cannot express.
import * as assert from 'uvu/assert';
import { fixture, assertClose, exactNormal, type Tolerance } from './fixtures.ts';

export const VITB32 = { B: 8, N: 50, H: 12, DH: 64, D: 768, MLP: 3072 } as const;
const PROBE = 8;

export function vitb32Fixture(): ReturnType<typeof fixture> {
  const fx = fixture('vitb32');
  const { B, N, H, DH, D, MLP } = VITB32;
  assert.is(fx.metadata.shape, `B=${B},N=${N},H=${H},DH=${DH},D=${D},MLP=${MLP}`, 'vitb32 fixture shapes');
  return fx;
}

export function scaledTol(ref: ArrayLike<number>, k = 1e-6): Tolerance {
  let mx = 0;
  for (let i = 0; i < ref.length; i++) mx = Math.max(mx, Math.abs(ref[i]));
  return { rtol: 1e-5, atol: k * Math.max(1, mx) };
}

export function checkScaled(actual: Float32Array, expected: Float32Array, label: string): void {
  assertClose(actual, expected, scaledTol(expected), label);
}

/** Input i of fixture case c, as fx_vitb32.gen: f32(exactNormal · scale). */
export function vitb32Input(c: number, i: number, size: number, scale = 1): Float32Array {
  return exactNormal(size, 3000 + 100 * c + i, scale);
}

/** Proves the regenerated inputs equal the fixture's (first values of each). */
export function vitb32Probe(name: string, inputs: Float32Array[]): void {
  const probe = fixture('vitb32').get(`${name}.probe`).data;
  inputs.forEach((d, i) => assert.equal(Array.from(d.subarray(0, PROBE)), Array.from(probe.subarray(i * PROBE, i * PROBE + PROBE)), `${name}: input ${i} regenerated bit-exactly`));
}

/** Rows `rows` of a [.., width] tensor, concatenated. */
export function pickRows(full: Float32Array, width: number, rows: number[]): Float32Array {
  const out = new Float32Array(rows.length * width);
  rows.forEach((r, i) => out.set(full.subarray(r * width, (r + 1) * width), i * width));
  return out;
}
