// Tensor: a shape, a dtype and a GPU buffer from the device's pool, with explicit lifetime.
//
// Lifetimes: a Tensor owns one reference to a refcounted Storage. dispose() drops it; the
// buffer goes back to the pool when the last reference (user tensors, reshape views, tensors
// saved for backward) is gone. Nothing relies on garbage collection.
import type { Device } from '../gpu/device.ts';
import { currentDevice } from '../gpu/device.ts';

export type DType = 'f32' | 'f16';

export const BYTES_PER_ELEMENT: Record<DType, number> = { f32: 4, f16: 2 };

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** IEEE binary16 bits of x, rounded to nearest even (overflow -> inf, NaN kept). */
export function f32ToF16Bits(x: number): number {
  f32Scratch[0] = x;
  return f32BitsToF16Bits(u32Scratch[0]);
}

/**
 * IEEE binary16 bits of the f32 with bit pattern u, rounded to nearest even (overflow -> inf,
 * NaN kept). Integer-only, so BF16 data (the top half of an f32: u = bf16 << 16) converts
 * without passing through a float.
 */
export function f32BitsToF16Bits(u: number): number {
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let h = mant >>> shift;
    const rest = mant & ((1 << shift) - 1);
    if (rest > half || (rest === half && (h & 1))) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1))) h++;
  return sign | h;
}

/** The f32 value of IEEE binary16 bits. */
export function f16BitsToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** What a tensor knows about the autograd node that produced it (see autograd.ts). */
export interface GradFnRef {
  readonly name: string;
  unref(): void;
}

export class Storage {
  private refs = 1;
  constructor(
    readonly device: Device,
    readonly buffer: GPUBuffer,
    readonly bytes: number,
  ) {}
  retain(): this {
    this.refs++;
    return this;
  }
  release(): void {
    if (--this.refs === 0) this.device.pool.release(this.buffer);
  }
  get refCount(): number {
    return this.refs;
  }
}

export function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function shapeStr(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

function checkShape(shape: readonly number[]): void {
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new Error(`Invalid tensor shape ${shapeStr(shape)}: dimensions must be non-negative integers`);
  }
}

let nextTensorId = 1;

export class Tensor {
  readonly id = nextTensorId++;
  readonly shape: readonly number[];
  readonly dtype: DType;
  readonly size: number;
  readonly device: Device;
  /** A readable name for error messages (parameters carry their module path). */
  name: string | undefined;
  requiresGrad = false;
  /** Accumulated gradient (leaf tensors only). Owned by this tensor; freed by zeroGrad/dispose. */
  grad: Tensor | null = null;
  gradFn: GradFnRef | null = null;
  private storage: Storage | null;

  constructor(storage: Storage, shape: readonly number[], dtype: DType = 'f32', track = true) {
    checkShape(shape);
    this.shape = Object.freeze([...shape]);
    this.dtype = dtype;
    this.size = shapeSize(shape);
    this.storage = storage;
    this.device = storage.device;
    if (track) trackInScope(this);
  }

  /** Allocates an uninitialised tensor from the device's pool. */
  static empty(shape: readonly number[], device: Device = currentDevice(), dtype: DType = 'f32'): Tensor {
    checkShape(shape);
    const bytes = Math.max(4, shapeSize(shape) * BYTES_PER_ELEMENT[dtype]);
    const buf = device.pool.acquire(bytes);
    return new Tensor(new Storage(device, buf, bytes), shape, dtype);
  }

  get disposed(): boolean {
    return this.storage === null;
  }

  describe(): string {
    return `${this.name ? `'${this.name}' ` : ''}Tensor${shapeStr(this.shape)}`;
  }

  get buffer(): GPUBuffer {
    if (!this.storage) throw new Error(`${this.describe()} was used after dispose()`);
    return this.storage.buffer;
  }

  get byteLength(): number {
    return this.size * BYTES_PER_ELEMENT[this.dtype];
  }

  /** A new tensor sharing this one's storage (refcounted); used for reshape and saved tensors. */
  view(shape: readonly number[] = this.shape, track = true): Tensor {
    if (!this.storage) throw new Error(`${this.describe()} was used after dispose()`);
    if (shapeSize(shape) !== this.size) throw new Error(`view: cannot view ${this.describe()} as ${shapeStr(shape)} (sizes ${this.size} vs ${shapeSize(shape)})`);
    const t = new Tensor(this.storage.retain(), shape, this.dtype, track);
    t.name = this.name;
    return t;
  }

  dispose(): void {
    if (!this.storage) return;
    this.storage.release();
    this.storage = null;
    untrack(this);
    if (this.gradFn) {
      const fn = this.gradFn;
      this.gradFn = null;
      fn.unref();
    }
    if (this.grad) {
      this.grad.dispose();
      this.grad = null;
    }
  }

  /** Copies the data to the host (submits pending GPU work and waits). */
  async read(): Promise<Float32Array> {
    const buf = this.buffer;
    const bytes = await this.device.batch.read(buf, this.byteLength);
    if (this.dtype === 'f16') return Float32Array.from(new Uint16Array(bytes), f16BitsToF32);
    return new Float32Array(bytes);
  }

  async item(): Promise<number> {
    if (this.size !== 1) throw new Error(`item(): ${this.describe()} has ${this.size} elements, expected 1`);
    return (await this.read())[0];
  }

