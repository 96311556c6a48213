// Entry point of `npm run cache-teacher`; see cache-teacher-command.ts.
import { runMain } from './main.ts';
import { runCacheTeacher } from './cache-teacher-command.ts';

runMain(runCacheTeacher);
