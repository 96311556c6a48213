// `npm run embed -- --model DIR|NAME [--lora DIR] --images DIR --out FILE.safetensors [--batch N]`
// Embeds every .jpg/.jpeg/.png/.webp in DIR (sorted by file name) and writes `image_embeds`
// F32 [N, projection_dim] (projection output, not normalized) with metadata `files`
// (JSON array of the file names in row order). Corrupt images are skipped with a warning.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import { getDevice, type Device } from '../gpu/device.ts';
import { loadModel } from '../io/hf-checkpoint.ts';
import { readPeftAdapter } from '../io/peft.ts';
import { IMAGE_EXTENSIONS, parsePreprocessorConfig } from '../io/image.ts';
import { embedPaths } from '../train/embedding.ts';
import { writeSafetensors } from '../io/safetensors.ts';
import { parseFlags, helpText, positive, UsageError, type FlagSpec } from './args.ts';
import { Progress } from './progress.ts';

export const EMBED_FLAGS: FlagSpec[] = [
  { name: 'model', type: 'string', help: 'HF CLIP model directory, or a preset: tiny, vit-b-32, vit-b-16, vit-l-14 (random weights)' },
  { name: 'lora', type: 'string', help: 'PEFT LoRA adapter directory (the student); omit for the plain model' },
  { name: 'images', type: 'string', help: 'directory of .jpg/.jpeg/.png/.webp images' },
  { name: 'out', type: 'string', help: 'output .safetensors file' },
  { name: 'batch', type: 'int', default: 16, help: 'images per GPU batch', check: positive },
  { name: 'seed', type: 'int', default: 0, help: 'seed for preset models' },
  { name: 'verbose', type: 'bool', default: false, help: 'print GPU memory use' },
];

export function listImages(dir: string): string[] {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new UsageError(`--images ${dir}: not a directory`);
  return readdirSync(dir)
    .filter((f) => IMAGE_EXTENSIONS.includes(extname(f).toLowerCase()))
    .sort();
}

export function memoryReport(device: Device): string {
  const s = device.pool.stats();
  const mb = (b: number): string => `${(b / 2 ** 20).toFixed(1)} MiB`;
  return `GPU memory (genalign pool on ${device.adapter.name}): live ${mb(s.liveBytes)} in ${s.liveBuffers} buffers, cached free ${mb(s.freeBytes)}, total ${mb(s.totalBytes)}`;
}

export async function runEmbed(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(helpText('embed', 'Embed a folder of images with a CLIP vision encoder (optionally a LoRA student).', EMBED_FLAGS));
    return 0;
  }
  const f = parseFlags(argv, EMBED_FLAGS, 'embed');
  for (const req of ['model', 'images', 'out'] as const) if (!f[req]) throw new UsageError(`embed: --${req} is required (see --help)`);
  const out = String(f.out);
  if (!out.endsWith('.safetensors')) throw new UsageError(`embed: --out must end with .safetensors, got '${out}'`);
  const device = await getDevice();
  const loaded = loadModel(String(f.model), device, Number(f.seed));
  const lora = f.lora ? readPeftAdapter(String(f.lora), loaded.model.cfg, device) : undefined;
  const pre = parsePreprocessorConfig(loaded.preprocessor, loaded.model.cfg.imageSize);
  const total = listImages(String(f.images)).length;
  if (total === 0) throw new UsageError(`embed: no .jpg/.jpeg/.png/.webp files in ${String(f.images)}`);
  const progress = new Progress(total, 'embed');
  const names = listImages(String(f.images));
  const res = await embedPaths(device, loaded.model, lora, names.map((n) => join(String(f.images), n)), pre, Number(f.batch), {
    onProgress: (d) => progress.update(d),
    onSkip: (p, reason) => progress.log(`warning: skipping ${p}: ${reason}`),
  });
  if (f.verbose) progress.log(memoryReport(device));
  const files = names.filter((_, i) => res.ok[i]);
  writeSafetensors(out, { image_embeds: { shape: [files.length, res.dim], data: res.embeds } }, { files: JSON.stringify(files), model: loaded.source, ...(f.lora ? { lora: String(f.lora) } : {}) });
  const skipped = names.length - files.length;
  console.error(`embed: wrote ${files.length} embeddings [${files.length}, ${res.dim}] to ${out}${skipped ? ` (skipped ${skipped} unreadable)` : ''}`);
  lora?.dispose();
  loaded.model.dispose();
  return 0;
}
