// Preprocessing vs HF's CLIPImageProcessor with PIL 9.4, as computed by the fixture scripts:
// fx_clip.py / fx_crop.py (images/, images-crop/), fx_resize.py (images-resize/: resize and crop
// geometry, float steps) and fx_decode.py (images-decode/: alpha, grey, palettes, ICC profiles,
// JPEG, CMYK, WebP, 16-bit). The 8-bit crops must be identical (0 levels) and the floats
// identical to HF's float32 arithmetic.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { copyFileSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { deflateSync } from 'node:zlib';
import sharp from 'sharp';
import { FIXTURE_DIR, fixture } from '../helpers/fixtures.ts';
import {
  defaultPreprocess,
  parsePreprocessorConfig,
  preprocessImage,
  preprocessedPixels,
  resizeTarget,
  ImageDecodeError,
  CLIP_STD,
  MAX_INPUT_PIXELS,
  type PreprocessConfig,
} from '../../src/io/image.ts';
import { preprocessingOf } from '../../src/io/hf-checkpoint.ts';

interface FixtureCase {
  file: string;
  config: Record<string, unknown>;
}

const cases = (name: string): Record<string, FixtureCase> => JSON.parse(fixture(name).metadata.cases) as Record<string, FixtureCase>;

/** The reference crop PIL wrote as <dir>/expected/<case>.png, as RGB bytes. */
async function expectedPixels(dir: string, name: string): Promise<Uint8Array> {
  const { data, info } = await sharp(join(FIXTURE_DIR, dir, 'expected', `${name}.png`)).raw().toBuffer({ resolveWithObject: true });
  assert.is(info.channels, 3, `${name}: expected PNG is RGB`);
  return data;
}

/** Largest |a − b| over two byte arrays of the same length. */
function maxLevels(a: Uint8Array, b: Uint8Array, what: string): number {
  assert.is(a.length, b.length, `${what}: size`);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

/** Byte offset of the first element where the floats differ in any bit, or -1. */
function firstFloatDifference(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) return 0;
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return i;
  return -1;
}

test('resize fixture: the 8-bit crops equal PIL bicubic + HF center crop exactly (0 levels) — up, down (×12.5), odd sizes, wide, tall, no resize, one axis, padding, 1x16000, 16000x1', async () => {
  for (const [name, { file, config }] of Object.entries(cases('resize'))) {
    const cfg = parsePreprocessorConfig(config, 224);
    const px = await preprocessedPixels(join(FIXTURE_DIR, 'images-resize', file), cfg);
    assert.is(maxLevels(px, await expectedPixels('images-resize', name), name), 0, `${name}: max level difference`);
  }
});

test('resize fixture: the float output equals HF\'s float32 rescale and normalize bit for bit (also without rescale, without normalize, other factor, scalar mean/std)', async () => {
  const fx = fixture('resize');
  const all = cases('resize');
  let checked = 0;
  for (const [name, { file, config }] of Object.entries(all)) {
    if (!fx.tensors.has(`pre.${name}`)) continue;
    const px = await preprocessImage(join(FIXTURE_DIR, 'images-resize', file), parsePreprocessorConfig(config, 224));
    const at = firstFloatDifference(px, fx.get(`pre.${name}`).data);
    assert.is(at, -1, `${name}: float ${at} is ${px[at]}, HF ${fx.get(`pre.${name}`).data[at]}`);
    checked++;
  }
  assert.ok(checked >= 8, `${checked} cases with floats`);
  const variantCase = fx.metadata.float_variant_case;
  const variants = JSON.parse(fx.metadata.float_variants) as Record<string, Record<string, unknown>>;
  assert.ok(Object.keys(variants).length >= 4);
  for (const [variant, fields] of Object.entries(variants)) {
    const { file, config } = all[variantCase];
    const px = await preprocessImage(join(FIXTURE_DIR, 'images-resize', file), parsePreprocessorConfig({ ...config, ...fields }, 224));
    const ref = fx.get(`pre.${variantCase}@${variant}`).data;
    const at = firstFloatDifference(px, ref);
    assert.is(at, -1, `${variant}: float ${at} is ${px[at]}, HF ${ref[at]}`);
  }
});

test('decode fixture: RGBA (alpha 0 over colour), grey, grey+alpha, palettes with and without tRNS, 1-bit, RGB+tRNS, 16-bit RGB, ICC-tagged PNG/JPEG, JPEG 4:2:0 q90, CMYK JPEG and WebP equal PIL\'s convert("RGB") exactly, resized up, down and not at all', async () => {
  const all = cases('decode');
  assert.ok(Object.keys(all).length >= 20);
  for (const [name, { file, config }] of Object.entries(all)) {
    const px = await preprocessedPixels(join(FIXTURE_DIR, 'images-decode', file), parsePreprocessorConfig(config, 224));
    // Measured: 0 levels for every case, JPEG and lossy WebP included (sharp's mozjpeg and
    // libwebp decode like PIL's libjpeg-turbo 2.1.5 and libwebp 1.2.4).
    assert.is(maxLevels(px, await expectedPixels('images-decode', name), name), 0, `${name}: max level difference`);
  }
});

