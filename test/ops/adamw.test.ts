import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { AdamW, type AdamWOptions } from '../../src/train/optimizer.ts';
import { Parameter, fromArray, parameter } from '../../src/tensor/tensor.ts';
import { fixture, assertClose, F32_TOL, device, type Fixture } from '../helpers/fixtures.ts';

// Mirrors CONFIGS in scripts/fixtures/fx_adamw.py (the lr per step comes from the fixture).
interface Config {
  steps: number;
  wd: number;
  maxNorm?: number;
  /** param index -> 0-based steps on which it has no grad */
  missing: Record<number, number[]>;
  /** key prefix of the initial values and grads */
  src: string;
  nParams: number;
}

const CONFIGS: Record<string, Config> = {
  noclip: { steps: 5, wd: 0.01, missing: {}, src: '', nParams: 3 },
  clip: { steps: 5, wd: 0.01, maxNorm: 1.0, missing: {}, src: '', nParams: 3 },
  skip: { steps: 5, wd: 0.1, maxNorm: 1.0, missing: { 1: [1, 2], 2: [0] }, src: '', nParams: 3 },
  large: { steps: 2, wd: 0.01, maxNorm: 1.0, missing: {}, src: 'large.', nParams: 2 },
};

// Params: the f32 kernel vs PyTorch in float64 differ by a few ulp of the update
// (lr·m̂/(sqrt(v̂)+eps), |update| <= ~lr) plus rounding of p itself: well inside rel 1e-5 / abs 1e-6.
// Norm: a two-stage f32 sum of squares (per-workgroup partials, then one workgroup's fixed-order
// sum) then sqrt, vs float64: rel ~1e-7.
const PARAM_TOL = F32_TOL;
const NORM_TOL = F32_TOL;

function lrs(fx: Fixture, name: string): Float32Array {
  return fx.get(`${name}.lr`).data;
}

function makeParams(fx: Fixture, cfg: Config, tag: string): Parameter[] {
  return Array.from({ length: cfg.nParams }, (_, i) => {
    const h = fx.get(`${cfg.src}init.p${i}`);
    return parameter(h.data, h.shape, `${tag}.p${i}`);
  });
}

function setGrads(fx: Fixture, cfg: Config, params: Parameter[], step: number): void {
  params.forEach((p, i) => {
    p.zeroGrad();
    if (cfg.missing[i]?.includes(step)) return;
    const h = fx.get(`${cfg.src}grad.s${step}.p${i}`);
    p.grad = fromArray(h.data, h.shape).keep();
  });
}

function options(cfg: Config, lr: number): AdamWOptions {
  return { lr, betas: [0.9, 0.999], eps: 1e-8, weightDecay: cfg.wd, maxGradNorm: cfg.maxNorm };
}

/** Runs steps [from, to) of a config, checking every step against PyTorch; returns the values after each step. */
async function runSteps(name: string, opt: AdamW, params: Parameter[], from: number, to: number, frozen?: Parameter): Promise<Float32Array[][]> {
  const fx = fixture('adamw');
  const cfg = CONFIGS[name];
  const lr = lrs(fx, name);
  const frozenBefore = frozen ? await frozen.read() : null;
  const history: Float32Array[][] = [];
  let prev = await Promise.all(params.map((p) => p.read()));
  for (let t = from; t < to; t++) {
    setGrads(fx, cfg, params, t);
    const norm = opt.step(lr[t]);
    const now = await Promise.all(params.map((p) => p.read()));
    assertClose(await norm.read(), fx.get(`${name}.s${t}.norm`).data, NORM_TOL, `${name} step ${t} norm`);
    norm.dispose();
    for (let i = 0; i < params.length; i++) {
      if (cfg.missing[i]?.includes(t)) {
        // PyTorch skips a param without grad entirely (no decay, no moment update): bit-identical.
        assert.equal(Array.from(now[i]), Array.from(prev[i]), `${name} step ${t}: p${i} has no grad and must not change`);
      }
      assertClose(now[i], fx.get(`${name}.s${t}.p${i}`).data, PARAM_TOL, `${name} step ${t} p${i}`);
    }
    if (frozen && frozenBefore) assert.equal(Array.from(await frozen.read()), Array.from(frozenBefore), `${name} step ${t}: frozen param changed`);
    history.push(now);
    prev = now;
  }
  return history;
}

const uninterrupted = new Map<string, Float32Array[][]>();

test.before(async () => {
  await device();
});

// Every config runs with this adapter's blocking; these run once more with the other adapter
// class's (workgroup sizes, partials per range, elements per invocation), so both are checked.
const OTHER_BLOCKING = new Set(['clip', 'large']);
const RUNS = Object.keys(CONFIGS).flatMap((name) => [{ name, other: false }, ...(OTHER_BLOCKING.has(name) ? [{ name, other: true }] : [])]);

