// Where genalign keeps per-user caches (matmul autotune results, teacher embeddings):
// $GENALIGN_CACHE_DIR, or ~/.cache/genalign. In the lowest layer so every layer can use it.
import { homedir } from 'node:os';
import { join } from 'node:path';

export function defaultCacheDir(): string {
  return process.env.GENALIGN_CACHE_DIR ?? join(homedir(), '.cache', 'genalign');
}
