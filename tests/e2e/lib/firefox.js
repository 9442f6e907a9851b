// Debian's Firefox ESR, driven by puppeteer-core over WebDriver BiDi, with
// Firefox's own fake camera and microphone and no permission prompt.
//
// playwright-core cannot drive a stock Firefox: its BiDi mode sends
// commands (emulation.setMediaFeaturesOverride) that Firefox ESR does not
// know, and its usual mode needs a patched Firefox build of its own.
import fs from 'node:fs';
import puppeteer from 'puppeteer-core';

export const firefoxPath = () => process.env.FIREFOX ?? '/usr/bin/firefox-esr';

export async function launchFirefox() {
  const executablePath = firefoxPath();
  if (!fs.existsSync(executablePath)) {
    throw new Error(`Firefox is needed at ${executablePath}: apt-get install firefox-esr (or set FIREFOX)`);
  }
  return puppeteer.launch({
    browser: 'firefox',
    executablePath,
    headless: true,
    extraPrefsFirefox: {
      // getUserMedia gives a generated picture and tone, without asking.
      'media.navigator.streams.fake': true,
      'media.navigator.permission.disabled': true,
      // Salon's dev server is on 127.0.0.1, which Firefox leaves out of its
      // ICE candidates unless told otherwise.
      'media.peerconnection.ice.loopback': true,
      'media.peerconnection.ice.obfuscate_host_addresses': false,
      'media.autoplay.default': 0,
      'media.autoplay.blocking_policy': 0,
    },
  });
}

/// A new page (tab) that logs its uncaught errors.
export async function newFirefoxPage(browser) {
  const page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 800 });
  page.on('pageerror', (e) => {
    // livekit-client tries LiveKit's newer /rtc/v1 path first, then /rtc.
    if (/\/rtc\/v1\?/.test(e.message)) return;
    console.error('[firefox page error]', e.message);
  });
  return page;
}
