// Kernel assembly (src/gpu/kernels.ts): modules named by `// uses:` lines, dependencies first,
// each once; the typed prelude; directives moved to the top; refusals by name.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { assembleKernel, bindingDeclaration, kernelFiles, kernelSource, moduleOrder, parseHeader, registerKernelSources, type KernelDType } from '../../src/gpu/kernels.ts';
import { gelu } from '../../src/ops/index.ts';
import { fromArray } from '../../src/tensor/tensor.ts';
import { device } from '../helpers/fixtures.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

registerKernelSources({
  'zz/base': '// zz/base: no dependencies\nconst BASE: f32 = 1.0;\n',
  'zz/mid': '// zz/mid\n// uses: zz/base\nenable subgroups;\nfn mid() -> f32 { return BASE; }\n',
  'zz/other': '// zz/other\n// uses: zz/base\nfn other() -> f32 { return BASE; }\n',
  zz_kernel: '// zz_kernel\n// uses: zz/mid, zz/other\n// dtypes: f32, f16\n\n@group(0) @binding(1) var<storage, read_write> y: array<T>;\n@compute @workgroup_size(1) fn main() { y[0] = T(mid() + other()); }\n',
  zz_f32only: '// zz_f32only\n@compute @workgroup_size(1) fn main() {}\n',
  zz_consts: '// zz_consts\n// consts: SIDE\n// accumulators: f32, f16\n@compute @workgroup_size(SIDE) fn main() {}\n',
  'zz/cycle_a': '// uses: zz/cycle_b\n',
  'zz/cycle_b': '// uses: zz/cycle_a\n',
  zz_missing: '// uses: zz/nope\n',
  'zz/broken': '// zz/broken: line 4 does not type-check\n\nfn broken() -> u32 {\n  let x: u32 = 1.5f;\n  return x;\n}\n',
  zz_uses_broken: '// zz_uses_broken\n// uses: zz/base, zz/broken\n@compute @workgroup_size(1) fn main() { _ = broken(); }\n',
});

test('modules resolve recursively, dependencies first, each once, the kernel last', () => {
  assert.equal(moduleOrder('zz_kernel'), ['zz/base', 'zz/mid', 'zz/other', 'zz_kernel']);
  const a = assembleKernel({ file: 'zz_kernel' });
  assert.equal(a.modules, ['zz/base', 'zz/mid', 'zz/other', 'zz_kernel']);
  assert.is(a.code.split('// ---- kernels/zz/base.wgsl').length, 2, 'zz/base appears once');
  assert.ok(a.code.indexOf('const BASE') < a.code.indexOf('fn mid') && a.code.indexOf('fn other') < a.code.indexOf('fn main'));
});

test('the prelude: aliases for the dtype, enable f16 only for f16, directives first', () => {
  const f32 = assembleKernel({ file: 'zz_kernel' }).code;
  const f16 = assembleKernel({ file: 'zz_kernel', dtype: 'f16' }).code;
  assert.ok(!f32.includes('enable f16;'));
  assert.match(f32, /alias T = f32;\nalias T4 = vec4<T>;\nalias Acc = f32;/);
  assert.match(f16, /alias T = f16;\nalias T4 = vec4<T>;\nalias Acc = f32;/);
  // WGSL wants every directive before the first declaration: enable f16, then the modules' own.
  const lines = f16.split('\n').filter((l) => l.trim() && !l.startsWith('//'));
  assert.equal(lines.slice(0, 2), ['enable f16;', 'enable subgroups;']);
  assert.is(f16.split('enable subgroups;').length, 2, 'the directive moved, not copied');
  assert.is(assembleKernel({ file: 'zz_kernel', dtype: 'f16' }).needsF16, true);
});

