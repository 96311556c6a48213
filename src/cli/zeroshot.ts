// Entry point of `npm run zeroshot`; see zeroshot-command.ts.
import { runMain } from './main.ts';
import { runZeroShot } from './zeroshot-command.ts';

runMain(runZeroShot);
