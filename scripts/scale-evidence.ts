// The scale evidence of docs/scaling.md, on any machine (2 cores and lavapipe are enough):
//
//   node --import tsx scripts/scale-evidence.ts --out DIR [--sizes 20000,200000] [--per-shard 5000]
//        [--jobs 4] [--parallel 2] [--train-steps 150] [--batch 64]
//
// For each size N: writes N tiny (real, generated) pairs (32×32 PNGs, distinct per pair) into
// WebDataset shards with sizes.json; builds the teacher cache (preset 'tiny') with `--jobs`
// cache-teacher jobs (--shard i/jobs), `--parallel` of them at a time; then trains from the
// shards for --train-steps steps. For the smallest N it also builds the cache once in a single
// unsharded process. Every command runs under /usr/bin/time, which gives its peak RSS; the
// report (DIR/report.json and stdout) has the wall times, images/s and peak RSS of each phase.
import { spawn } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { pack } from 'tar-stream';
import { createWriteStream } from 'node:fs';
import { mulberry32 } from '../src/nn/init.ts';

const { values } = parseArgs({
  options: {
    out: { type: 'string' },
    sizes: { type: 'string', default: '20000,200000' },
    'per-shard': { type: 'string', default: '5000' },
    jobs: { type: 'string', default: '4' },
    parallel: { type: 'string', default: '2' },
    'train-steps': { type: 'string', default: '150' },
    batch: { type: 'string', default: '64' },
  },
});
if (!values.out) throw new Error('--out DIR is required');
const out = resolve(values.out);
const sizes = values.sizes!.split(',').map(Number);
const perShard = Number(values['per-shard']);
const jobs = Number(values.jobs);
const parallel = Number(values.parallel);
const root = resolve(new URL('..', import.meta.url).pathname);

/** A 32×32 PNG: a background and a square, both from `rand`; `shift` alters the colours (the "generated" rendering). */
async function image(rand: () => number, shift: number): Promise<Buffer> {
  const px = Buffer.alloc(32 * 32 * 3);
  const bg = [rand(), rand(), rand()].map((v) => Math.floor(v * 200));
  const fg = [rand(), rand(), rand()].map((v) => Math.floor(v * 255));
  const x0 = Math.floor(rand() * 20);
  const y0 = Math.floor(rand() * 20);
  const s = 6 + Math.floor(rand() * 10);
  for (let y = 0; y < 32; y++) {
    for (let x = 0; x < 32; x++) {
      const c = x >= x0 && x < x0 + s && y >= y0 && y < y0 + s ? fg : bg;
      for (let k = 0; k < 3; k++) px[(y * 32 + x) * 3 + k] = Math.min(255, c[k] + shift * (k + 1) * 10);
    }
  }
  return sharp(px, { raw: { width: 32, height: 32, channels: 3 } }).png({ compressionLevel: 1 }).toBuffer();
}

async function writeShards(dir: string, n: number): Promise<string> {
  mkdirSync(dir, { recursive: true });
  const count = Math.ceil(n / perShard);
  const sizesJson: Record<string, number> = {};
  for (let s = 0; s < count; s++) {
    const name = `${String(s).padStart(5, '0')}.tar`;
    const p = pack();
    const done = new Promise<void>((res, rej) => {
      const ws = createWriteStream(join(dir, name));
      ws.on('finish', res);
      ws.on('error', rej);
      p.pipe(ws);
    });
    let k = 0;
    for (let i = s * perShard; i < Math.min(n, (s + 1) * perShard); i++, k++) {
      const key = String(i).padStart(8, '0');
      const real = await image(mulberry32(i + 1), 0);
      const gen = await image(mulberry32(i + 1), 1);
      const add = (m: string, data: Buffer): Promise<void> => new Promise((res, rej) => p.entry({ name: m, size: data.length }, data, (e) => (e ? rej(e) : res())));
      await add(`${key}.real.png`, real);
      await add(`${key}.gen.png`, gen);
      await add(`${key}.txt`, Buffer.from(`scene ${i}`));
    }
    p.finalize();
    await done;
    sizesJson[name] = k;
  }
  writeFileSync(join(dir, 'sizes.json'), JSON.stringify(sizesJson, null, 1) + '\n');
  return `${dir}/{00000..${String(count - 1).padStart(5, '0')}}.tar`;
}

interface Timed {
  wallS: number;
  peakRssMiB: number;
  stderr: string;
}

