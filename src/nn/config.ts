// CLIP vision configuration: HF CLIPVisionConfig fields, defaults and named presets.
//
// HF omits config.json fields that equal their defaults, so every missing field takes the
// CLIPVisionConfig default below (hidden 768, intermediate 3072, 12 layers, 12 heads,
// image 224, patch 32, quick_gelu, eps 1e-5; projection_dim 512 from CLIPConfig).

import { listWithRest, LIST_LIMIT } from '../gpu/problem-list.ts';

export type HiddenAct = 'quick_gelu' | 'gelu';

export interface ClipVisionConfig {
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  imageSize: number;
  patchSize: number;
  numChannels: number;
  hiddenAct: HiddenAct;
  layerNormEps: number;
  projectionDim: number;
}

export const HF_DEFAULTS: ClipVisionConfig = {
  hiddenSize: 768,
  intermediateSize: 3072,
  numHiddenLayers: 12,
  numAttentionHeads: 12,
  imageSize: 224,
  patchSize: 32,
  numChannels: 3,
  hiddenAct: 'quick_gelu',
  layerNormEps: 1e-5,
  projectionDim: 512,
};

/** Named configs for tests and benchmarks (random init). HF hyperparameters of the OpenAI checkpoints. */
export const NAMED_CONFIGS: Record<string, ClipVisionConfig> = {
  // Sized for the software GPU: 17 tokens, width 64.
  tiny: { ...HF_DEFAULTS, hiddenSize: 64, intermediateSize: 128, numHiddenLayers: 2, numAttentionHeads: 4, imageSize: 32, patchSize: 8, projectionDim: 32 },
  'vit-b-32': { ...HF_DEFAULTS },
  'vit-b-16': { ...HF_DEFAULTS, patchSize: 16 },
  'vit-l-14': { ...HF_DEFAULTS, hiddenSize: 1024, intermediateSize: 4096, numHiddenLayers: 24, numAttentionHeads: 16, patchSize: 14, projectionDim: 768 },
};

const FIELD_MAP: Record<string, keyof ClipVisionConfig> = {
  hidden_size: 'hiddenSize',
  intermediate_size: 'intermediateSize',
  num_hidden_layers: 'numHiddenLayers',
  num_attention_heads: 'numAttentionHeads',
  image_size: 'imageSize',
  patch_size: 'patchSize',
  num_channels: 'numChannels',
  hidden_act: 'hiddenAct',
  layer_norm_eps: 'layerNormEps',
  projection_dim: 'projectionDim',
};

/**
 * Parses an HF config.json object: a CLIPConfig (with vision_config and projection_dim) or a
 * CLIPVisionConfig. `source` names the file in errors.
 */
export function parseHfConfig(json: unknown, source: string): ClipVisionConfig {
  if (!json || typeof json !== 'object') throw new Error(`${source}: config is not a JSON object`);
  const root = json as Record<string, unknown>;
  const vision = (root.vision_config && typeof root.vision_config === 'object' ? root.vision_config : root) as Record<string, unknown>;
  const cfg: ClipVisionConfig = { ...HF_DEFAULTS };
  const set = (key: string, value: unknown): void => {
    const field = FIELD_MAP[key];
    if (!field || value === undefined || value === null) return;
    if (field === 'hiddenAct') {
      if (value !== 'quick_gelu' && value !== 'gelu') throw new Error(`${source}: hidden_act '${String(value)}' is not supported (use quick_gelu or gelu)`);
      cfg.hiddenAct = value;
      return;
    }
    if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) throw new Error(`${source}: ${key} must be a positive number, got ${JSON.stringify(value)}`);
    (cfg as unknown as Record<string, number>)[field] = value;
  };
  for (const [k, v] of Object.entries(vision)) set(k, v);
  // projection_dim lives on CLIPConfig (root) for full checkpoints; a vision-only config may carry it too.
  if (root !== vision && root.projection_dim !== undefined) set('projection_dim', root.projection_dim);
  validateConfig(cfg, source);
  return cfg;
}

