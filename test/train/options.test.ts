// The option table (src/train/options.ts) and what is derived from it: every option is either
// hashed (fixed on --resume) or explicitly allowed to change, the flags and config.json follow
// the table, and --resume applies the rules to real run directories' config.json.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { TRAIN_OPTIONS, OPTION_KEYS, configHash, flagName, newRunOptions, resumedOptions, savedOptions, OptionValueError, ResumeConflictError, type OptionKey, type TrainOptions } from '../../src/train/options.ts';
import { TRAIN_FLAGS, trainOptionsOf } from '../../src/cli/train-command.ts';
import { UsageError } from '../../src/cli/args.ts';
import { checkPrecision } from '../../src/train/trainer.ts';
import type { Device } from '../../src/gpu/device.ts';

const root = mkdtempSync(join(tmpdir(), 'genalign-options-'));
test.after(() => rmSync(root, { recursive: true, force: true }));
const data = join(root, 'data');
mkdirSync(data);

/**
 * For every option, a command-line value that differs from the one `base` uses. Listing every
 * option here is deliberate: a new option makes the first test fail until its resume rule is
 * tested below.
 */
const OTHER: Record<OptionKey, string> = {
  data: join(root, 'other-data'), model: 'vit-b-32', out: join(root, 'elsewhere'), resume: join(root, 'other-run'), steps: '7', epochs: '3', batch: '5',
  accum: '2', lr: '0.002', minLr: '1e-6', weightDecay: '0.1', beta1: '0.8', beta2: '0.99', eps: '1e-6', clip: '2', warmup: '3',
  restartPeriod: '10', restartMult: '2', rank: '8', alpha: '16', targets: 'q_proj,v_proj', dualProjection: 'true', precision: 'f16', tau: '0.1', cosineWeight: '0.5', seed: '9',
  valFraction: '0.2', teacherCache: 'false', cacheDir: join(root, 'other-cache'), saveEvery: '11', logEvery: '13', keepCheckpoints: '5',
  maxBadFraction: '0.1', eval: 'false', plot: 'pca', valData: join(root, 'val.tar'), shuffleBuffer: '64', evalMax: '50', devices: '2',
};

const base = (): string[] => ['--data', data, '--model', 'tiny', '--out', join(root, 'run')];

function asFlag(key: OptionKey, value: string): string[] {
  return TRAIN_OPTIONS[key].flagType === 'bool' ? [`--${flagName(key)}=${value}`] : [`--${flagName(key)}`, value];
}

test('every option has a resume rule and a differing test value; the flags are the options plus --validate', () => {
  assert.equal(Object.keys(OTHER).sort(), [...OPTION_KEYS].sort());
  for (const key of OPTION_KEYS) assert.ok(['fixed', 'may-change', 'per-invocation'].includes(TRAIN_OPTIONS[key].onResume), key);
  assert.equal(TRAIN_FLAGS.map((f) => f.name).sort(), [...OPTION_KEYS.map(flagName), 'validate'].sort());
  const o = trainOptionsOf(base());
  for (const key of OPTION_KEYS) {
    if (key === 'resume') continue;
    assert.not.equal(trainOptionsOf([...base(), ...asFlag(key, OTHER[key])])[key], o[key], `--${flagName(key)} ${OTHER[key]} changes ${key}`);
  }
});

test('configHash covers exactly the fixed options: each fixed one changes it, no other does', () => {
  const o = trainOptionsOf(base());
  const h = configHash(o);
  for (const key of OPTION_KEYS) {
    if (key === 'resume') continue;
    const changed = configHash(trainOptionsOf([...base(), ...asFlag(key, OTHER[key])]));
    if (TRAIN_OPTIONS[key].onResume === 'fixed') assert.not.equal(changed, h, `${key} is fixed, so it is hashed`);
    else assert.is(changed, h, `${key} is ${TRAIN_OPTIONS[key].onResume}, so it is not hashed`);
  }
  // Canonical forms: a relative data path and the absolute one are the same run.
  assert.is(configHash({ ...o, data: resolve(data) }), h);
});

