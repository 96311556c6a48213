// CLIP's byte-level BPE tokenizer, giving the ids of Hugging Face's CLIPTokenizerFast. This file
// holds no file access (the browser bundle uses it as is); io/tokenizer.ts reads a folder.
//
// Read from a checkpoint folder: tokenizer.json (HF tokenizers format) when present, else
// vocab.json + merges.txt (the CLIPTokenizer layout); tokenizer_config.json and
// special_tokens_map.json, when present, name the special tokens and model_max_length.
//
// encode(text) follows HF's pipeline step by step:
//   1. special tokens (<|startoftext|>, <|endoftext|>, ...) written in the text are cut out of
//      the raw text first and become their own ids; the pieces between them go on alone;
//   2. normalise each piece: NFC, every run of Unicode whitespace → one space, lowercase one
//      code point at a time (so a final Σ becomes σ, as Rust's char::to_lowercase gives);
//   3. split it into words with CLIP's pattern, dropping the whitespace between matches, then
//      split each word again with GPT-2's byte-level pattern (this only changes a word that is
//      a special token's text in other letters, e.g. "<|ENDOFTEXT|>" lowercased: it becomes
//      "<|", "endoftext", "|>");
//   4. map each word's UTF-8 bytes to GPT-2's printable characters (bytesToUnicode), append
//      "</w>" to the last one, look each symbol up (missing → the unk token, one per symbol),
//      and merge adjacent pairs, lowest merge rank first, leftmost first on a tie;
//   5. truncate to maxLength − 2 tokens, put <|startoftext|> before and <|endoftext|> after,
//      and optionally pad with the pad token (CLIP's is <|endoftext|>) up to maxLength.
// "Whitespace" is Unicode's White_Space property, which is what the \s of HF's regex engine
// (Oniguruma) matches: U+0085 and U+00A0 are whitespace, U+FEFF and U+200B are not. JavaScript's
// own \s differs on U+0085 and U+FEFF, so it is not used.

/**
 * Where a tokenizer's files come from: a checkpoint folder on disk (io/tokenizer.ts) or fetched
 * texts (the browser bundle). `path` names a file in messages; `read` returns its text.
 */
export interface TokenizerFiles {
  path(name: string): string;
  exists(name: string): boolean;
  read(name: string, expected: string): string;
}

export const DEFAULT_BOS = '<|startoftext|>';
export const DEFAULT_EOS = '<|endoftext|>';
/** CLIP's text context: max_position_embeddings of every published CLIP text model. */
export const DEFAULT_MAX_LENGTH = 77;
const END_OF_WORD = '</w>';
const WORD_CACHE_LIMIT = 100_000;

const WS = '\\p{White_Space}';
/** HF CLIPTokenizer's split pattern; whatever it does not match is whitespace and is dropped. */
const CLIP_PATTERN = "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+";
const CLIP_SPLIT = new RegExp(CLIP_PATTERN.replaceAll('\\s', WS), 'gu');
/** GPT-2's pattern, applied by the ByteLevel pre-tokenizer to each word CLIP_SPLIT made. */
const BYTE_LEVEL_SPLIT = new RegExp(`'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^${WS}\\p{L}\\p{N}]+|[${WS}]+(?![^${WS}])|[${WS}]+`, 'gu');
const WHITESPACE_RUN = new RegExp(`[${WS}]+`, 'gu');
/** What Python's str.strip() removes (HF's decode strips its result). */
const PY_SPACE = '\\t\\n\\v\\f\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const PY_STRIP = new RegExp(`^[${PY_SPACE}]+|[${PY_SPACE}]+$`, 'gu');

/**
 * GPT-2's reversible map from the 256 byte values to printable characters: bytes that are
 * printable Latin-1 ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves, the other 68 take
 * U+0100 onwards in byte order. Returned in CLIP's vocabulary order (printable bytes first).
 */
export function bytesToUnicode(): Array<[byte: number, char: string]> {
  const printable: number[] = [];
  for (const [lo, hi] of [[0x21, 0x7e], [0xa1, 0xac], [0xae, 0xff]]) for (let b = lo; b <= hi; b++) printable.push(b);
  const table: Array<[number, string]> = printable.map((b) => [b, String.fromCodePoint(b)]);
  let extra = 0;
  for (let b = 0; b < 256; b++) if (!printable.includes(b)) table.push([b, String.fromCodePoint(256 + extra++)]);
  return table;
}

