// genalign in the browser: the entry point of dist/browser/genalign.js (scripts/build.mjs).
// The same engine (gpu/, tensor/, ops/, nn/) on navigator.gpu, HF CLIP checkpoints and PEFT
// adapters fetched from URLs, and images decoded by the browser and preprocessed by genalign's
// own CLIPImageProcessor code (io/preprocess.ts), so the embeddings are the ones `npm run embed`
// writes in Node for the same files:
//
//   import { createDevice, loadModel, loadAdapter, embedImages } from './genalign.js';
//   await createDevice();
//   const model = await loadModel('https://host/clip/');
//   const lora = await loadAdapter('https://host/adapter/', model);
//   const { data, shape } = await embedImages(model, [url, blob], { lora });
//   const texts = await embedTexts(model, ['a photo of a dog']);   // a CLIPModel with its tokenizer files
//
// Checkpoints are read in ranges (the header, then only the tensors used) when the server
// supports Range requests, as static hosts and CDNs do; else whole.
//
// Decoding: createImageBitmap(blob, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' })
// drawn on an OffscreenCanvas and read back as RGBA bytes (alpha ignored, as in Node). With no
// colour conversion and no premultiplication, PNG pixels are the file's bytes, as sharp gives
// them; JPEG decoders may differ from libjpeg-turbo by a level here and there.
// Typechecked with the DOM library by tsconfig.browser.json (npm run typecheck runs both).
import { createDevice as createGpuDevice, type Device } from '../gpu/device.ts';
import { parseHfConfig, parseHfTextConfig, isTextOnlyConfig, type ClipVisionConfig } from '../nn/config.ts';
import { ClipTextModel, expectedTextShapes } from '../nn/text.ts';
import { ClipTokenizer, tokenizerData, type TokenizerFiles } from '../io/tokenizer-core.ts';
import { embedTexts as embedTextRows } from '../train/text-embedding.ts';
import { ClipVisionModel, expectedShapes } from '../nn/vit.ts';
import type { LoraAdapter } from '../nn/lora.ts';
import { embedPixels } from '../nn/embed-pixels.ts';
import type { DType } from '../tensor/tensor.ts';
import { SafetensorsBytes, SafetensorsReader, fail } from '../io/safetensors-core.ts';
import { uploadCheckpointTensors } from '../io/checkpoint-tensors.ts';
import { adapterFromSafetensors, loraSettings } from '../io/peft-core.ts';
import { cropProblem, parsePreprocessorConfig, preprocessDecoded, type PreprocessConfig } from '../io/preprocess.ts';
import type { Pixels } from '../io/resample.ts';

export type { Device } from '../gpu/device.ts';
export type { PreprocessConfig } from '../io/preprocess.ts';

let current: Device | null = null;

/** Opens the WebGPU device (navigator.gpu) the other functions use; returns it (adapter name in `device.adapter.name`). */
export async function createDevice(): Promise<Device> {
  current ??= await createGpuDevice();
  return current;
}

function device(): Device {
  if (!current) throw new Error('genalign: call `await createDevice()` first');
  return current;
}

/** A CLIP vision tower loaded from a URL, with its preprocessing. */
export interface BrowserModel {
  model: ClipVisionModel;
  config: ClipVisionConfig;
  preprocess: PreprocessConfig;
  /** The base URL it was loaded from. */
  url: string;
  /** The text tower and its tokenizer, when the checkpoint is a CLIPModel served with its tokenizer files. */
  text: { model: ClipTextModel; tokenizer: ClipTokenizer } | null;
  dispose(): void;
}

const TOKENIZER_FILES = ['tokenizer.json', 'vocab.json', 'merges.txt', 'tokenizer_config.json', 'special_tokens_map.json'];