/**
 * Upper bounds on the config.json fields, far above every published CLIP vision tower (the
 * largest OpenCLIP one, ViT-bigG/14: 48 layers, hidden 1664, intermediate 8192, 16 heads; the
 * OpenAI ViT-L/14 at 336 px: 577 tokens). They stop a corrupt or hostile config.json before
 * genalign allocates anything for it: 1e8 layers would otherwise build a list of 1.6e9 tensor
 * names before the first weight is read.
 */
export const CONFIG_LIMITS = {
  num_hidden_layers: 256,
  hidden_size: 16_384,
  intermediate_size: 65_536,
  num_attention_heads: 1024,
  image_size: 8192,
  patch_size: 8192,
  projection_dim: 16_384,
} as const;

/** At most 16384 patches per image (128 × 128; ViT-L/14 at 336 px has 576). */
export const MAX_PATCHES = 16_384;

/** At most 2e10 parameters (80 GB as f32; ViT-bigG/14's vision tower has under 2e9). */
export const MAX_PARAMETERS = 2e10;

const CONFIG_FIELDS: [keyof typeof CONFIG_LIMITS, keyof ClipVisionConfig][] = [
  ['num_hidden_layers', 'numHiddenLayers'],
  ['hidden_size', 'hiddenSize'],
  ['intermediate_size', 'intermediateSize'],
  ['num_attention_heads', 'numAttentionHeads'],
  ['image_size', 'imageSize'],
  ['patch_size', 'patchSize'],
  ['projection_dim', 'projectionDim'],
];

/** Parameters of the vision tower with projection (what expectedShapes in vit.ts lists). */
export function parameterCount(cfg: ClipVisionConfig): number {
  const D = cfg.hiddenSize;
  const I = cfg.intermediateSize;
  const embeddings = D + D * cfg.numChannels * cfg.patchSize ** 2 + numTokens(cfg) * D;
  const layer = 4 * (D * D + D) + 2 * I * D + I + D + 4 * D;
  return embeddings + 4 * D + cfg.numHiddenLayers * layer + cfg.projectionDim * D;
}

/**
 * Checks a config before anything is built from it: integer sizes, each field within
 * CONFIG_LIMITS, then the relations between fields (heads divide hidden, patches tile the
 * image) and the totals (patches, parameters). `source` names the file in the error.
 */
export function validateConfig(cfg: ClipVisionConfig, source: string): void {
  const problems: string[] = [];
  for (const [key, field] of CONFIG_FIELDS) {
    const v = cfg[field] as number;
    if (!Number.isInteger(v) || v < 1) problems.push(`${key} must be a positive integer, got ${v}`);
    else if (v > CONFIG_LIMITS[key]) problems.push(`${key} ${v} is above genalign's limit of ${CONFIG_LIMITS[key]} (far above any CLIP model; the file is likely corrupt)`);
  }
  if (cfg.numChannels !== 3) problems.push(`num_channels ${cfg.numChannels} is not supported (RGB only)`);
  if (!(cfg.layerNormEps > 0 && cfg.layerNormEps < 1)) problems.push(`layer_norm_eps ${cfg.layerNormEps} must be between 0 and 1 (CLIP uses 1e-5)`);
  if (problems.length === 0) {
    if (cfg.hiddenSize % cfg.numAttentionHeads !== 0) problems.push(`hidden_size ${cfg.hiddenSize} is not divisible by num_attention_heads ${cfg.numAttentionHeads}`);
    if (cfg.patchSize > cfg.imageSize) problems.push(`patch_size ${cfg.patchSize} is larger than image_size ${cfg.imageSize}`);
    else if (cfg.imageSize % cfg.patchSize !== 0) problems.push(`image_size ${cfg.imageSize} is not divisible by patch_size ${cfg.patchSize}`);
  }
  if (problems.length === 0) {
    const patches = numPatches(cfg);
    if (patches > MAX_PATCHES) problems.push(`image_size ${cfg.imageSize} / patch_size ${cfg.patchSize} gives ${patches} patches per image, above genalign's limit of ${MAX_PATCHES}`);
    const params = parameterCount(cfg);
    if (params > MAX_PARAMETERS) problems.push(`these sizes give ${params.toExponential(2)} parameters, above genalign's limit of ${MAX_PARAMETERS.toExponential(0)}`);
  }
  if (problems.length) throw new Error(`${source}: invalid CLIP vision config:\n  ${listWithRest(problems, LIST_LIMIT, '- ')}\nFix these fields in ${source} (see CONFIG_LIMITS in src/nn/config.ts for the bounds).`);
}

