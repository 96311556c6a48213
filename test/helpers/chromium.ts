// Headless Chromium for the browser tests: Debian's /usr/bin/chromium (or $GENALIGN_CHROMIUM)
// driven by puppeteer-core, with WebGPU on (SwiftShader, a Vulkan CPU device, where there is no
// GPU). Where no Chromium is installed the tests skip with a message, except in CI (CI=true),
// where .ci/run installs it and a missing browser is a failure.
import { existsSync } from 'node:fs';
import puppeteer, { type Browser } from 'puppeteer-core';

export const CHROMIUM = process.env.GENALIGN_CHROMIUM ?? '/usr/bin/chromium';

/** Why the browser tests cannot run here (null: they can); throws in CI. */
export function chromiumMissing(): string | null {
  if (existsSync(CHROMIUM)) return null;
  const why = `${CHROMIUM} not found: install Debian's chromium (apt-get install chromium) or set GENALIGN_CHROMIUM`;
  if (process.env.CI === 'true') throw new Error(`browser tests: ${why} (CI installs it in .ci/run)`);
  return why;
}

export function launchChromium(): Promise<Browser> {
  return puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-angle=swiftshader', '--use-webgpu-adapter=swiftshader', '--no-sandbox', '--disable-dev-shm-usage'],
  });
}
