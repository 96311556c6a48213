import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync, readFileSync, rmSync, existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FIXTURE_DIR } from '../helpers/fixtures.ts';
import { SafetensorsFile, SafetensorsError, readSafetensors, writeSafetensors } from '../../src/io/safetensors.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const dir = mkdtempSync(join(tmpdir(), 'genalign-st-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

/** Builds safetensors bytes from a header object and a raw data section. */
function fileBytes(header: unknown, data: Uint8Array, rawHeader?: string): Buffer {
  const json = Buffer.from(rawHeader ?? JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([len, json, data]);
}

function u16le(values: number[]): Uint8Array {
  const b = Buffer.alloc(values.length * 2);
  values.forEach((v, i) => b.writeUInt16LE(v, i * 2));
  return b;
}

function put(name: string, bytes: Uint8Array): string {
  const p = join(dir, name);
  writeFileSync(p, bytes);
  return p;
}

/** Asserts opening `path` throws a SafetensorsError whose message starts with the path and matches re. */
function expectError(path: string, re: RegExp, expected?: string): void {
  try {
    SafetensorsFile.open(path, expected);
  } catch (e) {
    assert.instance(e, SafetensorsError);
    const msg = (e as Error).message;
    assert.ok(msg.startsWith(`${path}: `) || msg.startsWith(`${path} `), `message names the file: ${msg}`);
    assert.match(msg, re);
    return;
  }
  assert.unreachable(`${path} opened without error`);
}

test('F32 round trip: shapes, values, names, metadata', () => {
  const p = join(dir, 'round.safetensors');
  const a = Float32Array.from([1.5, -2.25, 3e-8, 1e30, -0, 7]);
  const b = Float32Array.from([42]);
  const empty = new Float32Array(0);
  writeSafetensors(p, { 'layer.a': { shape: [2, 3], data: a }, b: { shape: [], data: b }, e: { shape: [0, 4], data: empty } }, { format: 'pt', note: 'hi' });
  const back = readSafetensors(p);
  assert.equal([...back.tensors.keys()].sort(), ['b', 'e', 'layer.a']);
  assert.equal(back.tensors.get('layer.a')!.shape, [2, 3]);
  assert.equal([...back.tensors.get('layer.a')!.data], [...a]);
  assert.ok(Object.is(back.tensors.get('layer.a')!.data[4], -0), '-0 survives');
  assert.equal(back.tensors.get('b')!.shape, []);
  assert.equal([...back.tensors.get('b')!.data], [42]);
  assert.equal(back.tensors.get('e')!.shape, [0, 4]);
  assert.is(back.tensors.get('e')!.data.length, 0);
  assert.equal(back.metadata, { format: 'pt', note: 'hi' });
  // Layout: data offsets start at 0 in name order and the data section is 8-byte aligned.
  const f = SafetensorsFile.open(p);
  const bInfo = f.info('b');
  const aInfo = f.info('layer.a');
  assert.is(bInfo.dtype, 'F32');
  assert.is(bInfo.begin % 8, 0, 'data section starts 8-byte aligned');
  assert.is(bInfo.end - bInfo.begin, 4);
  assert.is(f.info('e').begin, bInfo.end);
  assert.is(aInfo.begin, bInfo.end);
  assert.is(aInfo.end - aInfo.begin, 24);
  assert.is(aInfo.end, f.fileSize);
  assert.is(f.fileSize, readFileSync(p).length);
  assert.throws(() => f.info('nope'), /no tensor named 'nope'/);
  f.close();
  // The atomic writer leaves no temp file behind.
  assert.equal(readdirSync(dir).filter((n) => n.includes('round') && n.endsWith('.tmp')), []);
});

test('writer rejects data that does not fill the shape', () => {
  assert.throws(() => writeSafetensors(join(dir, 'bad.safetensors'), { x: { shape: [2, 2], data: new Float32Array(3) } }), /tensor 'x' shape \[2, 2\] does not match 3 values/);
  assert.not.ok(existsSync(join(dir, 'bad.safetensors')));
});

test('reads F16 and BF16 from hand-made bytes', () => {
  // F16: 1, -2, 0.5, 65504 (max), 2^-24 (smallest subnormal), -inf, 0x3555 = 0.333251953125
  const f16 = u16le([0x3c00, 0xc000, 0x3800, 0x7bff, 0x0001, 0xfc00, 0x3555]);
  // BF16: 1, -2, 3.140625, 1e-38-ish subnormal-range normal 0x0080 = 2^-126
  const bf16 = u16le([0x3f80, 0xc000, 0x4049, 0x0080]);
  const header = {
    __metadata__: { format: 'pt' },
    h: { dtype: 'F16', shape: [7], data_offsets: [0, 14] },
    g: { dtype: 'BF16', shape: [2, 2], data_offsets: [14, 22] },
  };
  const p = put('half.safetensors', fileBytes(header, Buffer.concat([f16, bf16])));
  const { tensors, metadata } = readSafetensors(p);
  assert.equal(metadata, { format: 'pt' });
  assert.equal([...tensors.get('h')!.data], [1, -2, 0.5, 65504, 2 ** -24, -Infinity, 0.333251953125]);
  assert.equal(tensors.get('g')!.shape, [2, 2]);
  assert.equal([...tensors.get('g')!.data], [1, -2, 3.140625, 2 ** -126]);
  const f = SafetensorsFile.open(p);
  assert.is(f.info('h').dtype, 'F16');
  assert.is(f.info('g').dtype, 'BF16');
  f.close();
});

test('F16 and BF16: every one of the 65536 bit patterns decodes to the value IEEE 754 / bfloat16 define', () => {
  const all = u16le(Array.from({ length: 65536 }, (_, i) => i));
  const header = {
    h: { dtype: 'F16', shape: [65536], data_offsets: [0, 131072] },
    g: { dtype: 'BF16', shape: [65536], data_offsets: [131072, 262144] },
  };
  const { tensors } = readSafetensors(put('all-halves.safetensors', fileBytes(header, Buffer.concat([all, all]))));
  const h = tensors.get('h')!.data;
  const g = tensors.get('g')!.data;
  const f32 = new DataView(new ArrayBuffer(4));
  for (let bits = 0; bits < 65536; bits++) {
    // binary16: sign, 5-bit exponent (bias 15), 10-bit fraction; exponent 0 = subnormal, 31 = inf/NaN.
    const sign = bits & 0x8000 ? -1 : 1;
    const e = (bits >> 10) & 0x1f;
    const m = bits & 0x3ff;
    const want = e === 0 ? sign * m * 2 ** -24 : e === 31 ? (m ? NaN : sign * Infinity) : sign * (1 + m / 1024) * 2 ** (e - 15);
    if (Number.isNaN(want) ? !Number.isNaN(h[bits]) : !Object.is(h[bits], want)) assert.unreachable(`F16 0x${bits.toString(16)}: ${h[bits]}, expected ${want}`);
    // bfloat16 is the top half of a float32.
    f32.setUint32(0, bits << 16);
    const wantB = f32.getFloat32(0);
    if (Number.isNaN(wantB) ? !Number.isNaN(g[bits]) : !Object.is(g[bits], wantB)) assert.unreachable(`BF16 0x${bits.toString(16)}: ${g[bits]}, expected ${wantB}`);
  }
});

test('integer tensors can be read raw but not as floats', () => {
  const data = Buffer.alloc(8);
  data.writeInt32LE(-5, 0);
  data.writeInt32LE(7, 4);
  const p = put('int.safetensors', fileBytes({ i: { dtype: 'I32', shape: [2], data_offsets: [0, 8] } }, data));
  const f = SafetensorsFile.open(p);
  const raw = f.raw('i');
  const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  assert.equal([dv.getInt32(0, true), dv.getInt32(4, true)], [-5, 7]);
  assert.throws(() => f.float32('i'), /tensor 'i': dtype I32 is not a floating-point type/);
  f.close();
});

test('truncated files: cut inside the length prefix, the header and the data', () => {
  const p = join(dir, 'whole.safetensors');
  writeSafetensors(p, { w: { shape: [4, 5], data: Float32Array.from({ length: 20 }, (_, i) => i) } });
  const whole = readFileSync(p);
  const headerLen = Number(whole.readBigUInt64LE(0));
  const dataStart = 8 + headerLen;
  assert.is(whole.length, dataStart + 80);
  const cuts: [string, number, RegExp][] = [
    ['empty', 0, /file is 0 bytes, too short .*truncated/],
    ['prefix', 5, /file is 5 bytes, too short .*truncated/],
    ['header-start', 9, /header claims \d+ bytes but the file has only 1 after the length prefix: the file is truncated/],
    ['header-middle', 8 + Math.floor(headerLen / 2), /the file is truncated/],
    ['data-start', dataStart, /tensor 'w' ends at data byte 80 but the data section has only 0 bytes: the file is truncated/],
    ['data-middle', dataStart + 41, /tensor 'w' ends at data byte 80 but the data section has only 41 bytes: the file is truncated/],
    ['data-last-byte', whole.length - 1, /only 79 bytes: the file is truncated/],
  ];
  for (const [label, at, re] of cuts) {
    const cut = put(`cut-${label}.safetensors`, whole.subarray(0, at));
    expectError(cut, re);
  }
});

test('bad JSON header', () => {
  const p = put('badjson.safetensors', fileBytes(null, new Uint8Array(0), '{"w": {"dtype": "F32", '));
  expectError(p, /header is not valid JSON/);
  const arr = put('array.safetensors', fileBytes([1, 2], new Uint8Array(0)));
  expectError(arr, /header is not a JSON object/);
});

test('unsupported dtype names the tensor and lists the supported ones', () => {
  const p = put('dtype.safetensors', fileBytes({ w: { dtype: 'F8_E4M3', shape: [2], data_offsets: [0, 2] } }, new Uint8Array(2)));
  expectError(p, /tensor 'w': unsupported dtype "F8_E4M3" \(supported: F64, F32, F16, BF16/);
});

test('offsets inconsistent with shape, end before begin, bad shape, bad metadata', () => {
  const data = new Uint8Array(24);
  const mismatch = put('offsets.safetensors', fileBytes({ w: { dtype: 'F32', shape: [2, 3], data_offsets: [0, 20] } }, data));
  expectError(mismatch, /tensor 'w': F32\[2, 3\] needs 24 bytes but data_offsets span 20/);
  const reversed = put('reversed.safetensors', fileBytes({ w: { dtype: 'F32', shape: [1], data_offsets: [8, 4] } }, data));
  expectError(reversed, /tensor 'w': data_offsets \[8, 4\] end before begin/);
  const notPair = put('notpair.safetensors', fileBytes({ w: { dtype: 'F32', shape: [1], data_offsets: [0] } }, data));
  expectError(notPair, /tensor 'w': data_offsets \[0\] must be \[begin, end\]/);
  const badShape = put('shape.safetensors', fileBytes({ w: { dtype: 'F32', shape: [2, -1], data_offsets: [0, 8] } }, data));
  expectError(badShape, /tensor 'w': shape \[2,-1\] is not a list of non-negative integers/);
  const badMeta = put('meta.safetensors', fileBytes({ __metadata__: { step: 3 } }, data));
  expectError(badMeta, /__metadata__\.step must be a string/);
});

test('overlapping data_offsets are an error naming both tensors', () => {
  const data = new Uint8Array(16);
  const overlap = put('overlap.safetensors', fileBytes({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] }, c: { dtype: 'F32', shape: [1], data_offsets: [12, 16] } }, data));
  expectError(overlap, /tensors 'a' \(data_offsets \[0, 8\]\) and 'b' \(data_offsets \[4, 12\]\) overlap/);
  // Two names for the same bytes (in header order b, a: sorting by offset finds them).
  const alias = put('alias.safetensors', fileBytes({ b: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, c: { dtype: 'F32', shape: [2], data_offsets: [8, 16] } }, data));
  expectError(alias, /tensors '[ab]' \(data_offsets \[0, 8\]\) and '[ab]' \(data_offsets \[0, 8\]\) overlap/);
  // One tensor inside another.
  const nested = put('nested.safetensors', fileBytes({ big: { dtype: 'F32', shape: [4], data_offsets: [0, 16] }, small: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, data));
  expectError(nested, /tensors 'big' .* and 'small' .* overlap/);
});

test('holes: bytes before the first tensor, between two tensors, or after the last are an error', () => {
  const data = new Uint8Array(16);
  const start = put('hole-start.safetensors', fileBytes({ a: { dtype: 'F32', shape: [3], data_offsets: [4, 16] } }, data));
  expectError(start, /no tensor covers data bytes 0 to 4, before the first tensor 'a' \(data_offsets \[4, 16\]\)/);
  const middle = put('hole-middle.safetensors', fileBytes({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, b: { dtype: 'F32', shape: [2], data_offsets: [8, 16] } }, data));
  expectError(middle, /no tensor covers data bytes 4 to 8, between tensor 'a' \(data_offsets \[0, 4\]\) and 'b' \(data_offsets \[8, 16\]\)/);
  const tail = put('hole-end.safetensors', fileBytes({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, data));
  expectError(tail, /the data section is 16 bytes but the last tensor 'a' ends at data byte 8: 8 bytes at the end belong to no tensor/);
  const none = put('no-tensors.safetensors', fileBytes({ __metadata__: { format: 'pt' } }, new Uint8Array(3)));
  expectError(none, /the data section is 3 bytes but the header lists no tensors: 3 bytes at the end belong to no tensor/);
  // A file genalign wrote, with bytes appended.
  const p = join(dir, 'appended.safetensors');
  writeSafetensors(p, { w: { shape: [2], data: Float32Array.from([1, 2]) } });
  writeFileSync(p, Buffer.concat([readFileSync(p), Buffer.from('extra')]));
  expectError(p, /ends at data byte 8: 5 bytes at the end belong to no tensor/);
});

test('valid layouts: header padded with spaces, tensors listed out of offset order, empty tensors, no tensors', () => {
  const data = new Uint8Array(12);
  const header = JSON.stringify({ z: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, a: { dtype: 'F32', shape: [2], data_offsets: [4, 12] }, e: { dtype: 'F32', shape: [0], data_offsets: [12, 12] } });
  const p = put('padded.safetensors', fileBytes(null, data, header + '   '));
  const f = SafetensorsFile.open(p);
  assert.equal([...f.tensors.keys()], ['z', 'a', 'e']);
  f.close();
  const empty = put('empty.safetensors', fileBytes({}, new Uint8Array(0), '{}      '));
  SafetensorsFile.open(empty).close();
});

test('every committed fixture under test/fixtures satisfies the layout rule', () => {
  const files = (readdirSync(FIXTURE_DIR, { recursive: true }) as string[]).filter((f) => f.endsWith('.safetensors')).map((f) => join(FIXTURE_DIR, f));
  assert.ok(files.length >= 17, `found ${files.length}: ${files.map((f) => relative(FIXTURE_DIR, f)).join(', ')}`);
  for (const f of files) SafetensorsFile.open(f).close();
});

test('missing file, a directory or a FIFO in its place, and implausible header length', () => {
  const missing = join(dir, 'does-not-exist.safetensors');
  expectError(missing, /does-not-exist\.safetensors does not exist; expected a safetensors file$/);
  const folder = join(dir, 'folder.safetensors');
  mkdirSync(folder);
  expectError(folder, /folder\.safetensors is a directory; expected the adapter weights$/, 'the adapter weights');
  // A FIFO without a writer would block the open for ever, so it is tried in a child process with a timeout.
  const fifo = join(dir, 'fifo.safetensors');
  execFileSync('mkfifo', [fifo]);
  const script = `import { SafetensorsFile } from './src/io/safetensors.ts'; try { SafetensorsFile.open(${JSON.stringify(fifo)}); } catch (e) { console.log(e.message); }`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: ROOT, timeout: 30_000, encoding: 'utf8' });
  assert.is(r.signal, null, `the open blocked on the FIFO (killed after 30 s)`);
  assert.is(r.stdout.trim(), `${fifo} is a FIFO (named pipe); expected a safetensors file`, r.stderr);
  const huge = Buffer.alloc(16);
  huge.writeBigUInt64LE(2n ** 40n);
  expectError(put('huge.safetensors', huge), /header length \d+ is implausible/);
});

test.run();
