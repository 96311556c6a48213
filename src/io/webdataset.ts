// WebDataset tar shards: reading samples out of tar files without extracting them, and writing
// shards (make-shards). The tar format itself is tar-stream's business; this module only gives
// members their WebDataset meaning.
//
// A sample is the run of consecutive members whose names share a key: the member's path up to
// the first '.' of its file name ("shard/000123.real.png" → key "shard/000123", extension
// "real.png", compared lowercased). genalign's samples:
//   <key>.real.<png|jpg|jpeg|webp>        the real image (exactly one)
//   <key>.gen.<png|jpg|jpeg|webp>         a generated image, or several:
//   <key>.gen.<k>.<png|jpg|jpeg|webp>     k = 0, 1, …  (ordered by k)
//   <key>.txt                             the caption (UTF-8), optional
//   <key>.json                            metadata, optional: {"id": …, "caption": …, "label": …}
// Other members (directories, links, other extensions) are not part of a sample. A sample with
// no real image, no generated image, two members of the same extension, a key that appears
// again after other samples (its members are not consecutive), undecodable JSON or a caption
// that is not UTF-8 is a problem: it is named (shard, key, why) and the sample is left out, as a
// pair with a missing file is in a pairs.jsonl dataset. A file that is not a tar, or one cut
// short, is an error naming the shard.
import { createReadStream, existsSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { extract, pack } from 'tar-stream';
import { makeDirs, writeFileAtomic } from '../platform/atomic-file.ts';
import { imageDecodeError, preprocessImage, type PreprocessConfig } from './image.ts';

const IMAGE_EXTS = new Set(['png', 'jpg', 'jpeg', 'webp']);

/** A sample's members as read: extension (lowercased, without the leading dot) → bytes. */
export interface RawSample {
  shard: string;
  key: string;
  members: Map<string, Buffer>;
}

/** A genalign sample: the real image, the generated images (by k), caption and metadata. */
export interface ShardSample {
  shard: string;
  key: string;
  /** The id: the JSON's "id" when given, else the key. */
  id: string;
  real: { ext: string; data: Buffer };
  generated: { ext: string; data: Buffer }[];
  caption?: string;
  label?: string;
}

/** A sample left out, and why. */
export interface ShardProblem {
  shard: string;
  key: string;
  reason: string;
}

/** "dir/000123.real.png" → ["dir/000123", "real.png"]; null for a name with no extension. */
export function splitKey(name: string): [string, string] | null {
  const slash = name.lastIndexOf('/');
  const dot = name.indexOf('.', slash + 1);
  if (dot <= slash + 1 || dot === name.length - 1) return null;
  return [name.slice(0, dot), name.slice(dot + 1).toLowerCase()];
}

/**
 * Expands shard specs as WebDataset does: a comma-separated list, each item with optional brace
 * ranges "{00000..00099}" (zero-padded like the lower bound) or lists "{a,b}" (commas inside
 * braces belong to the braces). "shards/{0..1}.tar,extra.tar" → shards/0.tar, shards/1.tar, extra.tar.
 */
export function expandShardSpec(spec: string): string[] {
  let depth = 0;
  for (const ch of spec) {
    if (ch === '{') depth++;
    if (ch === '}' && --depth < 0) throw new Error(`shard pattern ${JSON.stringify(spec)}: a '}' without its '{'`);
  }
  if (depth !== 0) throw new Error(`shard pattern ${JSON.stringify(spec)}: a '{' without its '}'`);
  return splitTopLevel(spec).map((s) => s.trim()).filter(Boolean).flatMap(expandBraces);
}

/**
 * The shards a spec names (expandShardSpec), each checked to be a file; the error names `flag`,
 * the spec and the first shard that is missing or not a file.
 */
export function listShards(spec: string, flag: string): string[] {
  const shards = expandShardSpec(spec);
  if (!shards.length) throw new Error(`${flag} ${spec}: names no shard`);
  for (const sh of shards) {
    let ok = false;
    try {
      ok = statSync(sh).isFile();
    } catch {
      ok = false;
    }
    if (!ok) throw new Error(`${flag} ${spec}: shard ${sh} ${existsSync(sh) ? 'is not a file' : 'does not exist'} (${shards.length} shard(s) named; check the pattern, e.g. 'shards/{00000..00009}.tar')`);
  }
  return shards;
}

/** A shard spec with every comma-separated item made absolute (braces kept), so a run's --data names the same shards from any directory. */
export function absoluteShardSpec(spec: string): string {
  return splitTopLevel(spec).map((s) => s.trim()).filter(Boolean).map((s) => resolve(s)).join(',');
}

function expandBraces(s: string): string[] {
  const open = s.indexOf('{');
  if (open < 0) return [s];
  let depth = 0;
  let close = -1;
  for (let i = open; i < s.length; i++) {
    if (s[i] === '{') depth++;
    if (s[i] === '}' && --depth === 0) {
      close = i;
      break;
    }
  }
  const body = s.slice(open + 1, close);
  const head = s.slice(0, open);
  const tails = expandBraces(s.slice(close + 1));
  const range = /^(\d+)\.\.(\d+)$/.exec(body);
  let alts: string[];
  if (range) {
    const [lo, hi] = [Number(range[1]), Number(range[2])];
    if (hi < lo) throw new Error(`shard pattern {${body}}: the range runs backwards`);
    if (hi - lo > 10_000_000) throw new Error(`shard pattern {${body}}: more than 10 million shards`);
    const width = range[1].length;
    alts = Array.from({ length: hi - lo + 1 }, (_, i) => String(lo + i).padStart(width, '0'));
  } else alts = splitTopLevel(body).flatMap(expandBraces);
  return alts.flatMap((a) => tails.map((t) => head + a + t)).flatMap(expandBraces);
}

function splitTopLevel(body: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of body) {
    if (ch === '{') depth++;
    if (ch === '}') depth--;
    if (ch === ',' && depth === 0) {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out;
}

/**
 * The raw samples of one tar shard, in file order (members grouped by consecutive key), streamed:
 * only the current sample's members are held in memory. `onProblem` hears of keys that come back
 * after other samples (their members are reported as a separate, incomplete sample).
 */
export async function* readRawSamples(shard: string, onProblem: (p: ShardProblem) => void = () => undefined): AsyncGenerator<RawSample> {
  const size = (() => {
    try {
      return statSync(shard).size;
    } catch (e) {
      throw new Error(`shard ${shard}: cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
  })();
  if (size === 0) throw new Error(`shard ${shard}: the file is empty, not a tar archive`);
  const ex = extract();
  const input = createReadStream(shard);
  input.on('error', (e) => ex.destroy(e));
  input.pipe(ex);
  const seen = new Set<string>();
  let cur: RawSample | null = null;
  try {
    for await (const entry of ex) {
      const h = entry.header;
      const chunks: Buffer[] = [];
      for await (const c of entry) chunks.push(c as Buffer);
      if (h.type !== 'file' && h.type !== 'contiguous-file') continue;
      const parts = splitKey(h.name);
      if (!parts) continue;
      const [key, ext] = parts;
      if (!cur || cur.key !== key) {
        if (cur) yield cur;
        if (seen.has(key)) onProblem({ shard, key, reason: `its members are not consecutive in the tar (the key appears again after other samples); a sample's members must be stored together` });
        seen.add(key);
        cur = { shard, key, members: new Map() };
      }
      if (cur.members.has(ext)) {
        onProblem({ shard, key, reason: `two members named ${key}.${ext}` });
        cur.members.set(`${ext}#duplicate`, Buffer.alloc(0));
        continue;
      }
      cur.members.set(ext, Buffer.concat(chunks));
    }
  } catch (e) {
    throw new Error(`shard ${shard}: not a readable tar archive (${(e as Error).message}); the file is damaged, cut short, or not a tar`);
  } finally {
    input.destroy();
  }
  if (cur) yield cur;
}

/** The genalign sample in `raw`, or the reason it cannot be one. */
export function parseSample(raw: RawSample): ShardSample | string {
  let real: { ext: string; data: Buffer } | null = null;
  const gens: { k: number; ext: string; data: Buffer }[] = [];
  let caption: string | undefined;
  let meta: Record<string, unknown> = {};
  for (const [ext, data] of raw.members) {
    if (ext.endsWith('#duplicate')) return `two members named ${raw.key}.${ext.slice(0, -'#duplicate'.length)}`;
    const parts = ext.split('.');
    const img = parts[parts.length - 1];
    if (parts[0] === 'real' && parts.length === 2 && IMAGE_EXTS.has(img)) {
      if (real) return `two real images (${raw.key}.real.${real.ext} and ${raw.key}.${ext})`;
      real = { ext: img, data };
    } else if (parts[0] === 'gen' && IMAGE_EXTS.has(img) && (parts.length === 2 || (parts.length === 3 && /^\d+$/.test(parts[1])))) {
      const k = parts.length === 3 ? Number(parts[1]) : -1;
      if (gens.some((g) => g.k === k)) return `two generated images numbered ${k < 0 ? '(none)' : k}`;
      gens.push({ k, ext: img, data });
    } else if (ext === 'txt') {
      try {
        caption = new TextDecoder('utf-8', { fatal: true }).decode(data).trim();
      } catch {
        return `${raw.key}.txt is not UTF-8 text`;
      }
    } else if (ext === 'json') {
      try {
        const j = JSON.parse(data.toString('utf8')) as unknown;
        if (!j || typeof j !== 'object' || Array.isArray(j)) return `${raw.key}.json is not a JSON object`;
        meta = j as Record<string, unknown>;
      } catch (e) {
        return `${raw.key}.json is not JSON (${(e as Error).message})`;
      }
    }
  }
  if (!real) return `no real image (${raw.key}.real.png, .jpg, .jpeg or .webp)`;
  if (gens.length === 0) return `no generated image (${raw.key}.gen.png or ${raw.key}.gen.0.png, …)`;
  for (const f of ['id', 'caption', 'label'] as const) {
    if (meta[f] !== undefined && typeof meta[f] !== 'string') return `${raw.key}.json: "${f}" must be a string`;
  }
  gens.sort((a, b) => a.k - b.k);
  const cap = caption ?? (meta.caption as string | undefined);
  return {
    shard: raw.shard,
    key: raw.key,
    id: (meta.id as string | undefined) ?? raw.key,
    real,
    generated: gens.map(({ ext, data }) => ({ ext, data })),
    ...(cap !== undefined && cap !== '' ? { caption: cap } : {}),
    ...(meta.label !== undefined ? { label: meta.label as string } : {}),
  };
}

/** The genalign samples of one shard, streamed; samples that cannot be one go to `onProblem`. */
export async function* readShard(shard: string, onProblem: (p: ShardProblem) => void): AsyncGenerator<ShardSample> {
  for await (const raw of readRawSamples(shard, onProblem)) {
    const s = parseSample(raw);
    if (typeof s === 'string') onProblem({ shard, key: raw.key, reason: s });
    else yield s;
  }
}

/** What make-shards writes for one pair. */
export interface SampleToWrite {
  key: string;
  real: string;
  generated: readonly string[];
  id: string;
  caption?: string;
  label?: string;
}

function imageExt(path: string): string {
  const e = path.slice(path.lastIndexOf('.') + 1).toLowerCase();
  if (!IMAGE_EXTS.has(e)) throw new Error(`${path}: not a .png/.jpg/.jpeg/.webp image`);
  return e;
}

/** The tar bytes of one shard holding `samples` (members in genalign's naming). */
export async function packShard(samples: readonly SampleToWrite[]): Promise<Buffer> {
  const p = pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of p) chunks.push(c as Buffer);
  })();
  const add = (name: string, data: Buffer): Promise<void> =>
    new Promise((res, rej) => {
      p.entry({ name, size: data.length, mtime: new Date(0), mode: 0o644 }, data, (e) => (e ? rej(e) : res()));
    });
  for (const s of samples) {
    if (s.key.includes('.') || s.key.includes('/')) throw new Error(`sample key ${JSON.stringify(s.key)}: must hold no '.' or '/'`);
    await add(`${s.key}.real.${imageExt(s.real)}`, readFileSync(s.real));
    for (const [k, g] of s.generated.entries()) await add(`${s.key}.gen.${k}.${imageExt(g)}`, readFileSync(g));
    if (s.caption !== undefined) await add(`${s.key}.txt`, Buffer.from(s.caption, 'utf8'));
    await add(`${s.key}.json`, Buffer.from(JSON.stringify({ id: s.id, ...(s.label !== undefined ? { label: s.label } : {}) }) + '\n', 'utf8'));
  }
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}

