// Compares genalign's CLIP tokenizer with Hugging Face's ids written by
// scripts/fixtures/tokenizer_fixture.py or scripts/fixtures/tokenizer_real_clip.py:
//
//   npx tsx scripts/check-tokenizer.ts TOKENIZER_DIR EXPECTED.json
//
// Checks every case's untruncated ids, ids truncated to 77, ids padded/truncated to 16 with
// their attention mask, and both decodes; prints the first few differences and exits 1 on any.
import { readFileSync } from 'node:fs';
import { ClipTokenizer } from '../src/io/tokenizer.ts';

interface Case {
  text: string;
  ids: number[];
  ids_77: number[];
  ids_16_padded: number[];
  attention_mask_16: number[];
  decoded: string;
  decoded_skip_special: string;
}

const [dir, expectedFile] = process.argv.slice(2);
if (!dir || !expectedFile) {
  console.error('usage: npx tsx scripts/check-tokenizer.ts TOKENIZER_DIR EXPECTED.json');
  process.exit(2);
}
const tok = ClipTokenizer.load(dir);
const cases = (JSON.parse(readFileSync(expectedFile, 'utf8')) as { cases: Case[] }).cases;
const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);
const failures: string[] = [];
const start = performance.now();
for (const c of cases) {
  const padded = tok.encode(c.text, { maxLength: 16, padding: true });
  const checks: Array<[string, unknown, unknown]> = [
    ['ids', tok.encode(c.text, { truncation: false }).ids, c.ids],
    ['ids_77', tok.encode(c.text).ids, c.ids_77],
    ['ids_16_padded', padded.ids, c.ids_16_padded],
    ['attention_mask_16', padded.attentionMask, c.attention_mask_16],
    ['decoded', tok.decode(c.ids), c.decoded],
    ['decoded_skip_special', tok.decode(c.ids, { skipSpecialTokens: true }), c.decoded_skip_special],
  ];
  for (const [what, got, want] of checks) if (!same(got, want)) failures.push(`${JSON.stringify(c.text)} ${what}:\n  got  ${JSON.stringify(got)}\n  want ${JSON.stringify(want)}`);
}
const ms = performance.now() - start;
console.log(`${dir}: ${cases.length} texts, ${failures.length} differences from HF (${ms.toFixed(0)} ms)`);
for (const f of failures.slice(0, 10)) console.log(f);
process.exit(failures.length ? 1 : 0);