/** Runs an npm script's entry under /usr/bin/time; rejects when it fails. */
function timed(entry: string, args: string[]): Promise<Timed> {
  return new Promise((res, rej) => {
    const t0 = performance.now();
    const child = spawn('/usr/bin/time', ['-f', 'PEAK_RSS_KB=%M', process.execPath, '--import', 'tsx', join(root, entry), ...args], { cwd: root, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, CI: 'true' } });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('close', (code) => {
      const m = /PEAK_RSS_KB=(\d+)/.exec(stderr);
      if (code !== 0 || !m) return rej(new Error(`${entry} ${args.join(' ')} failed (${code}):\n${stderr.slice(-3000)}`));
      res({ wallS: (performance.now() - t0) / 1000, peakRssMiB: Number(m[1]) / 1024, stderr });
    });
  });
}

const report: Record<string, unknown> = { machine: `${process.platform} ${process.arch}, ${(await import('node:os')).availableParallelism()} cores`, perShard, jobs, parallel, sizes: {} as Record<string, unknown> };
for (const n of sizes) {
  const dir = join(out, `n${n}`);
  rmSync(dir, { recursive: true, force: true });
  const t0 = performance.now();
  const spec = await writeShards(join(dir, 'shards'), n);
  const genS = (performance.now() - t0) / 1000;
  console.log(`N=${n}: shards written in ${genS.toFixed(1)} s (${spec})`);
  const cacheDir = join(dir, 'cache');
  // Sharded cache build: `jobs` jobs, `parallel` at a time.
  const tc = performance.now();
  const results: Timed[] = [];
  for (let i = 0; i < jobs; i += parallel) {
    const wave = Array.from({ length: Math.min(parallel, jobs - i) }, (_, k) => timed('src/cli/cache-teacher.ts', ['--data', spec, '--model', 'tiny', '--shard', `${i + k}/${jobs}`, '--cache-dir', cacheDir, '--batch', '256']));
    results.push(...(await Promise.all(wave)));
  }
  const cacheS = (performance.now() - tc) / 1000;
  const entry: Record<string, unknown> = {
    shardsWrittenS: genS,
    cacheSharded: { jobs, parallel, wallS: cacheS, imagesPerS: n / cacheS, peakRssMiBPerJob: results.map((r) => Math.round(r.peakRssMiB)) },
  };
  console.log(`N=${n}: cache by ${jobs} jobs (${parallel} at a time) in ${cacheS.toFixed(1)} s = ${(n / cacheS).toFixed(0)} images/s; peak RSS per job ${results.map((r) => r.peakRssMiB.toFixed(0)).join(', ')} MiB`);
  if (n === Math.min(...sizes)) {
    const single = await timed('src/cli/cache-teacher.ts', ['--data', spec, '--model', 'tiny', '--cache-dir', join(dir, 'cache-single'), '--batch', '256']);
    entry.cacheSingle = { wallS: single.wallS, imagesPerS: n / single.wallS, peakRssMiB: Math.round(single.peakRssMiB) };
    console.log(`N=${n}: cache by one unsharded process in ${single.wallS.toFixed(1)} s = ${(n / single.wallS).toFixed(0)} images/s; peak RSS ${single.peakRssMiB.toFixed(0)} MiB`);
    rmSync(join(dir, 'cache-single'), { recursive: true, force: true });
  }
  const steps = values['train-steps']!;
  const tr = await timed('src/cli/train.ts', ['--data', spec, '--model', 'tiny', '--steps', steps, '--batch', values.batch!, '--val-fraction', '0.01', '--no-eval', '--warmup', '10', '--lr', '1e-3', '--save-every', '50', '--cache-dir', cacheDir, '--out', join(dir, 'run')]);
  const embedded = /teacher cache: the real images of all (\d+) shard\(s\) are cached/.test(tr.stderr);
  entry.train = { steps: Number(steps), batch: Number(values.batch), wallS: tr.wallS, peakRssMiB: Math.round(tr.peakRssMiB), cacheComplete: embedded };
  console.log(`N=${n}: train ${steps} steps in ${tr.wallS.toFixed(1)} s; peak RSS ${tr.peakRssMiB.toFixed(0)} MiB; cache used whole: ${embedded}`);
  (report.sizes as Record<string, unknown>)[String(n)] = entry;
  rmSync(join(dir, 'shards'), { recursive: true, force: true });
  writeFileSync(join(out, 'report.json'), JSON.stringify(report, null, 2) + '\n');
}
console.log(JSON.stringify(report, null, 2));
