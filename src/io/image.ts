// Image preprocessing identical to HF's CLIPImageProcessor (the PIL-based one), bit for bit on
// the 8-bit pixels and on the float output:
//   decode (sharp/libvips, no resize, no colour management) → PIL's convert("RGB") (alpha
//   dropped, grey repeated, CMYK by PIL's formula) → resize (PIL bicubic, io/resample.ts) →
//   center crop (top = (h − crop) // 2, zero padding where the image is smaller) → × rescale
//   factor (float32) → (x − mean) / std (float32) → CHW float32.
// Only the crop window of the resized image is ever computed, so the cost is bounded by the
// crop (and the decoded input), not by the resized size (a 1×16000 image resized to shortest
// edge 224 would be 224×3,584,000).
//
// preprocessor_config.json is read by parsePreprocessorConfig, which refuses, naming the file
// and the field, every value that genalign cannot reproduce or that cannot be meant.
import sharp from 'sharp';
import { resizeWindowRgb, type Pixels } from './resample.ts';

export type Triple = readonly [number, number, number];

export const CLIP_MEAN: Triple = [0.48145466, 0.4578275, 0.40821073];
export const CLIP_STD: Triple = [0.26862954, 0.26130258, 0.27577711];

export interface FixedSize {
  width: number;
  height: number;
}

/** How HF resizes: shortest edge to N (the long edge becomes int(N · long / short)), or to exactly width × height. */
export type ResizeRule = { shortestEdge: number } | FixedSize;

export interface PreprocessConfig {
  /** null: do_resize is false. */
  resize: ResizeRule | null;
  /**
   * Size of the output: the center crop, or, when do_center_crop is false, the fixed size the
   * resize gives (a crop of the whole image).
   */
  cropWidth: number;
  cropHeight: number;
  /** Pixels are multiplied by this (do_rescale; HF's default 1/255); null: do_rescale is false. */
  rescaleFactor: number | null;
  /** (x − mean) / std per channel; null: do_normalize is false. */
  normalize: { mean: Triple; std: Triple } | null;
}

export const IMAGE_EXTENSIONS = ['.jpg', '.jpeg', '.png', '.webp'];

/**
 * Largest size, crop or resize edge accepted in preprocessor_config.json. Real CLIP checkpoints
 * use 224–448; the bound only stops values that cannot be meant (1e9).
 */
export const MAX_PREPROCESS_SIZE = 16384;

/**
 * Most pixels (width × height) of an input image that genalign decodes: sharp's default,
 * 16383². The decoded image is held in memory whole (4 bytes a pixel with alpha), so this
 * bounds one decode at about 1 GiB.
 */
export const MAX_INPUT_PIXELS = 16383 * 16383;

/** PIL's resampling filters by number (Image.Resampling). */
const PIL_FILTERS: Record<number, string> = { 0: 'NEAREST', 1: 'LANCZOS', 2: 'BILINEAR', 3: 'BICUBIC', 4: 'BOX', 5: 'HAMMING' };
const BICUBIC = 3;

export function defaultPreprocess(imageSize: number): PreprocessConfig {
  return {
    resize: { shortestEdge: imageSize },
    cropWidth: imageSize,
    cropHeight: imageSize,
    rescaleFactor: 1 / 255,
    normalize: { mean: CLIP_MEAN, std: CLIP_STD },
  };
}

/** A config value as it reads in the file; numbers JSON cannot hold (1e999 parses to Infinity) by name. */
function shown(v: unknown): string {
  return JSON.stringify(v, (_key, x: unknown) => (typeof x === 'number' && !Number.isFinite(x) ? String(x) : x)) ?? String(v);
}

/** Reads the fields of one preprocessor_config.json; every error names the file and the field. */
class ConfigReader {
  constructor(
    private readonly json: Record<string, unknown>,
    private readonly file: string,
  ) {}

  fail(field: string, problem: string): never {
    throw new Error(`${this.file}: "${field}" ${problem}`);
  }

  has(field: string): boolean {
    return this.json[field] !== undefined && this.json[field] !== null;
  }

