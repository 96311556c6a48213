// A small synthetic paired dataset for trying `npm run train` without downloading anything.
//
// "Real" images are procedural scenes (a background — gradient, radial, stripes, checker or
// smooth noise — with one to three coloured shapes), all different. Each "generated" image
// re-renders the same scene description with small jitter (shapes move and resize a little,
// as a diffusion model re-interprets a caption) and then applies one SYSTEMATIC rendering shift:
// gamma, a strong warm colour cast, higher saturation, a soft blur, a checkerboard/ringing texture
// and JPEG blockiness. That consistent domain gap is what a GMAIL student learns to bridge.
// They are NOT diffusion outputs; README.txt in the dataset says so and how to use real pairs.
//
// Build protocol: demo.json is written FIRST with "complete": false, then the images (temp file
// + rename each), pairs.jsonl and README.txt, and demo.json LAST with "complete": true. A
// directory whose demo.json is complete and whose parameters match is reused as it is; an
// interrupted build (complete: false) is rebuilt, with a log line saying why. demo.json also
// marks the directory as ours: a non-empty directory without it is never touched, and a
// rebuild refuses to start while real/ or generated/ hold files a build did not write (a user's
// own images there would otherwise be deleted).
import { copyFileSync, existsSync, linkSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { rename, unlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import sharp from 'sharp';
import { writeFileAtomic } from '../platform/atomic-file.ts';
import { listWithRest, MANIFEST_NAME } from './dataset.ts';
import { mulberry32 } from './loader.ts';

export interface DemoDatasetOptions {
  /** Number of real images (pairs). Default 256. */
  count?: number;
  /** Side of every image in pixels. Default 64. */
  size?: number;
  seed?: number;
  /** Generated images per real image (different jitter each). Default 2. */
  variants?: number;
  /** Receives the line saying why an existing demo dataset is rebuilt. Default: stderr. */
  log?: (line: string) => void;
}

export interface DemoDatasetResult {
  dir: string;
  reused: boolean;
  count: number;
}

const STAMP = 'demo.json';
const FORMAT = 3;
const JPEG_QUALITY = 45;

interface Stamp {
  format: number;
  count: number;
  size: number;
  seed: number;
  variants: number;
  complete: boolean;
}

type Rgb = [number, number, number];

const PALETTE: { name: string; rgb: Rgb }[] = [
  { name: 'red', rgb: [0.86, 0.12, 0.12] },
  { name: 'orange', rgb: [0.95, 0.55, 0.1] },
  { name: 'yellow', rgb: [0.95, 0.88, 0.15] },
  { name: 'green', rgb: [0.15, 0.7, 0.2] },
  { name: 'teal', rgb: [0.1, 0.6, 0.6] },
  { name: 'blue', rgb: [0.15, 0.3, 0.88] },
  { name: 'purple', rgb: [0.55, 0.2, 0.75] },
  { name: 'pink', rgb: [0.95, 0.5, 0.7] },
  { name: 'brown', rgb: [0.5, 0.32, 0.15] },
  { name: 'white', rgb: [0.95, 0.95, 0.95] },
  { name: 'black', rgb: [0.08, 0.08, 0.08] },
  { name: 'gray', rgb: [0.5, 0.5, 0.5] },
];

const SHAPES = ['circle', 'ring', 'square', 'diamond', 'triangle', 'bar'] as const;
const BACKGROUNDS = ['gradient', 'radial gradient', 'stripes', 'checkerboard', 'cloudy texture'] as const;

interface Shape {
  kind: (typeof SHAPES)[number];
  colour: number;
  rgb: Rgb;
  cx: number;
  cy: number;
  r: number;
  angle: number;
}

interface Scene {
  bg: (typeof BACKGROUNDS)[number];
  c1: number;
  c2: number;
  rgb1: Rgb;
  rgb2: Rgb;
  angle: number;
  freq: number;
  /** 5×5 grid of values for the cloudy texture. */
  noise: number[];
  shapes: Shape[];
}

function jitterRgb(rgb: Rgb, rand: () => number, amount: number): Rgb {
  return rgb.map((v) => Math.min(1, Math.max(0, v + (rand() * 2 - 1) * amount))) as Rgb;
}

function randomScene(rand: () => number): Scene {
  const pick = (n: number): number => Math.floor(rand() * n);
  const c1 = pick(PALETTE.length);
  let c2 = pick(PALETTE.length);
  if (c2 === c1) c2 = (c1 + 1 + pick(PALETTE.length - 1)) % PALETTE.length;
  const nShapes = 1 + pick(3);
  const shapes: Shape[] = [];
  for (let k = 0; k < nShapes; k++) {
    let colour = pick(PALETTE.length);
    if (colour === c1) colour = (colour + 3) % PALETTE.length;
    shapes.push({
      kind: SHAPES[pick(SHAPES.length)],
      colour,
      rgb: jitterRgb(PALETTE[colour].rgb, rand, 0.06),
      cx: 0.2 + 0.6 * rand(),
      cy: 0.2 + 0.6 * rand(),
      r: 0.1 + 0.17 * rand(),
      angle: rand() * Math.PI,
    });
  }
  // Largest first, so small shapes are drawn on top and stay visible.
  shapes.sort((a, b) => b.r - a.r);
  return {
    bg: BACKGROUNDS[pick(BACKGROUNDS.length)],
    c1,
    c2,
    rgb1: jitterRgb(PALETTE[c1].rgb, rand, 0.06),
    rgb2: jitterRgb(PALETTE[c2].rgb, rand, 0.06),
    angle: rand() * 2 * Math.PI,
    freq: 2 + 4 * rand(),
    noise: Array.from({ length: 25 }, rand),
    shapes,
  };
}

/** The same scene as a generator might draw it again from its caption: small moves and resizes. */
function jitterScene(s: Scene, rand: () => number): Scene {
  const n = (a: number): number => (rand() * 2 - 1) * a;
  return {
    ...s,
    rgb1: jitterRgb(s.rgb1, rand, 0.03),
    rgb2: jitterRgb(s.rgb2, rand, 0.03),
    angle: s.angle + n(0.15),
    shapes: s.shapes.map((sh) => ({ ...sh, cx: sh.cx + n(0.03), cy: sh.cy + n(0.03), r: sh.r * (1 + n(0.08)), angle: sh.angle + n(0.15), rgb: jitterRgb(sh.rgb, rand, 0.03) })),
  };
}

/** What the scene shows, largest shape first, then the background (no index: only the picture's content). */
function caption(s: Scene): string {
  const size = (r: number): string => (r < 0.15 ? 'small ' : r > 0.23 ? 'large ' : '');
  const things = s.shapes.map((sh) => `${size(sh.r)}${PALETTE[sh.colour].name} ${sh.kind}`);
  return `${things.join(' and ')} on ${PALETTE[s.c1].name} and ${PALETTE[s.c2].name} ${s.bg}`;
}

/** The scene's class: the kind of its largest shape (shapes are sorted largest first). */
function label(s: Scene): string {
  return s.shapes[0].kind;
}

/** Background mix weight t in [0, 1] at (u, v); cos/sin of the scene angle are passed in. */
function background(s: Scene, du: number, dv: number, u: number, v: number): number {
  switch (s.bg) {
    case 'gradient':
      return Math.min(1, Math.max(0, 0.5 + (u - 0.5) * du + (v - 0.5) * dv));
    case 'radial gradient':
      return Math.min(1, Math.hypot(u - 0.5 - 0.2 * du, v - 0.5 - 0.2 * dv) * 1.6);
    case 'stripes':
      return 0.5 + 0.5 * Math.sin(2 * Math.PI * s.freq * (u * du + v * dv));
    case 'checkerboard':
      return (Math.floor(u * s.freq) + Math.floor(v * s.freq)) & 1 ? 0.85 : 0.15;
    case 'cloudy texture': {
      // Bilinear interpolation of a 5×5 grid of random values.
      const x = u * 4;
      const y = v * 4;
      const x0 = Math.min(3, Math.floor(x));
      const y0 = Math.min(3, Math.floor(y));
      const fx = x - x0;
      const fy = y - y0;
      const g = s.noise;
      const top = g[y0 * 5 + x0] * (1 - fx) + g[y0 * 5 + x0 + 1] * fx;
      const bottom = g[y0 * 5 + 5 + x0] * (1 - fx) + g[y0 * 5 + 5 + x0 + 1] * fx;
      return top * (1 - fy) + bottom * fy;
    }
  }
}

/** Whether (x, y), in the shape's own frame (centre at 0, rotated), is inside it. */
function inside(kind: Shape['kind'], r: number, x: number, y: number): boolean {
  switch (kind) {
    case 'circle':
      return x * x + y * y < r * r;
    case 'ring': {
      const d = x * x + y * y;
      return d < r * r && d > 0.36 * r * r;
    }
    case 'square':
      return Math.abs(x) < r * 0.8 && Math.abs(y) < r * 0.8;
    case 'diamond':
      return Math.abs(x) + Math.abs(y) < r;
    case 'bar':
      return Math.abs(x) < r && Math.abs(y) < r * 0.3;
    case 'triangle':
      // Equilateral, apex up in the shape's frame: three half-planes.
      return y < r * 0.5 && y > -r + Math.sqrt(3) * Math.abs(x);
  }
}

/** Renders RGB floats in [0, 1], HWC: background sampled at the pixel centre, shapes 2×2 supersampled. */
function render(s: Scene, size: number): Float32Array {
  const out = new Float32Array(size * size * 3);
  const du = Math.cos(s.angle);
  const dv = Math.sin(s.angle);
  const shapes = s.shapes.map((sh) => ({ kind: sh.kind, r: sh.r, cx: sh.cx, cy: sh.cy, rgb: sh.rgb, c: Math.cos(sh.angle), s: Math.sin(sh.angle), reach2: (1.15 * sh.r + 1.5 / size) ** 2 }));
  for (let py = 0; py < size; py++) {
    for (let px = 0; px < size; px++) {
      const t = background(s, du, dv, (px + 0.5) / size, (py + 0.5) / size);
      const bg0 = s.rgb1[0] * (1 - t) + s.rgb2[0] * t;
      const bg1 = s.rgb1[1] * (1 - t) + s.rgb2[1] * t;
      const bg2 = s.rgb1[2] * (1 - t) + s.rgb2[2] * t;
      let r = 0;
      let g = 0;
      let b = 0;
      for (let sub = 0; sub < 4; sub++) {
        const u = (px + 0.25 + 0.5 * (sub & 1)) / size;
        const v = (py + 0.25 + 0.5 * (sub >> 1)) / size;
        let col: Rgb | null = null;
        // The last shape is drawn on top; reach2 bounds every shape kind (square corners at 1.13 r).
        for (let k = shapes.length - 1; k >= 0 && col === null; k--) {
          const sh = shapes[k];
          const ex = u - sh.cx;
          const ey = v - sh.cy;
          if (ex * ex + ey * ey > sh.reach2) continue;
          if (inside(sh.kind, sh.r, ex * sh.c + ey * sh.s, -ex * sh.s + ey * sh.c)) col = sh.rgb;
        }
        if (col) {
          r += col[0];
          g += col[1];
          b += col[2];
        } else {
          r += bg0;
          g += bg1;
          b += bg2;
        }
      }
      const o = (py * size + px) * 3;
      out[o] = r / 4;
      out[o + 1] = g / 4;
      out[o + 2] = b / 4;
    }
  }
  return out;
}

/** The systematic "generator look": colour/tone shift, over-smoothing, faint periodic artifacts. */
function renderingShift(img: Float32Array, size: number, rand: () => number): Float32Array {
  const px = size * size;
  // Soft 3×3 blur.
  const blurred = new Float32Array(img.length);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      for (let c = 0; c < 3; c++) {
        let sum = 0;
        let n = 0;
        for (let dy = -1; dy <= 1; dy++) {
          for (let dx = -1; dx <= 1; dx++) {
            const yy = y + dy;
            const xx = x + dx;
            if (yy < 0 || yy >= size || xx < 0 || xx >= size) continue;
            const w = dx === 0 && dy === 0 ? 2 : 1;
            sum += w * img[(yy * size + xx) * 3 + c];
            n += w;
          }
        }
        blurred[(y * size + x) * 3 + c] = sum / n;
      }
    }
  }
  const out = new Float32Array(img.length);
  const phase = rand() * 2 * Math.PI;
  for (let i = 0; i < px; i++) {
    const x = i % size;
    const y = Math.floor(i / size);
    let r = blurred[i * 3];
    let g = blurred[i * 3 + 1];
    let b = blurred[i * 3 + 2];
    // Saturation ×1.2 about the luma.
    const l = 0.299 * r + 0.587 * g + 0.114 * b;
    r = l + (r - l) * 1.2;
    g = l + (g - l) * 1.2;
    b = l + (b - l) * 1.2;
    // Strong warm cast, mostly additive: it moves every generated image the same way, the
    // kind of systematic offset (a "modality gap") GMAIL learns to remove.
    r = r + 0.3;
    g = g * 0.98 + 0.02;
    b = b * 0.8 - 0.1;
    // Checkerboard (upsampling) artifact with a 4-pixel period, so it survives the model's
    // downscaling, plus a diagonal ringing.
    const tex = (((x >> 1) + (y >> 1)) & 1 ? 0.06 : -0.06) + 0.04 * Math.sin(0.9 * (x + 0.6 * y) + phase);
    // Gamma 0.75: lifted mid-tones.
    out[i * 3] = Math.pow(Math.min(1, Math.max(0, r + tex)), 0.75);
    out[i * 3 + 1] = Math.pow(Math.min(1, Math.max(0, g + tex)), 0.75);
    out[i * 3 + 2] = Math.pow(Math.min(1, Math.max(0, b + tex)), 0.75);
  }
  return out;
}

