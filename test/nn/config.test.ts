// CLIP vision configs against Hugging Face's own values, written out here in HF's snake_case:
// the defaults of transformers' CLIPVisionConfig / CLIPConfig, and the vision configs of the
// openai/clip-vit-* checkpoints the presets stand for.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseHfConfig, NAMED_CONFIGS, type ClipVisionConfig } from '../../src/nn/config.ts';

/** transformers CLIPVisionConfig() defaults, plus CLIPConfig's projection_dim. */
const HF_VISION_DEFAULTS = {
  hidden_size: 768,
  intermediate_size: 3072,
  projection_dim: 512,
  num_hidden_layers: 12,
  num_attention_heads: 12,
  num_channels: 3,
  image_size: 224,
  patch_size: 32,
  hidden_act: 'quick_gelu',
  layer_norm_eps: 1e-5,
};

function snake(cfg: ClipVisionConfig): Record<string, number | string> {
  return {
    hidden_size: cfg.hiddenSize,
    intermediate_size: cfg.intermediateSize,
    projection_dim: cfg.projectionDim,
    num_hidden_layers: cfg.numHiddenLayers,
    num_attention_heads: cfg.numAttentionHeads,
    num_channels: cfg.numChannels,
    image_size: cfg.imageSize,
    patch_size: cfg.patchSize,
    hidden_act: cfg.hiddenAct,
    layer_norm_eps: cfg.layerNormEps,
  };
}

test('an empty config, a CLIPConfig with an empty vision_config, and a full HF config give HF\'s defaults, every field', () => {
  assert.equal(snake(parseHfConfig({}, 'a')), HF_VISION_DEFAULTS);
  assert.equal(snake(parseHfConfig({ vision_config: {} }, 'b')), HF_VISION_DEFAULTS);
  const { projection_dim, ...vision } = HF_VISION_DEFAULTS;
  assert.equal(snake(parseHfConfig({ projection_dim, vision_config: vision }, 'c')), HF_VISION_DEFAULTS);
});

test('presets are the vision configs of the OpenAI checkpoints', () => {
  assert.equal(snake(NAMED_CONFIGS['vit-b-32']), HF_VISION_DEFAULTS); // openai/clip-vit-base-patch32
  assert.equal(snake(NAMED_CONFIGS['vit-b-16']), { ...HF_VISION_DEFAULTS, patch_size: 16 }); // openai/clip-vit-base-patch16
  assert.equal(snake(NAMED_CONFIGS['vit-l-14']), {
    ...HF_VISION_DEFAULTS, // openai/clip-vit-large-patch14
    hidden_size: 1024,
    intermediate_size: 4096,
    projection_dim: 768,
    num_hidden_layers: 24,
    num_attention_heads: 16,
    patch_size: 14,
  });
});

test.run();
