// DispatchProfiler: per-dispatch GPU timestamps summed by kernel family (the bench's breakdown
// of a training step). Profiling changes how passes are cut, never what the kernels compute.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { DispatchProfiler } from '../../src/gpu/profiler.ts';
import { add, gelu, matmul } from '../../src/ops/index.ts';
import { fromArray, scope, type Tensor } from '../../src/tensor/tensor.ts';
import { device, randn } from '../helpers/fixtures.ts';

const dev = await device();
const withTimestamps = dev.hasFeature('timestamp-query') ? test : test.skip;
if (!dev.hasFeature('timestamp-query')) console.log("  [profiler] the adapter has no 'timestamp-query': skipped");

function work(a: Tensor, b: Tensor): Tensor {
  return scope(() => gelu(add(matmul(a, b), a)).keep());
}

withTimestamps('each dispatch is timed and summed by kernel family; the results are the unprofiled ones', async () => {
  const a = fromArray(randn(64 * 64, 1), [64, 64]).keep();
  const b = fromArray(randn(64 * 64, 2), [64, 64]).keep();
  const profiler = new DispatchProfiler(dev, 4);
  try {
    const plain = await work(a, b).read();
    await dev.sync();
    const d0 = dev.batch.totalDispatches;
    dev.batch.profiler = profiler;
    const y = work(a, b);
    dev.batch.profiler = null;
    const n = dev.batch.totalDispatches - d0;
    const p = await profiler.collect();
    assert.equal(Array.from(await y.read()), Array.from(plain), 'profiling does not change the results');
    y.dispose();
    assert.is(p.dispatches, n, 'every dispatch of the run is timed');
    assert.is(p.untimed, 0);
    const families = p.byFamily.map(([f]) => f);
    assert.ok(families.some((f) => f.startsWith('matmul')), families.join(', '));
    for (const f of ['elementwise', 'activation']) assert.ok(families.includes(f), `${f} in ${families.join(', ')}`);
    assert.ok(p.byFamily.every(([, ms]) => ms >= 0) && p.totalMs > 0, JSON.stringify(p));
    for (let i = 1; i < p.byFamily.length; i++) assert.ok(p.byFamily[i - 1][1] >= p.byFamily[i][1], 'largest first');
    // Past its capacity a profiler counts the dispatches it could not time.
    const small = new DispatchProfiler(dev, 1);
    try {
      dev.batch.profiler = small;
      work(a, b).dispose();
      dev.batch.profiler = null;
      const q = await small.collect();
      assert.is(q.dispatches, 1);
      assert.is(q.untimed, n - 1);
    } finally {
      dev.batch.profiler = null;
      small.dispose();
    }
  } finally {
    dev.batch.profiler = null;
    profiler.dispose();
    a.dispose();
    b.dispose();
  }
});

test.run();