const BYTE_TO_CHAR: string[] = [];
const CHAR_TO_BYTE = new Map<string, number>();
for (const [b, c] of bytesToUnicode()) {
  BYTE_TO_CHAR[b] = c;
  CHAR_TO_BYTE.set(c, b);
}

export interface EncodeOptions {
  /** Length limit including <|startoftext|> and <|endoftext|>; default: the tokenizer's maxLength. */
  maxLength?: number;
  /** Cut the text's tokens so the result fits maxLength, keeping <|endoftext|> last (HF truncation=True). Default true. */
  truncation?: boolean;
  /** Pad with the pad token up to maxLength (HF padding="max_length"). Default false. */
  padding?: boolean;
}

export interface Encoding {
  ids: number[];
  /** 1 for every token of the text (and its two markers), 0 for padding. */
  attentionMask: number[];
}

export interface DecodeOptions {
  /** Leave out special tokens (<|startoftext|>, <|endoftext|>, padding). Default false. */
  skipSpecialTokens?: boolean;
}

/** The special tokens by role, as token strings. */
export interface SpecialTokens {
  bos: string;
  eos: string;
  pad: string;
  unk: string;
}

/** Everything a ClipTokenizer is built from; `source` names the file(s) for errors. */
export interface TokenizerData {
  vocab: Map<string, number>;
  merges: Array<[string, string]>;
  /** Tokens matched whole in the raw text (HF's added tokens), with their ids and whether decode may skip them. */
  addedTokens: Array<{ content: string; id: number; special: boolean }>;
  specials: SpecialTokens;
  maxLength: number;
  /** The file that holds the vocabulary and merges, for error messages. */
  vocabFile: string;
  mergesFile: string;
}

const SUPPLY =
  'A CLIP checkpoint folder needs tokenizer.json, or vocab.json and merges.txt, as HF writes them ' +
  '(in Python: CLIPTokenizer.from_pretrained(name).save_pretrained(folder))';

export class ClipTokenizer {
  readonly bosId: number;
  readonly eosId: number;
  readonly padId: number;
  readonly unkId: number;
  /** The default encode length limit (CLIP: 77, its max_position_embeddings). */
  readonly maxLength: number;
  /** One more than the largest id. */
  readonly vocabSize: number;
  private readonly vocab: Map<string, number>;
  private readonly tokenOf: string[] = [];
  /** "leftId rightId" → rank and the merged token's id. */
  private readonly mergeOf = new Map<string, { rank: number; id: number }>();
  private readonly added: Array<{ content: string; id: number }>;
  private readonly specialIds = new Set<number>();
  private readonly cache = new Map<string, number[]>();

  constructor(data: TokenizerData) {
    this.vocab = new Map(data.vocab);
    for (const t of data.addedTokens) this.vocab.set(t.content, t.id);
    for (const [token, id] of this.vocab) this.tokenOf[id] = token;
    this.vocabSize = this.tokenOf.length;
    const idOf = (role: keyof SpecialTokens): number => {
      const token = data.specials[role];
      const id = this.vocab.get(token);
      if (id === undefined) {
        throw new Error(`${data.vocabFile}: the ${role} token ${JSON.stringify(token)} is not in the vocabulary. ${SUPPLY}, and tokenizer_config.json must name tokens of that vocabulary.`);
      }
      return id;
    };
    this.bosId = idOf('bos');
    this.eosId = idOf('eos');
    this.padId = idOf('pad');
    this.unkId = idOf('unk');
    if (!Number.isInteger(data.maxLength) || data.maxLength < 2) throw new Error(`tokenizer maxLength must be an integer ≥ 2 (room for <|startoftext|> and <|endoftext|>), got ${data.maxLength}`);
    this.maxLength = data.maxLength;
    data.merges.forEach(([left, right], i) => {
      const line = `${data.mergesFile}: merge ${i + 1} (${JSON.stringify(`${left} ${right}`)})`;
      const a = this.vocab.get(left);
      const b = this.vocab.get(right);
      const joined = this.vocab.get(left + right);
      if (a === undefined || b === undefined || joined === undefined) {
        const missing = [left, right, left + right].filter((t) => !this.vocab.has(t)).map((t) => JSON.stringify(t));
        throw new Error(`${line} uses ${missing.join(' and ')}, which ${missing.length > 1 ? 'are' : 'is'} not in ${data.vocabFile}: the merges and the vocabulary do not belong together. ${SUPPLY}, both from the same tokenizer.`);
      }
      // A pair listed twice keeps its later rank, as HF's BPE does.
      this.mergeOf.set(`${a} ${b}`, { rank: i, id: joined });
    });
    // Longest first, so that of two added tokens starting at the same place the longer wins.
    this.added = [...data.addedTokens].sort((x, y) => y.content.length - x.content.length);
    for (const t of data.addedTokens) if (t.special) this.specialIds.add(t.id);
    for (const id of [this.bosId, this.eosId, this.padId, this.unkId]) this.specialIds.add(id);
  }


