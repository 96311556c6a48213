// File operations for tests: the real ones, counted and recorded, with one of them made to
// fail. `at` is the 1-based number of the mutation that fails:
//   'enospc'  it throws the ENOSPC FileOpError a full disk gives (a write or append first writes
//             half of its bytes, as a disk that fills up mid-write does);
//   'kill'    the process dies by SIGKILL right there (a write or append first writes half of its
//             bytes), so no catch or finally block runs — a real crash.
import { fileOpError, nodeFiles, type FileOpName, type FileOps, type WriteOptions } from '../../src/platform/atomic-file.ts';

export type FaultMode = 'kill' | 'enospc';

export interface Fault {
  at: number;
  mode: FaultMode;
}

export interface FileOpRecord {
  n: number;
  op: FileOpName;
  path: string;
  to?: string;
}

function halfOf(chunks: readonly (Uint8Array | string)[]): Uint8Array {
  const all = Buffer.concat(chunks.map((c) => (typeof c === 'string' ? Buffer.from(c, 'utf8') : Buffer.from(c.buffer, c.byteOffset, c.byteLength))));
  return all.subarray(0, Math.floor(all.length / 2));
}

export class FaultyFiles implements FileOps {
  readonly ops: FileOpRecord[] = [];
  /** The operation that failed (null until the fault fires). */
  failed: FileOpRecord | null = null;

  constructor(
    private readonly fault: Fault | null = null,
    private readonly onOp?: (r: FileOpRecord) => void,
  ) {}

  /** Records the operation; true when it is the one that must fail. */
  private hit(op: FileOpName, path: string, to?: string): boolean {
    const r: FileOpRecord = { n: this.ops.length + 1, op, path, ...(to !== undefined ? { to } : {}) };
    this.ops.push(r);
    this.onOp?.(r);
    if (this.fault?.at !== r.n) return false;
    this.failed = r;
    return true;
  }

  private fail(op: FileOpName, path: string, to?: string): never {
    if (this.fault!.mode === 'kill') {
      process.kill(process.pid, 'SIGKILL');
      // SIGKILL to oneself is delivered before kill() returns; block in case it is not yet.
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
    }
    const e = Object.assign(new Error(`ENOSPC: no space left on device, ${op} '${path}'`), { code: 'ENOSPC' });
    throw fileOpError(op, path, e, to);
  }

  /** The half of a write that lands before the failure; the fault fires whether or not it succeeded (an O_EXCL create of an existing file, say). */
  private partially(write: () => void): void {
    try {
      write();
    } catch {
      // The operation fails at this point either way.
    }
  }

  mkdir(path: string): void {
    if (this.hit('mkdir', path)) this.fail('mkdir', path);
    nodeFiles.mkdir(path);
  }

  write(path: string, chunks: readonly (Uint8Array | string)[], opts?: WriteOptions): void {
    if (this.hit('write', path)) {
      this.partially(() => nodeFiles.write(path, [halfOf(chunks)], opts));
      this.fail('write', path);
    }
    nodeFiles.write(path, chunks, opts);
  }

  append(path: string, text: string): void {
    if (this.hit('append', path)) {
      this.partially(() => nodeFiles.append(path, text.slice(0, Math.floor(text.length / 2))));
      this.fail('append', path);
    }
    nodeFiles.append(path, text);
  }

  rename(from: string, to: string): void {
    if (this.hit('rename', from, to)) this.fail('rename', from, to);
    nodeFiles.rename(from, to);
  }

  link(from: string, to: string): void {
    if (this.hit('link', from, to)) this.fail('link', from, to);
    nodeFiles.link(from, to);
  }

  unlink(path: string): void {
    if (this.hit('unlink', path)) this.fail('unlink', path);
    nodeFiles.unlink(path);
  }

  rmdir(path: string): void {
    if (this.hit('rmdir', path)) this.fail('rmdir', path);
    nodeFiles.rmdir(path);
  }
}
