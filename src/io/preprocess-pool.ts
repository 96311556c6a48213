// A pool of worker threads (node:worker_threads) that run preprocessImage, so that image
// preprocessing uses several cores and leaves the main thread to the GPU loop. The resize
// (io/resample.ts) and the byte → float step are JavaScript and would otherwise run on the
// main thread (about 10 ms for a 512×384 JPEG at crop 224; docs/data-format.md).
//
// Results are exactly preprocessImage's: the worker (io/preprocess-worker.ts) calls the same
// decodeRgbSource and preprocessDecoded that preprocessImage composes, and a file that fails to
// decode rejects with the same ImageDecodeError message. Its decoder message is built here on
// the main thread (image.ts's imageDecodeError, whose retries run one at a time per process:
// libvips's error buffer is shared by all threads, workers included).
//
// Lifetime: a pool is created and closed explicitly. Workers start when requests need them: a
// new one (up to `size`) whenever every worker holds `perWorker` requests, so a call with a few
// files starts one or two, a batch of hundreds all of them; they then stay until close(), which
// rejects the files not yet started, ends the workers and resolves once none is left. An idle
// worker is unref()'d, so a pool does not by itself keep the process alive; one with work in
// flight is ref()'d, so an awaited result is never cut off by the process exiting.
//
// Order: requests start in the order they are made (one queue; the least busy worker takes the
// oldest), at most `perWorker` per worker at a time (default 4: while a worker resizes one
// image, the next ones decode on libuv threads; with 2 a worker was idle about 20% of the time
// on 512×384 JPEGs). Each request's promise settles with its own file's result, so a caller
// that awaits its promises in order (PairLoader finalises batches strictly in order) sees
// request order. Float32Array results come back transferred, not copied.
//
// Failures: a worker that exits while it holds requests (a crash, or a terminate()) rejects each
// of them with a PreprocessWorkerError that names the file and says why; later requests go to a
// new worker. A worker that exits before it has loaded (its entry file missing or broken), or
// one that cannot be created, makes the pool fail: every pending and later request rejects
// with that reason, and no other worker is started (it would fail the same way).
//
// Where the worker entry is: from the TypeScript sources it is ./preprocess-worker.ts beside this
// file. Node 20 does not give workers the main thread's tsx hooks (`--import tsx` is passed on
// through execArgv, but tsx registers its loader only on the main thread there), so a worker
// of a .ts entry starts from a small bootstrap module that registers tsx (tsx/esm/api) and then
// imports the entry. In the esbuild bundle the entry is its own file, dist/preprocess-worker.js;
// scripts/build.mjs makes each bundle entry point call registerPreprocessWorker with that file's
// URL relative to the entry before any of the entry's code runs.
import { Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
// image.ts loads sharp on the main thread before any worker exists. sharp's shared libraries
// must stay loaded while workers come and go (on glibc a worker's exit could otherwise unload
// them under the other threads).
import { ImageDecodeError, imageDecodeError, sourceName, type ImageSource, type PreprocessConfig } from './image.ts';

/** A request to a worker. */
export interface PreprocessRequest {
  id: number;
  /** A file's path, or an image file's bytes with its name (a tar shard's member; the bytes are copied to the worker). */
  src: ImageSource;
  cfg: PreprocessConfig;
}

/** A worker's reply to request `id`. `stage` says whether the decode or a later step failed. */
export type PreprocessReply =
  | { id: number; ok: true; data: Float32Array }
  | { id: number; ok: false; stage: 'decode' | 'process'; name: string; message: string; stack?: string };

/**
 * A file was not preprocessed because of the pool, not because of the file: its worker stopped
 * (crash or terminate), the pool could not start a worker, or the pool was closed. The message
 * starts with the file's path.
 */
export class PreprocessWorkerError extends Error {}

export interface PreprocessPoolOptions {
  /** Most worker threads (default defaultPoolSize()). */
  size?: number;
  /** Requests in flight per worker (default 4). */
  perWorker?: number;
  /** The worker entry (default: the registered bundle file, else ./preprocess-worker.ts beside this module). */
  workerUrl?: URL;
}

/** One worker per core but one, which is left to the main thread (GPU loop, Dawn); at least 1. */
export function defaultPoolSize(): number {
  return Math.max(1, availableParallelism() - 1);
}

let registeredWorkerUrl: URL | null = null;

/** Sets where the worker entry is; the bundle's entry points call it (scripts/build.mjs). */
export function registerPreprocessWorker(url: URL): void {
  registeredWorkerUrl = url;
}

/** The worker entry that new pools use. */
export function preprocessWorkerUrl(): URL {
  return registeredWorkerUrl ?? new URL('./preprocess-worker.ts', import.meta.url);
}

let liveWorkers = 0;

/** Workers of all pools in this process that have started and not yet exited (tests check it returns to 0). */
export function livePreprocessWorkers(): number {
  return liveWorkers;
}

interface Job {
  id: number;
  src: ImageSource;
  /** The name messages give the source. */
  path: string;
  cfg: PreprocessConfig;
  resolve: (x: Float32Array) => void;
  reject: (e: Error) => void;
}

interface Slot {
  worker: Worker;
  /** Requests posted to this worker and not yet answered. */
  jobs: Map<number, Job>;
  /** The worker has loaded its modules (posted { ready: true }). */
  ready: boolean;
  /** The uncaught error the worker died of, if any. */
  error: Error | null;
}

/** Starts a worker on `url`; a .ts entry is started through a bootstrap that registers tsx first. */
function startWorker(url: URL): Worker {
  if (!url.pathname.endsWith('.ts')) return new Worker(url);
  let tsx: string;
  try {
    tsx = import.meta.resolve('tsx/esm/api');
  } catch {
    throw new Error(`the image preprocessing worker ${url.href} is TypeScript, which needs tsx (a devDependency: npm ci), or run the bundle (npm run build)`);
  }
  const bootstrap = `import { register } from ${JSON.stringify(tsx)};\nregister();\nawait import(${JSON.stringify(url.href)});\n`;
  return new Worker(new URL(`data:text/javascript,${encodeURIComponent(bootstrap)}`));
}

/** A worker's error as an Error of the same class where that class matters to callers. */
function revive(reply: Extract<PreprocessReply, { ok: false }>): Error {
  const classes: Record<string, new (message: string) => Error> = { ImageDecodeError, TypeError, RangeError, ReferenceError, SyntaxError };
  const e = new (classes[reply.name] ?? Error)(reply.message);
  if (reply.stack) e.stack = reply.stack;
  return e;
}

export class PreprocessPool {
  /** Most workers this pool starts. */
  readonly maxWorkers: number;
  readonly perWorker: number;
  private readonly workerUrl: URL;
  private readonly slots = new Set<Slot>();
  private readonly queue: Job[] = [];
  private queueHead = 0;
  private nextId = 0;
  private closing: Promise<void> | null = null;
  /** Why the pool cannot work (a worker could not start); set once. */
  private failure: string | null = null;

  constructor(opts: PreprocessPoolOptions = {}) {
    this.maxWorkers = opts.size ?? defaultPoolSize();
    if (!Number.isInteger(this.maxWorkers) || this.maxWorkers < 1) throw new Error(`PreprocessPool: size must be a positive integer, got ${this.maxWorkers}`);
    this.perWorker = opts.perWorker ?? 4;
    if (!Number.isInteger(this.perWorker) || this.perWorker < 1) throw new Error(`PreprocessPool: perWorker must be a positive integer, got ${this.perWorker}`);
    this.workerUrl = opts.workerUrl ?? preprocessWorkerUrl();
  }

  /** Live workers of this pool (0 before the first request and once close() has resolved). */
  get size(): number {
    return this.slots.size;
  }

  /** preprocessImage(src, cfg) in a worker: the same floats, or the same ImageDecodeError. */
  preprocess(src: ImageSource, cfg: PreprocessConfig): Promise<Float32Array> {
    const path = sourceName(src);
    if (this.closing) return Promise.reject(new PreprocessWorkerError(`${path}: not preprocessed: the image preprocessing pool is closed`));
    if (this.failure) return Promise.reject(new PreprocessWorkerError(`${path}: not preprocessed: ${this.failure}`));
    return new Promise<Float32Array>((resolve, reject) => {
      this.queue.push({ id: this.nextId++, src, path, cfg, resolve, reject });
      this.dispatch();
    });
  }

  /**
   * Rejects the requests not yet started, ends every worker (requests in flight reject with
   * PreprocessWorkerError) and resolves when all have exited. Later calls return the same promise.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.rejectQueued('the image preprocessing pool was closed');
      await Promise.all([...this.slots].map((s) => s.worker.terminate()));
    })();
    return this.closing;
  }

  private spawn(): Slot {
    const worker = startWorker(this.workerUrl);
    const slot: Slot = { worker, jobs: new Map(), ready: false, error: null };
    this.slots.add(slot);
    liveWorkers++;
    worker.unref();
    worker.on('message', (msg: PreprocessReply | { ready: true }) => this.onMessage(slot, msg));
    worker.on('error', (e: Error) => {
      slot.error ??= e;
    });
    // A reply that cannot be deserialised leaves its request unanswerable: end the worker,
    // which rejects everything it holds.
    worker.on('messageerror', (e: Error) => {
      slot.error ??= e;
      void worker.terminate();
    });
    worker.on('exit', (code: number) => this.onExit(slot, code));
    return slot;
  }

  private onMessage(slot: Slot, msg: PreprocessReply | { ready: true }): void {
    if ('ready' in msg) {
      slot.ready = true;
      return;
    }
    const job = slot.jobs.get(msg.id);
    if (!job) return;
    slot.jobs.delete(msg.id);
    if (slot.jobs.size === 0) slot.worker.unref();
    this.dispatch();
    if (msg.ok) job.resolve(msg.data);
    else if (msg.stage === 'decode') imageDecodeError(job.src, revive(msg)).then(job.reject, job.reject);
    else job.reject(revive(msg));
  }

  private onExit(slot: Slot, code: number): void {
    this.slots.delete(slot);
    liveWorkers--;
    const reason = slot.error ? `${slot.error.name}: ${slot.error.message}` : `exit code ${code}`;
    let why: string;
    if (this.closing) why = 'the image preprocessing pool was closed before this file was finished';
    else if (this.failure) why = this.failure;
    else if (!slot.ready) {
      this.failure = `the image preprocessing worker (${this.workerUrl.href}) could not start: ${reason}`;
      why = this.failure;
    } else why = `the image preprocessing worker stopped (${reason}) before finishing this file`;
    for (const job of slot.jobs.values()) job.reject(new PreprocessWorkerError(`${job.path}: not preprocessed: ${why}`));
    slot.jobs.clear();
    if (this.closing) return;
    if (this.failure) this.fail(this.failure);
    else this.dispatch();
  }

  /** Makes the pool fail for `why`: queued requests reject and the other workers end. */
  private fail(why: string): void {
    this.failure ??= why;
    this.rejectQueued(this.failure);
    for (const s of this.slots) void s.worker.terminate();
  }

  /**
   * Posts the oldest queued requests to the least busy workers that have room, starting a worker
   * when none has room and the pool is below its size.
   */
  private dispatch(): void {
    while (this.queueHead < this.queue.length) {
      let best: Slot | null = null;
      for (const s of this.slots) if (s.jobs.size < this.perWorker && (!best || s.jobs.size < best.jobs.size)) best = s;
      if (!best && this.slots.size < this.maxWorkers) {
        try {
          best = this.spawn();
        } catch (e) {
          this.fail(`the image preprocessing worker could not be started: ${e instanceof Error ? e.message : String(e)}`);
          return;
        }
      }
      if (!best) break;
      const job = this.queue[this.queueHead++];
      if (best.jobs.size === 0) best.worker.ref();
      best.jobs.set(job.id, job);
      const req: PreprocessRequest = { id: job.id, src: job.src, cfg: job.cfg };
      try {
        best.worker.postMessage(req);
      } catch (e) {
        best.jobs.delete(job.id);
        if (best.jobs.size === 0) best.worker.unref();
        job.reject(e instanceof Error ? e : new Error(String(e)));
      }
    }
    this.compactQueue();
  }

  private rejectQueued(why: string): void {
    while (this.queueHead < this.queue.length) {
      const job = this.queue[this.queueHead++];
      job.reject(new PreprocessWorkerError(`${job.path}: not preprocessed: ${why}`));
    }
    this.compactQueue();
  }

  /** Drops the started requests from the front of the queue once they are a good part of it. */
  private compactQueue(): void {
    if (this.queueHead > 1024 && this.queueHead * 2 > this.queue.length) {
      this.queue.splice(0, this.queueHead);
      this.queueHead = 0;
    } else if (this.queueHead === this.queue.length) {
      this.queue.length = 0;
      this.queueHead = 0;
    }
  }
}
