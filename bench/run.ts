// `npm run bench`: times genalign's kernels at realistic shapes against tfjs-backend-webgpu on the
// same adapter, prints a table and writes bench/results/<date>-<adapter>.json.
//
//   npm run bench -- [--suite <names>] [--filter <substring>] [--reps N] [--quick] [--no-peer] [--all-variants] [--out <dir>]
//
// Adding a kernel family: write bench/suites/<family>.ts exporting a Suite and list it in SUITES.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { cpus, loadavg } from 'node:os';
import { createDevice } from '../src/gpu/device.ts';
import { adapterSlug, createTimer, formatBreakdown, formatTable, matchesFilter, runCase, type Failure, type PeerCache, type Report, type Row, type Suite } from './harness.ts';
import { startPeer, stopPeer, type Peer } from './peer-tfjs.ts';
import { mergeTorchRows, readTorchRows, type TorchRows } from './peer-torch.ts';
import { elementwiseSuite } from './suites/elementwise.ts';
import { matmulSuite } from './suites/matmul.ts';
import { attentionSuite } from './suites/attention.ts';
import { layernormSuite } from './suites/layernorm.ts';
import { loraSuite } from './suites/lora.ts';
import { lossSuite } from './suites/loss.ts';
import { adamwSuite } from './suites/adamw.ts';
import { vitSuite } from './suites/vit.ts';
import { trainSuite } from './suites/train.ts';

const SUITES: Suite[] = [elementwiseSuite, matmulSuite, attentionSuite, layernormSuite, loraSuite, lossSuite, adamwSuite, vitSuite, trainSuite];

const HELP = `usage: npm run bench -- [options]
  --filter <s>   only cases whose kernel, variant, shape or dtype contains <s>
  --reps <n>     timed repetitions per case (median is reported; default 5)
  --quick        tiny shapes (smoke test)
  --suite <s>    only these suites (comma-separated names: ${SUITES.map((s) => s.name).join(', ')})
  --no-peer      skip tfjs-backend-webgpu and the timing of genalign-composed peers
  --all-variants every registered kernel variant on every shape (default: on one shape per kernel)
  --out <dir>    where the JSON goes (default bench/results)
  --torch-rows <file>  rows of bench/peer-torch/gmail_step.py from the same machine: each is set
                 beside genalign's row of the same kernel/variant/shape/dtype (peer, peer_ms, ratio)`;

export interface BenchRun {
  report: Report;
  path: string;
}

