// makeDirs (mkdir -p one level at a time) and writeFileAtomic's parent creation.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeDirs, writeFileAtomic } from '../../src/platform/atomic-file.ts';

const root = mkdtempSync(join(tmpdir(), 'genalign-atomic-'));
test.after(() => rmSync(root, { recursive: true, force: true }));

test('makeDirs creates every missing level, and an existing directory is fine', () => {
  const deep = join(root, 'a', 'b', 'c');
  makeDirs(deep);
  assert.ok(existsSync(deep));
  makeDirs(deep);
  makeDirs(root);
});

test('makeDirs fails (instead of hanging like recursive mkdirSync) where mkdir gives ENOENT under an existing parent', () => {
  // Node's mkdirSync('/proc/x/y', { recursive: true }) loops forever; /proc exists on Linux CI.
  if (!existsSync('/proc/self')) return;
  assert.throws(() => makeDirs('/proc/genalign-no-such/run'), /ENOENT/);
});

test('makeDirs under a file is ENOTDIR; writeFileAtomic creates parents and names the path on failure', () => {
  const file = join(root, 'plain-file');
  writeFileSync(file, 'x');
  assert.throws(() => makeDirs(join(file, 'sub')), /ENOTDIR|EEXIST/);
  const target = join(root, 'x', 'y', 'out.json');
  writeFileAtomic(target, '{"ok":true}\n');
  assert.is(readFileSync(target, 'utf8'), '{"ok":true}\n');
  assert.throws(() => writeFileAtomic(join(file, 'sub', 'out.json'), 'x'), /Could not write .*plain-file\/sub\/out\.json/);
});

test.run();
