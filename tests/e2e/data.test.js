// Data messages between livekit-client participants, relayed by Salon:
// publishData (reliable and lossy, to everyone or to named participants),
// text streams (what chat uses), RPC, participant attributes, and the
// server's own SendData. Grants decide who may send.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { RoomServiceClient } from 'livekit-server-sdk';
import { startSdkFixture } from './lib/sdk.js';

let fx;

before(async () => {
  fx = await startSdkFixture();
});

after(async () => {
  await fx?.close();
});

/// Joins without publishing media: these tests are about data.
const join = (identity, room, grant = {}) => fx.joinWithSdk(identity, room, grant, {}, false);

/// The data messages a page received so far: [from, text, topic].
const received = (page) =>
  page.evaluate(() => window.events.filter((e) => e[0] === 'data').map((e) => e.slice(1)));

async function waitForData(page, text, timeoutMs = 10000) {
  await page.waitForFunction(
    (t) => window.events.some((e) => e[0] === 'data' && e[2] === t),
    text,
    { timeout: timeoutMs },
  );
}

const publish = (page, text, options) =>
  page.evaluate(
    ([t, o]) => window.salonRoom.localParticipant.publishData(new TextEncoder().encode(t), o),
    [text, options],
  );

test('publishData reaches everyone else, or only the participants it names', async () => {
  const ada = await join('ada', 'data-room');
  const bea = await join('bea', 'data-room');
  const cid = await join('cid', 'data-room');
  await ada.waitForFunction(() => window.salonRoom.remoteParticipants.size === 2, null, { timeout: 10000 });

  await publish(ada, 'bonjour à tous', { reliable: true, topic: 'greet' });
  for (const page of [bea, cid]) await waitForData(page, 'bonjour à tous');
  assert.deepEqual((await received(bea))[0], ['ada', 'bonjour à tous', 'greet']);

  // Lossy messages take the other channel (no loss on loopback).
  await publish(bea, 'vite', { reliable: false });
  for (const page of [ada, cid]) await waitForData(page, 'vite');

  // A message for Bea only; then one for all, which Cid must get after it
  // on the same ordered channel, so Cid's not having the first is real.
  await publish(ada, 'pour Bea', { reliable: true, destinationIdentities: ['bea'] });
  await publish(ada, 'pour tous', { reliable: true });
  await waitForData(bea, 'pour Bea');
  await waitForData(cid, 'pour tous');
  assert.ok(!(await received(cid)).some(([, t]) => t === 'pour Bea'), 'Cid did not get the message for Bea');

  // Nobody hears their own messages back.
  assert.ok(!(await received(ada)).some(([from]) => from === 'ada'));
});

test('a participant without canPublishData cannot send, and a waiting guest receives nothing', async () => {
  const oli = await join('oli', 'grant-data');
  const mute = await join('mute', 'grant-data', { canPublishData: false });
  const guest = await join('guest', 'grant-data', { canSubscribe: false, canPublishData: false, hidden: true });
  await mute.waitForFunction(() => window.salonRoom.remoteParticipants.size === 1, null, { timeout: 10000 });
  // livekit-client refuses locally when it knows the grant; the server
  // must refuse too, so the packet is sent past the SDK's check.
  await mute.evaluate(async () => {
    const lp = window.salonRoom.localParticipant;
    if (lp.permissions) lp.permissions.canPublishData = true;
    await lp.publishData(new TextEncoder().encode('interdit'), { reliable: true });
  });
  await publish(oli, 'après', { reliable: true });
  await waitForData(mute, 'après');
  assert.ok(!(await received(oli)).some(([, t]) => t === 'interdit'), 'the server dropped it');
  // The hidden guest who may not subscribe got neither.
  await new Promise((r) => setTimeout(r, 500));
  assert.deepEqual(await received(guest), []);
});

test('text streams (chat) and RPC go through, large messages included', async () => {
  const ana = await join('ana', 'stream-room');
  const ben = await join('ben', 'stream-room');
  await ana.waitForFunction(() => window.salonRoom.remoteParticipants.size === 1, null, { timeout: 10000 });
  await ben.evaluate(() => {
    window.chat = [];
    window.salonRoom.registerTextStreamHandler('lk.chat', async (reader, info) => {
      window.chat.push([info.identity, await reader.readAll()]);
    });
    window.salonRoom.localParticipant.registerRpcMethod('add', async (data) => {
      const { a, b } = JSON.parse(data.payload);
      return String(a + b) + ' from ' + data.callerIdentity;
    });
  });
  // Longer than one data packet: the SDK splits it into chunks.
  const long = 'é'.repeat(40000);
  await ana.evaluate((t) => window.salonRoom.localParticipant.sendText(t, { topic: 'lk.chat' }), long);
  await ana.evaluate(() => window.salonRoom.localParticipant.sendText('salut', { topic: 'lk.chat' }));
  await ben.waitForFunction(() => window.chat.length === 2, null, { timeout: 10000 });
  const chat = await ben.evaluate(() => window.chat);
  assert.equal(chat[0][0], 'ana');
  assert.equal(chat[0][1], long);
  assert.deepEqual(chat[1], ['ana', 'salut']);

  const answer = await ana.evaluate(() =>
    window.salonRoom.localParticipant.performRpc({
      destinationIdentity: 'ben',
      method: 'add',
      payload: JSON.stringify({ a: 2, b: 3 }),
    }),
  );
  assert.equal(answer, '5 from ana');
});

test('attributes set by a participant reach the others', async () => {
  const grant = { canUpdateOwnMetadata: true };
  const raj = await join('raj', 'attr-room', grant);
  const sam = await join('sam', 'attr-room', grant);
  await raj.waitForFunction(() => window.salonRoom.remoteParticipants.size === 1, null, { timeout: 10000 });
  await raj.evaluate(() => window.salonRoom.localParticipant.setAttributes({ hand: 'up' }));
  await sam.waitForFunction(
    () => window.salonRoom.getParticipantByIdentity('raj')?.attributes.hand === 'up',
    null,
    { timeout: 10000 },
  );
  await raj.evaluate(() => window.salonRoom.localParticipant.setAttributes({ hand: '' }));
  await sam.waitForFunction(
    () => !('hand' in (window.salonRoom.getParticipantByIdentity('raj')?.attributes ?? { hand: 1 })),
    null,
    { timeout: 10000 },
  );
});

test('the server sends data with RoomServiceClient.sendData', async () => {
  const rooms = new RoomServiceClient(fx.salon.httpUrl, fx.salon.apiKey, fx.salon.apiSecret);
  const kim = await join('kim', 'server-data');
  const lea = await join('lea', 'server-data');
  await rooms.sendData('server-data', new TextEncoder().encode('annonce'), 0, { topic: 'admin' });
  await rooms.sendData('server-data', new TextEncoder().encode('pour Lea'), 0, { destinationIdentities: ['lea'] });
  await waitForData(kim, 'annonce');
  await waitForData(lea, 'pour Lea');
  const atKim = await received(kim);
  assert.deepEqual(atKim[0], ['', 'annonce', 'admin']);
  assert.ok(!atKim.some(([, t]) => t === 'pour Lea'));
});