function toBytes(img: Float32Array): Buffer {
  const b = Buffer.alloc(img.length);
  for (let i = 0; i < img.length; i++) b[i] = Math.round(Math.min(1, Math.max(0, img[i])) * 255);
  return b;
}

/** temp file + rename: a reader never sees a half-written image under its final name. */
async function writeImage(path: string, data: Buffer): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
  try {
    await writeFile(tmp, data);
    await rename(tmp, path);
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw new Error(`Could not write ${path}: ${(e as Error).message}`);
  }
}

function readStamp(dir: string): Stamp | null {
  const p = join(dir, STAMP);
  if (!existsSync(p)) return null;
  try {
    return JSON.parse(readFileSync(p, 'utf8')) as Stamp;
  } catch {
    return { format: -1, count: -1, size: -1, seed: -1, variants: -1, complete: false };
  }
}

type BuildParams = Omit<Stamp, 'complete'>;

function validStamp(s: Stamp | null): s is Stamp {
  return s !== null && [s.format, s.count, s.size, s.seed, s.variants].every(Number.isInteger) && s.count > 0 && s.variants > 0 && typeof s.complete === 'boolean';
}

/**
 * Why `dir` (which carries our stamp) cannot be reused for a build with parameters `want`, or
 * null when it is a complete build with these parameters whose files are all present.
 */