  /** The ids of `text` between <|startoftext|> and <|endoftext|>, as HF's tokenizer(text, truncation=True, max_length=…). */
  encode(text: string, opts: EncodeOptions = {}): Encoding {
    const maxLength = opts.maxLength ?? this.maxLength;
    if (!Number.isInteger(maxLength) || maxLength < 2) throw new Error(`encode: maxLength must be an integer ≥ 2 (room for <|startoftext|> and <|endoftext|>), got ${maxLength}`);
    let body = this.tokenIds(text);
    if (opts.truncation !== false && body.length > maxLength - 2) body = body.slice(0, maxLength - 2);
    const ids = [this.bosId, ...body, this.eosId];
    const attentionMask = ids.map(() => 1);
    if (opts.padding) {
      while (ids.length < maxLength) {
        ids.push(this.padId);
        attentionMask.push(0);
      }
    }
    return { ids, attentionMask };
  }

  /** The ids of `text` alone: no markers, no truncation. */
  tokenIds(text: string): number[] {
    const ids: number[] = [];
    for (const segment of this.splitAdded(text)) {
      if (typeof segment === 'number') ids.push(segment);
      else for (const word of preTokenize(segment)) ids.push(...this.wordIds(word));
    }
    return ids;
  }

  /** The token strings of `text` alone (for inspection), e.g. ["a</w>", "ph", "oto</w>"]. */
  tokens(text: string): string[] {
    return this.tokenIds(text).map((id) => this.tokenOf[id]);
  }

