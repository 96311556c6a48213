// Batches of (real, generated) image pairs for training, decoded ahead of the consumer.
//
// Order: epoch e visits the pairs in epochOrder(e), a Fisher–Yates shuffle seeded by (seed, e),
// so a resumed run regenerates exactly the same batches. A pair with several generated images
// uses generatedIndex(e, id), seeded by (seed, e, id), so each epoch may show a different one.
//
// Threads: every file is preprocessed (decode, resize of the crop window, byte → float) in a
// PreprocessPool of worker threads (io/preprocess-pool.ts), so the main thread only receives
// the finished CHW floats (the resize alone takes ≈9 ms for a 512×384 image at crop 224; see
// docs/data-format.md). The pool is opts.pool, or one the loader starts at its first decode and
// ends in close().
//
// Sources: a list of pairs (folder or pairs.jsonl datasets; the order above), or a BatchSource
// that plans batches itself (io/shard-stream.ts: samples streamed out of WebDataset shards, whose
// images are bytes in memory rather than files). Either way a batch is planned as members
// (id, real and generated image source), decoded and packed the same way.
//
// Prefetch: up to `prefetch` batches decode while the consumer works on the current one. Their
// files decode in parallel, but batches are finalised (bad-file accounting, warnings, packing)
// strictly in order, so warnings and the abort point do not depend on timing.
import { mulberry32 } from '../nn/init.ts';
import { ImageDecodeError, sourceName, type ImageSource, type PreprocessConfig } from './image.ts';
import type { StreamPosition } from './shard-stream.ts';
import { PreprocessPool, PreprocessWorkerError } from './preprocess-pool.ts';
import { fnv1a, listWithRest, mix32, type Pair } from './dataset.ts';

export interface PairBatch {
  epoch: number;
  /** Index of this batch within its epoch (resume from {epoch, batch: index + 1}). */
  index: number;
  /** Ids of the pairs that decoded, in epoch order (skipped pairs shrink the batch). */
  ids: string[];
  /** Generated images, [ids.length, 3, H, W] CHW float32, row i ↔ ids[i]. */
  generated: Float32Array;
  generatedPaths: string[];
  /**
   * Real images of the rows in realRows only, [realRows.length, 3, H, W]. When every real is
   * needed (the default) realRows is [0, 1, …, n−1] and real is [n, 3, H, W].
   */
  real: Float32Array;
  realRows: number[];
  /** Real paths of all rows (also those whose pixels were not decoded). */
  realPaths: string[];
  captions: (string | undefined)[];
  /** The teacher cache's key of each row's real image, where the source knows it (shard samples); else undefined (a file: fileKey of its path). */
  realKeys: (string | undefined)[];
  /** Pairs of this batch skipped because a file failed to decode. */
  skipped: number;
  /** A streamed source: where the stream is once this batch's step is consumed (set on a step's last micro-batch). */
  after?: StreamPosition;
}

/** One pair of a planned batch: where its real image and the generated image shown come from. */
export interface LoaderMember {
  id: string;
  real: ImageSource;
  gen: ImageSource;
  /** The real image's teacher cache key, when the source knows it. */
  realKey?: string;
  caption?: string;
}

/** A batch before decoding. */
export interface BatchPlan {
  epoch: number;
  index: number;
  members: LoaderMember[];
  after?: StreamPosition;
}

/** Plans batches in order (a streamed dataset); PairLoader decodes and packs them. */
export interface BatchSource {
  next(): Promise<BatchPlan>;
  close(): Promise<void>;
  /** The samples the source left out (missing side, bad metadata) since the last call, as [name, reason]; counted with the bad files. */
  takeProblems(): Iterable<[string, string]>;
}

