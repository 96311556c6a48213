// genalign public API.
export { getDevice, createDevice, currentDevice, Device, NO_ADAPTER_HELP } from './gpu/device.ts';
export { Tensor, Parameter, fromArray, zeros, full, parameter, scope, scopeAsync } from './tensor/tensor.ts';
export { backward, noGrad, isGradEnabled, zeroGrad } from './tensor/autograd.ts';
export * from './ops/index.ts';
