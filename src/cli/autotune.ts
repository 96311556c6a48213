// Entry point of `npm run autotune`; see autotune-command.ts.
import { runMain } from './main.ts';
import { runAutotune } from './autotune-command.ts';

runMain(runAutotune);
