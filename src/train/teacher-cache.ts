// Teacher-embedding cache. The teacher is frozen, so f_r(real image) depends only on the model,
// the preprocessing and the file. Embeddings are computed once and kept in chunk files:
//
//   <cacheDir>/teacher-<modelKey>/chunk-<blockKey>.safetensors
//       embeds [n, D] F32, metadata "keys": the n row keys in row order
//   <cacheDir>/teacher-<modelKey>/layout.json
//       {"blockRows": N}: the block size, fixed when the cache is created
//
// modelKey hashes the model identity and the preprocessing; each row's key hashes the image
// file's absolute path, size and mtime (fileKey), so an edited image is embedded again.
//
// Chunks. The dataset's real images, each once and sorted by path (cacheRowKeys), are cut into
// blocks of `blockRows` (1024 by default; layout.json keeps the value a cache was created with); block b holds rows b·blockRows … and its chunk file is named by
// a hash of its row keys. The chunk's name is its index entry: any process computes it from the
// dataset alone, so no shared index file is read, locked or rewritten, and N processes can fill
// disjoint blocks (cache-teacher --shard I/N) at the same time on shared storage; two that fill
// the same block write the same file, each by an atomic rename. Consequences:
//   - writing new rows costs O(block): a chunk is written (atomically) when rows of its block
//     are added, merged with the rows it already held;
//   - a lookup reads one row of one chunk (a positioned read; the chunk's header is checked once
//     per process), so memory holds a few integers per row, never the embeddings;
//   - an interrupted fill resumes at the first block without a chunk;
//   - a changed image changes its block's name: that block is embedded again (and the old chunk
//     is left behind, unused).
// A chunk whose header does not fit (not safetensors, other width, keys not of its block) is
// ignored with one warning and its block filled again; a non-finite row is never written, and
// one read back is an error of the caller's (the file was damaged after it was written).
//
// The earlier format, one file <cacheDir>/teacher-<modelKey>.safetensors with every row and
// the keys in its header, is converted once: its finite rows go into chunks (a message says so)
// and the file is removed.
import { createHash } from 'node:crypto';
import { closeSync, existsSync, openSync, readFileSync, readSync, rmSync, statSync } from 'node:fs';
import { makeDirs, writeFileAtomic } from '../platform/atomic-file.ts';
import { join, resolve } from 'node:path';
import { SafetensorsFile, readSafetensors, writeSafetensors } from '../io/safetensors.ts';
import type { PreprocessConfig } from '../io/image.ts';
import type { ClipVisionConfig } from '../nn/config.ts';
import type { DType } from '../tensor/tensor.ts';

function sha(s: string): string {
  return createHash('sha256').update(s).digest('hex').slice(0, 20);
}

/** The shard files a sharded checkpoint's index names (its weight_map values), sorted; none when unreadable. */
function shardFiles(index: string): string[] {
  try {
    const map = (JSON.parse(readFileSync(index, 'utf8')) as { weight_map?: Record<string, string> }).weight_map ?? {};
    return [...new Set(Object.values(map))].sort();
  } catch {
    return [];
  }
}

/**
 * Identity of (model, preprocessing): for a directory, the size and mtime of its config and
 * weight files (every shard of a sharded checkpoint); for a preset, its name and seed.
 */
export function modelKey(source: string, cfg: ClipVisionConfig, pre: PreprocessConfig, seed: number, dtype: DType = 'f32'): string {
  let weights = `preset:${source}:seed${seed}`;
  if (existsSync(source) && statSync(source).isDirectory()) {
    const index = join(source, 'model.safetensors.index.json');
    const names = ['model.safetensors', 'model.safetensors.index.json', 'config.json', ...(existsSync(index) ? shardFiles(index) : [])];
    const files = names.map((f) => join(source, f)).filter((f) => existsSync(f));
    weights = files.map((f) => `${resolve(f)}:${statSync(f).size}:${statSync(f).mtimeMs}`).join('|');
  }
  // f16 teachers compute other embeddings; f32 keys stay as they were before --precision existed.
  return sha(JSON.stringify(dtype === 'f32' ? { weights, cfg, pre } : { weights, cfg, pre, dtype }));
}

const keyMemo = new Map<string, string>();

/** Key of one image file; memoized per process (files are not expected to change mid-run). */
export function fileKey(path: string): string {
  let k = keyMemo.get(path);
  if (!k) {
    const st = statSync(path);
    k = sha(`${resolve(path)}:${st.size}:${st.mtimeMs}`);
    keyMemo.set(path, k);
  }
  return k;
}

