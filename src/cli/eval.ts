// Entry point of `npm run eval`; see eval-command.ts.
import { runMain } from './main.ts';
import { runEval } from './eval-command.ts';

runMain(runEval);
