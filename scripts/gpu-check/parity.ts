// GPU parity check against Hugging Face transformers + PEFT (see hf_reference.py):
// loads the HF-saved ViT-B/32 and the PEFT adapters (plain, and with the student's own
// visual_projection as a modules_to_save module) with genalign's own loaders, runs teacher
// and student forwards on the reference pixels and prints the max abs differences. Then the
// other direction: writes two adapters genalign made (non-zero B; the second with its own
// projection) and its embeddings of the same pixels to REF_DIR/ours-adapter{,-dual} and
// REF_DIR/ours.safetensors, for `hf_reference.py --check-ours REF_DIR` to load with
// PeftModel.from_pretrained. Last, times teacher/student forwards at a realistic batch.
//
// usage: node parity.mjs REF_DIR [batch]
import { join } from 'node:path';
import { existsSync, readFileSync } from 'node:fs';
import { getDevice } from '../../src/gpu/device.ts';
import { fromArray, parameter, scope, type Tensor } from '../../src/tensor/tensor.ts';
import { noGrad } from '../../src/tensor/autograd.ts';
import { loadClipVision } from '../../src/io/hf-checkpoint.ts';
import { readPeftAdapter, peftKey, writePeftAdapter, PROJECTION_KEY } from '../../src/io/peft.ts';
import { readSafetensors, writeSafetensors } from '../../src/io/safetensors.ts';
import { LoraAdapter, ATTENTION_TARGETS } from '../../src/nn/lora.ts';
import { forwardFlopsPerImage } from '../../src/nn/config.ts';

const dir = process.argv[2];
const batch = Number(process.argv[3] ?? 32);
const device = await getDevice();
console.log(`adapter: ${device.adapter.name} (${device.adapter.vendor}, ${device.adapter.architecture})`);
const { model } = loadClipVision(join(dir, 'model'), device);
const lora = readPeftAdapter(join(dir, 'adapter'), model.cfg, device);
const ref = readSafetensors(join(dir, 'ref.safetensors')).tensors;
const px = ref.get('pixels')!;
const maxDiff = (a: Float32Array, b: Float32Array): number => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
const embed = async (opts: { lora?: LoraAdapter }): Promise<Float32Array> => {
  const out = scope(() => noGrad(() => model.forward(fromArray(px.data, px.shape, device), opts)).keep());
  const got = await out.read();
  out.dispose();
  return got;
};
const dual = existsSync(join(dir, 'adapter-dual')) ? readPeftAdapter(join(dir, 'adapter-dual'), model.cfg, device) : null;
if (!dual) console.log('no adapter-dual in REF_DIR: the dual-projection parity is skipped');
if (dual && !dual.projection) console.log('adapter-dual: genalign read no visual_projection from it');
for (const [name, opts] of [['teacher', {}], ['student', { lora }], ...(dual ? [['student_dual', { lora: dual }] as const] : [])] as const) {
  const got = await embed(opts);
  const want = ref.get(name)!.data;
  const scaleMax = want.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  console.log(`parity ${name}: max |ours - HF| = ${maxDiff(got, want).toExponential(3)} (max |HF| ${scaleMax.toFixed(3)})`);
}
// PEFT keys written by genalign must equal PEFT's own.
const keyCheck = (what: string, file: string, adapter: LoraAdapter): void => {
  const peftKeys = JSON.parse(readFileSync(join(dir, file), 'utf8')) as Record<string, number[]>;
  const ours: Record<string, number[]> = {};
  for (const p of adapter.pairs.values()) {
    ours[peftKey(p.path, 'A')] = [...p.a.shape];
    ours[peftKey(p.path, 'B')] = [...p.b.shape];
  }
  if (adapter.projection) ours[PROJECTION_KEY] = [...adapter.projection.shape];
  const same = JSON.stringify(Object.entries(ours).sort()) === JSON.stringify(Object.entries(peftKeys).sort());
  console.log(`${what}: ${Object.keys(peftKeys).length} keys from PEFT, ${Object.keys(ours).length} from genalign, identical: ${same}`);
  if (!same) console.log('  PEFT keys genalign lacks:', Object.keys(peftKeys).filter((k) => !(k in ours)).slice(0, 3), 'extra:', Object.keys(ours).filter((k) => !(k in peftKeys)).slice(0, 3));
};
keyCheck('peft keys', 'peft_keys.json', lora);
if (dual && existsSync(join(dir, 'peft_keys_dual.json'))) keyCheck('peft keys (dual projection)', 'peft_keys_dual.json', dual);
dual?.dispose();

