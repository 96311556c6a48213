// What the text-using commands (embed --texts, zeroshot, probe's report, eval's retrieval) share:
// where the tokenizer comes from. A checkpoint directory carries its own tokenizer files
// (vocab.json + merges.txt, or tokenizer.json; see docs/data-format.md); a preset name has none,
// so --tokenizer names a folder that does.
import { readFileSync } from 'node:fs';
import { isModelDir } from '../io/hf-checkpoint.ts';
import { ClipTokenizer } from '../io/tokenizer.ts';
import { UsageError, type FlagSpec } from './args.ts';

export const TOKENIZER_FLAG: FlagSpec = {
  name: 'tokenizer',
  type: 'string',
  help: 'folder with the tokenizer files (vocab.json + merges.txt, or tokenizer.json); default: the --model directory',
};

/** The tokenizer for `--model spec`: --tokenizer when given, else the model directory's files. */
export function loadTokenizerFor(command: string, modelSpec: string, tokenizerDir: string | undefined): ClipTokenizer {
  const dir = tokenizerDir ?? (isModelDir(modelSpec) ? modelSpec : null);
  if (dir === null) {
    throw new UsageError(`${command}: --model ${modelSpec} is a preset with random weights and no tokenizer files; pass --tokenizer DIR (a folder with vocab.json + merges.txt or tokenizer.json)`);
  }
  try {
    return ClipTokenizer.load(dir);
  } catch (e) {
    throw new UsageError(`${command}: ${(e as Error).message}${tokenizerDir ? '' : ' (or pass --tokenizer DIR with the tokenizer files)'}`);
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
    throw new UsageError(
      `${command}: the tokenizer (${tokenizerDir ? `--tokenizer ${tokenizerDir}` : `the files of --model ${model}`}) ends texts with id ${tokenizer.eosId} but the text tower of --model ${model} pools at eos_token_id ${text.eosTokenId}; ` +
        'they belong to different models: use the tokenizer saved with the checkpoint',
    );
  }
  if (tokenizer.vocabSize > textVocab) {
    throw new UsageError(
      `${command}: the tokenizer (${tokenizerDir ? `--tokenizer ${tokenizerDir}` : `the files of --model ${model}`}) has ${tokenizer.vocabSize} tokens but the text tower of --model ${model} has vocab_size ${textVocab}; ` +
        'they belong to different models: use the tokenizer saved with the checkpoint',
    );
  }
}

/**
 * Texts of a UTF-8 file, one per line ("\n" or "\r\n"); blank lines are skipped and counted.
 * Invalid UTF-8 is an error naming the file and the line.
 */
export function readTextLines(command: string, flag: string, path: string): { texts: string[]; blank: number } {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (e) {
    throw new UsageError(`${command}: cannot read ${flag} ${path}: ${(e as Error).message}`);
  }
  const lines = bytes.toString('binary').split('\n');
  const decoder = new TextDecoder('utf-8', { fatal: true });
  const texts: string[] = [];
  let blank = 0;
  lines.forEach((raw, i) => {
    let line: string;
    try {
      line = decoder.decode(Buffer.from(raw, 'binary'));
    } catch {
      throw new UsageError(`${command}: ${flag} ${path}:${i + 1} is not valid UTF-8; save the file as UTF-8`);
    }
    if (line.endsWith('\r')) line = line.slice(0, -1);
    if (i === 0 && line.startsWith('\ufeff')) line = line.slice(1);
    if (line.trim() === '') {
      if (i < lines.length - 1 || raw !== '') blank++;
      return;
    }
    texts.push(line);
  });
  return { texts, blank };
}
