// Progress display: a redrawn bar on a TTY, plain periodic lines otherwise (logs, CI).
// The label, the fields and logged lines are escaped (escapeForTerminal): they can quote file
// names, whose control characters must not reach the terminal; the bar's own \r\x1b[2K is
// written around the escaped text.
import { escapeForTerminal } from './terminal.ts';

export interface ProgressFields {
  [key: string]: string | number;
}

export class Progress {
  private readonly tty: boolean;
  private lastPlain = 0;
  private readonly start = Date.now();

  constructor(
    private readonly total: number,
    private readonly label: string,
    private readonly stream: NodeJS.WriteStream = process.stderr,
    private readonly plainEveryMs = 10_000,
  ) {
    this.tty = Boolean(stream.isTTY) && process.env.CI !== 'true';
  }

  update(done: number, fields: ProgressFields = {}): void {
    const elapsed = (Date.now() - this.start) / 1000;
    const rate = done > 0 ? elapsed / done : 0;
    const eta = done > 0 ? Math.max(0, (this.total - done) * rate) : NaN;
    const extras = escapeForTerminal(Object.entries(fields).map(([k, v]) => `${k} ${typeof v === 'number' ? fmt(v) : v}`).join('  '));
    const label = escapeForTerminal(this.label);
    if (this.tty) {
      const width = 24;
      const filled = Math.round((width * done) / Math.max(1, this.total));
      const bar = '█'.repeat(filled) + '░'.repeat(width - filled);
      this.stream.write(`\r\x1b[2K${label} ${bar} ${done}/${this.total}  ${extras}  ETA ${fmtTime(eta)}`);
      if (done >= this.total) this.stream.write('\n');
      return;
    }
    const now = Date.now();
    if (done >= this.total || now - this.lastPlain >= this.plainEveryMs || done === 1) {
      this.lastPlain = now;
      this.stream.write(`${label} ${done}/${this.total}  ${extras}  elapsed ${fmtTime(elapsed)}  ETA ${fmtTime(eta)}\n`);
    }
  }

  /** Prints a line without breaking the bar. */
  log(line: string): void {
    const safe = escapeForTerminal(line);
    if (this.tty) this.stream.write(`\r\x1b[2K${safe}\n`);
    else this.stream.write(`${safe}\n`);
  }
}

function fmt(v: number): string {
  if (Number.isInteger(v)) return String(v);
  return Math.abs(v) >= 100 ? v.toFixed(1) : v.toPrecision(4);
}

export function fmtTime(s: number): string {
  if (!Number.isFinite(s)) return '--:--';
  const m = Math.floor(s / 60);
  const sec = Math.floor(s % 60);
  return m >= 60 ? `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m` : `${String(m).padStart(2, '0')}:${String(sec).padStart(2, '0')}`;
}