test('an option added later (--precision) leaves configHash as it was while at its default, so older runs resume; f16 is refused on resuming an f32 run', () => {
  const o = trainOptionsOf(base());
  // The hash genalign wrote before --precision existed: every fixed option but the ones added
  // later (precision, cosineWeight).
  const older = OPTION_KEYS.filter((k) => TRAIN_OPTIONS[k].onResume === 'fixed' && k !== 'precision' && k !== 'cosineWeight' && k !== 'valData' && k !== 'shuffleBuffer').map((k) => [k, TRAIN_OPTIONS[k].normalize(o[k] as never)]);
  assert.is(configHash(o), createHash('sha256').update(JSON.stringify(older)).digest('hex').slice(0, 16));
  const runDir = join(root, 'older-run');
  mkdirSync(runDir, { recursive: true });
  const saved: Record<string, unknown> = savedOptions(o);
  delete saved.precision;
  const resumed = resumedOptions(saved, join(runDir, 'config.json'), {}, runDir);
  assert.is(resumed.precision, 'f32', 'a config.json without precision is an f32 run');
  assert.is(configHash(resumed), configHash(o));
  assert.throws(() => resumedOptions(saved, join(runDir, 'config.json'), { precision: 'f16' }, runDir), (e: Error) => e instanceof ResumeConflictError && /--precision cannot be changed when resuming: the run was started with "f32"/.test(e.message));
});

test('--cosine-weight: parsed, saved in config.json, hashed only when not 0 (older runs resume as 0), fixed on --resume, refused when negative', () => {
  const o = trainOptionsOf(base());
  assert.is(o.cosineWeight, 0, 'default: the paper\'s loss alone');
  const withTerm = trainOptionsOf([...base(), '--cosine-weight', '0.5']);
  assert.is(withTerm.cosineWeight, 0.5);
  assert.is(savedOptions(withTerm).cosineWeight, 0.5, 'config.json records it');
  assert.is(savedOptions(o).cosineWeight, 0);
  // 0 leaves the hash as runs without the option have it (precision, at its default f32 here, is
  // left out as well); any other value is another run.
  const older = OPTION_KEYS.filter((k) => TRAIN_OPTIONS[k].onResume === 'fixed' && k !== 'cosineWeight' && k !== 'precision' && k !== 'valData' && k !== 'shuffleBuffer').map((k) => [k, TRAIN_OPTIONS[k].normalize(o[k] as never)]);
  assert.is(configHash(o), createHash('sha256').update(JSON.stringify(older)).digest('hex').slice(0, 16));
  assert.is(configHash(trainOptionsOf([...base(), '--cosine-weight', '0'])), configHash(o));
  assert.not.equal(configHash(withTerm), configHash(o));
  const runDir = join(root, 'before-cosine');
  mkdirSync(runDir, { recursive: true });
  const saved: Record<string, unknown> = savedOptions(o);
  delete saved.cosineWeight;
  const resumed = resumedOptions(saved, join(runDir, 'config.json'), {}, runDir);
  assert.is(resumed.cosineWeight, 0, 'a config.json without cosineWeight is the paper\'s loss');
  assert.is(configHash(resumed), configHash(o));
  assert.throws(() => resumedOptions(saved, join(runDir, 'config.json'), { cosineWeight: 0.5 }, runDir), (e: Error) => e instanceof ResumeConflictError && /--cosine-weight cannot be changed when resuming: the run was started with 0/.test(e.message));
  for (const bad of ['-0.5', 'abc']) {
    assert.throws(() => trainOptionsOf([...base(), '--cosine-weight', bad]), (e: Error) => e instanceof UsageError && /--cosine-weight/.test(e.message), bad);
  }
  assert.throws(() => trainOptionsOf([...base(), '--cosine-weight', '-0.5']), /--cosine-weight must be >= 0/);
  assert.throws(() => resumedOptions({ ...saved, cosineWeight: -1 }, '/runs/x/config.json', {}, '/runs/x'), /\/runs\/x\/config\.json: "cosineWeight" must be >= 0/);
});

test('--precision f16 on an adapter without shader-f16: refused before anything loads, naming the adapter and the way out', () => {
  const without = { hasFeature: () => false, adapter: { name: 'SwiftShader Device (Subzero)' } } as unknown as Device;
  assert.throws(() => checkPrecision(without, 'f16'), /--precision f16 needs the adapter feature 'shader-f16', which SwiftShader Device \(Subzero\) does not offer\. Use --precision f32/);
  checkPrecision(without, 'f32');
  checkPrecision({ hasFeature: (f: string) => f === 'shader-f16', adapter: { name: 'x' } } as unknown as Device, 'f16');
});

test('config.json holds every option but the per-invocation ones', () => {
  const saved = savedOptions(trainOptionsOf(base()));
  assert.equal(Object.keys(saved).sort(), OPTION_KEYS.filter((k) => TRAIN_OPTIONS[k].onResume !== 'per-invocation').sort());
});

