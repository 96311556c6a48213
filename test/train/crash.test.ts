// Crash consistency, proven at every file operation rather than at a list of chosen cases.
//
// A short training run (2 steps, a checkpoint after each, --keep-checkpoints 1, so checkpoint
// saving, `latest`, adapter/ publishing (first creating adapter/, then replacing its weights) and
// retention all happen, then the final eval) is first
// run uninterrupted, counting its file mutations (FileOps: every mkdir, write, append, rename,
// link, unlink and rmdir of the run directory). Then, for every one of those N mutations, the same
// run is started again and made to fail exactly there, in two ways:
//   kill    a child process SIGKILLs itself at that operation (a write or append first writes
//           half of its bytes): no catch or finally block runs, as in a real crash;
//   ENOSPC  the operation fails as on a full disk (a write or append writes half of its bytes
//           first), in this process, so the trainer's own error handling runs.
// After each failure the run is recovered the way a user would: `--resume` when the run
// directory has a config.json, otherwise the same command again. The recovered run must end
// exactly like the uninterrupted one: the same files and directories (no temporary litter, no
// lock), `latest` naming a complete checkpoint, adapter/ equal to that checkpoint's adapter,
// metrics.jsonl identical but for its timing fields, the same checkpoint weights and optimizer
// state, the same eval outputs; and no file outside the run directory touched.
// The second test does the same for every file operation of a recovery itself (a resume that
// must clean up a torn temporary file, republish adapter/ and finish retention). The third runs
// the first for a fully fine-tuned student (--rank 0: an HF model folder published to model/).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { build } from 'esbuild';
import { cpSync, existsSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { basename, dirname, join, relative } from 'node:path';
import { getDevice } from '../../src/gpu/device.ts';
import { train, type TrainResult } from '../../src/train/trainer.ts';
import { trainOptionsOf } from '../../src/cli/train-command.ts';
import { PreprocessPool } from '../../src/io/preprocess-pool.ts';
import { disposeStudent } from '../../src/train/student.ts';
import { formatOf } from '../../src/train/checkpoint.ts';
import { isAtomicTemp } from '../../src/platform/atomic-file.ts';
import { FaultyFiles, type FileOpRecord } from '../helpers/faulty-files.ts';
import { tmp, tinyDataset, ROOT } from '../cli/helpers.ts';

const root = tmp('crash');
const data = join(root, 'data');
test.before(async () => {
  await tinyDataset(data, 24);
});
// The in-process runs share one pool of preprocessing workers (each would start its own).
const pool = new PreprocessPool();
test.after(async () => {
  await pool.close();
  rmSync(root, { recursive: true, force: true });
});

function args(out: string, extra: readonly string[] = []): string[] {
  return [...extra,
    '--data', data, '--model', 'tiny', '--steps', '2', '--batch', '8', '--save-every', '1', '--keep-checkpoints', '1',
    '--val-fraction', '0.25', '--plot', 'pca', '--no-teacher-cache', '--lr', '1e-2', '--warmup', '1', '--out', out,
  ];
}

function dispose(r: TrainResult): void {
  disposeStudent(r.student);
  r.model.model.dispose();
}

/** Trains in this process with recorded (and optionally failing) file operations; returns the error, if any. */
async function trainHere(argv: string[], files: FaultyFiles): Promise<Error | null> {
  const device = await getDevice();
  try {
    dispose(await train(device, trainOptionsOf(argv), { files, pool, log: () => undefined }));
    return null;
  } catch (e) {
    return e as Error;
  }
}

/** Every path under `dir` (relative, directories marked with a trailing /), sorted. */
function tree(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      const rel = relative(dir, p);
      if (statSync(p).isDirectory()) {
        out.push(`${rel}/`);
        walk(p);
      } else out.push(rel);
    }
  };
  walk(dir);
  return out;
}

const TIMING = new Set(['images_per_s', 'elapsed_s', 'elapsedS']);

