// Reading a PEFT LoRA adapter from its parsed adapter_config.json and an opened
// adapter_model.safetensors, with no file system (io/peft.ts reads them from a directory; the
// browser bundle from fetched bytes). Keys and conventions are described in io/peft.ts.
import type { Device } from '../gpu/device.ts';
import type { ClipVisionConfig } from '../nn/config.ts';
import { LoraAdapter, ALL_TARGETS, modulePath, moduleShape, type LoraTarget } from '../nn/lora.ts';
import { parameter } from '../tensor/tensor.ts';
import { inlineListWithRest, listWithRest, LIST_LIMIT } from '../gpu/problem-list.ts';
import type { SafetensorsReader } from './safetensors-core.ts';

export const PEFT_PREFIX = 'base_model.model.';

export function peftKey(path: string, which: 'A' | 'B'): string {
  return `${PEFT_PREFIX}${path}.lora_${which}.weight`;
}

/**
 * The student's own projection head (dual projection) travels like a PEFT `modules_to_save`
 * module: a full copy of `visual_projection.weight` under the base_model.model prefix, with
 * "visual_projection" listed in adapter_config.json's modules_to_save.
 */
export const PROJECTION_KEY = `${PEFT_PREFIX}visual_projection.weight`;

/** "name (first at index i)" for each array that holds NaN or ±Inf. */
function nonFiniteTensors(arrays: Iterable<[string, Float32Array]>): string[] {
  const bad: string[] = [];
  for (const [name, data] of arrays) {
    const i = data.findIndex((v) => !Number.isFinite(v));
    if (i >= 0) bad.push(`${name} (first at index ${i}: ${data[i]})`);
  }
  return bad;
}

/** Rank and alpha from adapter_config.json's content (`cfgPath` names it in errors); refuses what genalign cannot apply. */
export function loraSettings(json: unknown, cfgPath: string): { rank: number; alpha: number } {
  if (!json || typeof json !== 'object' || Array.isArray(json)) throw new Error(`${cfgPath}: not a JSON object`);
  const raw = json as Record<string, unknown>;
  if (raw.peft_type !== 'LORA') throw new Error(`${cfgPath}: peft_type is ${JSON.stringify(raw.peft_type)}, only LORA is supported`);
  // PEFT's LoraConfig defaults: r = 8, lora_alpha = 8 (a config saved by PEFT always has both).
  const rank = raw.r ?? 8;
  const alpha = raw.lora_alpha ?? 8;
  if (typeof rank !== 'number' || !Number.isInteger(rank) || rank <= 0) throw new Error(`${cfgPath}: r must be a positive integer`);
  if (typeof alpha !== 'number' || !(alpha > 0)) throw new Error(`${cfgPath}: lora_alpha must be a positive number`);
  if (raw.use_rslora === true || raw.use_dora === true) throw new Error(`${cfgPath}: rsLoRA/DoRA adapters are not supported`);
  // Per-module ranks or alphas would give some modules another scaling than alpha / r.
  for (const key of ['rank_pattern', 'alpha_pattern'] as const) {
    const v = raw[key];
    if (v && typeof v === 'object' && Object.keys(v).length > 0) throw new Error(`${cfgPath}: ${key} is set (${inlineListWithRest(Object.keys(v), 5)}); per-module ranks or alphas are not supported`);
  }
  return { rank, alpha };
}

/** The LoRA adapter in `st` (an adapter_model.safetensors) for a model with config `cfg`. Lists every problem at once. */
export function adapterFromSafetensors(st: SafetensorsReader, cfg: ClipVisionConfig, rank: number, alpha: number, device: Device): LoraAdapter {
  const arrays = new Map<string, { a: Float32Array; b: Float32Array }>();
  const problems: string[] = [];
  const targets = new Set<LoraTarget>();
  const names = new Map<string, { a: string; b: string }>();
  const keys = new Set([...st.tensors.keys()].filter((k) => k.includes('lora_')));
  for (let layer = 0; layer < cfg.numHiddenLayers; layer++) {
    for (const t of ALL_TARGETS) {
      const path = modulePath(layer, t);
      // PEFT names the A/B weights with the adapter name in some versions (lora_A.default.weight).
      const ka = [peftKey(path, 'A'), `${PEFT_PREFIX}${path}.lora_A.default.weight`].find((k) => st.has(k));
      const kb = [peftKey(path, 'B'), `${PEFT_PREFIX}${path}.lora_B.default.weight`].find((k) => st.has(k));
      if (!ka && !kb) continue;
      if (!ka || !kb) {
        problems.push(`${path}: has lora_${ka ? 'A' : 'B'} but not lora_${ka ? 'B' : 'A'}`);
        continue;
      }
      keys.delete(ka);
      keys.delete(kb);
      const { in: fin, out } = moduleShape(cfg, t);
      const sa = st.info(ka).shape;
      const sb = st.info(kb).shape;
      if (sa.join(',') !== `${rank},${fin}`) problems.push(`${ka}: expected [${rank}, ${fin}], found [${sa.join(', ')}]`);
      if (sb.join(',') !== `${out},${rank}`) problems.push(`${kb}: expected [${out}, ${rank}], found [${sb.join(', ')}]`);
      targets.add(t);
      arrays.set(path, { a: st.float32(ka), b: st.float32(kb) });
      names.set(path, { a: ka, b: kb });
    }
  }
  let projection: Float32Array | null = null;
  if (st.has(PROJECTION_KEY)) {
    keys.delete(PROJECTION_KEY);
    const shape = st.info(PROJECTION_KEY).shape;
    if (shape.join(',') !== `${cfg.projectionDim},${cfg.hiddenSize}`) problems.push(`${PROJECTION_KEY}: expected [${cfg.projectionDim}, ${cfg.hiddenSize}], found [${shape.join(', ')}]`);
    else projection = st.float32(PROJECTION_KEY);
  }
  for (const k of keys) problems.push(`${k}: not a LoRA weight of this CLIP vision model (wrong model or module path?)`);
  if (arrays.size === 0) problems.push('no LoRA weights found');
  if (problems.length) throw new Error(`${st.path}: adapter does not fit the model (${problems.length} problem${problems.length > 1 ? 's' : ''}):\n  ${listWithRest(problems, LIST_LIMIT, '- ')}`);
  const nonFinite = nonFiniteTensors([
    ...[...arrays].flatMap(([path, ab]): [string, Float32Array][] => [[names.get(path)!.a, ab.a], [names.get(path)!.b, ab.b]]),
    ...(projection ? [[PROJECTION_KEY, projection] as [string, Float32Array]] : []),
  ]);
  if (nonFinite.length) {
    throw new Error(
      `${st.path}: adapter weights are not finite (NaN or ±Inf) in ${nonFinite.length} tensor(s):\n  ${listWithRest(nonFinite, 5, '- ')}\n` +
        'The training run that wrote it diverged: use an earlier checkpoint of the run (checkpoints/step-*), or retrain with a lower --lr.',
    );
  }
  const adapter = LoraAdapter.fromArrays(cfg, { rank, alpha, targets: ALL_TARGETS.filter((t) => targets.has(t)), seed: 0 }, arrays, device);
  if (projection) adapter.projection = parameter(projection, [cfg.projectionDim, cfg.hiddenSize], 'student.visual_projection.weight', device);
  return adapter;
}
