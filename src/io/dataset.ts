// Paired training data for GMAIL: each pair is one REAL image (seen by the frozen teacher)
// and one or more GENERATED images of the same content (seen by the LoRA student).
// Two layouts, described in docs/data-format.md:
//   DIR/pairs.jsonl  one JSON object per line {"real", "generated": path | [paths], "caption"?, "label"?, "id"?}
//   DIR/real/<id>.<ext> + DIR/generated/<id>.<ext> | DIR/generated/<id>_<k>.<ext>   (no manifest)
// loadDataset checks that every listed file exists (cheap); whether the files decode is found
// out by the loader at training time, or up front by validateImages (--validate), which
// preprocesses the files in a worker pool (io/preprocess-pool.ts) when given a preprocess config.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { readRegularTextFile } from '../platform/regular-file.ts';
import { basename, extname, join, resolve } from 'node:path';
import sharp from 'sharp';
import { IMAGE_EXTENSIONS, imageDecodeError, type PreprocessConfig } from './image.ts';
import { PreprocessPool, PreprocessWorkerError } from './preprocess-pool.ts';
import { inlineListWithRest, listWithRest } from '../gpu/problem-list.ts';

export { LIST_LIMIT, listWithRest } from '../gpu/problem-list.ts';

export interface Pair {
  id: string;
  /** Absolute path of the real image. */
  real: string;
  /** Absolute paths of the generated images for this real image (at least one). */
  generated: string[];
  caption?: string;
  /** A class name (what the image shows), for eval's zero-shot accuracy. */
  label?: string;
}

export interface DatasetProblems {
  /** Every listed file that does not exist (absolute paths). */
  missingFiles: string[];
  /** Listed paths that exist but are not files (directories, devices); dropped like missing files. */
  notFiles: string[];
  /** Ids of pairs dropped because the real image or all of their generated images are missing. */
  droppedPairs: string[];
  /** Generated paths dropped (missing) from pairs that still have at least one generated image. */
  droppedGenerated: number;
  /** Folder layout only: generated files whose name matches no real image. */
  orphanGenerated: string[];
}

export interface Dataset {
  dir: string;
  layout: 'manifest' | 'folders';
  pairs: Pair[];
  problems: DatasetProblems;
}

export interface LoadDatasetOptions {
  /** Receives one message per kind of problem (missing files, dropped pairs, orphans). Default: stderr. */
  onWarn?: (message: string) => void;
}

export const MANIFEST_NAME = 'pairs.jsonl';

function isImageFile(name: string): boolean {
  return IMAGE_EXTENSIONS.includes(extname(name).toLowerCase());
}

function stem(path: string): string {
  const b = basename(path);
  return b.slice(0, b.length - extname(b).length);
}

interface RawPair {
  id: string;
  real: string;
  generated: string[];
  caption?: string;
  label?: string;
  /** Where the pair came from, for error messages ("pairs.jsonl line 7" or "real/x.png"). */
  origin: string;
}

function parseManifest(dir: string, manifestPath: string): RawPair[] {
  const text = readRegularTextFile(manifestPath, `the dataset's manifest, a text file with one JSON object per line (see docs/data-format.md); without it, ${dir} needs real/ and generated/ folders`);
  const lines = text.split(/\r?\n/);
  const out: RawPair[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === '') continue;
    const where = `${manifestPath} line ${i + 1}`;
    let obj: unknown;
    try {
      obj = JSON.parse(line);
    } catch (e) {
      throw new Error(`${where}: not valid JSON (${(e as Error).message}). Each line must be one object like {"real": "real/0.jpg", "generated": "generated/0.png"}`);
    }
    if (!obj || typeof obj !== 'object' || Array.isArray(obj)) throw new Error(`${where}: expected a JSON object, got ${JSON.stringify(obj)}`);
    const o = obj as Record<string, unknown>;
    if (typeof o.real !== 'string' || o.real === '') throw new Error(`${where}: missing "real" (a path relative to ${dir})`);
    let gen: string[];
    if (typeof o.generated === 'string' && o.generated !== '') gen = [o.generated];
    else if (Array.isArray(o.generated) && o.generated.length > 0 && o.generated.every((g) => typeof g === 'string' && g !== '')) gen = o.generated as string[];
    else if (o.generated === undefined) throw new Error(`${where}: missing "generated" (a path or a list of paths relative to ${dir})`);
    else throw new Error(`${where}: "generated" must be a path or a non-empty list of paths, got ${JSON.stringify(o.generated)}`);
    if (o.caption !== undefined && typeof o.caption !== 'string') throw new Error(`${where}: "caption" must be a string`);
    if (o.label !== undefined && (typeof o.label !== 'string' || o.label.trim() === '')) throw new Error(`${where}: "label" must be a non-empty string (a class name such as "dog")`);
    if (o.id !== undefined && (typeof o.id !== 'string' || o.id === '')) throw new Error(`${where}: "id" must be a non-empty string`);
    const real = resolve(dir, o.real);
    out.push({
      id: typeof o.id === 'string' ? o.id : stem(o.real),
      real,
      generated: gen.map((g) => resolve(dir, g)),
      ...(typeof o.caption === 'string' ? { caption: o.caption } : {}),
      ...(typeof o.label === 'string' ? { label: o.label.trim() } : {}),
      origin: `line ${i + 1}`,
    });
  }
  if (out.length === 0) throw new Error(`${manifestPath}: no pairs (the file is empty or only blank lines)`);
  return out;
}

