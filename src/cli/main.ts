// Shared entry wrapper for the CLI commands: clear messages, exit codes (2 = usage error,
// 1 = failure), and an explicit exit because Dawn's native threads keep Node alive.
import { UsageError } from './args.ts';
import { escapeForTerminal } from './terminal.ts';

export function runMain(fn: (argv: string[]) => Promise<number>): void {
  fn(process.argv.slice(2))
    .then((code) => process.exit(code))
    .catch((e: unknown) => {
      const err = e as Error;
      // Messages quote file names from outside: control characters are shown, not obeyed.
      if (err instanceof UsageError) {
        process.stderr.write(`${escapeForTerminal(err.message)}\n`);
        process.exit(2);
      }
      process.stderr.write(`error: ${escapeForTerminal(err.message)}\n`);
      if (process.env.GENALIGN_DEBUG) process.stderr.write(`${escapeForTerminal(String(err.stack))}\n`);
      process.exit(1);
    });
}