/** The tokenizer files of `dir` (each optional), or null when there is none. */
async function readTokenizer(dir: Folder): Promise<ClipTokenizer | null> {
  const texts = new Map<string, string>();
  await Promise.all(
    TOKENIZER_FILES.map(async (f) => {
      const t = await dir.text(f, `the tokenizer file ${f}`, true);
      if (t !== null) texts.set(f, t);
    }),
  );
  if (!texts.has('tokenizer.json') && !texts.has('vocab.json')) return null;
  const files: TokenizerFiles = {
    path: (name) => dir.path(name),
    exists: (name) => texts.has(name),
    read: (name, expected) => {
      const t = texts.get(name);
      if (t === undefined) throw new Error(`${dir.path(name)}: not found; expected ${expected}`);
      return t;
    },
  };
  return new ClipTokenizer(tokenizerData(files, dir.where));
}

/**
 * A model or adapter folder: a URL it is served at, or the files a user picked (an
 * `<input type=file webkitdirectory>`'s FileList, a File[] from a drop, or a name → Blob map;
 * files are found by their base name).
 */
export type FolderSource = string | FileList | readonly File[] | ReadonlyMap<string, Blob>;

type Reader = SafetensorsReader & { fetchTensors?(names: Iterable<string>): Promise<void> };

interface Folder {
  /** The folder in messages: its URL, or "the picked folder <name>". */
  where: string;
  path(file: string): string;
  text(file: string, what: string, optional?: boolean): Promise<string | null>;
  safetensors(file: string, what: string): Promise<Reader>;
}

function folder(src: FolderSource): Folder {
  if (typeof src === 'string') {
    return {
      where: absolute(src),
      path: (f) => join(src, f),
      text: async (f, what, optional = false) => {
        const res = await get(join(src, f), what, optional);
        return res ? res.text() : null;
      },
      safetensors: (f, what) => getSafetensors(join(src, f), what),
    };
  }
  const blobs = new Map<string, Blob>();
  let top = '';
  const entries: [string, Blob][] = src instanceof Map ? [...(src as ReadonlyMap<string, Blob>)] : [...(src as Iterable<File>)].map((f) => [(f as File & { webkitRelativePath?: string }).webkitRelativePath || f.name, f]);
  for (const [name, blob] of entries) {
    const parts = name.split('/');
    top ||= parts.length > 1 ? parts[0] : '';
    blobs.set(parts[parts.length - 1], blob);
  }
  const where = `the picked folder${top ? ` ${top}` : ''}`;
  const path = (f: string): string => `${where}: ${f}`;
  return {
    where,
    path,
    text: async (f, what, optional = false) => {
      const b = blobs.get(f);
      if (!b) {
        if (optional) return null;
        throw new Error(`${where} has no ${f} (${what})`);
      }
      return b.text();
    },
    safetensors: async (f, what) => {
      const b = blobs.get(f);
      if (!b) throw new Error(`${where} has no ${f} (${what})`);
      return new SafetensorsBytes(path(f), new Uint8Array(await b.arrayBuffer()));
    },
  };
}

async function readJson(dir: Folder, file: string, what: string, optional = false): Promise<unknown> {
  const t = await dir.text(file, what, optional);
  if (t === null) return null;
  try {
    return JSON.parse(t) as unknown;
  } catch (e) {
    throw new Error(`${dir.path(file)}: ${what} is not valid JSON (${(e as Error).message})`);
  }
}

/** `url` resolved against the page (so messages name the whole URL). */
function absolute(url: string): string {
  try {
    return new URL(url, (globalThis as { location?: { href: string } }).location?.href).href;
  } catch {
    return url;
  }
}

function join(base: string, file: string): string {
  const b = absolute(base);
  return b.endsWith('/') ? `${b}${file}` : `${b}/${file}`;
}

/** fetch with errors that name the URL; null for 404 when `optional`. */
async function get(url: string, what: string, optional = false): Promise<Response | null> {
  let res: Response;
  try {
    res = await fetch(url);
  } catch (e) {
    throw new Error(`${url}: cannot fetch ${what} (${(e as Error).message})`);
  }
  if (res.status === 404 && optional) return null;
  if (!res.ok) throw new Error(`${url}: cannot fetch ${what} (HTTP ${res.status} ${res.statusText})`);
  return res;
}

