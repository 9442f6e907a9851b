// A weak connection shows: when a quarter of what one participant sends
// is lost on the way to Salon, the others see "connexion faible" on that
// participant's tile, and it goes once the link is sound again. The loss
// is real (nftables drops the datagrams on loopback), and Salon judges the
// link from the RTP it receives, as it would over a bad Wi-Fi.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startSalon } from './lib/salon.js';
import { launchBrowser, remoteStats, waitForMediaFrom } from './lib/browser.js';
import { createMeeting, openLink, joinAs } from './lib/webapp.js';
import { connectionPorts, lossTable } from './lib/netloss.js';
import { launchFirefox, newFirefoxPage } from './lib/firefox.js';

/// What Bob receives of Alice's camera and what Alice's camera sends per
/// layer, for the log when the test fails: a frozen picture is told apart
/// from one that never came, a stopped layer from lost keyframes.
async function mediaSnapshot(bob, alice, aliceId) {
  const [down, up] = await Promise.all([
    bob.evaluate(async (identity) => {
      const pub = window.salonRoom.getParticipantByIdentity(identity)?.getTrackPublication('camera');
      const stats = pub?.track?.receiver ? await pub.track.receiver.getStats() : new Map();
      const out = [];
      stats.forEach((s) => {
        if (s.type === 'inbound-rtp') {
          out.push({
            ssrc: s.ssrc, width: s.frameWidth, decoded: s.framesDecoded, received: s.framesReceived,
            bytes: s.bytesReceived, lost: s.packetsLost, nacks: s.nackCount, plis: s.pliCount,
            keyframes: s.keyFramesDecoded, freezes: s.freezeCount, quality: pub.videoQuality,
          });
        }
      });
      return out;
    }, aliceId),
    alice.evaluate(async () => {
      const stats = await window.salonRoom.engine.pcManager.publisher.getStats();
      const out = [];
      stats.forEach((s) => {
        if (s.type === 'outbound-rtp' && s.kind === 'video') {
          out.push({
            rid: s.rid, active: s.active, width: s.frameWidth, encoded: s.framesEncoded, bytes: s.bytesSent,
            keyframes: s.keyFramesEncoded, plis: s.pliCount, nacks: s.nackCount, limit: s.qualityLimitationReason,
          });
        }
      });
      return out;
    }),
  ]);
  return { at: Date.now(), down, up };
}

/// How long Bob's picture is watched under loss, and the fewest frames
/// that count as a moving picture there (4 per second; the camera sends
/// 15-20 on a lossy link, a frozen one 0-2).
const PICTURE_WINDOW_MS = 10000;
const MIN_FRAMES_UNDER_LOSS = 40;

let salon;
let browser;
let firefox;
let loss;

before(async () => {
  // No nftables (or no right to use it) is a failure, not a skip.
  loss = lossTable();
  salon = await startSalon();
  browser = await launchBrowser();
  // No Firefox is a failure, not a skip: .ci/run installs firefox-esr.
  firefox = await launchFirefox();
});

after(async () => {
  loss?.remove();
  await firefox?.close();
  await browser?.close();
  await salon?.stop();
});

test('a participant whose uplink loses packets shows a weak connection to the others', async () => {
  const { page: alice, room } = await createMeeting(browser, salon, { waitingRoom: false });
  const aliceId = await joinAs(alice, 'Alice');
  const bob = await openLink(browser, salon, room);
  const bobId = await joinAs(bob, 'Bob');
  const snapshots = [];
  const sampler = setInterval(() => {
    mediaSnapshot(bob, alice, aliceId).then((s) => snapshots.push(s), () => {});
  }, 2000);
  try {
    await lossyLink({ alice, bob, aliceId, bobId });
  } catch (err) {
    for (const s of snapshots) console.log(`media ${JSON.stringify(s)}`);
    console.log(`salon's log ends:\n${salon.log().split('\n').slice(-40).join('\n')}`);
    throw err;
  } finally {
    clearInterval(sampler);
    await alice.close();
    await bob.close();
  }
});

async function lossyLink({ alice, bob, aliceId, bobId }) {
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
  // so.
  await alice.locator(`${aliceTile} .weak`).waitFor({ timeout: 10000 });
  assert.equal(await bob.locator(`${bobTile} .weak`).count(), 0);
  assert.equal(await alice.locator(`${bobTile} .weak`).count(), 0);

  // Alice's picture keeps moving for Bob: Salon asks her again for what
  // was lost, and her retransmissions fill the gaps. (Before they were put
  // back into her simulcast streams, Bob's picture froze: 1-2 frames in
  // 10 s while she encoded 200.)
  const during = await framesDecodedOver(bob, aliceId);
  console.log(`under loss Bob decoded ${during} of Alice's frames in ${PICTURE_WINDOW_MS} ms`);
  assert.ok(during >= MIN_FRAMES_UNDER_LOSS, `Bob decoded ${during} frames in ${PICTURE_WINDOW_MS} ms under loss`);

  // The loss stops: the badge goes.
  loss.clear();
  await bob.locator(`${aliceTile} .weak`).waitFor({ state: 'detached', timeout: 30000 });
  console.log(`weak badge shown ${shownAfter} ms after the loss began`);
}

/// Frames of `identity`'s video that `page` decodes in `PICTURE_WINDOW_MS`.
async function framesDecodedOver(page, identity) {
  const before = (await remoteStats(page))[identity].framesDecoded;
  await new Promise((r) => setTimeout(r, PICTURE_WINDOW_MS));
  return (await remoteStats(page))[identity].framesDecoded - before;
}

// Firefox (the browser of many administrations) names its simulcast
// streams both ways, by rid and by SSRC in its description; its
// retransmissions must fill the gaps too.
test('the picture of a Firefox participant whose uplink loses packets keeps moving', async () => {
  const fanny = await newFirefoxPage(firefox);
  await fanny.goto(salon.httpUrl + '/');
  await fanny.waitForSelector('::-p-text(Créer la réunion)');
  await fanny.locator('#waiting-room').click();
  await fanny.locator('::-p-text(Créer la réunion)').click();
  await fanny.waitForSelector('#name');
  const room = new URL(fanny.url()).searchParams.get('room');
  await fanny.locator('#name').fill('Fanny');
  await fanny.locator('::-p-text(Rejoindre)').click();
  await fanny.waitForFunction(() => window.salonRoom?.state === 'connected', { timeout: 20000 });
  const fannyId = await fanny.evaluate(() => window.salonRoom.localParticipant.identity);
  const chris = await openLink(browser, salon, room);
  await joinAs(chris, 'Chris');
  await waitForMediaFrom(chris, fannyId);

  const ports = await connectionPorts(fanny, 'publisher');
  assert.equal(ports?.protocol, 'udp', `Fanny publishes over UDP: ${JSON.stringify(ports)}`);
  loss.clear();
  loss.drop(ports.local, ports.remote, 25);
  // A few seconds for Firefox to settle on what its lossy link carries.
  await new Promise((r) => setTimeout(r, 5000));
  const during = await framesDecodedOver(chris, fannyId);
  const dropped = loss.dropped();
  loss.clear();
  console.log(`under loss Chris decoded ${during} of Fanny's frames in ${PICTURE_WINDOW_MS} ms (${dropped} datagrams dropped)`);
  assert.ok(dropped > 50, `packets dropped: ${dropped}`);
  assert.ok(during >= MIN_FRAMES_UNDER_LOSS, `Chris decoded ${during} frames in ${PICTURE_WINDOW_MS} ms under loss`);
  await fanny.close();
  await chris.close();
});