  /**
   * The text of `ids`, as HF's decode: tokens joined, bytes mapped back and read as UTF-8
   * (invalid sequences become U+FFFD), every "</w>" replaced by a space, the ends stripped.
   */
  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    const bytes: number[] = [];
    const utf8 = new TextEncoder();
    for (const id of ids) {
      const token = this.tokenOf[id];
      if (token === undefined) throw new Error(`decode: id ${id} is not in the vocabulary (ids run from 0 to ${this.vocabSize - 1})`);
      if (opts.skipSpecialTokens && this.specialIds.has(id)) continue;
      const mapped = [...token].map((c) => CHAR_TO_BYTE.get(c));
      // A token with a character outside the byte alphabet (an added token) stands for its own UTF-8.
      if (mapped.every((b) => b !== undefined)) bytes.push(...(mapped as number[]));
      else bytes.push(...utf8.encode(token));
    }
    // ignoreBOM: a leading U+FEFF is text here (HF keeps it), not a byte order mark to drop.
    const text = new TextDecoder('utf-8', { ignoreBOM: true }).decode(new Uint8Array(bytes));
    return text.replaceAll(END_OF_WORD, ' ').replace(PY_STRIP, '');
  }

  /** The text cut at every added token: strings in between, ids for the added tokens. */
  private splitAdded(text: string): Array<string | number> {
    const out: Array<string | number> = [];
    let start = 0;
    let i = 0;
    while (i < text.length) {
      const hit = this.added.find((t) => t.content.length > 0 && text.startsWith(t.content, i));
      if (!hit) {
        i++;
        continue;
      }
      if (i > start) out.push(text.slice(start, i));
      out.push(hit.id);
      i += hit.content.length;
      start = i;
    }
    if (start < text.length) out.push(text.slice(start));
    return out;
  }

  /**
   * BPE of one pre-tokenised word (cached). The symbols form a linked list and the candidate
   * merges a heap ordered by (rank, position), so a word of n bytes takes O(n log n), as in HF's
   * BPE; a popped candidate whose symbols have changed since it was pushed is skipped.
   */
  private wordIds(word: string): number[] {
    const hit = this.cache.get(word);
    if (hit) return hit;
    const chars = [...new TextEncoder().encode(word)].map((b) => BYTE_TO_CHAR[b]);
    chars[chars.length - 1] += END_OF_WORD;
    const ids = chars.map((c) => this.vocab.get(c) ?? this.unkId);
    const next = ids.map((_, i) => i + 1);
    const prev = ids.map((_, i) => i - 1);
    const alive = ids.map(() => true);
    const heap = new MergeHeap();
    const push = (left: number): void => {
      const right = next[left];
      if (left < 0 || right >= ids.length) return;
      const m = this.mergeOf.get(`${ids[left]} ${ids[right]}`);
      if (m) heap.push({ rank: m.rank, pos: left, id: m.id, left: ids[left], right: ids[right] });
    };
    for (let i = 0; i + 1 < ids.length; i++) push(i);
    for (let c = heap.pop(); c; c = heap.pop()) {
      const right = next[c.pos];
      if (!alive[c.pos] || right >= ids.length || ids[c.pos] !== c.left || ids[right] !== c.right) continue;
      ids[c.pos] = c.id;
      alive[right] = false;
      next[c.pos] = next[right];
      if (next[right] < ids.length) prev[next[right]] = c.pos;
      push(prev[c.pos]);
      push(c.pos);
    }
    const symbols = ids.filter((_, i) => alive[i]);
    // Bounded, so that encoding an endless stream of distinct words does not grow without limit.
    if (this.cache.size >= WORD_CACHE_LIMIT) this.cache.clear();
    this.cache.set(word, symbols);
    return symbols;
  }
}

interface MergeCandidate {
  rank: number;
  /** Index of the left symbol in the word's first symbol list (ties go to the leftmost). */
  pos: number;
  /** The merged token's id. */
  id: number;
  /** The pair's ids when it was pushed, to recognise a candidate made stale by another merge. */
  left: number;
  right: number;
}

/** A binary min-heap of merge candidates by (rank, pos). */
class MergeHeap {
  private readonly items: MergeCandidate[] = [];

  push(c: MergeCandidate): void {
    const a = this.items;
    a.push(c);
    for (let i = a.length - 1; i > 0; ) {
      const parent = (i - 1) >> 1;
      if (!before(a[i], a[parent])) break;
      [a[i], a[parent]] = [a[parent], a[i]];
      i = parent;
    }
  }

  pop(): MergeCandidate | undefined {
    const a = this.items;
    const top = a[0];
    const last = a.pop();
    if (a.length > 0 && last) {
      a[0] = last;
      for (let i = 0; ; ) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && before(a[l], a[m])) m = l;
        if (r < a.length && before(a[r], a[m])) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m], a[i]];
        i = m;
      }
    }
    return top;
  }
}

function before(x: MergeCandidate, y: MergeCandidate): boolean {
  return x.rank < y.rank || (x.rank === y.rank && x.pos < y.pos);
}

/** Normalisation as HF CLIPTokenizerFast: NFC, whitespace runs → one space, lowercase per code point. */
export function normalize(text: string): string {
  let lower = '';
  for (const ch of text.normalize('NFC').replace(WHITESPACE_RUN, ' ')) lower += ch.toLowerCase();
  return lower;
}

/** The words of normalised-and-split text, before the byte mapping (CLIP's split, then GPT-2's). */
export function preTokenize(text: string): string[] {
  const words: string[] = [];
  for (const piece of normalize(text).match(CLIP_SPLIT) ?? []) words.push(...(piece.match(BYTE_LEVEL_SPLIT) ?? []));
  return words;
}

// ---------------------------------------------------------------------------------------------
// Reading the files

