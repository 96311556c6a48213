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
// The steps after the decode live in io/preprocess.ts (shared with the browser bundle, which
// decodes with createImageBitmap); this module adds sharp's decode and re-exports them.
//
// preprocessor_config.json is read by parsePreprocessorConfig, which refuses, naming the file
// and the field, every value that genalign cannot reproduce or that cannot be meant.
import sharp from 'sharp';
import type { Pixels } from './resample.ts';
import { ImageDecodeError, MAX_INPUT_PIXELS, preprocessDecoded, resizeAndCrop, sourceName, type ImageSource, type PreprocessConfig } from './preprocess.ts';

export * from './preprocess.ts';

/** sharp's input options for every decode: no colour management (PIL's convert ignores ICC profiles), bounded size. */
const DECODE_OPTIONS = { failOn: 'error', ignoreIcc: true, limitInputPixels: MAX_INPUT_PIXELS } as const;

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