test('a dtype, accumulator or const the file does not declare is refused by name', () => {
  assert.throws(() => assembleKernel({ file: 'zz_f32only', dtype: 'f16' }), /kernel 'zz_f32only' does not support dtype f16 \(kernels\/zz_f32only\.wgsl is written for f32/);
  assert.throws(() => assembleKernel({ file: 'zz_kernel', accumulator: 'f16' }), /kernel 'zz_kernel' does not accumulate in f16/);
  assert.throws(() => assembleKernel({ file: 'zz_consts' }), /kernel 'zz_consts' needs the consts SIDE/);
  assert.throws(() => assembleKernel({ file: 'zz_consts', consts: { SIDE: 4, OTHER: 1 } }), /takes no consts OTHER/);
  assert.match(assembleKernel({ file: 'zz_consts', consts: { SIDE: 4 }, accumulator: 'f16' }).code, /enable f16;[^]*alias Acc = f16;\nconst SIDE: u32 = 4u;/);
  assert.throws(() => moduleOrder('zz/cycle_a'), /cycle: zz\/cycle_a -> zz\/cycle_b -> zz\/cycle_a/);
  assert.throws(() => moduleOrder('zz_missing'), /kernels\/zz_missing\.wgsl uses 'zz\/nope', which does not exist/);
  assert.throws(() => assembleKernel({ file: 'zz_no_such_kernel' }), /Kernel file not found: .*zz_no_such_kernel\.wgsl/);
});

test('header lines are read from the leading comment block only', () => {
  const h = parseHeader('x', '// x\n// uses: a, b\n// dtypes: f32, f16\n//   1  x: array<T> (read)  n elements\n\nfn f() {}\n// uses: c\n//   2  y: array<T> (write)\n');
  assert.equal(h, { uses: ['a', 'b'], dtypes: ['f32', 'f16'], accumulators: ['f32'], consts: [], bindings: [{ binding: 1, name: 'x', type: 'array<T>', access: 'read' }] });
  assert.throws(() => parseHeader('x', '// dtypes: f64\n'), /kernels\/x\.wgsl: '\/\/ dtypes:' names 'f64'/);
});

test('binding lines of a header are its declarations: uniform, read, write (read_write); the same one twice once; a name declared two ways is refused', () => {
  const src = [
    '// k — a kernel',
    '// Bindings (group 0):',
    '//   0  p:   P (uniform)        { n: u32 }',
    '//   forward:',
    '//   1  x:   array<T> (read)    n elements',
    '//   2  y:   array<T> (write)   n elements',
    '//   backward:',
    '//   1  g:   array<T> (read)',
    '//   2  dx:  array<T> (read_write)  dL/dx',
    '//   0  p:   P (uniform)        (the same uniform)',
    '//   prose: 3 items (read) are not bindings, nor is "2 y (write)"',
    '',
    'struct P { n: u32 }',
  ].join('\n');
  assert.equal(parseHeader('k', src).bindings.map(bindingDeclaration), [
    '@group(0) @binding(0) var<uniform> p: P;',
    '@group(0) @binding(1) var<storage, read> x: array<T>;',
    '@group(0) @binding(2) var<storage, read_write> y: array<T>;',
    '@group(0) @binding(1) var<storage, read> g: array<T>;',
    '@group(0) @binding(2) var<storage, read_write> dx: array<T>;',
  ]);
  assert.throws(() => parseHeader('k', '//   1  x: array<T> (read)\n//   2  x: array<T> (write)\n'), /kernels\/k\.wgsl: the header declares binding 'x' twice, differently/);
});

test('no kernel file declares a binding itself: the header is the one declaration, and every declared binding is used', () => {
  const real = kernelFiles().filter((f) => !f.startsWith('zz'));
  for (const file of real) {
    const src = kernelSource(file);
    assert.not.match(src, /@binding\(/, `kernels/${file}.wgsl declares a binding in its code; declare it in the header (see src/gpu/kernels.ts)`);
    const body = src.split('\n').filter((l) => !l.trim().startsWith('//')).join('\n');
    for (const b of parseHeader(file, src).bindings) {
      const users = [file, ...real.filter((f) => f !== file && moduleOrder(f).includes(file))];
      const used = users.some((f) => new RegExp(`\\b${b.name}\\b`).test(f === file ? body : kernelSource(f)));
      assert.ok(used, `kernels/${file}.wgsl declares binding '${b.name}' in its header, and no code uses it`);
    }
  }
});

test('kernelFiles lists kernels/ with its subfolders', () => {
  const files = kernelFiles();
  for (const f of ['matmul', 'activation', 'lib/erf', 'zz/base']) assert.ok(files.includes(f), f);
  assert.ok(!files.includes('matmul_f16'), 'the f16 matmul is matmul.wgsl with the f16 prelude');
});

test('a compile error names the module and its own line, not the assembled line', async () => {
  const dev = await device();
  dev.gpu.pushErrorScope('validation');
  const out = dev.gpu.createBuffer({ size: 16, usage: GPUBufferUsage.STORAGE });
  dev.batch.dispatch({ file: 'zz_uses_broken', entry: 'main' }, new Uint32Array(4), [], [out], [1]);
  let message = '';
  await dev.sync().catch((e: unknown) => (message = (e as Error).message));
  await dev.gpu.popErrorScope();
  out.destroy();
  assert.match(message, /WGSL compile error in kernels\/zz_uses_broken\.wgsl \(storage f32, accumulation f32; modules zz\/base, zz\/broken, zz_uses_broken\)/);
  assert.match(message, /kernels\/zz\/broken\.wgsl:4:\d+ error: /);
});

/** `npm run kernel-source -- ...args` without npm: stdout, stderr and the exit status. */
function kernelSourceCommand(...args: string[]): { out: string; err: string; status: number | null } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'scripts', 'kernel-source.ts'), ...args], { cwd: ROOT, encoding: 'utf8' });
  return { out: r.stdout, err: r.stderr, status: r.status };
}

