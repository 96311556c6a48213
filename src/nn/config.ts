// CLIP vision configuration: HF CLIPVisionConfig fields, defaults and named presets.
//
// HF omits config.json fields that equal their defaults, so every missing field takes the
// CLIPVisionConfig default below (hidden 768, intermediate 3072, 12 layers, 12 heads,
// image 224, patch 32, quick_gelu, eps 1e-5; projection_dim 512 from CLIPConfig).

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

export function validateConfig(cfg: ClipVisionConfig, source: string): void {
  const problems: string[] = [];
  if (cfg.hiddenSize % cfg.numAttentionHeads !== 0) problems.push(`hidden_size ${cfg.hiddenSize} is not divisible by num_attention_heads ${cfg.numAttentionHeads}`);
  if (cfg.imageSize % cfg.patchSize !== 0) problems.push(`image_size ${cfg.imageSize} is not divisible by patch_size ${cfg.patchSize}`);
  if (cfg.numChannels !== 3) problems.push(`num_channels ${cfg.numChannels} is not supported (RGB only)`);
  for (const k of ['hiddenSize', 'intermediateSize', 'numHiddenLayers', 'numAttentionHeads', 'imageSize', 'patchSize', 'projectionDim'] as const) {
    if (!Number.isInteger(cfg[k])) problems.push(`${k} must be an integer, got ${cfg[k]}`);
  }
  if (problems.length) throw new Error(`${source}: invalid CLIP vision config:\n  - ${problems.join('\n  - ')}`);
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
