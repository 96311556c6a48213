// Dynamic loss scaling for f16 training, with the update rule of PyTorch's torch.cuda.amp.GradScaler.
//
// f16 has 10 mantissa bits and its smallest normal value is 2⁻¹⁴ ≈ 6.1e-5, so small gradients
// flowing backward through f16 activations underflow to zero. The loss is multiplied by `scale`
// before backward (every gradient is then `scale` times larger) and the optimizer divides the
// gradients by `scale` again before it uses them. When a scaled gradient overflows (an Inf or
// NaN anywhere in the gradients), the step is skipped and the scale halves; after
// `growthInterval` steps in a row without overflow it doubles:
//
//   found_inf:  scale ← scale · backoffFactor,  growthTracker ← 0      (the step is skipped)
//   otherwise:  growthTracker ← growthTracker + 1;
//               if growthTracker = growthInterval: scale ← scale · growthFactor, growthTracker ← 0
//
// Defaults as PyTorch's: initial scale 2¹⁶, growth 2, backoff 0.5, interval 2000. The state
// (scale, growthTracker) is saved with every checkpoint, so a resumed run scales exactly as an
// uninterrupted one.

export interface GradScalerOptions {
  initScale: number;
  growthFactor: number;
  backoffFactor: number;
  growthInterval: number;
}

export interface GradScalerState {
  scale: number;
  growthTracker: number;
}

export const GRAD_SCALER_DEFAULTS: GradScalerOptions = { initScale: 2 ** 16, growthFactor: 2, backoffFactor: 0.5, growthInterval: 2000 };

export class GradScaler {
  private state: GradScalerState;

  constructor(
    readonly options: GradScalerOptions = GRAD_SCALER_DEFAULTS,
    state?: GradScalerState,
  ) {
    if (!(options.initScale > 0) || !(options.growthFactor > 1) || !(options.backoffFactor > 0 && options.backoffFactor < 1) || !(Number.isInteger(options.growthInterval) && options.growthInterval > 0)) {
      throw new Error(`GradScaler: invalid options ${JSON.stringify(options)} (initScale > 0, growthFactor > 1, 0 < backoffFactor < 1, growthInterval a positive integer)`);
    }
    this.state = state ? checkState(state) : { scale: options.initScale, growthTracker: 0 };
  }

  /** The factor the loss is multiplied by before backward. */
  get scale(): number {
    return this.state.scale;
  }

  /** Steps in a row without overflow since the scale last changed. */
  get growthTracker(): number {
    return this.state.growthTracker;
  }

  /** Applies the update rule after a step whose scaled gradients were (`foundInf`) or were not finite. */
  update(foundInf: boolean): void {
    const o = this.options;
    if (foundInf) {
      this.state = { scale: this.state.scale * o.backoffFactor, growthTracker: 0 };
      return;
    }
    const successful = this.state.growthTracker + 1;
    this.state = successful === o.growthInterval ? { scale: this.state.scale * o.growthFactor, growthTracker: 0 } : { scale: this.state.scale, growthTracker: successful };
  }

  /** What a checkpoint saves. */
  stateDict(): GradScalerState {
    return { ...this.state };
  }
}

/**
 * What is wrong with a saved scaler state (a trainer_state.json field), or null: the field, what
 * it must be, and what it holds.
 */
export function gradScalerStateProblem(s: unknown): { field: string; want: string; got: unknown } | null {
  if (!s || typeof s !== 'object' || Array.isArray(s)) return { field: 'gradScaler', want: 'an object { scale, growthTracker }', got: s };
  const { scale, growthTracker } = s as Record<string, unknown>;
  if (typeof scale !== 'number' || !(scale > 0) || !Number.isFinite(scale)) return { field: 'gradScaler.scale', want: 'a finite number > 0', got: scale };
  if (typeof growthTracker !== 'number' || !Number.isInteger(growthTracker) || growthTracker < 0) return { field: 'gradScaler.growthTracker', want: 'an integer >= 0', got: growthTracker };
  return null;
}

/** Checks a saved scaler state (from trainer_state.json); the error names the field. */
export function checkState(s: GradScalerState): GradScalerState {
  const problem = gradScalerStateProblem(s);
  if (problem) throw new Error(`"${problem.field}" must be ${problem.want}, got ${JSON.stringify(problem.got)}`);
  return { scale: s.scale, growthTracker: s.growthTracker };
}
