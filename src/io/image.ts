// Image preprocessing exactly like HF CLIPImageProcessor, done with sharp:
//   convert to RGB → resize the shortest edge to `size` (bicubic; the long edge becomes
//   int(size · long / short)) → center-crop to crop_size (top = (h − crop) // 2) → ÷255 →
//   normalize with the CLIP mean/std → CHW float32.
// An image already at the target size passes through resize and crop unchanged.
import sharp from 'sharp';

export const CLIP_MEAN: readonly [number, number, number] = [0.48145466, 0.4578275, 0.40821073];
export const CLIP_STD: readonly [number, number, number] = [0.26862954, 0.26130258, 0.27577711];

export interface PreprocessConfig {
  size: number;
  cropHeight: number;
  cropWidth: number;
  mean: readonly [number, number, number];
  std: readonly [number, number, number];
  doResize: boolean;
  doCenterCrop: boolean;
}

export const IMAGE_EXTENSIONS = ['.jpg', '.jpeg', '.png', '.webp'];

export function defaultPreprocess(imageSize: number): PreprocessConfig {
  return { size: imageSize, cropHeight: imageSize, cropWidth: imageSize, mean: CLIP_MEAN, std: CLIP_STD, doResize: true, doCenterCrop: true };
}

function num(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new Error(`preprocessor_config.json: ${what} must be a positive number, got ${JSON.stringify(v)}`);
  return v;
}

function triple(v: unknown, fallback: readonly [number, number, number], what: string): readonly [number, number, number] {
  if (v === undefined || v === null) return fallback;
  if (!Array.isArray(v) || v.length !== 3 || !v.every((x) => typeof x === 'number')) throw new Error(`preprocessor_config.json: ${what} must be 3 numbers`);
  return [v[0], v[1], v[2]];
}

/** Reads preprocessor_config.json in its old form (size: 224) or new form (size: {shortest_edge: 224}). */
export function parsePreprocessorConfig(json: unknown, imageSize: number): PreprocessConfig {
  const cfg = defaultPreprocess(imageSize);
  if (!json || typeof json !== 'object') return cfg;
  const j = json as Record<string, unknown>;
  if (j.size !== undefined) {
    if (typeof j.size === 'number') cfg.size = num(j.size, 'size');
    else if (j.size && typeof j.size === 'object') {
      const s = j.size as Record<string, unknown>;
      if (s.shortest_edge !== undefined) cfg.size = num(s.shortest_edge, 'size.shortest_edge');
      else if (s.height !== undefined) cfg.size = Math.min(num(s.height, 'size.height'), num(s.width, 'size.width'));
    }
  }
  cfg.cropHeight = cfg.cropWidth = cfg.size;
  if (j.crop_size !== undefined) {
    if (typeof j.crop_size === 'number') cfg.cropHeight = cfg.cropWidth = num(j.crop_size, 'crop_size');
    else if (j.crop_size && typeof j.crop_size === 'object') {
      const c = j.crop_size as Record<string, unknown>;
      cfg.cropHeight = num(c.height, 'crop_size.height');
      cfg.cropWidth = num(c.width, 'crop_size.width');
    }
  }
  cfg.mean = triple(j.image_mean, CLIP_MEAN, 'image_mean');
  cfg.std = triple(j.image_std, CLIP_STD, 'image_std');
  if (j.do_resize === false) cfg.doResize = false;
  if (j.do_center_crop === false) cfg.doCenterCrop = false;
  return cfg;
}

/** Why `pre` cannot feed a model of `imageSize` (the crop must be imageSize²), or null; `file` names the preprocessor config. */
export function cropProblem(pre: PreprocessConfig, imageSize: number, file: string): string | null {
  if (pre.cropWidth === imageSize && pre.cropHeight === imageSize) return null;
  return `${file}: crop_size ${pre.cropWidth}x${pre.cropHeight} does not match the model's image_size ${imageSize} (config.json); the crop must be ${imageSize}x${imageSize}`;
}

/** HF's get_resize_output_image_size(default_to_square=False). */
export function resizeTarget(width: number, height: number, size: number): { width: number; height: number } {
  const short = Math.min(width, height);
  const long = Math.max(width, height);
  const newShort = size;
  const newLong = Math.floor((size * long) / short);
  return width <= height ? { width: newShort, height: newLong } : { width: newLong, height: newShort };
}

export class ImageDecodeError extends Error {}

/**
 * libvips keeps one error buffer for all its threads. When several decodes fail at the same
 * time, one error can carry all their messages and the others only "Unknown error". So the
 * message of a failed decode is taken from a second decode of the file alone: these retries
 * run one at a time (only failed files pay for them, and bad files are rare).
 */
let retryChain: Promise<unknown> = Promise.resolve();

