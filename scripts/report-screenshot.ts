// The README's screenshot of `npm run report`: serves RUN_DIR's report, opens it in headless
// Chromium (puppeteer-core, /usr/bin/chromium), selects a generated image of the "after" map,
// embeds one pair of the run's data live (the model folder MODEL, RUN_DIR/adapter) and saves a PNG.
//   node --import tsx scripts/report-screenshot.ts RUN_DIR OUT.png [MODEL]   (MODEL: default models/demo-clip)
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { startReportServer } from '../src/cli/report-command.ts';
import { loadDataset } from '../src/io/dataset.ts';
import { launchChromium } from '../test/helpers/chromium.ts';

const [dir, out, modelArg] = process.argv.slice(2);
const model = resolve(modelArg ?? 'models/demo-clip');
if (!dir || !out) throw new Error('usage: node --import tsx scripts/report-screenshot.ts RUN_DIR OUT.png');
const { url, close } = await startReportServer(dir);
const browser = await launchChromium();
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1000, height: 900 });
  await page.goto(url);
  await page.waitForSelector('body[data-ready="true"]');
  const gens = await page.$$('circle.pt[data-side="after"][data-kind="gen"]');
  const pick = gens[Math.floor(gens.length / 3)];
  await pick.click();
  await pick.hover();
  await page.waitForSelector('#detail .thumb img');
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as { data: string };
  const pair = loadDataset(config.data).pairs[0];
  const upload = async (id: string, paths: string[]): Promise<void> => {
    const input = await page.$(`#${id}`);
    await (input as unknown as { uploadFile(...p: string[]): Promise<void> }).uploadFile(...paths);
  };
  await upload('model-files', [model]);
  await page.waitForFunction("/^(model loaded|error)/.test(document.getElementById('live-status').textContent)", { timeout: 120_000 });
  await upload('adapter-files', [join(dir, 'adapter')]);
  await page.waitForFunction("/^(adapter loaded|error)/.test(document.getElementById('live-status').textContent)", { timeout: 120_000 });
  await upload('image-files', [pair.real, pair.generated[0]]);
  await page.waitForSelector('#live-out .pair-cos', { timeout: 120_000 });
  await pick.hover();
  await new Promise((r) => setTimeout(r, 500));
  await page.screenshot({ path: out, fullPage: true });
  console.log(`wrote ${out} (${url})`);
} finally {
  await browser.close();
  await close();
}