/**
 * The row keys of a dataset's real images in the cache's order: each file once, sorted by its
 * absolute path. Every command that uses the cache (train, cache-teacher) orders rows this way,
 * whatever the split or manifest order, so they agree on the blocks; files added with later
 * names change only the last block.
 */
export function cacheRowKeys(realPaths: readonly string[]): string[] {
  const abs = [...new Set(realPaths.map((p) => resolve(p)))].sort();
  return abs.map(fileKey);
}

/** The default number of rows per chunk. */
export const BLOCK_ROWS = 1024;

/** One block of the dataset's rows and the chunk file that holds them. */
export interface CacheBlock {
  index: number;
  /** Row keys of the block, in dataset order. */
  keys: readonly string[];
  /** The chunk file (it may not exist yet). */
  file: string;
}

/** What is known of a block's chunk: not looked at yet, absent, or present with where each row is. */
type ChunkState = { kind: 'unknown' } | { kind: 'absent' } | { kind: 'present'; rowOf: Int32Array; dataStart: number; count: number };

export interface TeacherCacheOptions {
  /** Rows per chunk of a new cache (default BLOCK_ROWS); an existing cache keeps the value in its layout.json. */
  blockRows?: number;
  /** Warnings (a chunk ignored, the old format converted; default: stderr). */
  warn?: (message: string) => void;
}

/** Why the old single-file cache's contents cannot be used at all, or null when its rows can be read. */
function legacyShapeProblem(embeds: { shape: number[] } | undefined, keys: unknown, dim: number): string | null {
  if (!embeds || embeds.shape.length !== 2) return "it has no 'embeds' matrix";
  if (!Array.isArray(keys) || !keys.every((k) => typeof k === 'string')) return "its 'keys' metadata is not a list of strings";
  if (embeds.shape[1] !== dim) return `its ${embeds.shape[0]} rows have ${embeds.shape[1]} values each, but the model's embeddings have ${dim}`;
  if (embeds.shape[0] !== keys.length) return `it has ${embeds.shape[0]} rows but ${keys.length} keys`;
  return null;
}

/** A cache file's "keys" metadata parsed (`absent` when there is none; null when it is not JSON): checked by the caller. */
function metadataKeys(metadata: Record<string, string>, absent: unknown = null): unknown {
  if (metadata.keys === undefined) return absent;
  try {
    return JSON.parse(metadata.keys) as unknown;
  } catch {
    return null;
  }
}

/** One row (`dim` f32 values) of a chunk file at byte `offset`: a positioned read. */
function readRow(file: string, offset: number, dim: number): Float32Array {
  const buf = Buffer.alloc(dim * 4);
  const fd = openSync(file, 'r');
  try {
    readSync(fd, buf, 0, buf.length, offset);
  } finally {
    closeSync(fd);
  }
  return new Float32Array(buf.buffer, buf.byteOffset, dim).slice();
}

/**
 * A chunk file's header: its row keys in row order, where its rows start, and its metadata; null
 * when there is no file, and null with one warning (naming the file and why; its rows are then
 * recomputed) when it is unreadable, not an F32 [n, dim] 'embeds' matrix, or its 'keys' are not
 * n strings that `keyOk` accepts (`whose` says whose keys they should be).
 */
function readChunkHeader(file: string, dim: number, keyOk: (k: string) => boolean, whose: string, warn: (m: string) => void): { keys: string[]; dataStart: number; metadata: Record<string, string> } | null {
  if (!existsSync(file)) return null;
  let f: SafetensorsFile | null = null;
  try {
    f = SafetensorsFile.open(file, 'a teacher cache chunk (a safetensors file)');
    const info = f.tensors.get('embeds');
    const keys = metadataKeys(f.metadata);
    let problem: string | null = null;
    if (!info || info.dtype !== 'F32' || info.shape.length !== 2) problem = "it has no F32 'embeds' matrix";
    else if (info.shape[1] !== dim) problem = `its rows have ${info.shape[1]} values each, but the model's embeddings have ${dim}`;
    else if (!Array.isArray(keys) || keys.length !== info.shape[0] || !keys.every((k) => typeof k === 'string' && keyOk(k))) problem = `its 'keys' metadata does not list its rows' keys${whose}`;
    if (problem || !info) {
      warn(`warning: ignoring teacher cache chunk ${file}: ${problem}; its embeddings are recomputed`);
      return null;
    }
    return { keys: keys as string[], dataStart: info.begin, metadata: { ...f.metadata } };
  } catch (e) {
    warn(`warning: ignoring unreadable teacher cache chunk ${file}: ${(e as Error).message}; its embeddings are recomputed`);
    return null;
  } finally {
    f?.close();
  }
}

