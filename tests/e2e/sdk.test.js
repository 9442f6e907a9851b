// An integrator's existing LiveKit code, unchanged: livekit-server-sdk mints
// the tokens, livekit-client publishes and subscribes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { AccessToken } from 'livekit-server-sdk';
import { startSdkFixture } from './lib/sdk.js';
import { newPage, waitForMediaFrom } from './lib/browser.js';

let fx;
let salon;
let pages;
let browser;

before(async () => {
  fx = await startSdkFixture();
  ({ salon, pages, browser } = fx);
});

after(async () => {
  await fx?.close();
});

/// Asks for a WebSocket upgrade and returns the HTTP status (101 if accepted).
function upgradeStatus(url) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, {
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==',
      },
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve(res.statusCode);
    });
    req.on('response', (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on('error', reject);
    req.end();
  });
}

const token = (identity, room, grant) => fx.token(identity, room, grant);
const joinWithSdk = (identity, room, grant, options) => fx.joinWithSdk(identity, room, grant, options);

test('livekit-client peers with livekit-server-sdk tokens decode each other', async () => {
  const a = await joinWithSdk('ada', 'sdk-room');
  const b = await joinWithSdk('bea', 'sdk-room');
  await waitForMediaFrom(b, 'ada');
  await waitForMediaFrom(a, 'bea');
  const names = await a.evaluate(() => [...window.salonRoom.remoteParticipants.values()].map((p) => p.name));
  assert.deepEqual(names, ['BEA']);
  // Pages that keep publishing would load the machine for the tests after.
  for (const page of [a, b]) await page.context().close();
});

test('livekit-client shows the connection quality Salon measures', async () => {
  const a = await joinWithSdk('qia', 'quality-room');
  const b = await joinWithSdk('qib', 'quality-room');
  await waitForMediaFrom(b, 'qia');
  // Unknown until the server says; loopback loses nothing, so excellent.
  for (const [page, other] of [[a, 'qib'], [b, 'qia']]) {
    const seen = (o) => ({
      self: window.salonRoom.localParticipant.connectionQuality,
      other: window.salonRoom.getParticipantByIdentity(o)?.connectionQuality,
    });
    const excellent = await page
      .waitForFunction(
        (o) =>
          window.salonRoom.localParticipant.connectionQuality === 'excellent' &&
          window.salonRoom.getParticipantByIdentity(o)?.connectionQuality === 'excellent',
        other,
        { timeout: 20000 },
      )
      .then(() => true, () => false);
    // What the page showed instead, so that a failure says which side.
    assert.ok(excellent, JSON.stringify(await page.evaluate(seen, other)));
  }
  // Pages that keep publishing would load the machine for the tests after.
  for (const page of [a, b]) await page.context().close();
});

test('after its signal connection drops, a client reconnects by itself and media flows again', async () => {
  const a = await joinWithSdk('rea', 'blip-room');
  const b = await joinWithSdk('reb', 'blip-room');
  await waitForMediaFrom(b, 'rea');
  await a.evaluate(() => {
    window.lifecycle = [];
    const { RoomEvent } = LivekitClient;
    for (const ev of [RoomEvent.Reconnecting, RoomEvent.Reconnected, RoomEvent.Disconnected]) {
      window.salonRoom.on(ev, () => window.lifecycle.push(ev));
    }
  });
  // The network blip: the signal WebSocket closes under the client.
  await a.evaluate(() => window.salonRoom.simulateScenario('signal-reconnect'));
  await a.waitForFunction(() => window.lifecycle.includes('reconnected'), null, { timeout: 30000 });
  const lifecycle = await a.evaluate(() => window.lifecycle);
  assert.ok(lifecycle.includes('reconnecting'), JSON.stringify(lifecycle));
  assert.ok(!lifecycle.includes('disconnected'), JSON.stringify(lifecycle));
  await waitForMediaFrom(b, 'rea');
  await waitForMediaFrom(a, 'reb');
  for (const page of [a, b]) await page.context().close();
});