  flag(field: string, fallback: boolean): boolean {
    const v = this.json[field];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'boolean') this.fail(field, `must be true or false, got ${shown(v)}`);
    return v;
  }

  /** A pixel count: an integer 1 … MAX_PREPROCESS_SIZE. */
  side(v: unknown, field: string): number {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > MAX_PREPROCESS_SIZE) {
      this.fail(field, `must be a whole number of pixels from 1 to ${MAX_PREPROCESS_SIZE}, got ${shown(v)}`);
    }
    return v;
  }

  /** HF's size forms: N, [height, width], {"height": H, "width": W}, and for a resize {"shortest_edge": N}. */
  private sizeForm(field: string, intIsShortestEdge: boolean): ResizeRule {
    const v = this.json[field];
    if (typeof v === 'number') {
      const n = this.side(v, field);
      return intIsShortestEdge ? { shortestEdge: n } : { width: n, height: n };
    }
    if (Array.isArray(v)) {
      if (v.length !== 2) this.fail(field, `as a list must be [height, width], got ${shown(v)}`);
      return { height: this.side(v[0], `${field}[0]`), width: this.side(v[1], `${field}[1]`) };
    }
    if (v && typeof v === 'object') {
      const o = v as Record<string, unknown>;
      const keys = Object.keys(o).sort().join(',');
      if (keys === 'height,width') return { height: this.side(o.height, `${field}.height`), width: this.side(o.width, `${field}.width`) };
      // CLIPImageProcessor resizes by shortest_edge alone when it is present (longest_edge is not used).
      if (intIsShortestEdge && (keys === 'shortest_edge' || keys === 'longest_edge,shortest_edge')) {
        return { shortestEdge: this.side(o.shortest_edge, `${field}.shortest_edge`) };
      }
      const allowed = intIsShortestEdge ? '{"shortest_edge": N} or {"height": H, "width": W}' : '{"height": H, "width": W}';
      this.fail(field, `must be a number or ${allowed}, got keys {${keys}}`);
    }
    return this.fail(field, `must be a number or an object, got ${shown(v)}`);
  }

  /** `size`: a number is the shortest edge. */
  resizeRule(field: string): ResizeRule {
    return this.sizeForm(field, true);
  }

  /** `crop_size`: a number is a square. */
  fixedSize(field: string): FixedSize {
    return this.sizeForm(field, false) as FixedSize;
  }

  /** One number for all channels, or one per channel (R, G, B). */
  triple(field: string, fallback: Triple, ok: (x: number) => boolean, what: string): Triple {
    const v = this.json[field];
    if (v === undefined || v === null) return fallback;
    const list = typeof v === 'number' ? [v, v, v] : v;
    if (!Array.isArray(list) || list.length !== 3 || !list.every((x) => typeof x === 'number' && ok(x))) {
      this.fail(field, `must be one number or three (for R, G, B), each ${what}; got ${shown(v)}`);
    }
    return [list[0], list[1], list[2]];
  }
}

/**
 * Reads preprocessor_config.json (CLIPImageProcessor's fields, old and new forms) for a model of
 * `imageSize`; absent fields take genalign's defaults for that size (shortest edge and crop
 * imageSize, CLIP's mean/std, rescale 1/255). Throws an Error naming `file` and the field for a
 * value that cannot be meant (zero or negative std, a resize smaller than the crop, sizes beyond
 * MAX_PREPROCESS_SIZE) or that genalign does not reproduce (resample other than bicubic,
 * do_convert_rgb false, no fixed output size).
 */
