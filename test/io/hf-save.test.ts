// Saving a CLIP model as an HF CLIPModel folder: loadClip reads back identical embeddings (also of
// a model trained in full, whose patch embedding is held as a matrix), the folder has HF's
// config, preprocessor and tokenizer files, and a failed save leaves nothing half-written.
// (That transformers' CLIPModel.from_pretrained loads the folder too is checked by
// scripts/check-hf-save.py, which needs transformers.)
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getDevice } from '../../src/gpu/device.ts';
import { loadClip, modelPreprocessing } from '../../src/io/hf-checkpoint.ts';
import { saveClipModel, TOKENIZER_FILES } from '../../src/io/hf-save.ts';
import { ClipTokenizer } from '../../src/io/tokenizer.ts';
import { ClipVisionModel } from '../../src/nn/vit.ts';
import { ClipTextModel } from '../../src/nn/text.ts';
import { NAMED_CONFIGS, NAMED_TEXT_CONFIGS } from '../../src/nn/config.ts';
import { ClipPretrainer } from '../../src/train/clip-pretrain.ts';
import { noGrad } from '../../src/tensor/autograd.ts';
import { fromArray } from '../../src/tensor/tensor.ts';
import type { Device } from '../../src/gpu/device.ts';
import { FIXTURE_DIR, exactNormal } from '../helpers/fixtures.ts';
import { FaultyFiles } from '../helpers/faulty-files.ts';

const TOKENIZER = join(FIXTURE_DIR, 'clip-tokenizer');
const TEXT_CFG = { ...NAMED_TEXT_CONFIGS.tiny, vocabSize: 1118, bosTokenId: 1116, eosTokenId: 1117, padTokenId: 1117 };

async function rejects(fn: () => Promise<unknown>, re: RegExp): Promise<void> {
  try {
    await fn();
  } catch (e) {
    assert.match((e as Error).message, re);
    return;
  }
  assert.unreachable(`expected an error matching ${re}`);
}

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'genalign-save-'));
}

/** Image and text embeddings of both towers on fixed inputs. */
async function embeddings(vision: ClipVisionModel, text: ClipTextModel, ids: number[][]): Promise<[Float32Array, Float32Array]> {
  const S = vision.cfg.imageSize;
  const pixels = fromArray(exactNormal(2 * 3 * S * S, 4400), [2, 3, S, S], vision.device);
  const [img, txt] = noGrad(() => [vision.forward(pixels), text.forward(ids)]);
  try {
    return [await img.read(), await txt.read()];
  } finally {
    pixels.dispose();
    img.dispose();
    txt.dispose();
  }
}

function randomClip(device: Device): { vision: ClipVisionModel; text: ClipTextModel } {
  return { vision: ClipVisionModel.random(NAMED_CONFIGS.tiny, 3, device), text: ClipTextModel.random(TEXT_CFG, 4, device) };
}

