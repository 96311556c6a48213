// train --devices 2 (two Dawn devices sharing lavapipe) against one device at the same effective
// batch: the same losses and the same adapter within 1e-5, the teacher rows of the whole step
// gathered to both devices; an --accum that does not split evenly is refused before any work.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { getDevice } from '../../src/gpu/device.ts';
import { train, type TrainOptions } from '../../src/train/trainer.ts';
import { disposeStudent } from '../../src/train/student.ts';
import { tmp, tinyDataset } from '../cli/helpers.ts';
import { trainOptions } from '../helpers/train-options.ts';

const root = tmp('data-parallel');
test.after(() => rmSync(root, { recursive: true, force: true }));

async function run(o: TrainOptions): Promise<{ losses: number[]; norms: number[]; weights: Float32Array[]; logs: string[] }> {
  const device = await getDevice();
  const logs: string[] = [];
  const live = device.pool.stats().liveBytes;
  const r = await train(device, o, { log: (l) => logs.push(l) });
  const weights = await Promise.all(r.student.params.map((p) => p.read()));
  disposeStudent(r.student);
  r.model.model.dispose();
  // (A process's first run keeps a few cached constants alive; the 2-device run comes second.)
  if (o.devices !== '1') assert.is(device.pool.stats().liveBytes, live, 'the run frees what it allocated on the run\'s device');
  const lines = readFileSync(join(r.runDir, 'metrics.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { loss: number; grad_norm: number });
  return { losses: lines.map((l) => l.loss), norms: lines.map((l) => l.grad_norm), weights, logs };
}

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};

test('--devices 2 equals one device at the same effective batch (losses, gradient norms, final adapter within 1e-5)', async () => {
  const data = await tinyDataset(join(root, 'data'), 24);
  const base = { data, cacheDir: join(root, 'cache'), batch: 4, accum: 2, steps: 4, lr: 1e-2, cosineWeight: 0.5 };
  const one = await run(trainOptions({ ...base, out: join(root, 'one') }));
  const two = await run(trainOptions({ ...base, out: join(root, 'two'), devices: '2' }));
  assert.ok(two.logs.some((l) => l.startsWith('device 1: ')), two.logs.join('\n'));
  assert.is(two.losses.length, 4);
  assert.ok(maxDiff(one.losses, two.losses) <= 1e-5, `losses ${one.losses} vs ${two.losses}`);
  assert.ok(maxDiff(one.norms, two.norms) <= 1e-5, `grad norms ${one.norms} vs ${two.norms}`);
  assert.ok(one.losses[3] < one.losses[0], 'it trains');
  one.weights.forEach((w, i) => assert.ok(maxDiff(w, two.weights[i]) <= 1e-5, `weight tensor ${i}: ${maxDiff(w, two.weights[i])}`));
});

test('--devices 2 with an --accum that is not a multiple of 2 is refused before the run directory is made', async () => {
  const data = await tinyDataset(join(root, 'data'), 24);
  const device = await getDevice();
  try {
    await train(device, trainOptions({ data, cacheDir: join(root, 'cache'), out: join(root, 'never'), batch: 4, accum: 3, devices: '2' }), { log: () => undefined });
    assert.unreachable('should fail');
  } catch (e) {
    assert.match((e as Error).message, '--accum must be a multiple of 2: use --accum 4');
  }
});

test.run();
