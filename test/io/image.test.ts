// Preprocessing vs HF CLIPImageProcessor (PIL bicubic), computed by scripts/fixtures/fx_clip.py.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import sharp from 'sharp';
import { FIXTURE_DIR, fixture } from '../helpers/fixtures.ts';
import { defaultPreprocess, parsePreprocessorConfig, preprocessImage, resizeTarget, ImageDecodeError, CLIP_STD } from '../../src/io/image.ts';

const files = (): string[] => JSON.parse(fixture('clip').metadata.image_files) as string[];

test('an image already at the target size passes through unchanged (exact)', async () => {
  const px = await preprocessImage(join(FIXTURE_DIR, 'images', 'a_square32.png'), defaultPreprocess(32));
  const ref = fixture('clip').get('pre.a_square32.png');
  let max = 0;
  for (let i = 0; i < px.length; i++) max = Math.max(max, Math.abs(px[i] - ref.data[i]));
  // Only f32 vs f64 rounding of (v/255 - mean)/std.
  assert.ok(max < 1e-5, `max diff ${max}`);
});

// images/ (fx_clip.py) and images-crop/ (fx_crop.py: resized size minus crop odd, so the crop
// offset's rounding matters: (39 − 32) // 2 = 3, not 4).
const CASES = (): [string, string, string][] => [
  ...files().map((n): [string, string, string] => ['clip', 'images', n]),
  ...(JSON.parse(fixture('crop').metadata.image_files) as string[]).map((n): [string, string, string] => ['crop', 'images-crop', n]),
];

test('resized + center-cropped images match PIL bicubic within half an 8-bit level on average (measured 0.26–0.29, max 3.8 levels)', async () => {
  for (const [fx, dir, name] of CASES()) {
    const px = await preprocessImage(join(FIXTURE_DIR, dir, name), defaultPreprocess(32));
    const ref = fixture(fx).get(`pre.${name}`);
    assert.is(px.length, ref.data.length, name);
    // sharp (libvips) and PIL implement bicubic with different filter support/rounding, so pixels
    // differ by a few 8-bit levels at edges. In normalized units one level is 1/255/std ≈ 0.015.
    const level = 1 / 255 / Math.min(...CLIP_STD);
    let sum = 0;
    let max = 0;
    for (let i = 0; i < px.length; i++) {
      const d = Math.abs(px[i] - ref.data[i]);
      sum += d;
      max = Math.max(max, d);
    }
    const mean = sum / px.length;
    assert.ok(mean < 0.5 * level, `${name}: mean diff ${(mean / level).toFixed(2)} levels`);
    assert.ok(max < 6 * level, `${name}: max diff ${(max / level).toFixed(1)} levels`);
  }
});

test('resize target follows HF shortest-edge rule', () => {
  assert.equal(resizeTarget(48, 40, 32), { width: 38, height: 32 });
  assert.equal(resizeTarget(36, 64, 32), { width: 32, height: 56 });
  assert.equal(resizeTarget(224, 224, 224), { width: 224, height: 224 });
});

test('preprocessor_config.json old and new forms', () => {
  assert.is(parsePreprocessorConfig({ size: 224, crop_size: 224 }, 32).size, 224);
  const n = parsePreprocessorConfig({ size: { shortest_edge: 336 }, crop_size: { height: 336, width: 336 } }, 32);
  assert.is(n.size, 336);
  assert.is(n.cropHeight, 336);
  assert.is(parsePreprocessorConfig(null, 64).size, 64);
});

test('RGBA and greyscale images become RGB', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'genalign-img-'));
  const rgba = join(dir, 'rgba.png');
  await sharp({ create: { width: 32, height: 32, channels: 4, background: { r: 255, g: 0, b: 0, alpha: 0.5 } } }).png().toFile(rgba);
  const px = await preprocessImage(rgba, defaultPreprocess(32));
  assert.is(px.length, 3 * 32 * 32);
  // Red channel is 255 (alpha dropped, like PIL convert('RGB')).
  assert.ok(Math.abs(px[0] - (1 - 0.48145466) / 0.26862954) < 1e-5);
  const grey = join(dir, 'grey.png');
  await sharp({ create: { width: 40, height: 32, channels: 3, background: { r: 128, g: 128, b: 128 } } }).greyscale().png().toFile(grey);
  assert.is((await preprocessImage(grey, defaultPreprocess(32))).length, 3 * 32 * 32);
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
  // libvips shares one error buffer between threads: concurrent failures used to come back as
  // "Unknown error" or as several files' messages glued together; a truncated JPEG that needs
  // resizing and cropping escaped as a plain Error (which crashed embed and eval).
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
