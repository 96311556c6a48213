// The safetensors format without a file system: header parsing and validation, tensor access
// and dtype conversion over any byte source (SafetensorsReader), and a reader over bytes in
// memory (SafetensorsBytes: what the browser bundle fetches). io/safetensors.ts adds the file
// reader (SafetensorsFile) and the writer.
//   [u64 little-endian N][N bytes of JSON header][data]
// The header maps tensor names to {dtype, shape, data_offsets: [begin, end]} (offsets relative
// to the start of the data section) and may hold "__metadata__": {string: string}.
//
// The reader validates everything against the file size before touching data, so a truncated
// or inconsistent file gives an error naming the file and the tensor instead of garbage. As the
// format requires, the tensors' byte ranges, sorted, must tile the data section exactly: from
// byte 0 to the end of the file, with no gap and no overlap. The header itself may end in
// spaces (writers pad it so the data starts 8-byte aligned).
import { f32BitsToF16Bits, f32ToF16Bits } from '../tensor/tensor.ts';

export type SafetensorsDType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

const DTYPE_BYTES: Record<SafetensorsDType, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
const MAX_HEADER = 100 * 1024 * 1024;

export interface TensorInfo {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  /** Absolute byte range in the file. */
  begin: number;
  end: number;
}

export class SafetensorsError extends Error {}

export function fail(path: string, msg: string): never {
  throw new SafetensorsError(`${path}: ${msg}`);
}

export abstract class SafetensorsReader {
  readonly tensors = new Map<string, TensorInfo>();
  readonly metadata: Record<string, string> = {};

  protected constructor(
    readonly path: string,
    readonly fileSize: number,
  ) {}

  /** `length` bytes at `offset` of the file; fails (naming the file) when the source ends first. */
  protected abstract readAt(offset: number, length: number): Uint8Array;

  protected parseHeader(): void {
    const p = this.path;
    if (this.fileSize < 8) fail(p, `file is ${this.fileSize} bytes, too short for a safetensors header (truncated or not a safetensors file)`);
    const lenBytes = this.readAt(0, 8);
    const n = Number(new DataView(lenBytes.buffer, lenBytes.byteOffset, 8).getBigUint64(0, true));
    if (n > MAX_HEADER) fail(p, `header length ${n} is implausible (> ${MAX_HEADER}); not a safetensors file?`);
    if (8 + n > this.fileSize) fail(p, `header claims ${n} bytes but the file has only ${this.fileSize - 8} after the length prefix: the file is truncated`);
    let header: unknown;
    try {
      header = JSON.parse(new TextDecoder('utf-8').decode(this.readAt(8, n)));
    } catch (e) {
      fail(p, `header is not valid JSON (${(e as Error).message})`);
    }
    if (!header || typeof header !== 'object' || Array.isArray(header)) fail(p, 'header is not a JSON object');
    const dataStart = 8 + n;
    const dataLen = this.fileSize - dataStart;
    for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
      if (name === '__metadata__') {
        if (raw && typeof raw === 'object') {
          for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
            if (typeof v !== 'string') fail(p, `__metadata__.${k} must be a string`);
            this.metadata[k] = v;
          }
        }
        continue;
      }
      const e = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
      if (!e || typeof e !== 'object') fail(p, `tensor '${name}': entry is not an object`);
      if (typeof e.dtype !== 'string' || !(e.dtype in DTYPE_BYTES)) fail(p, `tensor '${name}': unsupported dtype ${JSON.stringify(e.dtype)} (supported: ${Object.keys(DTYPE_BYTES).join(', ')})`);
      const dtype = e.dtype as SafetensorsDType;
      if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isInteger(d) && d >= 0)) fail(p, `tensor '${name}': shape ${JSON.stringify(e.shape)} is not a list of non-negative integers`);
      const shape = e.shape as number[];
      if (!Array.isArray(e.data_offsets) || e.data_offsets.length !== 2 || !e.data_offsets.every((d) => Number.isInteger(d) && d >= 0)) {
        fail(p, `tensor '${name}': data_offsets ${JSON.stringify(e.data_offsets)} must be [begin, end]`);
      }
      const [b, en] = e.data_offsets as [number, number];
      const numel = shape.reduce((a, d) => a * d, 1);
      if (en < b) fail(p, `tensor '${name}': data_offsets [${b}, ${en}] end before begin`);
      if (en - b !== numel * DTYPE_BYTES[dtype]) {
        fail(p, `tensor '${name}': ${dtype}[${shape.join(', ')}] needs ${numel * DTYPE_BYTES[dtype]} bytes but data_offsets span ${en - b}`);
      }
      if (en > dataLen) {
        fail(p, `tensor '${name}' ends at data byte ${en} but the data section has only ${dataLen} bytes: the file is truncated`);
      }
      this.tensors.set(name, { name, dtype, shape, begin: dataStart + b, end: dataStart + en });
    }
    this.checkLayout(dataStart, dataLen);
  }

  /**
   * The format's layout rule: sorted by offset, the tensors' byte ranges follow each other
   * without gaps or overlaps from data byte 0 to the end of the file. Bytes that belong to two
   * tensors, or to none, mean the header does not describe the data (a corrupt or tampered file).
   */
  private checkLayout(dataStart: number, dataLen: number): void {
    const p = this.path;
    const ranges = [...this.tensors.values()]
      .map((t) => ({ name: t.name, begin: t.begin - dataStart, end: t.end - dataStart }))
      .sort((x, y) => x.begin - y.begin || x.end - y.end);
    let covered = 0;
    let previous: { name: string; begin: number; end: number } | null = null;
    for (const r of ranges) {
      if (r.begin < covered && previous) {
        fail(p, `tensors '${previous.name}' (data_offsets [${previous.begin}, ${previous.end}]) and '${r.name}' (data_offsets [${r.begin}, ${r.end}]) overlap: each tensor must have bytes of its own. The file is corrupt; re-download or re-save it`);
      }
      if (r.begin > covered) {
        const where = previous ? `between tensor '${previous.name}' (data_offsets [${previous.begin}, ${previous.end}]) and '${r.name}' (data_offsets [${r.begin}, ${r.end}])` : `before the first tensor '${r.name}' (data_offsets [${r.begin}, ${r.end}])`;
        fail(p, `no tensor covers data bytes ${covered} to ${r.begin}, ${where}: the tensors must follow each other without gaps. The file is corrupt; re-download or re-save it`);
      }
      covered = r.end;
      previous = r;
    }
    if (covered !== dataLen) {
      const last = previous ? `the last tensor '${previous.name}' ends at data byte ${covered}` : 'the header lists no tensors';
      fail(p, `the data section is ${dataLen} bytes but ${last}: ${dataLen - covered} bytes at the end belong to no tensor. The file is corrupt or has data appended; re-download or re-save it`);
    }
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) fail(this.path, `no tensor named '${name}'`);
    return t;
  }

  raw(name: string): Uint8Array {
    const t = this.info(name);
    return this.readAt(t.begin, t.end - t.begin);
  }

  /** Reads a floating-point tensor (F32, F16, BF16 or F64) converted to f32. */
  float32(name: string): Float32Array {
    const t = this.info(name);
    const bytes = this.raw(name);
    return toFloat32(bytes, t.dtype, `${this.path}: tensor '${name}'`);
  }

  /**
   * Reads a floating-point tensor as IEEE binary16 bit patterns, for f16 weights on the GPU:
   * F16 as stored (no conversion), BF16 and F32 rounded to nearest even with integer bit
   * arithmetic (never through an f32 copy of the tensor), F64 through its f32 value.
   */
  float16Bits(name: string): Uint16Array {
    const t = this.info(name);
    return toF16Bits(this.raw(name), t.dtype, `${this.path}: tensor '${name}'`);
  }

  /** Releases the source (a file's descriptor); nothing for bytes in memory. */
  close(): void {}
}