test('a token without canPublish can watch but not publish', async () => {
  const pub = await joinWithSdk('pia', 'grant-room');
  const page = await newPage(browser);
  await page.goto(pages.url + '/sdk.html');
  const t = await token('viv', 'grant-room', { canPublish: false });
  const outcome = await page.evaluate(async ([url, t]) => {
    try {
      await window.joinRoom(url, t);
      return 'published';
    } catch (e) {
      return 'refused: ' + e.message;
    }
  }, [salon.wsUrl, t]);
  assert.match(outcome, /refused/);
  // Still subscribed to the others.
  const stats = await waitForMediaFrom(page, 'pia');
  assert.ok(stats.framesDecoded > 0);
  // And nobody sees a track from the viewer.
  const tracksOfViewer = await pub.evaluate(
    () => window.salonRoom.getParticipantByIdentity('viv')?.trackPublications.size ?? -1,
  );
  assert.equal(tracksOfViewer, 0);
  for (const p of [pub, page]) await p.context().close();
});

test('bad tokens are refused with 401 before any WebSocket opens', async () => {
  const good = await token('eve', 'room-a');
  const res = await fetch(`${salon.httpUrl}/rtc/validate?access_token=${good}`);
  assert.equal(res.status, 200, 'a good token validates');
  const forged = new AccessToken(salon.apiKey, 'not-the-secret', { identity: 'eve' });
  forged.addGrant({ roomJoin: true, room: 'room-a' });
  assert.equal(await upgradeStatus(`${salon.httpUrl}/rtc?access_token=${good}`), 101, 'a good token upgrades');
  for (const bad of [await forged.toJwt(), 'garbage', '']) {
    const r = await fetch(`${salon.httpUrl}/rtc/validate?access_token=${encodeURIComponent(bad)}`);
    assert.equal(r.status, 401);
    assert.equal(await upgradeStatus(`${salon.httpUrl}/rtc?access_token=${encodeURIComponent(bad)}`), 401);
  }
  // livekit-client reports the refusal as such.
  const page = await newPage(browser);
  await page.goto(pages.url + '/sdk.html');
  const msg = await page.evaluate(async ([url, t]) => {
    try {
      await window.joinRoom(url, t);
      return 'connected';
    } catch (e) {
      return String(e.message);
    }
  }, [salon.wsUrl, await forged.toJwt()]);
  assert.notEqual(msg, 'connected');
  assert.ok(salon.alive(), 'server still up');
});

test('tracks come and go: unpublish, republish, leave and rejoin', async () => {
  const uma = await joinWithSdk('uma', 'churn-room');
  let ugo = await joinWithSdk('ugo', 'churn-room');
  await waitForMediaFrom(ugo, 'uma');
  await waitForMediaFrom(uma, 'ugo');

  // Uma stops her camera: Ugo sees the publication go.
  await uma.evaluate(async () => {
    const lp = window.salonRoom.localParticipant;
    await lp.unpublishTrack(lp.getTrackPublication('camera').track);
  });
  await ugo.waitForFunction(
    () => {
      const p = window.salonRoom.getParticipantByIdentity('uma');
      return p && !p.getTrackPublication('camera') && p.getTrackPublication('microphone');
    },
    null,
    { timeout: 15000 },
  );

  // She starts it again: Ugo decodes the new track.
  await uma.evaluate(() => window.salonRoom.localParticipant.setCameraEnabled(true));
  await waitForMediaFrom(ugo, 'uma');

  // Ugo leaves and comes back: each decodes the other again.
  await ugo.evaluate(() => window.salonRoom.disconnect());
  await uma.waitForFunction(() => !window.salonRoom.getParticipantByIdentity('ugo'), null, { timeout: 15000 });
  const left = ugo;
  ugo = await joinWithSdk('ugo', 'churn-room');
  await waitForMediaFrom(ugo, 'uma');
  await waitForMediaFrom(uma, 'ugo');
  for (const page of [uma, ugo, left]) await page.context().close();
});

test('H.264 is forwarded when the publisher chooses it', async () => {
  const h264 = { publishDefaults: { videoCodec: 'h264' } };
  const hal = await joinWithSdk('hal', 'h264-room', {}, h264);
  const hub = await joinWithSdk('hub', 'h264-room', {}, h264);
  await waitForMediaFrom(hub, 'hal');
  const codec = await hub.evaluate(async () => {
    const p = window.salonRoom.getParticipantByIdentity('hal');
    const stats = await p.getTrackPublication('camera').track.receiver.getStats();
    let mime = '';
    stats.forEach((s) => {
      if (s.type === 'codec' && s.mimeType.startsWith('video/')) mime = s.mimeType;
    });
    return mime;
  });
  assert.equal(codec.toLowerCase(), 'video/h264');
  await waitForMediaFrom(hal, 'hub');
  for (const page of [hal, hub]) await page.context().close();
});
