// Entry point of `npm run train`; see train-command.ts.
import { runMain } from './main.ts';
import { runTrain } from './train-command.ts';

runMain(runTrain);
