// The CLIP tokenizer against Hugging Face's CLIPTokenizerFast: exact ids on the committed corpus
// (test/fixtures/tokenizer-expected.json, from scripts/fixtures/tokenizer_fixture.py), read from
// tokenizer.json and from vocab.json + merges.txt; truncation, padding, decoding, unknown
// symbols, and the errors for missing or broken files.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FIXTURE_DIR } from '../helpers/fixtures.ts';
import { ClipTokenizer, bytesToUnicode, preTokenize } from '../../src/io/tokenizer.ts';

interface Case {
  text: string;
  ids: number[];
  ids_77: number[];
  ids_16_padded: number[];
  attention_mask_16: number[];
  decoded: string;
  decoded_skip_special: string;
}
interface Expected {
  vocab_size: number;
  cases: Case[];
  unknown_symbols: { dropped: string[]; cases: Array<{ text: string; ids: number[] }> };
}

const HF_DIR = join(FIXTURE_DIR, 'clip-tokenizer');
const expected = JSON.parse(readFileSync(join(FIXTURE_DIR, 'tokenizer-expected.json'), 'utf8')) as Expected;
const corpus = (JSON.parse(readFileSync(join(FIXTURE_DIR, 'tokenizer-corpus.json'), 'utf8')) as { texts: string[] }).texts;
const tmp = mkdtempSync(join(tmpdir(), 'genalign-tok-'));
test.after(() => rmSync(tmp, { recursive: true, force: true }));

/** A folder holding copies of the named fixture files (and `extra` files written as given). */
function folder(name: string, files: string[], extra: Record<string, string> = {}): string {
  const dir = join(tmp, name);
  mkdirSync(dir, { recursive: true });
  for (const f of files) copyFileSync(join(HF_DIR, f), join(dir, f));
  for (const [f, text] of Object.entries(extra)) writeFileSync(join(dir, f), text);
  return dir;
}

const fromJson = ClipTokenizer.load(folder('json', ['tokenizer.json', 'tokenizer_config.json']));
const fromVocab = ClipTokenizer.load(folder('vocab', ['vocab.json', 'merges.txt']));

/** "text": first index where two id lists differ, for a readable failure. */
function firstDifference(got: number[], want: number[]): string {
  let i = 0;
  while (i < got.length && got[i] === want[i]) i++;
  return `differs at ${i}: got [${got.slice(i, i + 6).join(', ')}…] want [${want.slice(i, i + 6).join(', ')}…] (lengths ${got.length}, ${want.length})`;
}

test('the fixture covers the whole committed corpus, including text longer than 77 tokens', () => {
  assert.equal(expected.cases.map((c) => c.text), corpus);
  assert.ok(expected.cases.some((c) => c.ids.length > 77));
  assert.ok(expected.cases.some((c) => c.text === ''));
});

for (const [name, tok] of [['tokenizer.json', fromJson], ['vocab.json + merges.txt', fromVocab]] as const) {
  test(`${name}: ids equal HF CLIPTokenizerFast's on every corpus text (untruncated and truncated to 77)`, () => {
    assert.is(tok.vocabSize, expected.vocab_size);
    for (const c of expected.cases) {
      const full = tok.encode(c.text, { truncation: false }).ids;
      assert.ok(JSON.stringify(full) === JSON.stringify(c.ids), `${JSON.stringify(c.text)}: ${firstDifference(full, c.ids)}`);
      const cut = tok.encode(c.text).ids;
      assert.ok(JSON.stringify(cut) === JSON.stringify(c.ids_77), `${JSON.stringify(c.text)} (max 77): ${firstDifference(cut, c.ids_77)}`);
    }
  });
}

test('truncation keeps <|startoftext|> first and <|endoftext|> last, as HF does', () => {
  const long = expected.cases.filter((c) => c.ids.length > 77);
  assert.ok(long.length >= 2);
  for (const c of long) {
    const { ids, attentionMask } = fromJson.encode(c.text);
    assert.is(ids.length, 77);
    assert.is(ids[0], fromJson.bosId);
    assert.is(ids[76], fromJson.eosId);
    assert.equal(ids.slice(0, 76), c.ids.slice(0, 76));
    assert.ok(attentionMask.every((m) => m === 1));
  }
  // A smaller limit given per call, and the default limit from tokenizer_config.json.
  assert.is(fromJson.maxLength, 77);
  assert.equal(fromJson.encode('two blue squares and a green triangle', { maxLength: 4 }).ids, [fromJson.bosId, ...fromJson.tokenIds('two blue')].slice(0, 3).concat(fromJson.eosId));
  assert.throws(() => fromJson.encode('x', { maxLength: 1 }), /maxLength must be an integer ≥ 2/);
});

