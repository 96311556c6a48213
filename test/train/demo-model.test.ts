// make-demo-model's pieces on a tiny budget (a small demo dataset, 3 steps): two runs write
// byte-identical model folders, the held-out pairs are the demo trainer's, the model card and
// report carry retrieval and zero-shot numbers, and the folder loads back with loadClip.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getDevice } from '../../src/gpu/device.ts';
import { ensureDemoDataset } from '../../src/io/demo-data.ts';
import { loadClip } from '../../src/io/hf-checkpoint.ts';
import { saveClipModel } from '../../src/io/hf-save.ts';
import { ClipTokenizer } from '../../src/io/tokenizer.ts';
import { pretrainDemoModel, type DemoModelReport } from '../../src/train/demo-model.ts';
import { FIXTURE_DIR } from '../helpers/fixtures.ts';

const TOKENIZER = join(FIXTURE_DIR, 'clip-tokenizer');

test('two tiny runs give byte-identical model folders that load back', async () => {
  const device = await getDevice();
  const dir = mkdtempSync(join(tmpdir(), 'genalign-demo-model-'));
  try {
    const data = await ensureDemoDataset(join(dir, 'data'), { count: 24, variants: 1 });
    const tokenizer = ClipTokenizer.load(TOKENIZER);
    const reports: DemoModelReport[] = [];
    for (const name of ['a', 'b']) {
      const m = await pretrainDemoModel({ dataDir: data.dir, tokenizer, device, steps: 3, batch: 8, lr: 2e-3, warmup: 1, seed: 0, valFraction: 0.25, splitSeed: 0 });
      try {
        reports.push(m.report);
        await saveClipModel(join(dir, name), { vision: m.vision, text: m.text, logitScale: m.logitScale, tokenizerDir: TOKENIZER, extraFiles: { 'report.json': JSON.stringify(m.report) } });
      } finally {
        m.vision.dispose();
        m.text.dispose();
      }
    }
    for (const f of ['model.safetensors', 'config.json', 'report.json']) {
      assert.ok(readFileSync(join(dir, 'a', f)).equals(readFileSync(join(dir, 'b', f))), `${f} is the same in both runs`);
    }
    const r = reports[0];
    assert.equal(r.steps, 3);
    assert.equal(r.train.n + r.heldOut.n, 24);
    assert.ok(r.heldOut.n > 0 && r.train.n >= 8);
    assert.ok(Number.isFinite(r.firstLoss) && Number.isFinite(r.lastLoss));
    assert.ok(r.train.zeroshot !== null && r.heldOut.zeroshot !== null, 'the demo data has labels, so zero-shot is measured');
    for (const s of [r.train, r.heldOut]) for (const v of [s.i2t_r1, s.i2t_r5, s.t2i_r1, s.t2i_r5]) assert.ok(v >= 0 && v <= 1);
    const clip = loadClip(join(dir, 'a'), device);
    assert.equal([clip.text.cfg.vocabSize, clip.text.cfg.bosTokenId, clip.text.cfg.eosTokenId], [1118, 1116, 1117]);
    clip.vision.model.dispose();
    clip.text.dispose();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a batch larger than the training split is refused with a clear error', async () => {
  const device = await getDevice();
  const dir = mkdtempSync(join(tmpdir(), 'genalign-demo-model-'));
  try {
    const data = await ensureDemoDataset(join(dir, 'data'), { count: 8, variants: 1 });
    const tokenizer = ClipTokenizer.load(TOKENIZER);
    try {
      await pretrainDemoModel({ dataDir: data.dir, tokenizer, device, steps: 1, batch: 64, lr: 1e-3, warmup: 0, seed: 0, valFraction: 0.25, splitSeed: 0 });
      assert.unreachable('expected an error');
    } catch (e) {
      assert.match((e as Error).message, /training pairs, fewer than a batch of 64/);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
