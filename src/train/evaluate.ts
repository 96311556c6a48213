// Evaluation of alignment on held-out pairs, with the paper's own measures:
//   paired cosine(student(gen), teacher(real))  — Table 14 (0.52 → 0.89 in the paper)
//   gen→real retrieval R@1 / R@5 among the evaluated reals
//   modality gap: distance between the centroids of normalized real and generated embeddings
// "before" = the teacher on both sides (equal to the student at step 0); "after" = the student
// on generated images. Also draws the Figure 3 plot (t-SNE or PCA, before | after).
// With a text tower (opts.text) and captions on the pairs: text→image and image→text R@1/5/10
// among the held-out pairs that have a caption (t2i_rK_* / i2t_rK_*): `real` = the teacher on
// real images, `gen_before` = the teacher on generated images, `gen_after` = the student (with
// its projection) on generated images; captions always go through the frozen text tower.
// With a text tower and labels on the pairs: zero-shot top-1 / top-5 accuracy (zeroshot_topK_*,
// the same three image sides) over the distinct labels of the evaluated pairs as classes, each
// prompted as "a photo of a {label}." (the zeroshot command's default template).
// Non-finite embeddings (a diverged adapter) are an error before anything is written.
// The three embedding passes share one image preprocessing pool: opts.pool, or one of this call's, ended before evaluatePairs returns.
import { join } from 'node:path';
import type { Device } from '../gpu/device.ts';
import type { ClipVisionModel } from '../nn/vit.ts';
import type { ImageSource, PreprocessConfig } from '../io/image.ts';
import type { Pair } from '../io/dataset.ts';
import { writeFileAtomic, type FileOps } from '../platform/atomic-file.ts';
import { PreprocessPool } from '../io/preprocess-pool.ts';
import { embedPaths, embedPathsWith, type EmbeddedFiles, type EmbedVariant } from './embedding.ts';
import { alignmentMetrics, nearestReals, nearestRows, evalReport, type EvalReport } from './metrics.ts';
import { writeFigure3 } from './plot.ts';
import type { TeacherCache } from './teacher-cache.ts';
import type { ClipTextModel } from '../nn/text.ts';
import type { ClipTokenizer } from '../io/tokenizer.ts';
import { embedTexts } from './text-embedding.ts';
import { ensembleClassEmbeddings, retrievalMetrics, zeroShotAccuracy } from './downstream.ts';
import { fileKey } from './teacher-cache.ts';

export interface EvalOptions {
  batch: number;
  plot: 'tsne' | 'pca' | 'none';
  seed: number;
  log?: (l: string) => void;
  /** How errors name the base model and the student (see EmbedHooks.model), e.g. with the --lora directory. */
  baseModel?: { name: string; hint?: string };
  student?: { name: string; hint?: string };
  /** The file operations that write metrics.json and the figure (default: the real file system). */
  files?: FileOps;
  /** Worker pool that preprocesses the images (not closed here); default: one for this call, closed before it returns. */
  pool?: PreprocessPool;
  /** Where the pairs' image "paths" are read from when they name no file (shard samples' bytes); default: the files. */
  source?: (path: string) => ImageSource;
  /** The frozen text tower and its tokenizer: adds caption retrieval to the report. */
  text?: { model: ClipTextModel; tokenizer: ClipTokenizer; name: string };
}

export interface EvalOutput {
  report: EvalReport;
  files: string[];
}

/**
 * Embeds real (teacher), generated (teacher = before) and generated (student = after) for pairs.
 * `student`: how the student embeds (a LoRA adapter with its projection, or its own model; `{}`:
 * the teacher, so before == after); its name comes from opts.student.
 */
