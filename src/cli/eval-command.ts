// `npm run eval -- --data DIR|SHARDS --model DIR|NAME [--lora DIR | --student DIR] [--out DIR]`
// Measures alignment of generated to real images (paired cosine, R@1/R@5, modality gap),
// before (teacher on both sides) and after (the student on generated: a LoRA adapter, or a fully
// fine-tuned vision tower), and draws Figure 3.
// --out and the adapter's base seed are checked before the GPU is touched; non-finite
// embeddings (a diverged adapter) are an error and nothing is written. Everything printed goes
// through escapeForTerminal (file names from the dataset may hold control characters).
import { resolve } from 'node:path';
import { getDevice } from '../gpu/device.ts';
import { loadModel, modelPreprocessing } from '../io/hf-checkpoint.ts';
import { checkPrecision } from '../train/trainer.ts';
import { inValSplit, loadDataset, splitByValFraction, type Pair } from '../io/dataset.ts';
import { readShardPairs } from '../io/shard-stream.ts';
import { isShardSpec, listShards, type ShardSample } from '../io/webdataset.ts';
import type { ImageSource } from '../io/image.ts';
import { evaluatePairs } from '../train/evaluate.ts';
import { parseFlags, helpText, positive, fraction, PRECISION_FLAG, UsageError, type FlagSpec } from './args.ts';
import { baseDescription, outputPathProblem } from './embed-command.ts';
import { STUDENT_FLAG, openStudent, studentChoice } from './student-flag.ts';
import { escapeForTerminal, warn } from './terminal.ts';
import { TOKENIZER_FLAG } from './text-common.ts';
import { textTowerFor } from '../train/text-tower.ts';

export const EVAL_FLAGS: FlagSpec[] = [
  { name: 'data', type: 'string', help: "dataset directory (pairs.jsonl, or real/ + generated/), or WebDataset shards ('shards/{00000..00009}.tar': held-out shards, or with --val-fraction the val ids of the training shards)" },
  { name: 'max-pairs', type: 'int', default: 2000, help: 'with shards: evaluate at most this many samples (the first in shard order)', check: positive },
  { name: 'model', type: 'string', help: 'HF CLIP model directory or preset (tiny, vit-b-32, vit-b-16, vit-l-14)' },
  { name: 'lora', type: 'string', help: 'PEFT LoRA adapter directory of the trained student (omit both --lora and --student: before == after)' },
  STUDENT_FLAG,
  { name: 'out', type: 'string', default: '.', help: 'directory for metrics.json and figure3.svg/png' },
  { name: 'val-fraction', type: 'float', default: 0, help: 'evaluate only the held-out split a training run with this --val-fraction and --seed used (0 = all pairs)', check: fraction },
  { name: 'seed', type: 'int', default: 0, help: 'seed of the split (and of preset models)' },
  PRECISION_FLAG,
  { name: 'batch', type: 'int', default: 32, help: 'images per GPU batch', check: positive },
  TOKENIZER_FLAG,
  { name: 'plot', type: 'string', default: 'tsne', help: 'Figure-3 projection: tsne, pca or none', check: (v) => (['tsne', 'pca', 'none'].includes(String(v)) ? null : 'must be tsne, pca or none') },
];


export async function runEval(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(helpText('eval', 'Measure real/generated alignment before and after a student (--lora or --student); writes metrics.json and the Figure-3 plot.', EVAL_FLAGS));
    return 0;
  }
  const f = parseFlags(argv, EVAL_FLAGS, 'eval');
  for (const req of ['data', 'model'] as const) if (!f[req]) throw new UsageError(`eval: --${req} is required (see --help)`);
  const outProblem = outputPathProblem('--out', String(f.out), 'dir', 'metrics.json and figure3.svg/png');
  if (outProblem) throw new UsageError(`eval: ${outProblem}`);
  const choice = studentChoice('eval', f, String(f.model), Number(f.seed));
  const spec = String(f.data);
  const fractionVal = Number(f['val-fraction']);
  let pairs: Pair[];
  let source: Map<string, ImageSource> | null = null;
  if (isShardSpec(spec)) {
    let shards: string[];
    try {
      shards = listShards(spec, '--data');
    } catch (e) {
      throw new UsageError(`eval: ${(e as Error).message}`);
    }
    ({ pairs, source } = await readShardPairs(shards, {
      max: Number(f['max-pairs']),
      ...(fractionVal > 0 ? { take: (x: ShardSample) => inValSplit(x.id, fractionVal, Number(f.seed)) } : {}),
      onProblem: (p) => warn(`warning: eval: ${p.shard}: sample ${p.key} left out: ${p.reason}`),
    }));
    warn(`eval: ${pairs.length} samples from ${shards.length} shard(s)`);
  } else {
    const dataset = loadDataset(spec, { onWarn: warn });
    pairs = fractionVal > 0 ? splitByValFraction(dataset.pairs, fractionVal, Number(f.seed)).val : dataset.pairs;
  }
  const device = await getDevice();
  const precision = String(f.precision) as 'f32' | 'f16';
  checkPrecision(device, precision);
  const loaded = loadModel(String(f.model), device, Number(f.seed), precision);
  // Created by the first write, after every embedding is known to be finite.
  const out = resolve(String(f.out));
  const student = choice ? openStudent(choice, loaded, device, precision, out) : null;
  const pre = modelPreprocessing(loaded);
  const text = textTowerFor('eval', String(f.model), f.tokenizer === undefined ? undefined : String(f.tokenizer), device, Number(f.seed), precision, warn);
  const { report, files } = await evaluatePairs(device, loaded.model, student?.variant ?? {}, pre, pairs, out, {
    ...(text ? { text } : {}),
    batch: Number(f.batch),
    plot: f.plot as 'tsne' | 'pca' | 'none',
    seed: Number(f.seed),
    log: warn,
    baseModel: baseDescription(String(f.model), out),
    ...(student ? { student: student.description } : {}),
    ...(source ? { source: (n: string) => source.get(n) ?? n } : {}),
  });
  process.stdout.write(`${escapeForTerminal(JSON.stringify(report, null, 2))}\n`);
  warn(`wrote ${files.join(', ')}`);
  text?.model.dispose();
  student?.dispose();
  loaded.model.dispose();
  return 0;
}