// images/ (fx_clip.py) and images-crop/ (fx_crop.py: resized size minus crop odd, so the crop
// offset's rounding matters: (39 − 32) // 2 = 3, not 4). Their references went through float64
// (÷255, −mean, ÷std) and were rounded to float32 once; HF computes in float32, so the two may
// differ by a few float32 ulps (< 1e-6 here), far below one 8-bit level (1/255/std ≈ 0.0146).
const CLIP_CASES = (): [string, string, string][] => [
  ...(JSON.parse(fixture('clip').metadata.image_files) as string[]).map((n): [string, string, string] => ['clip', 'images', n]),
  ...(JSON.parse(fixture('crop').metadata.image_files) as string[]).map((n): [string, string, string] => ['crop', 'images-crop', n]),
];

test('clip and crop fixtures: the same 8-bit level as PIL everywhere (float difference < 1e-5, a level is 0.0146)', async () => {
  const level = 1 / 255 / Math.max(...CLIP_STD);
  for (const [fx, dir, name] of CLIP_CASES()) {
    const px = await preprocessImage(join(FIXTURE_DIR, dir, name), defaultPreprocess(32));
    const ref = fixture(fx).get(`pre.${name}`);
    assert.is(px.length, ref.data.length, name);
    let max = 0;
    for (let i = 0; i < px.length; i++) max = Math.max(max, Math.abs(px[i] - ref.data[i]));
    assert.ok(max < 1e-5, `${name}: max diff ${max} (${(max / level).toFixed(2)} levels)`);
  }
});

test('extreme aspect ratios cost what the crop costs: 1x16000 and 16000x1 at shortest edge 224 (224x3,584,000 resized) take well under a second and little memory', async () => {
  const all = cases('resize');
  for (const name of ['column1x16000_224', 'row16000x1_224']) {
    const { file, config } = all[name];
    const cfg = parsePreprocessorConfig(config, 224);
    const path = join(FIXTURE_DIR, 'images-resize', file);
    await preprocessImage(path, cfg); // warm up the JIT
    const rss0 = process.memoryUsage().rss;
    const t0 = performance.now();
    const px = await preprocessImage(path, cfg);
    const ms = performance.now() - t0;
    const grownMiB = (process.memoryUsage().rss - rss0) / 2 ** 20;
    assert.is(px.length, 3 * 224 * 224);
    assert.ok(ms < 500, `${name}: ${ms.toFixed(0)} ms`);
    assert.ok(grownMiB < 100, `${name}: RSS grew by ${grownMiB.toFixed(0)} MiB`);
  }
});

test('a resize to shortest edge 16000 of small images computes only the 64x64 crop', async () => {
  const cfg = parsePreprocessorConfig({ size: 16000, crop_size: 64 }, 64);
  const path = join(FIXTURE_DIR, 'images', 'd_big96.png');
  await preprocessImage(path, cfg);
  const rss0 = process.memoryUsage().rss;
  const t0 = performance.now();
  for (let i = 0; i < 4; i++) assert.is((await preprocessImage(path, cfg)).length, 3 * 64 * 64);
  const ms = performance.now() - t0;
  const grownMiB = (process.memoryUsage().rss - rss0) / 2 ** 20;
  assert.ok(ms < 1000, `${ms.toFixed(0)} ms for 4 images`);
  assert.ok(grownMiB < 100, `RSS grew by ${grownMiB.toFixed(0)} MiB`);
});

/** CRC-32 (PNG's) of `bytes`. */
function crc32(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (const b of bytes) {
    crc ^= b;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? 0xedb88320 ^ (crc >>> 1) : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

/** A grey PNG whose header says width × height; its data holds one row (the size check comes first). */
function pngHeaderOnly(width: number, height: number): Buffer {
  const chunk = (type: string, data: Buffer): Buffer => {
    const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const out = Buffer.alloc(12 + data.length);
    out.writeUInt32BE(data.length, 0);
    body.copy(out, 4);
    out.writeUInt32BE(crc32(body), 8 + data.length);
    return out;
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth; colour type 0 (grey)
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(Buffer.alloc(width + 1))), chunk('IEND', Buffer.alloc(0))]);
}

