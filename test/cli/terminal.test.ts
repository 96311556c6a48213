// escapeForTerminal and the Progress display: control characters of quoted file names are shown
// as visible escapes; newlines, tabs, ordinary Unicode and Progress's own redraw codes stay.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { escapeForTerminal } from '../../src/cli/terminal.ts';
import { Progress } from '../../src/cli/progress.ts';

test('C0 controls (but newline and tab), DEL, C1 controls and bidi overrides/isolates become visible escapes', () => {
  assert.is(escapeForTerminal('\x1b[2J\x1b[31mevil.png'), '\\x1b[2J\\x1b[31mevil.png');
  assert.is(escapeForTerminal('a\x00b\x07c\x08d\re\x7ff\x80g\x9bh\x9f'), 'a\\x00b\\x07c\\x08d\\x0de\\x7ff\\x80g\\x9bh\\x9f');
  assert.is(escapeForTerminal('x\u202egnp.exe'), 'x\\u202egnp.exe');
  for (const c of [0x202a, 0x202b, 0x202c, 0x202d, 0x202e, 0x2066, 0x2067, 0x2068, 0x2069]) {
    assert.is(escapeForTerminal(String.fromCharCode(c)), `\\u${c.toString(16)}`);
  }
  // Kept: newline, tab, printable ASCII, Latin-1 letters, other scripts, emoji, and the neighbours of the ranges.
  const kept = 'line 1\n\tline 2 ~ é ß 日本語 🙂 \u00a0 \u2029 \u2065 \u206a \u2029 \u202f';
  assert.is(escapeForTerminal(kept), kept);
});

/** A stream that records what Progress writes, as a TTY or not. */
function recorder(isTTY: boolean): { stream: NodeJS.WriteStream; written: string[] } {
  const written: string[] = [];
  const stream = { isTTY, write: (s: string) => written.push(s) } as unknown as NodeJS.WriteStream;
  return { stream, written };
}

test('Progress escapes its label, fields and logged lines, and keeps its own \\r\\x1b[2K redraw on a TTY', () => {
  const ci = process.env.CI;
  delete process.env.CI;
  try {
    const tty = recorder(true);
    const p = new Progress(2, 'emb\x1b]0;title\x07ed', tty.stream);
    p.update(1, { file: '\x1b[31mred.png', loss: 0.5 });
    p.log('warning: skipping /d/\x1b[2Jx.png: bad');
    assert.is(tty.written[0].slice(0, 5), '\r\x1b[2K', 'the redraw code');
    assert.ok(tty.written[0].startsWith('\r\x1b[2Kemb\\x1b]0;title\\x07ed '), tty.written[0]);
    assert.ok(tty.written[0].includes('file \\x1b[31mred.png  loss 0.5000'), tty.written[0]);
    assert.is(tty.written[1], '\r\x1b[2Kwarning: skipping /d/\\x1b[2Jx.png: bad\n');
    for (const w of tty.written) assert.not.ok(w.slice(5).includes('\x1b') || w.slice(5).includes('\x07'), `only the redraw code is raw: ${JSON.stringify(w)}`);
  } finally {
    if (ci !== undefined) process.env.CI = ci;
  }
  const plain = recorder(false);
  const q = new Progress(1, 'e\u202emb', plain.stream);
  q.update(1, { name: '\x9b31m' });
  q.log('\x1bc');
  assert.ok(plain.written[0].startsWith('e\\u202emb 1/1  name \\x9b31m'), plain.written[0]);
  assert.is(plain.written[1], '\\x1bc\n');
});

test.run();
