// Prints a kernel's WGSL as the registry assembles it (src/gpu/kernels.ts): directives, the
// prelude for the dtype, then its modules dependencies first, then the kernel file. No GPU needed.
//
//   npm run kernel-source -- matmul --dtype f16
//   npm run kernel-source -- matmul_sgmat --dtype f16 --const SG_M=16 --const SG_N=16 --const SG_K=16
//   npm run kernel-source -- --list
import { assembleKernel, kernelFiles, kernelSource, parseHeader, type KernelDType } from '../src/gpu/kernels.ts';

const USAGE = `usage: npm run kernel-source -- <kernel> [options]
Prints the WGSL the kernel registry compiles for <kernel> (a file under kernels/, without .wgsl).
  --dtype f32|f16          storage type T of the prelude (default f32)
  --accumulator f32|f16    accumulation type Acc (default f32)
  --const NAME=VALUE       a u32 const the kernel's header asks for ('// consts:'); repeatable
  --list                   every kernel with the dtypes it is written for, and every module
  --help                   this text`;

const DTYPES: readonly string[] = ['f32', 'f16'];

function fail(message: string): never {
  process.stderr.write(`kernel-source: ${message}\n`);
  process.exit(1);
}

function dtypeArg(flag: string, value: string | undefined): KernelDType {
  if (value === undefined || !DTYPES.includes(value)) fail(`${flag} takes f32 or f16 (got ${value ?? 'nothing'})`);
  return value as KernelDType;
}

function main(args: string[]): void {
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  if (args.includes('--list')) {
    // Kernels with the dtypes their headers list; modules (kernels/lib/) with what they use.
    for (const f of kernelFiles()) {
      const h = parseHeader(f, kernelSource(f));
      const what = f.includes('/') ? (h.uses.length ? `module, uses ${h.uses.join(', ')}` : 'module') : `dtypes ${h.dtypes.join(', ')}`;
      process.stdout.write(`${f.padEnd(24)} ${what}\n`);
    }
    return;
  }
  let kernel: string | null = null;
  let dtype: KernelDType = 'f32';
  let accumulator: KernelDType = 'f32';
  const consts: Record<string, number> = {};
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--dtype') dtype = dtypeArg(a, args[++i]);
    else if (a === '--accumulator') accumulator = dtypeArg(a, args[++i]);
    else if (a === '--const') {
      const m = /^([A-Za-z_]\w*)=(\d+)$/.exec(args[++i] ?? '');
      if (!m) fail(`--const takes NAME=VALUE with a non-negative integer VALUE (got ${args[i] ?? 'nothing'})`);
      consts[m[1]] = Number(m[2]);
    } else if (a.startsWith('-')) fail(`unknown option ${a}\n${USAGE}`);
    else if (kernel === null) kernel = a;
    else fail(`one kernel at a time (got '${kernel}' and '${a}')`);
  }
  if (kernel === null) fail(`name a kernel\n${USAGE}`);
  const files = kernelFiles();
  if (!files.includes(kernel)) fail(`unknown kernel '${kernel}' (dtype ${dtype}); the kernels are: ${files.filter((f) => !f.includes('/')).join(', ')}`);
  try {
    process.stdout.write(assembleKernel({ file: kernel, dtype, accumulator, consts }).code);
  } catch (e) {
    fail((e as Error).message);
  }
}

main(process.argv.slice(2));