/** Runs the bench with command-line style arguments; returns the report and where it was written. */
export async function main(argv: string[], log: (line: string) => void = console.log): Promise<BenchRun> {
  const { values } = parseArgs({
    args: argv,
    options: {
      filter: { type: 'string' },
      suite: { type: 'string' },
      reps: { type: 'string', default: '5' },
      quick: { type: 'boolean', default: false },
      'no-peer': { type: 'boolean', default: false },
      'all-variants': { type: 'boolean', default: false },
      out: { type: 'string' },
      'torch-rows': { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    log(HELP);
    return { report: emptyReport(argv), path: '' };
  }
  const reps = Number(values.reps);
  if (!Number.isInteger(reps) || reps < 1) throw new Error(`bench: --reps must be a positive integer, got '${values.reps}'`);
  const wanted = values.suite ? values.suite.split(',').map((x) => x.trim()) : null;
  const unknown = wanted?.filter((w) => !SUITES.some((s) => s.name === w)) ?? [];
  if (unknown.length) throw new Error(`bench: unknown suite(s) ${unknown.join(', ')}; known: ${SUITES.map((s) => s.name).join(', ')}`);
  // Read before any GPU work, so a bad file fails at once instead of after the whole run.
  const torchRows: TorchRows | null = values['torch-rows'] ? readTorchRows(resolve(values['torch-rows'])) : null;
  const benchDir = dirname(fileURLToPath(import.meta.url));
  const outDir = resolve(values.out ?? join(benchDir, 'results'));

  const device = await createDevice();
  const timer = createTimer(device);
  let peer: Peer | null = null;
  let peerNote = 'disabled (--no-peer)';
  if (!values['no-peer']) {
    const started = await startPeer(device.adapter);
    if (typeof started === 'string') peerNote = `none: ${started}`;
    else {
      peer = started;
      peerNote = `${peer.name} on ${peer.adapterName}; ${peer.timingDescription}`;
    }
  }
  const opts = { reps, warmup: 1, peers: !values['no-peer'] };
  const loadStart = loadavg()[0];
  log(`adapter: ${device.adapter.name} (vendor ${device.adapter.vendor}, backend ${device.adapter.backend})`);
  log(`timing:  ${timer.description}; median of ${reps} reps after ${opts.warmup} warmup`);
  log(`peer:    ${peerNote}`);
  log(`host:    ${cpus().length} CPUs, 1-min load average ${loadStart.toFixed(2)}`);

  const rows: Row[] = [];
  const failures: Failure[] = [];
  const peerCache: PeerCache = new Map();
  try {
    for (const suite of SUITES) {
      if (wanted && !wanted.includes(suite.name)) continue;
      const cases = suite.cases({ quick: values.quick, allVariants: values['all-variants'], device }).filter((c) => matchesFilter(c, values.filter));
      for (const c of cases) {
        const what = `${c.kernel} ${c.variant ?? 'default'} ${c.shape} ${c.dtype}`;
        try {
          const row = await runCase(c, device, timer, peer, peerCache, opts, rows);
          rows.push(row);
          log(`  ${what}: ${row.ms.toFixed(3)} ms (wall ${row.wall_ms.toFixed(3)})` + (row.peer_ms !== null ? `, peer ${row.peer_ms.toFixed(3)} ms` : ''));
          if (row.breakdown) log(`    GPU time by kernel family: ${formatBreakdown(row.breakdown)}`);
        } catch (e) {
          // One broken case (e.g. a kernel not written yet) must not hide the others' numbers.
          const error = e instanceof Error ? e.message : String(e);
          failures.push({ kernel: c.kernel, variant: c.variant ?? 'default', shape: c.shape, dtype: c.dtype, error });
          log(`  ${what}: FAILED: ${error.split('\n')[0]}`);
        }
      }
    }
  } finally {
    timer.dispose();
    if (peer) stopPeer(peer);
    device.destroy();
  }

  const now = new Date();
  const report: Report = {
    adapter: { name: device.adapter.name, vendor: device.adapter.vendor, backend: device.adapter.backend },
    date: now.toISOString(),
    command: commandLine(argv),
    timing: { ours: timer.method, peer: peer ? peer.timingDescription : null, reps, warmup: opts.warmup },
    host: { cpus: cpus().length, loadavg_start: round2(loadStart), loadavg_end: round2(loadavg()[0]) },
    results: rows,
    ...(failures.length ? { failures } : {}),
  };
  if (torchRows) {
    const unmatched = mergeTorchRows(report, torchRows);
    log(`torch peer: ${torchRows.rows.length - unmatched.length} of ${torchRows.rows.length} row(s) set beside ours` + (unmatched.length ? `; unmatched: ${unmatched.map((u) => `${u.shape} ${u.dtype}`).join(', ')}` : ''));
  }
  mkdirSync(outDir, { recursive: true });
  const path = join(outDir, `${now.toISOString().slice(0, 10)}-${adapterSlug(device.adapter.name)}.json`);
  writeFileSync(path, JSON.stringify(report, null, 2) + '\n');
  log('');
  log(formatTable(rows));
  log('');
  log(`wrote ${path}`);
  if (failures.length) log(`${failures.length} case(s) FAILED (listed under "failures" in the JSON)`);
  return { report, path };
}

function round2(x: number): number {
  return Math.round(x * 100) / 100;
}

function commandLine(argv: string[]): string {
  return ['npm run bench', ...(argv.length ? ['--', ...argv] : [])].join(' ');
}

function emptyReport(argv: string[]): Report {
  return { adapter: { name: '', vendor: '', backend: '' }, date: '', command: commandLine(argv), timing: { ours: '', peer: null, reps: 0, warmup: 0 }, host: { cpus: 0, loadavg_start: 0, loadavg_end: 0 }, results: [] };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then(
    ({ report }) => process.exit(report.failures?.length ? 1 : 0),
    (e: unknown) => {
      console.error(e instanceof Error ? e.message : e);
      process.exit(1);
    },
  );
}
