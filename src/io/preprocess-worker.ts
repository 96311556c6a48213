// The worker thread of io/preprocess-pool.ts: runs preprocessImage's steps (decode, convert,
// resize, crop, byte → float) for the files the pool sends and posts the CHW float32 results
// back, their buffers transferred (not copied).
//
// A failed decode is posted back as the decoder's first error (class name and message), without
// the retries of image.ts's decoderMessage: libvips keeps one error buffer per process, shared
// by every worker, so those retries must run one at a time across the whole process, which the
// main thread does when it builds the ImageDecodeError. Every other failure is posted with its
// class name, message and stack.
//
// Protocol (types in preprocess-pool.ts): the worker posts { ready: true } once its modules are
// loaded; then for each request { id, src, cfg } it posts one reply with the same id.
import { parentPort } from 'node:worker_threads';
import { decodeRgbSource, preprocessDecoded } from './image.ts';
import type { Pixels } from './resample.ts';
import type { PreprocessReply, PreprocessRequest } from './preprocess-pool.ts';

const port = parentPort;
if (!port) throw new Error('io/preprocess-worker.ts runs as a worker thread of PreprocessPool (io/preprocess-pool.ts), not on its own');

function failure(id: number, stage: 'decode' | 'process', e: unknown): PreprocessReply {
  if (e instanceof Error) return { id, ok: false, stage, name: e.constructor.name, message: e.message, stack: e.stack };
  return { id, ok: false, stage, name: 'Error', message: String(e) };
}

async function handle(req: PreprocessRequest): Promise<void> {
  let img: Pixels;
  try {
    img = await decodeRgbSource(req.src);
  } catch (e) {
    port!.postMessage(failure(req.id, 'decode', e));
    return;
  }
  let data: Float32Array<ArrayBuffer>;
  try {
    data = preprocessDecoded(img, req.cfg);
  } catch (e) {
    port!.postMessage(failure(req.id, 'process', e));
    return;
  }
  const reply: PreprocessReply = { id: req.id, ok: true, data };
  port!.postMessage(reply, [data.buffer]);
}

port.on('message', (req: PreprocessRequest) => {
  void handle(req);
});
port.postMessage({ ready: true });