test('padding to max length with the pad token (<|endoftext|>) and its attention mask equal HF padding="max_length"', () => {
  assert.is(fromJson.padId, fromJson.eosId);
  for (const c of expected.cases) {
    const { ids, attentionMask } = fromVocab.encode(c.text, { maxLength: 16, padding: true });
    assert.equal(ids, c.ids_16_padded, JSON.stringify(c.text));
    assert.equal(attentionMask, c.attention_mask_16, JSON.stringify(c.text));
  }
});

test('decode gives HF decode, with and without special tokens', () => {
  for (const c of expected.cases) {
    assert.is(fromJson.decode(c.ids), c.decoded, JSON.stringify(c.text));
    assert.is(fromVocab.decode(c.ids, { skipSpecialTokens: true }), c.decoded_skip_special, JSON.stringify(c.text));
  }
  assert.throws(() => fromJson.decode([expected.vocab_size]), /id 1118 is not in the vocabulary \(ids run from 0 to 1117\)/);
});

test('decode round trip on lower-case ASCII words', () => {
  const text = 'a picture of three small red circles in the middle and the quick brown fox';
  assert.is(fromJson.decode(fromJson.encode(text).ids, { skipSpecialTokens: true }), text);
  assert.is(fromJson.decode(fromJson.encode('Hello World').ids, { skipSpecialTokens: true }), 'hello world');
});

test('an unknown symbol becomes the unk token (one per symbol), as in HF', () => {
  const dir = join(tmp, 'unknown');
  mkdirSync(dir);
  const dropped = new Set(expected.unknown_symbols.dropped);
  const vocab = JSON.parse(readFileSync(join(HF_DIR, 'vocab.json'), 'utf8')) as Record<string, number>;
  for (const t of dropped) delete vocab[t];
  writeFileSync(join(dir, 'vocab.json'), JSON.stringify(vocab));
  const merges = readFileSync(join(HF_DIR, 'merges.txt'), 'utf8').split('\n').filter((l) => !l.split(' ').some((t) => dropped.has(t)));
  writeFileSync(join(dir, 'merges.txt'), merges.join('\n'));
  const tok = ClipTokenizer.load(dir);
  for (const c of expected.unknown_symbols.cases) assert.equal(tok.encode(c.text).ids, c.ids, JSON.stringify(c.text));
});

test('the byte table and the pre-tokeniser', () => {
  const table = bytesToUnicode();
  assert.is(table.length, 256);
  assert.is(new Set(table.map(([, c]) => c)).size, 256);
  assert.equal(table[0], [0x21, '!']);
  assert.equal(table[188], [0, 'Ā']);
  assert.equal(table.find(([b]) => b === 0x20), [0x20, 'Ġ']);
  // NFC, whitespace (NBSP and U+0085 are; U+FEFF is not), per-code-point lowercase, contractions.
  assert.equal(preTokenize("DON'T\u00a0cafe\u0301\u0085ΟΔΟΣ x\ufeffy"), ['don', "'t", 'café', 'οδοσ', 'x', '\ufeff', 'y']);
  assert.equal(preTokenize('<|ENDOFTEXT|>>'), ['<|', 'endoftext', '|>', '>']);
});

/** Asserts loading `dir` fails with a message that starts with `file` and matches `re`. */
function refuses(dir: string, file: string, re: RegExp): void {
  try {
    ClipTokenizer.load(dir);
  } catch (e) {
    const message = (e as Error).message;
    assert.ok(message.startsWith(file), `message should start with ${file}: ${message}`);
    assert.match(message, re);
    return;
  }
  assert.unreachable(`loading ${dir} should fail`);
}

