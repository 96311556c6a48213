// Tensor lifetimes: scopes, disposal errors, cross-device errors, saved tensors, the tape,
// and the leak test the foundation issue asks for.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { add, mul, sub, sum, mean, reshape } from '../../src/ops/index.ts';
import { backward, noGrad, liveGradNodes } from '../../src/tensor/autograd.ts';
import { Tensor, fromArray, full, parameter, scope, trackedCount } from '../../src/tensor/tensor.ts';
import { createDevice } from '../../src/gpu/device.ts';
import { assertClose, device, randn } from '../helpers/fixtures.ts';

const EXACT = { rtol: 0, atol: 0 };

test.before(async () => {
  await device();
});

test('scope disposes intermediates and keeps the returned tensor', async () => {
  const x = fromArray([1, 2, 3], [3]);
  let inner: Tensor | null = null;
  const y = scope(() => {
    inner = add(x, x);
    return mul(inner, x);
  });
  assert.ok(inner!.disposed, 'intermediate disposed at scope exit');
  assert.not.ok(y.disposed, 'returned tensor survives');
  assert.not.ok(x.disposed, 'tensor created outside the scope survives');
  assertClose(await y.read(), [2, 8, 18], EXACT, 'y');
  y.dispose();
  x.dispose();
});

test('scope keeps tensors inside returned objects and arrays; nested scopes hand results outward', async () => {
  const d = await device();
  const live0 = d.pool.stats().liveBytes;
  const x = fromArray([1, 2], [2]);
  let a: Tensor | null = null;
  let b: Tensor | null = null;
  let innerResult: { c: Tensor; list: Tensor[] } | null = null;
  const out = scope(() => {
    a = add(x, x); // [2, 4]
    innerResult = scope(() => {
      b = mul(a!, x); // [2, 8], intermediate of the inner scope
      return { c: add(b, x), list: [[sub(b, x)]].flat() }; // c = [3, 10], list[0] = [1, 6]
    });
    assert.ok(b!.disposed, 'inner intermediate disposed at inner exit');
    assert.not.ok(innerResult.c.disposed);
    assert.not.ok(innerResult.list[0].disposed);
    return { kept: [innerResult.list[0]], nested: { s: sum(innerResult.c) } };
  });
  assert.ok(a!.disposed, 'outer intermediate disposed');
  assert.ok(innerResult!.c.disposed, 'inner result not returned by the outer scope is disposed there');
  assertClose(await out.kept[0].read(), [1, 6], EXACT, 'kept');
  assertClose(await out.nested.s.read(), [13], EXACT, 'nested.s');
  out.kept[0].dispose();
  out.nested.s.dispose();
  x.dispose();
  assert.is(d.pool.stats().liveBytes, live0, 'everything returned to the pool');
  assert.is(trackedCount(), 0, 'no scope left open');
});

test('keep() survives a scope; a throwing scope still disposes its tensors', () => {
  const x = fromArray([1, 2], [2]);
  let kept: Tensor | null = null;
  scope(() => {
    kept = add(x, x).keep();
  });
  assert.not.ok(kept!.disposed);
  kept!.dispose();
  let leaked: Tensor | null = null;
  assert.throws(
    () =>
      scope(() => {
        leaked = add(x, x);
        throw new Error('boom');
      }),
    /boom/,
  );
  assert.ok(leaked!.disposed, 'tensor disposed even though the scope body threw');
  assert.is(trackedCount(), 0);
  x.dispose();
});

test('using a disposed tensor names the op and the argument', () => {
  const a = fromArray([1, 2, 3], [3]);
  const b = fromArray([4, 5, 6], [3]);
  b.dispose();
  assert.throws(() => add(a, b), (e: Error) => /^add: argument 'b' \(Tensor\[3\]\) was used after dispose\(\)/.test(e.message));
  assert.throws(() => sum(b), /^sum: argument 'x' \(Tensor\[3\]\) was used after dispose\(\)/);
  b.dispose(); // a second dispose is a no-op
  a.dispose();
  assert.throws(() => mul(a, a), /^mul: argument 'a' .*used after dispose/);
});

test('ops on tensors from two devices throw a clear error', async () => {
  const d1 = await device();
  const d2 = await createDevice();
  assert.ok(d2 !== d1 && d2.id !== d1.id);
  const a = fromArray([1, 2, 3], [3], d1);
  const b = fromArray([1, 2, 3], [3], d2);
  try {
    assert.throws(
      () => add(a, b),
      (e: Error) => e.message === `add: tensors are on different devices ('a' on device #${d1.id}, 'b' on device #${d2.id}); move them to one device first`,
    );
    // The second device works on its own.
    const c = mul(b, b);
    assertClose(await c.read(), [1, 4, 9], EXACT, 'second device');
    c.dispose();
  } finally {
    a.dispose();
    b.dispose();
    d2.destroy();
  }
});