/**
 * A safetensors file read over HTTP in ranges: the header first (two Range requests), then only
 * the tensors asked for (fetchTensors: adjacent tensors in one request of at most RANGE_BYTES),
 * so a CLIPModel's text tower is never downloaded for a vision-only use and no single buffer
 * holds the whole file. Reads of bytes not fetched are an error (a programming error here).
 */
class RangedSafetensors extends SafetensorsReader {
  private readonly chunks: { offset: number; bytes: Uint8Array }[] = [];

  constructor(url: string, fileSize: number, head: Uint8Array) {
    super(url, fileSize);
    this.chunks.push({ offset: 0, bytes: head });
    this.parseHeader();
  }

  protected readAt(offset: number, length: number): Uint8Array {
    for (const c of this.chunks) {
      if (offset >= c.offset && offset + length <= c.offset + c.bytes.byteLength) return c.bytes.subarray(offset - c.offset, offset - c.offset + length);
    }
    fail(this.path, `bytes ${offset}..${offset + length} were not fetched`);
  }

  /** Fetches the bytes of the tensors `names` (those this file has). */
  async fetchTensors(names: Iterable<string>): Promise<void> {
    const ranges = [...new Set(names)].filter((n) => this.has(n)).map((n) => this.info(n)).sort((a, b) => a.begin - b.begin);
    const groups: { begin: number; end: number }[] = [];
    for (const t of ranges) {
      const last = groups[groups.length - 1];
      if (last && t.begin === last.end && t.end - last.begin <= RANGE_BYTES) last.end = t.end;
      else groups.push({ begin: t.begin, end: t.end });
    }
    await Promise.all(groups.filter((g) => g.end > g.begin).map(async (g) => this.chunks.push({ offset: g.begin, bytes: await fetchRange(this.path, g.begin, g.end, 'tensor data') })));
  }
}

/** Bytes per Range request when adjacent tensors are fetched together. */
const RANGE_BYTES = 64 * 2 ** 20;

/** Bytes [begin, end) of `url` by a Range request (206 expected). */
async function fetchRange(url: string, begin: number, end: number, what: string): Promise<Uint8Array> {
  let res: Response;
  try {
    res = await fetch(url, { headers: { Range: `bytes=${begin}-${end - 1}` } });
  } catch (e) {
    throw new Error(`${url}: cannot fetch ${what} (${(e as Error).message})`);
  }
  if (res.status !== 206) throw new Error(`${url}: the server answered HTTP ${res.status} to a Range request for bytes ${begin}-${end - 1} (${what})`);
  const bytes = new Uint8Array(await res.arrayBuffer());
  if (bytes.byteLength !== end - begin) throw new Error(`${url}: ${bytes.byteLength} bytes came for ${what} (bytes ${begin}-${end - 1}); the file is cut short or changed meanwhile`);
  return bytes;
}

/**
 * Opens a safetensors file at `url`: in ranges when the server honours Range requests
 * (RangedSafetensors; the caller fetches the tensors it needs), else whole (a server without
 * Range support sends the file with 200). The bytes stay bytes: only the header is decoded.
 */