/** Writes `samples` as shard `path` atomically (temporary file + rename). */
export async function writeShard(path: string, samples: readonly SampleToWrite[]): Promise<void> {
  const bytes = await packShard(samples);
  makeDirs(dirname(resolve(path)));
  writeFileAtomic(path, bytes);
}

/** The shard file names make-shards writes: 00000.tar, 00001.tar, … (at least 5 digits). */
export function shardName(i: number, count: number): string {
  return `${String(i).padStart(Math.max(5, String(count - 1).length), '0')}.tar`;
}

/** The brace pattern naming `count` shards of shardName in `dir`. */
export function shardPattern(dir: string, count: number): string {
  if (count === 1) return join(dir, shardName(0, 1));
  const w = shardName(0, count).length - 4;
  return join(dir, `{${'0'.repeat(w)}..${String(count - 1).padStart(w, '0')}}.tar`);
}


/** What validateShards found. */
export interface ShardValidation {
  shards: number;
  samples: number;
  images: number;
  /** One line per problem: a sample left out, or an image that does not decode. */
  problems: string[];
}

/**
 * train --validate for shards: reads every shard, and decodes and preprocesses (as `pre` says)
 * every image of every sample, from the member's bytes. Samples the reader leaves out and images
 * that do not decode are listed; a shard that cannot be read is listed too, and the others are
 * still checked.
 */