export interface PairLoaderOptions {
  batchSize: number;
  preprocess: PreprocessConfig;
  seed: number;
  /** Shuffle each epoch (default true; false keeps dataset order, e.g. for evaluation). */
  shuffle?: boolean;
  /**
   * Drop the last partial batch of each epoch. Default: true when at least two full batches
   * fit (a tiny last batch gives a contrastive loss few negatives and a noisy gradient; the
   * dropped pairs differ each epoch), false otherwise (so a small dataset still yields a batch).
   */
  dropLast?: boolean;
  /**
   * Batches consumed together (one optimizer step with gradient accumulation). Each epoch's
   * batch count is cut to a multiple of it, so no step straddles two epochs: such a step could
   * hold the same pair twice (once from each epoch's shuffle), and that pair's real image would
   * then be a negative of its own generated image. Default 1.
   */
  batchesPerStep?: number;
  /** Batches decoded ahead of the consumer (default 2; 0 decodes on demand). */
  prefetch?: number;
  /** Whether the real image of a pair must be decoded (false when the teacher embedding is cached). Default: always. */
  realNeeded?: (id: string, member: LoaderMember) => boolean;
  /** Abort when bad files / decoded files exceeds this (default 0.05). */
  maxBadFraction?: number;
  /** Receives one warning per bad file. Default: stderr. */
  onWarn?: (message: string) => void;
  /** Start position for a resumed run (default epoch 0, batch 0). */
  start?: { epoch: number; batch: number };
  /**
   * Worker pool that preprocesses the files; the loader does not close it. Default: the loader
   * starts a pool of defaultPoolSize() workers at its first decode and close() ends it.
   */
  pool?: PreprocessPool;
  /** Decoder in place of the pool (no pool is started); tests use it to inject delays. */
  decode?: (src: ImageSource, cfg: PreprocessConfig) => Promise<Float32Array>;
}

/** Files decoded before the bad fraction is trusted; until then the denominator is this many. */
const MIN_BAD_SAMPLE = 100;

/** Thrown when too many images fail to decode; the message counts them and names examples. */
export class TooManyBadImagesError extends Error {}

export { mulberry32 };

/** A seed for epoch `epoch` of a run seeded `seed`; another `salt` gives an independent stream (shard-stream.ts's buffer draws). */
export function epochSeed(seed: number, epoch: number, salt = 0x51ed27): number {
  return mix32(mix32((seed + 0x9e3779b9) >>> 0) ^ mix32((epoch + salt) >>> 0));
}

/** Which of `count` generated images pair `id` shows in epoch `epoch`: seeded by (seed, epoch, id). */
export function generatedChoice(seed: number, epoch: number, id: string, count: number): number {
  return count === 1 ? 0 : mix32(epochSeed(seed, epoch) ^ fnv1a(id)) % count;
}

/**
 * Batches per epoch of `count` pairs: full batches only with `dropLast` (else the last one may
 * be partial), cut to a multiple of `perStep` so that no optimizer step straddles two epochs.
 */
export function epochBatches(count: number, batchSize: number, dropLast: boolean, perStep: number): number {
  const batches = dropLast ? Math.floor(count / batchSize) : Math.ceil(count / batchSize);
  if (batches === 0) throw new Error(`PairLoader: ${count} pairs make no full batch of ${batchSize} with dropLast; lower the batch size or set dropLast false`);
  const usable = batches - (batches % perStep);
  if (usable === 0) throw new Error(`PairLoader: ${count} pairs make ${batches} batch(es) of ${batchSize}, fewer than the ${perStep} of one step; lower the batch size or the batches per step`);
  return usable;
}

export class PairLoader {
  readonly batchSize: number;
  readonly dropLast: boolean;
  readonly batchesPerEpoch: number;
  private readonly pairs: readonly Pair[];
  /** A streamed source plans the batches instead of epochOrder (pairs is then empty). */
  private readonly source: BatchSource | null;
  private planTail: Promise<unknown> = Promise.resolve();
  private readonly opts: PairLoaderOptions;
  private readonly prefetchDepth: number;
  private readonly maxBadFraction: number;
  private readonly decode: (src: ImageSource, cfg: PreprocessConfig) => Promise<Float32Array>;
  private readonly warn: (message: string) => void;
  private readonly orders = new Map<number, number[]>();
  /** Next batch to schedule for decoding. */
  private schedEpoch: number;
  private schedBatch: number;
  private started = false;
  private readonly queue: Promise<PairBatch>[] = [];
  /** Tail of the in-order finalisation chain. */
  private tail: Promise<unknown> = Promise.resolve();
  private failure: Error | null = null;
  /** The pool this loader started (and close() ends). */
  private ownPool: PreprocessPool | null = null;
  /** Decodes started and not yet settled (also those of batches a failure left unfinalised). */
  private readonly decoding = new Set<Promise<unknown>>();
  private closed = false;
  private readonly badFiles = new Map<string, string>();
  /** Distinct files decoded (a list of pairs), or null for a streamed source, whose decodes are counted (its files are not all in memory). */
  private readonly decodedFiles: Set<string> | null;
  private decodeCount = 0;