export class TeacherCache {
  /** The chunk directory <cacheDir>/teacher-<key>. */
  readonly path: string;
  readonly blocks: readonly CacheBlock[];
  private readonly blockOf = new Map<string, { block: number; pos: number }>();
  private readonly states: ChunkState[];
  /** Rows set since the last save, per block. */
  private readonly pending = new Map<number, Map<string, Float32Array>>();
  private readonly warn: (message: string) => void;

  /**
   * The cache of model `key` for a dataset whose real images have the row keys `rowKeys` (in
   * dataset order; repeats are dropped). Converts a cache of the old single-file format once.
   */
  constructor(
    cacheDir: string,
    readonly key: string,
    readonly dim: number,
    rowKeys: readonly string[],
    opts: TeacherCacheOptions = {},
  ) {
    this.warn = opts.warn ?? ((m) => process.stderr.write(`${m}\n`));
    this.path = join(cacheDir, `teacher-${key}`);
    const blockRows = this.layout(opts.blockRows);
    const unique = [...new Set(rowKeys)];
    const blocks: CacheBlock[] = [];
    for (let b = 0; b * blockRows < unique.length; b++) {
      const keys = unique.slice(b * blockRows, (b + 1) * blockRows);
      keys.forEach((k, pos) => this.blockOf.set(k, { block: b, pos }));
      blocks.push({ index: b, keys, file: join(this.path, `chunk-${sha(JSON.stringify(keys))}.safetensors`) });
    }
    this.blocks = blocks;
    this.states = blocks.map(() => ({ kind: 'unknown' }));
    const legacy = join(cacheDir, `teacher-${key}.safetensors`);
    if (existsSync(legacy)) this.convertLegacy(legacy);
  }

  /** The block size: layout.json's when the cache exists (a different `asked` is a warning), else `asked` or the default, recorded when the first chunk is written. */
  private layout(asked: number | undefined): number {
    if (asked !== undefined && (!Number.isInteger(asked) || asked < 1)) throw new Error(`TeacherCache: blockRows must be a positive integer, got ${asked}`);
    const file = join(this.path, 'layout.json');
    if (existsSync(file)) {
      let saved: unknown;
      try {
        saved = (JSON.parse(readFileSync(file, 'utf8')) as { blockRows?: unknown }).blockRows;
      } catch {
        saved = undefined;
      }
      if (typeof saved === 'number' && Number.isInteger(saved) && saved >= 1) {
        if (asked !== undefined && asked !== saved) this.warn(`warning: teacher cache ${this.path} was created with ${saved} rows per chunk; using that, not ${asked}`);
        return saved;
      }
      this.warn(`warning: ${file} is damaged (expected {"blockRows": N}); using ${asked ?? BLOCK_ROWS} rows per chunk`);
    }
    this.blockRowsToRecord = asked ?? BLOCK_ROWS;
    return this.blockRowsToRecord;
  }

  /** A block size not yet recorded in layout.json (written with the first chunk). */
  private blockRowsToRecord: number | null = null;

  /** Rows the cache holds for this dataset (reads every chunk's header once). */
  get size(): number {
    let n = 0;
    this.blocks.forEach((_, b) => {
      const s = this.state(b);
      if (s.kind === 'present') n += s.count;
    });
    return n;
  }

  has(key: string): boolean {
    return this.locate(key) !== null;
  }

  /** The row of `key`, read from its chunk; undefined when the cache does not hold it. */
  get(key: string): Float32Array | undefined {
    const pending = this.pendingRow(key);
    if (pending) return pending;
    const at = this.locate(key);
    return at ? readRow(at.file, at.offset, this.dim) : undefined;
  }

  /** Stores a row (written by save()); a row that is not finite is not stored (it would poison later runs). Keys outside the dataset are ignored. */
  set(key: string, row: Float32Array): void {
    if (row.length !== this.dim) throw new Error(`TeacherCache: row has ${row.length} values, expected ${this.dim}`);
    if (!row.every(Number.isFinite)) return;
    const where = this.blockOf.get(key);
    if (!where) return;
    let m = this.pending.get(where.block);
    if (!m) this.pending.set(where.block, (m = new Map()));
    m.set(key, row.slice());
  }

  /** The keys of `block` the cache does not hold yet. */
  missingKeys(block: CacheBlock): string[] {
    return block.keys.filter((k) => !this.has(k));
  }

  /** Writes the chunk of every block with new rows (each merged with the rows its chunk held, atomically). */
  save(): void {
    for (const [b, rows] of this.pending) this.writeBlock(b, rows);
    this.pending.clear();
  }

