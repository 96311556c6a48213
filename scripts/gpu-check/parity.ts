// GPU parity check against Hugging Face transformers + PEFT (see hf_reference.py):
// loads the HF-saved ViT-B/32 and the PEFT adapter with genalign's own loaders, runs teacher
// and student forwards on the reference pixels and prints the max abs differences; then
// times teacher/student forwards at a realistic batch and prints images/s.
//
// usage: node parity.mjs REF_DIR [batch]
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { getDevice } from '../../src/gpu/device.ts';
import { fromArray, scope } from '../../src/tensor/tensor.ts';
import { noGrad } from '../../src/tensor/autograd.ts';
import { loadClipVision } from '../../src/io/hf-checkpoint.ts';
import { readPeftAdapter, peftKey } from '../../src/io/peft.ts';
import { readSafetensors } from '../../src/io/safetensors.ts';
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
for (const [name, opts] of [['teacher', {}], ['student', { lora }]] as const) {
  const out = scope(() => noGrad(() => model.forward(fromArray(px.data, px.shape, device), opts)).keep());
  const got = await out.read();
  out.dispose();
  const want = ref.get(name)!.data;
  const scaleMax = want.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  console.log(`parity ${name}: max |ours - HF| = ${maxDiff(got, want).toExponential(3)} (max |HF| ${scaleMax.toFixed(3)})`);
}
// PEFT keys written by genalign must equal PEFT's own.
const peftKeys = JSON.parse(readFileSync(join(dir, 'peft_keys.json'), 'utf8')) as Record<string, number[]>;
const ours: Record<string, number[]> = {};
for (const p of lora.pairs.values()) {
  ours[peftKey(p.path, 'A')] = [...p.a.shape];
  ours[peftKey(p.path, 'B')] = [...p.b.shape];
}
const same = JSON.stringify(Object.entries(ours).sort()) === JSON.stringify(Object.entries(peftKeys).sort());
console.log(`peft keys: ${Object.keys(peftKeys).length} from PEFT, ${Object.keys(ours).length} from genalign, identical: ${same}`);
if (!same) console.log('first PEFT keys:', Object.keys(peftKeys).slice(0, 3));

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
