import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as ops from '../../src/ops/index.ts';
import { scope, fromArray, Tensor, f32ToF16Bits, f16BitsToF32 } from '../../src/tensor/tensor.ts';
import { noGrad } from '../../src/tensor/autograd.ts';
import { assertClose, device, randn } from '../helpers/fixtures.ts';
import { testF16 } from '../helpers/f16.ts';

// Every function exported by src/ops/index.ts either runs on f16 tensors or refuses them by name
// (docs/architecture.md, "Refusals by name"): it never runs an f32 kernel on f16 bytes. Each
// export is classified in TABLE below, and the first test fails when an export is missing from
// the table (or the table names one that is gone), so a new op cannot skip the question.
//
//   'f16'      runs on f16 inputs of a valid small shape and returns f16 (toF32: f32, its
//              purpose); the values are compared with the same op in f32 on the same
//              f16-rounded inputs, so an op that labels f32 bytes as f16 fails too.
//   'refuses'  f32-only by design: throws an error naming the op and f16 (checkInputs: "…
//              is f16, and <op> runs on f32 tensors; convert it with toF32").
//   'either'   being converted on other branches: f16 as above, or a refusal by name.
// The refusals of f32-only ops must also say to convert with toF32.

type Kind = 'f16' | 'refuses' | 'either';

/**
 * Builds the op's inputs: `h(shape)` gives a tensor of the dtype under test (f16, or f32 for the
 * comparison run) holding f16-representable values, the same values in both runs; `f32(shape)`
 * gives an f32 tensor whatever the run (LoRA's master factors, AdamW's f32 state).
 */
interface Inputs {
  h: (shape: number[]) => Tensor;
  f32: (shape: number[]) => Tensor;
}

interface Entry {
  kind: Kind;
  call: (i: Inputs) => unknown;
  /** The dtype of the result when it runs on f16 inputs (default f16). */
  out?: 'f16' | 'f32';
  /** The name in the refusal when the op delegates to another op's check (scale → affine). */
  refusesAs?: string;
  /** Why it is f32 only, or where it is converted. */
  note?: string;
  /**
   * A known violation in this branch, left to the branch that owns the op: the check is skipped
   * (uvu counts it, and the reason is printed once). Remove it when the op is fixed.
   */
  gap?: string;
}

const OPTIMIZER = 'optimizer state and gradients are the f32 masters';
const HELPER_A = 'f16 storage, f32 math (elementwise, reduce, scale, shape ops)';
const HELPER_B = 'f16 storage; statistics, sums and accumulators in f32 (layerNorm, softmax, l2Normalize, attention)';