function staleReason(dir: string, want: BuildParams): string | null {
  const s = readStamp(dir);
  if (!validStamp(s)) return `${STAMP} is unreadable or damaged`;
  if (!s.complete) return `an earlier build was interrupted (${STAMP} says "complete": false)`;
  if (s.format !== want.format) return `it was built by another genalign version (format ${s.format}, now ${want.format})`;
  const changed = (['count', 'size', 'seed', 'variants'] as const).filter((k) => s[k] !== want[k]).map((k) => `${k} ${s[k]} → ${want[k]}`);
  if (changed.length) return `other parameters were asked for: ${changed.join(', ')}`;
  const manifest = join(dir, MANIFEST_NAME);
  if (!existsSync(manifest)) return `${MANIFEST_NAME} is missing`;
  const lines = readFileSync(manifest, 'utf8').split('\n').filter((l) => l.trim() !== '');
  if (lines.length !== want.count) return `${MANIFEST_NAME} has ${lines.length} pairs, expected ${want.count}`;
  for (let i = 0; i < lines.length; i++) {
    let o: { real?: unknown; generated?: unknown };
    try {
      o = JSON.parse(lines[i]) as { real?: unknown; generated?: unknown };
    } catch {
      return `${MANIFEST_NAME} line ${i + 1} is not valid JSON`;
    }
    const files = [o.real, ...(Array.isArray(o.generated) ? o.generated : [o.generated])];
    for (const f of files) {
      if (typeof f !== 'string') return `${MANIFEST_NAME} line ${i + 1} is not a demo pair`;
      if (!existsSync(join(dir, f))) return `${f} is missing`;
    }
  }
  return null;
}