  constructor(input: readonly Pair[] | BatchSource, opts: PairLoaderOptions) {
    if (!Number.isInteger(opts.batchSize) || opts.batchSize <= 0) throw new Error(`PairLoader: batchSize must be a positive integer, got ${opts.batchSize}`);
    const pairs = Array.isArray(input) ? (input as readonly Pair[]) : [];
    this.source = Array.isArray(input) ? null : (input as BatchSource);
    if (!this.source && pairs.length === 0) throw new Error('PairLoader: no pairs to load');
    for (const p of pairs) if (p.generated.length === 0) throw new Error(`PairLoader: pair '${p.id}' has no generated image`);
    this.pairs = pairs;
    this.decodedFiles = this.source ? null : new Set();
    this.opts = opts;
    this.batchSize = opts.batchSize;
    this.dropLast = opts.dropLast ?? (this.source !== null || pairs.length >= 2 * opts.batchSize);
    const perStep = opts.batchesPerStep ?? 1;
    if (!Number.isInteger(perStep) || perStep <= 0) throw new Error(`PairLoader: batchesPerStep must be a positive integer, got ${perStep}`);
    // A streamed source knows no epoch length: its batches carry their own epoch, index and position.
    this.batchesPerEpoch = this.source ? Number.POSITIVE_INFINITY : epochBatches(pairs.length, opts.batchSize, this.dropLast, perStep);
    this.prefetchDepth = Math.max(0, Math.floor(opts.prefetch ?? 2));
    this.maxBadFraction = opts.maxBadFraction ?? 0.05;
    if (!(this.maxBadFraction >= 0 && this.maxBadFraction <= 1)) throw new Error(`PairLoader: maxBadFraction must be in [0, 1], got ${this.maxBadFraction}`);
    this.decode = opts.decode ?? ((src, cfg) => this.pool().preprocess(src, cfg));
    this.warn = opts.onWarn ?? ((m) => process.stderr.write(m + '\n'));
    const start = opts.start ?? { epoch: 0, batch: 0 };
    if (!Number.isInteger(start.epoch) || start.epoch < 0 || !Number.isInteger(start.batch) || start.batch < 0) {
      throw new Error(`PairLoader: start must be non-negative integers, got ${JSON.stringify(start)}`);
    }
    this.schedEpoch = start.epoch + Math.floor(start.batch / this.batchesPerEpoch);
    this.schedBatch = start.batch % this.batchesPerEpoch;
  }

  /** Pair indices in the order epoch `epoch` visits them (a pure function of seed and epoch). */
  epochOrder(epoch: number): number[] {
    let order = this.orders.get(epoch);
    if (!order) {
      order = this.pairs.map((_, i) => i);
      if (this.opts.shuffle ?? true) {
        const rand = mulberry32(epochSeed(this.opts.seed, epoch));
        for (let i = order.length - 1; i > 0; i--) {
          const j = Math.floor(rand() * (i + 1));
          [order[i], order[j]] = [order[j], order[i]];
        }
      }
      // Only a few epochs are ever live (current + prefetched); keep the cache small.
      if (this.orders.size >= 4) this.orders.delete(this.orders.keys().next().value as number);
      this.orders.set(epoch, order);
    }
    return order;
  }

  /** Which of the pair's generated images epoch `epoch` uses: seeded by (seed, epoch, id). */
  generatedIndex(epoch: number, pair: Pair): number {
    return generatedChoice(this.opts.seed, epoch, pair.id, pair.generated.length);
  }

  /** Position of the next batch next() returns (before any prefetch), for checkpoints; a list of pairs only (a streamed batch carries `after`). */
  get position(): { epoch: number; batch: number } {
    if (this.source) throw new Error('PairLoader.position: a streamed source has no epoch index; use the batches\' `after`');
    // The queue holds scheduled-but-unreturned batches; step back over them.
    let e = this.schedEpoch;
    let b = this.schedBatch - this.queue.length;
    while (b < 0) {
      e--;
      b += this.batchesPerEpoch;
    }
    return { epoch: e, batch: b };
  }

  /** Distinct files that failed to decode so far. */
  get badCount(): number {
    return this.badFiles.size;
  }

  /** Distinct files decoded (or attempted) so far; for a streamed source, decodes (and samples it left out). */
  get seenCount(): number {
    return this.decodedFiles ? this.decodedFiles.size : this.decodeCount;
  }

