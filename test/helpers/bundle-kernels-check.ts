// An entry point that test/gpu/kernels.test.ts bundles (scripts/build.mjs --outdir DIR
// test/helpers/bundle-kernels-check.ts) and runs without tsx, away from kernels/: the kernels and
// their modules in kernels/lib/ must come from the bundle. Prints gelu of its arguments, computed
// by the activation op and by linear's fused epilogue (identity weight, zero bias).
import { getDevice } from '../../src/gpu/device.ts';
import { gelu, linear } from '../../src/ops/index.ts';
import { fromArray } from '../../src/tensor/tensor.ts';

const device = await getDevice();
const xs = process.argv.slice(2).map(Number);
const x = fromArray(xs, [1, xs.length], device);
const eye = fromArray(Float32Array.from({ length: xs.length ** 2 }, (_, i) => (i % (xs.length + 1) === 0 ? 1 : 0)), [xs.length, xs.length], device);
const op = [...(await gelu(x).read())];
const fused = [...(await linear(x, eye, fromArray(new Float32Array(xs.length), [xs.length], device), 'gelu').read())];
console.log(JSON.stringify({ op, fused }));
process.exit(0);
