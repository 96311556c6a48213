// Prints the WebGPU adapter Dawn finds (name, backend, features, key limits).
// Exit code 0 when an adapter exists, 1 otherwise. Used by setup-software-gpu.sh.
import { create, globals } from 'webgpu';

Object.assign(globalThis, globals);
const options = [];
if (process.env.GENALIGN_BACKEND) options.push(`backend=${process.env.GENALIGN_BACKEND}`);
if (process.env.GENALIGN_ADAPTER) options.push(`adapter=${process.env.GENALIGN_ADAPTER}`);
const gpu = create(options);
const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
if (!adapter) {
  console.error('no WebGPU adapter');
  process.exit(1);
}
const info = adapter.info;
console.log(JSON.stringify({
  vendor: info.vendor, architecture: info.architecture, device: info.device, description: info.description,
  features: [...adapter.features].sort(),
  maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
  maxBufferSize: adapter.limits.maxBufferSize,
  maxComputeWorkgroupStorageSize: adapter.limits.maxComputeWorkgroupStorageSize,
  maxComputeInvocationsPerWorkgroup: adapter.limits.maxComputeInvocationsPerWorkgroup,
  maxStorageBuffersPerShaderStage: adapter.limits.maxStorageBuffersPerShaderStage,
  subgroupMinSize: info.subgroupMinSize, subgroupMaxSize: info.subgroupMaxSize,
}, null, 1));
process.exit(0);
