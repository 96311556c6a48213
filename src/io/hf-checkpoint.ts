// Loading Hugging Face CLIP checkpoints: a directory with config.json and model.safetensors, or
// a sharded model.safetensors.index.json. F32 / F16 / BF16 tensors become f32 on the GPU, or f16 for
// mixed precision (the loaders' dtype).
// Which checkpoints: CLIPModel (config.json with text_config + vision_config; tensors
// vision_model.*, visual_projection.weight, text_model.*, text_projection.weight, logit_scale),
// CLIPVisionModel[WithProjection] (a vision config) and CLIPTextModel[WithProjection] (a text
// config). Each loader uploads the tensors of its tower and leaves the others (and
// position_ids buffers) unread.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { readRegularTextFile } from '../platform/regular-file.ts';
import type { Device } from '../gpu/device.ts';
import type { DType, Tensor } from '../tensor/tensor.ts';
import { parseHfConfig, parseHfTextConfig, isTextOnlyConfig, NAMED_CONFIGS, NAMED_TEXT_CONFIGS, type ClipVisionConfig, type ClipTextConfig } from '../nn/config.ts';
import { ClipVisionModel, expectedShapes } from '../nn/vit.ts';
import { ClipTextModel, expectedTextShapes } from '../nn/text.ts';
import { SafetensorsFile } from './safetensors.ts';
import { uploadCheckpointTensors } from './checkpoint-tensors.ts';
import { inlineListWithRest } from '../gpu/problem-list.ts';
import { cropProblem, parsePreprocessorConfig, type PreprocessConfig } from './image.ts';

export interface LoadedModel {
  model: ClipVisionModel;
  /** Directory or preset name, as written into adapter_config.json's base_model_name_or_path. */
  source: string;
  /** Parsed preprocessor_config.json when present. */
  preprocessor: unknown;
}

/** What each JSON file of a model directory is, for the error when it is not a file. */
const JSON_FILE_ROLES: Record<string, string> = {
  'config.json': "the model's configuration (the JSON file config.json of an HF CLIP model)",
  'preprocessor_config.json': "the model's image preprocessing settings (the JSON file preprocessor_config.json)",
  'model.safetensors.index.json': 'the JSON index of a sharded checkpoint (its weight_map names the shard files)',
};

function readJson(path: string): unknown {
  const text = readRegularTextFile(path, JSON_FILE_ROLES[basename(path)] ?? 'a JSON file');
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`${path}: cannot read JSON (${(e as Error).message})`);
  }
}

/** Which safetensors files hold which tensor names. */
function checkpointFiles(dir: string): string[] {
  const single = join(dir, 'model.safetensors');
  const index = join(dir, 'model.safetensors.index.json');
  if (existsSync(index)) {
    const idx = readJson(index) as { weight_map?: Record<string, string> };
    if (!idx.weight_map || typeof idx.weight_map !== 'object') throw new Error(`${index}: missing "weight_map"`);
    return [...new Set(Object.values(idx.weight_map))].map((f) => join(dir, f));
  }
  if (existsSync(single)) return [single];
  const other = readdirSync(dir).filter((f) => /\.(bin|pt|pth|ckpt)$/.test(f));
  if (other.length) {
    throw new Error(
      `${dir}: found ${inlineListWithRest(other, 5)} but no model.safetensors. genalign reads only safetensors checkpoints ` +
        '(pickle files can run arbitrary code and are not read). Convert in Python: ' +
        "`CLIPModel.from_pretrained(dir).save_pretrained(out_dir, safe_serialization=True)`.",
    );
  }
  throw new Error(`${dir}: no model.safetensors or model.safetensors.index.json found`);
}

export function isModelDir(path: string): boolean {
  return existsSync(path) && statSync(path).isDirectory();
}

function readConfigJson(dir: string): { json: unknown; path: string } {
  const path = join(dir, 'config.json');
  if (!existsSync(path)) throw new Error(`${dir}: no config.json (expected an HF CLIP model directory)`);
  return { json: readJson(path), path };
}

/** Reads config.json of an HF CLIP (or CLIP vision) model directory: the vision tower's config. */
export function readModelConfig(dir: string): ClipVisionConfig {
  const { json, path } = readConfigJson(dir);
  if (isTextOnlyConfig(json)) throw new Error(`${path}: this is a CLIP text config (a CLIPTextModel checkpoint); it has no vision tower. Use a CLIPModel or CLIPVisionModel checkpoint for images`);
  return parseHfConfig(json, path);
}

/** Reads config.json of an HF CLIPModel or CLIPTextModel[WithProjection] directory: the text tower's config. */
export function readTextModelConfig(dir: string): ClipTextConfig {
  const { json, path } = readConfigJson(dir);
  return parseHfTextConfig(json, path);
}