/** What a file must be for two runs to count as the same: content, less the fields that measure time. */
function content(path: string): string {
  const name = path.split('/').pop()!;
  const text = readFileSync(path);
  const untimed = (json: string): string => JSON.stringify(JSON.parse(json), (k, v: unknown) => (TIMING.has(k) ? undefined : v));
  if (name === 'metrics.jsonl') return text.toString('utf8').split('\n').filter(Boolean).map(untimed).join('\n');
  if (name === 'trainer_state.json') return untimed(text.toString('utf8'));
  return createHash('sha256').update(text).digest('hex');
}

interface Snapshot {
  tree: string[];
  files: Map<string, string>;
}

function snapshot(dir: string): Snapshot {
  const t = tree(dir);
  return { tree: t, files: new Map(t.filter((p) => !p.endsWith('/')).map((p) => [p, content(join(dir, p))])) };
}

/** Differences between a recovered run and the uninterrupted one, plus the invariants every finished run must hold. */
function problems(dir: string, ref: Snapshot): string[] {
  const out: string[] = [];
  const s = snapshot(dir);
  const missing = ref.tree.filter((p) => !s.tree.includes(p));
  const extra = s.tree.filter((p) => !ref.tree.includes(p));
  if (missing.length) out.push(`missing: ${missing.join(', ')}`);
  if (extra.length) out.push(`left over: ${extra.join(', ')}`);
  for (const [p, c] of ref.files) if (s.files.has(p) && s.files.get(p) !== c) out.push(`${p} differs from the uninterrupted run`);
  const latest = join(dir, 'checkpoints', 'latest');
  if (existsSync(latest)) {
    const ckpt = join(dir, 'checkpoints', readFileSync(latest, 'utf8').trim());
    const { files, publishDir } = formatOf(ckpt);
    for (const f of files) {
      if (!existsSync(join(ckpt, f)) || !existsSync(join(dir, publishDir, f)) || !readFileSync(join(ckpt, f)).equals(readFileSync(join(dir, publishDir, f)))) out.push(`${publishDir}/${f} is not latest's`);
    }
  }
  return out;
}

function outside(ops: readonly FileOpRecord[], dir: string): string[] {
  return ops.filter((r) => !(r.path + '/').startsWith(dir + '/') || (r.to !== undefined && !(r.to + '/').startsWith(dir + '/'))).map((r) => `${r.op} ${r.path}${r.to ? ` → ${r.to}` : ''}`);
}

/** The file a temporary file is written for (".<name>.<pid>.<time>.tmp" → "<name>"); other paths as they are. */
function targetOf(path: string): string {
  const name = basename(path);
  return isAtomicTemp(name) ? join(dirname(path), name.slice(1).replace(/\.\d+\.\d+\.tmp$/, '')) : path;
}

/** Names the point: "17 rename …/checkpoints/.step-000002.tmp → …/step-000002". */
function describe(r: FileOpRecord, dir: string): string {
  return `${r.n} ${r.op} ${relative(dir, r.path)}${r.to ? ` → ${relative(dir, r.to)}` : ''}`;
}

/**
 * The child process that is killed: test/helpers/train-child.ts bundled by esbuild (tsx would
 * compile every source file again in each of the many children), with the preprocessing worker
 * as a second bundle beside it. They are written under node_modules/ so that `webgpu` and
 * `sharp` resolve, and read the kernels from kernels/.
 */
async function bundleChild(): Promise<string> {
  const outdir = join(ROOT, 'node_modules', '.cache', 'genalign-test');
  await build({
    entryPoints: { 'train-child': join(ROOT, 'test', 'helpers', 'train-child.ts'), 'preprocess-worker': join(ROOT, 'src', 'io', 'preprocess-worker.ts') },
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    outdir,
    outExtension: { '.js': '.mjs' },
    external: ['webgpu', 'sharp', 'tar-stream'],
    logLevel: 'error',
  });
  return join(outdir, 'train-child.mjs');
}

