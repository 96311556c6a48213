// The op layer: every differentiable op genalign has. One file per op family; each file holds
// the forward dispatch and the backward, and runs kernels/<same name>.wgsl.
export { add, sub, mul, biasAdd, axpyNoGrad } from './elementwise.ts';
export { affine, scale, neg } from './scale.ts';
export { sum, mean, sumToShape } from './reduce.ts';
export { reshape } from './reshape.ts';
export { permute, transpose } from './permute.ts';
export { concat, slice } from './concat.ts';
export { gatherRows } from './gather.ts';
export { patchify } from './patchify.ts';
export { attention, type AttentionOptions } from './attention.ts';
export { l2Normalize } from './l2normalize.ts';
export { crossEntropy } from './cross_entropy.ts';
export { infoNceGenToReal, type InfoNceOptions, type InfoNceResult } from './infonce.ts';
export { adamwUpdate, gradNormFromPartials, gradSumSquaresPartials, type AdamWStepScalars, type AdamWBuffers, type FlatRange } from './adamw.ts';
export { softmax } from './softmax.ts';
export { gelu, quickGelu, erf } from './activation.ts';
export { layerNorm } from './layernorm.ts';
export { matmul, linear, type MatmulOptions, type Activation } from './matmul.ts';
export { toF16, toF32 } from './cast.ts';
export { loraLinear } from './lora.ts';