async function getSafetensors(url: string, what: string): Promise<SafetensorsReader & { fetchTensors?(names: Iterable<string>): Promise<void> }> {
  let res: Response;
  try {
    res = await fetch(url, { headers: { Range: 'bytes=0-7' } });
  } catch (e) {
    throw new Error(`${url}: cannot fetch ${what} (${(e as Error).message})`);
  }
  if (res.status === 200) return new SafetensorsBytes(url, new Uint8Array(await res.arrayBuffer()));
  if (res.status !== 206) throw new Error(`${url}: cannot fetch ${what} (HTTP ${res.status} ${res.statusText})`);
  const total = Number(/\/(\d+)$/.exec(res.headers.get('content-range') ?? '')?.[1]);
  const first = new Uint8Array(await res.arrayBuffer());
  if (!(total >= 8) || first.byteLength !== 8) return new SafetensorsBytes(url, first); // fails with the format's own message (too short)
  const n = Number(new DataView(first.buffer, first.byteOffset, 8).getBigUint64(0, true));
  if (n > 100 * 2 ** 20 || 8 + n > total) return new SafetensorsBytes(url, first); // the header check names the problem
  const head = new Uint8Array(8 + n);
  head.set(first, 0);
  head.set(await fetchRange(url, 8, 8 + n, `${what}: its header`), 8);
  return new RangedSafetensors(url, total, head);
}

/**
 * Loads the vision tower of an HF CLIP checkpoint folder, served at a URL or picked by the user
 * (FolderSource): config.json,
 * model.safetensors or model.safetensors.index.json with its shards, and preprocessor_config.json
 * when present. `dtype` 'f16' needs the adapter's shader-f16.
 */
export async function loadModel(src: FolderSource, opts: { dtype?: DType } = {}): Promise<BrowserModel> {
  const dev = device();
  const dir = folder(src);
  const dtype = opts.dtype ?? 'f32';
  if (dtype === 'f16' && !dev.hasFeature('shader-f16')) throw new Error(`loadModel ${dir.where}: dtype f16 needs the adapter feature 'shader-f16', which ${dev.adapter.name || 'this adapter'} does not offer; use dtype 'f32'`);
  const cfgPath = dir.path('config.json');
  const json = await readJson(dir, 'config.json', "the model's config.json");
  if (isTextOnlyConfig(json)) throw new Error(`${cfgPath}: this is a CLIP text config; it has no vision tower`);
  const config = parseHfConfig(json, cfgPath);
  const indexPath = dir.path('model.safetensors.index.json');
  const index = (await readJson(dir, 'model.safetensors.index.json', 'the sharded checkpoint index', true)) as { weight_map?: Record<string, string> } | null;
  const files = index ? [...new Set(Object.values(index.weight_map ?? {}))] : ['model.safetensors'];
  if (index && !files.length) throw new Error(`${indexPath}: missing "weight_map"`);
  const stores = await Promise.all(files.map((f) => dir.safetensors(f, index ? `a checkpoint shard named in ${indexPath}` : "the model's weights (model.safetensors)")));
  // A CLIPModel's text tower comes along when its tokenizer files are there too.
  const tokenizer = (json as { text_config?: unknown }).text_config ? await readTokenizer(dir) : null;
  const textConfig = tokenizer ? parseHfTextConfig(json, cfgPath) : null;
  const expected = new Map([...expectedShapes(config), ...(textConfig ? expectedTextShapes(textConfig) : [])]);
  await Promise.all(stores.map((st) => st.fetchTensors?.(expected.keys())));
  const { weights } = uploadCheckpointTensors(dir.where, stores, expected, dev, dtype);
  const visionWeights = new Map([...weights].filter(([k]) => !k.startsWith('text_model.') && k !== 'text_projection.weight'));
  const textWeights = new Map([...weights].filter(([k]) => !visionWeights.has(k)));
  const model = ClipVisionModel.fromWeights(config, visionWeights, dev, dtype);
  const text = textConfig && tokenizer ? { model: ClipTextModel.fromWeights(textConfig, textWeights, dev, dtype), tokenizer } : null;
  try {
    const prePath = dir.path('preprocessor_config.json');
    const preJson = await readJson(dir, 'preprocessor_config.json', 'preprocessor_config.json', true);
    const preprocess = parsePreprocessorConfig(preJson, config.imageSize, prePath);
    const problem = cropProblem(preprocess, config.imageSize, prePath);
    if (problem) throw new Error(`${problem}.`);
    return {
      model, config, preprocess, url: dir.where, text,
      dispose: () => {
        model.dispose();
        text?.model.dispose();
      },
    };
  } catch (e) {
    model.dispose();
    text?.model.dispose();
    throw e;
  }
}

