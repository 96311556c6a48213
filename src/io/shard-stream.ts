// Training samples streamed out of WebDataset shards (io/webdataset.ts), as WebDataset's own
// pipeline streams them: each epoch reads the shards in a seeded order, one after another, and
// passes their samples through a shuffle buffer (a sample enters at the back; once the buffer
// holds `bufferSize` samples, a seeded draw picks the one that leaves). Only the buffer's
// samples (their encoded bytes) and the shard being read are in memory, however many shards
// there are.
//
// Exact resume. After every sample handed out, the stream's position is small and complete:
//   { epoch, shard: index into the epoch's shard order, sample: samples of that shard read,
//     rng: the shuffle generator's state, buffer: the buffered samples as [shard, sample] refs }
// A stream started at a saved position reads the referenced samples again (only their shards,
// which lie within the last bufferSize samples read), skips the read part of the current shard
// without decoding images, and continues with exactly the draws and samples the interrupted
// stream would have made. Positions go into checkpoints (train's TrainerState.stream).
//
// Epochs. When every shard of an epoch is read, the buffer is drained in seeded order, then
// next() reports the epoch's end, and the next epoch starts with an empty buffer and a new shard
// order. ShardBatchSource cuts the stream into optimizer steps of whole micro-batches and drops
// the samples left at an epoch's end that do not fill a step, so no step holds a sample twice.
//
// Split. `keep` decides per sample whether it belongs to this stream (the training split: by
// id hash, as splitByValFraction decides for folder datasets; or all of them when a held-out
// shard is the validation split). Samples it rejects still count in the shard's sample index.
import { Mulberry32 } from '../nn/init.ts';
import type { Pair } from './dataset.ts';
import { sourceName, type ImageSource } from './image.ts';
import { readShard, type ShardProblem, type ShardSample } from './webdataset.ts';
import { epochSeed, generatedChoice, type BatchPlan, type BatchSource, type LoaderMember } from './loader.ts';

/** The salt of the shuffle buffer's draws (epochSeed's default salt seeds the shard order). */
const BUFFER_SALT = 0x2545f491;

/** Where a stream is, after the last sample it handed out (see the header). */
export interface StreamPosition {
  epoch: number;
  shard: number;
  sample: number;
  rng: number;
  buffer: [number, number][];
}

/** A sample with where it came from: [index of its shard in the shard list, index in that shard]. */
export interface StreamSample extends ShardSample {
  ref: [number, number];
}

export interface ShardStreamOptions {
  seed: number;
  /** Samples held for shuffling (default 1000; 0 or 1 keeps file order within a shard). */
  bufferSize?: number;
  /** Shuffle the shard order per epoch and the samples through the buffer (default true). */
  shuffle?: boolean;
  /** Whether a sample belongs to this stream (default: all). */
  keep?: (s: ShardSample) => boolean;
  /** Hears of samples left out (missing side, bad JSON, …), each time their shard is read. */
  onProblem?: (p: ShardProblem) => void;
  start?: StreamPosition;
}

/** The sources an image loader reads a sample's real and generated image `k` from (named "<shard>:<key>.real.<ext>"). */
export function sampleSources(s: ShardSample): { real: ImageSource; generated: ImageSource[] } {
  return {
    real: { name: `${s.shard}:${s.key}.real.${s.real.ext}`, bytes: s.real.data },
    generated: s.generated.map((g, k) => ({ name: `${s.shard}:${s.key}.gen${s.generated.length > 1 ? `.${k}` : ''}.${g.ext}`, bytes: g.data })),
  };
}

/**
 * The first `max` samples of `shards` (in order) that `take` accepts, as Pairs whose "paths" are
 * the members' names, with the bytes behind each name in `source` (for evaluation: evaluatePairs
 * and embedPaths read names through it). Memory holds those samples' encoded images.
 */
export async function readShardPairs(
  shards: readonly string[],
  opts: { max: number; take?: (s: ShardSample) => boolean; onProblem?: (p: ShardProblem) => void },
): Promise<{ pairs: Pair[]; source: Map<string, ImageSource> }> {
  const pairs: Pair[] = [];
  const source = new Map<string, ImageSource>();
  for (const shard of shards) {
    if (pairs.length >= opts.max) break;
    for await (const x of readShard(shard, opts.onProblem ?? (() => undefined))) {
      if (opts.take && !opts.take(x)) continue;
      const src = sampleSources(x);
      for (const g of [src.real, ...src.generated]) source.set(sourceName(g), g);
      pairs.push({ id: x.id, real: sourceName(src.real), generated: src.generated.map(sourceName), ...(x.caption !== undefined ? { caption: x.caption } : {}), ...(x.label !== undefined ? { label: x.label } : {}) });
      if (pairs.length >= opts.max) break;
    }
  }
  return { pairs, source };
}

