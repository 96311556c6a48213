// Text that reaches the terminal: file names and messages that quote them come from outside
// (a dataset, a model directory), and a name such as "\x1b[2J\x1b[31mevil.png" would otherwise
// clear the screen or recolour it, and a right-to-left override (U+202E) would make a name
// read backwards. escapeForTerminal shows such characters as visible escapes instead.

/**
 * C0 controls except tab and newline, DEL, C1 controls (U+0080–U+009F), and the Unicode
 * bidirectional embeddings/overrides (U+202A–U+202E) and isolates (U+2066–U+2069).
 */
const UNSAFE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g;

/**
 * `text` with every terminal control character written as a visible escape: `\x1b` for the
 * one-byte ones (C0, DEL, C1), `\u202e` for the bidirectional ones. Newlines and tabs are kept,
 * so multi-line messages stay readable. Apply it to whole messages just before printing.
 */
export function escapeForTerminal(text: string): string {
  return text.replace(UNSAFE, (c) => {
    const code = c.charCodeAt(0);
    return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
  });
}

/** Writes one line to stderr, escaped (the commands' warnings and progress messages). */
export function warn(line: string): void {
  process.stderr.write(`${escapeForTerminal(line)}\n`);
}