/** Temp files of writeImage / writeFileAtomic (".<name>.<pid>[.<time>].tmp") left by an interrupted build. */
const TEMP_FILE = /^\..+\.\d+(\.\d+)?\.tmp$/;

/**
 * Files under real/, generated/ and classes/ (relative paths) that a build with stamp `s` did
 * not write: a rebuild deletes those folders, so it must not start while they hold a user's files. Without
 * a readable stamp any numeric demo name counts as ours.
 */
function foreignFiles(dir: string, s: Stamp | null): string[] {
  const known = validStamp(s);
  const width = known ? String(s.count - 1).length : 0;
  const isId = (id: string): boolean => (known ? id.length === width && Number(id) < s.count : true);
  const ours: Record<'real' | 'generated', (name: string) => boolean> = {
    real: (name) => {
      const m = /^(\d+)\.png$/.exec(name);
      return m !== null && isId(m[1]);
    },
    generated: (name) => {
      const m = /^(\d+)_(\d+)\.jpg$/.exec(name);
      return m !== null && isId(m[1]) && (!known || Number(m[2]) < s.variants);
    },
  };
  const foreign: string[] = [];
  for (const sub of ['real', 'generated'] as const) {
    const d = join(dir, sub);
    if (!existsSync(d)) continue;
    if (!statSync(d).isDirectory()) {
      foreign.push(sub);
      continue;
    }
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.isFile() && (ours[sub](e.name) || TEMP_FILE.test(e.name))) continue;
      foreign.push(`${sub}/${e.name}${e.isDirectory() ? '/' : ''}`);
    }
  }
  // classes/<side>/<shape>/<file>: the build's links to the images of that side.
  const classes = join(dir, 'classes');
  if (existsSync(classes)) {
    for (const side of readdirSync(classes, { withFileTypes: true })) {
      const sideOk = side.isDirectory() && (side.name === 'real' || side.name === 'generated');
      if (!sideOk) {
        foreign.push(`classes/${side.name}${side.isDirectory() ? '/' : ''}`);
        continue;
      }
      const name = side.name as 'real' | 'generated';
      for (const cls of readdirSync(join(classes, name), { withFileTypes: true })) {
        if (!cls.isDirectory() || !(SHAPES as readonly string[]).includes(cls.name)) {
          foreign.push(`classes/${name}/${cls.name}${cls.isDirectory() ? '/' : ''}`);
          continue;
        }
        for (const e of readdirSync(join(classes, name, cls.name), { withFileTypes: true })) {
          if (e.isFile() && ours[name](e.name)) continue;
          foreign.push(`classes/${name}/${cls.name}/${e.name}${e.isDirectory() ? '/' : ''}`);
        }
      }
    }
  }
  return foreign.sort();
}