export function numPatches(cfg: ClipVisionConfig): number {
  return (cfg.imageSize / cfg.patchSize) ** 2;
}

export function numTokens(cfg: ClipVisionConfig): number {
  return numPatches(cfg) + 1;
}

/** Multiply-adds ×2 of one forward pass per image (matmuls + attention); used for GFLOP/s. */
export function forwardFlopsPerImage(cfg: ClipVisionConfig): number {
  const D = cfg.hiddenSize;
  const I = cfg.intermediateSize;
  const N = numTokens(cfg);
  const patchK = 3 * cfg.patchSize * cfg.patchSize;
  const patch = 2 * numPatches(cfg) * patchK * D;
  const perLayer = 2 * N * D * (4 * D) + 2 * N * D * (2 * I) + 2 * 2 * N * N * D;
  return patch + cfg.numHiddenLayers * perLayer + 2 * D * cfg.projectionDim;
}

// ---------------------------------------------------------------------------------------------
// CLIP text configuration: HF CLIPTextConfig fields and defaults (transformers 5.x:
// vocab 49408, hidden 512, intermediate 2048, 12 layers, 8 heads, 77 positions, quick_gelu,
// eps 1e-5, pad 1, bos 49406, eos 49407; projection_dim 512, which a CLIPConfig sets on its
// root for the whole model).

export interface ClipTextConfig {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  maxPositionEmbeddings: number;
  hiddenAct: HiddenAct;
  layerNormEps: number;
  projectionDim: number;
  padTokenId: number;
  bosTokenId: number;
  /**
   * The end-of-text token, where the pooled output is taken: the first position holding it. The
   * value 2 is the legacy one of configs written before transformers PR #24773; with it HF
   * pools at the argmax of the ids instead (the end-of-text token has the highest id of CLIP's
   * vocabulary), and so does genalign.
   */
  eosTokenId: number;
}

export const HF_TEXT_DEFAULTS: ClipTextConfig = {
  vocabSize: 49408,
  hiddenSize: 512,
  intermediateSize: 2048,
  numHiddenLayers: 12,
  numAttentionHeads: 8,
  maxPositionEmbeddings: 77,
  hiddenAct: 'quick_gelu',
  layerNormEps: 1e-5,
  projectionDim: 512,
  padTokenId: 1,
  bosTokenId: 49406,
  eosTokenId: 49407,
};

/** The eos_token_id of configs written before transformers PR #24773 (pooling at the argmax of the ids). */
export const LEGACY_EOS_TOKEN_ID = 2;

/**
 * The text tower of each preset in NAMED_CONFIGS (same keys): the text configs of the OpenAI
 * checkpoints, and for `tiny` a tower of the vision tower's size (width 64, 2 layers), with
 * CLIP's vocabulary and context length so that real CLIP token ids fit it.
 */
export const NAMED_TEXT_CONFIGS: Record<string, ClipTextConfig> = {
  tiny: { ...HF_TEXT_DEFAULTS, hiddenSize: 64, intermediateSize: 128, numHiddenLayers: 2, numAttentionHeads: 4, projectionDim: 32 },
  'vit-b-32': { ...HF_TEXT_DEFAULTS },
  'vit-b-16': { ...HF_TEXT_DEFAULTS },
  'vit-l-14': { ...HF_TEXT_DEFAULTS, hiddenSize: 768, intermediateSize: 3072, numAttentionHeads: 12, projectionDim: 768 },
};