const TABLE: Record<string, Entry> = {
  // Written for f16 here.
  matmul: { kind: 'f16', call: ({ h }) => ops.matmul(h([3, 5]), h([5, 4])) },
  linear: { kind: 'f16', call: ({ h }) => ops.linear(h([3, 5]), h([4, 5]), h([4]), 'gelu') },
  gelu: { kind: 'f16', call: ({ h }) => ops.gelu(h([2, 6])) },
  quickGelu: { kind: 'f16', call: ({ h }) => ops.quickGelu(h([2, 6])) },
  erf: { kind: 'f16', call: ({ h }) => ops.erf(h([2, 6])) },
  toF16: { kind: 'f16', call: ({ h }) => ops.toF16(h([2, 6])) },
  toF32: { kind: 'f16', out: 'f32', call: ({ h }) => ops.toF32(h([2, 6])) },
  reshape: { kind: 'f16', call: ({ h }) => ops.reshape(h([2, 6]), [3, 4]) },
  loraLinear: { kind: 'f16', call: ({ h, f32 }) => ops.loraLinear(h([3, 6]), h([5, 6]), h([5]), f32([2, 6]), f32([5, 2]), 2, 'quick_gelu', h([3, 5])) },

  // f32 only: losses and the optimizer (convert with toF32 first).
  crossEntropy: { kind: 'refuses', call: ({ h }) => ops.crossEntropy(h([2, 5]), [1, 3]), note: 'loss: logits in f32' },
  infoNceGenToReal: { kind: 'refuses', call: ({ h }) => ops.infoNceGenToReal(h([2, 8]), h([3, 8])), note: 'loss: embeddings in f32' },
  adamwUpdate: {
    kind: 'refuses',
    call: ({ h, f32 }) => ops.adamwUpdate({ param: f32([8]), grad: h([8]), m: f32([8]), v: f32([8]), norm: f32([1]) }, { begin: 0, end: 8 }, { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxNorm: 0, step: 1 }),
    note: OPTIMIZER,
  },
  gradSumSquaresPartials: { kind: 'refuses', call: ({ h, f32 }) => ops.gradSumSquaresPartials(h([8]), { begin: 0, end: 8 }, f32([4]), 0), note: OPTIMIZER },
  gradNormFromPartials: { kind: 'refuses', call: ({ h, f32 }) => ops.gradNormFromPartials(h([4]), 4, f32([1])), note: OPTIMIZER },

    add: { kind: 'f16', call: ({ h }) => ops.add(h([2, 4]), h([4])), note: HELPER_A },
  sub: { kind: 'f16', call: ({ h }) => ops.sub(h([2, 4]), h([2, 4])), note: HELPER_A },
  mul: { kind: 'f16', call: ({ h }) => ops.mul(h([2, 4]), h([2, 4])), note: HELPER_A },
  biasAdd: { kind: 'f16', call: ({ h }) => ops.biasAdd(h([2, 4]), h([4])), note: HELPER_A },
  axpyNoGrad: { kind: 'f16', call: ({ h }) => ops.axpyNoGrad(h([2, 4]), h([2, 4]), 0.5), refusesAs: 'axpy', note: HELPER_A },
  affine: { kind: 'f16', call: ({ h }) => ops.affine(h([2, 4]), 2, 1), note: HELPER_A },
  scale: { kind: 'f16', call: ({ h }) => ops.scale(h([2, 4]), 2), refusesAs: 'affine', note: HELPER_A },
  neg: { kind: 'f16', call: ({ h }) => ops.neg(h([2, 4])), refusesAs: 'affine', note: HELPER_A },
  sum: { kind: 'f16', call: ({ h }) => ops.sum(h([2, 4]), 1), note: HELPER_A },
  mean: { kind: 'f16', call: ({ h }) => ops.mean(h([2, 4]), 0), note: HELPER_A },
  sumToShape: { kind: 'f16', call: ({ h }) => ops.sumToShape(h([3, 4]), [4]), note: HELPER_A },
  permute: { kind: 'f16', call: ({ h }) => ops.permute(h([2, 3, 4]), [2, 0, 1]), note: HELPER_A },
  transpose: { kind: 'f16', call: ({ h }) => ops.transpose(h([2, 3]), 0, 1), note: HELPER_A },
  concat: { kind: 'f16', call: ({ h }) => ops.concat([h([2, 3]), h([1, 3])], 0), note: HELPER_A },
  slice: { kind: 'f16', call: ({ h }) => ops.slice(h([4, 3]), 0, 1, 3), note: HELPER_A },
  gatherRows: { kind: 'f16', call: ({ h }) => ops.gatherRows(h([4, 3]), [2, 0, 2]), note: HELPER_A },
  patchify: { kind: 'f16', call: ({ h }) => ops.patchify(h([1, 3, 4, 4]), 2), note: HELPER_A },
  layerNorm: { kind: 'f16', call: ({ h }) => ops.layerNorm(h([2, 8]), h([8]), h([8])), note: HELPER_B },
  softmax: { kind: 'f16', call: ({ h }) => ops.softmax(h([2, 5])), note: HELPER_B },
  l2Normalize: { kind: 'f16', call: ({ h }) => ops.l2Normalize(h([2, 8])), note: HELPER_B },
  attention: { kind: 'f16', call: ({ h }) => ops.attention(h([1, 4, 2, 8]), h([1, 4, 2, 8]), h([1, 4, 2, 8])), note: HELPER_B },
};

test.before(async () => {
  await device();
});

