// Every TrainOptions field for tests that call train() directly: small, fast values (tiny
// preset, no eval, no warmup), overridden per test.
import { ATTENTION_TARGETS } from '../../src/nn/lora.ts';
import type { TrainOptions } from '../../src/train/trainer.ts';

export function trainOptions(over: Partial<TrainOptions> & Pick<TrainOptions, 'data' | 'out' | 'cacheDir'>): TrainOptions {
  return {
    model: 'tiny', steps: 2, epochs: 1, batch: 8, accum: 1, lr: 1e-2, minLr: 0,
    weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, clip: 1, warmup: 0, restartPeriod: 0, restartMult: 1,
    rank: 4, alpha: 4, targets: [...ATTENTION_TARGETS], dualProjection: false, precision: 'f32', tau: 0.07, cosineWeight: 0, seed: 0, valFraction: 0,
    teacherCache: true, saveEvery: 500, logEvery: 10, keepCheckpoints: 3, maxBadFraction: 0.05, eval: false, plot: 'pca', resume: null,
    valData: null, shuffleBuffer: 1000, evalMax: 2000, devices: '1', ...over,
  };
}