for (const { name, other } of RUNS) {
  test(`${name}: params and norms after each step match torch.optim.AdamW + clip_grad_norm_${other ? ' (other adapter class blocking)' : ''}`, async () => {
    const dev = await device();
    if (other) dev.settings.blockingClass = dev.adapterClass === 'cpu' ? 'gpu' : 'cpu';
    const fx = fixture('adamw');
    const cfg = CONFIGS[name];
    const params = makeParams(fx, cfg, name);
    // In 'clip', a parameter that never gets a grad sits between p0 and p1: the update then
    // runs as two ranges and the norm over two sets of partials; it must stay untouched.
    const frozen = name === 'clip' ? parameter(Float32Array.from({ length: 10 }, (_, i) => i - 4.5), [10], 'clip.frozen') : undefined;
    const list = frozen ? [params[0], frozen, ...params.slice(1)] : params;
    const opt = new AdamW(list, options(cfg, lrs(fx, name)[0]));
    try {
      const history = await runSteps(name, opt, params, 0, cfg.steps, frozen);
      if (!other) uninterrupted.set(name, history);
      assert.is(opt.stepCount, cfg.steps);
    } finally {
      dev.settings.blockingClass = null;
      opt.dispose();
      for (const p of list) p.dispose();
    }
  });
}

test('loss scaling (GradScaler): gradients × 1024 with gradScale 1/1024 match torch; an overflowed step changes nothing, as GradScaler.step skips optimizer.step', async () => {
  const fx = fixture('adamw');
  const name = 'skip'; // clipping, weight decay and parameters without a grad on some steps
  const cfg = CONFIGS[name];
  const lr = lrs(fx, name);
  const params = makeParams(fx, cfg, 'scaled');
  const opt = new AdamW(params, options(cfg, lr[0]));
  // The same steps unscaled, for the moments (Adam's update hardly depends on the gradients' scale,
  // the moments do).
  const plainParams = makeParams(fx, cfg, 'scaled');
  const plain = new AdamW(plainParams, options(cfg, lr[0]));
  const S = 1024; // a power of two: scaling and unscaling are exact in f32, so torch's values hold as they are
  try {
    for (let t = 0; t < cfg.steps; t++) {
      if (t === 2) {
        // An overflowed backward: one gradient holds Inf and another NaN.
        const before = await Promise.all(params.map((p) => p.read()));
        const stepsBefore = opt.stepCount;
        setGrads(fx, cfg, params, t);
        for (const [k, bad] of [[0, Infinity], [2, NaN]] as const) {
          const g = await params[k].grad!.read();
          g[g.length - 1] = bad;
          params[k].grad!.write(g);
        }
        const r = await opt.stepUnlessOverflow(lr[t], 1 / S);
        assert.ok(r.skipped && !Number.isFinite(r.norm), 'the overflow is found');
        assert.is(opt.stepCount, stepsBefore, 'a skipped step is not counted');
        const after = await Promise.all(params.map((p) => p.read()));
        for (let i = 0; i < params.length; i++) assert.equal(Array.from(after[i]), Array.from(before[i]), `p${i} unchanged by the skipped step`);
      }
      setGrads(fx, cfg, params, t);
      for (const p of params) {
        if (!p.grad) continue;
        const g = await p.grad.read();
        p.grad.write(g.map((v) => v * S));
      }
      const r = await opt.stepUnlessOverflow(lr[t], 1 / S);
      assert.not.ok(r.skipped, `step ${t} applied`);
      setGrads(fx, cfg, plainParams, t);
      plain.step(lr[t]).dispose();
      // The norm is the unscaled one: torch's clip_grad_norm_ after scaler.unscale_.
      assertClose([r.norm], fx.get(`${name}.s${t}.norm`).data, NORM_TOL, `scaled step ${t} norm`);
      // Moments and per-parameter step counts are as if the skipped step never happened.
      for (let i = 0; i < params.length; i++) assertClose(await params[i].read(), fx.get(`${name}.s${t}.p${i}`).data, PARAM_TOL, `scaled step ${t} p${i}`);
    }
    assert.is(opt.stepCount, cfg.steps);
    // Unscaling by a power of two is exact: the moments and step counts equal the unscaled run's bit for bit.
    const [a, b] = [await opt.stateDict(), await plain.stateDict()];
    assert.equal(a.paramSteps, b.paramSteps);
    for (const k of Object.keys(b.m)) {
      assert.equal(Array.from(a.m[k]), Array.from(b.m[k]), `m of ${k}`);
      assert.equal(Array.from(a.v[k]), Array.from(b.v[k]), `v of ${k}`);
    }
  } finally {
    opt.dispose();
    plain.dispose();
    for (const p of [...params, ...plainParams]) p.dispose();
  }
});