test('saved tensors outlive the user disposing intermediates before backward', async () => {
  const a = fromArray([1, 2, 3], [3]);
  const b = fromArray([4, 5, 6], [3]);
  a.requiresGrad = true;
  b.requiresGrad = true;
  const h = mul(a, b); // h = [4, 10, 18]; mul saves a and b
  const h2 = mul(h, h); // saves h twice
  const loss = sum(h2);
  h.dispose();
  h2.dispose();
  // If h's storage had gone back to the pool, this same-sized tensor would take its buffer
  // and overwrite the values backward needs.
  const junk = full([3], 999);
  backward(loss);
  // dL/da = 2 h b = 2 a b^2, dL/db = 2 a^2 b
  assertClose(await a.grad!.read(), [32, 100, 216], EXACT, 'a.grad');
  assertClose(await b.grad!.read(), [8, 40, 108], EXACT, 'b.grad');
  assertClose(await loss.read(), [16 + 100 + 324], EXACT, 'loss');
  junk.dispose();
  loss.dispose();
  a.dispose();
  b.dispose();
});

test('a second backward through the same graph throws a clear error', () => {
  const nodes0 = liveGradNodes();
  const a = fromArray([1, 2], [2]);
  a.requiresGrad = true;
  const loss = scope(() => sum(mul(a, a))); // the scope frees the mul output; its node lives on the tape
  scope(() => backward(loss));
  assert.throws(() => scope(() => backward(loss)), /backward through 'sum' a second time.*Run the forward pass again/);
  loss.dispose();
  a.dispose();
  assert.is(liveGradNodes(), nodes0);
});

test('noGrad records nothing', () => {
  const a = fromArray([1, 2], [2]);
  a.requiresGrad = true;
  const nodes0 = liveGradNodes();
  const tracked = mul(a, a);
  assert.ok(tracked.requiresGrad, 'outside noGrad the op is recorded');
  assert.is(liveGradNodes(), nodes0 + 1);
  const y = noGrad(() => add(mul(a, a), a));
  assert.is(y.requiresGrad, false);
  assert.is(y.gradFn, null);
  assert.is(liveGradNodes(), nodes0 + 1, 'noGrad created no nodes');
  assert.throws(() => backward(y), /does not require grad/);
  tracked.dispose();
  assert.is(liveGradNodes(), nodes0, 'disposing the output releases its node');
  y.dispose();
  a.dispose();
});

// The leak test the foundation issue asks for: a training-style step (forward inside scope(),
// backward, readback) repeated 200 times must not grow pool memory, pool allocations or
// the number of live autograd nodes after the first iteration.
test('leak test: 200 forward+backward iterations keep liveBytes, allocations and grad nodes flat', async () => {
  const d = await device();
  const B = 6;
  const D = 40;
  const xData = randn(B * D, 11);
  const wData = randn(D, 12);
  const bData = randn(D, 13);
  const x = fromArray(xData, [B, D]);
  const w = parameter(wData, [D], 'layer.weight');
  const b = parameter(bData, [D], 'layer.bias');
  const nodes0 = liveGradNodes();

  // loss = mean_rows( sum_cols( (x*w + b - 0.5*x)^2 ) ) with an intermediate the step disposes itself.
  const half = full([B, D], 0.5);
  const step = async (): Promise<number> => {
    w.zeroGrad();
    b.zeroGrad();
    const loss = scope(() => {
      const h = add(mul(x, w), b);
      const r = sub(h, mul(half, x));
      h.dispose(); // saved views keep what backward needs
      const perRow = sum(mul(r, r), 1);
      return mean(reshape(perRow, [B, 1]));
    });
    // backward runs outside any scope, so a tensor it forgets to free would show up as a leak.
    backward(loss);
    const v = await loss.item();
    loss.dispose();
    return v;
  };

  // Reference on the host (f64).
  let refLoss = 0;
  const refGw = new Float64Array(D);
  const refGb = new Float64Array(D);
  for (let i = 0; i < B; i++) {
    for (let j = 0; j < D; j++) {
      const xv = xData[i * D + j];
      const r = xv * wData[j] + bData[j] - 0.5 * xv;
      refLoss += (r * r) / B;
      refGw[j] += (2 * r * xv) / B;
      refGb[j] += (2 * r) / B;
    }
  }

  const first = await step();
  assertClose([first], [refLoss], { rtol: 1e-5, atol: 1e-6 }, 'loss');
  assertClose(await w.grad!.read(), refGw, { rtol: 1e-5, atol: 1e-6 }, 'dL/dw');
  assertClose(await b.grad!.read(), refGb, { rtol: 1e-5, atol: 1e-6 }, 'dL/db');
  const base = d.pool.stats();
  assert.is(liveGradNodes(), nodes0);
  assert.is(trackedCount(), 0);

  for (let it = 2; it <= 200; it++) {
    const v = await step();
    if (v !== first) assert.unreachable(`iteration ${it}: loss ${v} differs from the first ${first}`);
    const s = d.pool.stats();
    if (s.liveBytes !== base.liveBytes || s.allocations !== base.allocations || liveGradNodes() !== nodes0) {
      assert.unreachable(
        `iteration ${it}: liveBytes ${s.liveBytes} (first ${base.liveBytes}), allocations ${s.allocations} ` +
          `(first ${base.allocations}), live grad nodes ${liveGradNodes()} (baseline ${nodes0})`,
      );
    }
  }
  const end = d.pool.stats();
  assert.is(end.liveBytes, base.liveBytes);
  assert.is(end.liveBuffers, base.liveBuffers);
  assert.is(end.allocations, base.allocations);
  assert.is(liveGradNodes(), nodes0);

  for (const t of [x, w, b, half]) t.dispose();
});

test.run();
