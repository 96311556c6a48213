// Times image preprocessing (decode + resize + crop + normalise) on typical inputs and prints
// images/s and the main thread's busy time per image, for preprocessImage on the main thread
// (one at a time, and 8 at once) and for a PreprocessPool of worker threads (the default size,
// one per core but one, and 2 workers; many requests in flight, as the loader and embedPaths
// send them). Busy time is given twice: "busy", the event loop's active wall time (Node's
// eventLoopUtilization; on a loaded machine it includes time the thread waited for a core),
// and "cpu", the main thread's own CPU time (Linux /proc, 10 ms ticks; absent elsewhere).
// Then the resize alone (resample.ts's crop window), the part that would run on the main thread.
// Usage:
//   node --import tsx scripts/bench-preprocess.ts [seconds per case, default 3]
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism as availableCores, tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { defaultPreprocess, preprocessImage, resizeTarget, type PreprocessConfig } from '../src/io/image.ts';
import { PreprocessPool, defaultPoolSize } from '../src/io/preprocess-pool.ts';
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

interface Rate {
  perSecond: number;
  /** Main-thread event-loop active time per image, ms. */
  busyMs: number;
  /** Main-thread CPU time per image, ms (null where /proc has no per-thread times). */
  cpuMs: number | null;
}

/** CPU time of the main thread (user + system), ms, from /proc; null if unavailable. */
function mainThreadCpuMs(): number | null {
  try {
    // Fields after the command name: state is field 3, utime 14 and stime 15 (in clock ticks of 10 ms).
    const fields = readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return null;
  }
}

/** Images/s and main-thread busy ms per image of `run` over `seconds`, with `parallel` images in flight. */
async function rate(run: (path: string, pre: PreprocessConfig) => Promise<Float32Array>, path: string, size: number, seconds: number, parallel: number): Promise<Rate> {
  const pre = defaultPreprocess(size);
  await Promise.all(Array.from({ length: Math.max(5, parallel) }, () => run(path, pre)));
  const elu0 = performance.eventLoopUtilization();
  const cpu0 = mainThreadCpuMs();
  const t0 = performance.now();
  let n = 0;
  // `parallel` requests in flight all the time: each finished one is replaced at once.
  const runner = async (): Promise<void> => {
    while (performance.now() - t0 < seconds * 1000) {
      await run(path, pre);
      n++;
    }
  };
  await Promise.all(Array.from({ length: parallel }, runner));
  const elapsed = performance.now() - t0;
  const busy = performance.eventLoopUtilization(elu0).active;
  const cpu1 = mainThreadCpuMs();
  return { perSecond: (n * 1000) / elapsed, busyMs: busy / n, cpuMs: cpu0 === null || cpu1 === null ? null : (cpu1 - cpu0) / n };
}

const show = (r: Rate): string =>
  `${r.perSecond.toFixed(0).padStart(4)} images/s; main thread busy ${r.busyMs.toFixed(2)} ms/image` + (r.cpuMs === null ? '' : `, cpu ${r.cpuMs.toFixed(2)} ms/image`);

const seconds = Number(process.argv[2] ?? 3);
const dir = mkdtempSync(join(tmpdir(), 'genalign-bench-'));
try {
  const jpg = join(dir, 'photo512x384.jpg');
  await sharp(synthetic(512, 384), { raw: { width: 512, height: 384, channels: 3 } }).jpeg({ quality: 90 }).toFile(jpg);
  const png = join(dir, 'small64.png');
  await sharp(synthetic(64, 64), { raw: { width: 64, height: 64, channels: 3 } }).png().toFile(png);
  const poolSizes = [...new Set([defaultPoolSize(), 2])];
  const pools = poolSizes.map((size) => new PreprocessPool({ size }));
  try {
    console.log(`${availableCores()} cores; pool sizes ${poolSizes.join(', ')} (default ${defaultPoolSize()})`);
    for (const [label, path, size] of [['512x384 JPEG -> 224', jpg, 224], ['64x64 PNG -> 32', png, 32], ['64x64 PNG -> 224', png, 224]] as const) {
      console.log(`${label}:`);
      console.log(`  in-thread, 1 at once:  ${show(await rate(preprocessImage, path, size, seconds, 1))}`);
      console.log(`  in-thread, 8 at once:  ${show(await rate(preprocessImage, path, size, seconds, 8))}`);
      for (const pool of pools) {
        const inFlight = 2 * pool.maxWorkers * pool.perWorker;
        const r = await rate((p, c) => pool.preprocess(p, c), path, size, seconds, inFlight);
        console.log(`  pool of ${pool.maxWorkers}, ${String(inFlight).padStart(2)} at once: ${show(r)}`);
      }
    }
  } finally {
    await Promise.all(pools.map((p) => p.close()));
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