test('stateDict / loadStateDict: resuming mid-way gives the same params as an uninterrupted run', async () => {
  const fx = fixture('adamw');
  const name = 'skip';
  const cfg = CONFIGS[name];
  const full = uninterrupted.get(name);
  assert.ok(full, 'the uninterrupted skip run ran first');
  const first = makeParams(fx, cfg, 'run');
  const optA = new AdamW(first, options(cfg, lrs(fx, name)[0]));
  // Stop after step 1, while p1 (no grad on steps 1, 2) and p2 (none on step 0) lag behind.
  await runSteps(name, optA, first, 0, 2);
  const state = await optA.stateDict();
  assert.is(state.step, 2);
  assert.equal(state.paramSteps, { 'run.p0': 2, 'run.p1': 1, 'run.p2': 1 });
  assert.is(state.m['run.p0'].length, 64);
  assert.ok(state.v['run.p0'].some((x) => x > 0), 'second moment is non-zero after two steps');
  const values = await Promise.all(first.map((p) => p.read()));
  optA.dispose();
  for (const p of first) p.dispose();

  const second = values.map((d, i) => parameter(d, fx.get(`init.p${i}`).shape, `run.p${i}`));
  const optB = new AdamW(second, options(cfg, 1));
  try {
    optB.loadStateDict(state);
    assert.is(optB.stepCount, 2);
    const resumed = await runSteps(name, optB, second, 2, cfg.steps);
    assert.is(optB.stepCount, cfg.steps);
    resumed.forEach((ps, k) =>
      ps.forEach((p, i) => assert.equal(Array.from(p), Array.from(full![k + 2][i]), `resumed step ${k + 2} p${i} equals the uninterrupted run bit for bit`)),
    );
    // A state saved from a different model is refused with a message naming the parameter.
    assert.throws(() => optB.loadStateDict({ ...state, m: { ...state.m, 'run.p0': new Float32Array(3) } }), /state\.m\['run\.p0'\] has 3 values, the parameter has 64/);
    assert.throws(() => optB.loadStateDict({ ...state, v: { ...state.v, other: new Float32Array(1) } }), /'other', which is not a parameter/);
  } finally {
    optB.dispose();
    for (const p of second) p.dispose();
  }
});

test('no grads at all: norm is 0 and nothing changes; zeroGrad drops grads', async () => {
  const p = parameter([1, 2, 3], [3], 'nograd.p');
  const opt = new AdamW([p], { lr: 0.1, maxGradNorm: 1 });
  try {
    const norm = opt.step();
    assert.is(await norm.item(), 0);
    norm.dispose();
    assert.equal(Array.from(await p.read()), [1, 2, 3]);
    p.grad = fromArray([1, 1, 1], [3]).keep();
    opt.zeroGrad();
    assert.is(p.grad, null);
  } finally {
    opt.dispose();
    p.dispose();
  }
});

test('dispose() frees the moments and flat buffers (no pool leak)', async () => {
  const dev = await device();
  const before = dev.pool.stats().liveBuffers;
  const ps = [parameter([1, 2, 3], [3], 'leak.a'), parameter([4, 5], [2], 'leak.b')];
  const opt = new AdamW(ps, { lr: 1e-2, maxGradNorm: 1 });
  for (let t = 0; t < 3; t++) {
    ps[0].grad = fromArray([0.5, -1, 2], [3]).keep();
    if (t !== 1) ps[1].grad = fromArray([3, -4], [2]).keep();
    const norm = opt.step();
    assert.ok((await norm.item()) > 0);
    norm.dispose();
    opt.zeroGrad();
  }
  opt.dispose();
  for (const p of ps) p.dispose();
  assert.is(dev.pool.stats().liveBuffers, before);
});

test('errors name the problem', async () => {
  const p = parameter([1, 2, 3], [3], 'err.p');
  try {
    assert.throws(() => new AdamW([], { lr: 1 }), /empty parameter list/);
    assert.throws(() => new AdamW([p, p], { lr: 1 }), /appears twice/);
    assert.throws(() => new AdamW([p], { lr: -1 }), /lr = -1 is invalid/);
    assert.throws(() => new AdamW([p], { lr: 1, betas: [0.9, 1] }), /betas\[1\] = 1 is invalid/);
    const opt = new AdamW([p], { lr: 1e-3 });
    p.grad = fromArray([1, 2], [2]).keep();
    assert.throws(() => opt.step(), /gradient of 'err\.p' is Tensor\[2\], the parameter is 'err\.p' Tensor\[3\]/);
    p.zeroGrad();
    opt.dispose();
    assert.throws(() => opt.step(), /optimizer was disposed/);
  } finally {
    p.dispose();
  }
});

test.run();
