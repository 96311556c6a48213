// LoraAdapter.create against PEFT's initialisation, which is torch.nn.init.kaiming_uniform_(A,
// a=√5): gain √(2/(1+a²)) = √(1/3), bound gain·√(3/fan_in) = 1/√fan_in, so A ~ U(−1/√in, 1/√in);
// B is zero (the student equals the teacher at step 0). Checked as a distribution: range,
// mean, variance and a Kolmogorov–Smirnov distance to the uniform law, per fan-in.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { getDevice } from '../../src/gpu/device.ts';
import { NAMED_CONFIGS } from '../../src/nn/config.ts';
import { LoraAdapter, moduleShape } from '../../src/nn/lora.ts';

test('A ~ U(−1/√in, 1/√in) for fan-in 768 (q_proj) and 3072 (fc2); B = 0; the seed decides A', async () => {
  const device = await getDevice();
  const cfg = NAMED_CONFIGS['vit-b-32'];
  const lora = LoraAdapter.create(cfg, { rank: 4, alpha: 4, targets: ['q_proj', 'fc2'], seed: 3 }, device);
  const other = LoraAdapter.create(cfg, { rank: 4, alpha: 4, targets: ['q_proj'], seed: 4 }, device);
  try {
    for (const target of ['q_proj', 'fc2'] as const) {
      const fin = moduleShape(cfg, target).in;
      const bound = 1 / Math.sqrt(fin);
      const values: number[] = [];
      for (const [path, pair] of lora.pairs) {
        if (!path.endsWith(target)) continue;
        assert.equal(pair.a.shape, [4, fin]);
        for (const v of await pair.a.read()) values.push(v);
        assert.ok((await pair.b.read()).every((v) => v === 0), `${path}: B is zero`);
      }
      const n = values.length;
      const sorted = [...values].sort((a, b) => a - b);
      const [lo, hi] = [sorted[0], sorted[n - 1]];
      assert.ok(-bound <= lo && hi <= bound, `${target}: |A| ≤ 1/√${fin} (range ${lo}..${hi})`);
      assert.ok(lo < -0.99 * bound && hi > 0.99 * bound, `${target}: A fills [−b, b] (range ${lo}..${hi})`);
      const mean = values.reduce((a, b) => a + b, 0) / n;
      const variance = values.reduce((a, b) => a + (b - mean) ** 2, 0) / n;
      // U(−b, b): mean 0 with standard error b/√(3n); variance b²/3, its standard error ≈ b²·0.3/√n.
      assert.ok(Math.abs(mean) < 4 * bound / Math.sqrt(3 * n), `${target}: mean ${mean}`);
      assert.ok(Math.abs(variance / (bound * bound / 3) - 1) < 4 * 0.9 / Math.sqrt(n), `${target}: variance ${variance} vs ${bound * bound / 3}`);
      let ks = 0;
      sorted.forEach((v, i) => {
        const cdf = (v + bound) / (2 * bound);
        ks = Math.max(ks, Math.abs(cdf - i / n), Math.abs(cdf - (i + 1) / n));
      });
      assert.ok(ks < 1.95 / Math.sqrt(n), `${target}: KS distance ${ks} to U(−b, b) (0.1% critical value ${1.95 / Math.sqrt(n)})`);
    }
    const q0 = 'vision_model.encoder.layers.0.self_attn.q_proj';
    const a3 = await lora.pairs.get(q0)!.a.read();
    const a4 = await other.pairs.get(q0)!.a.read();
    assert.ok(a3.some((v, i) => v !== a4[i]), 'another seed gives another A');
    const again = LoraAdapter.create(cfg, { rank: 4, alpha: 4, targets: ['q_proj'], seed: 3 }, device);
    assert.equal(Array.from(await again.pairs.get(q0)!.a.read()), Array.from(a3), 'the same seed gives the same A');
    again.dispose();
  } finally {
    lora.dispose();
    other.dispose();
  }
});

test.run();