export function parsePreprocessorConfig(json: unknown, imageSize: number, file = 'preprocessor_config.json'): PreprocessConfig {
  const cfg = defaultPreprocess(imageSize);
  if (json === undefined || json === null) return cfg;
  if (typeof json !== 'object' || Array.isArray(json)) throw new Error(`${file}: must be a JSON object, got ${shown(json)}`);
  const r: ConfigReader = new ConfigReader(json as Record<string, unknown>, file);

  if (!r.flag('do_convert_rgb', true)) {
    r.fail('do_convert_rgb', 'is false, which genalign does not support: every image is converted to RGB as PIL\'s convert("RGB") does (for RGB images the two agree). Set it to true');
  }

  const doResize = r.flag('do_resize', true);
  cfg.resize = null;
  if (doResize) {
    cfg.resize = r.has('size') ? r.resizeRule('size') : { shortestEdge: imageSize };
    const resample = (json as Record<string, unknown>).resample;
    if (resample !== undefined && resample !== null && resample !== BICUBIC) {
      const name = typeof resample === 'number' ? PIL_FILTERS[resample] : undefined;
      r.fail('resample', `is ${shown(resample)}${name ? ` (${name})` : ''}; genalign resizes with PIL's bicubic filter only (resample 3, CLIP's). Set it to 3`);
    }
  }

  const doCrop = r.flag('do_center_crop', true);
  if (doCrop) {
    // Without crop_size the crop is the resize's size (the shortest edge squared), else the model's.
    let c: FixedSize;
    if (r.has('crop_size')) c = r.fixedSize('crop_size');
    else if (cfg.resize && 'shortestEdge' in cfg.resize) c = { width: cfg.resize.shortestEdge, height: cfg.resize.shortestEdge };
    else c = cfg.resize ?? { width: imageSize, height: imageSize };
    cfg.cropWidth = c.width;
    cfg.cropHeight = c.height;
    const rz = cfg.resize;
    if (rz && 'shortestEdge' in rz && rz.shortestEdge < Math.max(c.width, c.height)) {
      r.fail('size', `(shortest edge ${rz.shortestEdge}) is smaller than crop_size ${c.width}x${c.height}: the resized images would not fill the crop. The shortest edge must be at least ${Math.max(c.width, c.height)} (CLIP uses size = crop size)`);
    }
    if (rz && 'width' in rz && (rz.width < c.width || rz.height < c.height)) {
      r.fail('size', `(${rz.width}x${rz.height}) is smaller than crop_size ${c.width}x${c.height}: the resized images would not fill the crop`);
    }
  } else {
    const rz = cfg.resize;
    if (!rz || 'shortestEdge' in rz) {
      r.fail('do_center_crop', `is false while ${rz ? 'size resizes the shortest edge only' : 'do_resize is false'}, so images keep different sizes; the model needs every image at one size. Set do_center_crop to true, or resize to a fixed {"height": H, "width": W}`);
    }
    cfg.cropWidth = rz.width;
    cfg.cropHeight = rz.height;
  }

  if (r.flag('do_rescale', true)) {
    const f = (json as Record<string, unknown>).rescale_factor;
    if (f !== undefined && f !== null) {
      if (typeof f !== 'number' || !Number.isFinite(f) || f <= 0) r.fail('rescale_factor', `must be a positive number (CLIP: 1/255 = 0.00392156862745098), got ${shown(f)}`);
      cfg.rescaleFactor = f;
    }
  } else cfg.rescaleFactor = null;

  if (r.flag('do_normalize', true)) {
    cfg.normalize = {
      mean: r.triple('image_mean', CLIP_MEAN, Number.isFinite, 'a finite number'),
      std: r.triple('image_std', CLIP_STD, (x) => Number.isFinite(x) && x > 0, 'a positive finite number (a 0 would divide by zero)'),
    };
  } else cfg.normalize = null;
  return cfg;
}

/** Why `pre` cannot feed a model of `imageSize` (the crop must be imageSize²), or null; `file` names the preprocessor config. */
export function cropProblem(pre: PreprocessConfig, imageSize: number, file: string): string | null {
  if (pre.cropWidth === imageSize && pre.cropHeight === imageSize) return null;
  return `${file}: crop_size ${pre.cropWidth}x${pre.cropHeight} does not match the model's image_size ${imageSize} (config.json); the crop must be ${imageSize}x${imageSize}`;
}

/** HF's get_resize_output_image_size(default_to_square=False): the short edge becomes `size`, the long one int(size · long / short). */
export function resizeTarget(width: number, height: number, size: number): { width: number; height: number } {
  const short = Math.min(width, height);
  const long = Math.max(width, height);
  const newShort = size;
  const newLong = Math.floor((size * long) / short);
  return width <= height ? { width: newShort, height: newLong } : { width: newLong, height: newShort };
}

/** The size `rule` resizes a width × height image to. */
export function resizedSize(width: number, height: number, rule: ResizeRule | null): { width: number; height: number } {
  if (!rule) return { width, height };
  if ('shortestEdge' in rule) return resizeTarget(width, height, rule.shortestEdge);
  return { width: rule.width, height: rule.height };
}

export class ImageDecodeError extends Error {}

/** sharp's input options for every decode: no colour management (PIL's convert ignores ICC profiles), bounded size. */
const DECODE_OPTIONS = { failOn: 'error', ignoreIcc: true, limitInputPixels: MAX_INPUT_PIXELS } as const;

/**
 * What an image is read from: a file's path, or the bytes of an image file that lives inside
 * another file (a tar shard's member), with the name messages give it ("shard.tar:000123.real.png").
 */
export type ImageSource = string | { name: string; bytes: Uint8Array };

/** The name messages give `src`. */
export function sourceName(src: ImageSource): string {
  return typeof src === 'string' ? src : src.name;
}

/** What sharp reads `src` from. */
function sharpInput(src: ImageSource): string | Buffer {
  return typeof src === 'string' ? src : Buffer.from(src.bytes.buffer, src.bytes.byteOffset, src.bytes.byteLength);
}

/**
 * libvips keeps one error buffer for all its threads. When several decodes fail at the same
 * time, one error can carry all their messages and the others only "Unknown error". So the
 * message of a failed decode is taken from a second decode of the file alone: these retries
 * run one at a time (only failed files pay for them, and bad files are rare).
 */