const TEXT_FIELD_MAP: Record<string, keyof ClipTextConfig> = {
  vocab_size: 'vocabSize',
  hidden_size: 'hiddenSize',
  intermediate_size: 'intermediateSize',
  num_hidden_layers: 'numHiddenLayers',
  num_attention_heads: 'numAttentionHeads',
  max_position_embeddings: 'maxPositionEmbeddings',
  hidden_act: 'hiddenAct',
  layer_norm_eps: 'layerNormEps',
  projection_dim: 'projectionDim',
  pad_token_id: 'padTokenId',
  bos_token_id: 'bosTokenId',
  eos_token_id: 'eosTokenId',
};

/** Whether an HF config.json object is a CLIPTextConfig on its own (a CLIPTextModel[WithProjection] checkpoint). */
export function isTextOnlyConfig(json: unknown): boolean {
  if (!json || typeof json !== 'object') return false;
  const root = json as Record<string, unknown>;
  return root.model_type === 'clip_text_model' || (root.text_config === undefined && root.vision_config === undefined && root.vocab_size !== undefined);
}

/**
 * Parses the text tower of an HF config.json object: a CLIPConfig (text_config, with
 * projection_dim on the root, as CLIPModel reads it) or a CLIPTextConfig (its own
 * projection_dim, as CLIPTextModelWithProjection reads it). Missing fields take HF's defaults.
 * `source` names the file in errors.
 */
export function parseHfTextConfig(json: unknown, source: string): ClipTextConfig {
  if (!json || typeof json !== 'object') throw new Error(`${source}: config is not a JSON object`);
  const root = json as Record<string, unknown>;
  let text: Record<string, unknown>;
  if (isTextOnlyConfig(root)) text = root;
  else if (root.text_config === undefined || root.text_config === null) {
    // CLIPConfig() without text_config builds the default text tower; a vision-only config has none.
    if (root.model_type === 'clip_vision_model' || root.vision_config === undefined) {
      throw new Error(`${source}: this is a CLIP vision config (no text_config); the checkpoint has no text tower`);
    }
    text = {};
  } else if (typeof root.text_config === 'object') text = root.text_config as Record<string, unknown>;
  else throw new Error(`${source}: text_config must be an object, got ${JSON.stringify(root.text_config)}`);
  const cfg: ClipTextConfig = { ...HF_TEXT_DEFAULTS };
  const set = (key: string, value: unknown): void => {
    const field = TEXT_FIELD_MAP[key];
    if (!field || value === undefined || value === null) return;
    if (field === 'hiddenAct') {
      if (value !== 'quick_gelu' && value !== 'gelu') throw new Error(`${source}: text hidden_act '${String(value)}' is not supported (use quick_gelu or gelu)`);
      cfg.hiddenAct = value;
      return;
    }
    if (field === 'padTokenId' || field === 'bosTokenId' || field === 'eosTokenId') {
      if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
        throw new Error(`${source}: text ${key} must be a non-negative integer token id, got ${JSON.stringify(value)}${Array.isArray(value) ? ' (a list of ids is not supported: CLIP pools at one end-of-text token)' : ''}`);
      }
      cfg[field] = value;
      return;
    }
    if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) throw new Error(`${source}: text ${key} must be a positive number, got ${JSON.stringify(value)}`);
    (cfg as unknown as Record<string, number>)[field] = value;
  };
  for (const [k, v] of Object.entries(text)) set(k, v);
  if (text !== root && root.projection_dim !== undefined) set('projection_dim', root.projection_dim);
  else if (text !== root) cfg.projectionDim = HF_TEXT_DEFAULTS.projectionDim; // CLIPModel reads the root's, default 512
  validateTextConfig(cfg, source);
  return cfg;
}

