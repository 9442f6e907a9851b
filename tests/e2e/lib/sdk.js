// A running salon, the test pages and a browser, with the two things the SDK
// tests do over and over: mint a token with livekit-server-sdk and join a
// room from a plain livekit-client page.
import { appendFileSync } from 'node:fs';
import { AccessToken } from 'livekit-server-sdk';
import { startSalon } from './salon.js';
import { servePages } from './pages.js';
import { launchBrowser, newPage } from './browser.js';

/// `browserArgs` add to chromium's flags (see `launchBrowser`); `salonEnv`
/// to salon's environment and `salonArgs` to its `salon dev` arguments
/// (see `startSalon`).
export async function startSdkFixture({ browserArgs = [], salonEnv = {}, salonArgs = [] } = {}) {
  const salon = await startSalon(salonArgs, salonEnv);
  const pages = await servePages();
  const browser = await launchBrowser(browserArgs);

  /// A join token for `room`; its name is the identity in capitals.
  async function token(identity, room, grant = {}) {
    const at = new AccessToken(salon.apiKey, salon.apiSecret, { identity, name: identity.toUpperCase() });
    at.addGrant({ roomJoin: true, room, ...grant });
    return at.toJwt();
  }

  /// A page that connected with livekit-client and published camera and
  /// microphone (unless `publish` is false).
  async function joinWithSdk(identity, room, grant, options = {}, publish = true) {
    const page = await newPage(browser);
    await page.goto(pages.url + '/sdk.html');
    await page.evaluate(([url, t, o, p]) => window.joinRoom(url, t, o, p), [
      salon.wsUrl,
      await token(identity, room, grant),
      options,
      publish,
    ]);
    return page;
  }

  async function close() {
    await browser.close();
    await pages.close();
    await salon.stop();
    // For a look at what salon did in a run: SALON_LOG_FILE=/tmp/salon.log.
    if (process.env.SALON_LOG_FILE) appendFileSync(process.env.SALON_LOG_FILE, salon.log());
  }

  return { salon, pages, browser, token, joinWithSdk, close };
}
