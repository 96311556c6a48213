// Entry point of `npm run make-shards`; see make-shards-command.ts.
import { runMain } from './main.ts';
import { runMakeShards } from './make-shards-command.ts';

runMain(runMakeShards);