/** Orders `a_2` before `a_10`; the plain `<id>` file comes first. */
function generatedIndex(id: string, name: string): number {
  const s = stem(name);
  if (s === id) return -1;
  return Number(s.slice(id.length + 1));
}

function scanFolders(dir: string, problems: DatasetProblems): RawPair[] {
  const realDir = join(dir, 'real');
  const genDir = join(dir, 'generated');
  const realFiles = readdirSync(realDir).filter(isImageFile).sort();
  if (realFiles.length === 0) throw new Error(`${realDir}: no images (${IMAGE_EXTENSIONS.join(', ')})`);
  const byId = new Map<string, RawPair>();
  const dupes = new Map<string, string[]>();
  for (const f of realFiles) {
    const id = stem(f);
    const prev = byId.get(id);
    if (prev) {
      dupes.set(id, [...(dupes.get(id) ?? [basename(prev.real)]), f]);
      continue;
    }
    byId.set(id, { id, real: join(realDir, f), generated: [], origin: `real/${f}` });
  }
  if (dupes.size > 0) {
    const names = [...dupes].map(([id, files]) => `'${id}' (${files.map((f) => `real/${f}`).join(', ')})`);
    throw new Error(`${dir}: duplicate ids in real/: ${listWithRest(names)}. Each real image needs a unique file name stem.`);
  }
  const genFiles = existsSync(genDir) && statSync(genDir).isDirectory() ? readdirSync(genDir).filter(isImageFile).sort() : [];
  for (const f of genFiles) {
    const s = stem(f);
    // An exact id match wins, so ids that themselves end in _<digits> still work.
    let owner = byId.get(s);
    if (!owner) {
      const m = /^(.*)_(\d+)$/.exec(s);
      if (m) owner = byId.get(m[1]);
    }
    if (owner) owner.generated.push(join(genDir, f));
    else problems.orphanGenerated.push(join(genDir, f));
  }
  for (const p of byId.values()) p.generated.sort((a, b) => generatedIndex(p.id, a) - generatedIndex(p.id, b) || a.localeCompare(b));
  return [...byId.values()];
}

/**
 * Reads the pair list of DIR (pairs.jsonl, or the real/ + generated/ folders), checks that the
 * files exist, drops pairs with missing files (warning through onWarn) and throws when nothing
 * is left. Decode errors are not checked here (see validateImages and PairLoader).
 */