export class ShardStream {
  readonly shards: readonly string[];
  private readonly opts: ShardStreamOptions;
  private readonly bufferSize: number;
  private epoch: number;
  private order: number[];
  private shardPos: number;
  private sampleIdx: number;
  private rng: Mulberry32;
  private buffer: StreamSample[] = [];
  private reader: AsyncGenerator<ShardSample> | null = null;
  /** Samples of the current shard to pass over before handing any out (a resume). */
  private skip: number;
  /** The saved position's buffer, read back at the first next(); null once it has been. */
  private pendingRefs: [number, number][] | null;
  private draining = false;

  constructor(shards: readonly string[], opts: ShardStreamOptions) {
    if (shards.length === 0) throw new Error('ShardStream: no shards');
    this.shards = shards;
    this.opts = opts;
    this.bufferSize = Math.max(1, Math.floor(opts.bufferSize ?? 1000));
    const s = opts.start ?? { epoch: 0, shard: 0, sample: 0, rng: epochSeed(opts.seed, 0, BUFFER_SALT), buffer: [] };
    for (const [i, j] of s.buffer) {
      if (!(Number.isInteger(i) && i >= 0 && i < shards.length && Number.isInteger(j) && j >= 0)) throw new Error(`ShardStream: the saved position names sample ${j} of shard ${i}, but there are ${shards.length} shards`);
    }
    this.epoch = s.epoch;
    this.order = this.shardOrder(s.epoch);
    this.shardPos = s.shard;
    this.sampleIdx = 0;
    this.skip = s.sample;
    this.rng = new Mulberry32(s.rng);
    this.pendingRefs = s.buffer.length ? s.buffer : null;
  }

  /** The epoch's shard order: indices into `shards`, seeded by (seed, epoch). */
  shardOrder(epoch: number): number[] {
    const order = this.shards.map((_, i) => i);
    if (this.opts.shuffle ?? true) {
      const g = new Mulberry32(epochSeed(this.opts.seed, epoch));
      for (let i = order.length - 1; i > 0; i--) {
        const j = Math.floor(g.next() * (i + 1));
        [order[i], order[j]] = [order[j], order[i]];
      }
    }
    return order;
  }

  /** Which generated image of `s` epoch `epoch` shows: seeded by (seed, epoch, id), like PairLoader's. */
  generatedIndex(epoch: number, s: ShardSample): number {
    return generatedChoice(this.opts.seed, epoch, s.id, s.generated.length);
  }

  /** The position after the last sample handed out (a copy). */
  position(): StreamPosition {
    return { epoch: this.epoch, shard: this.shardPos, sample: this.sampleIdx + this.skip, rng: this.rng.state, buffer: this.buffer.map((b) => [b.ref[0], b.ref[1]]) };
  }

  get currentEpoch(): number {
    return this.epoch;
  }

  /** The next sample of this epoch, or null at the epoch's end (the next call starts the next epoch). */
  async next(): Promise<StreamSample | null> {
    if (this.pendingRefs) await this.restoreBuffer(this.pendingRefs);
    for (;;) {
      if (this.draining) {
        if (this.buffer.length === 0) {
          this.draining = false;
          this.epoch++;
          this.order = this.shardOrder(this.epoch);
          this.shardPos = 0;
          this.sampleIdx = 0;
          this.rng = new Mulberry32(epochSeed(this.opts.seed, this.epoch, BUFFER_SALT));
          return null;
        }
        return this.draw();
      }
      const s = await this.read();
      if (!s) {
        this.draining = true;
        continue;
      }
      this.buffer.push(s);
      if (this.buffer.length >= this.bufferSize) return this.draw();
    }
  }

  /** Ends the shard reader in progress. */
  async close(): Promise<void> {
    await this.reader?.return(undefined);
    this.reader = null;
  }

  private draw(): StreamSample {
    const j = (this.opts.shuffle ?? true) ? Math.floor(this.rng.next() * this.buffer.length) : 0;
    const s = this.buffer[j];
    if (this.opts.shuffle ?? true) {
      this.buffer[j] = this.buffer[this.buffer.length - 1];
      this.buffer.pop();
    } else this.buffer.shift();
    return s;
  }

