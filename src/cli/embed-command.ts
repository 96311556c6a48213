// `npm run embed -- --model DIR|NAME [--lora DIR] --images DIR --out FILE.safetensors [--batch N]`
// `npm run embed -- --model DIR|NAME --texts FILE.txt --out FILE.safetensors [--tokenizer DIR]`
// Images: embeds every .jpg/.jpeg/.png/.webp in DIR (sorted by file name) and writes
// `image_embeds` F32 [N, projection_dim] (projection output, not normalized) with metadata `files`
// (JSON array of the file names in row order). With --shard I/N (or a Slurm array / Kubernetes
// Indexed Job, src/cli/shard.ts) only every N-th file from the I-th, into this job's --out
// (metadata `shard` "I/N"); the N outputs together hold every file once.
// Texts: one text per line of a UTF-8 file (blank lines skipped, with a warning), embedded by
// the frozen text tower (CLIP BPE from the model folder or --tokenizer, truncated to the model's
// positions): `text_embeds` F32 [N, projection_dim] (HF text_embeds, not normalised) with metadata
// `texts` (JSON array of the texts in row order). --lora does not apply to texts. Corrupt images are skipped with a warning, and
// so are entries named like images that are not regular files (directories, FIFOs, devices);
// when no image decodes, it is an error and nothing is written.
// Flags, --out and the adapter's base seed are checked before the GPU is touched; non-finite
// embeddings (a diverged adapter) are an error and nothing is written.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { writableProblem } from '../platform/atomic-file.ts';
import { dirname, extname, join, resolve } from 'node:path';
import { getDevice, type Device } from '../gpu/device.ts';
import { loadModel, modelPreprocessing } from '../io/hf-checkpoint.ts';
import { checkPrecision } from '../train/trainer.ts';
import { adapterBaseProblem, readPeftAdapter } from '../io/peft.ts';
import { IMAGE_EXTENSIONS } from '../io/image.ts';
import { embedPaths } from '../train/embedding.ts';
import { writeSafetensors } from '../io/safetensors.ts';
import { parseFlags, helpText, positive, PRECISION_FLAG, UsageError, type FlagSpec } from './args.ts';
import { Progress } from './progress.ts';
import { readTextLines, TOKENIZER_FLAG } from './text-common.ts';
import { checkTokenizerFits, loadTokenizerFor } from '../train/text-tower.ts';
import { loadTextModel } from '../io/hf-checkpoint.ts';
import { embedTexts } from '../train/text-embedding.ts';
import { warn } from './terminal.ts';
import { SHARD_FLAGS, resolveShare, shareOf } from './shard.ts';
import { nonFileKind } from '../platform/regular-file.ts';
import { listWithRest } from '../gpu/problem-list.ts';

export const EMBED_FLAGS: FlagSpec[] = [
  { name: 'model', type: 'string', help: 'HF CLIP model directory, or a preset: tiny, vit-b-32, vit-b-16, vit-l-14 (random weights)' },
  { name: 'lora', type: 'string', help: 'PEFT LoRA adapter directory (the student); omit for the plain model' },
  { name: 'images', type: 'string', help: 'directory of .jpg/.jpeg/.png/.webp images' },
  { name: 'texts', type: 'string', help: 'UTF-8 text file, one text per line (instead of --images): embedded by the text tower' },
  TOKENIZER_FLAG,
  { name: 'out', type: 'string', help: 'output .safetensors file' },
  ...SHARD_FLAGS,
  { name: 'batch', type: 'int', default: 16, help: 'images per GPU batch', check: positive },
  { name: 'seed', type: 'int', default: 0, help: 'seed for preset models' },
  PRECISION_FLAG,
  { name: 'verbose', type: 'bool', default: false, help: 'print GPU memory use' },
];

export interface ImageListing {
  /** Names of the image files (regular files, or symbolic links to them), sorted. */
  names: string[];
  /** Entries named like images that are not regular files, with what they are; sorted by name. */
  skipped: { name: string; kind: string }[];
}

/**
 * The images of `dir`: entries with an image extension that are regular files. A directory,
 * FIFO, socket, device or broken link named like an image is skipped (reading a FIFO would
 * wait for ever) and listed in `skipped` with what it is.
 */
