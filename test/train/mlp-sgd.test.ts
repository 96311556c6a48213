// Foundation end-to-end check: a two-layer MLP with LayerNorm and quick_gelu, one SGD step from
// the fixture's weights, must land on PyTorch's parameters (scripts/fixtures/fx_mlp.py).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Parameter, fromArray, scope } from '../../src/tensor/tensor.ts';
import { backward, noGrad } from '../../src/tensor/autograd.ts';
import { linear, layerNorm, quickGelu, crossEntropy, axpyNoGrad } from '../../src/ops/index.ts';
import { fixture, assertClose, device } from '../helpers/fixtures.ts';

test('two-layer MLP + LayerNorm + quick_gelu: one SGD step matches PyTorch', async () => {
  const d = await device();
  const fx = fixture('mlp');
  const lr = Number(fx.metadata.lr);
  const names = ['w1', 'b1', 'ln_w', 'ln_b', 'w2', 'b2'] as const;
  const p = Object.fromEntries(names.map((n) => {
    const h = fx.get(`before.${n}`);
    return [n, Parameter.fromTensor(fromArray(h.data, h.shape, d), n)];
  })) as Record<(typeof names)[number], Parameter>;
  try {
    const x = fx.get('x');
    const targets = Array.from(fx.get('targets').data);
    const loss = scope(() => {
      const h = quickGelu(layerNorm(linear(fromArray(x.data, x.shape, d), p.w1, p.b1), p.ln_w, p.ln_b, 1e-5));
      const l = crossEntropy(linear(h, p.w2, p.b2), targets);
      backward(l);
      return l.keep();
    });
    assertClose([await loss.item()], fx.get('loss').data, { rtol: 1e-5, atol: 1e-6 }, 'loss');
    loss.dispose();
    for (const n of names) {
      const g = p[n].grad;
      assert.ok(g, `${n} has a gradient`);
      const updated = scope(() => noGrad(() => axpyNoGrad(p[n], g!, -lr)).keep());
      // One step of size 0.5·grad: the parameters carry the gradients' rounding (f32 sums over
      // 12 rows and 24 features), so allow 2e-6 absolute on unit-scale values.
      assertClose(await updated.read(), fx.get(`after.${n}`).data, { rtol: 1e-5, atol: 2e-6 }, `${n} after one SGD step`);
      updated.dispose();
    }
  } finally {
    for (const n of names) p[n].dispose();
  }
});

test.run();