test('missing files: the error names them and says what to supply', () => {
  const none = folder('none', ['tokenizer_config.json']);
  refuses(none, none, /no tokenizer files \(looked for tokenizer\.json, and for vocab\.json with merges\.txt\).*save_pretrained/);
  const noMerges = folder('no-merges', ['vocab.json']);
  refuses(noMerges, join(noMerges, 'merges.txt'), /does not exist; expected the tokenizer's BPE merges/);
  const noVocab = folder('no-vocab', ['merges.txt']);
  refuses(noVocab, join(noVocab, 'vocab.json'), /does not exist; expected the tokenizer's vocabulary/);
});

test('corrupt files: the error names the file and the problem', () => {
  const vocabText = readFileSync(join(HF_DIR, 'vocab.json'), 'utf8');
  const mergesText = readFileSync(join(HF_DIR, 'merges.txt'), 'utf8');
  let d = folder('trunc-vocab', ['merges.txt'], { 'vocab.json': vocabText.slice(0, 100) });
  refuses(d, join(d, 'vocab.json'), /not valid JSON/);
  d = folder('list-vocab', ['merges.txt'], { 'vocab.json': '["a", "b"]' });
  refuses(d, join(d, 'vocab.json'), /must be an object mapping each token to its id/);
  d = folder('bad-id', ['merges.txt'], { 'vocab.json': vocabText.replace('"!": 0', '"!": "zero"') });
  refuses(d, join(d, 'vocab.json'), /the id of "!" is "zero", not a non-negative integer/);
  d = folder('bad-line', ['vocab.json'], { 'merges.txt': mergesText.replace('\n', '\nthree parts here\n') });
  refuses(d, join(d, 'merges.txt'), /line 2: expected two tokens separated by one space, found "three parts here"/);
  d = folder('other-merges', ['vocab.json'], { 'merges.txt': '#version: 0.2\nq z\n' });
  refuses(d, join(d, 'merges.txt'), /merge 1 \("q z"\) uses "qz", which is not in .*vocab\.json: the merges and the vocabulary do not belong together/);
  d = folder('no-eos', ['merges.txt'], { 'vocab.json': vocabText.replace('"<|endoftext|>"', '"<|end|>"') });
  refuses(d, join(d, 'vocab.json'), /the eos token "<\|endoftext\|>" is not in the vocabulary/);
  const jsonText = readFileSync(join(HF_DIR, 'tokenizer.json'), 'utf8');
  d = folder('trunc-json', [], { 'tokenizer.json': jsonText.slice(0, jsonText.length / 2) });
  refuses(d, join(d, 'tokenizer.json'), /not valid JSON \(.*\); expected an HF tokenizers file/);
  const wordPiece = JSON.parse(jsonText);
  wordPiece.model.type = 'WordPiece';
  d = folder('wordpiece', [], { 'tokenizer.json': JSON.stringify(wordPiece) });
  refuses(d, join(d, 'tokenizer.json'), /the model is "WordPiece", not CLIP's byte-level BPE/);
  const otherSplit = JSON.parse(jsonText);
  otherSplit.pre_tokenizer.pretokenizers[0].pattern.Regex = '\\w+';
  d = folder('other-split', [], { 'tokenizer.json': JSON.stringify(otherSplit) });
  refuses(d, join(d, 'tokenizer.json'), /pre_tokenizer splits with "\\\\w\+", not CLIP's pattern/);
  d = folder('bad-config', ['vocab.json', 'merges.txt'], { 'tokenizer_config.json': '{"eos_token": 5}' });
  refuses(d, join(d, 'tokenizer_config.json'), /"eos_token" must be a token string or \{"content": string\}/);
  const dirAsFile = folder('dir-as-file', ['merges.txt']);
  mkdirSync(join(dirAsFile, 'vocab.json'));
  refuses(dirAsFile, join(dirAsFile, 'vocab.json'), /is a directory; expected the tokenizer's vocabulary/);
});

test('merges written as pairs (newer tokenizer.json) and as "left right" strings give the same ids', () => {
  const json = JSON.parse(readFileSync(join(HF_DIR, 'tokenizer.json'), 'utf8'));
  const asPairs = Array.isArray(json.model.merges[0]);
  json.model.merges = json.model.merges.map((m: string | string[]) => (asPairs ? (m as string[]).join(' ') : (m as string).split(' ')));
  const tok = ClipTokenizer.load(folder('other-merges-form', ['tokenizer_config.json'], { 'tokenizer.json': JSON.stringify(json) }));
  for (const c of expected.cases) assert.equal(tok.encode(c.text).ids, c.ids_77, JSON.stringify(c.text));
});

test('special tokens named by special_tokens_map.json (AddedToken objects) and tokenizer_config.json', () => {
  const tok = ClipTokenizer.load(folder('maps', ['vocab.json', 'merges.txt', 'special_tokens_map.json', 'tokenizer_config.json']));
  assert.is(tok.bosId, expected.vocab_size - 2);
  assert.is(tok.eosId, expected.vocab_size - 1);
  assert.is(tok.maxLength, 77);
  for (const c of expected.cases) assert.equal(tok.encode(c.text).ids, c.ids_77, JSON.stringify(c.text));
  // Without tokenizer_config.json there is no model_max_length: CLIP's 77; a load option overrides it.
  assert.is(fromVocab.maxLength, 77);
  assert.is(ClipTokenizer.load(join(tmp, 'vocab'), { maxLength: 32 }).maxLength, 32);
});

test.run();
