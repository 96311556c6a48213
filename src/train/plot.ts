// GMAIL Figure 3 for `eval`: real (blue) and generated (red) image embeddings mapped to 2-D,
// before alignment (teacher on both) | after alignment (student on generated). Each panel
// embeds its real and generated rows jointly (one t-SNE or PCA over 2m points), so distances
// between the two colours are meaningful within a panel. Written as figure3.svg and, rendered
// from that SVG by sharp, figure3.png.
import { join } from 'node:path';
import sharp from 'sharp';
import { writeFileAtomic, type FileOps } from '../platform/atomic-file.ts';
import { pca2d, seededSubsample, tsne } from './tsne.ts';

export interface EmbeddingPair {
  /** [n, dim] row-major; row i pairs with gen row i. */
  real: Float32Array;
  gen: Float32Array;
}

export interface Figure3Options {
  before: EmbeddingPair;
  after: EmbeddingPair;
  n: number;
  dim: number;
  method: 'tsne' | 'pca';
  /** Seeds the pair subsample (above maxPairs) and the t-SNE/PCA start. */
  seed: number;
  /** One line under each panel title, e.g. "paired cosine 0.52": [before, after]. */
  subtitles?: readonly [string, string] | readonly string[];
  /** Pairs drawn at most (default 1000, i.e. 2000 points per exact t-SNE); above, a seeded subsample. */
  maxPairs?: number;
  /** t-SNE perplexity (default 30). */
  perplexity?: number;
  /** The file operations that write the two files (default: the real file system). */
  files?: FileOps;
}

export interface Figure3Result {
  svgPath: string;
  pngPath: string;
  /** PNG size in pixels (the SVG's size × PNG_SCALE). */
  width: number;
  height: number;
  /** Pairs drawn and pairs given. */
  pairsPlotted: number;
  pairsTotal: number;
  /** [2m, 2] map coordinates per panel: rows 0..m−1 real, m..2m−1 generated. */
  coords: { before: Float64Array; after: Float64Array };
  /** The pairs drawn: index i of the map is pair kept[i] of the n given. */
  kept: number[];
}

export const REAL_COLOR = '#1f77b4';
export const GEN_COLOR = '#d62728';
export const FIGURE_WIDTH = 1100;
export const FIGURE_HEIGHT = 560;
/** The PNG is rendered at twice the SVG's size, so text stays crisp when viewed full-size. */
export const PNG_SCALE = 2;

export async function writeFigure3(outDir: string, o: Figure3Options): Promise<Figure3Result> {
  const { n, dim } = o;
  for (const [side, pair] of [['before', o.before], ['after', o.after]] as const) {
    for (const kind of ['real', 'gen'] as const) {
      if (pair[kind].length !== n * dim) {
        throw new Error(`writeFigure3: ${side}.${kind} holds ${pair[kind].length} values, expected n×dim = ${n}×${dim} = ${n * dim}`);
      }
    }
  }
  const maxPairs = o.maxPairs ?? 1000;
  const keep = seededSubsample(n, Math.min(n, maxPairs), o.seed);
  const m = keep.length;
  const embed = (pair: EmbeddingPair): Float64Array => {
    const joint = new Float32Array(2 * m * dim);
    keep.forEach((src, i) => {
      joint.set(pair.real.subarray(src * dim, (src + 1) * dim), i * dim);
      joint.set(pair.gen.subarray(src * dim, (src + 1) * dim), (m + i) * dim);
    });
    if (o.method === 'pca') return pca2d(joint, 2 * m, dim);
    return tsne(joint, 2 * m, dim, { perplexity: o.perplexity, seed: o.seed }).y;
  };
  const before = embed(o.before);
  const after = embed(o.after);

  const what = o.method === 'tsne' ? `t-SNE (perplexity ${fmt(Math.min(o.perplexity ?? 30, (2 * m - 1) / 3))})` : 'PCA';
  const sample = m < n ? `a seeded random subsample of ${m} of ${n} pairs (seed ${o.seed})` : `${n} pairs`;
  const svg = renderFigure3Svg({
    title: 'Real vs generated image embeddings',
    subtitle: `${what} of ${sample}; each panel maps its real and generated embeddings jointly`,
    axis: o.method === 'tsne' ? 't-SNE' : 'PC',
    panels: [
      { title: 'Before alignment (teacher on both)', subtitle: o.subtitles?.[0], coords: before, m },
      { title: 'After alignment (student on generated)', subtitle: o.subtitles?.[1], coords: after, m },
    ],
  });
  const png = await sharp(Buffer.from(svg), { density: 72 * PNG_SCALE }).png().toBuffer();
  const svgPath = join(outDir, 'figure3.svg');
  const pngPath = join(outDir, 'figure3.png');
  writeFileAtomic(svgPath, svg, o.files);
  writeFileAtomic(pngPath, png, o.files);
  return {
    svgPath,
    pngPath,
    width: FIGURE_WIDTH * PNG_SCALE,
    height: FIGURE_HEIGHT * PNG_SCALE,
    pairsPlotted: m,
    pairsTotal: n,
    coords: { before, after },
    kept: [...keep],
  };
}

