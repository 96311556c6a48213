// PEFT LoRA adapters: adapter_model.safetensors + adapter_config.json, as written by
// `peft.get_peft_model(CLIPVisionModelWithProjection, LoraConfig(...)).save_pretrained(dir)`.
// Keys: base_model.model.<module path>.lora_A.weight [r, in] and .lora_B.weight [out, r].
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Device } from '../gpu/device.ts';
import type { ClipVisionConfig } from '../nn/config.ts';
import { LoraAdapter, ALL_TARGETS, modulePath, moduleShape, type LoraTarget } from '../nn/lora.ts';
import { parameter } from '../tensor/tensor.ts';
import { SafetensorsFile, writeSafetensors } from './safetensors.ts';
import { writeFileAtomic } from '../gpu/atomic-file.ts';

export const PEFT_PREFIX = 'base_model.model.';

export interface AdapterConfig {
  peft_type: 'LORA';
  r: number;
  lora_alpha: number;
  target_modules: string[];
  lora_dropout: number;
  bias: 'none';
  base_model_name_or_path: string;
  task_type: null;
  inference_mode: boolean;
  modules_to_save: string[] | null;
}

export function peftKey(path: string, which: 'A' | 'B'): string {
  return `${PEFT_PREFIX}${path}.lora_${which}.weight`;
}

/**
 * The student's own projection head (dual projection) travels like a PEFT `modules_to_save`
 * module: a full copy of `visual_projection.weight` under the base_model.model prefix, with
 * "visual_projection" listed in adapter_config.json's modules_to_save.
 */
export const PROJECTION_KEY = `${PEFT_PREFIX}visual_projection.weight`;

/** Writes the adapter atomically (tensors first, then the config). */
export async function writePeftAdapter(dir: string, adapter: LoraAdapter, baseModel: string): Promise<void> {
  const tensors: Record<string, { shape: readonly number[]; data: Float32Array }> = {};
  for (const pair of adapter.pairs.values()) {
    tensors[peftKey(pair.path, 'A')] = { shape: pair.a.shape, data: await pair.a.read() };
    tensors[peftKey(pair.path, 'B')] = { shape: pair.b.shape, data: await pair.b.read() };
  }
  if (adapter.projection) tensors[PROJECTION_KEY] = { shape: adapter.projection.shape, data: await adapter.projection.read() };
  writeSafetensors(join(dir, 'adapter_model.safetensors'), tensors, { format: 'pt' });
  const cfg: AdapterConfig = {
    peft_type: 'LORA',
    r: adapter.options.rank,
    lora_alpha: adapter.options.alpha,
    target_modules: [...adapter.options.targets],
    lora_dropout: 0,
    bias: 'none',
    base_model_name_or_path: baseModel,
    task_type: null,
    inference_mode: true,
    modules_to_save: adapter.projection ? ['visual_projection'] : null,
  };
  writeFileAtomic(join(dir, 'adapter_config.json'), JSON.stringify(cfg, null, 2) + '\n');
}

/** Reads a PEFT adapter directory for a model with config `cfg`. Lists every problem at once. */
export function readPeftAdapter(dir: string, cfg: ClipVisionConfig, device: Device): LoraAdapter {
  const cfgPath = join(dir, 'adapter_config.json');
  const stPath = join(dir, 'adapter_model.safetensors');
  if (!existsSync(cfgPath)) {
    if (existsSync(join(dir, 'adapter_model.bin'))) throw new Error(`${dir}: adapter_model.bin found; genalign reads only adapter_model.safetensors`);
    throw new Error(`${dir}: no adapter_config.json (expected a PEFT LoRA adapter directory)`);
  }
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(readFileSync(cfgPath, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new Error(`${cfgPath}: not valid JSON (${(e as Error).message})`);
  }
  if (raw.peft_type !== 'LORA') throw new Error(`${cfgPath}: peft_type is ${JSON.stringify(raw.peft_type)}, only LORA is supported`);
  const rank = raw.r;
  const alpha = raw.lora_alpha ?? rank;
  if (typeof rank !== 'number' || !Number.isInteger(rank) || rank <= 0) throw new Error(`${cfgPath}: r must be a positive integer`);
  if (typeof alpha !== 'number' || !(alpha > 0)) throw new Error(`${cfgPath}: lora_alpha must be a positive number`);
  if (raw.use_rslora === true || raw.use_dora === true) throw new Error(`${cfgPath}: rsLoRA/DoRA adapters are not supported`);
  if (!existsSync(stPath)) throw new Error(`${dir}: no adapter_model.safetensors`);
  const st = SafetensorsFile.open(stPath);
  try {
    const arrays = new Map<string, { a: Float32Array; b: Float32Array }>();
    const problems: string[] = [];
    const targets = new Set<LoraTarget>();
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
    if (problems.length) throw new Error(`${stPath}: adapter does not fit the model:\n  - ${problems.join('\n  - ')}`);
    const adapter = LoraAdapter.fromArrays(cfg, { rank, alpha, targets: ALL_TARGETS.filter((t) => targets.has(t)), seed: 0 }, arrays, device);
    if (projection) adapter.projection = parameter(projection, [cfg.projectionDim, cfg.hiddenSize], 'student.visual_projection.weight', device);
    return adapter;
  } finally {
    st.close();
  }
}