test('an input over the decoding limit is refused with a message that names the file and says the input is too large', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'genalign-img-'));
  const path = join(dir, 'huge.png');
  writeFileSync(path, pngHeaderOnly(20000, 20000));
  assert.ok(20000 * 20000 > MAX_INPUT_PIXELS);
  try {
    await preprocessImage(path, defaultPreprocess(224));
    assert.unreachable('should throw');
  } catch (e) {
    assert.instance(e, ImageDecodeError);
    assert.match((e as Error).message, `${path}: the input image is 20000x20000 = 400,000,000 pixels, which exceeds genalign's decoding limit`);
  }
});

test('resize target follows HF shortest-edge rule', () => {
  assert.equal(resizeTarget(48, 40, 32), { width: 38, height: 32 });
  assert.equal(resizeTarget(36, 64, 32), { width: 32, height: 56 });
  assert.equal(resizeTarget(224, 224, 224), { width: 224, height: 224 });
  assert.equal(resizeTarget(33, 90, 48), { width: 48, height: 130 });
  assert.equal(resizeTarget(1, 16000, 224), { width: 224, height: 3584000 });
});

test('preprocessor_config.json: old and new forms of size and crop_size, and the float fields', () => {
  const old = parsePreprocessorConfig({ size: 224, crop_size: 224, resample: 3 }, 32);
  assert.equal(old.resize, { shortestEdge: 224 });
  assert.is(old.cropWidth, 224);
  const n = parsePreprocessorConfig({ size: { shortest_edge: 336 }, crop_size: { height: 336, width: 336 } }, 32);
  assert.equal(n.resize, { shortestEdge: 336 });
  assert.is(n.cropHeight, 336);
  assert.equal(parsePreprocessorConfig({ size: { height: 40, width: 50 }, crop_size: [30, 20] }, 32).resize, { height: 40, width: 50 });
  const listCrop = parsePreprocessorConfig({ size: 40, crop_size: [30, 20] }, 32);
  assert.equal([listCrop.cropHeight, listCrop.cropWidth], [30, 20]);
  assert.equal(parsePreprocessorConfig({ size: { shortest_edge: 64, longest_edge: 100 } }, 32).resize, { shortestEdge: 64 });
  assert.equal(parsePreprocessorConfig(null, 64), defaultPreprocess(64));
  // No center crop: the fixed resize is the output.
  const noCrop = parsePreprocessorConfig({ do_center_crop: false, size: { height: 32, width: 32 } }, 32);
  assert.equal([noCrop.cropWidth, noCrop.cropHeight], [32, 32]);
  const floats = parsePreprocessorConfig({ do_rescale: false, do_normalize: true, image_mean: 0.5, image_std: [1, 2, 3] }, 32);
  assert.is(floats.rescaleFactor, null);
  assert.equal(floats.normalize, { mean: [0.5, 0.5, 0.5], std: [1, 2, 3] });
  assert.is(parsePreprocessorConfig({ do_normalize: false }, 32).normalize, null);
});