  private pendingRow(key: string): Float32Array | undefined {
    const where = this.blockOf.get(key);
    return where ? this.pending.get(where.block)?.get(key) : undefined;
  }

  /** Where the row of `key` is on disk, or null. */
  private locate(key: string): { file: string; offset: number } | null {
    const where = this.blockOf.get(key);
    if (!where) return null;
    const s = this.state(where.block);
    if (s.kind !== 'present' || s.rowOf[where.pos] < 0) return null;
    return { file: this.blocks[where.block].file, offset: s.dataStart + s.rowOf[where.pos] * this.dim * 4 };
  }

  /** The block's chunk state, reading its header the first time. */
  private state(b: number): ChunkState {
    const s = this.states[b];
    if (s.kind !== 'unknown') return s;
    const next = this.readHeader(this.blocks[b]);
    this.states[b] = next;
    return next;
  }

  private readHeader(block: CacheBlock): ChunkState {
    const pos = new Map(block.keys.map((k, i) => [k, i]));
    const h = readChunkHeader(block.file, this.dim, (k) => pos.has(k), ' of this block', this.warn);
    if (!h) return { kind: 'absent' };
    const rowOf = new Int32Array(block.keys.length).fill(-1);
    h.keys.forEach((k, r) => (rowOf[pos.get(k)!] = r));
    return { kind: 'present', rowOf, dataStart: h.dataStart, count: h.keys.length };
  }

  /** Writes block `b`'s chunk: the rows it held and `rows`, in block order. */
  private writeBlock(b: number, rows: ReadonlyMap<string, Float32Array>): void {
    const block = this.blocks[b];
    const keys: string[] = [];
    const data: Float32Array[] = [];
    for (const k of block.keys) {
      const row = rows.get(k) ?? this.get(k);
      if (!row) continue;
      keys.push(k);
      data.push(row);
    }
    const flat = new Float32Array(keys.length * this.dim);
    data.forEach((r, i) => flat.set(r, i * this.dim));
    makeDirs(this.path);
    if (this.blockRowsToRecord !== null) {
      writeFileAtomic(join(this.path, 'layout.json'), JSON.stringify({ blockRows: this.blockRowsToRecord }) + '\n');
      this.blockRowsToRecord = null;
    }
    writeSafetensors(block.file, { embeds: { shape: [keys.length, this.dim], data: flat } }, { keys: JSON.stringify(keys) });
    this.states[b] = { kind: 'unknown' };
  }

  /** Moves the rows of an old single-file cache into chunks (finite rows of this dataset), then removes it. */
  private convertLegacy(path: string): void {
    let st: ReturnType<typeof readSafetensors>;
    try {
      st = readSafetensors(path);
    } catch (e) {
      this.warn(`warning: ignoring unreadable teacher cache ${path}: ${(e as Error).message}; its embeddings are recomputed`);
      return;
    }
    const t = st.tensors.get('embeds');
    const keys = metadataKeys(st.metadata, []);
    const problem = legacyShapeProblem(t, keys, this.dim);
    if (problem || !t) {
      this.warn(`warning: ignoring teacher cache ${path}: ${problem}; its embeddings are recomputed`);
      return;
    }
    let dropped = 0;
    let moved = 0;
    let other = 0;
    let added = 0;
    (keys as string[]).forEach((k, i) => {
      const row = t.data.subarray(i * this.dim, (i + 1) * this.dim);
      if (!row.every(Number.isFinite)) dropped++;
      else if (!this.blockOf.has(k)) other++;
      else {
        if (!this.has(k)) {
          this.set(k, row);
          added++;
        }
        moved++;
      }
    });
    this.save();
    // The old file was one per model, shared by every dataset: it goes only when no other dataset's rows are left in it.
    if (other === 0) rmSync(path, { force: true });
    else if (added === 0 && dropped === 0) return;
    this.warn(
      `teacher cache: converted ${path} (the earlier single-file format) into chunks in ${this.path}: ${moved} of its ${(keys as string[]).length} rows belong to this dataset` +
        (dropped ? `; dropped ${dropped} that are not finite (NaN or ±Inf), which are recomputed` : '') +
        (other ? `; kept the file for its ${other} rows of other datasets (converted when those are used)` : '; removed the file'),
    );
  }
}

// --- WebDataset shards -----------------------------------------------------------------------------
//
// A dataset of tar shards (io/webdataset.ts) is never listed whole: its cache has one chunk per
// shard, named by the shard file's key (fileKey: its absolute path, size and mtime), so a row is
// found from the shard and the sample's key alone:
//
//   <cacheDir>/teacher-<modelKey>/shard-<fileKey(shard)>.safetensors
//       embeds [n, D] F32, metadata "keys": the samples' keys in row order, "complete": "1" once
//       every sample of the shard was embedded (samples whose real image does not decode are
//       left out of a complete chunk; they are skipped in training too)
//
// A row's key is "<fileKey(shard)>/<sample key>". Headers of the most recently used chunks are
// kept (SHARD_HEADERS_KEPT), so memory is bounded by the shards in use, not by the dataset.

