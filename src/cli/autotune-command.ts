// `npm run autotune -- [--model DIR|NAME] [--batch N] [--rank R] [--reps N] [--variants a,b]`
// Runs one GMAIL step's matmuls for a model and batch (teacher forward, student forward and
// backward with a LoRA adapter) on random pixels, so that matmul records every shape class
// training will use, then times every candidate kernel variant on each class and stores the
// winners in the autotune cache ($GENALIGN_CACHE_DIR/autotune.json, keyed by adapter). Runs of
// train / embed / eval with GENALIGN_AUTOTUNE=1 then use them. Prints before → after per class.
import { getDevice } from '../gpu/device.ts';
import { fromArray, scope } from '../tensor/tensor.ts';
import { backward, noGrad } from '../tensor/autograd.ts';
import { sum } from '../ops/reduce.ts';
import { autotuneMatmul, matmulCaps, seenMatmulShapes } from '../ops/matmul.ts';
import { adapterKey, autotuneCachePath, candidateVariants, chooseMatmulVariant, shapeClass } from '../ops/matmul-select.ts';
import { LoraAdapter, DEFAULT_LORA } from '../nn/lora.ts';
import { loadModel } from '../io/hf-checkpoint.ts';
import { parseFlags, helpText, positive, UsageError, type FlagSpec } from './args.ts';

export const AUTOTUNE_FLAGS: FlagSpec[] = [
  { name: 'model', type: 'string', default: 'vit-b-32', help: 'HF CLIP model directory, or a preset: tiny, vit-b-32, vit-b-16, vit-l-14 (only the shapes matter)' },
  { name: 'batch', type: 'int', default: 32, help: 'micro-batch to tune for (train\'s --batch)', check: positive },
  { name: 'rank', type: 'int', default: DEFAULT_LORA.rank, help: 'LoRA rank of the student', check: positive },
  { name: 'reps', type: 'int', default: 5, help: 'timed runs per variant and shape class (after one warm-up)', check: positive },
  { name: 'variants', type: 'string', help: 'comma-separated variant names to choose among (default: every candidate of this adapter)' },
  { name: 'seed', type: 'int', default: 0, help: 'seed for preset models and the adapter' },
];

export async function runAutotune(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(helpText('autotune', 'Time every matmul kernel variant on the shapes one training step uses and cache the fastest per shape class (used with GENALIGN_AUTOTUNE=1).', AUTOTUNE_FLAGS));
    return 0;
  }
  const f = parseFlags(argv, AUTOTUNE_FLAGS, 'autotune');
  const device = await getDevice();
  const caps = matmulCaps(device);
  const known = new Set([...candidateVariants(caps, 'f32'), ...(device.hasFeature('shader-f16') ? candidateVariants(caps, 'f16') : [])].map((v) => v.name));
  const only = f.variants === undefined ? undefined : String(f.variants).split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  for (const name of only ?? []) {
    if (!known.has(name)) throw new UsageError(`autotune: --variants has '${name}', which is not a candidate on ${device.adapter.name} (candidates: ${[...known].join(', ')})`);
  }
  const batch = Number(f.batch);
  const rank = Number(f.rank);
  const { model, source } = loadModel(String(f.model), device, Number(f.seed));
  const lora = LoraAdapter.create(model.cfg, { ...DEFAULT_LORA, rank, alpha: rank, seed: Number(f.seed) }, device);
  try {
    // One step's matmuls: matmul records the shape class of each product it runs.
    const S = model.cfg.imageSize;
    const pixels = fromArray(Float32Array.from({ length: batch * 3 * S * S }, (_, i) => Math.sin(0.37 * i)), [batch, 3, S, S], device).keep();
    try {
      scope(() => void noGrad(() => model.forward(pixels)));
      scope(() => backward(sum(model.forward(pixels, { lora }))));
      await device.sync();
    } finally {
      pixels.dispose();
      for (const p of lora.parameters()) p.zeroGrad();
    }
    const shapes = seenMatmulShapes();
    console.error(`autotune: ${shapes.length} matmul shape classes of ${source} at batch ${batch} on ${device.adapter.name}; ${only ? only.length : 'every'} candidate variant(s), ${Number(f.reps)} timed runs each`);
    const rows: string[][] = [['shape class', 'before', 'GFLOP/s', 'winner', 'GFLOP/s', 'speedup']];
    for (const shape of shapes) {
      const before = chooseMatmulVariant(caps, shape).name;
      const r = await autotuneMatmul(device, shape, Number(f.reps), only);
      const b = r.gflops[before];
      const w = r.gflops[r.winner];
      rows.push([shapeClass(shape), before, b === undefined ? '-' : b.toFixed(1), r.winner, w.toFixed(1), b === undefined ? '-' : (w / b).toFixed(2)]);
      console.error(`  ${shapeClass(shape)}: ${r.winner} (${w.toFixed(1)} GFLOP/s)`);
    }
    const widths = rows[0].map((_, c) => Math.max(...rows.map((row) => row[c].length)));
    for (const row of rows) console.log(row.map((cell, c) => cell.padEnd(widths[c])).join('  ').trimEnd());
    console.error(`autotune: winners stored in ${autotuneCachePath()} under '${adapterKey(caps)}'; run train / embed / eval with GENALIGN_AUTOTUNE=1 to use them`);
    return 0;
  } finally {
    lora.dispose();
    model.dispose();
  }
}
