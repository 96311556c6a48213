// The layering rule of docs/architecture.md: a file in src/<layer>/ imports only from its own
// layer or the layers above it in platform → gpu → tensor → ops → nn → io → train → cli → browser.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const LAYERS = ['platform', 'gpu', 'tensor', 'ops', 'nn', 'io', 'train', 'cli', 'browser'];
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const SRC = join(ROOT, 'src');

/** Relative imports (and re-exports) of a source file, as paths relative to src/. */
function relativeImports(file: string, source: string): string[] {
  const out: string[] = [];
  for (const m of source.matchAll(/^\s*(?:import|export)\b[^'"]*?from\s+['"](\.{1,2}\/[^'"]+)['"]/gm)) {
    out.push(relative(SRC, normalize(join(dirname(file), m[1]))));
  }
  return out;
}

/** "src/a/x.ts -> b/y.ts" for every import that points to a lower layer. */
function upwardImports(file: string, source: string): string[] {
  const from = LAYERS.indexOf(relative(SRC, file).split('/')[0]);
  if (from < 0) return [];
  return relativeImports(file, source)
    .filter((target) => LAYERS.indexOf(target.split('/')[0]) > from)
    .map((target) => `${relative(ROOT, file)} -> src/${target}`);
}

test('the checker flags an import from a lower layer and accepts one from above', () => {
  const file = join(SRC, 'ops', 'example.ts');
  const source = "import { Tensor } from '../tensor/tensor.ts';\nimport type { X } from '../io/x.ts';\nexport { y } from './y.ts';\n";
  assert.equal(relativeImports(file, source), ['tensor/tensor.ts', 'io/x.ts', 'ops/y.ts']);
  assert.equal(upwardImports(file, source), ['src/ops/example.ts -> src/io/x.ts']);
});

test('no file in src/ imports from a layer below its own', () => {
  const found: string[] = [];
  let imports = 0;
  for (const layer of LAYERS) {
    for (const name of readdirSync(join(SRC, layer)).filter((n) => n.endsWith('.ts'))) {
      const file = join(SRC, layer, name);
      const source = readFileSync(file, 'utf8');
      imports += relativeImports(file, source).length;
      found.push(...upwardImports(file, source));
    }
  }
  assert.ok(imports > 100, `expected the scan to see the engine's imports, saw ${imports}`);
  assert.equal(found, [], `imports against the layering (docs/architecture.md):\n${found.join('\n')}`);
});

test.run();
