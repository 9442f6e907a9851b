// The web app works in Firefox as well as in Chromium: someone on Firefox
// makes a meeting and someone on Chromium joins it through the link; each
// sees and hears the other, and what the Firefox side does in the app
// (mute, chat, leave) shows on the Chromium side. The tests run in order,
// in one meeting.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startSalon } from './lib/salon.js';
import { launchBrowser, waitForMediaFrom } from './lib/browser.js';
import { launchFirefox, newFirefoxPage } from './lib/firefox.js';
import { openLink, joinAs, framesPlayed } from './lib/webapp.js';

let salon;
let chromium;
let firefox;
// Fanny is on Firefox, Chris on Chromium.
let fanny;
let chris;
let fannyId;
let chrisId;
const tile = (id) => `figure[data-identity="${id}"][data-source="camera"]`;

before(async () => {
  salon = await startSalon();
  chromium = await launchBrowser();
  // No Firefox is a failure, not a skip: .ci/run installs firefox-esr.
  firefox = await launchFirefox();
});

after(async () => {
  await firefox?.close();
  await chromium?.close();
  await salon?.stop();
});

/// The sources `id` publishes, as `page`'s room knows them, once they are
/// camera and microphone or after 15 s.
async function publishedBy(page, id) {
  const deadline = Date.now() + 15000;
  for (;;) {
    const sources = await page.evaluate((who) => {
      const p = window.salonRoom.getParticipantByIdentity(who);
      return p ? [...p.trackPublications.values()].map((t) => t.source).sort().join(',') : 'absent';
    }, id);
    if (sources === 'camera,microphone' || Date.now() > deadline) return sources;
    await new Promise((r) => setTimeout(r, 250));
  }
}

test('on Firefox, one makes a meeting, sees and hears a Chromium guest, and chats', async () => {
  // Firefox: home page, a meeting without waiting room, the pre-join screen.
  fanny = await newFirefoxPage(firefox);
  await fanny.goto(salon.httpUrl + '/');
  await fanny.waitForSelector('::-p-text(Créer la réunion)');
  await fanny.locator('#waiting-room').click();
  assert.equal(await fanny.$eval('#waiting-room', (b) => b.checked), false);
  await fanny.locator('::-p-text(Créer la réunion)').click();
  await fanny.waitForSelector('#name');
  const room = new URL(fanny.url()).searchParams.get('room');
  assert.match(room, /^[a-z]{3}-[a-z]{4}-[a-z]{3}$/);
  // The camera preview plays in Firefox too.
  await fanny.waitForFunction(() => document.querySelector('video.preview')?.videoWidth > 0, { timeout: 10000 });
  await fanny.locator('#name').fill('Fanny');
  await fanny.locator('::-p-text(Rejoindre)').click();
  await fanny.waitForFunction(() => window.salonRoom?.state === 'connected', { timeout: 20000 });
  await fanny.waitForSelector('button[aria-label="Quitter"]');
  fannyId = await fanny.evaluate(() => window.salonRoom.localParticipant.identity);

  // Chromium: the guest link, the pre-join screen, in.
  chris = await openLink(chromium, salon, room);
  chrisId = await joinAs(chris, 'Chris');

  // Firefox decodes Chris's video and receives his audio, and both keep
  // coming; his tile shows his name and his video plays.
  assert.equal(await publishedBy(fanny, chrisId), 'camera,microphone', 'Chromium’s tracks at Firefox');
  const atFanny = await waitForMediaFrom(fanny, chrisId);
  assert.ok(atFanny.framesDecoded > 0 && atFanny.audioBytes > 0, JSON.stringify(atFanny));
  await fanny.waitForFunction((sel) => document.querySelector(`${sel} figcaption`)?.textContent.includes('Chris'), {}, tile(chrisId));
  assert.ok((await framesPlayed(fanny, `${tile(chrisId)} video`)) > 10, 'Chris’s video plays at Fanny’s (Firefox)');

  // Fanny writes in the chat; Chris reads it.
  await fanny.locator('button[aria-label="Discussion"]').click();
  await fanny.locator('#chat-input').fill('Bonjour depuis Firefox');
  await fanny.locator('::-p-text(Envoyer)').click();
  await chris.getByRole('button', { name: 'Discussion' }).click();
  await chris.getByRole('log').getByText('Bonjour depuis Firefox').waitFor({ timeout: 10000 });
  await chris.getByRole('log').getByText('Fanny').waitFor();
});

// Firefox names its tracks in the SDP with ids of its own, not the cid
// livekit-client sent in AddTrack: Salon takes such media to be the pending
// track of its kind, as LiveKit does.
test('the Chromium guest sees and hears the Firefox host, and sees her mute', async () => {
  assert.equal(await publishedBy(chris, fannyId), 'camera,microphone', 'Firefox’s tracks at Chromium');
  const atChris = await waitForMediaFrom(chris, fannyId);
  assert.ok(atChris.framesDecoded > 0 && atChris.audioBytes > 0, JSON.stringify(atChris));
  await chris.locator(`${tile(fannyId)} figcaption`, { hasText: 'Fanny' }).waitFor();
  assert.ok((await framesPlayed(chris, `${tile(fannyId)} video`)) > 10, 'Fanny’s video plays at Chris’s (Chromium)');

  // Fanny mutes her microphone in Firefox; Chris sees it on her tile.
  assert.equal(await chris.locator(`${tile(fannyId)} .muted`).count(), 0);
  await fanny.locator('button[aria-label="Couper le micro"]').click();
  await fanny.waitForSelector('button[aria-label="Activer le micro"]');
  await chris.locator(`${tile(fannyId)} .muted`).waitFor({ timeout: 10000 });
});

test('the Firefox host leaves, and the Chromium guest sees her go', async () => {
  await chris.locator(tile(fannyId)).waitFor();
  await fanny.locator('button[aria-label="Quitter"]').click();
  await fanny.waitForSelector('::-p-text(Vous avez quitté la réunion.)');
  await chris.locator(tile(fannyId)).waitFor({ state: 'detached', timeout: 15000 });
});
