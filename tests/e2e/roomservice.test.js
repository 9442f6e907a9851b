// livekit-server-sdk's RoomServiceClient against a running Salon.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { AccessToken, RoomServiceClient, TrackSource } from 'livekit-server-sdk';
import { startSdkFixture } from './lib/sdk.js';

let fx;
let salon;
let rooms;

before(async () => {
  fx = await startSdkFixture();
  salon = fx.salon;
  rooms = new RoomServiceClient(salon.httpUrl, salon.apiKey, salon.apiSecret);
});

after(async () => {
  await fx?.close();
});

const joinWithSdk = (identity, room) => fx.joinWithSdk(identity, room);

async function until(what, fn, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await fn();
    if (last) return last;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out waiting for ${what}`);
}

test('RoomServiceClient manages rooms and participants', async () => {
  const created = await rooms.createRoom({ name: 'board', emptyTimeout: 120, maxParticipants: 5, metadata: 'agenda' });
  assert.equal(created.name, 'board');
  assert.equal(created.emptyTimeout, 120);
  assert.equal(created.maxParticipants, 5);
  assert.equal(created.metadata, 'agenda');
  assert.match(created.sid, /^RM_/);

  const listed = await rooms.listRooms();
  assert.ok(listed.some((r) => r.name === 'board'));
  assert.deepEqual((await rooms.listRooms(['board'])).map((r) => r.name), ['board']);
  assert.deepEqual(await rooms.listRooms(['no-such-room']), []);

  const page = await joinWithSdk('carol', 'board');
  const withTracks = await until('carol to publish two tracks', async () => {
    const ps = await rooms.listParticipants('board');
    return ps.length === 1 && ps[0].tracks.length === 2 ? ps : undefined;
  });
  assert.equal(withTracks[0].identity, 'carol');
  const listedRoom = (await rooms.listRooms(['board']))[0];
  assert.equal(listedRoom.numParticipants, 1);

  const carol = await rooms.getParticipant('board', 'carol');
  assert.equal(carol.identity, 'carol');
  const mic = carol.tracks.find((t) => t.source === TrackSource.MICROPHONE);
  assert.ok(mic, 'microphone track listed');

  const muted = await rooms.mutePublishedTrack('board', 'carol', mic.sid, true);
  assert.equal(muted.sid, mic.sid);
  assert.equal(muted.muted, true);
  // The publisher's own SDK applied the mute.
  await page.waitForFunction(
    () => window.salonRoom.localParticipant.getTrackPublication('microphone')?.isMuted === true,
    null,
    { timeout: 10000 },
  );

  const updated = await rooms.updateParticipant('board', 'carol', { metadata: 'presenter', name: 'Carol C.' });
  assert.equal(updated.metadata, 'presenter');
  assert.equal(updated.name, 'Carol C.');
  await page.waitForFunction(() => window.salonRoom.localParticipant.metadata === 'presenter', null, { timeout: 10000 });

  await rooms.removeParticipant('board', 'carol');
  await page.waitForFunction(() => window.salonRoom.state === 'disconnected', null, { timeout: 10000 });
  assert.deepEqual(await rooms.listParticipants('board'), []);

  await rooms.deleteRoom('board');
  assert.ok(!(await rooms.listRooms()).some((r) => r.name === 'board'));
  await assert.rejects(rooms.listParticipants('board'), (e) => e.status === 404);
});

test('calls without the needed grant are refused', async () => {
  await rooms.createRoom({ name: 'guarded' });
  // A join-only token: no roomAdmin, roomList or roomCreate.
  const at = new AccessToken(salon.apiKey, salon.apiSecret, { identity: 'mallory' });
  at.addGrant({ roomJoin: true, room: 'guarded' });
  const jwt = await at.toJwt();
  for (const [method, body] of [
    ['ListParticipants', { room: 'guarded' }],
    ['RemoveParticipant', { room: 'guarded', identity: 'x' }],
    ['ListRooms', {}],
    ['CreateRoom', { name: 'other' }],
    ['DeleteRoom', { room: 'guarded' }],
  ]) {
    const res = await fetch(`${salon.httpUrl}/twirp/livekit.RoomService/${method}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${jwt}` },
      body: JSON.stringify(body),
    });
    assert.equal(res.status, 403, method);
    assert.equal((await res.json()).code, 'permission_denied');
  }
  // An admin of another room cannot act on this one.
  const other = new AccessToken(salon.apiKey, salon.apiSecret, { identity: 'admin2' });
  other.addGrant({ roomAdmin: true, room: 'elsewhere' });
  const res = await fetch(`${salon.httpUrl}/twirp/livekit.RoomService/ListParticipants`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${await other.toJwt()}` },
    body: JSON.stringify({ room: 'guarded' }),
  });
  assert.equal(res.status, 403);

  // The SDK with a wrong secret gets an authentication error.
  const forged = new RoomServiceClient(salon.httpUrl, salon.apiKey, 'wrong-secret');
  await assert.rejects(forged.listRooms(), (e) => e.status === 401);

  // Malformed bodies are refused and harm nothing.
  const admin = new AccessToken(salon.apiKey, salon.apiSecret, { identity: 'root' });
  admin.addGrant({ roomList: true });
  const bad = await fetch(`${salon.httpUrl}/twirp/livekit.RoomService/ListRooms`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/protobuf', Authorization: `Bearer ${await admin.toJwt()}` },
    body: new Uint8Array([0xff, 0xff, 0xff]),
  });
  assert.equal(bad.status, 400);
  assert.ok((await rooms.listRooms()).some((r) => r.name === 'guarded'));
});
