// Loading Hugging Face CLIP checkpoints: a directory with config.json and model.safetensors, or
// a sharded model.safetensors.index.json. F32 / F16 / BF16 tensors become f32 on the GPU, or f16 for
// mixed precision (loadClipVision's dtype).
// text_model.*, text_projection.*, logit_scale and position_ids are ignored.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { readRegularTextFile } from '../gpu/regular-file.ts';
import type { Device } from '../gpu/device.ts';
import { fromArray, fromF16Bits, shapeStr, type DType, type Tensor } from '../tensor/tensor.ts';
import { parseHfConfig, NAMED_CONFIGS, type ClipVisionConfig } from '../nn/config.ts';
import { ClipVisionModel, expectedShapes } from '../nn/vit.ts';
import { SafetensorsFile } from './safetensors.ts';
import { inlineListWithRest, listWithRest, LIST_LIMIT } from '../gpu/problem-list.ts';
import { cropProblem, parsePreprocessorConfig, type PreprocessConfig } from './image.ts';

export interface LoadedModel {
  model: ClipVisionModel;
  /** Directory or preset name, as written into adapter_config.json's base_model_name_or_path. */
  source: string;
  /** Parsed preprocessor_config.json when present. */
  preprocessor: unknown;
}

function ignored(name: string): boolean {
  return name.startsWith('text_model.') || name.startsWith('text_projection') || name === 'logit_scale' || name.endsWith('position_ids');
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

/** Reads config.json of an HF CLIP (or CLIP vision) model directory. */
export function readModelConfig(dir: string): ClipVisionConfig {
  const path = join(dir, 'config.json');
  if (!existsSync(path)) throw new Error(`${dir}: no config.json (expected an HF CLIP model directory)`);
  return parseHfConfig(readJson(path), path);
}

/** Loads the vision tower of an HF CLIP checkpoint directory onto the GPU. */
export function loadClipVision(dir: string, device: Device, dtype: DType = 'f32'): LoadedModel {
  if (!isModelDir(dir)) throw new Error(`Model directory not found: ${dir}`);
  const cfg = readModelConfig(dir);
  const expected = expectedShapes(cfg);
  const files = checkpointFiles(dir);
  const index = join(dir, 'model.safetensors.index.json');
  const found = new Map<string, { file: SafetensorsFile; shape: number[] }>();
  const opened: SafetensorsFile[] = [];
  const weights = new Map<string, Tensor>();
  try {
    for (const f of files) {
      if (!existsSync(f)) throw new Error(`${f}: listed in the index but missing`);
      const st = SafetensorsFile.open(f, existsSync(index) ? `a checkpoint shard named in ${index} (a safetensors file)` : "the model's weights (a safetensors file)");
      opened.push(st);
      for (const [name, info] of st.tensors) if (!ignored(name)) found.set(name, { file: st, shape: info.shape });
    }
    const problems: string[] = [];
    for (const [name, shape] of expected) {
      const f = found.get(name);
      if (!f) problems.push(`missing tensor ${name} (expected ${shapeStr(shape)})`);
      else if (shapeStr(f.shape) !== shapeStr(shape)) problems.push(`${name}: expected ${shapeStr(shape)}, found ${shapeStr(f.shape)}`);
    }
    if (problems.length) throw new Error(`${dir}: checkpoint does not match its config.json (${problems.length} problem${problems.length > 1 ? 's' : ''}):\n  ${listWithRest(problems, LIST_LIMIT, '- ')}`);
    for (const [name, shape] of expected) {
      const f = found.get(name)!;
      // f16: F16 tensors go to the GPU as stored; BF16/F32 are rounded to f16 bit patterns on
      // the host with integer arithmetic (no f32 copy of the checkpoint is ever made).
      const t = dtype === 'f16' ? fromF16Bits(f.file.float16Bits(name), shape, device) : fromArray(f.file.float32(name), shape, device);
      weights.set(name, t.keep());
    }
  } catch (e) {
    for (const t of weights.values()) t.dispose();
    throw e;
  } finally {
    for (const st of opened) st.close();
  }
  const pre = join(dir, 'preprocessor_config.json');
  return { model: ClipVisionModel.fromWeights(cfg, weights, device, dtype), source: resolve(dir), preprocessor: existsSync(pre) ? readJson(pre) : null };
}

/** The model's preprocessing (preprocessor_config.json, or CLIP's defaults); an error naming the file when a value is refused or its crop does not fit the model. */
export function modelPreprocessing(loaded: LoadedModel): PreprocessConfig {
  const { pre, problem } = checkedPreprocessing(loaded.preprocessor, loaded.model.cfg.imageSize, loaded.source);
  if (problem) throw new Error(`${problem}.`);
  return pre;
}

/** The same for `--model spec` without loading its weights, with the crop problem returned rather than thrown (for --validate). */
export function preprocessingOf(spec: string): { pre: PreprocessConfig; problem: string | null } {
  if (!isModelDir(spec)) return checkedPreprocessing(null, presetConfig(spec).imageSize, spec);
  const file = join(spec, 'preprocessor_config.json');
  return checkedPreprocessing(existsSync(file) ? readJson(file) : null, readModelConfig(spec).imageSize, spec);
}

/** Throws (naming the file and the field) when preprocessor_config.json has a value genalign refuses. */
function checkedPreprocessing(json: unknown, imageSize: number, source: string): { pre: PreprocessConfig; problem: string | null } {
  const file = join(source, 'preprocessor_config.json');
  const pre = parsePreprocessorConfig(json, imageSize, file);
  return { pre, problem: cropProblem(pre, imageSize, file) };
}

function presetConfig(spec: string): ClipVisionConfig {
  const cfg = NAMED_CONFIGS[spec];
  if (!cfg) throw new Error(`--model ${spec}: not a directory and not a preset (presets: ${Object.keys(NAMED_CONFIGS).join(', ')})`);
  return cfg;
}

/** `--model` accepts a directory or a preset name (tiny, vit-b-32, vit-b-16, vit-l-14; random weights). */
export function loadModel(spec: string, device: Device, seed = 0, dtype: DType = 'f32'): LoadedModel {
  if (isModelDir(spec)) return loadClipVision(spec, device, dtype);
  return { model: ClipVisionModel.random(presetConfig(spec), seed, device, dtype), source: spec, preprocessor: null };
}
