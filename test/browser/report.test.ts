// npm run report: the page of a short training run's final eval, opened in headless Chromium:
// it loads with no console error, draws both maps, shows a point's image on hover and the pair's
// nearest real images on click; a screenshot is saved in the test's temporary folder. A folder
// without eval's files is refused, naming what to run.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, rmSync, statSync } from 'node:fs';
import { loadDataset } from '../../src/io/dataset.ts';
import { join } from 'node:path';
import { getDevice } from '../../src/gpu/device.ts';
import { train } from '../../src/train/trainer.ts';
import { disposeStudent } from '../../src/train/student.ts';
import { reportProblem, startReportServer } from '../../src/cli/report-command.ts';
import { tmp, tinyDataset } from '../cli/helpers.ts';
import { trainOptions } from '../helpers/train-options.ts';
import { chromiumMissing, launchChromium } from '../helpers/chromium.ts';

const root = tmp('report');
test.after(() => rmSync(root, { recursive: true, force: true }));

test('the report of a run: maps drawn, hover shows the image, click shows the nearest reals; no console error; screenshot saved', async () => {
  const missing = chromiumMissing();
  if (missing) {
    console.log(`  (skipped: ${missing})`);
    return;
  }
  const data = await tinyDataset(join(root, 'data'), 24);
  const device = await getDevice();
  // The demo CLIP (both towers, with its tokenizer): eval adds caption retrieval, which the page lists.
  const model = join(import.meta.dirname, '..', '..', 'models', 'demo-clip');
  const r = await train(device, trainOptions({ data, model, out: join(root, 'run'), cacheDir: join(root, 'cache'), steps: 3, batch: 8, valFraction: 0.5, eval: true, plot: 'pca' }), { log: () => undefined });
  disposeStudent(r.student);
  r.model.model.dispose();
  const fig = JSON.parse(readFileSync(join(r.runDir, 'figure3.json'), 'utf8')) as { pairs: unknown[]; plotted: number[]; nearest: { before: number[][] }; captions?: { after: number[][] } };
  assert.is(fig.captions?.after[0].length, 3, 'the captions each generated image retrieves');
  assert.ok(fig.pairs.length >= 2 && fig.plotted.length === fig.pairs.length, 'every evaluated pair drawn');
  assert.is(fig.nearest.before[0].length, Math.min(5, fig.pairs.length));
  assert.match(reportProblem(join(root, 'data')) ?? '', 'has no metrics.json: the report shows what eval writes');

  const { url, close } = await startReportServer(r.runDir);
  const browser = await launchChromium();
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: 1000, height: 900 });
    const errors: string[] = [];
    page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(url);
    await page.waitForSelector('body[data-ready="true"]', { timeout: 30_000 });
    const points = await page.$$eval('circle.pt', (c) => c.length);
    assert.is(points, 2 * 2 * fig.plotted.length, 'both panels draw every real and generated point');
    // Hover a generated point of the "after" map: its thumbnail appears and loads.
    await page.hover('circle.pt[data-side="after"][data-kind="gen"]');
    await page.waitForFunction("(() => { const tip = document.getElementById('tip'); const img = tip.querySelector('img'); return tip.style.display === 'block' && img.complete && img.naturalWidth > 0; })()", { timeout: 10_000 });
    // Click it: the pair is linked in both maps and its nearest real images are listed.
    await page.click('circle.pt[data-side="after"][data-kind="gen"]');
    await page.waitForSelector('#detail .thumb img');
    assert.is(await page.$$eval('line.link', (l) => l.length), 2, 'the pair linked in both panels');
    assert.is(await page.$$eval('#detail .thumb', (t) => t.length), 2 + 2 * Math.min(5, fig.pairs.length));
    assert.is(await page.$$eval('#detail .captions li', (l) => l.length), 6, 'three captions retrieved before and after');
    // Live: the model and adapter folders picked, two images chosen, embedded in the page.
    const upload = async (id: string, paths: string[]): Promise<void> => {
      const input = await page.$(`#${id}`);
      await (input as unknown as { uploadFile(...p: string[]): Promise<void> }).uploadFile(...paths);
    };
    // A folder input takes the folder (Chromium gives its files webkitRelativePath).
    await upload('model-files', [model]);
    const liveStatus = (): Promise<string> => page.$eval('#live-status', (e) => e.textContent ?? '');
    await page.waitForFunction("/^(model loaded|error)/.test(document.getElementById('live-status').textContent)", { timeout: 60_000 });
    assert.match(await liveStatus(), /^model loaded/);
    await upload('adapter-files', [join(r.runDir, 'adapter')]);
    await page.waitForFunction("/^(adapter loaded|error)/.test(document.getElementById('live-status').textContent)", { timeout: 60_000 });
    assert.match(await liveStatus(), /^adapter loaded/);
    const pairs = loadDataset(data).pairs;
    await upload('image-files', [pairs[0].real, pairs[0].generated[0]]);
    await page.waitForSelector('#live-out .pair-cos', { timeout: 60_000 });
    const liveText = await page.$eval('#live-out', (e) => e.textContent ?? '');
    assert.match(liveText, /paired cosine, real = .*: before -?\d\.\d{3} → after -?\d\.\d{3}/);
    assert.match(liveText, /student's captions: /, 'the demo CLIP has a text tower: captions retrieved live');
    const shot = join(root, 'report.png');
    await page.screenshot({ path: shot, fullPage: true });
    assert.ok(statSync(shot).size > 10_000, 'screenshot written');
    assert.equal(errors, [], 'no console errors');
  } finally {
    await browser.close();
    await close();
  }
});

test.run();