  /** The next kept sample of the epoch's shards in order, or null when all are read. */
  private async read(): Promise<StreamSample | null> {
    for (;;) {
      if (this.shardPos >= this.order.length) return null;
      const shardIndex = this.order[this.shardPos];
      this.reader ??= readShard(this.shards[shardIndex], (p) => this.opts.onProblem?.(p));
      const r = await this.reader.next();
      if (r.done) {
        this.reader = null;
        this.shardPos++;
        this.sampleIdx = 0;
        this.skip = 0;
        continue;
      }
      if (this.skip > 0) {
        this.skip--;
        this.sampleIdx++;
        continue;
      }
      const idx = this.sampleIdx++;
      if (this.opts.keep && !this.opts.keep(r.value)) continue;
      return { ...r.value, ref: [shardIndex, idx] };
    }
  }

  /** Reads the samples a saved position's buffer names, in buffer order. */
  private async restoreBuffer(refs: readonly [number, number][]): Promise<void> {
    const want = new Map<number, Set<number>>();
    for (const [i, j] of refs) {
      if (!want.has(i)) want.set(i, new Set());
      want.get(i)!.add(j);
    }
    const found = new Map<string, StreamSample>();
    for (const [i, js] of want) {
      let idx = 0;
      const last = Math.max(...js);
      for await (const s of readShard(this.shards[i], () => undefined)) {
        if (js.has(idx)) found.set(`${i}:${idx}`, { ...s, ref: [i, idx] });
        if (++idx > last) break;
      }
    }
    this.buffer = refs.map(([i, j]) => {
      const s = found.get(`${i}:${j}`);
      if (!s) throw new Error(`cannot resume the data stream: shard ${this.shards[i]} no longer has sample ${j} (the shards changed since the checkpoint was written; resume needs the same shards)`);
      return s;
    });
    this.pendingRefs = null;
  }
}

export interface ShardBatchSourceOptions {
  batchSize: number;
  /** Micro-batches per optimizer step (train --accum); a step never straddles two epochs. */
  batchesPerStep: number;
  /** The teacher cache key of a sample's real image (default: none, the cache is not used). */
  realKey?: (s: StreamSample) => string;
}

/**
 * A ShardStream cut into PairLoader batch plans: `batchesPerStep` micro-batches of `batchSize`
 * samples per step, all from one epoch (the samples an epoch leaves after its last whole step
 * are dropped, like PairLoader's dropLast), each step's last micro-batch carrying the stream's
 * position after it (what a checkpoint after that step saves).
 */
export class ShardBatchSource implements BatchSource {
  /** Samples the stream left out since takeProblems() last ran: ["<shard>:<key>", reason]. */
  private problems: [string, string][] = [];
  private readonly stream: ShardStream;
  private readonly ready: BatchPlan[] = [];
  private index = 0;

  constructor(
    shards: readonly string[],
    streamOpts: ShardStreamOptions,
    private readonly opts: ShardBatchSourceOptions,
  ) {
    this.stream = new ShardStream(shards, {
      ...streamOpts,
      onProblem: (p) => {
        this.problems.push([`${p.shard}:${p.key}`, p.reason]);
        streamOpts.onProblem?.(p);
      },
    });
  }

  async next(): Promise<BatchPlan> {
    const ready = this.ready.shift();
    if (ready) return ready;
    const { batchSize, batchesPerStep } = this.opts;
    const want = batchSize * batchesPerStep;
    let emptyEpochs = 0;
    for (;;) {
      const epoch = this.stream.currentEpoch;
      const samples: StreamSample[] = [];
      while (samples.length < want) {
        const s = await this.stream.next();
        if (!s) break;
        samples.push(s);
      }
      if (samples.length < want) {
        // The epoch ended inside this step: its samples are dropped, the next epoch starts.
        if (this.index === 0 && ++emptyEpochs >= 2) {
          throw new Error(`the shards (${this.stream.shards.length}) hold ${samples.length} training samples per epoch, fewer than one step takes (--batch ${batchSize} × --accum ${batchesPerStep} = ${want}): lower --batch or --accum, or add data`);
        }
        this.index = 0;
        continue;
      }
      const after = this.stream.position();
      for (let k = 0; k < batchesPerStep; k++) {
        const members = samples.slice(k * batchSize, (k + 1) * batchSize).map((s): LoaderMember => {
          const src = sampleSources(s);
          return {
            id: s.id,
            real: src.real,
            gen: src.generated[this.stream.generatedIndex(epoch, s)],
            ...(this.opts.realKey ? { realKey: this.opts.realKey(s) } : {}),
            ...(s.caption !== undefined ? { caption: s.caption } : {}),
          };
        });
        this.ready.push({ epoch, index: this.index++, members, ...(k === batchesPerStep - 1 ? { after } : {}) });
      }
      return this.ready.shift()!;
    }
  }

  takeProblems(): [string, string][] {
    const taken = this.problems;
    this.problems = [];
    return taken;
  }

  async close(): Promise<void> {
    await this.stream.close();
  }
}
