// Learning-rate schedule: linear warmup, then cosine decay to minLr, optionally with warm
// restarts (SGDR, Loshchilov & Hutter 2017: period T0 steps, each next period × tMult).
// The paper trains with "cosine annealing with warm restarts"; plain cosine is the default.
// Every step equals PyTorch's LinearLR warmup followed by CosineAnnealingLR / CosineAnnealingWarmRestarts
// (test/train/schedule.test.ts); a non-integer restartMult, which PyTorch does not allow, rounds each period.

export interface ScheduleOptions {
  baseLr: number;
  minLr: number;
  warmupSteps: number;
  totalSteps: number;
  /** Warm-restart period in steps after warmup (0 = no restarts: one cosine over the rest). */
  restartPeriod: number;
  restartMult: number;
}

export function learningRate(step: number, o: ScheduleOptions): number {
  // `step` is 0-based: the lr used for the (step+1)-th update.
  if (o.warmupSteps > 0 && step < o.warmupSteps) return (o.baseLr * (step + 1)) / o.warmupSteps;
  const t = step - o.warmupSteps;
  let period = Math.max(1, o.totalSteps - o.warmupSteps);
  let pos = t;
  if (o.restartPeriod > 0) {
    period = o.restartPeriod;
    while (pos >= period) {
      pos -= period;
      period = Math.max(1, Math.round(period * o.restartMult));
    }
  }
  const frac = Math.min(1, pos / period);
  return o.minLr + 0.5 * (o.baseLr - o.minLr) * (1 + Math.cos(Math.PI * frac));
}
