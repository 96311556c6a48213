// Tests reach into the training loop through injected dependencies (TrainHooks: files,
// transformLoss, onStep), never through environment variables read by production code.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));
}

test('no file in src/ reads a test switch (GENALIGN_TEST_*) from the environment', () => {
  const files = sources(join(ROOT, 'src'));
  assert.ok(files.length > 40, 'src/ was found');
  const found = files.filter((f) => /GENALIGN_TEST_/.test(readFileSync(f, 'utf8'))).map((f) => relative(ROOT, f));
  assert.equal(found, []);
  // The switches live in the test entry point instead.
  assert.match(readFileSync(join(ROOT, 'test', 'helpers', 'train-child.ts'), 'utf8'), /GENALIGN_TEST_FAULT/);
});

test.run();