test('every export of src/ops/index.ts is classified (f16, refuses f16, or being converted)', () => {
  const exported = Object.entries(ops).filter(([, v]) => typeof v === 'function').map(([k]) => k).sort();
  const classified = Object.keys(TABLE).sort();
  const missing = exported.filter((k) => !classified.includes(k));
  const stale = classified.filter((k) => !exported.includes(k));
  assert.equal(missing, [], `exports not in TABLE of test/ops/dtype-coverage.test.ts (say whether they run f16 or refuse it): ${missing.join(', ')}`);
  assert.equal(stale, [], `TABLE names ops that src/ops/index.ts no longer exports: ${stale.join(', ')}`);
});

/** Deterministic f16-representable values: randn rounded to f16. */
function f16Values(n: number, seed: number): Float32Array {
  return Float32Array.from(randn(n, seed), (v) => f16BitsToF32(f32ToF16Bits(v)));
}

/** Inputs of one run; the k-th tensor requested gets the same values in every run. */
function inputs(dtype: 'f16' | 'f32'): Inputs {
  let seed = 1;
  const make = (shape: number[], to: 'f16' | 'f32'): Tensor => {
    const t = fromArray(f16Values(shape.reduce((p, q) => p * q, 1), seed++), shape);
    return to === 'f16' ? ops.toF16(t) : t;
  };
  return { h: (shape) => make(shape, dtype), f32: (shape) => make(shape, 'f32') };
}

/** Runs the op in a scope without autograd; returns the result's dtype and values. */
async function run(e: Entry, dtype: 'f16' | 'f32'): Promise<{ dtype: string; values: Float32Array }> {
  const out = scope(() => {
    const r = noGrad(() => e.call(inputs(dtype)));
    if (!(r instanceof Tensor)) throw new Error(`the op returned ${typeof r}, not a Tensor`);
    return r.keep();
  });
  try {
    return { dtype: out.dtype, values: await out.read() };
  } finally {
    out.dispose();
  }
}

/** The f16 run against the f32 run on the same values: f16 output rounding and a little more. */
async function checkRunsF16(name: string, e: Entry, half: { dtype: string; values: Float32Array }): Promise<void> {
  assert.is(half.dtype, e.out ?? 'f16', `${name}: result dtype on f16 inputs`);
  const full = await run(e, 'f32');
  let m = 0;
  for (const v of full.values) m = Math.max(m, Math.abs(v));
  // A few f16 roundings (inputs are exact in both runs; intermediates and the output are not).
  assertClose(half.values, full.values, { rtol: 4e-3, atol: 4e-3 * m }, `${name}: f16 result vs the f32 op on the same values`);
}

function refusalPattern(name: string, e: Entry): RegExp {
  return new RegExp(`^${e.refusesAs ?? name}: .*\\bf16\\b`);
}

const gaps = Object.entries(TABLE).filter(([, e]) => e.gap);
if (gaps.length) console.log(gaps.map(([name, e]) => `  [dtype-coverage] skipped ${name}: ${e.gap}`).join('\n'));

for (const [name, e] of Object.entries(TABLE)) {
  if (e.gap) {
    test.skip(`${name}: ${e.gap}`, () => {});
  } else if (e.kind === 'refuses') {
    test(`${name} refuses f16 by name (${e.note})`, () => {
      assert.throws(() => scope(() => noGrad(() => e.call(inputs('f16')))), new RegExp(`${refusalPattern(name, e).source}.*convert it with toF32`));
    });
  } else if (e.kind === 'f16') {
    testF16(`${name} runs on f16`, async () => {
      await checkRunsF16(name, e, await run(e, 'f16'));
    });
  } else {
    testF16(`${name} runs on f16 or refuses it by name (${e.note})`, async () => {
      let half: { dtype: string; values: Float32Array };
      try {
        half = await run(e, 'f16');
      } catch (err) {
        const msg = err instanceof Error ? err.message : String(err);
        assert.match(msg, refusalPattern(name, e), `${name}: neither ran on f16 nor refused it by name: ${msg}`);
        return;
      }
      await checkRunsF16(name, e, half);
    });
  }
}

test.run();
