// Reading files that must be regular files (a symbolic link to one is fine). A directory, FIFO,
// socket or device where genalign expects a file would otherwise give a bare
// "EISDIR: illegal operation on a directory, read" without a path, or block forever (a FIFO
// without a writer). The file is opened with O_NONBLOCK, which changes nothing for regular
// files and keeps the open of a FIFO from blocking, and is checked with fstat on the open
// descriptor, so what is checked is what is read. In the lowest layer (like atomic-file.ts)
// so every layer can use it.
import { closeSync, constants, fstatSync, openSync, readFileSync, statSync, type Stats } from 'node:fs';

/** What a file system entry is, in words, when it is not a regular file; null for a regular file. */
export function nonFileKind(stats: Stats): string | null {
  if (stats.isFile()) return null;
  if (stats.isDirectory()) return 'a directory';
  if (stats.isFIFO()) return 'a FIFO (named pipe)';
  if (stats.isSocket()) return 'a socket';
  if (stats.isCharacterDevice()) return 'a character device';
  if (stats.isBlockDevice()) return 'a block device';
  return 'not a regular file';
}

function openProblem(path: string, e: unknown, expected: string): string {
  const code = (e as NodeJS.ErrnoException).code;
  // Some entries cannot even be opened (a socket gives ENXIO): say what they are.
  let kind: string | null = null;
  try {
    kind = nonFileKind(statSync(path));
  } catch {
    // missing or unreadable: described by the code below
  }
  if (kind) return `${path} is ${kind}; expected ${expected}`;
  if (code === 'ENOENT') return `${path} does not exist; expected ${expected}`;
  if (code === 'EACCES' || code === 'EPERM') return `${path}: cannot read it (permission denied); expected ${expected}`;
  if (code === 'ELOOP') return `${path}: cannot read it (too many levels of symbolic links); expected ${expected}`;
  return `${path}: cannot read it (${code ?? (e as Error).message}); expected ${expected}`;
}

/**
 * Opens `path` for reading and returns the descriptor (the caller closes it). Throws an Error
 * naming the path and `expected` (what the file should be, e.g. "the model's config.json (a
 * JSON file)") when it is missing, unreadable or not a regular file.
 */
export function openRegularFile(path: string, expected: string): number {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (e) {
    throw new Error(openProblem(path, e, expected));
  }
  let kind: string | null;
  try {
    kind = nonFileKind(fstatSync(fd));
  } catch (e) {
    closeSync(fd);
    throw new Error(openProblem(path, e, expected));
  }
  if (kind) {
    closeSync(fd);
    throw new Error(`${path} is ${kind}; expected ${expected}`);
  }
  return fd;
}

/** The bytes of `path`, which must be a regular file; errors as openRegularFile. */
export function readRegularFile(path: string, expected: string): Buffer {
  const fd = openRegularFile(path, expected);
  try {
    return readFileSync(fd);
  } catch (e) {
    throw new Error(openProblem(path, e, expected));
  } finally {
    closeSync(fd);
  }
}

/** The UTF-8 text of `path`, which must be a regular file; errors as openRegularFile. */
export function readRegularTextFile(path: string, expected: string): string {
  return readRegularFile(path, expected).toString('utf8');
}
