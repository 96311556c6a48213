// File mutations, in one place, and the crash-safe patterns built from them.
//
// Everything that changes a run directory (the trainer, checkpoints, the PEFT and safetensors
// writers, the eval outputs) goes through a `FileOps`: six primitives, each one file-system
// mutation (mkdir, write, append, rename, link, unlink, rmdir). `nodeFiles` is the real one. A
// test substitutes its own to fail (or kill the process) at the N-th mutation, which is how the
// crash-consistency test reaches every point where a run can be interrupted. Failures of the
// real primitives are `FileOpError`s whose message names the operation and the path (an ENOSPC
// while appending metrics.jsonl says which file), and which keep the errno `code`.
//
// The patterns:
//   writeFileAtomic  temp file in the same directory (write + fsync), then rename over the
//                    target: a crash or a full disk leaves the previous file intact.
//   makeDirs         mkdir -p one level at a time (Node's recursive mkdirSync never returns when
//                    mkdir fails with ENOENT under a parent that exists, e.g. anywhere in /proc).
//   removeTree       unlink every file, then rmdir every directory, bottom-up.
// It sits in the lowest layer (like cache-dir.ts) because every layer writes files: the matmul
// autotune cache in ops/ as well as io/ and train/.
import { openSync, writeSync, fsyncSync, closeSync, renameSync, unlinkSync, mkdirSync, existsSync, statSync, lstatSync, readdirSync, rmdirSync, linkSync, appendFileSync } from 'node:fs';
import { dirname, basename, join, resolve } from 'node:path';

export type FileOpName = 'mkdir' | 'write' | 'append' | 'rename' | 'link' | 'unlink' | 'rmdir';

/** A failed file mutation: `op` on `path`, with the errno `code` of the underlying error. */
export class FileOpError extends Error {
  constructor(
    readonly op: FileOpName,
    readonly path: string,
    readonly code: string | undefined,
    /** The underlying error's own message (e.g. "ENOSPC: no space left on device, write"). */
    readonly detail: string,
    message: string,
  ) {
    super(message);
  }
}

export interface WriteOptions {
  /** Fail with EEXIST instead of replacing an existing file (O_EXCL). */
  exclusive?: boolean;
}

/** The file-system mutations genalign makes; each call is one mutation. */
export interface FileOps {
  /** Creates one directory level (its parent must exist). */
  mkdir(path: string): void;
  /** Creates or truncates `path` with `chunks` as its whole content, fsynced before it returns. */
  write(path: string, chunks: readonly (Uint8Array | string)[], opts?: WriteOptions): void;
  /** Appends `text` to `path` (created if missing). */
  append(path: string, text: string): void;
  rename(from: string, to: string): void;
  /** Hard link `to` → the file `from` (fails with EEXIST when `to` exists). */
  link(from: string, to: string): void;
  unlink(path: string): void;
  /** Removes an empty directory. */
  rmdir(path: string): void;
}

const VERBS: Record<FileOpName, string> = {
  mkdir: 'create the directory',
  write: 'write',
  append: 'append to',
  rename: 'rename',
  link: 'link',
  unlink: 'remove',
  rmdir: 'remove the directory',
};

/** The FileOpError for `op` on `path` (and `to`, for rename and link) that failed with the errno error `e`. */
export function fileOpError(op: FileOpName, path: string, e: unknown, to?: string): FileOpError {
  const err = e as NodeJS.ErrnoException;
  const what = to === undefined ? path : `${path} to ${to}`;
  return new FileOpError(op, path, err.code, err.message, `Could not ${VERBS[op]} ${what}: ${err.message}`);
}

function bytesOf(chunk: Uint8Array | string): Uint8Array {
  return typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
}

