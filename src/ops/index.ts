// The op layer: every differentiable op genalign has. One file per op family; each file holds
// the forward dispatch and the backward, and runs kernels/<same name>.wgsl.
export { add, sub, mul, biasAdd, axpyNoGrad } from './elementwise.ts';
export { affine, scale, neg } from './scale.ts';
export { sum, mean, sumToShape } from './reduce.ts';
export { reshape } from './reshape.ts';
