// Two GMAIL training steps of the LoRA student (dual projection on) against PyTorch
// (scripts/fixtures/fx_trainstep.py), and of the fully fine-tuned student (--rank 0,
// fx_trainstep_full.py): the trainer's own makeStudent, accumulateGradients (student
// forward, Eq. 1 against the step's teacher embeddings, backward per micro-batch) and
// makeOptimizer (AdamW betas/eps/weight decay, global-norm clipping) on clip-tiny. This is the
// whole ViT + LoRA backward against a reference, and the trainer's wiring of tau, clipping and
// AdamW settings, not only each op on its own.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { getDevice } from '../../src/gpu/device.ts';
import { loadClipVision } from '../../src/io/hf-checkpoint.ts';
import { ATTENTION_TARGETS } from '../../src/nn/lora.ts';
import { accumulateGradients, makeOptimizer, makeStudent } from '../../src/train/trainer.ts';
import { disposeStudent } from '../../src/train/student.ts';
import { FIXTURE_DIR, assertClose, fixture, scaledTol } from '../helpers/fixtures.ts';
import { testF16, U16 } from '../helpers/f16.ts';
import type { Tensor } from '../../src/tensor/tensor.ts';

// f32 through two transformer layers forward and backward, then Adam's normalised update:
// the loss and norm to 1e-5 relative; parameters to 2e-5 × max|value| (their change per step is
// ~lr = 3e-3, so this still resolves a 1% error in an update).
const LOSS_TOL = { rtol: 1e-5, atol: 0 };
const PARAM_K = 2e-5;

for (const accum of [1, 2]) {
  test(`two training steps (accum ${accum}): loss, grad norm and every trainable tensor match PyTorch`, async () => {
    const device = await getDevice();
    const fx = fixture('trainstep');
    const meta = fx.metadata;
    const lrs = JSON.parse(meta.lr) as number[];
    const [beta1, beta2] = JSON.parse(meta.betas) as [number, number];
    const { model } = loadClipVision(join(FIXTURE_DIR, 'clip-tiny'), device);
    const student = makeStudent(model, { rank: Number(meta.rank), alpha: Number(meta.alpha), targets: [...ATTENTION_TARGETS], seed: 0, dualProjection: true }, device);
    const optimizer = makeOptimizer(student.params, { lr: lrs[0], beta1, beta2, eps: Number(meta.eps), weightDecay: Number(meta.weight_decay), clip: Number(meta.clip) });
    try {
      // The projection starts as the model's own (makeStudent copies it); LoRA A/B from the fixture.
      assertClose(await student.projection!.read(), fx.get('init.projection').data, { rtol: 0, atol: 0 }, 'projection copy');
      for (const [path, pair] of student.lora!.pairs) {
        pair.a.write(fx.get(`init.${path}.A`).data);
        pair.b.write(fx.get(`init.${path}.B`).data);
      }
      const pixels = fx.get('pixels').data;
      const per = pixels.length / 6;
      const n = 6 / accum;
      const micro = Array.from({ length: accum }, (_, k) => ({ generated: pixels.subarray(k * n * per, (k + 1) * n * per), n }));
      for (const [t, lr] of lrs.entries()) {
        const s = `s${t + 1}`;
        const { loss } = await accumulateGradients(device, model, student, { tau: Number(meta.tau), cosineWeight: 0 }, micro, fx.get('teacher').data);
        assertClose([loss], fx.get(`${s}.loss`).data, LOSS_TOL, `${s} loss`);
        const norm = optimizer.step(lr);
        assertClose(await norm.read(), fx.get(`${s}.grad_norm`).data, LOSS_TOL, `${s} grad norm (before clipping)`);
        norm.dispose();
        optimizer.zeroGrad();
        const want = fx.get(`${s}.projection`).data;
        assertClose(await student.projection!.read(), want, scaledTol(want, PARAM_K), `${s} projection`);
        for (const [path, pair] of student.lora!.pairs) {
          for (const [which, p] of [['A', pair.a], ['B', pair.b]] as const) {
            const w = fx.get(`${s}.${path}.${which}`).data;
            assertClose(await p.read(), w, scaledTol(w, PARAM_K), `${s} ${path}.${which}`);
          }
        }
      }
    } finally {
      optimizer.dispose();
      student.lora!.dispose();
      student.projection?.dispose();
      model.dispose();
    }
  });
}

