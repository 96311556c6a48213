// The learning-rate schedule against torch.optim.lr_scheduler (scripts/fixtures/fx_schedule.py):
// linear warmup as LinearLR, then CosineAnnealingLR, or CosineAnnealingWarmRestarts (SGDR).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { learningRate, type ScheduleOptions } from '../../src/train/schedule.ts';
import { assertClose, fixture } from '../helpers/fixtures.ts';

// The reference is stored in f32 (relative rounding 6e-8); the schedule is float64 arithmetic.
const TOL = { rtol: 2e-7, atol: 1e-12 };
const CASES = ['cosine', 'cosine_no_warmup', 'restarts_x2', 'restarts_x1', 'restarts_x3'];

for (const name of CASES) {
  test(`learningRate ${name}: every step matches PyTorch's schedulers`, () => {
    const fx = fixture('schedule');
    const o = JSON.parse(fx.metadata[name]) as ScheduleOptions;
    const want = fx.get(`${name}.lr`).data;
    assert.is(want.length, o.totalSteps);
    const got = Array.from({ length: o.totalSteps }, (_, s) => Math.fround(learningRate(s, o)));
    assertClose(got, want, TOL, `${name} lr`);
  });
}

test('learningRate: warmup reaches the peak on its last step, restarts go back to the peak, the end is min-lr', () => {
  const o: ScheduleOptions = { baseLr: 1e-3, minLr: 1e-5, warmupSteps: 4, totalSteps: 24, restartPeriod: 5, restartMult: 2 };
  assert.is(learningRate(0, o), 2.5e-4);
  assert.is(learningRate(3, o), 1e-3);
  assert.is(learningRate(4, o), 1e-3, 'first cosine step');
  assert.is(learningRate(9, o), 1e-3, 'restart after 5 steps');
  assert.is(learningRate(19, o), 1e-3, 'restart after 10 more');
  const plain = { ...o, restartPeriod: 0 };
  assert.ok(Math.abs(learningRate(24, plain) - 1e-5) < 1e-18, 'cosine ends at min-lr');
});

test.run();
