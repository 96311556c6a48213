// Teacher-embedding cache. The teacher is frozen, so f_r(real image) depends only on the model,
// the file and the preprocessing. Embeddings are computed once and stored in
//   <cacheDir>/teacher-<modelKey>.safetensors    embeds [N, D] + metadata "keys" (row order)
// where modelKey hashes the model identity and the preprocessing, and each row's key hashes the
// file's absolute path, size and mtime (so an edited image is re-embedded).
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { makeDirs } from '../gpu/atomic-file.ts';
import { join, resolve } from 'node:path';
import { readSafetensors, writeSafetensors } from '../io/safetensors.ts';
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

/** Why the cache file's contents cannot be used at all, or null when its rows can be read. */
function cacheShapeProblem(embeds: { shape: number[] } | undefined, keys: unknown, dim: number): string | null {
  if (!embeds || embeds.shape.length !== 2) return "it has no 'embeds' matrix";
  if (!Array.isArray(keys) || !keys.every((k) => typeof k === 'string')) return "its 'keys' metadata is not a list of strings";
  if (embeds.shape[1] !== dim) return `its ${embeds.shape[0]} rows have ${embeds.shape[1]} values each, but the model's embeddings have ${dim}`;
  if (embeds.shape[0] !== keys.length) return `it has ${embeds.shape[0]} rows but ${keys.length} keys`;
  return null;
}

export class TeacherCache {
  private readonly rows = new Map<string, Float32Array>();
  private dirty = false;
  readonly path: string;

  /**
   * Loads `<cacheDir>/teacher-<key>.safetensors` when it exists. The cache is only a cache:
   * rows that are not finite (NaN or ±Inf) are dropped, and a file of the wrong shape is
   * ignored, each with one warning through `warn` (default: stderr). Dropped rows are
   * recomputed by whoever asks for them, and the next save() rewrites the file without them.
   */
  constructor(
    cacheDir: string,
    readonly key: string,
    readonly dim: number,
    warn: (message: string) => void = (m) => process.stderr.write(`${m}\n`),
  ) {
    this.path = join(cacheDir, `teacher-${key}.safetensors`);
    if (!existsSync(this.path)) return;
    try {
      const st = readSafetensors(this.path);
      const t = st.tensors.get('embeds');
      const keys: unknown = JSON.parse(st.metadata.keys ?? '[]');
      const problem = cacheShapeProblem(t, keys, dim);
      if (problem || !t) {
        warn(`warning: ignoring teacher cache ${this.path}: ${problem}; its embeddings are recomputed`);
        this.dirty = true;
        return;
      }
      const keyList = keys as string[];
      let dropped = 0;
      keyList.forEach((k, i) => {
        const row = t.data.slice(i * dim, (i + 1) * dim);
        if (row.every(Number.isFinite)) this.rows.set(k, row);
        else dropped++;
      });
      if (dropped > 0) {
        warn(`warning: teacher cache ${this.path}: dropped ${dropped} of ${keyList.length} cached embedding(s) that are not finite (NaN or ±Inf); they are recomputed`);
        this.dirty = true;
      }
    } catch (e) {
      // A damaged cache is only a cache: start over (and say so).
      warn(`warning: ignoring unreadable teacher cache ${this.path}: ${(e as Error).message}`);
    }
  }

  get size(): number {
    return this.rows.size;
  }

  has(key: string): boolean {
    return this.rows.has(key);
  }

  get(key: string): Float32Array | undefined {
    return this.rows.get(key);
  }

  /** Stores a row; a row that is not finite is not stored (it would poison later runs). */
  set(key: string, row: Float32Array): void {
    if (row.length !== this.dim) throw new Error(`TeacherCache: row has ${row.length} values, expected ${this.dim}`);
    if (!row.every(Number.isFinite)) return;
    this.rows.set(key, row);
    this.dirty = true;
  }

  /** Writes the cache atomically if anything changed. */
  save(): void {
    if (!this.dirty) return;
    makeDirs(join(this.path, '..'));
    const keys = [...this.rows.keys()];
    const data = new Float32Array(keys.length * this.dim);
    keys.forEach((k, i) => data.set(this.rows.get(k)!, i * this.dim));
    writeSafetensors(this.path, { embeds: { shape: [keys.length, this.dim], data } }, { keys: JSON.stringify(keys) });
    this.dirty = false;
  }
}