export async function validateShards(shards: readonly string[], pre: PreprocessConfig, onSample?: (samples: number) => void): Promise<ShardValidation> {
  const out: ShardValidation = { shards: shards.length, samples: 0, images: 0, problems: [] };
  const inFlight = new Set<Promise<void>>();
  const check = (name: string, bytes: Uint8Array): Promise<void> => {
    const p = preprocessImage({ name, bytes }, pre).then(
      () => undefined,
      async (e: unknown) => {
        out.problems.push(`bad image: ${(await imageDecodeError({ name, bytes }, e)).message}`);
      },
    );
    out.images++;
    return p;
  };
  for (const shard of shards) {
    try {
      for await (const s of readShard(shard, (p) => out.problems.push(`${p.shard}: sample ${p.key} left out: ${p.reason}`))) {
        out.samples++;
        onSample?.(out.samples);
        const images = [{ name: `${shard}:${s.key}.real.${s.real.ext}`, data: s.real.data }, ...s.generated.map((g, k) => ({ name: `${shard}:${s.key}.gen.${k}.${g.ext}`, data: g.data }))];
        for (const im of images) {
          const p = check(im.name, im.data);
          inFlight.add(p);
          void p.then(() => inFlight.delete(p));
          if (inFlight.size >= 8) await Promise.race(inFlight);
        }
      }
    } catch (e) {
      out.problems.push((e as Error).message);
    }
  }
  await Promise.all(inFlight);
  out.problems.sort();
  return out;
}