let retryChain: Promise<unknown> = Promise.resolve();

/** Decodes `path` once more; its error message, or null if it decoded this time. */
function decodeAgain(path: ImageSource): Promise<string | null> {
  return sharp(sharpInput(path), DECODE_OPTIONS)
    .raw()
    .toBuffer()
    .then(
      () => null,
      (e: unknown) => (e instanceof Error ? e.message : String(e)),
    );
}

/** Retries per failed file: the retries run one at a time, but other files' first decodes may still overlap them. */
const REASON_ATTEMPTS = 5;

/**
 * The decoder's own message for `path`, without repeats; `first` is the error the first attempt
 * gave (which may be another file's, or "Unknown error"). Retries run until one gives a clean
 * message (one line, not "Unknown error"), at most REASON_ATTEMPTS; the first clean retry
 * message wins, else the most informative message seen.
 */
async function decoderMessage(path: ImageSource, first: unknown): Promise<string> {
  // "Unknown error", and a prefix with nothing after it ("Input file has corrupt header:"),
  // are what a decode reads when another thread emptied the shared buffer: no reason at all.
  const lines = (m: string): string[] => [...new Set(m.split('\n').map((l) => l.trim()).filter((l) => l !== '' && l !== 'Unknown error' && !l.endsWith(':')))];
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
export async function imageDecodeError(path: ImageSource, e: unknown): Promise<ImageDecodeError> {
  if (e instanceof ImageDecodeError) return e;
  if (e instanceof TypeError || e instanceof RangeError) throw e;
  return new ImageDecodeError(`${sourceName(path)}: cannot decode image (${await decoderMessage(path, e)})`);
}

/** The reason of an ImageDecodeError without its leading "<path>: " (for messages that name the path already). */
export function decodeReason(path: string, e: Error): string {
  return e.message.startsWith(`${path}: `) ? e.message.slice(path.length + 2) : e.message;
}

/**
 * Decodes and preprocesses one image file into CHW float32 [3, cropH, cropW]. Every failure
 * that is the file's fault (unreadable, corrupt, truncated, too large) is an ImageDecodeError
 * whose message starts with the path and carries the reason.
 */
export async function preprocessImage(path: ImageSource, cfg: PreprocessConfig): Promise<Float32Array> {
  return preprocessDecoded(await decodeFile(path), cfg);
}

/**
 * The 8-bit RGB pixels of one preprocessed image before rescaling and normalisation: HWC,
 * cropHeight × cropWidth × 3 bytes (what HF's pipeline holds after resize and center crop).
 */
export async function preprocessedPixels(path: string, cfg: PreprocessConfig): Promise<Uint8Array> {
  return resizeAndCrop(await decodeFile(path), cfg);
}

/** decodeRgbSource with every failure that is the file's fault as an ImageDecodeError. */
async function decodeFile(path: ImageSource): Promise<Pixels> {
  try {
    return await decodeRgbSource(path);
  } catch (e) {
    throw await imageDecodeError(path, e);
  }
}

/**
 * preprocessImage's steps after the decode: resize, crop, rescale and normalise the pixels that
 * decodeRgbSource gave. preprocessImage(path) is preprocessDecoded(decodeRgbSource(path)) with a
 * failed decode turned into an ImageDecodeError; the worker pool (io/preprocess-pool.ts) runs the
 * two steps in a worker thread and builds that error on the main thread.
 */
export function preprocessDecoded(img: Pixels, cfg: PreprocessConfig): Float32Array<ArrayBuffer> {
  return toChw(resizeAndCrop(img, cfg), cfg);
}

/** HWC bytes of the crop window of `img` resized by cfg.resize. */
function resizeAndCrop(img: Pixels, cfg: PreprocessConfig): Uint8Array {
  const size = resizedSize(img.width, img.height, cfg.resize);
  // HF's center crop: top = (h − crop) // 2, negative (zero padding) when the image is smaller.
  const window = {
    left: Math.floor((size.width - cfg.cropWidth) / 2),
    top: Math.floor((size.height - cfg.cropHeight) / 2),
    width: cfg.cropWidth,
    height: cfg.cropHeight,
  };
  return resizeWindowRgb(img, size.width, size.height, window);
}

/**
 * Decodes `path` to 8-bit pixels without any resampling (so libvips never premultiplies alpha)
 * and without applying an embedded ICC profile (PIL's convert("RGB") applies none). libvips
 * turns grey into RGB by repeating it, 16-bit colour samples into 8-bit by their high byte and
 * palette images into RGB(A), as PIL's convert does; alpha stays and is ignored by the
 * resampler. CMYK is converted here with PIL's formula (libvips would go through an ICC
 * profile). One known difference: a 16-bit grey PNG also gets its high byte here, while PIL 9.4
 * opens it as 32-bit integers and convert("RGB") saturates every value above 255 to white.
 * Failures are sharp's errors as they are, or an ImageDecodeError for an image too large or
 * without a size (see imageDecodeError for turning the others into messages).
 */
export async function decodeRgbSource(src: ImageSource): Promise<Pixels> {
  const path = sourceName(src);
  const img = sharp(sharpInput(src), DECODE_OPTIONS);
  let meta: sharp.Metadata;
  try {
    meta = await img.metadata();
  } catch (e) {
    throw await tooLargeError(src, e);
  }
  if (!meta.width || !meta.height) throw new ImageDecodeError(`${path}: image has no size`);
  if (meta.space === 'cmyk') {
    const { data, info } = await img.pipelineColourspace('cmyk').toColourspace('cmyk').raw().toBuffer({ resolveWithObject: true });
    if (info.channels !== 4) throw new ImageDecodeError(`${path}: CMYK image decoded to ${info.channels} channels, expected 4`);
    return { width: info.width, height: info.height, channels: 3, data: cmykToRgb(data) };
  }
  const { data, info } = await img.raw().toBuffer({ resolveWithObject: true });
  const channels = info.channels;
  if (channels < 1 || channels > 4 || data.length !== info.width * info.height * channels) {
    throw new ImageDecodeError(`${path}: decoded ${data.length} bytes for ${info.width}x${info.height} with ${channels} channels`);
  }
  return { width: info.width, height: info.height, channels: channels as Pixels['channels'], data };
}

/** sharp's "exceeds pixel limit" as an ImageDecodeError that names the file and its size; other errors pass through. */
async function tooLargeError(src: ImageSource, e: unknown): Promise<unknown> {
  if (!(e instanceof Error) || !/exceeds pixel limit/i.test(e.message)) return e;
  const path = sourceName(src);
  const size = await sharp(sharpInput(src), { limitInputPixels: false })
    .metadata()
    .then(
      (m) => ` is ${m.width}x${m.height} = ${((m.width ?? 0) * (m.height ?? 0)).toLocaleString('en-US')} pixels, which`,
      () => '',
    );
  return new ImageDecodeError(
    `${path}: the input image${size} exceeds genalign's decoding limit of ${MAX_INPUT_PIXELS.toLocaleString('en-US')} pixels (16383x16383); downscale the file`,
  );
}

/** PIL's CMYK → RGB: each of R, G, B is (255 − K) − round(C · (255 − K) / 255) for its ink C, M or Y. */
function cmykToRgb(cmyk: Uint8Array): Uint8Array {
  const n = cmyk.length >> 2;
  const rgb = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    const paper = 255 - cmyk[i * 4 + 3];
    for (let c = 0; c < 3; c++) rgb[i * 3 + c] = paper - mulDiv255(cmyk[i * 4 + c], paper);
  }
  return rgb;
}