/**
 * Whether `spec` is a checkpoint directory holding a text tower: config.json describes one
 * (CLIPModel or CLIPTextModel[WithProjection]) and the weights include its token embedding.
 * (A CLIPModel config saved with a vision-only checkpoint describes a text tower it lacks.)
 */
export function hasTextTower(spec: string): boolean {
  if (!isModelDir(spec)) return false;
  try {
    readTextModelConfig(spec);
  } catch {
    return false;
  }
  const name = 'text_model.embeddings.token_embedding.weight';
  const index = join(spec, 'model.safetensors.index.json');
  if (existsSync(index)) {
    const idx = readJson(index) as { weight_map?: Record<string, string> };
    return !!idx.weight_map && Object.prototype.hasOwnProperty.call(idx.weight_map, name);
  }
  const single = join(spec, 'model.safetensors');
  if (!existsSync(single)) return false;
  const f = SafetensorsFile.open(single, 'a CLIP checkpoint');
  try {
    return f.has(name);
  } finally {
    f.close();
  }
}

/** A scalar the checkpoint holds besides the towers' tensors (logit_scale), expected shape []. */
const LOGIT_SCALE = 'logit_scale';

/**
 * Reads the tensors named in `expected` (with their shapes) from a checkpoint directory onto the
 * GPU in `dtype`, and the scalars named in `scalars` (shape [], to the host; null when absent).
 * Every missing or mis-shaped tensor is listed in one error, naming the directory, the tensor,
 * the file it is in and the shape expected.
 */
function readCheckpointTensors(dir: string, expected: Map<string, number[]>, device: Device, dtype: DType, scalars: readonly string[] = []): { weights: Map<string, Tensor>; scalars: Map<string, number | null> } {
  const files = checkpointFiles(dir);
  const index = join(dir, 'model.safetensors.index.json');
  const opened: SafetensorsFile[] = [];
  try {
    for (const f of files) {
      if (!existsSync(f)) throw new Error(`${f}: listed in the index but missing`);
      opened.push(SafetensorsFile.open(f, existsSync(index) ? `a checkpoint shard named in ${index} (a safetensors file)` : "the model's weights (a safetensors file)"));
    }
    return uploadCheckpointTensors(dir, opened, expected, device, dtype, scalars);
  } finally {
    for (const st of opened) st.close();
  }
}

/** Loads the vision tower of an HF CLIP checkpoint directory onto the GPU. */
export function loadClipVision(dir: string, device: Device, dtype: DType = 'f32'): LoadedModel {
  if (!isModelDir(dir)) throw new Error(`Model directory not found: ${dir}`);
  const cfg = readModelConfig(dir);
  const { weights } = readCheckpointTensors(dir, expectedShapes(cfg), device, dtype);
  const pre = join(dir, 'preprocessor_config.json');
  return { model: ClipVisionModel.fromWeights(cfg, weights, device, dtype), source: resolve(dir), preprocessor: existsSync(pre) ? readJson(pre) : null };
}

export interface LoadedTextModel {
  model: ClipTextModel;
  /** Directory, resolved. */
  source: string;
  /** CLIPModel's logit_scale (log of the inverse temperature), or null when the checkpoint has none (CLIPTextModelWithProjection). */
  logitScale: number | null;
}

/** Loads the text tower of an HF CLIPModel or CLIPTextModelWithProjection checkpoint directory onto the GPU. */
export function loadClipText(dir: string, device: Device, dtype: DType = 'f32'): LoadedTextModel {
  if (!isModelDir(dir)) throw new Error(`Model directory not found: ${dir}`);
  const cfg = readTextModelConfig(dir);
  const { weights, scalars } = readCheckpointTensors(dir, expectedTextShapes(cfg), device, dtype, [LOGIT_SCALE]);
  return { model: ClipTextModel.fromWeights(cfg, weights, device, dtype), source: resolve(dir), logitScale: scalars.get(LOGIT_SCALE) ?? null };
}

export interface LoadedClip {
  vision: LoadedModel;
  text: ClipTextModel;
  /** logit_scale: log of the inverse temperature (HF initialises it to log(1/0.07) = 2.6592). */
  logitScale: number;
}

