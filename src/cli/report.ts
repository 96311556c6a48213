// Entry point of `npm run report`; see report-command.ts.
import { runMain } from './main.ts';
import { runReport } from './report-command.ts';

runMain(runReport);
