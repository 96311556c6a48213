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
export function modelKey(source: string, cfg: ClipVisionConfig, pre: PreprocessConfig, seed: number): string {
  let weights = `preset:${source}:seed${seed}`;
  if (existsSync(source) && statSync(source).isDirectory()) {
    const index = join(source, 'model.safetensors.index.json');
    const names = ['model.safetensors', 'model.safetensors.index.json', 'config.json', ...(existsSync(index) ? shardFiles(index) : [])];
    const files = names.map((f) => join(source, f)).filter((f) => existsSync(f));
    weights = files.map((f) => `${resolve(f)}:${statSync(f).size}:${statSync(f).mtimeMs}`).join('|');
  }
  return sha(JSON.stringify({ weights, cfg, pre }));
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

export class TeacherCache {
  private readonly rows = new Map<string, Float32Array>();
  private dirty = false;
  readonly path: string;

  constructor(
    cacheDir: string,
    readonly key: string,
    readonly dim: number,
  ) {
    this.path = join(cacheDir, `teacher-${key}.safetensors`);
    if (existsSync(this.path)) {
      try {
        const st = readSafetensors(this.path);
        const t = st.tensors.get('embeds');
        const keys = JSON.parse(st.metadata.keys ?? '[]') as string[];
        if (t && t.shape[1] === dim && t.shape[0] === keys.length) {
          keys.forEach((k, i) => this.rows.set(k, t.data.slice(i * dim, (i + 1) * dim)));
        }
      } catch (e) {
        // A damaged cache is only a cache: start over (and say so).
        process.stderr.write(`warning: ignoring unreadable teacher cache ${this.path}: ${(e as Error).message}\n`);
      }
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

  set(key: string, row: Float32Array): void {
    if (row.length !== this.dim) throw new Error(`TeacherCache: row has ${row.length} values, expected ${this.dim}`);
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
