// `npm run report -- RUN_DIR [--port N] [--host ADDR]`
// Serves the interactive alignment report of a run (or of an eval --out folder) on
// http://127.0.0.1:<port>/ with Node's own http module, and prints the URL; Ctrl-C stops it.
// The page (src/report/index.html) reads metrics.json and figure3.json, which eval writes next
// to each other (train's final eval, or npm run eval with --plot tsne|pca), and the pairs'
// images through /image/<i>/real and /image/<i>/gen: only the files figure3.json names are
// served, nothing else of the disk. The page can also embed the user's own images in the browser
// with genalign's browser bundle (/genalign.js, built by scripts/build.mjs --browser-only into a
// temporary folder when the server starts, so it always matches the sources).
import { createServer, type Server } from 'node:http';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { extname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseFlags, helpText, UsageError, type FlagSpec } from './args.ts';
import { warn } from './terminal.ts';

export const REPORT_FLAGS: FlagSpec[] = [
  { name: 'port', type: 'int', default: 0, help: 'port to listen on (0: a free one)', check: (v) => (Number(v) >= 0 && Number(v) < 65536 ? null : 'must be a port number') },
  { name: 'host', type: 'string', default: '127.0.0.1', help: 'address to listen on (the default serves this machine only)' },
];

const PAGE = new URL('../report/index.html', import.meta.url);
const BUILD = fileURLToPath(new URL('../../scripts/build.mjs', import.meta.url));

/** The browser bundle's text, built now (about a second); null when the build script is not there. */
function browserBundle(): string | null {
  if (!existsSync(BUILD)) return null;
  const out = mkdtempSync(join(tmpdir(), 'genalign-report-'));
  try {
    execFileSync(process.execPath, [BUILD, '--browser-only', '--outdir', out], { stdio: 'pipe' });
    return readFileSync(join(out, 'browser', 'genalign.js'), 'utf8');
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

const TYPES: Record<string, string> = { '.png': 'image/png', '.jpg': 'image/jpeg', '.jpeg': 'image/jpeg', '.webp': 'image/webp' };

interface ReportData {
  pairs: { real: string; generated: string }[];
}

/** Why `dir` cannot be reported, or null. */
export function reportProblem(dir: string): string | null {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) return `${dir} is not a directory (pass a run directory, or an eval --out folder)`;
  for (const f of ['metrics.json', 'figure3.json']) {
    if (!existsSync(join(dir, f))) {
      return `${dir} has no ${f}: the report shows what eval writes. Run training with its final eval (the default), or npm run eval -- --data … --model … --lora RUN/adapter --out ${dir} (with --plot tsne or pca)`;
    }
  }
  return null;
}

/** Starts the report server for `dir`; resolves with its URL once it listens. */
export async function startReportServer(dir: string, opts: { port?: number; host?: string } = {}): Promise<{ url: string; server: Server; close(): Promise<void> }> {
  const problem = reportProblem(dir);
  if (problem) throw new UsageError(`report: ${problem}`);
  const data = JSON.parse(readFileSync(join(dir, 'figure3.json'), 'utf8')) as ReportData;
  const page = readFileSync(PAGE);
  const bundle = browserBundle();
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const send = (code: number, type: string, body: Buffer | string): void => {
      res.writeHead(code, { 'content-type': type, 'cache-control': 'no-store' }).end(body);
    };
    if (path === '/' || path === '/index.html') return send(200, 'text/html; charset=utf-8', page);
    if (path === '/genalign.js' && bundle !== null) return send(200, 'text/javascript; charset=utf-8', bundle);
    if (path === '/metrics.json' || path === '/figure3.json') return send(200, 'application/json', readFileSync(join(dir, path.slice(1))));
    if (path === '/figure3.svg' && existsSync(join(dir, 'figure3.svg'))) return send(200, 'image/svg+xml', readFileSync(join(dir, 'figure3.svg')));
    const m = /^\/image\/(\d+)\/(real|gen)$/.exec(path);
    if (m) {
      const pair = data.pairs[Number(m[1])];
      const file = pair ? (m[2] === 'real' ? pair.real : pair.generated) : undefined;
      // Shard members have names, not paths: no thumbnail for them.
      if (file && existsSync(file) && statSync(file).isFile()) return send(200, TYPES[extname(file).toLowerCase()] ?? 'application/octet-stream', readFileSync(file));
    }
    send(404, 'text/plain', 'not found');
  });
  await new Promise<void>((res, rej) => {
    server.once('error', rej);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => res());
  });
  const addr = server.address() as { port: number; address: string };
  const host = addr.address.includes(':') ? `[${addr.address}]` : addr.address;
  return { url: `http://${host}:${addr.port}/`, server, close: () => new Promise((r) => server.close(() => r())) };
}

export async function runReport(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(helpText('report', 'Serve the interactive alignment report of a run directory (or eval --out folder) on a local port.\nUsage: npm run report -- RUN_DIR [--port N]', REPORT_FLAGS));
    return 0;
  }
  const dirs = argv.filter((a, i) => !a.startsWith('--') && !(i > 0 && argv[i - 1].startsWith('--') && !argv[i - 1].includes('=')));
  if (dirs.length !== 1) throw new UsageError('report: pass one run directory: npm run report -- RUN_DIR');
  const f = parseFlags(argv.filter((a) => a !== dirs[0]), REPORT_FLAGS, 'report');
  const dir = resolve(dirs[0]);
  let started;
  try {
    started = await startReportServer(dir, { port: Number(f.port), host: String(f.host) });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EADDRINUSE') throw new UsageError(`report: port ${String(f.port)} is in use; choose another --port (or 0 for a free one)`);
    throw e;
  }
  console.log(started.url);
  warn(`report: serving ${dir} at ${started.url} (Ctrl-C stops)`);
  await new Promise<void>((res) => process.once('SIGINT', () => res()));
  await started.close();
  return 0;
}