// genalign -> PEFT: adapters genalign made, written with its own writer.
const made = LoraAdapter.create(model.cfg, { rank: 4, alpha: 8, targets: ATTENTION_TARGETS, seed: 7 }, device);
let k = 0;
const wave = (n: number, amp: number): Float32Array => Float32Array.from({ length: n }, () => amp * Math.sin(0.37 * ++k + 0.11 * (k % 13)));
for (const p of made.pairs.values()) p.b.write(wave(p.b.size, 0.02)); // B starts at zero (PEFT init)
const oursOut: Record<string, { shape: readonly number[]; data: Float32Array }> = {};
const nOut = ref.get('teacher')!.shape;
oursOut.ours_student = { shape: nOut, data: await embed({ lora: made }) };
await writePeftAdapter(join(dir, 'ours-adapter'), made, join(dir, 'model'));
const base = model.weights.get('visual_projection.weight') as Tensor;
const projection = await base.read();
for (let i = 0; i < projection.length; i++) projection[i] += 0.01 * Math.cos(0.013 * i);
made.projection = parameter(projection, base.shape, 'student.visual_projection.weight', device);
oursOut.ours_student_dual = { shape: nOut, data: await embed({ lora: made }) };
await writePeftAdapter(join(dir, 'ours-adapter-dual'), made, join(dir, 'model'));
writeSafetensors(join(dir, 'ours.safetensors'), oursOut);
made.dispose();
console.log(`wrote ${join(dir, 'ours-adapter')}, ${join(dir, 'ours-adapter-dual')} and ours.safetensors (for hf_reference.py --check-ours)`);

// Throughput at a realistic batch.
const S = model.cfg.imageSize;
const big = new Float32Array(batch * 3 * S * S).map((_, i) => Math.sin(i * 0.001));
const flops = forwardFlopsPerImage(model.cfg) * batch;
for (const [name, opts] of [['teacher', {}], ['student', { lora }]] as const) {
  const times: number[] = [];
  for (let rep = 0; rep < 6; rep++) {
    const input = fromArray(big, [batch, 3, S, S], device).keep();
    await device.sync();
    const t0 = performance.now();
    const out = scope(() => noGrad(() => model.forward(input, opts)).keep());
    await device.sync();
    times.push(performance.now() - t0);
    out.dispose();
    input.dispose();
  }
  times.sort((a, b) => a - b);
  const ms = times[Math.floor(times.length / 2)];
  console.log(`vit-b-32 ${name} forward batch ${batch}: ${ms.toFixed(1)} ms median of 5 (after warm-up) = ${(batch / (ms / 1000)).toFixed(1)} images/s, ${(flops / (ms / 1000) / 1e9).toFixed(1)} GFLOP/s (wall clock around sync)`);
}
// One student training step (forward with LoRA + backward), peak pool memory and time.
const { backward } = await import('../../src/tensor/autograd.ts');
const { sum } = await import('../../src/ops/index.ts');
for (const b of [batch, 2 * batch]) {
  const input = fromArray(new Float32Array(b * 3 * S * S).map((_, i) => Math.cos(i * 0.001)), [b, 3, S, S], device).keep();
  const times: number[] = [];
  let peak = 0;
  for (let rep = 0; rep < 4; rep++) {
    await device.sync();
    const base = device.pool.stats().liveBytes;
    device.pool.resetPeak();
    const t0 = performance.now();
    scope(() => backward(sum(model.forward(input, { lora }))));
    await device.sync();
    times.push(performance.now() - t0);
    peak = device.pool.stats().peakLiveBytes - base;
    for (const p of lora.parameters()) p.zeroGrad();
  }
  input.dispose();
  times.sort((x, y) => x - y);
  const ms = times[1];
  console.log(`vit-b-32 student fwd+bwd batch ${b}: ${ms.toFixed(1)} ms (${(b / (ms / 1000)).toFixed(1)} images/s), peak activation memory ${(peak / 2 ** 20).toFixed(0)} MiB (pool, beyond weights)`);
}
console.log(`pool: ${JSON.stringify(device.pool.stats())}`);
process.exit(0);
