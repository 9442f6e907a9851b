// Two people join through Salon's own web app and see and hear each other.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { startSalon } from './lib/salon.js';
import { launchBrowser, newPage, waitForMediaFrom, artifactsDir } from './lib/browser.js';

let salon;
let browser;

before(async () => {
  salon = await startSalon();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await salon?.stop();
});

async function joinViaApp(name, room) {
  const page = await newPage(browser);
  await page.goto(salon.httpUrl + '/');
  await page.getByLabel('Votre nom').fill(name);
  await page.getByLabel('Nom de la réunion').fill(room);
  await page.getByRole('button', { name: 'Rejoindre' }).click();
  await page.waitForFunction(() => window.salonRoom?.state === 'connected', null, { timeout: 20000 });
  const identity = await page.evaluate(() => window.salonRoom.localParticipant.identity);
  return { page, identity };
}

test('two participants in the web app decode each other\'s video and receive audio', async () => {
  const alice = await joinViaApp('Alice', 'conseil');
  const bob = await joinViaApp('Bob', 'conseil');

  const atBob = await waitForMediaFrom(bob.page, alice.identity);
  const atAlice = await waitForMediaFrom(alice.page, bob.identity);
  assert.ok(atBob.framesDecoded > 0 && atAlice.framesDecoded > 0);

  // Names show on the tiles, in French by default.
  await bob.page.getByText('Alice', { exact: false }).first().waitFor();
  await alice.page.getByText('Bob', { exact: false }).first().waitFor();
  assert.equal(await alice.page.getAttribute('html', 'lang'), 'fr');
  await alice.page.screenshot({ path: path.join(artifactsDir(), 'webapp-meeting.png') });

  // The media went through Salon: every connected candidate pair of each
  // browser ends at a UDP port that the salon process holds.
  const salonPorts = salon.udpPorts();
  for (const who of [alice, bob]) {
    const remotes = await who.page.evaluate(async () => {
      const m = window.salonRoom.engine.pcManager;
      const out = [];
      for (const t of [m.publisher, m.subscriber]) {
        const stats = await t.getStats();
        stats.forEach((s) => {
          if (s.type === 'candidate-pair' && s.state === 'succeeded' && s.nominated) {
            const remote = stats.get(s.remoteCandidateId);
            if (remote) out.push({ address: remote.address ?? remote.ip, port: remote.port });
          }
        });
      }
      return out;
    });
    assert.ok(remotes.length >= 2, `connected pairs: ${JSON.stringify(remotes)}`);
    for (const r of remotes) {
      assert.equal(r.address, '127.0.0.1');
      assert.ok(salonPorts.has(r.port), `port ${r.port} belongs to salon (${[...salonPorts]})`);
    }
  }

  // Muting the microphone shows on the other side; so does turning the camera off.
  await alice.page.getByRole('button', { name: 'Couper le micro' }).click();
  await bob.page.locator(`figure[data-identity="${alice.identity}"] .muted`).waitFor({ timeout: 10000 });
  await alice.page.getByRole('button', { name: 'Couper la caméra' }).click();
  await bob.page.locator(`figure[data-identity="${alice.identity}"] .avatar`).waitFor({ timeout: 10000 });
  await alice.page.getByRole('button', { name: 'Activer la caméra' }).click();
  await bob.page.locator(`figure[data-identity="${alice.identity}"] video`).waitFor({ timeout: 10000 });
  // Bob's video of Alice plays, not just decodes: its frames advance.
  const played = await bob.page.evaluate(async (id) => {
    const v = document.querySelector(`figure[data-identity="${id}"] video`);
    const before = v.getVideoPlaybackQuality().totalVideoFrames;
    await new Promise((r) => setTimeout(r, 2000));
    return v.getVideoPlaybackQuality().totalVideoFrames - before;
  }, alice.identity);
  assert.ok(played > 10, `video element advanced ${played} frames`);
  await bob.page.setViewportSize({ width: 390, height: 844 });
  await bob.page.screenshot({ path: path.join(artifactsDir(), 'webapp-meeting-phone.png') });

  // Leaving shows the join form again, and the other side sees them go.
  await alice.page.getByRole('button', { name: 'Quitter' }).click();
  await alice.page.getByRole('button', { name: 'Rejoindre' }).waitFor();
  await bob.page.waitForFunction(() => window.salonRoom.remoteParticipants.size === 0, null, { timeout: 15000 });
});

test('the web app switches to English', async () => {
  const page = await newPage(browser);
  await page.goto(salon.httpUrl + '/?lang=en');
  await page.getByLabel('Your name').waitFor();
  await page.getByRole('button', { name: 'Join' }).waitFor();
});
