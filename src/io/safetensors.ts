// safetensors files on disk: SafetensorsFile (positioned reads) and the writer. The format's
// parsing and checks, and the reader over bytes in memory, are in safetensors-core.ts (no file
// system), re-exported here.
import { readSync, fstatSync, closeSync } from 'node:fs';
import { openRegularFile } from '../platform/regular-file.ts';
import { writeFileAtomic } from '../platform/atomic-file.ts';
import { SafetensorsError, SafetensorsReader, fail } from './safetensors-core.ts';

export * from './safetensors-core.ts';

/** A safetensors file on disk, read with positioned reads (only the tensors asked for are read). */
export class SafetensorsFile extends SafetensorsReader {
  private fd: number | null;

  private constructor(path: string, fd: number, fileSize: number) {
    super(path, fileSize);
    this.fd = fd;
  }

  /**
   * Opens and validates the header of `path`, which must be a regular file. `expected` says what
   * it should be in the error for a directory, FIFO or other non-file (e.g. "the adapter
   * weights, a safetensors file").
   */
  static open(path: string, expected = 'a safetensors file'): SafetensorsFile {
    let fd: number;
    try {
      fd = openRegularFile(path, expected);
    } catch (e) {
      throw new SafetensorsError((e as Error).message);
    }
    try {
      const size = fstatSync(fd).size;
      const f = new SafetensorsFile(path, fd, size);
      f.parseHeader();
      return f;
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  protected readAt(offset: number, length: number): Buffer {
    if (this.fd === null) fail(this.path, 'file already closed');
    const buf = Buffer.alloc(length);
    let got = 0;
    while (got < length) {
      const n = readSync(this.fd, buf, got, length - got, offset + got);
      if (n === 0) fail(this.path, `unexpected end of file at byte ${offset + got} (file is ${this.fileSize} bytes): truncated?`);
      got += n;
    }
    return buf;
  }

  override close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
}

/** Reads every tensor of a file as f32 (small files: fixtures, adapters). */
export function readSafetensors(path: string): { tensors: Map<string, { shape: number[]; data: Float32Array }>; metadata: Record<string, string> } {
  const f = SafetensorsFile.open(path);
  try {
    const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
    for (const [name, info] of f.tensors) tensors.set(name, { shape: info.shape, data: f.float32(name) });
    return { tensors, metadata: { ...f.metadata } };
  } finally {
    f.close();
  }
}

export interface TensorToWrite {
  shape: readonly number[];
  data: Float32Array;
}

/** Serialises F32 tensors (sorted by name, like the Python library) into safetensors bytes. */
export function encodeSafetensors(tensors: Record<string, TensorToWrite>, metadata?: Record<string, string>): Uint8Array[] {
  const names = Object.keys(tensors).sort();
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length) header.__metadata__ = metadata;
  let off = 0;
  for (const name of names) {
    const t = tensors[name];
    const numel = t.shape.reduce((a, d) => a * d, 1);
    if (numel !== t.data.length) throw new Error(`safetensors: tensor '${name}' shape [${t.shape.join(', ')}] does not match ${t.data.length} values`);
    header[name] = { dtype: 'F32', shape: [...t.shape], data_offsets: [off, off + numel * 4] };
    off += numel * 4;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8); // align data to 8 bytes
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  const chunks: Uint8Array[] = [head, Buffer.from(json, 'utf8')];
  for (const name of names) {
    const d = tensors[name].data;
    chunks.push(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
  }
  return chunks;
}

/** Writes F32 tensors atomically (temp file + rename). */
export function writeSafetensors(path: string, tensors: Record<string, TensorToWrite>, metadata?: Record<string, string>): void {
  writeFileAtomic(path, encodeSafetensors(tensors, metadata));
}
