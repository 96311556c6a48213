// src/io/class-folders.ts: class subfolders → sorted classes and labelled files; empty classes,
// hidden entries, non-images and image-named non-files handled; bad folders refused by name.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { listClassFolders } from '../../src/io/class-folders.ts';

const root = mkdtempSync(join(tmpdir(), 'genalign-classes-'));
test.after(() => rmSync(root, { recursive: true, force: true }));

function touch(...parts: string[]): void {
  mkdirSync(join(root, ...parts.slice(0, -1)), { recursive: true });
  writeFileSync(join(root, ...parts), 'x');
}

test('classes are the folder names, sorted; files are labelled in class then name order', () => {
  const d = 'a';
  touch(d, 'zebra', 'b.png');
  touch(d, 'zebra', 'a.JPG');
  touch(d, 'apple', 'x.webp');
  touch(d, 'apple', 'notes.txt');
  touch(d, 'apple', '.hidden.png');
  touch(d, 'loose.png');
  mkdirSync(join(root, d, 'empty'));
  mkdirSync(join(root, d, 'zebra', 'dir.png'));
  mkdirSync(join(root, d, '.git'));
  const got = listClassFolders(join(root, d), '--images');
  assert.equal(got.classes, ['apple', 'zebra']);
  assert.equal(got.files.map((f) => [f.path.slice(root.length + 3), f.label]), [['apple/x.webp', 0], ['zebra/a.JPG', 1], ['zebra/b.png', 1]]);
  assert.is(got.warnings.length, 2);
  assert.match(got.warnings[0], /1 class folder\(s\) hold no .* image and are left out: empty/);
  assert.match(got.warnings[1], /zebra\/dir\.png \(a directory\)/);
});

test('a missing folder, a file, and a folder without class folders are refused by flag and path', () => {
  assert.throws(() => listClassFolders(join(root, 'nope'), '--test'), (e: Error) => e.message.startsWith(`--test ${join(root, 'nope')}: does not exist`) && /one subfolder per class/.test(e.message));
  touch('file.png');
  assert.throws(() => listClassFolders(join(root, 'file.png'), '--images'), /is a file, not a folder/);
  touch('flat', 'a.png');
  assert.throws(() => listClassFolders(join(root, 'flat'), '--train'), /--train .*flat: no class folder with images; expected --train DIR with one subfolder per class/);
});

test.run();