/** The file beside a set of shards that gives each shard's sample count (as OpenCLIP's tooling writes it): {"00000.tar": n, …}. */
export const SIZES_FILE = 'sizes.json';

/**
 * The sample counts of `shards` from the sizes.json of their directories, or a message saying
 * which shard has none (training by --epochs needs them; --steps does not).
 */
export function shardSizes(shards: readonly string[]): number[] | string {
  const byDir = new Map<string, Record<string, unknown> | null>();
  const out: number[] = [];
  for (const shard of shards) {
    const dir = dirname(resolve(shard));
    if (!byDir.has(dir)) {
      try {
        const j = JSON.parse(readFileSync(join(dir, SIZES_FILE), 'utf8')) as unknown;
        byDir.set(dir, j && typeof j === 'object' && !Array.isArray(j) ? (j as Record<string, unknown>) : null);
      } catch {
        byDir.set(dir, null);
      }
    }
    const n = byDir.get(dir)?.[basename(shard)];
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 0) return `${join(dir, SIZES_FILE)} gives no sample count for ${basename(shard)}`;
    out.push(n);
  }
  return out;
}

/** Whether a --data value names tar shards (a .tar path, a list or a brace pattern of them) rather than a dataset folder. */
export function isShardSpec(data: string): boolean {
  return /\.tar(\}|,|$)/.test(data.trim()) || (data.includes('{') && data.includes('.tar'));
}
