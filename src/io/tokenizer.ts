// CLIP's tokenizer read from a checkpoint folder on disk: tokenizer.json (HF tokenizers format)
// when present, else vocab.json + merges.txt; tokenizer_config.json and special_tokens_map.json
// when present. The tokenizer itself (and the reading rules) is io/tokenizer-core.ts.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { readRegularTextFile } from '../platform/regular-file.ts';
import { ClipTokenizer as CoreTokenizer, tokenizerData, type TokenizerData, type TokenizerFiles } from './tokenizer-core.ts';

export * from './tokenizer-core.ts';

/** A checkpoint folder's files as TokenizerFiles. */
export function folderFiles(dir: string): TokenizerFiles {
  return { path: (name) => join(dir, name), exists: (name) => existsSync(join(dir, name)), read: (name, expected) => readRegularTextFile(join(dir, name), expected) };
}

/** The files of a checkpoint folder's tokenizer, checked; tokenizer.json wins over vocab.json + merges.txt, as in HF. */
export function readTokenizerFiles(dir: string, opts: { maxLength?: number } = {}): TokenizerData {
  return tokenizerData(folderFiles(dir), dir, opts);
}

export class ClipTokenizer extends CoreTokenizer {
  /** Reads the tokenizer of a checkpoint folder (see io/tokenizer-core.ts); errors name the file and what to supply. */
  static load(dir: string, opts: { maxLength?: number } = {}): ClipTokenizer {
    return new ClipTokenizer(readTokenizerFiles(dir, opts));
  }
}
