// GradScaler's update rule (PyTorch's GradScaler: backoff on overflow, growth after
// growthInterval clean steps), checked against a closed form of the same rule over long random
// overflow patterns, and its state round trip and validation.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { GradScaler, GRAD_SCALER_DEFAULTS, checkState } from '../../src/train/grad-scaler.ts';
import { mulberry32 } from '../../src/nn/init.ts';
import { parseTrainerState } from '../../src/train/checkpoint.ts';

/**
 * The scale after a sequence of steps, computed the other way round: each overflow halves the
 * scale and ends the current run of clean steps; each completed run of `interval` clean steps
 * doubles it.
 */
function closedForm(overflows: boolean[], init: number, interval: number, growth: number, backoff: number): { scale: number; tracker: number } {
  let exponentBackoff = 0;
  let grows = 0;
  let run = 0;
  for (const inf of overflows) {
    if (inf) {
      exponentBackoff++;
      run = 0;
    } else if (++run === interval) {
      grows++;
      run = 0;
    }
  }
  return { scale: init * backoff ** exponentBackoff * growth ** grows, tracker: run };
}

test('defaults are PyTorch GradScaler\'s: init 2^16, growth 2, backoff 0.5, interval 2000', () => {
  assert.equal(GRAD_SCALER_DEFAULTS, { initScale: 65536, growthFactor: 2, backoffFactor: 0.5, growthInterval: 2000 });
  const s = new GradScaler();
  assert.is(s.scale, 65536);
  s.update(true);
  assert.is(s.scale, 32768);
  for (let i = 0; i < 1999; i++) s.update(false);
  assert.is(s.scale, 32768, 'not before 2000 clean steps');
  s.update(false);
  assert.is(s.scale, 65536);
  assert.is(s.growthTracker, 0);
});

test('long random overflow patterns match the closed form at every step', () => {
  const rand = mulberry32(7);
  for (const [interval, p] of [[3, 0.1], [5, 0.3], [1, 0.5], [50, 0.01]] as const) {
    const s = new GradScaler({ initScale: 1024, growthFactor: 2, backoffFactor: 0.5, growthInterval: interval });
    const seen: boolean[] = [];
    for (let i = 0; i < 2000; i++) {
      const inf = rand() < p;
      seen.push(inf);
      s.update(inf);
      const want = closedForm(seen, 1024, interval, 2, 0.5);
      assert.is(s.scale, want.scale, `interval ${interval}, step ${i}`);
      assert.is(s.growthTracker, want.tracker, `interval ${interval}, step ${i}`);
    }
  }
});

test('state round trip continues identically; bad saved state is named', () => {
  const a = new GradScaler({ ...GRAD_SCALER_DEFAULTS, growthInterval: 4 });
  for (const inf of [false, true, false, false]) a.update(inf);
  const b = new GradScaler(a.options, a.stateDict());
  for (const inf of [false, false, true, false, false, false, false]) {
    a.update(inf);
    b.update(inf);
    assert.equal(b.stateDict(), a.stateDict());
  }
  assert.throws(() => checkState({ scale: 0, growthTracker: 0 }), /"gradScaler\.scale" must be a finite number > 0, got 0/);
  assert.throws(() => checkState({ scale: 2, growthTracker: 1.5 }), /"gradScaler\.growthTracker" must be an integer >= 0/);
  assert.throws(() => new GradScaler({ ...GRAD_SCALER_DEFAULTS, backoffFactor: 1 }), /invalid options/);
});

test('trainer_state.json: a damaged gradScaler field is named with the file; a good one is read back', () => {
  const base = { step: 3, epoch: 0, batchInEpoch: 3, seed: 0, configHash: '0123456789abcdef', lastLoss: 1.5, schedule: { baseLr: 1e-3 } };
  const path = '/run/checkpoints/step-000003/trainer_state.json';
  assert.equal(parseTrainerState({ ...base, gradScaler: { scale: 1024, growthTracker: 7 } }, path).gradScaler, { scale: 1024, growthTracker: 7 });
  assert.is(parseTrainerState(base, path).gradScaler, undefined, 'an f32 run has none');
  for (const [g, msg] of [
    [null, /"gradScaler" must be an object \{ scale, growthTracker \}, got null/],
    [{ scale: -1, growthTracker: 0 }, /"gradScaler\.scale" must be a finite number > 0, got -1/],
    [{ scale: 8, growthTracker: 'x' }, /"gradScaler\.growthTracker" must be an integer >= 0, got "x"/],
  ] as const) {
    assert.throws(() => parseTrainerState({ ...base, gradScaler: g }, path), (e: Error) => e.message.startsWith(`${path}: `) && msg.test(e.message) && /the trainer state is damaged/.test(e.message));
  }
});

test.run();
