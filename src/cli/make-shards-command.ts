// `npm run make-shards -- --data DIR --out DIR [--per-shard N]`
// Converts a dataset in either of genalign's folder layouts (pairs.jsonl, or real/ + generated/)
// into WebDataset tar shards (src/io/webdataset.ts): out/00000.tar, 00001.tar, … with N samples
// each, in the dataset's order. Sample i is keyed by its index (zero-padded: keys must hold no
// '.'), and its JSON member keeps the pair's id and label; the caption is its .txt member. Each
// shard is written atomically and read back (the samples it holds must be the ones written).
// sizes.json gives each shard's sample count (train --epochs uses it).
// --out must be a new or empty directory, so no earlier shard is mixed in or overwritten.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { loadDataset } from '../io/dataset.ts';
import { SIZES_FILE, readShard, shardName, shardPattern, writeShard, type SampleToWrite } from '../io/webdataset.ts';
import { writeFileAtomic } from '../platform/atomic-file.ts';
import { parseFlags, helpText, positive, UsageError, type FlagSpec } from './args.ts';
import { outputPathProblem } from './embed-command.ts';
import { warn } from './terminal.ts';

export const MAKE_SHARDS_FLAGS: FlagSpec[] = [
  { name: 'data', type: 'string', help: 'dataset directory (pairs.jsonl, or real/ + generated/)' },
  { name: 'out', type: 'string', help: 'directory for the shards (new or empty)' },
  { name: 'per-shard', type: 'int', default: 1000, help: 'samples per shard', check: positive },
];


export async function runMakeShards(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(helpText('make-shards', 'Convert a pairs.jsonl or folder dataset into WebDataset tar shards.', MAKE_SHARDS_FLAGS));
    return 0;
  }
  const f = parseFlags(argv, MAKE_SHARDS_FLAGS, 'make-shards');
  for (const req of ['data', 'out'] as const) if (!f[req]) throw new UsageError(`make-shards: --${req} is required (see --help)`);
  const out = resolve(String(f.out));
  const problem = outputPathProblem('--out', out, 'dir', 'the shards');
  if (problem) throw new UsageError(`make-shards: ${problem}`);
  if (existsSync(out) && statSync(out).isDirectory() && readdirSync(out).length > 0) {
    throw new UsageError(`make-shards: --out ${out} is not empty; shards go into a new or empty directory, so that nothing there is overwritten or mixed in`);
  }
  const dataset = loadDataset(String(f.data), { onWarn: warn });
  const pairs = dataset.pairs;
  if (pairs.length === 0) throw new UsageError(`make-shards: ${String(f.data)} holds no pair`);
  const per = Number(f['per-shard']);
  const count = Math.ceil(pairs.length / per);
  const width = Math.max(6, String(pairs.length - 1).length);
  const t0 = performance.now();
  const sizes: Record<string, number> = {};
  for (let s = 0; s < count; s++) {
    const samples: SampleToWrite[] = pairs.slice(s * per, (s + 1) * per).map((p, i) => ({
      key: String(s * per + i).padStart(width, '0'),
      real: p.real,
      generated: p.generated,
      id: p.id,
      ...(p.caption !== undefined ? { caption: p.caption } : {}),
      ...(p.label !== undefined ? { label: p.label } : {}),
    }));
    const path = join(out, shardName(s, count));
    await writeShard(path, samples);
    // Read back: the same keys, ids and generated counts, nothing left out.
    const back: string[] = [];
    const problems: string[] = [];
    for await (const x of readShard(path, (p) => problems.push(`${p.key}: ${p.reason}`))) back.push(`${x.key}:${x.id}:${x.generated.length}`);
    const want = samples.map((x) => `${x.key}:${x.id}:${x.generated.length}`);
    if (problems.length || back.join('\n') !== want.join('\n')) throw new Error(`make-shards: ${path} does not read back as written (${problems[0] ?? 'other samples'}); the disk may be failing`);
    warn(`make-shards: ${path}: ${samples.length} samples`);
    sizes[shardName(s, count)] = samples.length;
  }
  // Each shard's sample count, so train --epochs knows an epoch's length without reading the shards.
  writeFileAtomic(join(out, SIZES_FILE), JSON.stringify(sizes, null, 1) + '\n');
  warn(`make-shards: ${pairs.length} pairs in ${count} shard(s) in ${((performance.now() - t0) / 1000).toFixed(1)} s; --data ${shardPattern(out, count)}`);
  return 0;
}
