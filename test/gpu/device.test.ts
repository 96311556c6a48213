import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { NO_ADAPTER_HELP, adapterClassOf, createDevice, type Device } from '../../src/gpu/device.ts';
import { dawnOptionsFromEnv } from '../../src/platform/node.ts';
import { GpuError } from '../../src/gpu/encoder.ts';
import { registerKernelSources } from '../../src/gpu/kernels.ts';
import { Tensor, fromArray } from '../../src/tensor/tensor.ts';
import { add, scale } from '../../src/ops/index.ts';
import { params } from '../../src/ops/util.ts';
import { assertClose } from '../helpers/fixtures.ts';

const ENV_KEYS = ['GENALIGN_BACKEND', 'GENALIGN_ADAPTER', 'GENALIGN_DAWN_ENABLE', 'GENALIGN_DAWN_DISABLE', 'GENALIGN_UNSAFE_APIS'] as const;

function withEnv<T>(env: Partial<Record<(typeof ENV_KEYS)[number], string>>, fn: () => T): T {
  const saved = ENV_KEYS.map((k) => [k, process.env[k]] as const);
  for (const k of ENV_KEYS) delete process.env[k];
  Object.assign(process.env, env);
  try {
    return fn();
  } finally {
    for (const [k, v] of saved) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

test('NO_ADAPTER_HELP tells the user how to fix it', () => {
  assert.match(NO_ADAPTER_HELP, /No WebGPU adapter found/);
  assert.match(NO_ADAPTER_HELP, /bash scripts\/setup-software-gpu\.sh/);
  assert.match(NO_ADAPTER_HELP, /lavapipe >= 25/);
  assert.match(NO_ADAPTER_HELP, /GENALIGN_ADAPTER=/);
  assert.match(NO_ADAPTER_HELP, /GENALIGN_BACKEND=/);
});

test('adapterClassOf: software rasterizers are CPU adapters, the rest GPUs', () => {
  const of = (name: string, vendor = '', architecture = ''): string => adapterClassOf({ name, vendor, architecture });
  assert.is(of('llvmpipe (LLVM 15.0.6, 256 bits)', 'mesa'), 'cpu');
  assert.is(of('SwiftShader Device (Subzero)', 'google'), 'cpu');
  assert.is(of('Microsoft Basic Render Driver', 'microsoft', 'warp'), 'cpu');
  assert.is(of('NVIDIA H200', 'nvidia', 'hopper'), 'gpu');
  assert.is(of('Apple M2', 'apple', 'metal-3'), 'gpu');
});

test('dawnOptionsFromEnv: defaults', () => {
  withEnv({}, () => {
    assert.equal(dawnOptionsFromEnv(), ['enable-dawn-features=vulkan_enable_f16_on_nvidia', 'disable-dawn-features=timestamp_quantization']);
  });
});

test('dawnOptionsFromEnv: every GENALIGN_* variable is honoured', () => {
  withEnv(
    {
      GENALIGN_BACKEND: 'vulkan',
      GENALIGN_ADAPTER: 'llvmpipe',
      GENALIGN_DAWN_ENABLE: 'use_dxc, dump_shaders,',
      GENALIGN_DAWN_DISABLE: 'lazy_clear_resource_on_first_use',
      GENALIGN_UNSAFE_APIS: '1',
    },
    () => {
      assert.equal(dawnOptionsFromEnv(), [
        'backend=vulkan',
        'adapter=llvmpipe',
        'enable-dawn-features=use_dxc,dump_shaders,vulkan_enable_f16_on_nvidia,allow_unsafe_apis',
        'disable-dawn-features=timestamp_quantization,lazy_clear_resource_on_first_use',
      ]);
    },
  );
  // GENALIGN_UNSAFE_APIS must be exactly "1".
  withEnv({ GENALIGN_UNSAFE_APIS: 'yes' }, () => {
    assert.not.match(dawnOptionsFromEnv().join(' '), /allow_unsafe_apis/);
  });
});

test('dawnOptionsFromEnv: explicit options win over the environment; toggles are not duplicated', () => {
  withEnv({ GENALIGN_BACKEND: 'vulkan', GENALIGN_ADAPTER: 'llvmpipe', GENALIGN_DAWN_DISABLE: 'timestamp_quantization' }, () => {
    const o = dawnOptionsFromEnv({ backend: 'null', adapter: 'NVIDIA', enableToggles: ['vulkan_enable_f16_on_nvidia'], unsafeApis: true });
    assert.equal(o, [
      'backend=null',
      'adapter=NVIDIA',
      'enable-dawn-features=vulkan_enable_f16_on_nvidia,allow_unsafe_apis',
      'disable-dawn-features=timestamp_quantization',
    ]);
  });
});

test('an adapter filter that matches nothing gives the setup help and what Dawn found', async () => {
  try {
    const d = await createDevice({ adapter: 'genalign-no-such-adapter' });
    d.destroy();
  } catch (e) {
    const msg = (e as Error).message;
    assert.ok(msg.startsWith(NO_ADAPTER_HELP), msg);
    assert.match(msg, /adapter=genalign-no-such-adapter/);
    return;
  }
  assert.unreachable('createDevice found an adapter named genalign-no-such-adapter');
});

// GPU errors run on a device of their own so a failed batch cannot disturb other tests.
let dev: Device;

test('GPU errors: setup', async () => {
  dev = await createDevice();
  assert.ok(dev.adapter.name.length > 0);
});

test('GPU errors: a kernel file that does not exist is named in the error', () => {
  const out = Tensor.empty([4], dev);
  try {
    assert.throws(
      () => dev.batch.dispatch({ file: 'genalign_no_such_kernel', entry: 'main' }, params([4]), [], [out.buffer], [1]),
      /Kernel file not found: .*kernels\/genalign_no_such_kernel\.wgsl/,
    );
  } finally {
    out.dispose();
  }
});

test('GPU errors: a missing entry point surfaces at the next sync as a GpuError naming the kernel', async () => {
  const x = fromArray([1, 2, 3, 4], [4], dev);
  const out = Tensor.empty([4], dev);
  try {
    dev.batch.dispatch({ file: 'scale', entry: 'genalign_no_such_entry' }, params([4], [1, 0]), [x.buffer], [out.buffer], [1]);
    let caught: unknown = null;
    await dev.sync().catch((e: unknown) => (caught = e));
    assert.instance(caught, GpuError);
    assert.match((caught as Error).message, /^GPU error: /);
    assert.match((caught as Error).message, /pipeline scale:genalign_no_such_entry/);
  } finally {
    x.dispose();
    out.dispose();
  }
});

test('GPU errors: invalid WGSL is reported with its file name, and the device keeps working', async () => {
  registerKernelSources({ zz_device_broken: '@compute @workgroup_size(1) fn main() { let x: u32 = 1.5f; }' });
  const out = Tensor.empty([4], dev);
  dev.batch.dispatch({ file: 'zz_device_broken', entry: 'main' }, params([4]), [], [out.buffer], [1]);
  let caught: unknown = null;
  await out.read().catch((e: unknown) => (caught = e));
  out.dispose();
  assert.instance(caught, GpuError);
  assert.match((caught as Error).message, /WGSL compile error in kernels\/zz_device_broken\.wgsl/);
  // The failed batch is gone; the next one runs normally.
  const x = fromArray([1, 2, 3], [3], dev);
  const y = scale(x, 2);
  assertClose(await y.read(), [2, 4, 6], { rtol: 0, atol: 0 }, 'after error');
  x.dispose();
  y.dispose();
});

test('GPU errors: a destroyed device gives a clear error, and disposing its tensors is harmless', async () => {
  const x = fromArray([1, 2, 3], [3], dev);
  await dev.sync();
  dev.destroy();
  assert.ok(dev.lost);
  assert.throws(() => add(x, x), /GPU device lost \(destroyed: Device\.destroy\(\) was called\) while running add/);
  assert.throws(() => fromArray([1], [1], dev), /GPU device lost .*while running (upload|buffer copy)/);
  x.dispose();
  assert.ok(x.disposed);
});

test.run();
