// `node --import tsx scripts/make-demo-data.ts --out DIR [--count 256] [--size 64] [--seed 0] [--variants 2]`
// Builds (or reuses) the synthetic demo dataset; see src/io/demo-data.ts and docs/data-format.md.
import { ensureDemoDataset } from '../src/io/demo-data.ts';
import { helpText, parseFlags, positive, UsageError, type FlagSpec } from '../src/cli/args.ts';

const FLAGS: FlagSpec[] = [
  { name: 'out', type: 'string', help: 'dataset directory (created; reused when already complete with the same parameters)' },
  { name: 'count', type: 'int', default: 256, help: 'number of pairs (real images)', check: positive },
  { name: 'size', type: 'int', default: 64, help: 'image side in pixels', check: positive },
  { name: 'seed', type: 'int', default: 0, help: 'random seed' },
  { name: 'variants', type: 'int', default: 2, help: 'generated images per real image', check: positive },
];

async function main(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(helpText('make-demo-data', 'Build the synthetic demo dataset (procedural "real" scenes + rendering-shifted "generated" images; NOT diffusion outputs).', FLAGS));
    return 0;
  }
  const f = parseFlags(argv, FLAGS, 'make-demo-data');
  if (!f.out) throw new UsageError('make-demo-data: --out is required (see --help)');
  const t0 = performance.now();
  const r = await ensureDemoDataset(String(f.out), { count: Number(f.count), size: Number(f.size), seed: Number(f.seed), variants: Number(f.variants) });
  const secs = ((performance.now() - t0) / 1000).toFixed(1);
  console.error(r.reused ? `make-demo-data: ${r.dir} is already complete (${r.count} pairs); reused` : `make-demo-data: wrote ${r.count} pairs to ${r.dir} in ${secs} s`);
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(e instanceof UsageError ? e.message : `make-demo-data: ${(e as Error).message}`);
    process.exit(e instanceof UsageError ? 2 : 1);
  },
);
