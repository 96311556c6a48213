// Shared pieces of the tests that compare ops with the ViT-B/32-shape PyTorch fixture
// (scripts/fixtures/fx_vitb32.py → test/fixtures/vitb32.safetensors): batch 8 × 50 tokens,
// width 768, 12 heads of 64, MLP 3072. Inputs are regenerated bit-exactly (exactNormal, seeds
// 3000 + 100·case + input); the fixture stores slices of the outputs (rows, whole heads,
// weight-gradient rows) and whole reductions.
//
// Tolerance: checkScaled / scaledTol in fixtures.ts (the reductions at these shapes are 768- and
// 3072-term dot products and dW / dγ sums over 400 rows).
import * as assert from 'uvu/assert';
import { fixture, exactNormal, assertRegenerated } from './fixtures.ts';

export const VITB32 = { B: 8, N: 50, H: 12, DH: 64, D: 768, MLP: 3072 } as const;
export function vitb32Fixture(): ReturnType<typeof fixture> {
  const fx = fixture('vitb32');
  const { B, N, H, DH, D, MLP } = VITB32;
  assert.is(fx.metadata.shape, `B=${B},N=${N},H=${H},DH=${DH},D=${D},MLP=${MLP}`, 'vitb32 fixture shapes');
  return fx;
}

/** Input i of fixture case c, as fx_vitb32.gen: f32(exactNormal · scale). */
export function vitb32Input(c: number, i: number, size: number, scale = 1): Float32Array {
  return exactNormal(size, 3000 + 100 * c + i, scale);
}

/** Proves the regenerated inputs equal the fixture's (first values of each). */
export function vitb32Probe(name: string, inputs: Float32Array[]): void {
  assertRegenerated(fixture('vitb32'), name, inputs);
}