/** What the trainer needs of a cache: rows by key (a TeacherCache's fileKey, or a ShardTeacherCache's shardRowKey). */
export type RowCache = Pick<TeacherCache, 'path' | 'has' | 'get' | 'set'>;

/** Chunk headers kept in memory at once. */
const SHARD_HEADERS_KEPT = 8;

interface ShardChunk {
  rowOf: Map<string, number>;
  dataStart: number;
  complete: boolean;
}

/** The row key of sample `key` of the shard with identity `identity`. */
export function shardRowKey(identity: string, key: string): string {
  return `${identity}/${key}`;
}

export class ShardTeacherCache {
  /** The chunk directory <cacheDir>/teacher-<key>. */
  readonly path: string;
  private readonly headers = new Map<string, ShardChunk | null>();
  private readonly warn: (message: string) => void;

  constructor(
    cacheDir: string,
    readonly key: string,
    readonly dim: number,
    opts: { warn?: (message: string) => void } = {},
  ) {
    this.warn = opts.warn ?? ((m) => process.stderr.write(`${m}\n`));
    this.path = join(cacheDir, `teacher-${key}`);
  }

  /** The chunk file of the shard with identity `identity`. */
  chunkFile(identity: string): string {
    return join(this.path, `shard-${identity}.safetensors`);
  }

  /** Whether every sample of the shard has been embedded. */
  isComplete(identity: string): boolean {
    return this.chunk(identity)?.complete ?? false;
  }

  has(rowKey: string): boolean {
    return this.locate(rowKey) !== null;
  }

  get(rowKey: string): Float32Array | undefined {
    const at = this.locate(rowKey);
    return at ? readRow(at.file, at.offset, this.dim) : undefined;
  }

  /** Training computes a row the cache lacks only when a chunk was damaged; such rows are not written back (cache-teacher fills chunks). */
  set(_rowKey: string, _row: Float32Array): void {}

  /**
   * Writes the shard's chunk: the rows it held and `rows` (sample key → row; rows that are not
   * finite are left out), `complete` when every sample of the shard is now covered.
   */
  writeChunk(identity: string, rows: ReadonlyMap<string, Float32Array>, complete: boolean): void {
    const merged = new Map<string, Float32Array>();
    const old = this.chunk(identity);
    if (old) for (const k of old.rowOf.keys()) merged.set(k, this.get(shardRowKey(identity, k))!);
    for (const [k, r] of rows) if (r.length === this.dim && r.every(Number.isFinite)) merged.set(k, r);
    const keys = [...merged.keys()];
    const flat = new Float32Array(keys.length * this.dim);
    keys.forEach((k, i) => flat.set(merged.get(k)!, i * this.dim));
    makeDirs(this.path);
    writeSafetensors(this.chunkFile(identity), { embeds: { shape: [keys.length, this.dim], data: flat } }, { keys: JSON.stringify(keys), complete: complete ? '1' : '0' });
    this.headers.delete(identity);
  }

  private locate(rowKey: string): { file: string; offset: number } | null {
    const slash = rowKey.indexOf('/');
    if (slash < 0) return null;
    const identity = rowKey.slice(0, slash);
    const c = this.chunk(identity);
    const r = c?.rowOf.get(rowKey.slice(slash + 1));
    if (!c || r === undefined) return null;
    return { file: this.chunkFile(identity), offset: c.dataStart + r * this.dim * 4 };
  }

  /** The shard's chunk header (null: none, or unusable), read once while it is among the recently used. */
  private chunk(identity: string): ShardChunk | null {
    if (this.headers.has(identity)) {
      const c = this.headers.get(identity)!;
      this.headers.delete(identity);
      this.headers.set(identity, c);
      return c;
    }
    const c = this.readChunk(this.chunkFile(identity));
    this.headers.set(identity, c);
    if (this.headers.size > SHARD_HEADERS_KEPT) this.headers.delete(this.headers.keys().next().value as string);
    return c;
  }

  private readChunk(file: string): ShardChunk | null {
    const h = readChunkHeader(file, this.dim, () => true, '', this.warn);
    return h ? { rowOf: new Map(h.keys.map((k, i) => [k, i])), dataStart: h.dataStart, complete: h.metadata.complete === '1' } : null;
  }
}
