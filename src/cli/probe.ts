// Entry point of `npm run probe`; see probe-command.ts.
import { runMain } from './main.ts';
import { runProbe } from './probe-command.ts';

runMain(runProbe);
