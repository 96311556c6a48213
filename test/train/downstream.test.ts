// src/train/downstream.ts against PyTorch (scripts/fixtures/fx_downstream.py, float64
// references): retrieval R@K with a tied (duplicated) caption, prompt-ensembled zero-shot
// accuracy per class, and the GPU logistic-regression probe (genalign's linear, crossEntropy,
// backward and AdamW against torch's, 60 full-batch steps from zero weights).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ensembleClassEmbeddings, fitLinearProbe, probeAccuracy, retrievalMetrics, stratifiedHalves, zeroShotAccuracy } from '../../src/train/downstream.ts';
import { assertClose, device, fixture } from '../helpers/fixtures.ts';

const fx = fixture('downstream');

test('retrieval R@1/5/10 both ways match PyTorch (ties count for the query)', () => {
  const images = fx.get('retrieval.images');
  const texts = fx.get('retrieval.texts');
  const [n, dim] = images.shape;
  const got = retrievalMetrics(images.data, texts.data, n, dim, 'real');
  const t2i = fx.get('retrieval.t2i').data;
  const i2t = fx.get('retrieval.i2t').data;
  [1, 5, 10].forEach((k, i) => {
    assert.ok(Math.abs(got[`t2i_r${k}_real`] - t2i[i]) < 1e-7, `t2i R@${k}: ${got[`t2i_r${k}_real`]} vs ${t2i[i]}`);
    assert.ok(Math.abs(got[`i2t_r${k}_real`] - i2t[i]) < 1e-7, `i2t R@${k}: ${got[`i2t_r${k}_real`]} vs ${i2t[i]}`);
  });
  assert.equal(Object.keys(got).sort(), ['i2t_r10_real', 'i2t_r1_real', 'i2t_r5_real', 't2i_r10_real', 't2i_r1_real', 't2i_r5_real']);
});

test('zero-shot: prompt ensembling and top-1/top-5 per class match PyTorch', () => {
  const prompts = fx.get('zeroshot.prompts');
  const C = 7;
  const T = 3;
  const dim = prompts.shape[1];
  const cls = ensembleClassEmbeddings(prompts.data, T, C, dim);
  assertClose(cls, fx.get('zeroshot.class_embeds').data, { rtol: 1e-5, atol: 1e-6 }, 'class embeddings');
  const labels = Array.from(fx.get('zeroshot.labels').data, (v) => Math.round(v));
  const names = Array.from({ length: C }, (_, c) => `class${c}`);
  const res = zeroShotAccuracy(fx.get('zeroshot.images').data, labels, cls, names, dim);
  const overall = fx.get('zeroshot.overall').data;
  assert.ok(Math.abs(res.top1 - overall[0]) < 1e-6 && Math.abs(res.top5 - overall[1]) < 1e-6, `overall ${res.top1}/${res.top5} vs ${overall[0]}/${overall[1]}`);
  assert.ok(res.top1 > 0 && res.top1 < 1, 'the case is neither trivial nor hopeless');
  const per = fx.get('zeroshot.per_class').data;
  res.per_class.forEach((p, c) => {
    assert.is(p.name, `class${c}`);
    assert.ok(Math.abs(p.top1 - per[2 * c]) < 1e-6 && Math.abs(p.top5 - per[2 * c + 1]) < 1e-6, `class ${c}: ${p.top1}/${p.top5} vs ${per[2 * c]}/${per[2 * c + 1]}`);
  });
  assert.is(res.n, labels.length);
  assert.throws(() => ensembleClassEmbeddings(new Float32Array(5), 1, 2, 3), /templates/);
});

test('probe: logistic regression on the GPU matches torch AdamW + cross_entropy after 60 steps', async () => {
  const dev = await device();
  const feats = fx.get('probe.features');
  const labels = Array.from(fx.get('probe.labels').data, (v) => Math.round(v));
  const [n, dim] = feats.shape;
  const probe = await fitLinearProbe(dev, feats.data, labels, 3, dim, { steps: 60, lr: 0.1, weightDecay: 1e-4 });
  // 60 Adam steps amplify f32 rounding differences a little: relative 1e-4 of the weights' scale.
  assertClose(probe.weight, fx.get('probe.weight').data, { rtol: 1e-4, atol: 1e-4 }, 'probe weight');
  assertClose(probe.bias, fx.get('probe.bias').data, { rtol: 1e-4, atol: 1e-4 }, 'probe bias');
  assert.ok(Math.abs(probe.trainLoss - fx.get('probe.last_step_loss').data[0]) < 1e-4, `loss ${probe.trainLoss} vs ${fx.get('probe.last_step_loss').data[0]}`);
  // Accuracy against the host argmax of the reference weights.
  const w = fx.get('probe.weight').data;
  const b = fx.get('probe.bias').data;
  let want = 0;
  for (let i = 0; i < n; i++) {
    let norm = 0;
    for (let j = 0; j < dim; j++) norm += feats.data[i * dim + j] ** 2;
    const s = Math.sqrt(dim) / Math.sqrt(norm);
    const logits = [0, 1, 2].map((c) => b[c] + Array.from({ length: dim }, (_, j) => w[c * dim + j] * feats.data[i * dim + j] * s).reduce((a, v) => a + v, 0));
    if (logits.indexOf(Math.max(...logits)) === labels[i]) want++;
  }
  assert.is(await probeAccuracy(dev, probe, feats.data, labels), want / n);
  assert.ok(want / n > 0.8, `the features are separable enough to learn (${want}/${n})`);
  let message = '';
  await fitLinearProbe(dev, new Float32Array(0), [], 3, dim).catch((e: Error) => (message = e.message));
  assert.match(message, /probe: no training images/);
});

test('stratifiedHalves: deterministic per seed, per class, every class keeps a test item', () => {
  const labels = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 3];
  const a = stratifiedHalves(labels, 5);
  assert.equal(stratifiedHalves(labels, 5), a, 'same seed, same split');
  assert.not.equal(stratifiedHalves(labels, 6), a, 'another seed, another split');
  assert.equal([...a.fit, ...a.test].sort((x, y) => x - y), labels.map((_, i) => i), 'a partition');
  const count = (idx: number[], c: number): number => idx.filter((i) => labels[i] === c).length;
  assert.equal([0, 1, 2, 3].map((c) => count(a.fit, c)), [2, 1, 2, 0]);
  assert.equal([0, 1, 2, 3].map((c) => count(a.test, c)), [2, 2, 3, 1]);
});

test.run();