const README = `genalign demo dataset
=====================

These images are SYNTHETIC. The "real" images are procedurally drawn scenes (coloured
shapes on gradients and textures). The "generated" images are NOT diffusion-model outputs:
each is the same scene re-drawn with small jitter and then passed through a fixed
"rendering shift" (gamma, warm colour cast, higher saturation, blur, a faint checkerboard
texture and JPEG blockiness). That consistent domain gap stands in for the gap between
photographs and generated images, so a training run has something to learn, and retrieval
between the two sides is meaningful. Results on it say nothing about real data.

To train on real pairs, make a directory like this one:
  pairs.jsonl  one line per pair:
    {"real": "real/000123.jpg", "generated": ["generated/000123_0.png", "generated/000123_1.png"], "caption": "a dog on a beach"}
For example: take COCO images with their captions, generate one or more images per caption
with Stable Diffusion, and pair each generation with its COCO photo. Then:
  npm run train -- --data /path/to/that/dir
See docs/data-format.md in the genalign repository for the full format (including the
folder layout real/<id>.jpg + generated/<id>_<k>.png that needs no manifest).

Files: real/<id>.png, generated/<id>_<k>.jpg, pairs.jsonl (with a caption of what each scene
shows and a "label": the kind of its largest shape), classes/real/<label>/ and
classes/generated/<label>/ (the same images by class, for npm run zeroshot and npm run probe),
demo.json (build parameters; written last, so an interrupted build is detected and redone).
`;

/**
 * Builds the demo dataset in `dir`, or reuses it when a complete build with the same
 * parameters is already there. Returns whether it was reused.
 */