export function listImages(dir: string): ImageListing {
  if (!existsSync(dir)) throw new UsageError(`embed: --images ${dir}: not a directory (it does not exist); pass the folder that holds the images`);
  if (!statSync(dir).isDirectory()) throw new UsageError(`embed: --images ${dir}: not a directory (it is a file); pass the folder that holds the images`);
  const names: string[] = [];
  const skipped: ImageListing['skipped'] = [];
  for (const name of readdirSync(dir)) {
    if (!IMAGE_EXTENSIONS.includes(extname(name).toLowerCase())) continue;
    let kind: string | null;
    try {
      kind = nonFileKind(statSync(join(dir, name))); // follows symbolic links
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      kind = code === 'ENOENT' ? 'a broken symbolic link' : `unreadable (${code ?? (e as Error).message})`;
    }
    if (kind) skipped.push({ name, kind });
    else names.push(name);
  }
  names.sort();
  skipped.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { names, skipped };
}

/**
 * Why `flag path` cannot receive the command's output, or null when it can: checked up front,
 * so a bad --out fails before any image is embedded. `kind` 'file': a file written next to its
 * siblings (temp file + rename), its directory created if missing; 'dir': a directory, created
 * if missing, that receives `what`.
 */
export function outputPathProblem(flag: string, path: string, kind: 'file' | 'dir', what: string): string | null {
  const abs = resolve(path);
  const exists = existsSync(abs);
  if (exists) {
    const isDir = statSync(abs).isDirectory();
    if (kind === 'dir' && !isDir) return `${flag} ${path} is an existing file, but ${flag} names a directory (for ${what}); pass a new or existing directory instead`;
    if (kind === 'file' && isDir) return `${flag} ${path} is a directory, but ${flag} names a file (${what}); pass a file path such as ${join(path, 'embeds.safetensors')}`;
  }
  // The directory that must accept new entries (judged by its nearest existing ancestor when it is to be created).
  const problem = writableProblem(kind === 'dir' ? abs : dirname(abs));
  return problem ? `${flag} ${path}: ${problem}; pass a location you can write to` : null;
}

/** How the error for non-finite embeddings names a --lora student, and what to do about it. */
export function studentDescription(loraDir: string, out: string): { name: string; hint: string } {
  return {
    name: `the LoRA student (--lora ${loraDir})`,
    hint: `Its weights have likely diverged in training (too high a --lr): use an earlier checkpoint of that run (checkpoints/step-*), or retrain with a lower --lr. Nothing was written to ${out}.`,
  };
}