export function loadDataset(dir: string, opts: LoadDatasetOptions = {}): Dataset {
  const warn = opts.onWarn ?? ((m: string) => process.stderr.write(m + '\n'));
  const root = resolve(dir);
  if (!existsSync(root)) throw new Error(`data directory ${dir} does not exist`);
  if (!statSync(root).isDirectory()) throw new Error(`data directory ${dir} is not a directory`);
  const entries = readdirSync(root);
  if (entries.length === 0) throw new Error(`data directory ${dir} is empty: expected ${MANIFEST_NAME}, or real/ and generated/ folders (see docs/data-format.md)`);
  const problems: DatasetProblems = { missingFiles: [], notFiles: [], droppedPairs: [], droppedGenerated: 0, orphanGenerated: [] };
  const manifest = join(root, MANIFEST_NAME);
  let layout: Dataset['layout'];
  let raw: RawPair[];
  if (existsSync(manifest)) {
    layout = 'manifest';
    raw = parseManifest(root, manifest);
  } else if (existsSync(join(root, 'real')) && statSync(join(root, 'real')).isDirectory()) {
    layout = 'folders';
    raw = scanFolders(root, problems);
  } else {
    throw new Error(`data directory ${dir} has neither ${MANIFEST_NAME} nor a real/ folder (see docs/data-format.md for the two layouts)`);
  }

  if (layout === 'manifest') {
    const seen = new Map<string, string[]>();
    for (const p of raw) seen.set(p.id, [...(seen.get(p.id) ?? []), p.origin]);
    const dupes = [...seen].filter(([, where]) => where.length > 1).map(([id, where]) => `'${id}' (${inlineListWithRest(where, 5)})`);
    if (dupes.length > 0) {
      throw new Error(`${manifest}: duplicate ids: ${listWithRest(dupes)}. Give each line a unique "id" (the default id is the real file's name stem).`);
    }
  }

  const exists = new Map<string, boolean>();
  const fileExists = (p: string): boolean => {
    let ok = exists.get(p);
    if (ok === undefined) {
      const present = existsSync(p);
      ok = present && statSync(p).isFile();
      exists.set(p, ok);
      if (!present) problems.missingFiles.push(p);
      else if (!ok) problems.notFiles.push(p);
    }
    return ok;
  };
  const pairs: Pair[] = [];
  for (const p of raw) {
    const realOk = fileExists(p.real);
    const gen = p.generated.filter(fileExists);
    if (!realOk || gen.length === 0) {
      problems.droppedPairs.push(p.id);
      continue;
    }
    problems.droppedGenerated += p.generated.length - gen.length;
    pairs.push({ id: p.id, real: p.real, generated: gen, ...(p.caption !== undefined ? { caption: p.caption } : {}), ...(p.label !== undefined ? { label: p.label } : {}) });
  }

  const listedIn = layout === 'manifest' ? manifest : root;
  if (problems.missingFiles.length > 0) {
    warn(`warning: ${problems.missingFiles.length} file(s) listed in ${listedIn} are missing:\n  ${listWithRest(problems.missingFiles)}`);
  }
  if (problems.notFiles.length > 0) {
    warn(`warning: ${problems.notFiles.length} path(s) listed in ${listedIn} are directories (or other non-files), not image files; each entry must name one image file:\n  ${listWithRest(problems.notFiles)}`);
  }
  const noGenerated = raw.filter((p) => p.generated.length === 0).map((p) => p.origin);
  if (noGenerated.length > 0) warn(`warning: ${noGenerated.length} real image(s) have no generated image in ${join(root, 'generated')}:\n  ${listWithRest(noGenerated)}`);
  if (problems.droppedPairs.length > 0 || problems.droppedGenerated > 0) {
    warn(`warning: dropped ${problems.droppedPairs.length} pair(s) and ${problems.droppedGenerated} generated image(s) from otherwise complete pairs; ${pairs.length} of ${raw.length} pairs remain`);
  }
  if (problems.orphanGenerated.length > 0) {
    warn(`warning: ${problems.orphanGenerated.length} generated image(s) match no real image (expected generated/<id>.<ext> or generated/<id>_<k>.<ext>):\n  ${listWithRest(problems.orphanGenerated)}`);
  }
  if (pairs.length === 0) throw new Error(`data directory ${dir}: no usable pairs (${raw.length} listed, all dropped: ${whyNoPairs(root, raw, problems)})`);
  return { dir: root, layout, pairs, problems };
}

/** Why every pair was dropped, naming the first files concerned (for the "no usable pairs" error). */
function whyNoPairs(root: string, raw: readonly RawPair[], problems: DatasetProblems): string {
  const reasons: string[] = [];
  if (problems.missingFiles.length > 0) reasons.push(`${problems.missingFiles.length} listed file(s) are missing, first: ${problems.missingFiles.slice(0, 3).join(', ')}`);
  if (problems.notFiles.length > 0) reasons.push(`${problems.notFiles.length} listed path(s) are directories, not image files, first: ${problems.notFiles.slice(0, 3).join(', ')}`);
  const noGenerated = raw.filter((p) => p.generated.length === 0);
  if (noGenerated.length > 0) {
    const first = noGenerated[0];
    const genDir = join(root, 'generated');
    reasons.push(
      `${noGenerated.length} real image(s) have no generated image; the first, ${first.origin}, needs ` +
        `${join(genDir, `${first.id}.<ext>`)} or ${join(genDir, `${first.id}_<k>.<ext>`)}` +
        (existsSync(genDir) ? '' : ` (${genDir} does not exist)`),
    );
  }
  return reasons.join('; ');
}