// --rank 0 against fx_trainstep_full.py: every weight of the student trains (no LoRA), the
// teacher stays as loaded. Same tolerances as the LoRA steps: f32 through the whole backward
// (patch embedding, class and position embeddings, LayerNorms, biases included), then AdamW with
// the decayed / not decayed split the fixture states. Adam turns each element's gradient into a
// step of about ±lr, so an element whose gradient is near eps carries f32 rounding of the
// gradient into its step: the weights are checked as updates, per element to ELEM_K × the summed
// learning rates and over all weights to UPDATE_L2 relative L2 error of the update (measured on
// lavapipe: 3.5e-3 and 1.7e-4; a learning rate off by 1% gives 1e-2). One exception: the k_proj biases. Their
// exact gradient is 0 (a bias on the keys adds the same q·b to every score of a query, and softmax
// ignores that), so in f32 it is rounding noise, ~1e-8, which Adam divides by eps (1e-6) into a
// step of ~1% of lr; the reference, in float64, barely moves them. They are checked against
// ZERO_GRAD_K × the summed learning rates (measured on lavapipe: 4e-5, i.e. 0.8%).
const ZERO_GRAD_K = 0.05;
const ELEM_K = 1e-2;
const UPDATE_L2 = 1e-3;
for (const accum of [1, 2]) {
  test(`full fine-tuning (--rank 0), two steps (accum ${accum}): loss, grad norm and every weight match PyTorch; the teacher is unchanged`, async () => {
    const device = await getDevice();
    const fx = fixture('trainstep_full');
    const inputs = fixture('trainstep');
    const meta = fx.metadata;
    const lrs = JSON.parse(meta.lr) as number[];
    const [beta1, beta2] = JSON.parse(meta.betas) as [number, number];
    const { model } = loadClipVision(join(FIXTURE_DIR, 'clip-tiny'), device);
    const teacherBefore = new Map(await Promise.all([...model.weights].map(async ([n, t]) => [n, await t.read()] as const)));
    const student = makeStudent(model, { rank: 0, alpha: 1, targets: [...ATTENTION_TARGETS], seed: 0, dualProjection: false }, device);
    const optimizer = makeOptimizer(student.params, { lr: lrs[0], beta1, beta2, eps: Number(meta.eps), weightDecay: Number(meta.weight_decay), clip: Number(meta.clip) }, student.noWeightDecay);
    try {
      assert.is(student.kind, 'full');
      assert.is(student.lora, null);
      assert.equal(student.params.length, model.weights.size, 'every weight trains');
      assert.equal(student.params.filter((p) => !student.noWeightDecay.includes(p)).map((p) => p.name).sort(), (JSON.parse(meta.decayed) as string[]).sort(), 'the weights with weight decay');
      const pixels = inputs.get('pixels').data;
      const per = pixels.length / 6;
      const n = 6 / accum;
      const micro = Array.from({ length: accum }, (_, k) => ({ generated: pixels.subarray(k * n * per, (k + 1) * n * per), n }));
      for (const [t, lr] of lrs.entries()) {
        const s = `s${t + 1}`;
        const { loss } = await accumulateGradients(device, model, student, { tau: Number(meta.tau), cosineWeight: 0 }, micro, inputs.get('teacher').data);
        assertClose([loss], fx.get(`${s}.loss`).data, LOSS_TOL, `${s} loss`);
        const norm = optimizer.step(lr);
        assertClose(await norm.read(), fx.get(`${s}.grad_norm`).data, LOSS_TOL, `${s} grad norm (before clipping)`);
        norm.dispose();
        optimizer.zeroGrad();
      }
      const lrSum = lrs.reduce((a, b) => a + b, 0);
      let err = 0;
      let ref = 0;
      let worst = 0;
      for (const [name, p] of student.model!.weights) {
        const want = fx.get(`s2.${name}`).data;
        const got = await p.read();
        const init = teacherBefore.get(name)!;
        for (let j = 0; j < want.length; j++) {
          err += (got[j] - want[j]) ** 2;
          ref += (want[j] - init[j]) ** 2;
          if (!name.endsWith('k_proj.bias')) worst = Math.max(worst, Math.abs(got[j] - want[j]) / lrSum);
        }
        assertClose(got, want, { rtol: 0, atol: (name.endsWith('k_proj.bias') ? ZERO_GRAD_K : ELEM_K) * lrSum }, `after step 2: ${name}`);
      }
      assert.ok(Math.sqrt(err / ref) <= UPDATE_L2, `relative L2 error of the update ${Math.sqrt(err / ref).toExponential(2)} > ${UPDATE_L2}`);
      console.log(`  full fine-tuning: update relative L2 error ${Math.sqrt(err / ref).toExponential(2)}, worst element ${worst.toExponential(2)} × Σlr`);
      for (const [name, t] of model.weights) assertClose(await t.read(), teacherBefore.get(name)!, { rtol: 0, atol: 0 }, `teacher ${name} unchanged`);
    } finally {
      optimizer.dispose();
      disposeStudent(student);
      model.dispose();
    }
  });
}

// --precision f16 against fx_trainstep_f16.py, which emulates f16 storage where genalign stores
// f16 (see its docstring), with the loss scaled (2^10, fx_trainstep_f16.py says why) as GradScaler does. Two sources of
// difference remain: genalign accumulates in f32 where the reference uses float64, and a value
// that lands within an f32 rounding of an f16 rounding boundary can round to the other f16
// neighbour (one f16 ulp, 2^-11 relative, which later layers carry). Tolerances in units of U16:
//   loss and the gradient norm: LOSS_K·U16 relative;
//   each gradient tensor: GRAD_K·U16 × its max |value|;
//   the update of all trainable tensors after each AdamW step: relative L2 error ≤ UPDATE_REL.
//   (Adam normalises each element's step, so an element whose gradient is within f16 noise of 0
//   may step the other way; the L2 norm over all elements bounds how much of the update that is.)
// Measured on lavapipe: loss 0.53 U16, gradients 4.99 U16 × max, updates 1.8e-2 relative L2 (an
// lr off by 10% is 1e-1).
const LOSS_K = 2;
const GRAD_K = 10;
const UPDATE_REL = 0.05;

