// The engine core (src/gpu, src/tensor, src/ops, src/nn) runs in browsers: none of its files may
// reach Node (node: modules, the webgpu or sharp packages, process, Buffer) except through
// src/platform/index.ts, which the browser bundle swaps for platform/browser.ts. The bundle
// build fails on a Node import anyway; this says which file has it, without building.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

const SRC = join(import.meta.dirname, '..', '..', 'src');
const CORE = ['gpu', 'tensor', 'ops', 'nn'];
const SHARED_IO = ['io/preprocess.ts', 'io/resample.ts', 'io/safetensors-core.ts', 'io/checkpoint-tensors.ts', 'io/peft-core.ts', 'browser/index.ts', 'platform/browser.ts', 'platform/types.ts'];

const NODE = [
  [/from ['"]node:/, 'a node: module'],
  [/from ['"](webgpu|sharp|tar-stream)['"]/, 'a Node-only package'],
  [/\bprocess\.(env|argv|exit|pid|cwd|on)\b/, 'process'],
  [/\bBuffer\.(from|alloc|concat|byteLength)\b/, 'Buffer'],
  [/from ['"][./]*\/?platform\/(node|atomic-file|regular-file|cache-dir)\.ts['"]/, 'a Node platform file'],
] as const;

function files(dir: string): string[] {
  return readdirSync(join(SRC, dir), { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));
}

test('the engine core and the browser-shared io modules import nothing of Node', () => {
  const problems: string[] = [];
  for (const f of [...CORE.flatMap(files), ...SHARED_IO]) {
    readFileSync(join(SRC, f), 'utf8').split('\n').forEach((line, i) => {
      if (line.trim().startsWith('//') || line.trim().startsWith('*')) return;
      for (const [re, what] of NODE) if (re.test(line)) problems.push(`src/${f}:${i + 1} uses ${what}: ${line.trim()}`);
    });
  }
  assert.equal(problems, []);
});

test.run();