export interface PanelSpec {
  title: string;
  subtitle?: string;
  /** [2m, 2]: m real points then m generated points. */
  coords: Float64Array;
  m: number;
}

export interface FigureSpec {
  title: string;
  subtitle: string;
  /** Axis name stem: "t-SNE" gives "t-SNE 1"/"t-SNE 2", "PC" gives "PC 1"/"PC 2". */
  axis: string;
  panels: PanelSpec[];
}

// Layout in SVG user units (= PNG pixels / PNG_SCALE).
const PLOT_W = 440;
const PLOT_H = 340;
const PANEL_X = [90, 630];
const PLOT_TOP = 120;
const FONT = 'font-family="sans-serif"';

/** The figure as a standalone SVG document (no external fonts or resources). */
export function renderFigure3Svg(spec: FigureSpec): string {
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${FIGURE_WIDTH}" height="${FIGURE_HEIGHT}" viewBox="0 0 ${FIGURE_WIDTH} ${FIGURE_HEIGHT}">`,
    `<rect x="0" y="0" width="${FIGURE_WIDTH}" height="${FIGURE_HEIGHT}" fill="#ffffff"/>`,
    `<text x="${FIGURE_WIDTH / 2}" y="30" ${FONT} font-size="20" font-weight="bold" text-anchor="middle" fill="#111111">${esc(spec.title)}</text>`,
    `<text x="${FIGURE_WIDTH / 2}" y="52" ${FONT} font-size="13" text-anchor="middle" fill="#555555">${esc(spec.subtitle)}</text>`,
  );
  spec.panels.forEach((panel, p) => out.push(renderPanel(panel, PANEL_X[p] ?? PANEL_X[0] + p * 540, spec.axis, p)));
  // Legend, centred under both panels.
  const ly = FIGURE_HEIGHT - 22;
  const lx = FIGURE_WIDTH / 2 - 150;
  out.push(
    `<g id="legend" ${FONT} font-size="14" fill="#222222">`,
    `<rect x="${lx - 14}" y="${ly - 16}" width="328" height="28" fill="#ffffff" stroke="#cccccc"/>`,
    `<circle cx="${lx}" cy="${ly - 2}" r="5" fill="${REAL_COLOR}"/>`,
    `<text x="${lx + 12}" y="${ly + 3}">real image (teacher)</text>`,
    `<circle cx="${lx + 170}" cy="${ly - 2}" r="5" fill="${GEN_COLOR}"/>`,
    `<text x="${lx + 182}" y="${ly + 3}">generated image</text>`,
    `</g>`,
    `</svg>`,
  );
  return out.join('\n') + '\n';
}