/** A safetensors file held in memory (fetched, or read whole). */
export class SafetensorsBytes extends SafetensorsReader {
  /** Parses and validates the header of `bytes`; `path` names the file in errors (a URL in the browser). */
  constructor(
    path: string,
    private readonly bytes: Uint8Array,
  ) {
    super(path, bytes.byteLength);
    this.parseHeader();
  }

  protected readAt(offset: number, length: number): Uint8Array {
    if (offset + length > this.bytes.byteLength) fail(this.path, `unexpected end of file at byte ${this.bytes.byteLength} (file is ${this.fileSize} bytes): truncated?`);
    return this.bytes.slice(offset, offset + length);
  }
}

function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

export function toFloat32(bytes: Uint8Array, dtype: SafetensorsDType, what: string): Float32Array {
  const n = bytes.byteLength / DTYPE_BYTES[dtype];
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(n);
  switch (dtype) {
    case 'F32':
      if (LITTLE_ENDIAN) {
        new Uint8Array(out.buffer).set(bytes);
        return out;
      }
      for (let i = 0; i < n; i++) out[i] = dv.getFloat32(i * 4, true);
      return out;
    case 'F64':
      for (let i = 0; i < n; i++) out[i] = dv.getFloat64(i * 8, true);
      return out;
    case 'F16':
      for (let i = 0; i < n; i++) out[i] = f16ToF32(dv.getUint16(i * 2, true));
      return out;
    case 'BF16': {
      const u = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) u[i] = dv.getUint16(i * 2, true) << 16;
      return out;
    }
    default:
      throw new SafetensorsError(`${what}: dtype ${dtype} is not a floating-point type`);
  }
}

export function toF16Bits(bytes: Uint8Array, dtype: SafetensorsDType, what: string): Uint16Array {
  const n = bytes.byteLength / DTYPE_BYTES[dtype];
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Uint16Array(n);
  switch (dtype) {
    case 'F16':
      if (LITTLE_ENDIAN) {
        new Uint8Array(out.buffer).set(bytes);
        return out;
      }
      for (let i = 0; i < n; i++) out[i] = dv.getUint16(i * 2, true);
      return out;
    case 'BF16':
      for (let i = 0; i < n; i++) out[i] = f32BitsToF16Bits(dv.getUint16(i * 2, true) << 16);
      return out;
    case 'F32':
      for (let i = 0; i < n; i++) out[i] = f32BitsToF16Bits(dv.getUint32(i * 4, true));
      return out;
    case 'F64':
      for (let i = 0; i < n; i++) out[i] = f32ToF16Bits(dv.getFloat64(i * 8, true));
      return out;
    default:
      throw new SafetensorsError(`${what}: dtype ${dtype} is not a floating-point type`);
  }
}