testF16('two training steps at --precision f16 (f16 weights and activations, f32 masters, loss scale 2^10): loss, gradients and updates match the f16-storage reference', async () => {
  const device = await getDevice();
  const fx = fixture('trainstep_f16');
  const meta = fx.metadata;
  const lrs = JSON.parse(meta.lr) as number[];
  const [beta1, beta2] = JSON.parse(meta.betas) as [number, number];
  const S = Number(meta.loss_scale);
  const { model } = loadClipVision(join(FIXTURE_DIR, 'clip-tiny'), device, 'f16');
  const student = makeStudent(model, { rank: Number(meta.rank), alpha: Number(meta.alpha), targets: [...ATTENTION_TARGETS], seed: 0, dualProjection: true }, device);
  const optimizer = makeOptimizer(student.params, { lr: lrs[0], beta1, beta2, eps: Number(meta.eps), weightDecay: Number(meta.weight_decay), clip: Number(meta.clip) });
  const worst = { loss: 0, grad: 0, update: 0 };
  try {
    // The projection master is the f16 weight widened (exact); LoRA A/B from the fixture.
    assertClose(await student.projection!.read(), fx.get('init.projection').data, { rtol: 0, atol: 0 }, 'projection copy');
    for (const [path, pair] of student.lora!.pairs) {
      pair.a.write(fx.get(`init.${path}.A`).data);
      pair.b.write(fx.get(`init.${path}.B`).data);
    }
    const tensors = (): [string, Tensor][] => [['projection', student.projection!], ...[...student.lora!.pairs].flatMap(([path, pair]) => [[`${path}.A`, pair.a], [`${path}.B`, pair.b]] as [string, Tensor][])];
    let before = await Promise.all(tensors().map(([, t]) => t.read()));
    for (const [t, lr] of lrs.entries()) {
      const s = `s${t + 1}`;
      const { loss } = await accumulateGradients(device, model, student, { tau: Number(meta.tau), cosineWeight: 0 }, [{ generated: fx.get('pixels').data, n: 6 }], fx.get('teacher').data, S);
      const wantLoss = fx.get(`${s}.loss`).data[0];
      worst.loss = Math.max(worst.loss, Math.abs(loss - wantLoss) / Math.abs(wantLoss) / U16);
      assertClose([loss], [wantLoss], { rtol: LOSS_K * U16, atol: 0 }, `${s} loss`);
      for (const [name, p] of tensors()) {
        const got = (await p.grad!.read()).map((v) => v / S);
        const want = fx.get(`${s}.grad.${name}`).data;
        const m = want.reduce((a, v) => Math.max(a, Math.abs(v)), 0);
        worst.grad = Math.max(worst.grad, got.reduce((a, v, i) => Math.max(a, Math.abs(v - want[i])), 0) / m / U16);
        assertClose(got, want, { rtol: 0, atol: GRAD_K * U16 * m }, `${s} gradient of ${name}`);
      }
      const { norm, skipped } = await optimizer.stepUnlessOverflow(lr, 1 / S);
      optimizer.zeroGrad();
      assert.not.ok(skipped, `${s}: no overflow at scale ${S}`);
      assertClose([norm], fx.get(`${s}.grad_norm`).data, { rtol: LOSS_K * U16, atol: 0 }, `${s} grad norm (unscaled, before clipping)`);
      const after = await Promise.all(tensors().map(([, p]) => p.read()));
      let err = 0;
      let ref = 0;
      tensors().forEach(([name], i) => {
        const want = fx.get(`${s}.${name}`).data;
        for (let j = 0; j < want.length; j++) {
          const dRef = want[j] - before[i][j];
          err += (after[i][j] - before[i][j] - dRef) ** 2;
          ref += dRef ** 2;
        }
      });
      worst.update = Math.max(worst.update, Math.sqrt(err / ref));
      assert.ok(Math.sqrt(err / ref) <= UPDATE_REL, `${s}: relative L2 error of the update ${Math.sqrt(err / ref).toExponential(2)} > ${UPDATE_REL}`);
      // The next step starts from the reference's values, so the steps are checked one by one.
      tensors().forEach(([name, p]) => p.write(fx.get(`${s}.${name}`).data));
      before = await Promise.all(tensors().map(([, p]) => p.read()));
    }
    console.log(`  f16 train step: worst loss error ${worst.loss.toFixed(2)} U16, gradient ${worst.grad.toFixed(2)} U16 × max, update ${worst.update.toExponential(2)} relative L2`);
  } finally {
    optimizer.dispose();
    student.lora!.dispose();
    student.projection?.dispose();
    model.dispose();
  }
});

test.run();