/** The same for the base model of --model. */
export function baseDescription(model: string, out: string): { name: string; hint: string } {
  return { name: `the base model (--model ${model})`, hint: `Its weights hold NaN/Inf or overflow float32; check the checkpoint. Nothing was written to ${out}.` };
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
  if (f.images && f.texts) throw new UsageError('embed: give --images or --texts, not both (run embed once for each)');
  for (const req of ['model', f.texts ? 'texts' : 'images', 'out'] as const) if (!f[req]) throw new UsageError(`embed: --${req} is required (see --help)`);
  const out = String(f.out);
  if (!out.endsWith('.safetensors')) throw new UsageError(`embed: --out must end with .safetensors, got '${out}'`);
  const outProblem = outputPathProblem('--out', out, 'file', 'the .safetensors file of embeddings');
  if (outProblem) throw new UsageError(`embed: ${outProblem}`);
  if (f.texts) return embedTextFile(f, out);
  const imagesDir = String(f.images);
  const { names: all, skipped: notFiles } = listImages(imagesDir);
  if (notFiles.length > 0) {
    warn(`warning: embed: skipping ${notFiles.length} entr${notFiles.length > 1 ? 'ies' : 'y'} of ${imagesDir} named like images that are not regular files:\n  ${listWithRest(notFiles.map((e) => `${e.name} (${e.kind})`))}`);
  }
  if (all.length === 0) throw new UsageError(`embed: no .jpg/.jpeg/.png/.webp files in ${imagesDir}`);
  // A job of an array embeds its share of the files (every N-th, in name order) into its own --out.
  const share = resolveShare('embed', f, process.env);
  const names = shareOf(all, share.index, share.count);
  if (share.count > 1) warn(`embed: share ${share.index} of ${share.count} (${share.source}): ${names.length} of ${all.length} image(s)`);
  if (names.length === 0) {
    warn(`embed: share ${share.index} of ${share.count} holds no image (only ${all.length} in ${imagesDir}); nothing written`);
    return 0;
  }
  const loraDir = f.lora ? String(f.lora) : undefined;
  const baseProblem = loraDir ? adapterBaseProblem(loraDir, String(f.model), Number(f.seed)) : null;
  if (baseProblem) throw new UsageError(`embed: ${baseProblem}`);
  const device = await getDevice();
  const precision = String(f.precision) as 'f32' | 'f16';
  checkPrecision(device, precision);
  const loaded = loadModel(String(f.model), device, Number(f.seed), precision);
  const lora = loraDir ? readPeftAdapter(loraDir, loaded.model.cfg, device) : undefined;
  const pre = modelPreprocessing(loaded);
  const progress = new Progress(names.length, 'embed');
  const undecodable: { path: string; reason: string }[] = [];
  const res = await embedPaths(device, loaded.model, lora, names.map((n) => join(imagesDir, n)), pre, Number(f.batch), {
    onProgress: (d) => progress.update(d),
    onSkip: (p, reason) => {
      undecodable.push({ path: p, reason });
      progress.log(`warning: skipping ${p}: ${reason}`);
    },
    model: loraDir ? studentDescription(loraDir, out) : baseDescription(String(f.model), out),
  });
  if (f.verbose) progress.log(memoryReport(device));
  const files = names.filter((_, i) => res.ok[i]);
  if (files.length === 0) {
    // In file-name order (decodes finish in any order).
    const reasons = undecodable.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0)).map((u) => `${u.path}: ${u.reason}`);
    lora?.dispose();
    loaded.model.dispose();
    throw new Error(
      `embed: none of the ${names.length} image(s) in ${imagesDir} could be decoded, so nothing was written to ${out}:\n  ${listWithRest(reasons, 5)}\n` +
        'Check that --images names the right folder, and re-encode or replace the files.',
    );
  }
  try {
    writeSafetensors(out, { image_embeds: { shape: [files.length, res.dim], data: res.embeds } }, { files: JSON.stringify(files), model: loaded.source, ...(loraDir ? { lora: loraDir } : {}), ...(share.count > 1 ? { shard: `${share.index}/${share.count}` } : {}) });
  } catch (e) {
    const msg = (e as Error).message;
    const prefix = `Could not write ${out}: `;
    throw new Error(`embed: could not write --out ${out}: ${msg.startsWith(prefix) ? msg.slice(prefix.length) : msg}`);
  }
  const skipped = names.length - files.length;
  warn(`embed: wrote ${files.length} embeddings [${files.length}, ${res.dim}] to ${out}${skipped ? ` (skipped ${skipped} unreadable)` : ''}`);
  lora?.dispose();
  loaded.model.dispose();
  return 0;
}

/** `embed --texts`: the text tower's embeddings of every non-blank line of the file. */
async function embedTextFile(f: Record<string, string | number | boolean | undefined>, out: string): Promise<number> {
  if (f.lora) throw new UsageError('embed: --lora adapts the vision tower only; embed texts without it (the text tower is always the frozen one)');
  const file = String(f.texts);
  const { texts, blank } = readTextLines('embed', '--texts', file);
  if (blank) warn(`warning: embed: skipping ${blank} blank line(s) of ${file}`);
  if (texts.length === 0) throw new UsageError(`embed: --texts ${file} holds no text (one text per line)`);
  const model = String(f.model);
  const tokenizerDir = f.tokenizer === undefined ? undefined : String(f.tokenizer);
  const tokenizer = loadTokenizerFor('embed', model, tokenizerDir);
  const device = await getDevice();
  const precision = String(f.precision) as 'f32' | 'f16';
  checkPrecision(device, precision);
  const loaded = loadTextModel(model, device, Number(f.seed), precision, tokenizer);
  try {
    checkTokenizerFits('embed', tokenizer, loaded.model.cfg, model, tokenizerDir);
    const progress = new Progress(texts.length, 'embed');
    const rows = await embedTexts(device, loaded.model, tokenizer, texts, Number(f.batch), { onProgress: (d) => progress.update(d), model: `the text tower of --model ${model}` });
    const dim = loaded.model.cfg.projectionDim;
    try {
      writeSafetensors(out, { text_embeds: { shape: [texts.length, dim], data: rows } }, { texts: JSON.stringify(texts), model: loaded.source });
    } catch (e) {
      const msg = (e as Error).message;
      const prefix = `Could not write ${out}: `;
      throw new Error(`embed: could not write --out ${out}: ${msg.startsWith(prefix) ? msg.slice(prefix.length) : msg}`);
    }
    warn(`embed: wrote ${texts.length} text embeddings [${texts.length}, ${dim}] to ${out}`);
    return 0;
  } finally {
    loaded.model.dispose();
  }
}