test('preprocessor_config.json: values that cannot be meant or reproduced are refused, naming the file and the field', () => {
  const file = '/models/clip/preprocessor_config.json';
  const refused: [Record<string, unknown>, string, RegExp][] = [
    [{ size: 16, crop_size: 32 }, 'size', /smaller than crop_size 32x32/],
    [{ size: { shortest_edge: 200 }, crop_size: { height: 224, width: 224 } }, 'size', /at least 224/],
    [{ size: { height: 224, width: 100 }, crop_size: 224 }, 'size', /smaller than crop_size/],
    [{ size: 1e9, crop_size: 224 }, 'size', /1 to 16384, got 1000000000/],
    [{ size: 224.5, crop_size: 224 }, 'size', /whole number/],
    [{ size: { shortest_edge: 0 }, crop_size: 224 }, 'size.shortest_edge', /whole number/],
    [{ size: 224, crop_size: { height: 224, width: -1 } }, 'crop_size.width', /whole number/],
    [{ size: 224, crop_size: { height: 224 } }, 'crop_size', /got keys \{height\}/],
    [{ size: { longest_edge: 224 } }, 'size', /shortest_edge/],
    [{ size: '224' }, 'size', /must be a number/],
    [{ image_std: [0.26, 0, 0.27] }, 'image_std', /each a positive finite number/],
    [{ image_std: [0.26, -0.1, 0.27] }, 'image_std', /each a positive finite number/],
    [{ image_std: [0.26, null, 0.27] }, 'image_std', /each a positive finite number/],
    [{ image_std: 0 }, 'image_std', /each a positive finite number/],
    [{ image_std: [0.26, 0.26] }, 'image_std', /one number or three \(for R, G, B\)/],
    [{ image_mean: [0.48, 'x', 0.4] }, 'image_mean', /each a finite number/],
    // JSON.parse turns 1e999 into Infinity.
    [JSON.parse('{"image_mean": [0.48, 1e999, 0.4]}') as Record<string, unknown>, 'image_mean', /each a finite number/],
    [{ image_std: [0.26, Infinity, 0.27] }, 'image_std', /each a positive finite number/],
    [{ rescale_factor: 0 }, 'rescale_factor', /positive number/],
    [{ rescale_factor: '1/255' }, 'rescale_factor', /positive number/],
    [{ resample: 2 }, 'resample', /is 2 \(BILINEAR\); genalign resizes with PIL's bicubic filter only/],
    [{ resample: 0 }, 'resample', /NEAREST/],
    [{ do_convert_rgb: false }, 'do_convert_rgb', /Set it to true/],
    [{ do_center_crop: false }, 'do_center_crop', /shortest edge only/],
    [{ do_center_crop: false, do_resize: false }, 'do_center_crop', /do_resize is false/],
    [{ do_resize: 'yes' }, 'do_resize', /true or false/],
  ];
  for (const [json, field, why] of refused) {
    try {
      parsePreprocessorConfig(json, 224, file);
      assert.unreachable(`${JSON.stringify(json)} should be refused`);
    } catch (e) {
      const m = (e as Error).message;
      assert.ok(m.startsWith(`${file}: "${field}" `), `${JSON.stringify(json)}: ${m}`);
      assert.match(m, why, `${JSON.stringify(json)}: ${m}`);
    }
  }
  // Values that are not used are not checked (HF ignores them too).
  const unused: PreprocessConfig = parsePreprocessorConfig({ do_normalize: false, image_std: [0, 0, 0], do_rescale: false, rescale_factor: -1 }, 224, file);
  assert.is(unused.normalize, null);
});

test('a refused preprocessor_config.json in a model directory is one error naming its path (what train, embed, eval and --validate see)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'genalign-model-'));
  copyFileSync(join(FIXTURE_DIR, 'clip-tiny', 'config.json'), join(dir, 'config.json'));
  const file = join(dir, 'preprocessor_config.json');
  writeFileSync(file, JSON.stringify({ size: { shortest_edge: 16 }, crop_size: { height: 32, width: 32 }, image_std: [0.26, 0.26, 0.27] }));
  assert.throws(() => preprocessingOf(dir), (e: Error) => e.message.startsWith(`${file}: "size" (shortest edge 16) is smaller than crop_size 32x32`));
  writeFileSync(file, JSON.stringify({ size: 32, crop_size: 32, image_std: [0.26, 0, 0.27] }));
  assert.throws(() => preprocessingOf(dir), (e: Error) => e.message.startsWith(`${file}: "image_std" must be one number or three (for R, G, B), each a positive finite number`));
  writeFileSync(file, JSON.stringify({ size: 32, crop_size: 32 }));
  assert.is(preprocessingOf(dir).problem, null);
});

test('a corrupt image gives ImageDecodeError naming the file', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'genalign-img-'));
  const bad = join(dir, 'broken.jpg');
  writeFileSync(bad, Buffer.from([0xff, 0xd8, 0xff, 0xe0, 1, 2, 3]));
  try {
    await preprocessImage(bad, defaultPreprocess(32));
    assert.unreachable('should throw');
  } catch (e) {
    assert.instance(e, ImageDecodeError);
    assert.match((e as Error).message, /broken\.jpg/);
  }
});

test('truncated JPEGs decoded at once: each error names its file once and carries the decoder\'s own reason', async () => {
  // libvips shares one error buffer between threads: concurrent failures could come back as
  // "Unknown error" or as several files' messages glued together.
  const dir = mkdtempSync(join(tmpdir(), 'genalign-img-'));
  const noise = (w: number, h: number): Buffer => Buffer.from(Array.from({ length: w * h * 3 }, (_, i) => (i * 7919) % 251));
  for (const [w, h] of [[32, 32], [48, 32]]) {
    const jpg = await sharp(noise(w, h), { raw: { width: w, height: h, channels: 3 } }).jpeg({ quality: 90 }).toBuffer();
    const paths = Array.from({ length: 8 }, (_, i) => join(dir, `cut${w}x${h}_${i}.jpg`));
    for (const p of paths) writeFileSync(p, jpg.subarray(0, jpg.length >> 1));
    const results = await Promise.allSettled(paths.map((p) => preprocessImage(p, defaultPreprocess(32))));
    results.forEach((r, i) => {
      assert.is(r.status, 'rejected', paths[i]);
      const e = (r as PromiseRejectedResult).reason as Error;
      assert.instance(e, ImageDecodeError, `${paths[i]}: ${e.message}`);
      assert.is(e.message, `${paths[i]}: cannot decode image (VipsJpeg: premature end of JPEG image)`);
    });
  }
});

test.run();
