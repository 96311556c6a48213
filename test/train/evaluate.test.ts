// evaluatePairs' report against a float64 host computation of its definition: reals embedded
// by the teacher, generated images by the teacher ("before") and by the LoRA student ("after"),
// two pairs skipped because an image does not decode (a generated one, a real one); then paired cosine, gen→real
// R@1 / R@5 and the centroid gap of the normalised rows. The embeddings come from embedPaths
// (checked against PyTorch in test/nn/vit.test.ts and test/cli/embed.test.ts); what is under test
// is which rows evaluatePairs pairs with which, in which direction, and the metrics on them.
import { sourceName } from '../../src/io/image.ts';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { getDevice } from '../../src/gpu/device.ts';
import { loadClipVision, modelPreprocessing } from '../../src/io/hf-checkpoint.ts';
import { readPeftAdapter } from '../../src/io/peft.ts';
import { ensureDemoDataset } from '../../src/io/demo-data.ts';
import { loadDataset } from '../../src/io/dataset.ts';
import { PreprocessPool, PreprocessWorkerError, livePreprocessWorkers } from '../../src/io/preprocess-pool.ts';
import { embedPaths } from '../../src/train/embedding.ts';
import { evaluatePairs } from '../../src/train/evaluate.ts';
import { FIXTURE_DIR, assertClose } from '../helpers/fixtures.ts';

const root = mkdtempSync(join(tmpdir(), 'genalign-evaluate-'));
test.after(() => rmSync(root, { recursive: true, force: true }));

interface HostMetrics {
  paired_cosine: number;
  r1: number;
  r5: number;
  gap: number;
}

function hostMetrics(gen: Float64Array[], real: Float64Array[]): HostMetrics {
  const unit = (v: Float64Array): Float64Array => {
    const norm = Math.sqrt(v.reduce((a, x) => a + x * x, 0));
    return v.map((x) => x / norm);
  };
  const g = gen.map(unit);
  const r = real.map(unit);
  const dot = (a: Float64Array, b: Float64Array): number => a.reduce((s, x, k) => s + x * b[k], 0);
  const n = g.length;
  let cos = 0;
  let r1 = 0;
  let r5 = 0;
  for (let i = 0; i < n; i++) {
    const own = dot(g[i], r[i]);
    cos += own;
    const rank = 1 + r.filter((rj, j) => j !== i && dot(g[i], rj) > own).length;
    if (rank <= 1) r1++;
    if (rank <= 5) r5++;
  }
  const centroid = (rows: Float64Array[]): Float64Array => rows[0].map((_, k) => rows.reduce((s, row) => s + row[k], 0) / n);
  const [cg, cr] = [centroid(g), centroid(r)];
  const gap = Math.sqrt(cg.reduce((s, x, k) => s + (x - cr[k]) ** 2, 0));
  return { paired_cosine: cos / n, r1: r1 / n, r5: r5 / n, gap };
}

