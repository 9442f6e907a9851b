// People meet through Salon's own web app, as a civil servant would: make a
// meeting, share its link, pass the pre-join screen, and then see, hear,
// chat, raise a hand, share a screen; a host admits or refuses guests.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { startSalon } from './lib/salon.js';
import * as webapp from './lib/webapp.js';
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

const shot = (page, name) => page.screenshot({ path: path.join(artifactsDir(), name) });

// The app's steps (lib/webapp.js), on this file's salon and browser.
const createMeeting = (options) => webapp.createMeeting(browser, salon, options);
const openLink = (room) => webapp.openLink(browser, salon, room);
const { joinAs, framesPlayed } = webapp;

test('two people meet through the app: media, mute, chat, hand, screen share', async () => {
  const { page: alice, room } = await createMeeting({ waitingRoom: false });
  // The pre-join screen shows the camera preview.
  await alice.locator('video.preview').waitFor();
  await alice.waitForFunction(() => document.querySelector('video.preview')?.videoWidth > 0, null, { timeout: 10000 });
  await shot(alice, 'webapp-prejoin.png');
  const aliceId = await joinAs(alice, 'Alice');
  const bob = await openLink(room);
  const bobId = await joinAs(bob, 'Bob');

  const atBob = await waitForMediaFrom(bob, aliceId);
  const atAlice = await waitForMediaFrom(alice, bobId);
  assert.ok(atBob.framesDecoded > 0 && atAlice.framesDecoded > 0);
  await bob.locator(`figure[data-identity="${aliceId}"] figcaption`, { hasText: 'Alice' }).waitFor();
  assert.equal(await alice.getAttribute('html', 'lang'), 'fr');

  // The media went through Salon: every connected candidate pair of each
  // browser ends at a UDP port that the salon process holds.
  const salonPorts = salon.udpPorts();
  for (const page of [alice, bob]) {
    const remotes = await page.evaluate(async () => {
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

  // Mute and camera off show on the other side; the camera comes back.
  const aliceTile = `figure[data-identity="${aliceId}"][data-source="camera"]`;
  await alice.getByRole('button', { name: 'Couper le micro' }).click();
  await bob.locator(`${aliceTile} .muted`).waitFor({ timeout: 10000 });
  await alice.getByRole('button', { name: 'Couper la caméra' }).click();
  await bob.locator(`${aliceTile} .avatar`).waitFor({ timeout: 10000 });
  await alice.getByRole('button', { name: 'Activer la caméra' }).click();
  await bob.locator(`${aliceTile} video`).waitFor({ timeout: 10000 });
  assert.ok((await framesPlayed(bob, `${aliceTile} video`)) > 10, 'Alice’s video plays at Bob’s');

  // Chat: Bob writes, Alice sees an unread count, opens the chat, reads it.
  await bob.getByRole('button', { name: 'Discussion' }).click();
  await bob.getByLabel('Message').fill('Bonjour Alice, on commence ?');
  await bob.getByRole('button', { name: 'Envoyer' }).click();
  await alice.locator('#chat .count', { hasText: '1' }).waitFor({ timeout: 10000 });
  await alice.getByRole('button', { name: 'Discussion' }).click();
  await alice.getByRole('log').getByText('Bonjour Alice, on commence ?').waitFor();
  await alice.getByRole('log').getByText('Bob').waitFor();

  // A raised hand shows on the tile and in the participant list.
  await alice.getByRole('button', { name: 'Lever la main' }).click();
  await bob.locator(`${aliceTile} .hand`).waitFor({ timeout: 10000 });
  await bob.getByRole('button', { name: 'Participants' }).click();
  await bob.locator(`.people li[data-identity="${aliceId}"] .hand`).waitFor();
  await alice.getByRole('button', { name: 'Baisser la main' }).click();
  await bob.locator(`${aliceTile} .hand`).waitFor({ state: 'detached', timeout: 10000 });

  // Pinning Bob puts him large; unpinning goes back to the grid.
  await alice.getByRole('button', { name: 'Épingler Bob' }).click();
  await alice.locator(`.stage.speaker figure[data-identity="${bobId}"].featured`).waitFor();
  await alice.getByRole('button', { name: 'Désépingler Bob' }).click();
  await alice.locator('.stage.grid').waitFor();

  // A network blip: the app says it is reconnecting, then carries on.
  await bob.evaluate(() => {
    window.bannerSeen = false;
    const banner = document.querySelector('.banner');
    new MutationObserver(() => {
      if (!banner.hidden) window.bannerSeen = true;
    }).observe(banner, { attributes: true });
    window.reconnected = false;
    window.salonRoom.once('reconnected', () => (window.reconnected = true));
    return window.salonRoom.simulateScenario('signal-reconnect');
  });
  await bob.waitForFunction(() => window.reconnected, null, { timeout: 30000 });
  assert.ok(await bob.evaluate(() => window.bannerSeen), 'the reconnecting banner showed');
  await bob.locator('.banner').waitFor({ state: 'hidden' });
  await waitForMediaFrom(bob, aliceId);

  // Bob shares his screen: Alice gets it large, and it plays.
  await bob.getByRole('button', { name: 'Partager l’écran' }).click();
  const screen = `figure[data-identity="${bobId}"][data-source="screen"]`;
  await alice.locator(`${screen}.featured video`).waitFor({ timeout: 15000 });
  assert.ok((await framesPlayed(alice, `${screen} video`)) > 5, 'the shared screen plays');
  await shot(alice, 'webapp-meeting.png');
  await alice.setViewportSize({ width: 390, height: 844 });
  await alice.locator(`${screen}.featured video`).waitFor();
  await shot(alice, 'webapp-meeting-phone-chat.png');
  await alice.getByRole('button', { name: 'Discussion' }).click();
  await shot(alice, 'webapp-meeting-phone.png');
  await bob.getByRole('button', { name: 'Arrêter le partage' }).click();
  await alice.locator(screen).waitFor({ state: 'detached', timeout: 10000 });

  // Leaving says so, and the other side sees them go.
  await alice.getByRole('button', { name: 'Quitter' }).click();
  await alice.getByText('Vous avez quitté la réunion.').waitFor();
  await bob.waitForFunction(() => window.salonRoom.remoteParticipants.size === 0, null, { timeout: 15000 });
});

test('a host admits one guest from the waiting room and refuses another', async () => {
  const { page: host, room } = await createMeeting({ waitingRoom: true });
  await host.getByText('Vous êtes l’hôte de cette réunion.').waitFor();
  const hostId = await joinAs(host, 'Hélène');

  const guest = await openLink(room);
  const guestId = await joinAs(guest, 'Gaston', { waiting: true });
  await shot(guest, 'webapp-waiting.png');
  // The host is told, and admits from the participant list.
  await host.getByText('Gaston attend dans la salle d’attente.').first().waitFor({ timeout: 10000 });
  await host.getByRole('button', { name: 'Participants' }).click();
  await host.getByRole('button', { name: 'Admettre Gaston' }).click();
  await guest.getByRole('button', { name: 'Quitter' }).waitFor({ timeout: 15000 });
  await waitForMediaFrom(guest, hostId);
  await waitForMediaFrom(host, guestId);

  // The host mutes Gaston's microphone, through the server.
  await host.getByRole('button', { name: 'Couper le micro de Gaston' }).click();
  await guest.waitForFunction(
    () => window.salonRoom.localParticipant.getTrackPublication('microphone')?.isMuted === true,
    null,
    { timeout: 10000 },
  );

  // A second guest is refused, having received no media.
  const intruder = await openLink(room);
  await joinAs(intruder, 'Intrus', { waiting: true });
  const received = await intruder.evaluate(async () => {
    const stats = await window.salonRoom.engine.pcManager.subscriber.getStats();
    let n = 0;
    stats.forEach((s) => {
      if (s.type === 'inbound-rtp') n += s.packetsReceived ?? 0;
    });
    return n;
  });
  assert.equal(received, 0);
  await host.getByRole('button', { name: 'Refuser Intrus' }).click();
  await intruder.getByText('L’hôte n’a pas accepté votre demande, ou vous a retiré·e de la réunion.').waitFor({ timeout: 10000 });
  assert.ok(!(await host.evaluate(() => [...window.salonRoom.remoteParticipants.values()].some((p) => p.name === 'Intrus'))));
});

test('the web app switches to English', async () => {
  const page = await newPage(browser);
  await page.goto(salon.httpUrl + '/?lang=en');
  await page.getByRole('button', { name: 'Create meeting' }).waitFor();
  await page.getByLabel('Meeting name').fill('standup');
  await page.getByRole('button', { name: 'Continue' }).click();
  await page.getByLabel('Your name').waitFor();
  await page.getByRole('button', { name: 'Join', exact: true }).waitFor();
  await page.getByRole('button', { name: 'Passer en français' }).click();
  await page.getByLabel('Votre nom').waitFor();
});