/** Loads a PEFT LoRA adapter folder (adapter_config.json, adapter_model.safetensors), served at a URL or picked, for `model`. */
export async function loadAdapter(src: FolderSource, model: BrowserModel): Promise<LoraAdapter> {
  const dir = folder(src);
  const { rank, alpha } = loraSettings(await readJson(dir, 'adapter_config.json', "the adapter's adapter_config.json"), dir.path('adapter_config.json'));
  const st = await dir.safetensors('adapter_model.safetensors', "the adapter's weights (adapter_model.safetensors)");
  await st.fetchTensors?.(st.tensors.keys());
  return adapterFromSafetensors(st, model.config, rank, alpha, device());
}

/** An image to embed: a URL, or the file's bytes as a Blob (a File from a picker or a drop). */
export type ImageInput = string | Blob;

/** The RGBA pixels of an image file, decoded by the browser without colour conversion or premultiplication. */
export async function decodeImage(input: ImageInput): Promise<Pixels> {
  const name = typeof input === 'string' ? absolute(input) : ((input as File).name ?? 'a Blob');
  const blob = typeof input === 'string' ? await (await get(name, 'an image'))!.blob() : input;
  let bitmap: ImageBitmap;
  try {
    bitmap = await createImageBitmap(blob, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  } catch (e) {
    throw new Error(`${name}: cannot decode image (${(e as Error).message})`);
  }
  try {
    const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
    const ctx = canvas.getContext('2d', { colorSpace: 'srgb', willReadFrequently: true } as CanvasRenderingContext2DSettings);
    if (!ctx) throw new Error(`${name}: no 2d canvas context to read the decoded pixels`);
    ctx.drawImage(bitmap, 0, 0);
    const data = ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
    return { width: bitmap.width, height: bitmap.height, channels: 4, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
  } finally {
    bitmap.close();
  }
}

/**
 * Embeds images with the model (the teacher) or, with `lora`, the student: Float32Array
 * [N, projection_dim], the projection output as `npm run embed` writes it (not normalised).
 */
export async function embedImages(model: BrowserModel, images: readonly ImageInput[], opts: { lora?: LoraAdapter; batch?: number } = {}): Promise<{ data: Float32Array; shape: [number, number] }> {
  const dev = device();
  const batch = opts.batch ?? 16;
  const D = model.config.projectionDim;
  const out = new Float32Array(images.length * D);
  for (let i = 0; i < images.length; i += batch) {
    const pixels = await Promise.all(images.slice(i, i + batch).map(async (img) => preprocessDecoded(await decodeImage(img), model.preprocess)));
    out.set(await embedPixels(dev, model.model, opts.lora, pixels), i * D);
  }
  return { data: out, shape: [images.length, D] };
}

/**
 * Embeds texts with the model's text tower (a CLIPModel loaded with its tokenizer files):
 * Float32Array [N, projection_dim], HF's text_embeds (not normalised), as `npm run embed -- --texts` writes them.
 */
export async function embedTexts(model: BrowserModel, texts: readonly string[], opts: { batch?: number } = {}): Promise<{ data: Float32Array; shape: [number, number] }> {
  if (!model.text) throw new Error(`${model.url}: no text tower loaded: embedTexts needs a CLIPModel checkpoint (config.json with text_config) served with its tokenizer files (tokenizer.json, or vocab.json + merges.txt)`);
  const data = await embedTextRows(device(), model.text.model, model.text.tokenizer, texts, opts.batch ?? 32, { model: `the text tower of ${model.url}` });
  return { data, shape: [texts.length, model.text.model.cfg.projectionDim] };
}
