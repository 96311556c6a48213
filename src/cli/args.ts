// Command-line flags: a declarative spec, strict parsing (unknown flags and bad values are
// errors that name the flag), and --help generated from the spec with every default.

export type FlagType = 'string' | 'int' | 'float' | 'bool';

export interface FlagSpec {
  name: string;
  type: FlagType;
  help: string;
  /** Value when the flag is not given (parseFlags fills it in). */
  default?: string | number | boolean;
  /** What --help shows as the default when `default` is not set (a value the command works out itself). */
  defaultText?: string;
  /** Validates a parsed value; return an error message or null. */
  check?: (v: string | number | boolean) => string | null;
}

export type ParsedFlags = Record<string, string | number | boolean | undefined>;

export class UsageError extends Error {}

export function parseFlags(argv: readonly string[], specs: readonly FlagSpec[], command: string): ParsedFlags {
  const byName = new Map(specs.map((s) => [s.name, s]));
  const out: ParsedFlags = {};
  for (const s of specs) out[s.name] = s.default;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith('--')) throw new UsageError(`${command}: unexpected argument '${arg}' (flags start with --; see --help)`);
    let name = arg.slice(2);
    let value: string | undefined;
    const eq = name.indexOf('=');
    if (eq >= 0) {
      value = name.slice(eq + 1);
      name = name.slice(0, eq);
    }
    let spec = byName.get(name);
    if (!spec && name.startsWith('no-') && byName.get(name.slice(3))?.type === 'bool') {
      spec = byName.get(name.slice(3))!;
      if (value !== undefined) throw new UsageError(`${command}: --${name} takes no value`);
      out[spec.name] = false;
      continue;
    }
    if (!spec) throw new UsageError(`${command}: unknown flag --${name} (see --help for the list)`);
    if (spec.type === 'bool') {
      if (value === undefined) out[spec.name] = true;
      else if (value === 'true' || value === '1') out[spec.name] = true;
      else if (value === 'false' || value === '0') out[spec.name] = false;
      else throw new UsageError(`${command}: --${name} expects true or false, got '${value}'`);
      continue;
    }
    if (value === undefined) {
      value = argv[++i];
      if (value === undefined || (value.startsWith('--') && spec.type === 'string')) throw new UsageError(`${command}: --${name} needs a value`);
    }
    let parsed: string | number;
    if (spec.type === 'string') {
      // `--data ""` (an unset shell variable, say) must not silently mean "no --data".
      if (value.trim() === '') throw new UsageError(`${command}: --${name} needs a value, got an empty string`);
      parsed = value;
    }
    else {
      const n = Number(value);
      if (value.trim() === '' || !Number.isFinite(n)) throw new UsageError(`${command}: --${name} expects a number, got '${value}'`);
      if (spec.type === 'int' && !Number.isInteger(n)) throw new UsageError(`${command}: --${name} expects an integer, got '${value}'`);
      parsed = n;
    }
    const err = spec.check?.(parsed);
    if (err) throw new UsageError(`${command}: --${name} ${err}, got '${value}'`);
    out[spec.name] = parsed;
  }
  return out;
}

export function helpText(command: string, summary: string, specs: readonly FlagSpec[]): string {
  const lines = [`Usage: npm run ${command} -- [flags]`, '', summary, '', 'Flags:'];
  const width = Math.max(...specs.map((s) => s.name.length + (s.type === 'bool' ? 0 : s.type.length + 3))) + 4;
  for (const s of specs) {
    const left = `--${s.name}${s.type === 'bool' ? '' : ` <${s.type}>`}`;
    const shown = s.default === undefined ? s.defaultText : String(s.default);
    const def = shown === undefined ? '' : ` (default: ${shown})`;
    lines.push(`  ${left.padEnd(width)}${s.help}${def}`);
  }
  lines.push(`  ${'--help'.padEnd(width)}show this help`);
  return lines.join('\n');
}

export const positive = (v: string | number | boolean): string | null => (typeof v === 'number' && v > 0 ? null : 'must be > 0');
export const nonNegative = (v: string | number | boolean): string | null => (typeof v === 'number' && v >= 0 ? null : 'must be >= 0');
export const fraction = (v: string | number | boolean): string | null => (typeof v === 'number' && v >= 0 && v < 1 ? null : 'must be in [0, 1)');

/** --precision of embed and eval (train's comes from its option table): the model's storage dtype. */
export const PRECISION_FLAG: FlagSpec = {
  name: 'precision',
  type: 'string',
  default: 'f32',
  help: "f16: weights and activations in f16 (needs the adapter's shader-f16), embeddings returned in f32",
  check: (v) => (['f32', 'f16'].includes(String(v)) ? null : 'must be f32 or f16'),
};
