// What the text-using commands (embed --texts, zeroshot, eval's retrieval) share on the command
// line: the --tokenizer flag and reading a text file (src/train/text-tower.ts loads the tower).
import { readFileSync } from 'node:fs';
import { UsageError, type FlagSpec } from './args.ts';

export const TOKENIZER_FLAG: FlagSpec = {
  name: 'tokenizer',
  type: 'string',
  help: 'folder with the tokenizer files (vocab.json + merges.txt, or tokenizer.json); default: the --model directory',
};

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