  /** Overwrites the contents from host data (length must match). */
  write(data: Float32Array): void {
    if (data.length !== this.size) throw new Error(`write: ${this.describe()} has ${this.size} elements, got ${data.length}`);
    this.device.batch.upload(this.buffer, this.dtype === 'f16' ? Uint16Array.from(data, f32ToF16Bits) : data);
  }

  /** Overwrites an f16 tensor's contents with IEEE binary16 bit patterns (no f32 round trip). */
  writeF16Bits(bits: Uint16Array): void {
    if (this.dtype !== 'f16') throw new Error(`writeF16Bits: ${this.describe()} is ${this.dtype}, not f16`);
    if (bits.length !== this.size) throw new Error(`writeF16Bits: ${this.describe()} has ${this.size} elements, got ${bits.length}`);
    this.device.batch.upload(this.buffer, bits);
  }

  /** Removes this tensor from scope tracking so a scope exit will not dispose it. */
  keep(): this {
    untrack(this);
    return this;
  }
}

/** A trainable leaf tensor: requiresGrad, never scope-tracked, named by its module path. */
export class Parameter extends Tensor {
  constructor(storage: Storage, shape: readonly number[], name: string) {
    super(storage, shape, 'f32', false);
    this.name = name;
    this.requiresGrad = true;
  }

  static fromTensor(t: Tensor, name: string): Parameter {
    const p = new Parameter(storageOf(t).retain(), t.shape, name);
    t.dispose();
    return p;
  }

  zeroGrad(): void {
    if (this.grad) {
      this.grad.dispose();
      this.grad = null;
    }
  }
}

function storageOf(t: Tensor): Storage {
  // Private access kept in one place.
  const s = (t as unknown as { storage: Storage | null }).storage;
  if (!s) throw new Error(`${t.describe()} was used after dispose()`);
  return s;
}

export function fromArray(data: ArrayLike<number>, shape: readonly number[], device: Device = currentDevice()): Tensor {
  const n = shapeSize(shape);
  if (data.length !== n) throw new Error(`fromArray: ${data.length} values do not fill shape ${shapeStr(shape)} (${n} elements)`);
  const t = Tensor.empty(shape, device);
  t.write(data instanceof Float32Array ? data : Float32Array.from(data));
  return t;
}

/** An f16 tensor from IEEE binary16 bit patterns (as stored in F16 safetensors). */
export function fromF16Bits(bits: Uint16Array, shape: readonly number[], device: Device = currentDevice()): Tensor {
  const n = shapeSize(shape);
  if (bits.length !== n) throw new Error(`fromF16Bits: ${bits.length} values do not fill shape ${shapeStr(shape)} (${n} elements)`);
  const t = Tensor.empty(shape, device, 'f16');
  t.writeF16Bits(bits);
  return t;
}

/** An f32 or f16 tensor from f32 host data (f16: rounded to nearest even on the host). */
export function fromArrayAs(data: Float32Array, shape: readonly number[], dtype: DType, device: Device = currentDevice()): Tensor {
  if (dtype === 'f32') return fromArray(data, shape, device);
  return fromF16Bits(Uint16Array.from(data, f32ToF16Bits), shape, device);
}

export function full(shape: readonly number[], value: number, device: Device = currentDevice()): Tensor {
  return fromArray(new Float32Array(shapeSize(shape)).fill(value), shape, device);
}

export function zeros(shape: readonly number[], device: Device = currentDevice()): Tensor {
  return full(shape, 0, device);
}

export function parameter(data: ArrayLike<number>, shape: readonly number[], name: string, device: Device = currentDevice()): Parameter {
  return Parameter.fromTensor(fromArray(data, shape, device), name);
}

// ---------------------------------------------------------------------------------------------
// Scopes: everything created inside scope(fn) is disposed at exit, except what fn returns.

type Scope = Set<Tensor>;
const scopes: Scope[] = [];

function trackInScope(t: Tensor): void {
  const s = scopes[scopes.length - 1];
  if (s) s.add(t);
}

function untrack(t: Tensor): void {
  for (let i = scopes.length - 1; i >= 0; i--) if (scopes[i].delete(t)) return;
}

/** Tensors found in a scope's result (Tensor, arrays, plain objects, nested). */
export function collectTensors(value: unknown, out: Set<Tensor> = new Set()): Set<Tensor> {
  if (value instanceof Tensor) out.add(value);
  else if (Array.isArray(value)) for (const v of value) collectTensors(v, out);
  else if (value && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) {
    for (const v of Object.values(value)) collectTensors(v, out);
  }
  return out;
}

function closeScope(s: Scope, result: unknown): void {
  const keep = collectTensors(result);
  const i = scopes.lastIndexOf(s);
  if (i >= 0) scopes.splice(i, 1);
  for (const t of s) if (!keep.has(t)) t.dispose();
  for (const t of keep) if (s.has(t)) trackInScope(t);
}

export function scope<T>(fn: () => T): T {
  const s: Scope = new Set();
  scopes.push(s);
  let result: T | undefined;
  try {
    result = fn();
    if (result instanceof Promise) throw new Error('scope(fn): fn returned a Promise; use scopeAsync for async code');
    return result;
  } finally {
    closeScope(s, result);
  }
}

export async function scopeAsync<T>(fn: () => Promise<T>): Promise<T> {
  const s: Scope = new Set();
  scopes.push(s);
  let result: T | undefined;
  try {
    result = await fn();
    return result;
  } finally {
    closeScope(s, result);
  }
}

/** Number of tensors tracked by open scopes (diagnostics). */
export function trackedCount(): number {
  let n = 0;
  for (const s of scopes) n += s.size;
  return n;
}