/** round(a · b / 255) for a, b in 0..255, in integers. */
function mulDiv255(a: number, b: number): number {
  const t = a * b + 128;
  return ((t >> 8) + t) >> 8;
}

/**
 * Float value of each (channel, byte), computed as HF does in float32: x = f32(byte · rescale)
 * (the product in float64), then f32(f32(x − f32(mean)) / f32(std)). Each float32 operation is
 * the float64 result rounded once to float32, which is the correctly rounded float32 result.
 */
export function valueTable(cfg: PreprocessConfig): Float32Array {
  const table = new Float32Array(3 * 256);
  const f = Math.fround;
  for (let c = 0; c < 3; c++) {
    for (let v = 0; v < 256; v++) {
      let x = cfg.rescaleFactor === null ? v : f(v * cfg.rescaleFactor);
      if (cfg.normalize) x = f(f(x - f(cfg.normalize.mean[c])) / f(cfg.normalize.std[c]));
      table[c * 256 + v] = x;
    }
  }
  return table;
}

/** HWC bytes → CHW float32 through valueTable. */
function toChw(rgb: Uint8Array, cfg: PreprocessConfig): Float32Array<ArrayBuffer> {
  const table = valueTable(cfg);
  const plane = cfg.cropWidth * cfg.cropHeight;
  const out = new Float32Array(3 * plane);
  for (let c = 0; c < 3; c++) {
    const base = c * 256;
    const o = c * plane;
    for (let i = 0; i < plane; i++) out[o + i] = table[base + rgb[i * 3 + c]];
  }
  return out;
}
