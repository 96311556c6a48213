// The frozen CLIP text tower with its tokenizer, as the caption-using code loads it (eval's
// retrieval, the trainer's final eval, embed --texts, zeroshot). A checkpoint directory carries
// its own tokenizer files (vocab.json + merges.txt, or tokenizer.json; see docs/data-format.md);
// a preset name has none, so a tokenizer folder is named explicitly (--tokenizer), and the preset's
// random text tower takes that tokenizer's special-token ids. Errors name the flag, the folder
// and what to pass instead.
import { hasTextTower, isModelDir, loadTextModel } from '../io/hf-checkpoint.ts';
import type { Device } from '../gpu/device.ts';
import type { DType } from '../tensor/tensor.ts';
import type { ClipTextModel } from '../nn/text.ts';
import { ClipTokenizer } from '../io/tokenizer.ts';

/** The tokenizer for `--model spec`: --tokenizer when given, else the model directory's files. */
export function loadTokenizerFor(command: string, modelSpec: string, tokenizerDir: string | undefined): ClipTokenizer {
  const dir = tokenizerDir ?? (isModelDir(modelSpec) ? modelSpec : null);
  if (dir === null) {
    throw new Error(`${command}: --model ${modelSpec} is a preset with random weights and no tokenizer files; pass --tokenizer DIR (a folder with vocab.json + merges.txt or tokenizer.json)`);
  }
  try {
    return ClipTokenizer.load(dir);
  } catch (e) {
    throw new Error(`${command}: ${(e as Error).message}${tokenizerDir ? '' : ' (or pass --tokenizer DIR with the tokenizer files)'}`);
  }
}

/**
 * A tokenizer that belongs to another model is refused by name: ids beyond the text tower's
 * vocabulary, or an end-of-text id other than the one the tower pools at (HF pools at the first
 * eos_token_id; configs with the legacy eos_token_id 2 pool at the largest id instead).
 */
export function checkTokenizerFits(command: string, tokenizer: ClipTokenizer, text: { vocabSize: number; eosTokenId: number }, model: string, tokenizerDir: string | undefined): void {
  const textVocab = text.vocabSize;
  if (text.eosTokenId !== 2 && tokenizer.eosId !== text.eosTokenId) {
    throw new Error(
      `${command}: the tokenizer (${tokenizerDir ? `--tokenizer ${tokenizerDir}` : `the files of --model ${model}`}) ends texts with id ${tokenizer.eosId} but the text tower of --model ${model} pools at eos_token_id ${text.eosTokenId}; ` +
        'they belong to different models: use the tokenizer saved with the checkpoint',
    );
  }
  if (tokenizer.vocabSize > textVocab) {
    throw new Error(
      `${command}: the tokenizer (${tokenizerDir ? `--tokenizer ${tokenizerDir}` : `the files of --model ${model}`}) has ${tokenizer.vocabSize} tokens but the text tower of --model ${model} has vocab_size ${textVocab}; ` +
        'they belong to different models: use the tokenizer saved with the checkpoint',
    );
  }
}

/** The frozen text tower and its tokenizer for eval-style commands, or null when there is none. */
export interface TextTower {
  model: ClipTextModel;
  tokenizer: ClipTokenizer;
  name: string;
}

/**
 * The text tower `--model` brings (a checkpoint directory with text_model.* weights; a preset
 * only with --tokenizer), loaded with its tokenizer, or null (with a log line saying why) when
 * there is none. A checkpoint with a text tower but no tokenizer files gives null and the hint.
 */
export function textTowerFor(command: string, modelSpec: string, tokenizerDir: string | undefined, device: Device, seed: number, dtype: DType, log: (l: string) => void): TextTower | null {
  const isDir = isModelDir(modelSpec);
  if (isDir && !hasTextTower(modelSpec)) {
    if (tokenizerDir) throw new Error(`${command}: --tokenizer given, but --model ${modelSpec} has no text tower (no text_model.* weights); caption measures need a CLIPModel checkpoint`);
    log(`${command}: no caption measures: --model ${modelSpec} has no text tower (a CLIPModel checkpoint has one)`);
    return null;
  }
  if (!isDir && !tokenizerDir) {
    log(`${command}: no caption measures: --model ${modelSpec} is a preset without tokenizer files; pass --tokenizer DIR to measure with its random text tower`);
    return null;
  }
  let tokenizer: ClipTokenizer;
  try {
    tokenizer = loadTokenizerFor(command, modelSpec, tokenizerDir);
  } catch (e) {
    if (tokenizerDir) throw e;
    log(`warning: ${command}: no caption measures: ${(e as Error).message}`);
    return null;
  }
  const text = loadTextModel(modelSpec, device, seed, dtype, tokenizer);
  try {
    checkTokenizerFits(command, tokenizer, text.model.cfg, modelSpec, tokenizerDir);
  } catch (e) {
    text.model.dispose();
    throw e;
  }
  return { model: text.model, tokenizer, name: `--model ${modelSpec}` };
}