  /** Skips n batches without decoding them; only before the first next(). */
  skipBatches(n: number): void {
    if (this.started) throw new Error('PairLoader.skipBatches: call it before the first next() (or construct with start: {epoch, batch})');
    if (this.source) throw new Error('PairLoader.skipBatches: a streamed source starts where its own position says');
    if (!Number.isInteger(n) || n < 0) throw new Error(`PairLoader.skipBatches: n must be a non-negative integer, got ${n}`);
    const total = this.schedBatch + n;
    this.schedEpoch += Math.floor(total / this.batchesPerEpoch);
    this.schedBatch = total % this.batchesPerEpoch;
  }

  /**
   * The next batch (epochs roll over forever; see batch.epoch / batch.index). A batch in which
   * every pair failed to decode is passed over. Rejects with TooManyBadImagesError when the
   * bad fraction is exceeded; after any failure every later call rejects with the same error.
   */
  async next(): Promise<PairBatch> {
    if (this.closed) throw new Error('PairLoader.next: the loader is closed');
    // A pool that cannot be created is this call's error, not a decode error of each file.
    if (!this.opts.decode) this.pool();
    this.started = true;
    for (;;) {
      if (this.failure) throw this.failure;
      if (this.queue.length === 0) this.schedule();
      const head = this.queue.shift()!;
      while (this.queue.length < this.prefetchDepth) this.schedule();
      const batch = await head;
      if (batch.ids.length > 0) return batch;
    }
  }

  /**
   * Waits for every decode started to settle (so no work outlives the loader), drops the
   * batches and ends the pool the loader started, if any. next() rejects afterwards.
   */
  async close(): Promise<void> {
    this.closed = true;
    this.queue.length = 0;
    await this.tail.catch(() => undefined);
    await Promise.all(this.decoding);
    await this.planTail.catch(() => undefined);
    await this.source?.close();
    await this.ownPool?.close();
  }

  private pool(): PreprocessPool {
    if (this.opts.pool) return this.opts.pool;
    this.ownPool ??= new PreprocessPool();
    return this.ownPool;
  }

  /** The next batch of the list of pairs, from the epoch order. */
  private planFromPairs(): BatchPlan {
    const epoch = this.schedEpoch;
    const index = this.schedBatch;
    if (++this.schedBatch === this.batchesPerEpoch) {
      this.schedBatch = 0;
      this.schedEpoch++;
    }
    const order = this.epochOrder(epoch);
    const members = order.slice(index * this.batchSize, (index + 1) * this.batchSize).map((i): LoaderMember => {
      const p = this.pairs[i];
      return { id: p.id, real: p.real, gen: p.generated[this.generatedIndex(epoch, p)], caption: p.caption };
    });
    return { epoch, index, members };
  }

  /** Starts the decodes of a planned batch (the pool queues them for its workers). */
  private startDecodes(plan: BatchPlan): { member: LoaderMember; genPix: Promise<Float32Array | Error>; realPix: Promise<Float32Array | Error | null> }[] {
    const cfg = this.opts.preprocess;
    const realNeeded = this.opts.realNeeded ?? (() => true);
    const settle = (src: ImageSource): Promise<Float32Array | Error> => {
      const path = sourceName(src);
      if (this.badFiles.has(path)) return Promise.resolve(new ImageDecodeError(this.badFiles.get(path)!));
      const pix = this.decode(src, cfg).then(
        (x) => x,
        (e: unknown) => (e instanceof Error ? e : new Error(String(e))),
      );
      this.decoding.add(pix);
      void pix.then(() => this.decoding.delete(pix));
      return pix;
    };
    return plan.members.map((m) => ({ member: m, genPix: settle(m.gen), realPix: realNeeded(m.id, m) ? settle(m.real) : Promise.resolve(null) }));
  }

