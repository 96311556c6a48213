// PEFT LoRA adapters: adapter_model.safetensors + adapter_config.json, as written by
// `peft.get_peft_model(CLIPVisionModelWithProjection, LoraConfig(...)).save_pretrained(dir)`.
// Keys: base_model.model.<module path>.lora_A.weight [r, in] and .lora_B.weight [out, r].
//
// When the base model is a random-weight preset (--model tiny, ...), its weights depend on the
// seed, so the adapter fits only that seed. genalign records it in the safetensors
// __metadata__ (genalign_base_model, genalign_base_seed), not in adapter_config.json: PEFT
// ignores __metadata__, whereas PEFT before 0.14 rejects unknown adapter_config.json keys
// (TypeError: LoraConfig.__init__() got an unexpected keyword argument).
import { existsSync } from 'node:fs';
import { readRegularTextFile } from '../platform/regular-file.ts';
import { join } from 'node:path';
import type { Device } from '../gpu/device.ts';
import { NAMED_CONFIGS, type ClipVisionConfig } from '../nn/config.ts';
import type { LoraAdapter } from '../nn/lora.ts';
import { SafetensorsFile, encodeSafetensors } from './safetensors.ts';
import { PROJECTION_KEY, adapterFromSafetensors, loraSettings, peftKey } from './peft-core.ts';
import { writeFileAtomic } from '../platform/atomic-file.ts';
import { isModelDir } from './hf-checkpoint.ts';

export * from './peft-core.ts';

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

/** safetensors __metadata__ keys of the preset base model and its seed (see the header comment). */
export const BASE_MODEL_KEY = 'genalign_base_model';
export const BASE_SEED_KEY = 'genalign_base_seed';

function isPreset(model: string): boolean {
  return Object.hasOwn(NAMED_CONFIGS, model);
}

/** The two files of a PEFT adapter directory, as bytes: adapter_model.safetensors and adapter_config.json. */
export interface PeftAdapterFiles {
  'adapter_model.safetensors': Uint8Array[];
  'adapter_config.json': string;
}

/**
 * Serialises the adapter: its LoRA weights (and the student projection) in PEFT's layout, and
 * adapter_config.json. `baseModel` is the model's source (a directory or a preset name). When it
 * is a preset and `baseSeed` is given, the seed its random weights were made with is recorded
 * (embed/eval then refuse another --seed).
 */
export async function encodePeftAdapter(adapter: LoraAdapter, baseModel: string, baseSeed?: number): Promise<PeftAdapterFiles> {
  const tensors: Record<string, { shape: readonly number[]; data: Float32Array }> = {};
  for (const pair of adapter.pairs.values()) {
    tensors[peftKey(pair.path, 'A')] = { shape: pair.a.shape, data: await pair.a.read() };
    tensors[peftKey(pair.path, 'B')] = { shape: pair.b.shape, data: await pair.b.read() };
  }
  if (adapter.projection) tensors[PROJECTION_KEY] = { shape: adapter.projection.shape, data: await adapter.projection.read() };
  const metadata: Record<string, string> = { format: 'pt' };
  if (baseSeed !== undefined && isPreset(baseModel)) {
    metadata[BASE_MODEL_KEY] = baseModel;
    metadata[BASE_SEED_KEY] = String(baseSeed);
  }
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
  return { 'adapter_model.safetensors': encodeSafetensors(tensors, metadata), 'adapter_config.json': JSON.stringify(cfg, null, 2) + '\n' };
}

/** Writes the adapter into `dir`, each file atomically (tensors first, then the config). */
export async function writePeftAdapter(dir: string, adapter: LoraAdapter, baseModel: string, baseSeed?: number): Promise<void> {
  const files = await encodePeftAdapter(adapter, baseModel, baseSeed);
  writeFileAtomic(join(dir, 'adapter_model.safetensors'), files['adapter_model.safetensors']);
  writeFileAtomic(join(dir, 'adapter_config.json'), files['adapter_config.json']);
}

/**
 * The preset base model and seed an adapter was trained on, as writePeftAdapter recorded them;
 * null when none is recorded (a directory base model, an older or a non-genalign adapter) or
 * the file cannot be read (readPeftAdapter reports that).
 */
export function readAdapterBase(dir: string): { model: string; seed: number } | null {
  const stPath = join(dir, 'adapter_model.safetensors');
  if (!existsSync(stPath)) return null;
  let meta: Record<string, string>;
  try {
    const st = SafetensorsFile.open(stPath);
    meta = { ...st.metadata };
    st.close();
  } catch {
    return null;
  }
  const model = meta[BASE_MODEL_KEY];
  const seed = Number(meta[BASE_SEED_KEY]);
  if (model === undefined || meta[BASE_SEED_KEY] === undefined || !Number.isInteger(seed)) return null;
  return { model, seed };
}

/**
 * Why the adapter in `dir` does not fit `--model modelSpec --seed seed`, or null when it fits
 * (or records nothing). Only adapters trained on a preset record their base: a preset's random
 * weights depend on the seed, and fit neither another preset nor a checkpoint directory. Cheap
 * (reads the safetensors header only), so callers run it before loading models.
 */
export function adapterBaseProblem(dir: string, modelSpec: string, seed: number): string | null {
  const base = readAdapterBase(dir);
  if (!base) return null;
  const trained = `--lora ${dir} was trained on the preset model '${base.model}' with --seed ${base.seed} (recorded in adapter_model.safetensors)`;
  // A preset's weights are random: its adapter means nothing on a checkpoint's weights either.
  if (isModelDir(modelSpec) || base.model !== modelSpec) return `${trained}, not on '${modelSpec}': pass --model ${base.model} --seed ${base.seed}.`;
  if (base.seed !== seed) return `${trained}; a preset's random base weights depend on the seed, so this adapter fits only those weights, but --seed is ${seed}. Pass --seed ${base.seed}.`;
  return null;
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
  const text = readRegularTextFile(cfgPath, "the adapter's configuration (the JSON file adapter_config.json that PEFT's save_pretrained writes)");
  try {
    raw = JSON.parse(text) as Record<string, unknown>;
  } catch (e) {
    throw new Error(`${cfgPath}: not valid JSON (${(e as Error).message})`);
  }
  const { rank, alpha } = loraSettings(raw, cfgPath);
  if (!existsSync(stPath)) throw new Error(`${dir}: no adapter_model.safetensors`);
  const st = SafetensorsFile.open(stPath, "the adapter's weights (the safetensors file adapter_model.safetensors that PEFT's save_pretrained writes)");
  try {
    return adapterFromSafetensors(st, cfg, rank, alpha, device);
  } finally {
    st.close();
  }
}
