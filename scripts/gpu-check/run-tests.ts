// Runs a chosen set of test files in one process (bundled for the GPU box, where there is
// no npm), queueing each file as a suite the way uvu's own CLI does.
const g = globalThis as unknown as { UVU_DEFER: number; UVU_INDEX: number; UVU_QUEUE: unknown[][] };
g.UVU_DEFER = 1;
const uvu = await import('uvu');
const files: [string, () => Promise<unknown>][] = [
  ['ops/elementwise', () => import('../../test/ops/elementwise.test.ts')],
  ['ops/matmul', () => import('../../test/ops/matmul.test.ts')],
  ['ops/matmul-served', () => import('../../test/ops/matmul-served.test.ts')],
  ['ops/nn', () => import('../../test/ops/nn.test.ts')],
  ['ops/shape', () => import('../../test/ops/shape.test.ts')],
  ['ops/attention', () => import('../../test/ops/attention.test.ts')],
  ['ops/loss', () => import('../../test/ops/loss.test.ts')],
  ['ops/adamw', () => import('../../test/ops/adamw.test.ts')],
  ['ops/lora', () => import('../../test/ops/lora.test.ts')],
  ['nn/vit', () => import('../../test/nn/vit.test.ts')],
  ['nn/text', () => import('../../test/nn/text.test.ts')],
  ['tensor/lifetime', () => import('../../test/tensor/lifetime.test.ts')],
];
let idx = 0;
for (const [name, load] of files) {
  g.UVU_INDEX = idx++;
  g.UVU_QUEUE.push([name]);
  await load();
}
await uvu.exec();
process.exit(process.exitCode ?? 0);