  private schedule(): void {
    // A list of pairs plans at once; a streamed source reads its samples first (one plan at a time, in order).
    let planned: Promise<{ plan: BatchPlan; jobs: ReturnType<PairLoader['startDecodes']> }>;
    if (this.source) {
      const source = this.source;
      planned = this.planTail.then(async () => {
        const plan = await source.next();
        return { plan, jobs: this.startDecodes(plan) };
      });
      this.planTail = planned.catch(() => undefined);
    } else {
      const plan = this.planFromPairs();
      planned = Promise.resolve({ plan, jobs: this.startDecodes(plan) });
    }
    // Decodes start as soon as a batch is planned, but batches are finalised one after another.
    const result = this.tail.then(async () => {
      if (this.failure) throw this.failure;
      const { plan, jobs } = await planned;
      const rows: { member: LoaderMember; genPix: Float32Array; realPix: Float32Array | null }[] = [];
      let skipped = 0;
      this.noteSourceProblems();
      for (const j of jobs) {
        const genPix = await j.genPix;
        const realPix = await j.realPix;
        let ok = true;
        for (const [src, pix] of [[j.member.gen, genPix], [j.member.real, realPix]] as const) {
          if (pix === null) continue;
          const path = sourceName(src);
          this.decodedFiles?.add(path);
          this.decodeCount++;
          if (pix instanceof Error) {
            ok = false;
            if (!this.badFiles.has(path)) {
              // sharp reports bad files through ImageDecodeError or plain Errors (e.g. a truncated
              // body after a valid header); programming errors and a failed worker pool are not
              // the file's fault.
              if (pix instanceof TypeError || pix instanceof ReferenceError || pix instanceof PreprocessWorkerError) throw pix;
              this.badFiles.set(path, pix.message);
              this.warn(`warning: skipping pair '${j.member.id}': ${pix.message.startsWith(path) ? pix.message : `${path}: ${pix.message}`}`);
            }
          }
        }
        if (ok) rows.push({ member: j.member, genPix: genPix as Float32Array, realPix: realPix as Float32Array | null });
        else skipped++;
      }
      this.checkBadFraction();
      return this.pack(plan, rows, skipped);
    });
    const guarded = result.catch((e: unknown) => {
      this.failure ??= e instanceof Error ? e : new Error(String(e));
      throw this.failure;
    });
    // The chain and the queue must not report unhandled rejections; next() rethrows them.
    this.tail = guarded.catch(() => undefined);
    guarded.catch(() => undefined);
    this.queue.push(guarded);
  }

  /** Samples a streamed source left out count as bad files (each once, with its reason). */
  private noteSourceProblems(): void {
    if (!this.source) return;
    for (const [name, reason] of this.source.takeProblems()) {
      if (this.badFiles.has(name)) continue;
      this.badFiles.set(name, `${name}: ${reason}`);
      this.decodeCount++;
      this.warn(`warning: skipping sample ${name}: ${reason}`);
    }
  }

  private checkBadFraction(): void {
    const bad = this.badFiles.size;
    if (bad === 0) return;
    const denominator = Math.max(this.seenCount, Math.min(MIN_BAD_SAMPLE, this.distinctFileCount()));
    if (bad > this.maxBadFraction * denominator) {
      const examples = [...this.badFiles.values()].slice(0, 5);
      throw new TooManyBadImagesError(
        `too many unreadable images: ${bad} of ${this.seenCount} decoded files failed (more than ${(this.maxBadFraction * 100).toFixed(1)}% allowed). ` +
          `Examples:\n  ${listWithRest(examples, 5)}\nRe-encode or remove them (npm run train -- --validate lists them all), or raise the allowed fraction (--max-bad-fraction, now ${this.maxBadFraction}).`,
      );
    }
  }

  private fileCount: number | null = null;
  private distinctFileCount(): number {
    if (this.source) return Number.POSITIVE_INFINITY;
    this.fileCount ??= new Set(this.pairs.flatMap((p) => [p.real, ...p.generated])).size;
    return this.fileCount;
  }

  private pack(plan: BatchPlan, rows: { member: LoaderMember; genPix: Float32Array; realPix: Float32Array | null }[], skipped: number): PairBatch {
    const n = rows.length;
    const per = rows.length ? rows[0].genPix.length : 0;
    for (const r of rows) {
      if (r.genPix.length !== per || (r.realPix && r.realPix.length !== per)) {
        throw new Error(`PairLoader: images of one batch decoded to different sizes (${sourceName(r.member.gen)}: ${r.genPix.length} floats, expected ${per}); the preprocess config must crop to a fixed size`);
      }
    }
    const generated = new Float32Array(n * per);
    rows.forEach((r, i) => generated.set(r.genPix, i * per));
    const realRows = rows.flatMap((r, i) => (r.realPix ? [i] : []));
    const real = new Float32Array(realRows.length * per);
    realRows.forEach((row, k) => real.set(rows[row].realPix!, k * per));
    return {
      epoch: plan.epoch,
      index: plan.index,
      ids: rows.map((r) => r.member.id),
      generated,
      generatedPaths: rows.map((r) => sourceName(r.member.gen)),
      real,
      realRows,
      realPaths: rows.map((r) => sourceName(r.member.real)),
      captions: rows.map((r) => r.member.caption),
      realKeys: rows.map((r) => r.member.realKey),
      skipped,
      ...(plan.after ? { after: plan.after } : {}),
    };
  }
}
