// `npm run train` as a test process, with test doubles plugged in through runTrain's `inject`
// (the production entry point, src/cli/train.ts, passes none and reads no test settings):
//   GENALIGN_TEST_STEP_DELAY_MS=ms   wait after every step, so a test can signal the run mid-way
//   GENALIGN_TEST_FAULT=<mode>:<n>   file mutation n (1-based) fails: 'kill' (SIGKILL) or 'enospc'
//   GENALIGN_TEST_NAN_AT_STEP=k      the loss of step k is replaced by NaN
//   GENALIGN_TEST_PREPROCESS_WORKER=file   the preprocessing worker entry (when this file is bundled)
import { pathToFileURL } from 'node:url';
import { registerPreprocessWorker } from '../../src/io/preprocess-pool.ts';
import { runMain } from '../../src/cli/main.ts';
import { runTrain } from '../../src/cli/train-command.ts';
import { FaultyFiles, type FaultMode } from './faulty-files.ts';

const delay = Number(process.env.GENALIGN_TEST_STEP_DELAY_MS ?? 0);
const fault = /^(kill|enospc):(\d+)$/.exec(process.env.GENALIGN_TEST_FAULT ?? '');
const nanAt = Number(process.env.GENALIGN_TEST_NAN_AT_STEP ?? 0);
if (process.env.GENALIGN_TEST_PREPROCESS_WORKER) registerPreprocessWorker(pathToFileURL(process.env.GENALIGN_TEST_PREPROCESS_WORKER));

runMain((argv) =>
  runTrain(argv, {
    ...(fault ? { files: new FaultyFiles({ mode: fault[1] as FaultMode, at: Number(fault[2]) }) } : {}),
    ...(delay > 0 ? { onStep: () => new Promise<void>((r) => setTimeout(r, delay)) } : {}),
    ...(nanAt > 0 ? { transformLoss: (step: number, loss: number) => (step === nanAt ? Number.NaN : loss) } : {}),
  }),
);
