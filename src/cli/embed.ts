// Entry point of `npm run embed`; see embed-command.ts.
import { runMain } from './main.ts';
import { runEmbed } from './embed-command.ts';

runMain(runEmbed);
