// The waiting room, enforced by the server: a guest of a meeting made with
// a waiting room joins hidden and receives nothing until a host admits them
// with their own token (RoomService UpdateParticipant); a refused guest is
// removed and never received media. Driven with plain livekit-client pages
// and the same HTTP calls the web app makes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startSdkFixture } from './lib/sdk.js';
import { newPage, waitForMediaFrom } from './lib/browser.js';

let fx;

before(async () => {
  fx = await startSdkFixture();
});

after(async () => {
  await fx?.close();
});

async function api(path, body, token) {
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(fx.salon.httpUrl + path, { method: 'POST', headers, body: JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, json: text.startsWith('{') ? JSON.parse(text) : text };
}

const twirp = (method, body, token) => api(`/twirp/livekit.RoomService/${method}`, body, token);

/// A page joined with a token from /api/token, as the web app gets it.
async function joinMeeting(room, name, { hostKey, publish = true } = {}) {
  const { status, json } = await api('/api/token', { room, name, hostKey });
  assert.equal(status, 200, JSON.stringify(json));
  const page = await newPage(fx.browser);
  await page.goto(fx.pages.url + '/sdk.html');
  await page.evaluate(([url, t, p]) => window.joinRoom(url, t, {}, p), [fx.salon.wsUrl, json.token, publish]);
  return { page, ...json };
}

/// RTP packets the page's subscriber connection received, all streams.
const packetsReceived = (page) =>
  page.evaluate(async () => {
    const stats = await window.salonRoom.engine.pcManager.subscriber.getStats();
    let n = 0;
    stats.forEach((s) => {
      if (s.type === 'inbound-rtp') n += s.packetsReceived ?? 0;
    });
    return n;
  });

test('a guest waits, unseen and without media, until the host admits them', async () => {
  const made = await api('/api/meetings', { waitingRoom: true });
  assert.equal(made.status, 200);
  const { room, hostKey } = made.json;
  assert.match(room, /^[a-z]{3}-[a-z]{4}-[a-z]{3}$/);

  const host = await joinMeeting(room, 'Hélène', { hostKey });
  assert.equal(host.role, 'host');
  const guest = await joinMeeting(room, 'Gaston', { publish: false });
  assert.equal(guest.role, 'guest');
  assert.equal(guest.waiting, true);

  // The guest is connected but may not publish, and the host's page does
  // not show them.
  assert.equal(await guest.page.evaluate(() => window.salonRoom.localParticipant.permissions?.canPublish), false);
  await new Promise((r) => setTimeout(r, 3000));
  assert.equal(await host.page.evaluate(() => window.salonRoom.remoteParticipants.size), 0);
  assert.equal(await packetsReceived(guest.page), 0, 'no media reaches a waiting guest');

  // The guest cannot let itself in: its token has no admin grant.
  const self = await twirp('UpdateParticipant', { room, identity: guest.identity, permission: { canSubscribe: true } }, guest.token);
  assert.equal(self.status, 403);
  const peek = await twirp('ListParticipants', { room }, guest.token);
  assert.equal(peek.status, 403);

  // The host sees who waits, with the host's own token.
  const listed = await twirp('ListParticipants', { room }, host.token);
  assert.equal(listed.status, 200);
  const waiting = listed.json.participants.filter((p) => p.permission?.hidden && !p.permission?.canSubscribe);
  assert.deepEqual(waiting.map((p) => p.name), ['Gaston']);
  assert.equal(waiting[0].attributes['salon.role'], 'guest');

  // Admitted: the guest learns it may publish, publishes, and both decode each other.
  const admitted = await twirp(
    'UpdateParticipant',
    {
      room,
      identity: guest.identity,
      permission: { canSubscribe: true, canPublish: true, canPublishData: true, canUpdateMetadata: true, hidden: false },
    },
    host.token,
  );
  assert.equal(admitted.status, 200, JSON.stringify(admitted.json));
  await guest.page.waitForFunction(() => window.salonRoom.localParticipant.permissions?.canPublish === true, null, {
    timeout: 10000,
  });
  await guest.page.evaluate(() => window.salonRoom.localParticipant.enableCameraAndMicrophone());
  await waitForMediaFrom(guest.page, host.identity);
  await waitForMediaFrom(host.page, guest.identity);
  const name = await host.page.evaluate((id) => window.salonRoom.getParticipantByIdentity(id)?.name, guest.identity);
  assert.equal(name, 'Gaston');
});

test('a refused guest is removed and never received media', async () => {
  const { room, hostKey } = (await api('/api/meetings', { waitingRoom: true })).json;
  const host = await joinMeeting(room, 'Hélène', { hostKey });
  const guest = await joinMeeting(room, 'Intrus', { publish: false });
  await new Promise((r) => setTimeout(r, 2000));
  // Counted while connected: once removed, the connection is gone.
  assert.equal(await packetsReceived(guest.page), 0);
  const refused = await twirp('RemoveParticipant', { room, identity: guest.identity }, host.token);
  assert.equal(refused.status, 200);
  await guest.page.waitForFunction(() => window.events.some((e) => e[0] === 'disconnected'), null, { timeout: 10000 });
  const reason = await guest.page.evaluate(() => window.events.find((e) => e[0] === 'disconnected')[1]);
  assert.equal(reason, await guest.page.evaluate(() => LivekitClient.DisconnectReason.PARTICIPANT_REMOVED));
  assert.equal(await host.page.evaluate(() => window.salonRoom.remoteParticipants.size), 0);
});

test('a host key opens only its own meeting, and guests of an open meeting come straight in', async () => {
  const a = (await api('/api/meetings', { waitingRoom: true })).json;
  const b = (await api('/api/meetings', { waitingRoom: true })).json;
  const wrong = await api('/api/token', { room: b.room, name: 'Mallory', hostKey: a.hostKey });
  assert.equal(wrong.json.role, 'guest');
  assert.equal(wrong.json.waiting, true);

  const open = (await api('/api/meetings', { waitingRoom: false })).json;
  const host = await joinMeeting(open.room, 'Hélène', { hostKey: open.hostKey });
  const guest = await joinMeeting(open.room, 'Gaston');
  assert.equal(guest.waiting, false);
  await waitForMediaFrom(host.page, guest.identity);
  await waitForMediaFrom(guest.page, host.identity);
});