function readJsonFile(files: TokenizerFiles, name: string, expected: string): unknown {
  const path = files.path(name);
  const text = files.read(name, expected);
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`${path}: not valid JSON (${(e as Error).message}); expected ${expected}. ${SUPPLY}.`);
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A vocabulary object {token: id}; an error naming `file` and `where` when it is not one. */
function parseVocab(v: unknown, file: string, where: string): Map<string, number> {
  if (!isObject(v)) throw new Error(`${file}: ${where} must be an object mapping each token to its id. ${SUPPLY}.`);
  const vocab = new Map<string, number>();
  for (const [token, id] of Object.entries(v)) {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) throw new Error(`${file}: ${where}: the id of ${JSON.stringify(token)} is ${JSON.stringify(id)}, not a non-negative integer. ${SUPPLY}.`);
    vocab.set(token, id);
  }
  if (vocab.size === 0) throw new Error(`${file}: ${where} is empty. ${SUPPLY}.`);
  return vocab;
}

/** merges.txt: an optional "#version" line, then one "left right" pair per line. */
function parseMergesText(text: string, file: string): Array<[string, string]> {
  const merges: Array<[string, string]> = [];
  text.split(/\r?\n/).forEach((line, i) => {
    if (line === '' || line.startsWith('#version')) return;
    const parts = line.split(' ');
    if (parts.length !== 2 || parts[0] === '' || parts[1] === '') throw new Error(`${file} line ${i + 1}: expected two tokens separated by one space, found ${JSON.stringify(line.slice(0, 80))}. ${SUPPLY}.`);
    merges.push([parts[0], parts[1]]);
  });
  if (merges.length === 0) throw new Error(`${file}: no merges in it. ${SUPPLY}.`);
  return merges;
}

/** A special token entry of tokenizer_config.json / special_tokens_map.json: a string or {content}. */
function tokenText(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (isObject(v) && typeof v.content === 'string') return v.content;
  return undefined;
}

interface ConfigFiles {
  specials: SpecialTokens;
  modelMaxLength?: number;
}

/** Special tokens and model_max_length from tokenizer_config.json, then special_tokens_map.json (which wins), else CLIP's. */
function readConfigFiles(files: TokenizerFiles): ConfigFiles {
  const specials: SpecialTokens = { bos: DEFAULT_BOS, eos: DEFAULT_EOS, pad: DEFAULT_EOS, unk: DEFAULT_EOS };
  let modelMaxLength: number | undefined;
  for (const name of ['tokenizer_config.json', 'special_tokens_map.json']) {
    const path = files.path(name);
    if (!files.exists(name)) continue;
    const json = readJsonFile(files, name, name === 'tokenizer_config.json' ? "the tokenizer's settings (a JSON object)" : "the tokenizer's special tokens (a JSON object)");
    if (!isObject(json)) throw new Error(`${path}: expected a JSON object. ${SUPPLY}.`);
    for (const role of ['bos', 'eos', 'pad', 'unk'] as const) {
      const key = `${role}_token`;
      if (json[key] === undefined || json[key] === null) continue;
      const t = tokenText(json[key]);
      if (t === undefined) throw new Error(`${path}: "${key}" must be a token string or {"content": string}, found ${JSON.stringify(json[key])}`);
      specials[role] = t;
    }
    const m = json.model_max_length;
    // HF writes a huge number (1e30) when a checkpoint sets no limit: that is no limit, not 1e30.
    if (typeof m === 'number' && Number.isInteger(m) && m >= 2 && m <= 1_000_000) modelMaxLength = m;
  }
  return { specials, modelMaxLength };
}