test('evaluatePairs: before (teacher) and after (student) metrics equal their definition on the right rows', async () => {
  const device = await getDevice();
  const data = join(root, 'data');
  await ensureDemoDataset(data, { count: 12, size: 32, variants: 1, log: () => {} });
  const pairs = loadDataset(data).pairs;
  // Pair 3's generated image and pair 6's real image do not decode: both pairs drop out, and the
  // rows of the other pairs must stay aligned (the generated embeddings of pair 6 exist).
  const badPairs = [3, 6];
  writeFileSync(pairs[3].generated[0], 'not an image');
  writeFileSync(pairs[6].real, 'not an image');
  const { model, source, preprocessor } = loadClipVision(join(FIXTURE_DIR, 'clip-tiny'), device);
  const lora = readPeftAdapter(join(FIXTURE_DIR, 'clip-tiny-lora'), model.cfg, device);
  try {
    const pre = modelPreprocessing({ model, source, preprocessor });
    const out = join(root, 'out');
    const { report } = await evaluatePairs(device, model, { lora }, pre, pairs, out, { batch: 4, plot: 'none', seed: 0, log: () => {} });

    const kept = pairs.filter((_, i) => !badPairs.includes(i));
    const D = model.cfg.projectionDim;
    const rows = async (paths: string[], withLora: boolean): Promise<Float64Array[]> => {
      const e = await embedPaths(device, model, withLora ? lora : undefined, paths, pre, 4);
      assert.ok(e.ok.every(Boolean));
      return paths.map((_, i) => Float64Array.from(e.embeds.subarray(i * D, (i + 1) * D)));
    };
    const real = await rows(kept.map((p) => p.real), false);
    const genPaths = kept.map((p) => p.generated[0]);
    const before = hostMetrics(await rows(genPaths, false), real);
    const after = hostMetrics(await rows(genPaths, true), real);
    assert.is(report.n_val, kept.length);
    const tol = { rtol: 1e-5, atol: 1e-6 };
    for (const [k, want] of [['before', before], ['after', after]] as const) {
      assertClose([report[`paired_cosine_${k}`]], [want.paired_cosine], tol, `paired_cosine_${k}`);
      assertClose([report[`gap_${k}`]], [want.gap], tol, `gap_${k}`);
      assert.is(report[`r1_${k}`], want.r1, `r1_${k}`);
      assert.is(report[`r5_${k}`], want.r5, `r5_${k}`);
    }
    assert.ok(Math.abs(after.paired_cosine - before.paired_cosine) > 1e-3, 'the student (non-zero B) differs from the teacher');
    assert.ok(before.r5 < 1 && before.r1 < 1, `retrieval is not trivial here (R@1 ${before.r1}, R@5 ${before.r5})`);
    assert.is(livePreprocessWorkers(), 0, 'evaluatePairs and embedPaths ended their preprocessing pools');
  } finally {
    lora.dispose();
    model.dispose();
  }
});

test('evaluatePairs decodes each image once: teacher and student share the decode of the generated images', async () => {
  const device = await getDevice();
  const data = join(root, 'data-once');
  await ensureDemoDataset(data, { count: 6, size: 32, variants: 1, log: () => {} });
  const pairs = loadDataset(data).pairs;
  const { model, source, preprocessor } = loadClipVision(join(FIXTURE_DIR, 'clip-tiny'), device);
  const lora = readPeftAdapter(join(FIXTURE_DIR, 'clip-tiny-lora'), model.cfg, device);
  const pool = new PreprocessPool({ size: 1 });
  const decoded: string[] = [];
  const preprocess = pool.preprocess.bind(pool);
  pool.preprocess = (path, pre) => {
    decoded.push(sourceName(path));
    return preprocess(path, pre);
  };
  try {
    const pre = modelPreprocessing({ model, source, preprocessor });
    await evaluatePairs(device, model, { lora }, pre, pairs, join(root, 'out-once'), { batch: 4, plot: 'none', seed: 0, log: () => {}, pool });
    const want = [...pairs.map((p) => p.real), ...pairs.map((p) => p.generated[0])].sort();
    assert.equal([...decoded].sort(), want, 'every real and generated image exactly once');
  } finally {
    await pool.close();
    lora.dispose();
    model.dispose();
  }
});

test('embedPaths: a pool that cannot work is an error (not skipped files); the pool it starts ends also when it throws', async () => {
  const device = await getDevice();
  const data = join(root, 'data-errors');
  await ensureDemoDataset(data, { count: 8, size: 32, variants: 1, log: () => {} });
  const paths = loadDataset(data).pairs.map((p) => p.real);
  const { model, source, preprocessor } = loadClipVision(join(FIXTURE_DIR, 'clip-tiny'), device);
  try {
    const pre = modelPreprocessing({ model, source, preprocessor });
    const pool = new PreprocessPool({ size: 1, workerUrl: pathToFileURL(join(dirname(fileURLToPath(import.meta.url)), '..', 'helpers', 'broken-preprocess-worker.ts')) });
    try {
      await embedPaths(device, model, undefined, paths, pre, 4, { pool, onSkip: (p) => assert.unreachable(`${p} reported as a bad file`) });
      assert.unreachable('should fail');
    } catch (e) {
      assert.instance(e, PreprocessWorkerError);
    } finally {
      await pool.close();
    }
    // A hook that throws after the first batch, while the second one decodes.
    try {
      await embedPaths(device, model, undefined, paths, pre, 4, {
        onProgress: () => {
          throw new Error('progress hook failed');
        },
      });
      assert.unreachable('should fail');
    } catch (e) {
      assert.is((e as Error).message, 'progress hook failed');
    }
    assert.is(livePreprocessWorkers(), 0);
  } finally {
    model.dispose();
  }
});

test.run();
