// Saving a CLIP model (both towers and logit_scale) as a Hugging Face `CLIPModel` folder:
//   config.json               CLIPConfig: text_config, vision_config, projection_dim,
//                             logit_scale_init_value, architectures ["CLIPModel"]
//   model.safetensors         every tensor in f32 under its HF name, logit_scale included (shape [])
//   preprocessor_config.json  CLIPImageProcessor for the model's image size (CLIP's bicubic resize
//                             of the shortest edge, centre crop, CLIP mean/std)
//   tokenizer files           copied from the tokenizer folder the text tower was trained with
// It loads with loadClip (hf-checkpoint.ts) and with transformers' CLIPModel.from_pretrained.
// visionModelFiles encodes a vision tower alone as a `CLIPVisionModelWithProjection` folder
// (config.json, model.safetensors, preprocessor_config.json): the fully fine-tuned student of
// `train --rank 0`, which loads with loadModel and CLIPVisionModelWithProjection.from_pretrained.
//
// Crash safety, as a checkpoint is published (src/train/checkpoint.ts): the files are written into
// a temporary sibling folder `.<name>.tmp` (each file fsynced), which is renamed to `<name>` when
// complete. An existing `<name>` is first renamed aside (`.<name>.old`) and deleted after the new
// folder is in place. `<name>` is therefore never a half-written folder: it is the old one, the
// new one, or (after a crash between the two renames) absent with the old one in `.<name>.old`.
// A failed save (an exception) puts the old folder back and removes the temporary one.
import { existsSync, lstatSync, readFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { makeDirs, nodeFiles, removeTree, writableProblem, type FileOps } from '../platform/atomic-file.ts';
import { HF_LOGIT_SCALE_INIT_VALUE, type ClipVisionConfig, type ClipTextConfig } from '../nn/config.ts';
import { expectedShapes, type ClipVisionModel } from '../nn/vit.ts';
import type { ClipTextModel } from '../nn/text.ts';
import { encodeSafetensors, type TensorToWrite } from './safetensors.ts';
import { CLIP_MEAN, CLIP_STD } from './image.ts';


/** The tokenizer files a CLIP checkpoint folder carries (those present in the source are copied). */
export const TOKENIZER_FILES = ['tokenizer.json', 'vocab.json', 'merges.txt', 'tokenizer_config.json', 'special_tokens_map.json'] as const;

export interface SaveClipOptions {
  vision: ClipVisionModel;
  text: ClipTextModel;
  /** logit_scale: log of the inverse temperature. */
  logitScale: number;
  /** Folder holding the tokenizer the text tower was trained with (its files are copied). */
  tokenizerDir: string;
  /** More text files to write into the folder (name → content), such as a README.md model card. */
  extraFiles?: Record<string, string>;
  /** File operations (tests inject failures). */
  files?: FileOps;
}

function visionConfigJson(cfg: ClipVisionConfig): Record<string, unknown> {
  return {
    model_type: 'clip_vision_model',
    hidden_size: cfg.hiddenSize,
    intermediate_size: cfg.intermediateSize,
    num_hidden_layers: cfg.numHiddenLayers,
    num_attention_heads: cfg.numAttentionHeads,
    image_size: cfg.imageSize,
    patch_size: cfg.patchSize,
    num_channels: cfg.numChannels,
    hidden_act: cfg.hiddenAct,
    layer_norm_eps: cfg.layerNormEps,
    projection_dim: cfg.projectionDim,
  };
}

function textConfigJson(cfg: ClipTextConfig): Record<string, unknown> {
  return {
    model_type: 'clip_text_model',
    vocab_size: cfg.vocabSize,
    hidden_size: cfg.hiddenSize,
    intermediate_size: cfg.intermediateSize,
    num_hidden_layers: cfg.numHiddenLayers,
    num_attention_heads: cfg.numAttentionHeads,
    max_position_embeddings: cfg.maxPositionEmbeddings,
    hidden_act: cfg.hiddenAct,
    layer_norm_eps: cfg.layerNormEps,
    projection_dim: cfg.projectionDim,
    pad_token_id: cfg.padTokenId,
    bos_token_id: cfg.bosTokenId,
    eos_token_id: cfg.eosTokenId,
  };
}

/**
 * config.json of a CLIPModel with these towers. Fields HF types as floats are written only when
 * they cannot be integers (JSON has no 1.0, and transformers 5 refuses an int there), so
 * initializer_factor and attention_dropout keep HF's defaults (1.0, 0.0).
 */
export function clipConfigJson(vision: ClipVisionConfig, text: ClipTextConfig): Record<string, unknown> {
  if (vision.projectionDim !== text.projectionDim) throw new Error(`saveClipModel: the towers' projection_dim differ (vision ${vision.projectionDim}, text ${text.projectionDim}); a CLIPModel has one`);
  return {
    architectures: ['CLIPModel'],
    model_type: 'clip',
    projection_dim: vision.projectionDim,
    logit_scale_init_value: HF_LOGIT_SCALE_INIT_VALUE,
    dtype: 'float32',
    text_config: textConfigJson(text),
    vision_config: visionConfigJson(vision),
  };
}

/** preprocessor_config.json: HF's CLIPImageProcessor for `imageSize` (what defaultPreprocess in image.ts does). */
export function clipPreprocessorJson(imageSize: number): Record<string, unknown> {
  return {
    image_processor_type: 'CLIPImageProcessor',
    do_resize: true,
    size: { shortest_edge: imageSize },
    resample: 3,
    do_center_crop: true,
    crop_size: { height: imageSize, width: imageSize },
    do_rescale: true,
    rescale_factor: 1 / 255,
    do_normalize: true,
    image_mean: [...CLIP_MEAN],
    image_std: [...CLIP_STD],
    do_convert_rgb: true,
  };
}

/** Every tensor of a vision tower on the host under its HF name and shape (the patch embedding as [D, C, P, P]). */
async function visionTensors(vision: ClipVisionModel): Promise<Record<string, TensorToWrite>> {
  const out: Record<string, TensorToWrite> = {};
  const shapes = expectedShapes(vision.cfg);
  for (const [name, t] of vision.weights) out[name] = { shape: shapes.get(name) ?? [...t.shape], data: await t.read() };
  return out;
}

/**
 * The files of an HF `CLIPVisionModelWithProjection` folder holding `vision` (f32):
 * config.json, model.safetensors and preprocessor_config.json (`preprocessor`, the base model's
 * parsed preprocessor_config.json, or CLIPImageProcessor's defaults for the image size when null).
 */
export async function visionModelFiles(vision: ClipVisionModel, preprocessor: unknown): Promise<Record<string, readonly (Uint8Array | string)[]>> {
  if (vision.dtype !== 'f32') throw new Error(`visionModelFiles: the model must be f32 (got ${vision.dtype})`);
  const config = { architectures: ['CLIPVisionModelWithProjection'], ...visionConfigJson(vision.cfg), dtype: 'float32' };
  return {
    'config.json': [JSON.stringify(config, null, 2) + '\n'],
    'model.safetensors': encodeSafetensors(await visionTensors(vision), { format: 'pt' }),
    'preprocessor_config.json': [JSON.stringify(preprocessor ?? clipPreprocessorJson(vision.cfg.imageSize), null, 2) + '\n'],
  };
}

/** Every tensor of both towers on the host under its HF name and shape, plus logit_scale. */
async function hostTensors(o: SaveClipOptions): Promise<Record<string, TensorToWrite>> {
  const out = await visionTensors(o.vision);
  for (const [name, t] of o.text.weights) out[name] = { shape: [...t.shape], data: await t.read() };
  out.logit_scale = { shape: [], data: new Float32Array([o.logitScale]) };
  return out;
}

/**
 * Writes the model as an HF CLIPModel folder at `dir` (see the file header), replacing what is
 * there. On any failure nothing is left half-written: `dir` keeps its previous contents (or stays
 * absent) and the temporary folder is removed.
 */
export async function saveClipModel(dir: string, o: SaveClipOptions): Promise<string> {
  const files = o.files ?? nodeFiles;
  const final = resolve(dir);
  if (o.vision.dtype !== 'f32' || o.text.dtype !== 'f32') throw new Error(`saveClipModel: the towers must be f32 (got vision ${o.vision.dtype}, text ${o.text.dtype})`);
  if (!Number.isFinite(o.logitScale)) throw new Error(`saveClipModel: logit_scale must be a finite number, got ${o.logitScale}`);
  const tokenizerFiles = TOKENIZER_FILES.filter((f) => existsSync(join(o.tokenizerDir, f)));
  if (!tokenizerFiles.includes('tokenizer.json') && !(tokenizerFiles.includes('vocab.json') && tokenizerFiles.includes('merges.txt'))) {
    throw new Error(`saveClipModel: ${o.tokenizerDir} has no tokenizer files (tokenizer.json, or vocab.json with merges.txt); pass the folder of the tokenizer the text tower was trained with`);
  }
  if (existsSync(final) && !lstatSync(final).isDirectory()) throw new Error(`Cannot save the CLIP model to ${final}: it is a file, not a folder. Choose another output path or move the file away.`);
  const problem = writableProblem(dirname(final));
  if (problem) throw new Error(`Cannot save the CLIP model to ${final}: ${problem}. Choose a writable output folder.`);

  const config = JSON.stringify(clipConfigJson(o.vision.cfg, o.text.cfg), null, 2) + '\n';
  const preprocessor = JSON.stringify(clipPreprocessorJson(o.vision.cfg.imageSize), null, 2) + '\n';
  const weights = encodeSafetensors(await hostTensors(o), { format: 'pt' });

  const name = basename(final);
  const tmp = join(dirname(final), `.${name}.tmp`);
  const old = join(dirname(final), `.${name}.old`);
  try {
    makeDirs(dirname(final), files);
    removeTree(tmp, files);
    files.mkdir(tmp);
    files.write(join(tmp, 'config.json'), [config]);
    files.write(join(tmp, 'model.safetensors'), weights);
    files.write(join(tmp, 'preprocessor_config.json'), [preprocessor]);
    for (const f of tokenizerFiles) files.write(join(tmp, f), [readFileSync(join(o.tokenizerDir, f))]);
    for (const [f, content] of Object.entries(o.extraFiles ?? {})) files.write(join(tmp, f), [content]);
    removeTree(old, files);
    if (existsSync(final)) files.rename(final, old);
    try {
      files.rename(tmp, final);
    } catch (e) {
      if (existsSync(old) && !existsSync(final)) files.rename(old, final);
      throw e;
    }
  } catch (e) {
    try {
      removeTree(tmp, files);
    } catch {
      // The error that stopped the save is the one to report; a leftover .tmp is replaced next time.
    }
    throw new Error(`Could not save the CLIP model to ${final}: ${(e as Error).message}`);
  }
  try {
    removeTree(old, files);
  } catch {
    // The new model is in place; the next save removes what is left of the old one.
  }
  return final;
}
