// LoRA adapters for the student encoder (PEFT semantics).
//
// For a frozen linear layer y = x·Wᵀ + b (W [out, in]) the adapted layer computes
//   y = x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ,   A [r, in], B [out, r], s = lora_alpha / r.
// Init follows PEFT's defaults: A ~ Kaiming-uniform with a = √5 (bound = 1/√in), B = 0, so the
// student equals the teacher at step 0.
import { Parameter, parameter } from '../tensor/tensor.ts';
import type { Device } from '../gpu/device.ts';
import type { ClipVisionConfig } from './config.ts';
import { mulberry32 } from './init.ts';

export type LoraTarget = 'q_proj' | 'k_proj' | 'v_proj' | 'out_proj' | 'fc1' | 'fc2';
export const ATTENTION_TARGETS: readonly LoraTarget[] = ['q_proj', 'k_proj', 'v_proj', 'out_proj'];
export const ALL_TARGETS: readonly LoraTarget[] = [...ATTENTION_TARGETS, 'fc1', 'fc2'];

export interface LoraOptions {
  rank: number;
  /** lora_alpha; the scale applied is alpha / rank. Default: alpha = rank (scale 1). */
  alpha: number;
  targets: readonly LoraTarget[];
  seed: number;
}

export const DEFAULT_LORA: LoraOptions = { rank: 4, alpha: 4, targets: ATTENTION_TARGETS, seed: 0 };

export interface LoraPair {
  /** HF module path, e.g. vision_model.encoder.layers.0.self_attn.q_proj */
  path: string;
  a: Parameter;
  b: Parameter;
}

/** The HF prefix of a CLIP tower's tensors. */
export type Tower = 'vision_model' | 'text_model';

/** HF module path of linear layer `target` in encoder layer `layer` of `tower` (default: the vision tower, the one LoRA adapts). */
export function modulePath(layer: number, target: LoraTarget, tower: Tower = 'vision_model'): string {
  const base = `${tower}.encoder.layers.${layer}`;
  return target === 'fc1' || target === 'fc2' ? `${base}.mlp.${target}` : `${base}.self_attn.${target}`;
}

export function moduleShape(cfg: ClipVisionConfig, target: LoraTarget): { in: number; out: number } {
  if (target === 'fc1') return { in: cfg.hiddenSize, out: cfg.intermediateSize };
  if (target === 'fc2') return { in: cfg.intermediateSize, out: cfg.hiddenSize };
  return { in: cfg.hiddenSize, out: cfg.hiddenSize };
}

export class LoraAdapter {
  readonly pairs = new Map<string, LoraPair>();
  /** The student's own projection head (dual projection), when it has one; owned by the adapter. */
  projection: Parameter | null = null;
  constructor(
    readonly cfg: ClipVisionConfig,
    readonly options: LoraOptions,
  ) {}

  get scaling(): number {
    return this.options.alpha / this.options.rank;
  }

  /** PEFT default init: A Kaiming-uniform(a=√5) → U(−1/√in, 1/√in); B zeros. */
  static create(cfg: ClipVisionConfig, options: LoraOptions, device: Device): LoraAdapter {
    const { rank, targets } = options;
    if (!Number.isInteger(rank) || rank <= 0) throw new Error(`LoRA rank must be a positive integer, got ${rank}`);
    if (!(options.alpha > 0)) throw new Error(`LoRA alpha must be positive, got ${options.alpha}`);
    const adapter = new LoraAdapter(cfg, options);
    const rnd = mulberry32(options.seed ^ 0x10a);
    for (let layer = 0; layer < cfg.numHiddenLayers; layer++) {
      for (const t of targets) {
        const { in: fin, out } = moduleShape(cfg, t);
        const bound = 1 / Math.sqrt(fin);
        const a = new Float32Array(rank * fin);
        for (let i = 0; i < a.length; i++) a[i] = (2 * rnd() - 1) * bound;
        const path = modulePath(layer, t);
        adapter.pairs.set(path, {
          path,
          a: parameter(a, [rank, fin], `${path}.lora_A.weight`, device),
          b: parameter(new Float32Array(out * rank), [out, rank], `${path}.lora_B.weight`, device),
        });
      }
    }
    return adapter;
  }

  /** Builds an adapter from host arrays (PEFT files, checkpoints); shapes are validated by the caller. */
  static fromArrays(cfg: ClipVisionConfig, options: LoraOptions, arrays: Map<string, { a: Float32Array; b: Float32Array }>, device: Device): LoraAdapter {
    const adapter = new LoraAdapter(cfg, options);
    for (const [path, { a, b }] of arrays) {
      const target = path.split('.').pop() as LoraTarget;
      const { in: fin, out } = moduleShape(cfg, target);
      adapter.pairs.set(path, {
        path,
        a: parameter(a, [options.rank, fin], `${path}.lora_A.weight`, device),
        b: parameter(b, [out, options.rank], `${path}.lora_B.weight`, device),
      });
    }
    return adapter;
  }

  get(path: string): LoraPair | undefined {
    return this.pairs.get(path);
  }

  parameters(): Parameter[] {
    const out: Parameter[] = [];
    for (const p of this.pairs.values()) out.push(p.a, p.b);
    return out;
  }

  dispose(): void {
    for (const p of this.pairs.values()) {
      p.a.dispose();
      p.b.dispose();
    }
    this.pairs.clear();
    this.projection?.dispose();
    this.projection = null;
  }
}
