// Checks that a CLIPModel folder written by genalign loads in Hugging Face transformers and gives
// genalign's embeddings (needs a Python with transformers; dev check, not part of npm test):
//
//   node --import tsx scripts/check-hf-save.ts [MODEL_DIR]      (PYTHON=/opt/hfenv/bin/python by default)
//
// Without MODEL_DIR it saves a random CLIP (the tiny preset's towers, the test tokenizer's
// vocabulary) with saveClipModel into a temporary folder first. genalign loads the folder with
// loadClip and embeds fixed pixels and captions (tokenized by genalign); scripts/check_hf_save.py
// loads it with CLIPModel.from_pretrained, CLIPTokenizer and CLIPImageProcessor and compares:
// image and text embeddings within 1e-5, logit_scale, token ids and the preprocessor's crop.
// Prints the differences and exits 1 when one is off.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { getDevice } from '../src/gpu/device.ts';
import { loadClip } from '../src/io/hf-checkpoint.ts';
import { saveClipModel } from '../src/io/hf-save.ts';
import { writeSafetensors } from '../src/io/safetensors.ts';
import { ClipTokenizer } from '../src/io/tokenizer.ts';
import { NAMED_CONFIGS, NAMED_TEXT_CONFIGS } from '../src/nn/config.ts';
import { ClipTextModel } from '../src/nn/text.ts';
import { ClipVisionModel } from '../src/nn/vit.ts';
import { mulberry32, randomNormal } from '../src/nn/init.ts';
import { noGrad } from '../src/tensor/autograd.ts';
import { fromArray } from '../src/tensor/tensor.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const CAPTIONS = ['a photo of a circle.', 'a large red square and a small blue ring on green and white stripes', 'triangle', 'a bar'];

async function main(): Promise<void> {
  const device = await getDevice();
  const scratch = mkdtempSync(join(tmpdir(), 'genalign-check-hf-save-'));
  try {
    let dir = process.argv[2];
    if (!dir) {
      dir = join(scratch, 'model');
      const tokDir = join(ROOT, 'test', 'fixtures', 'clip-tokenizer');
      const tok = ClipTokenizer.load(tokDir);
      const vision = ClipVisionModel.random(NAMED_CONFIGS.tiny, 11, device);
      const text = ClipTextModel.random({ ...NAMED_TEXT_CONFIGS.tiny, vocabSize: tok.vocabSize, bosTokenId: tok.bosId, eosTokenId: tok.eosId, padTokenId: tok.padId }, 12, device);
      await saveClipModel(dir, { vision, text, logitScale: 3.1, tokenizerDir: tokDir });
      vision.dispose();
      text.dispose();
    }
    const clip = loadClip(dir, device);
    const tok = ClipTokenizer.load(dir);
    const S = clip.vision.model.cfg.imageSize;
    const pixels = randomNormal(CAPTIONS.length * 3 * S * S, 1, mulberry32(5));
    const ids = CAPTIONS.map((c) => tok.encode(c, { padding: true }).ids);
    const px = fromArray(pixels, [CAPTIONS.length, 3, S, S], device);
    const [img, txt] = noGrad(() => [clip.vision.model.forward(px), clip.text.forward(ids)]);
    const ref = join(scratch, 'genalign.safetensors');
    writeSafetensors(ref, {
      pixels: { shape: [CAPTIONS.length, 3, S, S], data: pixels },
      ids: { shape: [ids.length, ids[0].length], data: Float32Array.from(ids.flat()) },
      image_embeds: { shape: img.shape, data: await img.read() },
      text_embeds: { shape: txt.shape, data: await txt.read() },
      logit_scale: { shape: [], data: new Float32Array([clip.logitScale]) },
    }, { captions: JSON.stringify(CAPTIONS) });
    for (const t of [px, img, txt]) t.dispose();
    clip.vision.model.dispose();
    clip.text.dispose();
    const python = process.env.PYTHON ?? '/opt/hfenv/bin/python';
    const r = spawnSync(python, [join(ROOT, 'scripts', 'check_hf_save.py'), dir, ref], { stdio: 'inherit' });
    if (r.error) throw new Error(`could not run ${python}: ${r.error.message} (set PYTHON to a Python with transformers)`);
    process.exitCode = r.status ?? 1;
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

await main();