test('npm run kernel-source prints the assembled kernel for a dtype, and names what it cannot print', () => {
  const f16 = kernelSourceCommand('matmul', '--dtype', 'f16');
  assert.is(f16.status, 0, f16.err);
  assert.is(f16.out, assembleKernel({ file: 'matmul', dtype: 'f16' }).code);
  assert.match(f16.out, /^enable f16;$/m);
  assert.match(f16.out, /^alias T = f16;$/m);
  assert.match(f16.out, /^\/\/ ---- kernels\/lib\/erf\.wgsl$/m);
  assert.is(kernelSourceCommand('matmul').out, assembleKernel({ file: 'matmul' }).code, 'default dtype f32');
  const unknown = kernelSourceCommand('no_such_kernel', '--dtype', 'f16');
  assert.is(unknown.status, 1);
  assert.match(unknown.err, /unknown kernel 'no_such_kernel' \(dtype f16\); the kernels are: activation, /);
  const refused = kernelSourceCommand('adamw', '--dtype', 'f16');
  assert.is(refused.status, 1);
  assert.match(refused.err, /kernel 'adamw' does not support dtype f16/);
  assert.match(kernelSourceCommand('matmul', '--dtype', 'f64').err, /--dtype takes f32 or f16 \(got f64\)/);
  const help = kernelSourceCommand('--help');
  assert.is(help.status, 0);
  assert.match(help.out, /^usage: npm run kernel-source -- <kernel>/);
});

test('a bundle carries kernels/ with its modules: it runs gelu and linear(…, gelu) away from the sources', async () => {
  const tmp = mkdtempSync(join(tmpdir(), 'genalign-kbundle-'));
  try {
    const out = join(tmp, 'bundle');
    execFileSync(process.execPath, [join(ROOT, 'scripts', 'build.mjs'), '--outdir', out, 'test/helpers/bundle-kernels-check.ts'], { stdio: 'pipe' });
    // The bundle's externals (webgpu, sharp) resolve from the project's node_modules; kernels/
    // is not reachable from tmp, and GENALIGN_KERNELS_DIR is unset.
    symlinkSync(join(ROOT, 'node_modules'), join(tmp, 'node_modules'));
    const xs = [-6, -1.5, 0.25, 3];
    const env: NodeJS.ProcessEnv = { ...process.env, NODE_OPTIONS: '' };
    delete env.GENALIGN_KERNELS_DIR;
    const stdout = execFileSync(process.execPath, [join(out, 'test', 'helpers', 'bundle-kernels-check.js'), ...xs.map(String)], { cwd: tmp, encoding: 'utf8', env });
    const res = JSON.parse(stdout.slice(stdout.indexOf('{'))) as { op: number[]; fused: number[] };
    const want = await gelu(fromArray(xs, [4])).read();
    assert.equal(res.op, [...want]);
    assert.equal(res.fused, [...want]);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

/** The device feature each WGSL extension needs. */
const FEATURE_OF: Record<string, string> = { f16: 'shader-f16', subgroups: 'subgroups', chromium_experimental_subgroup_matrix: 'chromium-experimental-subgroup-matrix' };

test('every kernel assembles and passes WGSL validation for each dtype it declares', async () => {
  const dev = await device();
  const checked: string[] = [];
  const skipped: string[] = [];
  for (const file of kernelFiles().filter((f) => !f.includes('/') && !f.startsWith('zz_'))) {
    const h = parseHeader(file, kernelSource(file));
    for (const dtype of h.dtypes as KernelDType[]) {
      const consts = Object.fromEntries(h.consts.map((c) => [c, 16]));
      const a = assembleKernel({ file, dtype, consts });
      const missing = [...a.code.matchAll(/^enable (\w+);$/gm)].map((m) => FEATURE_OF[m[1]]).filter((f) => !dev.hasFeature(f));
      if (missing.length) {
        skipped.push(`${file}<${dtype}> (no ${missing.join(', ')})`);
        continue;
      }
      dev.gpu.pushErrorScope('validation');
      dev.gpu.createShaderModule({ code: a.code, label: `validate ${file}<${dtype}>` });
      const e = await dev.gpu.popErrorScope();
      assert.is(e?.message ?? null, null, `${file}<${dtype}>`);
      checked.push(`${file}<${dtype}>`);
    }
  }
  assert.ok(checked.length >= 22, `validated ${checked.join(', ')}; skipped ${skipped.join(', ')}`);
  for (const k of ['matmul<f32>', 'activation<f32>', 'softmax<f32>']) assert.ok(checked.includes(k), k);
});

test.run();
