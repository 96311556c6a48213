// readRegularFile / openRegularFile: a regular file (or a symbolic link to one) is read; a
// directory, FIFO, socket or device is refused at once with the path and what was expected.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readRegularFile, readRegularTextFile } from '../../src/platform/regular-file.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const root = mkdtempSync(join(tmpdir(), 'genalign-regular-'));
test.after(() => rmSync(root, { recursive: true, force: true }));

const WHAT = 'the thing (a JSON file)';

function readError(path: string): string {
  try {
    readRegularFile(path, WHAT);
  } catch (e) {
    return (e as Error).message;
  }
  assert.unreachable(`${path} was read`);
  return '';
}

test('a regular file and a symbolic link to one are read', () => {
  const file = join(root, 'a.json');
  writeFileSync(file, '{"x": 1}');
  symlinkSync(file, join(root, 'link.json'));
  assert.is(readRegularTextFile(file, WHAT), '{"x": 1}');
  assert.is(readRegularTextFile(join(root, 'link.json'), WHAT), '{"x": 1}');
});

test('a directory, a character device, a socket, a missing path and a dangling link are refused with the path', async () => {
  const folder = join(root, 'folder.json');
  mkdirSync(folder);
  assert.is(readError(folder), `${folder} is a directory; expected ${WHAT}`);
  symlinkSync(folder, join(root, 'link-to-folder.json'));
  assert.is(readError(join(root, 'link-to-folder.json')), `${join(root, 'link-to-folder.json')} is a directory; expected ${WHAT}`);
  assert.is(readError('/dev/null'), `/dev/null is a character device; expected ${WHAT}`);
  assert.is(readError(join(root, 'nothing.json')), `${join(root, 'nothing.json')} does not exist; expected ${WHAT}`);
  symlinkSync(join(root, 'gone.json'), join(root, 'dangling.json'));
  assert.is(readError(join(root, 'dangling.json')), `${join(root, 'dangling.json')} does not exist; expected ${WHAT}`);
  const sock = join(root, 'sock.json');
  const server = createServer();
  await new Promise<void>((res) => server.listen(sock, res));
  try {
    assert.is(readError(sock), `${sock} is a socket; expected ${WHAT}`);
  } finally {
    server.close();
  }
});

test('a FIFO is refused at once (the open does not wait for a writer); tried in a child process with a timeout', () => {
  const fifo = join(root, 'pipe.json');
  execFileSync('mkfifo', [fifo]);
  const script = `import { readRegularFile } from './src/platform/regular-file.ts'; try { readRegularFile(${JSON.stringify(fifo)}, 'x'); console.log('read'); } catch (e) { console.log(e.message); }`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: ROOT, timeout: 30_000, encoding: 'utf8' });
  assert.is(r.signal, null, 'the read blocked on the FIFO (killed after 30 s)');
  assert.is(r.stdout.trim(), `${fifo} is a FIFO (named pipe); expected x`, r.stderr);
});

test.run();