/** Runs the bundled child with `argv`, killed by SIGKILL at file operation `at`. */
function killedRun(child: string, argv: string[], at: number): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  return new Promise((res, rej) => {
    const p = spawn(process.execPath, [child, ...argv], {
      cwd: ROOT,
      env: {
        ...process.env, CI: 'true', GENALIGN_KERNELS_DIR: join(ROOT, 'kernels'), GENALIGN_TEST_FAULT: `kill:${at}`,
        GENALIGN_TEST_PREPROCESS_WORKER: join(dirname(child), 'preprocess-worker.mjs'),
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    p.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('error', rej);
    p.on('close', (code, signal) => res({ code, signal, stderr }));
  });
}

/** Which part of a run a file operation belongs to, from its path (for the printed summary). */
function stageOf(r: FileOpRecord, dir: string): string {
  const p = relative(dir, r.path);
  if (p === '' || p === 'run.lock' || p.startsWith('.run.lock')) return 'run directory and lock';
  if (p.includes('config.json') && !p.startsWith('checkpoints') && !p.includes('adapter') && !/^\.?model/.test(p)) return 'config.json';
  if (p.includes('metrics.jsonl')) return 'metrics.jsonl';
  if (p.includes('metrics.json') || p.includes('figure3')) return 'final eval';
  if (r.to?.endsWith('.deleting') || p.includes('.deleting')) return 'retention';
  if (p.startsWith('adapter') || p.startsWith('.adapter')) return 'adapter/ publishing';
  if (p.startsWith('model') || p.startsWith('.model')) return 'model/ publishing';
  if (p.includes('latest')) return 'latest';
  return 'checkpoint files';
}

function stageSummary(points: readonly FileOpRecord[], dir: string): string {
  const counts = new Map<string, number>();
  for (const r of points) counts.set(stageOf(r, dir), (counts.get(stageOf(r, dir)) ?? 0) + 1);
  return [...counts].map(([k, n]) => `${k} ${n}`).join(', ');
}

interface Reference {
  child: string;
  dir: string;
  /** The run's command line (for the run directory `dir`). */
  argv: (dir: string) => string[];
  snapshot: Snapshot;
  points: FileOpRecord[];
}

const references = new Map<string, Reference>();
let childBundle: Promise<string> | null = null;

/** The uninterrupted run with `extra` flags (once each, in `reference<name>`), its file operations, and the child process bundle. */
async function uninterrupted(name = '', extra: readonly string[] = []): Promise<Reference> {
  const known = references.get(name);
  if (known) return known;
  childBundle ??= bundleChild();
  const child = await childBundle;
  const dir = join(root, `reference${name}`);
  const argv = (d: string): string[] => args(d, extra);
  const files = new FaultyFiles();
  assert.is(await trainHere(argv(dir), files), null);
  const ref = { child, dir, argv, snapshot: snapshot(dir), points: files.ops };
  references.set(name, ref);
  return ref;
}

/**
 * For every file operation of `points` (a run started in a directory prepared by `start`, with
 * command line `argv`), a kill there and a full disk there, each followed by the user's recovery;
 * returns the failures and how many recovered to the reference.
 */
async function injectEverywhere(ref: Reference, points: readonly FileOpRecord[], start: (dir: string) => void, argv: (dir: string) => string[]): Promise<{ failures: string[]; recovered: number }> {
  const failures: string[] = [];
  let recovered = 0;
  const recover = async (dir: string, where: string): Promise<void> => {
    const again = existsSync(join(dir, 'config.json')) ? ['--resume', dir] : ref.argv(dir);
    const files = new FaultyFiles();
    const e = await trainHere(again, files);
    if (e) {
      failures.push(`${where}: recovery (${again[0]}) failed: ${e.message}`);
      return;
    }
    const out = outside(files.ops, dir);
    if (out.length) failures.push(`${where}: recovery touched ${out.join(', ')}`);
    const p = problems(dir, ref.snapshot);
    if (p.length) failures.push(`${where}: ${p.join('; ')}`);
    else recovered++;
    rmSync(dir, { recursive: true, force: true });
  };
  for (const point of points) {
    // The killed child runs while this process does the full-disk case of the same point.
    const killDir = join(root, `kill-${point.n}`);
    start(killDir);
    const killed = killedRun(ref.child, argv(killDir), point.n);

    const where = `ENOSPC at ${describe(point, ref.dir)}`;
    const dir = join(root, `enospc-${point.n}`);
    start(dir);
    const files = new FaultyFiles({ mode: 'enospc', at: point.n });
    const e = await trainHere(argv(dir), files);
    if (!files.failed) failures.push(`${where}: the run never reached that operation`);
    else {
      // A full disk stops the run with an error naming the file (or the file a temporary one was
      // written for), except while releasing the lock (a warning).
      if (e && !e.message.includes(files.failed.path) && !e.message.includes(targetOf(files.failed.path))) failures.push(`${where}: the error does not name ${files.failed.path}: ${e.message}`);
      if (!e && !(files.failed.op === 'unlink' && files.failed.path.endsWith('run.lock'))) failures.push(`${where}: the run did not stop`);
      const out = outside(files.ops, dir);
      if (out.length) failures.push(`${where}: touched ${out.join(', ')}`);
      await recover(dir, where);
    }

    const killWhere = `kill at ${describe(point, ref.dir)}`;
    const k = await killed;
    if (k.signal !== 'SIGKILL') failures.push(`${killWhere}: the run was not killed there (exit ${k.code}): ${k.stderr.slice(-400)}`);
    else await recover(killDir, killWhere);
  }
  return { failures, recovered };
}

test('a kill or a full disk at every file operation of a run: the recovered run equals an uninterrupted one', async () => {
  const ref = await uninterrupted();
  const points = ref.points;
  // The run really covers what it claims: checkpoints, latest, publishing, retention, eval.
  const kinds = new Set(points.map((r) => r.op));
  for (const k of ['mkdir', 'write', 'append', 'rename', 'unlink', 'rmdir'] as const) assert.ok(kinds.has(k), `the run does a ${k}`);
  assert.ok(points.some((r) => r.to?.endsWith('.deleting')), 'retention ran');
  assert.ok(points.some((r) => r.to?.endsWith(join('adapter', 'adapter_model.safetensors'))), 'adapter/ was published twice (created, then its weights replaced)');
  assert.ok(points.some((r) => r.path.includes('.metrics.json.')), 'the final eval wrote metrics.json');
  assert.equal(ref.snapshot.tree.filter((p) => p.startsWith('checkpoints/')), ['checkpoints/', 'checkpoints/latest', 'checkpoints/step-000002/', ...['adapter_config.json', 'adapter_model.safetensors', 'optimizer.safetensors', 'trainer_state.json'].map((f) => `checkpoints/step-000002/${f}`)]);
  assert.equal(outside(points, ref.dir), [], 'the uninterrupted run writes only inside its directory');
  const dataBefore = snapshot(data);

  const { failures, recovered } = await injectEverywhere(ref, points, () => undefined, ref.argv);
  assert.equal(snapshot(data), dataBefore, 'the dataset was not touched');
  assert.equal(readdirSync(root).sort(), ['data', 'reference'], 'nothing else was created next to the runs');
  console.log(`  crash consistency: ${points.length} file operations of a run (${stageSummary(points, ref.dir)}) × (kill, ENOSPC) = ${2 * points.length} injections; ${recovered} recovered to the uninterrupted run`);
  assert.equal(failures, [], `${failures.length} of ${2 * points.length} injection points failed:\n${failures.join('\n')}`);
  assert.is(recovered, 2 * points.length);
});

test('a kill or a full disk at every file operation of a recovery: recovering again still ends like the uninterrupted run', async () => {
  const ref = await uninterrupted();
  // The state a kill while replacing adapter/'s weights after the last checkpoint leaves: a torn
  // temporary file, adapter/ holding the previous checkpoint's weights, retention not done, no eval.
  const at = ref.points.find((r) => r.op === 'write' && r.path.endsWith('.adapter-adapter_model.safetensors.tmp'))!;
  const messy = join(root, 'messy');
  const k = await killedRun(ref.child, args(messy), at.n);
  assert.is(k.signal, 'SIGKILL', k.stderr);
  assert.ok(existsSync(join(messy, 'checkpoints', 'step-000001')) && existsSync(join(messy, '.adapter-adapter_model.safetensors.tmp')) && !existsSync(join(messy, 'metrics.json')));
  const start = (dir: string): void => cpSync(messy, dir, { recursive: true });
  // The recovery's own file operations: cleanup, republishing, retention, the final eval, the lock.
  const probe = join(root, 'probe');
  start(probe);
  const files = new FaultyFiles();
  assert.is(await trainHere(['--resume', probe], files), null);
  assert.equal(problems(probe, ref.snapshot), []);
  const points = files.ops.map((r) => ({ ...r, path: r.path.replace(probe, ref.dir), ...(r.to ? { to: r.to.replace(probe, ref.dir) } : {}) }));
  rmSync(probe, { recursive: true });

  const { failures, recovered } = await injectEverywhere(ref, points, start, (dir) => ['--resume', dir]);
  rmSync(messy, { recursive: true });
  console.log(`  crash consistency of a recovery: ${points.length} file operations (${stageSummary(points, ref.dir)}) × (kill, ENOSPC) = ${2 * points.length} injections; ${recovered} recovered to the uninterrupted run`);
  assert.equal(failures, [], `${failures.length} of ${2 * points.length} injection points failed:\n${failures.join('\n')}`);
  assert.equal(readdirSync(root).sort(), ['data', 'reference']);
  assert.is(recovered, 2 * points.length);
});

test('a fully fine-tuned student (--rank 0): a kill or a full disk at every file operation of its run recovers to the uninterrupted run', async () => {
  const ref = await uninterrupted('-full', ['--rank', '0']);
  const points = ref.points;
  assert.ok(points.some((r) => r.to?.endsWith('.deleting')), 'retention ran');
  assert.ok(points.some((r) => r.to?.endsWith(join('model', 'model.safetensors'))), 'model/ was published twice (created, then its weights replaced)');
  assert.equal(ref.snapshot.tree.filter((p) => p.startsWith('checkpoints/')), ['checkpoints/', 'checkpoints/latest', 'checkpoints/step-000002/', ...['config.json', 'model.safetensors', 'optimizer.safetensors', 'preprocessor_config.json', 'trainer_state.json'].map((f) => `checkpoints/step-000002/${f}`)]);
  assert.equal(ref.snapshot.tree.filter((p) => p.startsWith('model/')), ['model/', 'model/config.json', 'model/model.safetensors', 'model/preprocessor_config.json']);
  assert.not.ok(ref.snapshot.tree.some((p) => p.startsWith('adapter')), 'no adapter/ for a full fine-tune');
  assert.equal(outside(points, ref.dir), []);
  const { failures, recovered } = await injectEverywhere(ref, points, () => undefined, ref.argv);
  console.log(`  crash consistency (--rank 0): ${points.length} file operations (${stageSummary(points, ref.dir)}) × (kill, ENOSPC) = ${2 * points.length} injections; ${recovered} recovered to the uninterrupted run`);
  assert.equal(failures, [], `${failures.length} of ${2 * points.length} injection points failed:\n${failures.join('\n')}`);
  assert.equal(readdirSync(root).sort(), ['data', 'reference', 'reference-full']);
  assert.is(recovered, 2 * points.length);
});

test.run();
