// Atomic file writes: write a temp file in the same directory, fsync, then rename over the
// target. A crash or a full disk mid-write leaves the previous file intact. In the lowest layer
// (like cache-dir.ts) so every layer can use it: the matmul autotune cache in ops/ writes
// through it as well as io/ and train/.
import { openSync, writeSync, fsyncSync, closeSync, renameSync, unlinkSync, mkdirSync, existsSync, statSync } from 'node:fs';
import { dirname, basename, join, resolve } from 'node:path';

/**
 * `mkdir -p`, one level at a time. Node's mkdirSync(dir, { recursive: true }) never returns
 * when mkdir fails with ENOENT under a parent that exists (e.g. anywhere in /proc); here that
 * failure is an ordinary error.
 */
export function makeDirs(dir: string): void {
  const missing: string[] = [];
  for (let d = resolve(dir); !existsSync(d); d = dirname(d)) {
    missing.push(d);
    if (dirname(d) === d) break;
  }
  for (const d of missing.reverse()) {
    try {
      mkdirSync(d);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
  }
}

/**
 * Why new files cannot be created in `dir`, or null when they can. A missing `dir` is judged by
 * its nearest existing ancestor (where makeDirs would start), and nothing is created. The test
 * creates and removes a probe file: access() passes everything for root, and read-only or
 * virtual file systems (/proc) only refuse the create.
 */
export function writableProblem(dir: string): string | null {
  let d = resolve(dir);
  while (!existsSync(d)) d = dirname(d);
  if (!statSync(d).isDirectory()) return d === resolve(dir) ? `${d} is a file, not a directory` : `${d} is a file, so nothing can be created under it`;
  try {
    const probe = join(d, `.genalign-write-test-${process.pid}`);
    closeSync(openSync(probe, 'wx'));
    unlinkSync(probe);
    return null;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'EACCES' || code === 'EPERM' ? 'permission denied' : code === 'EROFS' ? 'read-only file system' : code === 'ENOENT' ? 'it does not accept new files' : (code ?? (e as Error).message);
    return `cannot write into ${d} (${why})`;
  }
}

export function writeFileAtomic(path: string, chunks: Uint8Array | string | (Uint8Array | string)[]): void {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${Date.now()}.tmp`);
  const list = Array.isArray(chunks) ? chunks : [chunks];
  let fd: number | null = null;
  try {
    makeDirs(dir);
    fd = openSync(tmp, 'w');
    for (const c of list) {
      const bytes = typeof c === 'string' ? Buffer.from(c, 'utf8') : c;
      let off = 0;
      while (off < bytes.byteLength) off += writeSync(fd, bytes, off, bytes.byteLength - off);
    }
    fsyncSync(fd);
    closeSync(fd);
    fd = null;
    renameSync(tmp, path);
  } catch (e) {
    if (fd !== null) closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch {
      // temp file may not exist
    }
    throw new Error(`Could not write ${path}: ${(e as Error).message}`);
  }
}