export interface ValidateOptions {
  /**
   * When given, each file goes through the same preprocessing as training (also catches images
   * too small to crop), in a worker pool; else each is only decoded (sharp, libuv threads).
   */
  preprocess?: PreprocessConfig;
  /** Worker pool for `preprocess` (not closed here); default: one started for the call and ended before it returns. */
  pool?: PreprocessPool;
  /** Files decoded at once (default: 8, or what the pool's workers take at once if that is more). */
  concurrency?: number;
  onProgress?: (done: number, total: number) => void;
}

export interface ValidateResult {
  checked: number;
  bad: { path: string; message: string }[];
}

/** Deep check (--validate): fully decodes every real and generated file of the dataset. */
export async function validateImages(dataset: Dataset, opts: ValidateOptions = {}): Promise<ValidateResult> {
  const files = [...new Set(dataset.pairs.flatMap((p) => [p.real, ...p.generated]))];
  const bad: ValidateResult['bad'] = [];
  const pre = opts.preprocess;
  const ownPool = pre && !opts.pool && files.length > 0 ? new PreprocessPool() : null;
  const pool = opts.pool ?? ownPool;
  const concurrency = Math.max(1, opts.concurrency ?? Math.max(8, pool ? pool.maxWorkers * pool.perWorker : 0));
  let next = 0;
  let done = 0;
  let stop = false;
  const worker = async (): Promise<void> => {
    while (next < files.length && !stop) {
      const path = files[next++];
      try {
        if (pre && pool) await pool.preprocess(path, pre);
        else await sharp(path, { failOn: 'error' }).raw().toBuffer();
      } catch (e) {
        // A failed pool is not the file's fault: stop and report it.
        if (e instanceof PreprocessWorkerError) throw e;
        bad.push({ path, message: (await imageDecodeError(path, e)).message });
      }
      opts.onProgress?.(++done, files.length);
    }
  };
  const workers = Array.from({ length: Math.min(concurrency, files.length) }, () =>
    worker().catch((e: unknown) => {
      stop = true;
      throw e;
    }),
  );
  // Every file in flight settles before the pool ends; then the first failure, if any, is thrown.
  const settled = await Promise.allSettled(workers);
  await ownPool?.close();
  const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  bad.sort((a, b) => a.path.localeCompare(b.path));
  return { checked: files.length, bad };
}

/** FNV-1a (32-bit) of a string's UTF-8 bytes. */
export function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (const byte of Buffer.from(text, 'utf8')) {
    h ^= byte;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/**
 * Murmur3's 32-bit finaliser: spreads every input bit over the output. FNV-1a alone leaves the
 * high bits poorly mixed for ids that differ only in their last characters (img1, img2, ...).
 */
export function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

/** Position of an id in [0, 1) for the val split: mix32(FNV-1a(seed, id)), so it depends only on (seed, id). */
export function splitHash(id: string, seed: number): number {
  return mix32(fnv1a(`${seed}\u0000${id}`)) / 2 ** 32;
}

/** The split rule by itself: whether id `id` is held out at `fraction` (streamed shards, which are never listed whole, use it directly). */
export function inValSplit(id: string, fraction: number, seed: number): boolean {
  return splitHash(id, seed) < fraction;
}

/**
 * Held-out split by id: a pair is in val when splitHash(id, seed) < fraction (inValSplit). Because the
 * decision depends only on (seed, id), adding or removing pairs never moves other ids between
 * the splits. With fraction > 0 and at least 2 pairs both splits are non-empty: if the hash puts
 * no pair in val, the smallest-hash pair goes there (and if it puts all in val, the largest-hash
 * pair stays in train) — only in that edge case can a later addition move that one pair back.
 */
export function splitByValFraction(pairs: readonly Pair[], fraction: number, seed: number): { train: Pair[]; val: Pair[] } {
  if (!Number.isFinite(fraction) || fraction < 0 || fraction >= 1) throw new Error(`validation fraction must be in [0, 1), got ${fraction}`);
  if (fraction === 0 || pairs.length < 2) return { train: [...pairs], val: [] };
  const h = pairs.map((p) => splitHash(p.id, seed));
  const inVal = h.map((x) => x < fraction); // inValSplit's rule, on the hashes argBy needs too
  const argBy = (better: (a: number, b: number) => boolean): number => h.reduce((best, x, i) => (better(x, h[best]) ? i : best), 0);
  if (!inVal.some(Boolean)) inVal[argBy((a, b) => a < b)] = true;
  if (inVal.every(Boolean)) inVal[argBy((a, b) => a > b)] = false;
  return { train: pairs.filter((_, i) => !inVal[i]), val: pairs.filter((_, i) => inVal[i]) };
}
