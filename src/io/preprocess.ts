// CLIPImageProcessor's preprocessing after the decode, with no dependency on how images are
// decoded (sharp in Node: io/image.ts; createImageBitmap in the browser bundle): the
// preprocessor_config.json rules, the PIL-exact resize of the crop window (io/resample.ts), the
// center crop and the float32 rescale and normalisation, laid out CHW.
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

/**
 * What an image is read from: a file's path, or the bytes of an image file that lives inside
 * another file (a tar shard's member), with the name messages give it ("shard.tar:000123.real.png").
 */
export type ImageSource = string | { name: string; bytes: Uint8Array };

/** The name messages give `src`. */
export function sourceName(src: ImageSource): string {
  return typeof src === 'string' ? src : src.name;
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
export function resizeAndCrop(img: Pixels, cfg: PreprocessConfig): Uint8Array {
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