/** Bounds on the text config's fields (far above any published CLIP text tower: OpenCLIP bigG has width 1280, 32 layers, 20 heads; vocabularies ≤ 250k). */
export const TEXT_CONFIG_LIMITS = {
  vocab_size: 1_000_000,
  hidden_size: 16_384,
  intermediate_size: 65_536,
  num_hidden_layers: 256,
  num_attention_heads: 1024,
  max_position_embeddings: 4096,
  projection_dim: 16_384,
} as const;

const TEXT_CONFIG_FIELDS: [keyof typeof TEXT_CONFIG_LIMITS, keyof ClipTextConfig][] = [
  ['vocab_size', 'vocabSize'],
  ['hidden_size', 'hiddenSize'],
  ['intermediate_size', 'intermediateSize'],
  ['num_hidden_layers', 'numHiddenLayers'],
  ['num_attention_heads', 'numAttentionHeads'],
  ['max_position_embeddings', 'maxPositionEmbeddings'],
  ['projection_dim', 'projectionDim'],
];

/** Head dims above this do not fit the attention kernel (MAX_HEAD_DIM in src/ops/attention.ts). */
const TEXT_MAX_HEAD_DIM = 128;

/** Parameters of the text tower with projection (what expectedTextShapes in text.ts lists). */
export function textParameterCount(cfg: ClipTextConfig): number {
  const D = cfg.hiddenSize;
  const I = cfg.intermediateSize;
  const layer = 4 * (D * D + D) + 2 * I * D + I + D + 4 * D;
  return (cfg.vocabSize + cfg.maxPositionEmbeddings) * D + cfg.numHiddenLayers * layer + 2 * D + cfg.projectionDim * D;
}

/** Checks a text config as validateConfig checks a vision one; `source` names the file in the error. */
export function validateTextConfig(cfg: ClipTextConfig, source: string): void {
  const problems: string[] = [];
  for (const [key, field] of TEXT_CONFIG_FIELDS) {
    const v = cfg[field] as number;
    if (!Number.isInteger(v) || v < 1) problems.push(`${key} must be a positive integer, got ${v}`);
    else if (v > TEXT_CONFIG_LIMITS[key]) problems.push(`${key} ${v} is above genalign's limit of ${TEXT_CONFIG_LIMITS[key]} (far above any CLIP model; the file is likely corrupt)`);
  }
  if (!(cfg.layerNormEps > 0 && cfg.layerNormEps < 1)) problems.push(`layer_norm_eps ${cfg.layerNormEps} must be between 0 and 1 (CLIP uses 1e-5)`);
  if (problems.length === 0) {
    if (cfg.hiddenSize % cfg.numAttentionHeads !== 0) problems.push(`hidden_size ${cfg.hiddenSize} is not divisible by num_attention_heads ${cfg.numAttentionHeads}`);
    else if (cfg.hiddenSize / cfg.numAttentionHeads > TEXT_MAX_HEAD_DIM) problems.push(`head dim hidden_size / num_attention_heads = ${cfg.hiddenSize / cfg.numAttentionHeads} is above the attention kernel's ${TEXT_MAX_HEAD_DIM}`);
    const params = textParameterCount(cfg);
    if (params > MAX_PARAMETERS) problems.push(`these sizes give ${params.toExponential(2)} parameters, above genalign's limit of ${MAX_PARAMETERS.toExponential(0)}`);
  }
  if (problems.length) throw new Error(`${source}: invalid CLIP text config:\n  ${listWithRest(problems, LIST_LIMIT, '- ')}\nFix these fields in ${source} (see TEXT_CONFIG_LIMITS in src/nn/config.ts for the bounds).`);
}

/** CLIPConfig's logit_scale_init_value default (log(1/0.07) rounded, as HF writes it). */
export const HF_LOGIT_SCALE_INIT_VALUE = 2.6592;
