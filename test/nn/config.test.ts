// CLIP vision configs against Hugging Face's own values, written out here in HF's snake_case:
// the defaults of transformers' CLIPVisionConfig / CLIPConfig, and the vision configs of the
// openai/clip-vit-* checkpoints the presets stand for.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseHfConfig, parameterCount, NAMED_CONFIGS, CONFIG_LIMITS, MAX_PATCHES, type ClipVisionConfig } from '../../src/nn/config.ts';
import { expectedShapes } from '../../src/nn/vit.ts';

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

/** The error parseHfConfig throws for `json`, read from 'model/config.json'. */
function configError(json: unknown): string {
  try {
    parseHfConfig(json, 'model/config.json');
  } catch (e) {
    return (e as Error).message;
  }
  assert.unreachable(`accepted ${JSON.stringify(json)}`);
  return '';
}

test('absurd sizes fail at once, naming the file, the field and the limit, in a short message', () => {
  for (const layers of [1e8, 100_000, 257]) {
    const t0 = Date.now();
    const m = configError({ vision_config: { num_hidden_layers: layers } });
    assert.ok(Date.now() - t0 < 100, `checked before anything is built (${Date.now() - t0} ms)`);
    assert.ok(m.startsWith('model/config.json: invalid CLIP vision config:'), m);
    assert.match(m, `num_hidden_layers ${layers} is above genalign's limit of 256`);
    assert.ok(m.length < 400, `a short message (${m.length} chars)`);
  }
  // Each bounded field, one above its limit.
  for (const [key, limit] of Object.entries(CONFIG_LIMITS)) {
    assert.match(configError({ [key]: limit + 1 }), `${key} ${limit + 1} is above genalign's limit of ${limit}`);
  }
  assert.match(configError({ hidden_size: 1e300 }), /hidden_size 1e\+300 is above genalign's limit of 16384/);
  assert.match(configError({ num_hidden_layers: 2.5 }), /num_hidden_layers must be a positive integer, got 2\.5/);
});

test('relations between fields and the totals: heads divide hidden, patch within image, patches and parameters bounded', () => {
  assert.match(configError({ hidden_size: 768, num_attention_heads: 7 }), /hidden_size 768 is not divisible by num_attention_heads 7/);
  assert.match(configError({ image_size: 224, patch_size: 448 }), /patch_size 448 is larger than image_size 224/);
  assert.match(configError({ image_size: 224, patch_size: 30 }), /image_size 224 is not divisible by patch_size 30/);
  assert.match(configError({ image_size: 8192, patch_size: 8 }), `gives 1048576 patches per image, above genalign's limit of ${MAX_PATCHES}`);
  // Every field within its own bound, but together 8.2e11 parameters.
  const huge = { hidden_size: 16384, intermediate_size: 65536, num_hidden_layers: 256, num_attention_heads: 128 };
  assert.match(configError(huge), /these sizes give 8\.2\de\+11 parameters, above genalign's limit of 2e\+10/);
  assert.match(configError({ layer_norm_eps: 5 }), /layer_norm_eps 5 must be between 0 and 1/);
});

test('real CLIP vision configs are within the bounds; parameterCount counts what expectedShapes lists', () => {
  // OpenAI ViT-L/14 at 336 px, and OpenCLIP ViT-bigG/14.
  parseHfConfig({ vision_config: { hidden_size: 1024, intermediate_size: 4096, num_hidden_layers: 24, num_attention_heads: 16, image_size: 336, patch_size: 14 }, projection_dim: 768 }, 'l14-336');
  const bigG = parseHfConfig({ vision_config: { hidden_size: 1664, intermediate_size: 8192, num_hidden_layers: 48, num_attention_heads: 16, image_size: 224, patch_size: 14, hidden_act: 'gelu' }, projection_dim: 1280 }, 'bigG');
  for (const cfg of [...Object.values(NAMED_CONFIGS), bigG]) {
    let n = 0;
    for (const shape of expectedShapes(cfg).values()) n += shape.reduce((a, b) => a * b, 1);
    assert.is(parameterCount(cfg), n);
  }
  assert.ok(parameterCount(bigG) < 2e9);
});

test.run();
