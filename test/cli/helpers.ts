// Shared by the CLI tests: tiny datasets in a temp dir, and CLI subprocesses
// (`node --import tsx src/cli/<cmd>.ts`) with a private teacher cache.
import { spawn, type ChildProcess } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureDemoDataset } from '../../src/io/demo-data.ts';
import { readSafetensors, writeSafetensors } from '../../src/io/safetensors.ts';
import { getDevice } from '../../src/gpu/device.ts';
import { NAMED_CONFIGS } from '../../src/nn/config.ts';
import { ATTENTION_TARGETS, LoraAdapter } from '../../src/nn/lora.ts';
import { writePeftAdapter } from '../../src/io/peft.ts';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

export function tmp(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `genalign-${prefix}-`));
}

/** A copy of the fixture adapter test/fixtures/clip-tiny-lora with every weight replaced by `value` (1e30: diverged; NaN). */
export function divergedAdapter(dir: string, value: number): string {
  cpSync(join(ROOT, 'test', 'fixtures', 'clip-tiny-lora'), dir, { recursive: true });
  const path = join(dir, 'adapter_model.safetensors');
  const st = readSafetensors(path);
  const tensors: Record<string, { shape: number[]; data: Float32Array }> = {};
  for (const [k, t] of st.tensors) tensors[k] = { shape: t.shape, data: new Float32Array(t.data.length).fill(value) };
  writeSafetensors(path, tensors, st.metadata);
  return dir;
}

/** A freshly initialised rank-4 adapter of the tiny preset written to `dir` as trained on `base` with base seed 5. */
export async function seededPresetAdapter(dir: string, base = 'tiny'): Promise<string> {
  const lora = LoraAdapter.create(NAMED_CONFIGS.tiny, { rank: 4, alpha: 4, targets: [...ATTENTION_TARGETS], seed: 5 }, await getDevice());
  mkdirSync(dir, { recursive: true });
  await writePeftAdapter(dir, lora, base, 5);
  lora.dispose();
  return dir;
}

/** A demo dataset of `count` pairs at 32×32 (the tiny model's size), one generated image each. */
export async function tinyDataset(dir: string, count = 24): Promise<string> {
  await ensureDemoDataset(dir, { count, size: 32, variants: 1 });
  return dir;
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface Spawned {
  child: ChildProcess;
  done: Promise<CliResult>;
}

/** A CLI command, or 'train-test': `train` with test doubles (test/helpers/train-child.ts: delays, faults, NaN losses set by env). */
export type CliCommand = 'train' | 'embed' | 'eval' | 'autotune' | 'zeroshot' | 'probe' | 'cache-teacher' | 'make-shards' | 'train-test';

export function spawnCli(command: CliCommand, args: string[], env: Record<string, string> = {}): Spawned {
  const entry = command === 'train-test' ? join('test', 'helpers', 'train-child.ts') : join('src', 'cli', `${command}.ts`);
  const child = spawn(process.execPath, ['--import', 'tsx', entry, ...args], {
    cwd: ROOT,
    env: { ...process.env, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR ?? '/tmp/xdg', CI: 'true', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<CliResult>((res, rej) => {
    child.on('error', rej);
    child.on('close', (code, signal) => res({ code, signal, stdout, stderr }));
  });
  return { child, done };
}

export function runCli(command: CliCommand, args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  return spawnCli(command, args, env).done;
}

/** Resolves once `path` exists (polled every 2 ms); rejects after `timeoutMs` or when `stop` settles first. */
export function waitForFile(path: string, timeoutMs: number, stop?: Promise<unknown>): Promise<void> {
  return waitFor(() => existsSync(path), path, timeoutMs, stop);
}

/** `path` exists and its trimmed content is `text` (e.g. checkpoints/latest naming a step). */
export function fileSays(path: string, text: string): () => boolean {
  return () => {
    try {
      return readFileSync(path, 'utf8').trim() === text;
    } catch {
      return false;
    }
  };
}

/** Resolves once `ready()` is true (polled every 2 ms); rejects after `timeoutMs` or when `stop` settles first. */
export function waitFor(ready: () => boolean, what: string, timeoutMs: number, stop?: Promise<unknown>): Promise<void> {
  return new Promise((res, rej) => {
    const t0 = Date.now();
    let finished = false;
    void stop?.then(() => {
      if (!finished) {
        finished = true;
        clearInterval(timer);
        if (ready()) res();
        else rej(new Error(`process ended before ${what}`));
      }
    });
    const timer = setInterval(() => {
      if (finished) return;
      if (ready()) {
        finished = true;
        clearInterval(timer);
        res();
      } else if (Date.now() - t0 > timeoutMs) {
        finished = true;
        clearInterval(timer);
        rej(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
      }
    }, 2);
  });
}

export interface MetricsLine {
  step: number;
  epoch: number;
  loss: number;
  accuracy: number;
  lr: number;
  grad_norm: number;
  images_per_s: number;
  elapsed_s: number;
}

export function readMetrics(runDir: string): MetricsLine[] {
  return readFileSync(join(runDir, 'metrics.jsonl'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as MetricsLine);
}

/** adapter_model.safetensors of a directory as name → {shape, data}. */
export function readAdapter(dir: string): Map<string, { shape: number[]; data: Float32Array }> {
  return readSafetensors(join(dir, 'adapter_model.safetensors')).tensors;
}

/** Largest |a − b| / (|b| + atol) over every tensor of two adapters with the same keys and shapes. */
export function adapterDifference(a: Map<string, { shape: number[]; data: Float32Array }>, b: Map<string, { shape: number[]; data: Float32Array }>, atol: number): { worst: number; where: string } {
  const ka = [...a.keys()].sort();
  const kb = [...b.keys()].sort();
  if (ka.join('|') !== kb.join('|')) throw new Error(`adapters have different keys:\n${ka.join(', ')}\nvs\n${kb.join(', ')}`);
  let worst = 0;
  let where = '';
  for (const k of ka) {
    const x = a.get(k)!;
    const y = b.get(k)!;
    if (x.shape.join(',') !== y.shape.join(',')) throw new Error(`${k}: shape [${x.shape}] vs [${y.shape}]`);
    for (let i = 0; i < x.data.length; i++) {
      const r = Math.abs(x.data[i] - y.data[i]) / (Math.abs(y.data[i]) + atol);
      if (!(r <= worst)) {
        worst = r;
        where = `${k}[${i}]: ${x.data[i]} vs ${y.data[i]}`;
        if (Number.isNaN(r)) return { worst, where };
      }
    }
  }
  return { worst, where };
}