/** Decodes `path` once more; its error message, or null if it decoded this time. */
function decodeAgain(path: string): Promise<string | null> {
  return sharp(path, { failOn: 'error' })
    .raw()
    .toBuffer()
    .then(
      () => null,
      (e: unknown) => (e instanceof Error ? e.message : String(e)),
    );
}

/** Retries per failed file: the retries run one at a time, but other files' first decodes may still overlap them. */
const REASON_ATTEMPTS = 3;

/**
 * The decoder's own message for `path`, without repeats; `first` is the error the first attempt
 * gave (which may be another file's, or "Unknown error"). Retries run until one gives a clean
 * message (one line, not "Unknown error"), at most REASON_ATTEMPTS; the first clean retry
 * message wins, else the most informative message seen.
 */
async function decoderMessage(path: string, first: unknown): Promise<string> {
  const lines = (m: string): string[] => [...new Set(m.split('\n').map((l) => l.trim()).filter((l) => l !== '' && l !== 'Unknown error'))];
  const retries: string[][] = [];
  const retry = retryChain.then(async () => {
    for (let k = 0; k < REASON_ATTEMPTS; k++) {
      const again = await decodeAgain(path);
      if (again === null) return;
      retries.push(lines(again));
      if (retries[retries.length - 1].length === 1) return;
    }
  });
  retryChain = retry.catch(() => undefined);
  await retry;
  const all = [...retries, lines(first instanceof Error ? first.message : String(first))];
  const pick = all.find((l) => l.length === 1) ?? all.find((l) => l.length > 0) ?? ['unknown decoder error'];
  return pick.join('; ');
}

/**
 * Turns any failure of decoding `path` into an ImageDecodeError "<path>: cannot decode image
 * (<decoder message>)". ImageDecodeErrors pass through; TypeError/RangeError are programming
 * errors and are rethrown as they are.
 */
export async function imageDecodeError(path: string, e: unknown): Promise<ImageDecodeError> {
  if (e instanceof ImageDecodeError) return e;
  if (e instanceof TypeError || e instanceof RangeError) throw e;
  return new ImageDecodeError(`${path}: cannot decode image (${await decoderMessage(path, e)})`);
}

/** The reason of an ImageDecodeError without its leading "<path>: " (for messages that name the path already). */
export function decodeReason(path: string, e: Error): string {
  return e.message.startsWith(`${path}: `) ? e.message.slice(path.length + 2) : e.message;
}

/**
 * Decodes and preprocesses one image file into CHW float32 [3, cropH, cropW]. Every failure
 * that is the file's fault (unreadable, corrupt, truncated, too small to crop) is an
 * ImageDecodeError whose message starts with the path and carries the decoder's reason.
 */
export async function preprocessImage(path: string, cfg: PreprocessConfig): Promise<Float32Array> {
  try {
    return await decodeAndPreprocess(path, cfg);
  } catch (e) {
    throw await imageDecodeError(path, e);
  }
}

async function decodeAndPreprocess(path: string, cfg: PreprocessConfig): Promise<Float32Array> {
  let img = sharp(path, { failOn: 'error' });
  const meta = await img.metadata();
  let width = meta.width ?? 0;
  let height = meta.height ?? 0;
  if (!width || !height) throw new ImageDecodeError(`${path}: image has no size`);
  img = img.removeAlpha().toColourspace('srgb');
  if (cfg.doResize) {
    const t = resizeTarget(width, height, cfg.size);
    if (t.width !== width || t.height !== height) {
      img = img.resize({ width: t.width, height: t.height, fit: 'fill', kernel: 'cubic' });
      width = t.width;
      height = t.height;
    }
  }
  let cw = width;
  let ch = height;
  if (cfg.doCenterCrop) {
    cw = cfg.cropWidth;
    ch = cfg.cropHeight;
    if (cw > width || ch > height) {
      throw new ImageDecodeError(`${path}: image ${width}x${height} after resize is smaller than the crop ${cw}x${ch}`);
    }
    const top = Math.floor((height - ch) / 2);
    const left = Math.floor((width - cw) / 2);
    if (top !== 0 || left !== 0 || cw !== width || ch !== height) {
      // extract after resize needs a materialised pipeline step.
      img = sharp(await img.raw().toBuffer(), { raw: { width, height, channels: 3 } }).extract({ left, top, width: cw, height: ch });
    }
  }
  const raw = await img.raw().toBuffer();
  if (raw.length !== cw * ch * 3) throw new ImageDecodeError(`${path}: decoded ${raw.length} bytes, expected ${cw * ch * 3} (RGB ${cw}x${ch})`);
  const out = new Float32Array(3 * ch * cw);
  const plane = ch * cw;
  for (let c = 0; c < 3; c++) {
    const m = cfg.mean[c];
    const s = cfg.std[c];
    for (let i = 0; i < plane; i++) out[c * plane + i] = (raw[i * 3 + c] / 255 - m) / s;
  }
  return out;
}