test('--resume: a fixed option given with another value is refused naming the flag, the same value is accepted; may-change options take the new value; per-invocation ones come from this command line or the environment', () => {
  const runDir = join(root, 'resumed');
  mkdirSync(runDir);
  const o = trainOptionsOf([...base(), '--out', runDir]);
  writeFileSync(join(runDir, 'config.json'), JSON.stringify({ ...savedOptions(o), configHash: configHash(o) }));
  const again = trainOptionsOf(['--resume', runDir]);
  for (const key of OPTION_KEYS) if (TRAIN_OPTIONS[key].onResume !== 'per-invocation') assert.equal(again[key], o[key], key);
  assert.is(again.out, runDir);
  for (const key of OPTION_KEYS) {
    if (key === 'resume' || key === 'out') continue;
    const args = ['--resume', runDir, ...asFlag(key, OTHER[key])];
    const rule = TRAIN_OPTIONS[key].onResume;
    if (rule === 'fixed') {
      assert.throws(() => trainOptionsOf(args), (e: Error) => e instanceof UsageError && e.message.includes(`--${flagName(key)} cannot be changed when resuming`), key);
      const same = o[key];
      if (same === null) continue; // absent (--val-data): there is no flag value that says so
      const text = Array.isArray(same) ? same.join(',') : String(same);
      assert.equal(trainOptionsOf(['--resume', runDir, ...asFlag(key, text)])[key], same, `${key}: the run's own value is accepted`);
    } else {
      assert.not.equal(trainOptionsOf(args)[key], o[key], `${key} (${rule}) takes the value given now`);
    }
  }
  assert.throws(() => trainOptionsOf(['--resume', runDir, '--out', join(root, 'x')]), /--out .* does not go with --resume/);
});

test('--resume never takes where it writes from config.json (cacheDir, out): the command line or the environment decide', () => {
  const runDir = join(root, 'hostile');
  mkdirSync(runDir);
  const o = trainOptionsOf([...base(), '--out', runDir]);
  const evil = join(root, 'evil-cache');
  writeFileSync(join(runDir, 'config.json'), JSON.stringify({ ...savedOptions(o), cacheDir: evil, out: '/etc', configHash: configHash(o) }));
  const before = process.env.GENALIGN_CACHE_DIR;
  process.env.GENALIGN_CACHE_DIR = join(root, 'env-cache');
  try {
    const r = trainOptionsOf(['--resume', runDir]);
    assert.is(r.cacheDir, join(root, 'env-cache'));
    assert.is(r.out, runDir);
    assert.is(trainOptionsOf(['--resume', runDir, '--cache-dir', join(root, 'flag-cache')]).cacheDir, join(root, 'flag-cache'));
  } finally {
    if (before === undefined) delete process.env.GENALIGN_CACHE_DIR;
    else process.env.GENALIGN_CACHE_DIR = before;
  }
});

test('a damaged config.json value is an error naming the file and the key; a missing key takes its default (older runs)', () => {
  const o = newRunOptions({ data, model: 'tiny', out: join(root, 'r') }, false);
  const saved = savedOptions(o);
  for (const [key, bad] of [['batch', 'abc'], ['batch', -5], ['lr', null], ['targets', ['q_proj', 'nope']], ['plot', 'umap'], ['eval', 'yes']] as const) {
    assert.throws(
      () => resumedOptions({ ...saved, [key]: bad }, '/runs/x/config.json', {}, '/runs/x'),
      (e: Error) => e instanceof OptionValueError && e.message.startsWith(`/runs/x/config.json: "${key}" `),
      `${key} = ${JSON.stringify(bad)}`,
    );
  }
  const { data: _data, ...noData } = saved;
  assert.throws(() => resumedOptions(noData, '/runs/x/config.json', {}, '/runs/x'), /\/runs\/x\/config\.json: "data" is missing/);
  const { tau: _tau, ...older } = saved;
  assert.is(resumedOptions(older, '/runs/x/config.json', {}, '/runs/x').tau, 0.07);
  assert.throws(() => resumedOptions([1, 2], '/runs/x/config.json', {}, '/runs/x'), /not a JSON object/);
  assert.throws(() => resumedOptions({ ...saved, lr: 1 }, '/runs/x/config.json', { lr: 2 }, '/runs/x'), (e: Error) => e instanceof ResumeConflictError);
});

test('the demo: its own values where no flag is given; required options are named', () => {
  const demo = trainOptionsOf([]);
  for (const key of OPTION_KEYS) {
    const d = TRAIN_OPTIONS[key].demo;
    if (d !== undefined && key !== 'data' && key !== 'model') assert.equal(demo[key as keyof TrainOptions], d, key);
  }
  assert.is(demo.data, resolve('data', 'demo'));
  // The demo teacher is a directory: normalized to its absolute path like any --model DIR.
  assert.is(demo.model, resolve('models', 'demo-clip'));
  assert.is(trainOptionsOf(['--steps', '5']).steps, 5);
  assert.throws(() => trainOptionsOf(['--data', data]), (e: Error) => e instanceof UsageError && /--model is required with --data/.test(e.message));
  assert.not.ok(existsSync(join(root, 'run')), 'resolving options creates nothing');
});

test.run();