/** The real file system. */
export const nodeFiles: FileOps = {
  mkdir(path) {
    try {
      mkdirSync(path);
    } catch (e) {
      throw fileOpError('mkdir', path, e);
    }
  },
  write(path, chunks, opts = {}) {
    let fd: number | null = null;
    try {
      fd = openSync(path, opts.exclusive ? 'wx' : 'w');
      for (const c of chunks) {
        const bytes = bytesOf(c);
        let off = 0;
        while (off < bytes.byteLength) off += writeSync(fd, bytes, off, bytes.byteLength - off);
      }
      fsyncSync(fd);
    } catch (e) {
      throw fileOpError('write', path, e);
    } finally {
      if (fd !== null) closeSync(fd);
    }
  },
  append(path, text) {
    try {
      appendFileSync(path, text);
    } catch (e) {
      throw fileOpError('append', path, e);
    }
  },
  rename(from, to) {
    try {
      renameSync(from, to);
    } catch (e) {
      throw fileOpError('rename', from, e, to);
    }
  },
  link(from, to) {
    try {
      linkSync(from, to);
    } catch (e) {
      throw fileOpError('link', from, e, to);
    }
  },
  unlink(path) {
    try {
      unlinkSync(path);
    } catch (e) {
      throw fileOpError('unlink', path, e);
    }
  },
  rmdir(path) {
    try {
      rmdirSync(path);
    } catch (e) {
      throw fileOpError('rmdir', path, e);
    }
  },
};

/** `mkdir -p`, one level at a time. */
export function makeDirs(dir: string, files: FileOps = nodeFiles): void {
  const missing: string[] = [];
  for (let d = resolve(dir); !existsSync(d); d = dirname(d)) {
    missing.push(d);
    if (dirname(d) === d) break;
  }
  for (const d of missing.reverse()) {
    try {
      files.mkdir(d);
    } catch (e) {
      if ((e as FileOpError).code !== 'EEXIST') throw e;
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
    return `cannot write into ${d} (${errnoReason(e)})`;
  }
}

/** A short reason for a failed create/write: "permission denied", "read-only file system", … */
export function errnoReason(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  if (code === 'EROFS') return 'read-only file system';
  if (code === 'ENOENT') return 'it does not accept new files';
  if (code === 'ENOSPC') return 'no space left on device';
  return code ?? (e as Error).message;
}

/** Name of writeFileAtomic's temporary file for `path` (dot-prefixed, ends in .tmp). */
function tempNameFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${Date.now()}.tmp`);
}

/**
 * Whether a directory entry is a temporary file of this module (`.<name>.<pid>.<time>.tmp`):
 * what a crash between writing and renaming leaves behind.
 */
export function isAtomicTemp(name: string): boolean {
  return /^\..+\.\d+\.\d+\.tmp$/.test(name);
}

/** Writes `path` atomically (temp file + fsync + rename), creating its directory if needed. */
export function writeFileAtomic(path: string, chunks: Uint8Array | string | readonly (Uint8Array | string)[], files: FileOps = nodeFiles): void {
  const list = typeof chunks === 'string' || chunks instanceof Uint8Array ? [chunks] : chunks;
  const tmp = tempNameFor(path);
  let written = false;
  try {
    makeDirs(dirname(path), files);
    files.write(tmp, list);
    written = true;
    files.rename(tmp, path);
  } catch (e) {
    if (written || existsSync(tmp)) {
      try {
        files.unlink(tmp);
      } catch {
        // Left for the next start's cleanup (isAtomicTemp); the original error is what matters.
      }
    }
    // Named by the file being written, not its temporary name.
    const detail = e instanceof FileOpError ? (e.path === tmp ? e.detail : e.message) : (e as Error).message;
    throw new FileOpError('write', path, (e as NodeJS.ErrnoException).code, detail, `Could not write ${path}: ${detail}`);
  }
}

/** Removes `path` and everything under it (a missing path is fine). Symlinks are removed, not followed. */
export function removeTree(path: string, files: FileOps = nodeFiles): void {
  let st;
  try {
    st = lstatSync(path);
  } catch {
    return;
  }
  if (st.isDirectory()) {
    for (const name of readdirSync(path)) removeTree(join(path, name), files);
    files.rmdir(path);
  } else {
    files.unlink(path);
  }
}
