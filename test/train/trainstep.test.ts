// Two GMAIL training steps of the LoRA student (dual projection on) against PyTorch
// (scripts/fixtures/fx_trainstep.py): the trainer's own makeStudent, accumulateGradients (student
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
import { FIXTURE_DIR, assertClose, fixture, scaledTol } from '../helpers/fixtures.ts';

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
      for (const [path, pair] of student.lora.pairs) {
        pair.a.write(fx.get(`init.${path}.A`).data);
        pair.b.write(fx.get(`init.${path}.B`).data);
      }
      const pixels = fx.get('pixels').data;
      const per = pixels.length / 6;
      const n = 6 / accum;
      const micro = Array.from({ length: accum }, (_, k) => ({ generated: pixels.subarray(k * n * per, (k + 1) * n * per), n }));
      for (const [t, lr] of lrs.entries()) {
        const s = `s${t + 1}`;
        const { loss } = await accumulateGradients(device, model, student, Number(meta.tau), micro, fx.get('teacher').data);
        assertClose([loss], fx.get(`${s}.loss`).data, LOSS_TOL, `${s} loss`);
        const norm = optimizer.step(lr);
        assertClose(await norm.read(), fx.get(`${s}.grad_norm`).data, LOSS_TOL, `${s} grad norm (before clipping)`);
        norm.dispose();
        optimizer.zeroGrad();
        const want = fx.get(`${s}.projection`).data;
        assertClose(await student.projection!.read(), want, scaledTol(want, PARAM_K), `${s} projection`);
        for (const [path, pair] of student.lora.pairs) {
          for (const [which, p] of [['A', pair.a], ['B', pair.b]] as const) {
            const w = fx.get(`${s}.${path}.${which}`).data;
            assertClose(await p.read(), w, scaledTol(w, PARAM_K), `${s} ${path}.${which}`);
          }
        }
      }
    } finally {
      optimizer.dispose();
      student.lora.dispose();
      student.projection?.dispose();
      model.dispose();
    }
  });
}

test.run();