export async function evaluatePairs(
  device: Device,
  model: ClipVisionModel,
  student: Omit<EmbedVariant, 'name'>,
  pre: PreprocessConfig,
  pairs: Pair[],
  outDir: string,
  opts: EvalOptions,
  cache: TeacherCache | null = null,
): Promise<EvalOutput> {
  const log = opts.log ?? ((l: string) => process.stderr.write(l + '\n'));
  if (pairs.length < 2) throw new Error(`eval needs at least 2 pairs, got ${pairs.length}`);
  const D = model.cfg.projectionDim;
  const skip = (p: string, r: string): void => log(`warning: eval: skipping ${p}: ${r}`);
  // Reals: from the teacher cache where possible.
  const realRows = new Float32Array(pairs.length * D);
  const realOk = new Array<boolean>(pairs.length).fill(true);
  const toEmbed: number[] = [];
  pairs.forEach((p, i) => {
    const row = cache?.get(fileKey(p.real));
    if (row) realRows.set(row, i * D);
    else toEmbed.push(i);
  });
  // The first generated image of each pair (deterministic).
  const genPaths = pairs.map((p) => p.generated[0]);
  const ownPool = opts.pool ? null : new PreprocessPool();
  const pool = opts.pool ?? ownPool!;
  let reals: EmbeddedFiles | null = null;
  let before: EmbeddedFiles;
  let after: EmbeddedFiles;
  try {
    const read = { onSkip: skip, pool, ...(opts.source ? { source: opts.source } : {}) };
    if (toEmbed.length) reals = await embedPaths(device, model, undefined, toEmbed.map((i) => pairs[i].real), pre, opts.batch, { ...read, model: opts.baseModel });
    // Teacher and student on the same generated images: decoded once, embedded twice.
    [before, after] = await embedPathsWith(device, model, [{ name: opts.baseModel }, { ...student, name: opts.student }], genPaths, pre, opts.batch, read);
  } finally {
    await ownPool?.close();
  }
  if (reals) {
    const got = reals;
    let k = 0;
    toEmbed.forEach((i, j) => {
      if (!got.ok[j]) {
        realOk[i] = false;
        return;
      }
      realRows.set(got.embeds.subarray(k * D, (k + 1) * D), i * D);
      k++;
    });
  }
  // Keep pairs where both sides decoded.
  const keep = pairs.map((_, i) => realOk[i] && before.ok[i]);
  const n = keep.filter(Boolean).length;
  if (n < 2) throw new Error('eval: fewer than 2 pairs could be decoded');
  const pick = (src: Float32Array, ok: boolean[], rowsOk: boolean[]): Float32Array => {
    // src rows exist only for ok entries (embedPaths compacts), realRows is dense.
    const out = new Float32Array(n * D);
    let srcRow = 0;
    let dst = 0;
    for (let i = 0; i < pairs.length; i++) {
      if (ok[i]) {
        if (rowsOk[i]) out.set(src.subarray(srcRow * D, (srcRow + 1) * D), dst++ * D);
        srcRow++;
      }
    }
    return out;
  };
  const real = new Float32Array(n * D);
  let dst = 0;
  for (let i = 0; i < pairs.length; i++) if (keep[i]) real.set(realRows.subarray(i * D, (i + 1) * D), dst++ * D);
  const genBefore = pick(before.embeds, before.ok, keep);
  const genAfter = pick(after.embeds, after.ok, keep);
  const mBefore = alignmentMetrics(genBefore, real, n, D);
  const mAfter = alignmentMetrics(genAfter, real, n, D);
  const report: EvalReport = evalReport(mBefore, mAfter);
  /** The captions' text embeddings and which kept pairs they belong to (caption retrieval ran). */
  let captions: { rows: Float32Array; pairs: number[] } | null = null;
  if (opts.text) {
    const kept = pairs.filter((_, i) => keep[i]);
    const cr = await captionRetrieval(device, opts.text, kept, { real, genBefore, genAfter }, D, opts.batch, log);
    Object.assign(report, cr.report);
    captions = cr.texts;
    Object.assign(report, await labelZeroShot(device, opts.text, kept, { real, genBefore, genAfter }, D, opts.batch));
  }
  const files: string[] = [join(outDir, 'metrics.json')];
  writeFileAtomic(join(outDir, 'metrics.json'), JSON.stringify(report, null, 2) + '\n', opts.files);
  if (opts.plot !== 'none') {
    const fig = await writeFigure3(outDir, {
      before: { real, gen: genBefore },
      after: { real, gen: genAfter },
      n,
      dim: D,
      method: opts.plot,
      seed: opts.seed,
      files: opts.files,
      subtitles: [`paired cosine ${report.paired_cosine_before.toFixed(3)}, R@1 ${report.r1_before.toFixed(3)}`, `paired cosine ${report.paired_cosine_after.toFixed(3)}, R@1 ${report.r1_after.toFixed(3)}`],
    });
    files.push(join(outDir, 'figure3.svg'), join(outDir, 'figure3.png'));
    // What the interactive report (npm run report) shows: the same maps, the pairs' files, and
    // each drawn generated image's nearest real images before and after.
    const kept = pairs.filter((_, i) => keep[i]);
    const round = (c: Float64Array): number[] => [...c].map((v) => Math.round(v * 1e4) / 1e4);
    const data = {
      version: 1,
      method: opts.plot,
      /** Every evaluated pair (files as given: paths, or shard members' names). */
      pairs: kept.map((p) => ({ id: p.id, real: p.real, generated: p.generated[0], ...(p.caption !== undefined ? { caption: p.caption } : {}), ...(p.label !== undefined ? { label: p.label } : {}) })),
      /** The pairs drawn, as indices into pairs; point i of a panel is pair plotted[i] (reals first, then generated). */
      plotted: fig.kept,
      panels: { before: round(fig.coords.before), after: round(fig.coords.after) },
      /** For each drawn pair's generated image, its 5 nearest real images (indices into pairs) by cosine. */
      nearest: { before: nearestReals(genBefore, real, n, D, fig.kept, 5), after: nearestReals(genAfter, real, n, D, fig.kept, 5) },
      /** With a text tower and captions: each drawn generated image's 3 best captions (indices into pairs, whose caption it is) before and after. */
      ...(captions
        ? {
            captions: {
              before: nearestRows(genBefore, n, captions.rows, captions.pairs.length, D, fig.kept, 3).map((r) => r.map((j) => captions!.pairs[j])),
              after: nearestRows(genAfter, n, captions.rows, captions.pairs.length, D, fig.kept, 3).map((r) => r.map((j) => captions!.pairs[j])),
            },
          }
        : {}),
    };
    writeFileAtomic(join(outDir, 'figure3.json'), JSON.stringify(data) + '\n', opts.files);
    files.push(join(outDir, 'figure3.json'));
  }
  return { report, files };
}