test('save → loadClip: identical embeddings and logit_scale; HF config, preprocessor and tokenizer files', async () => {
  const device = await getDevice();
  const dir = tmp();
  const { vision, text } = randomClip(device);
  const out = join(dir, 'model');
  try {
    const tok = ClipTokenizer.load(TOKENIZER);
    const ids = [tok.encode('a photo of a red circle', { padding: true, maxLength: 12 }).ids, tok.encode('a blue square', { padding: true, maxLength: 12 }).ids];
    const want = await embeddings(vision, text, ids);
    await saveClipModel(out, { vision, text, logitScale: 3.25, tokenizerDir: TOKENIZER });
    assert.equal(readdirSync(out).sort(), ['config.json', 'model.safetensors', 'preprocessor_config.json', ...TOKENIZER_FILES].sort());
    assert.equal(readdirSync(dir), ['model'], 'no temporary folder is left');
    const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    assert.equal(config.architectures, ['CLIPModel']);
    assert.equal(config.projection_dim, 32);
    assert.equal([config.text_config.vocab_size, config.text_config.bos_token_id, config.text_config.eos_token_id], [1118, 1116, 1117]);
    const loaded = loadClip(out, device);
    try {
      assert.equal(loaded.logitScale, 3.25);
      assert.equal(modelPreprocessing(loaded.vision).cropWidth, NAMED_CONFIGS.tiny.imageSize);
      const got = await embeddings(loaded.vision.model, loaded.text, ids);
      assert.equal(got[0], want[0], 'image embeddings');
      assert.equal(got[1], want[1], 'text embeddings');
      assert.equal(ClipTokenizer.load(out).encode('a red circle').ids, tok.encode('a red circle').ids, 'the copied tokenizer');
    } finally {
      loaded.vision.model.dispose();
      loaded.text.dispose();
    }
  } finally {
    vision.dispose();
    text.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a model trained in full saves and reloads to the same embeddings; saving again replaces the folder', async () => {
  const device = await getDevice();
  const dir = tmp();
  const { vision, text } = randomClip(device);
  const pre = new ClipPretrainer(vision, text, { lr: 1e-3, totalSteps: 2 });
  const out = join(dir, 'model');
  const pixels = fromArray(exactNormal(4 * 3 * 32 * 32, 4500), [4, 3, 32, 32], device);
  try {
    const ids = [[1116, 5, 6, 1117], [1116, 7, 1117, 1117], [1116, 8, 9, 1117], [1116, 10, 1117, 1117]];
    await saveClipModel(out, { vision, text, logitScale: await pre.logitScale.item(), tokenizerDir: TOKENIZER });
    await pre.step(pixels, ids);
    const want = await embeddings(vision, text, ids);
    const scale = await pre.logitScale.item();
    await saveClipModel(out, { vision, text, logitScale: scale, tokenizerDir: TOKENIZER });
    assert.equal(readdirSync(dir), ['model']);
    const loaded = loadClip(out, device);
    try {
      assert.equal(loaded.logitScale, scale);
      const got = await embeddings(loaded.vision.model, loaded.text, ids);
      assert.equal(got[0], want[0]);
      assert.equal(got[1], want[1]);
    } finally {
      loaded.vision.model.dispose();
      loaded.text.dispose();
    }
  } finally {
    pixels.dispose();
    pre.dispose();
    vision.dispose();
    text.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('unwritable output: a clear error, nothing half-written, the previous folder kept', async () => {
  const device = await getDevice();
  const dir = tmp();
  const { vision, text } = randomClip(device);
  try {
    // Under a file: refused before anything is written.
    writeFileSync(join(dir, 'afile'), 'x');
    await rejects(() => saveClipModel(join(dir, 'afile', 'model'), { vision, text, logitScale: 1, tokenizerDir: TOKENIZER }), /Cannot save the CLIP model to .*afile.*is a file/);
    assert.equal(readdirSync(dir), ['afile']);

    // A disk that fills up at each step of the save: the old folder stays whole, no temporary is left.
    const out = join(dir, 'model');
    await saveClipModel(out, { vision, text, logitScale: 1, tokenizerDir: TOKENIZER });
    const before = readFileSync(join(out, 'model.safetensors'));
    const count = new FaultyFiles();
    await saveClipModel(out, { vision, text, logitScale: 2, tokenizerDir: TOKENIZER, files: count });
    for (let at = 1; at <= count.ops.length; at++) {
      await saveClipModel(out, { vision, text, logitScale: 1, tokenizerDir: TOKENIZER });
      const files = new FaultyFiles({ at, mode: 'enospc' });
      let failed = false;
      try {
        await saveClipModel(out, { vision, text, logitScale: 2, tokenizerDir: TOKENIZER, files });
      } catch (e) {
        failed = true;
        if (!/Could not save the CLIP model to .*model.*no space left/.test((e as Error).message)) throw e;
      }
      const entries = readdirSync(dir).sort();
      if (failed) {
        assert.equal(entries, ['afile', 'model'], `fault at op ${at} (${files.failed?.op} ${files.failed?.path}): nothing else left`);
        assert.ok(readFileSync(join(out, 'model.safetensors')).equals(before), `fault at op ${at}: the previous model is intact`);
      } else {
        // A fault in the final clean-up of the old folder: the new model is in place (the next save removes the rest of .model.old).
        assert.ok(existsSync(join(out, 'config.json')));
        assert.equal(files.failed?.path.includes('.model.old'), true, `fault at op ${at} was in the clean-up`);
      }
    }
  } finally {
    vision.dispose();
    text.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
