// The README's screenshot of `npm run report`: serves RUN_DIR's report, opens it in headless
// Chromium (puppeteer-core, /usr/bin/chromium), selects a generated image of the "after" map
// and saves a PNG.
//   node --import tsx scripts/report-screenshot.ts RUN_DIR OUT.png
import { startReportServer } from '../src/cli/report-command.ts';
import { launchChromium } from '../test/helpers/chromium.ts';

const [dir, out] = process.argv.slice(2);
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
  await new Promise((r) => setTimeout(r, 500));
  await page.screenshot({ path: out, fullPage: true });
  console.log(`wrote ${out} (${url})`);
} finally {
  await browser.close();
  await close();
}