function renderPanel(panel: PanelSpec, x0: number, axis: string, index: number): string {
  const { coords, m } = panel;
  const y0 = PLOT_TOP;
  // Equal aspect: one scale for both axes, so distances on the page are distances in the map.
  let minX = Infinity;
  let maxX = -Infinity;
  let minY = Infinity;
  let maxY = -Infinity;
  for (let i = 0; i < 2 * m; i++) {
    minX = Math.min(minX, coords[2 * i]);
    maxX = Math.max(maxX, coords[2 * i]);
    minY = Math.min(minY, coords[2 * i + 1]);
    maxY = Math.max(maxY, coords[2 * i + 1]);
  }
  if (!(maxX >= minX)) [minX, maxX, minY, maxY] = [-1, 1, -1, 1];
  const pad = 0.05;
  const spanX = Math.max(maxX - minX, 1e-12) * (1 + 2 * pad);
  const spanY = Math.max(maxY - minY, 1e-12) * (1 + 2 * pad);
  const scale = Math.min(PLOT_W / spanX, PLOT_H / spanY);
  const cx = (minX + maxX) / 2;
  const cy = (minY + maxY) / 2;
  const px = (v: number): number => x0 + PLOT_W / 2 + (v - cx) * scale;
  const py = (v: number): number => y0 + PLOT_H / 2 - (v - cy) * scale; // SVG y grows downwards
  const visX: [number, number] = [cx - PLOT_W / 2 / scale, cx + PLOT_W / 2 / scale];
  const visY: [number, number] = [cy - PLOT_H / 2 / scale, cy + PLOT_H / 2 / scale];

  const s: string[] = [];
  const id = index === 0 ? 'panel-before' : index === 1 ? 'panel-after' : `panel-${index}`;
  s.push(`<g class="panel" id="${id}">`);
  s.push(`<text x="${x0 + PLOT_W / 2}" y="${y0 - 36}" ${FONT} font-size="16" font-weight="bold" text-anchor="middle" fill="#111111">${esc(panel.title)}</text>`);
  if (panel.subtitle) {
    s.push(`<text x="${x0 + PLOT_W / 2}" y="${y0 - 15}" ${FONT} font-size="13" text-anchor="middle" fill="#333333">${esc(panel.subtitle)}</text>`);
  }
  s.push(`<rect x="${x0}" y="${y0}" width="${PLOT_W}" height="${PLOT_H}" fill="#fafafa" stroke="#888888"/>`);
  // Ticks (map units; t-SNE units carry no meaning beyond relative distance).
  s.push(`<g ${FONT} font-size="11" fill="#444444" stroke="none">`);
  for (const t of niceTicks(visX[0], visX[1])) {
    const x = px(t);
    s.push(`<line x1="${r1(x)}" y1="${y0 + PLOT_H}" x2="${r1(x)}" y2="${y0 + PLOT_H + 5}" stroke="#888888"/>`);
    s.push(`<text x="${r1(x)}" y="${y0 + PLOT_H + 18}" text-anchor="middle">${fmt(t)}</text>`);
  }
  for (const t of niceTicks(visY[0], visY[1])) {
    const y = py(t);
    s.push(`<line x1="${x0 - 5}" y1="${r1(y)}" x2="${x0}" y2="${r1(y)}" stroke="#888888"/>`);
    s.push(`<text x="${x0 - 8}" y="${r1(y + 4)}" text-anchor="end">${fmt(t)}</text>`);
  }
  s.push(`</g>`);
  s.push(`<text x="${x0 + PLOT_W / 2}" y="${y0 + PLOT_H + 40}" ${FONT} font-size="13" text-anchor="middle" fill="#222222">${esc(axis)} 1</text>`);
  const ly = y0 + PLOT_H / 2;
  s.push(`<text x="${x0 - 48}" y="${ly}" ${FONT} font-size="13" text-anchor="middle" fill="#222222" transform="rotate(-90 ${x0 - 48} ${ly})">${esc(axis)} 2</text>`);
  // Points, real and generated interleaved pair by pair so neither colour is always on top.
  s.push(`<g class="points" fill-opacity="0.55" stroke="none">`);
  for (let i = 0; i < m; i++) {
    s.push(`<circle cx="${r1(px(coords[2 * i]))}" cy="${r1(py(coords[2 * i + 1]))}" r="2.2" fill="${REAL_COLOR}"/>`);
    const g = m + i;
    s.push(`<circle cx="${r1(px(coords[2 * g]))}" cy="${r1(py(coords[2 * g + 1]))}" r="2.2" fill="${GEN_COLOR}"/>`);
  }
  s.push(`</g>`);
  s.push(`</g>`);
  return s.join('\n');
}

/** About five round-numbered ticks inside [lo, hi]. */
function niceTicks(lo: number, hi: number): number[] {
  const span = hi - lo;
  if (!(span > 0) || !Number.isFinite(span)) return [];
  const raw = span / 5;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((f) => f * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + 1e-9 * step; t += step) out.push(Math.abs(t) < 1e-9 * step ? 0 : t);
  return out;
}

function r1(v: number): string {
  return (Math.round(v * 10) / 10).toString();
}

function fmt(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e4 || a < 1e-3) return v.toExponential(1);
  return Number(v.toPrecision(4)).toString();
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}
