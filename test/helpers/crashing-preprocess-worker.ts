// A preprocessing worker that fails on request, for test/io/preprocess-pool.test.ts: a request
// whose path contains "EXIT" ends the worker thread at once (process.exit(7), as terminate() or
// a fatal error would), one whose path contains "THROW" makes it throw an uncaught error. Every
// request is also served by the real worker (src/io/preprocess-worker.ts), loaded first.
import { parentPort } from 'node:worker_threads';
import '../../src/io/preprocess-worker.ts';

parentPort!.on('message', (req: { src: string }) => {
  if (req.src.includes('EXIT')) process.exit(7);
  if (req.src.includes('THROW')) {
    setImmediate(() => {
      throw new Error('boom in the worker');
    });
  }
});
