// Kernel assembly (src/gpu/kernels.ts): modules named by `// uses:` lines, dependencies first,
// each once; the typed prelude; directives moved to the top; refusals by name.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { assembleKernel, kernelFiles, moduleOrder, parseHeader, registerKernelSources } from '../../src/gpu/kernels.ts';

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
  const h = parseHeader('x', '// x\n// uses: a, b\n// dtypes: f32, f16\n\nfn f() {}\n// uses: c\n');
  assert.equal(h, { uses: ['a', 'b'], dtypes: ['f32', 'f16'], accumulators: ['f32'], consts: [] });
  assert.throws(() => parseHeader('x', '// dtypes: f64\n'), /kernels\/x\.wgsl: '\/\/ dtypes:' names 'f64'/);
});

test('kernelFiles lists kernels/ with its subfolders', () => {
  const files = kernelFiles();
  for (const f of ['matmul', 'activation', 'lib/erf', 'zz/base']) assert.ok(files.includes(f), f);
  assert.ok(!files.includes('matmul_f16'), 'the f16 matmul is matmul.wgsl with the f16 prelude');
});

test.run();
