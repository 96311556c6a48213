// Times preprocessImage (decode + resize + crop + normalise) on typical inputs and prints
// images/s, one image at a time and 8 at once (as the loader decodes), and the part that runs on
// the main thread (resample.ts's resize of the crop window; sharp decodes on libuv threads).
// Usage:
//   node --import tsx scripts/bench-preprocess.ts [seconds per case, default 3]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { defaultPreprocess, preprocessImage, resizeTarget } from '../src/io/image.ts';
import { resizeWindowRgb } from '../src/io/resample.ts';

/** A photo-like test image: smooth gradients, edges and mild noise (deterministic). */
function synthetic(width: number, height: number): Buffer {
  const px = Buffer.alloc(width * height * 3);
  let seed = 12345;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      const noise = (seed >>> 24) % 17 - 8;
      const edge = ((x >> 5) + (y >> 5)) % 2 ? 40 : 0;
      const i = (y * width + x) * 3;
      px[i] = Math.max(0, Math.min(255, 128 + 90 * Math.sin(x / 17) + edge + noise));
      px[i + 1] = Math.max(0, Math.min(255, 128 + 90 * Math.cos(y / 23) - edge + noise));
      px[i + 2] = Math.max(0, Math.min(255, 100 + (x + y) / 8 + noise));
    }
  }
  return px;
}

async function rate(path: string, size: number, seconds: number, parallel: number): Promise<number> {
  const pre = defaultPreprocess(size);
  for (let i = 0; i < 5; i++) await preprocessImage(path, pre);
  const t0 = performance.now();
  let n = 0;
  while (performance.now() - t0 < seconds * 1000) {
    await Promise.all(Array.from({ length: parallel }, () => preprocessImage(path, pre)));
    n += parallel;
  }
  return (n * 1000) / (performance.now() - t0);
}

const seconds = Number(process.argv[2] ?? 3);
const dir = mkdtempSync(join(tmpdir(), 'genalign-bench-'));
try {
  const jpg = join(dir, 'photo512x384.jpg');
  await sharp(synthetic(512, 384), { raw: { width: 512, height: 384, channels: 3 } }).jpeg({ quality: 90 }).toFile(jpg);
  const png = join(dir, 'small64.png');
  await sharp(synthetic(64, 64), { raw: { width: 64, height: 64, channels: 3 } }).png().toFile(png);
  for (const [label, path, size] of [['512x384 JPEG -> 224', jpg, 224], ['64x64 PNG -> 32', png, 32], ['64x64 PNG -> 224', png, 224]] as const) {
    const one = await rate(path, size, seconds, 1);
    const eight = await rate(path, size, seconds, 8);
    console.log(`${label}: ${one.toFixed(0)} images/s one at a time, ${eight.toFixed(0)} images/s 8 at once`);
  }
  for (const [w, h, size] of [[512, 384, 224], [224, 224, 224], [64, 64, 32], [64, 64, 224]]) {
    const src = { width: w, height: h, channels: 3 as const, data: synthetic(w, h) };
    const t = resizeTarget(w, h, size);
    const window = { left: (t.width - size) >> 1, top: (t.height - size) >> 1, width: size, height: size };
    for (let i = 0; i < 20; i++) resizeWindowRgb(src, t.width, t.height, window);
    let n = 0;
    const t0 = performance.now();
    while (performance.now() - t0 < seconds * 1000) {
      resizeWindowRgb(src, t.width, t.height, window);
      n++;
    }
    console.log(`resize ${w}x${h} -> ${size} crop on the main thread: ${((performance.now() - t0) / n).toFixed(2)} ms per image`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