/** Loads both towers and logit_scale of an HF CLIPModel checkpoint directory, reading its files once. */
export function loadClip(dir: string, device: Device, dtype: DType = 'f32'): LoadedClip {
  if (!isModelDir(dir)) throw new Error(`Model directory not found: ${dir}`);
  const visionCfg = readModelConfig(dir);
  const textCfg = readTextModelConfig(dir);
  const visionShapes = expectedShapes(visionCfg);
  const textShapes = expectedTextShapes(textCfg);
  const { weights, scalars } = readCheckpointTensors(dir, new Map([...visionShapes, ...textShapes]), device, dtype, [LOGIT_SCALE]);
  const logitScale = scalars.get(LOGIT_SCALE);
  const pick = (shapes: Map<string, number[]>): Map<string, Tensor> => new Map([...shapes.keys()].map((name) => [name, weights.get(name)!]));
  if (logitScale === null || logitScale === undefined) {
    for (const t of weights.values()) t.dispose();
    throw new Error(`${dir}: checkpoint does not match its config.json (1 problem):\n  - missing tensor ${LOGIT_SCALE} (expected [])`);
  }
  const text = ClipTextModel.fromWeights(textCfg, pick(textShapes), device, dtype);
  const pre = join(dir, 'preprocessor_config.json');
  const vision = { model: ClipVisionModel.fromWeights(visionCfg, pick(visionShapes), device, dtype), source: resolve(dir), preprocessor: existsSync(pre) ? readJson(pre) : null };
  return { vision, text, logitScale };
}

/** The model's preprocessing (preprocessor_config.json, or CLIP's defaults); an error naming the file when a value is refused or its crop does not fit the model. */
export function modelPreprocessing(loaded: LoadedModel): PreprocessConfig {
  const { pre, problem } = checkedPreprocessing(loaded.preprocessor, loaded.model.cfg.imageSize, loaded.source);
  if (problem) throw new Error(`${problem}.`);
  return pre;
}

/** The same for `--model spec` without loading its weights, with the crop problem returned rather than thrown (for --validate). */
export function preprocessingOf(spec: string): { pre: PreprocessConfig; problem: string | null } {
  const file = join(spec, 'preprocessor_config.json');
  return checkedPreprocessing(isModelDir(spec) && existsSync(file) ? readJson(file) : null, visionConfigOf(spec).imageSize, spec);
}

/** The vision config of `--model spec` (a directory's config.json, or a preset's) without loading weights. */
export function visionConfigOf(spec: string): ClipVisionConfig {
  return isModelDir(spec) ? readModelConfig(spec) : presetConfig(spec);
}

/** Throws (naming the file and the field) when preprocessor_config.json has a value genalign refuses. */
function checkedPreprocessing(json: unknown, imageSize: number, source: string): { pre: PreprocessConfig; problem: string | null } {
  const file = join(source, 'preprocessor_config.json');
  const pre = parsePreprocessorConfig(json, imageSize, file);
  return { pre, problem: cropProblem(pre, imageSize, file) };
}

function presetConfig(spec: string): ClipVisionConfig {
  const cfg = Object.hasOwn(NAMED_CONFIGS, spec) ? NAMED_CONFIGS[spec] : undefined;
  if (!cfg) throw new Error(`--model ${spec}: not a directory and not a preset (presets: ${Object.keys(NAMED_CONFIGS).join(', ')})`);
  return cfg;
}

/** `--model` accepts a directory or a preset name (tiny, vit-b-32, vit-b-16, vit-l-14; random weights). */
export function loadModel(spec: string, device: Device, seed = 0, dtype: DType = 'f32'): LoadedModel {
  if (isModelDir(spec)) return loadClipVision(spec, device, dtype);
  return { model: ClipVisionModel.random(presetConfig(spec), seed, device, dtype), source: spec, preprocessor: null };
}

/**
 * The text tower for `--model`: a directory's (CLIPModel or CLIPTextModelWithProjection), or a
 * preset's (NAMED_TEXT_CONFIGS, random weights from seed + TEXT_SEED_OFFSET, so that the two
 * towers of a preset do not start from one random stream).
 */
export function loadTextModel(spec: string, device: Device, seed = 0, dtype: DType = 'f32', tokenizerIds?: TokenizerIds): LoadedTextModel {
  if (isModelDir(spec)) return loadClipText(spec, device, dtype);
  presetConfig(spec);
  // A preset has no tokenizer of its own: it takes the special-token ids of the one it is used
  // with, or HF pooling (at the first eos_token_id) would look for an id that never occurs.
  const cfg = tokenizerIds ? { ...NAMED_TEXT_CONFIGS[spec], bosTokenId: tokenizerIds.bosId, eosTokenId: tokenizerIds.eosId, padTokenId: tokenizerIds.padId } : NAMED_TEXT_CONFIGS[spec];
  return { model: ClipTextModel.random(cfg, seed + TEXT_SEED_OFFSET, device, dtype), source: spec, logitScale: null };
}

/** The special-token ids of a tokenizer (src/io/tokenizer.ts ClipTokenizer has them). */
export interface TokenizerIds {
  bosId: number;
  eosId: number;
  padId: number;
}

/** Added to a preset's seed for its text tower's random weights. */
export const TEXT_SEED_OFFSET = 0x7e57;