export async function ensureDemoDataset(dir: string, opts: DemoDatasetOptions = {}): Promise<DemoDatasetResult> {
  const root = resolve(dir);
  const want = { format: FORMAT, count: opts.count ?? 256, size: opts.size ?? 64, seed: opts.seed ?? 0, variants: opts.variants ?? 2 };
  for (const k of ['count', 'size', 'variants'] as const) {
    if (!Number.isInteger(want[k]) || want[k] <= 0) throw new Error(`demo dataset: ${k} must be a positive integer, got ${want[k]}`);
  }
  if (want.size < 16) throw new Error(`demo dataset: size must be at least 16 pixels, got ${want.size}`);
  if (existsSync(root)) {
    if (!statSync(root).isDirectory()) throw new Error(`demo dataset: ${dir} exists and is not a directory`);
    const entries = readdirSync(root);
    const stamp = readStamp(root);
    if (entries.length > 0 && !stamp) {
      throw new Error(`demo dataset: ${dir} is not empty and has no ${STAMP}, so it is not a genalign demo dataset; refusing to write into it (choose an empty or new directory)`);
    }
    if (stamp) {
      const why = staleReason(root, want);
      if (why === null) return { dir: root, reused: true, count: want.count };
      // Ours but stale or interrupted: start over, unless that would delete files we did not write.
      const foreign = foreignFiles(root, stamp);
      if (foreign.length > 0) {
        throw new Error(
          `demo dataset: ${dir} must be rebuilt (${why}), which deletes its real/ and generated/ folders, but they hold ` +
            `${foreign.length} file(s) the demo build did not write:\n  ${listWithRest(foreign)}\n` +
            'Move them out first (to train on your own pairs, give them their own --data directory; see docs/data-format.md), or use another directory for the demo dataset.',
        );
      }
      (opts.log ?? ((l: string) => process.stderr.write(l + '\n')))(`demo dataset: rebuilding ${root}: ${why}`);
    }
    writeFileAtomic(join(root, STAMP), JSON.stringify({ ...want, complete: false }) + '\n');
    rmSync(join(root, 'real'), { recursive: true, force: true });
    rmSync(join(root, 'generated'), { recursive: true, force: true });
    rmSync(join(root, 'classes'), { recursive: true, force: true });
    rmSync(join(root, MANIFEST_NAME), { force: true });
  } else {
    mkdirSync(root, { recursive: true });
    writeFileAtomic(join(root, STAMP), JSON.stringify({ ...want, complete: false }) + '\n');
  }
  mkdirSync(join(root, 'real'), { recursive: true });
  mkdirSync(join(root, 'generated'), { recursive: true });

  const { count, size, seed, variants } = want;
  const rand = mulberry32(seed ^ 0x5eed);
  const width = String(count - 1).length;
  const seen = new Set<string>();
  const lines: string[] = [];
  const classLinks: { label: string; files: string[] }[] = [];
  const writes: Promise<void>[] = [];
  for (let i = 0; i < count; i++) {
    const id = String(i).padStart(width, '0');
    let scene: Scene;
    let pixels: Buffer;
    // Continuous parameters make repeats practically impossible; still, insist on distinct images.
    do {
      scene = randomScene(rand);
      pixels = toBytes(render(scene, size));
    } while (seen.has(pixels.toString('base64')));
    seen.add(pixels.toString('base64'));
    const raw = { raw: { width: size, height: size, channels: 3 as const } };
    const realRel = `real/${id}.png`;
    writes.push(sharp(pixels, raw).png().toBuffer().then((b) => writeImage(join(root, realRel), b)));
    const genRel: string[] = [];
    for (let k = 0; k < variants; k++) {
      const rel = `generated/${id}_${k}.jpg`;
      genRel.push(rel);
      const shifted = toBytes(renderingShift(render(jitterScene(scene, rand), size), size, rand));
      writes.push(sharp(shifted, raw).jpeg({ quality: JPEG_QUALITY, chromaSubsampling: '4:2:0' }).toBuffer().then((b) => writeImage(join(root, rel), b)));
    }
    lines.push(JSON.stringify({ id, real: realRel, generated: genRel, caption: caption(scene), label: label(scene) }));
    classLinks.push({ label: label(scene), files: [realRel, ...genRel] });
  }
  await Promise.all(writes);
  // Class folders for zeroshot / probe: classes/<side>/<label>/<file>, hard links to the images
  // (copies where the file system has none).
  for (const { label: cls, files } of classLinks) {
    for (const rel of files) {
      const side = rel.startsWith('real/') ? 'real' : 'generated';
      const dest = join(root, 'classes', side, cls, basename(rel));
      mkdirSync(dirname(dest), { recursive: true });
      try {
        linkSync(join(root, rel), dest);
      } catch {
        copyFileSync(join(root, rel), dest);
      }
    }
  }
  writeFileAtomic(join(root, MANIFEST_NAME), lines.join('\n') + '\n');
  writeFileAtomic(join(root, 'README.txt'), README);
  writeFileAtomic(join(root, STAMP), JSON.stringify({ ...want, complete: true }) + '\n');
  return { dir: root, reused: false, count };
}
