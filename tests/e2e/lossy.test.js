// A weak connection shows: when a quarter of what one participant sends
// is lost on the way to Salon, the others see "connexion faible" on that
// participant's tile, and it goes once the link is sound again. The loss
// is real (nftables drops the datagrams on loopback), and Salon judges the
// link from the RTP it receives, as it would over a bad Wi-Fi.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startSalon } from './lib/salon.js';
import { launchBrowser, waitForMediaFrom } from './lib/browser.js';
import { createMeeting, openLink, joinAs } from './lib/webapp.js';
import { connectionPorts, lossTable } from './lib/netloss.js';

let salon;
let browser;
let loss;

before(async () => {
  // No nftables (or no right to use it) is a failure, not a skip.
  loss = lossTable();
  salon = await startSalon();
  browser = await launchBrowser();
});

after(async () => {
  loss?.remove();
  await browser?.close();
  await salon?.stop();
});

test('a participant whose uplink loses packets shows a weak connection to the others', async () => {
  const { page: alice, room } = await createMeeting(browser, salon, { waitingRoom: false });
  const aliceId = await joinAs(alice, 'Alice');
  const bob = await openLink(browser, salon, room);
  const bobId = await joinAs(bob, 'Bob');
  await waitForMediaFrom(bob, aliceId);
  await waitForMediaFrom(alice, bobId);

  const aliceTile = `figure[data-identity="${aliceId}"][data-source="camera"]`;
  const bobTile = `figure[data-identity="${bobId}"][data-source="camera"]`;
  await bob.locator(`${aliceTile} figcaption`, { hasText: 'Alice' }).waitFor();
  // A sound link shows nothing.
  await bob.waitForFunction(() => window.salonRoom.remoteParticipants.size === 1 &&
    [...window.salonRoom.remoteParticipants.values()][0].connectionQuality === 'excellent', null, { timeout: 15000 });
  assert.equal(await bob.locator(`${aliceTile} .weak`).count(), 0);

  // A quarter of what Alice sends to Salon is lost, and only that.
  const ports = await connectionPorts(alice, 'publisher');
  assert.equal(ports?.protocol, 'udp', `Alice publishes over UDP: ${JSON.stringify(ports)}`);
  const bobPorts = await connectionPorts(bob, 'publisher');
  assert.notEqual(bobPorts.local, ports.local);
  loss.drop(ports.local, ports.remote, 25);

  // Within a few of Salon's 5-second windows Bob sees Alice's link as weak.
  const started = Date.now();
  await bob.locator(`${aliceTile} .weak`, { hasText: 'connexion faible' }).waitFor({ timeout: 30000 });
  const shownAfter = Date.now() - started;
  assert.ok(loss.dropped() > 50, `packets dropped: ${loss.dropped()}`);
  // Alice is told too, on her own tile; Bob's link is sound, and still says
  // so; Alice's video still comes.
  await alice.locator(`${aliceTile} .weak`).waitFor({ timeout: 10000 });
  assert.equal(await bob.locator(`${bobTile} .weak`).count(), 0);
  assert.equal(await alice.locator(`${bobTile} .weak`).count(), 0);
  await waitForMediaFrom(bob, aliceId);

  // The loss stops: the badge goes.
  loss.clear();
  await bob.locator(`${aliceTile} .weak`).waitFor({ state: 'detached', timeout: 30000 });
  console.log(`weak badge shown ${shownAfter} ms after the loss began`);
});