/** The retrieval keys of the report, over the kept pairs that carry a caption (none: {}). */
async function captionRetrieval(
  device: Device,
  text: NonNullable<EvalOptions['text']>,
  kept: Pair[],
  rows: { real: Float32Array; genBefore: Float32Array; genAfter: Float32Array },
  D: number,
  batch: number,
  log: (l: string) => void,
): Promise<{ report: Partial<EvalReport>; texts: { rows: Float32Array; pairs: number[] } | null }> {
  const idx = kept.flatMap((p, i) => (p.caption !== undefined && p.caption.trim() !== '' ? [i] : []));
  if (idx.length < 2) {
    log(`eval: no caption retrieval: ${idx.length} of ${kept.length} held-out pairs have a caption (need 2; add "caption" to pairs.jsonl, see docs/data-format.md)`);
    return { report: {}, texts: null };
  }
  if (text.model.cfg.projectionDim !== D) {
    throw new Error(`eval: the text tower of ${text.name} projects to ${text.model.cfg.projectionDim} dims but the vision tower to ${D}; use a CLIPModel checkpoint whose towers share projection_dim`);
  }
  if (idx.length < kept.length) log(`eval: caption retrieval on the ${idx.length} of ${kept.length} held-out pairs that have a caption`);
  const texts = await embedTexts(device, text.model, text.tokenizer, idx.map((i) => kept[i].caption!), batch, { model: `the text tower of ${text.name}` });
  const sub = (m: Float32Array): Float32Array => pickRows(m, idx, D);
  const n = idx.length;
  return {
    report: {
      n_text: n,
      ...retrievalMetrics(sub(rows.real), texts, n, D, 'real'),
      ...retrievalMetrics(sub(rows.genBefore), texts, n, D, 'gen_before'),
      ...retrievalMetrics(sub(rows.genAfter), texts, n, D, 'gen_after'),
    },
    texts: { rows: texts, pairs: idx },
  };
}

/** The zero-shot keys of the report, over the kept pairs that carry a label (fewer than 2 classes: {}). */
async function labelZeroShot(
  device: Device,
  text: NonNullable<EvalOptions['text']>,
  kept: Pair[],
  rows: { real: Float32Array; genBefore: Float32Array; genAfter: Float32Array },
  D: number,
  batch: number,
): Promise<Partial<EvalReport>> {
  const idx = kept.flatMap((p, i) => (p.label !== undefined ? [i] : []));
  const classes = [...new Set(idx.map((i) => kept[i].label!))].sort();
  if (classes.length < 2) return {};
  const prompts = await embedTexts(device, text.model, text.tokenizer, classes.map((c) => `a photo of a ${c}.`), batch, { model: `the text tower of ${text.name}` });
  const classEmb = ensembleClassEmbeddings(prompts, 1, classes.length, D);
  const labels = idx.map((i) => classes.indexOf(kept[i].label!));
  const sub = (m: Float32Array): Float32Array => pickRows(m, idx, D);
  const out: Partial<EvalReport> = { n_zeroshot: idx.length, zeroshot_classes: classes.length };
  for (const [side, m] of [['real', rows.real], ['gen_before', rows.genBefore], ['gen_after', rows.genAfter]] as const) {
    const r = zeroShotAccuracy(sub(m), labels, classEmb, classes, D);
    out[`zeroshot_top1_${side}`] = r.top1;
    out[`zeroshot_top5_${side}`] = r.top5;
  }
  return out;
}

/** Rows `idx` of a row-major [*, D] matrix, in that order. */
function pickRows(m: Float32Array, idx: readonly number[], D: number): Float32Array {
  const out = new Float32Array(idx.length * D);
  idx.forEach((i, j) => out.set(m.subarray(i * D, (i + 1) * D), j * D));
  return out;
}
