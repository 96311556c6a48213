// An entry point that test/io/preprocess-pool.test.ts bundles (scripts/build.mjs --outdir DIR
// test/helpers/bundle-pool-check.ts) and runs without tsx: preprocesses the image named by its
// argument in a PreprocessPool and prints the worker file used, the floats (base64) and the
// number of live workers after close().
import { defaultPreprocess } from '../../src/io/image.ts';
import { PreprocessPool, livePreprocessWorkers, preprocessWorkerUrl } from '../../src/io/preprocess-pool.ts';

const pool = new PreprocessPool({ size: 1 });
let data: Float32Array;
try {
  data = await pool.preprocess(process.argv[2], defaultPreprocess(32));
} finally {
  await pool.close();
}
const base64 = Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('base64');
console.log(JSON.stringify({ worker: preprocessWorkerUrl().href, data: base64, live: livePreprocessWorkers() }));