function readTokenizerJson(files: TokenizerFiles, name: string): Pick<TokenizerData, 'vocab' | 'merges' | 'addedTokens'> & { unk?: string } {
  const path = files.path(name);
  const json = readJsonFile(files, name, 'an HF tokenizers file (tokenizer.json)');
  const bad = (what: string): Error => new Error(`${path}: ${what}. ${SUPPLY}.`);
  if (!isObject(json) || !isObject(json.model)) throw bad('no "model" object');
  const model = json.model;
  if (model.type !== undefined && model.type !== 'BPE') throw bad(`the model is ${JSON.stringify(model.type)}, not CLIP's byte-level BPE`);
  if (model.end_of_word_suffix !== END_OF_WORD) throw bad(`model.end_of_word_suffix is ${JSON.stringify(model.end_of_word_suffix)}, not "</w>" as in CLIP's BPE`);
  if (model.continuing_subword_prefix) throw bad(`model.continuing_subword_prefix is ${JSON.stringify(model.continuing_subword_prefix)}; CLIP's BPE has none`);
  checkPreTokenizer(json.pre_tokenizer, path);
  const vocab = parseVocab(model.vocab, path, 'model.vocab');
  if (!Array.isArray(model.merges)) throw bad('model.merges is missing or not a list');
  const merges = model.merges.map((m: unknown, i: number): [string, string] => {
    // Older files write "left right", newer ones ["left", "right"].
    const pair = typeof m === 'string' ? m.split(' ') : m;
    if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== 'string' || typeof pair[1] !== 'string') {
      throw bad(`model.merges[${i}] is ${JSON.stringify(m)}, not "left right" or ["left", "right"]`);
    }
    return [pair[0], pair[1]];
  });
  const addedTokens: TokenizerData['addedTokens'] = [];
  if (json.added_tokens !== undefined) {
    if (!Array.isArray(json.added_tokens)) throw bad('added_tokens is not a list');
    json.added_tokens.forEach((t: unknown, i: number) => {
      if (!isObject(t) || typeof t.content !== 'string' || typeof t.id !== 'number' || !Number.isInteger(t.id) || t.id < 0) throw bad(`added_tokens[${i}] needs a string "content" and an integer "id"`);
      addedTokens.push({ content: t.content, id: t.id, special: t.special === true });
    });
  }
  return { vocab, merges, addedTokens, unk: typeof model.unk_token === 'string' ? model.unk_token : undefined };
}

/** Refuses a tokenizer.json whose split pattern is not CLIP's (its ids would not be CLIP's). */
function checkPreTokenizer(pre: unknown, path: string): void {
  const steps = isObject(pre) && Array.isArray(pre.pretokenizers) ? pre.pretokenizers : [pre];
  for (const step of steps) {
    if (!isObject(step) || step.type !== 'Split' || !isObject(step.pattern)) continue;
    const regex = step.pattern.Regex;
    if (typeof regex === 'string' && regex !== CLIP_PATTERN) {
      throw new Error(`${path}: pre_tokenizer splits with ${JSON.stringify(regex)}, not CLIP's pattern ${JSON.stringify(CLIP_PATTERN)}; genalign reads only CLIP tokenizers. ${SUPPLY}.`);
    }
  }
}

/** The files of a checkpoint folder's tokenizer, checked; tokenizer.json wins over vocab.json + merges.txt, as in HF. */
export function tokenizerData(files: TokenizerFiles, where: string, opts: { maxLength?: number } = {}): TokenizerData {
  const { specials, modelMaxLength } = readConfigFiles(files);
  const maxLength = opts.maxLength ?? modelMaxLength ?? DEFAULT_MAX_LENGTH;
  const tokenizerJson = files.path('tokenizer.json');
  if (files.exists('tokenizer.json')) {
    const { vocab, merges, addedTokens, unk } = readTokenizerJson(files, 'tokenizer.json');
    // The BPE model's own unk token is the one HF puts in place of an unknown symbol.
    if (unk !== undefined) specials.unk = unk;
    return { vocab, merges, addedTokens, specials, maxLength, vocabFile: tokenizerJson, mergesFile: tokenizerJson };
  }
  const vocabFile = files.path('vocab.json');
  const mergesFile = files.path('merges.txt');
  if (!files.exists('vocab.json') && !files.exists('merges.txt')) {
    throw new Error(`${where}: no tokenizer files (looked for tokenizer.json, and for vocab.json with merges.txt). ${SUPPLY}.`);
  }
  const vocab = parseVocab(readJsonFile(files, 'vocab.json', "the tokenizer's vocabulary (vocab.json, a JSON object of token → id)"), vocabFile, 'the vocabulary');
  const merges = parseMergesText(files.read('merges.txt', "the tokenizer's BPE merges (merges.txt, one \"left right\" pair per line), which belongs with vocab.json"), mergesFile);
  // The special tokens are matched whole in the text, as HF adds them to its added vocabulary.
  const addedTokens = [...new Set(Object.values(specials))].filter((t) => vocab.has(t)).map((t) => ({ content: t, id: vocab.get(t)!, special: true }));
  return { vocab, merges, addedTokens, specials, maxLength, vocabFile, mergesFile };
}
