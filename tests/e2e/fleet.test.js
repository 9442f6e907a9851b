// The fleet: signaling replicas and SFU nodes as separate processes over
// Redis, with livekit-client participants joining through different
// replicas. Placement, agreement between replicas, node death, drain and a
// Redis restart, as ops and users meet them.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { AccessToken, RoomServiceClient } from 'livekit-server-sdk';
import os from 'node:os';
import path from 'node:path';
import { Fleet, movingSquareY4m, startRedis } from './lib/fleet.js';
import { servePages } from './lib/pages.js';
import { launchBrowser, newPage, waitForMediaFrom } from './lib/browser.js';

let fleet;
let pages;
let browser;
let camera;
const ownBrowsers = [];
let replicas;
let nodes;

before(async () => {
  fleet = new Fleet();
  nodes = [await fleet.node('node-a'), await fleet.node('node-b')];
  replicas = [await fleet.replica(), await fleet.replica()];
  await fleet.waitFor('both nodes registered', () => fleet.liveNodes().length === 2);
  pages = await servePages();
  camera = movingSquareY4m(path.join(os.tmpdir(), `salon-fleet-camera-${process.pid}.y4m`));
  browser = await launchBrowser();
});

after(async () => {
  await Promise.all(ownBrowsers.map((b) => b.close().catch(() => {})));
  await browser?.close();
  await pages?.close();
  await fleet?.stop();
});

async function token(f, identity, room, grant = {}) {
  const at = new AccessToken(f.apiKey, f.apiSecret, { identity, name: identity.toUpperCase() });
  at.addGrant({ roomJoin: true, room, ...grant });
  return at.toJwt();
}

function admin(f, replica) {
  return new RoomServiceClient(replica.httpUrl, f.apiKey, f.apiSecret);
}

/// A livekit-client page joined to `room` through `replica`, publishing
/// camera and microphone. Each participant has a browser of its own, as
/// people do: on a full reconnect livekit-client restarts the camera, and
/// two pages restarting one browser's shared fake camera at once can leave
/// it delivering no frames, for every page after.
async function join(f, replica, identity, room) {
  const own = await launchBrowser([`--use-file-for-fake-video-capture=${camera}`]);
  ownBrowsers.push(own);
  const page = await newPage(own);
  await page.goto(pages.url + '/sdk.html');
  await page.evaluate(([url, t]) => window.joinRoom(url, t), [replica.wsUrl, await token(f, identity, room)]);
  return page;
}

async function leave(...pages) {
  for (const page of pages) {
    await page.evaluate(() => window.salonRoom.disconnect()).catch(() => {});
    await page.context().browser().close();
  }
}

const identities = (list) => list.map((p) => p.identity).sort();

test('rooms spread over the nodes, a room meets on one node whichever replica people come through, and replicas agree', async () => {
  const [r1, r2] = replicas;
  const alice = await join(fleet, r1, 'alice', 'salle-1');
  const bob = await join(fleet, r2, 'bob', 'salle-1');
  await waitForMediaFrom(alice, 'bob');
  await waitForMediaFrom(bob, 'alice');
  const first = fleet.holder('salle-1');
  assert.ok(['node-a', 'node-b'].includes(first), `salle-1 placed on ${first}`);

  // The other node has fewer participants: the next room goes there.
  await fleet.waitFor('the load reported', async () => {
    const rooms = await admin(fleet, r1).listRooms();
    return rooms.find((r) => r.name === 'salle-1')?.numParticipants === 2;
  });
  await new Promise((r) => setTimeout(r, 2500)); // a heartbeat carries the load
  const carol = await join(fleet, r2, 'carol', 'salle-2');
  const second = fleet.holder('salle-2');
  assert.notEqual(second, first, 'the second room went to the less loaded node');

  for (const replica of replicas) {
    const rooms = await admin(fleet, replica).listRooms();
    assert.deepEqual(
      rooms.map((r) => [r.name, r.numParticipants]).sort(),
      [['salle-1', 2], ['salle-2', 1]],
    );
    assert.deepEqual(identities(await admin(fleet, replica).listParticipants('salle-1')), ['alice', 'bob']);
    assert.deepEqual(identities(await admin(fleet, replica).listParticipants('salle-2')), ['carol']);
  }
  // An admin call through either replica reaches the node hosting the participant.
  await admin(fleet, r2).updateParticipant('salle-1', 'alice', { metadata: 'via r2' });
  await alice.waitForFunction(() => window.salonRoom.localParticipant.metadata === 'via r2');
  await admin(fleet, r1).removeParticipant('salle-2', 'carol');
  await carol.waitForFunction(() => window.salonRoom.state === 'disconnected');
  await leave(alice, bob, carol);
});

test('first joins of one room racing through both replicas always end on one node', async () => {
  const page = await newPage(browser);
  await page.goto(pages.url + '/sdk.html');
  for (let round = 0; round < 50; round++) {
    const room = `race-${round}`;
    const urls = [];
    for (const [i, replica] of replicas.entries()) {
      const t = await token(fleet, `p${i}`, room);
      urls.push(`${replica.wsUrl}/rtc?access_token=${t}&auto_subscribe=1&protocol=15`);
    }
    // Both WebSockets open at once; each resolves on its first message,
    // the JoinResponse, and stays open until the check is done.
    const joined = await page.evaluate(async (urls) => {
      window.raceSockets = urls.map((u) => new WebSocket(u));
      const first = (ws) =>
        new Promise((resolve) => {
          ws.binaryType = 'arraybuffer';
          ws.onmessage = (e) => resolve(e.data.byteLength > 0);
          ws.onclose = () => resolve(false);
        });
      return Promise.all(window.raceSockets.map(first));
    }, urls);
    assert.deepEqual(joined, [true, true], `round ${round}: both joined`);
    const holder = fleet.holder(room);
    assert.ok(holder, `round ${round}: placed`);
    // One node hosts both: it lists them together, through either replica.
    for (const replica of replicas) {
      assert.deepEqual(identities(await admin(fleet, replica).listParticipants(room)), ['p0', 'p1'], `round ${round}`);
    }
    await page.evaluate(() => window.raceSockets.forEach((ws) => ws.close()));
  }
  await page.context().close();
});

test('a draining node takes no new room while its meeting goes on, then stops', async () => {
  const [r1, r2] = replicas;
  const alice = await join(fleet, r1, 'alice', 'salle-3');
  const bob = await join(fleet, r2, 'bob', 'salle-3');
  await waitForMediaFrom(bob, 'alice');
  const draining = nodes.find((n) => n.id === fleet.holder('salle-3'));
  const other = nodes.find((n) => n !== draining);
  draining.proc.kill('SIGTERM');
  await fleet.waitFor('the node marked draining', () =>
    fleet.redis('GET', `${fleet.prefix}:node:${draining.id}`).includes('"draining"'),
  );
  const dave = await join(fleet, r1, 'dave', 'salle-4');
  assert.equal(fleet.holder('salle-4'), other.id, 'the new room went to the active node');
  // The meeting on the draining node goes on.
  await waitForMediaFrom(alice, 'bob');
  await waitForMediaFrom(bob, 'alice');
  assert.ok(draining.alive(), 'the draining node still runs');
  // Once its meeting ends, it leaves the registry and exits.
  await leave(alice, bob);
  const { code } = await draining.exited;
  assert.equal(code, 0);
  assert.deepEqual(fleet.liveNodes(), [other.id]);
  await leave(dave);
  nodes = [other, await fleet.node('node-c')];
  await fleet.waitFor('node-c registered', () => fleet.liveNodes().length === 2);
});

test('a room found placed on another node is handed over: its participants rejoin there', async () => {
  const [r1, r2] = replicas;
  const alice = await join(fleet, r1, 'alice', 'salle-8');
  const bob = await join(fleet, r2, 'bob', 'salle-8');
  await waitForMediaFrom(bob, 'alice');
  const first = fleet.holder('salle-8');
  const other = nodes.find((n) => n.id !== first);
  // As if the other node had taken the room over while the first one was
  // cut off from Redis: the first one sees it at its next heartbeat.
  fleet.redis('SET', `${fleet.prefix}:room:salle-8`, other.id, 'PX', '10000');
  await fleet.waitFor(
    'both participants on the other node',
    async () => identities(await admin(fleet, r1).listParticipants('salle-8')).join() === 'alice,bob',
    15000,
  );
  assert.equal(fleet.holder('salle-8'), other.id);
  await waitForMediaFrom(alice, 'bob');
  await waitForMediaFrom(bob, 'alice');
  await leave(alice, bob);
});

test('when the node hosting a meeting is killed, its participants reconnect on another node and see each other', async () => {
  const [r1, r2] = replicas;
  const alice = await join(fleet, r1, 'alice', 'salle-5');
  const bob = await join(fleet, r2, 'bob', 'salle-5');
  await waitForMediaFrom(alice, 'bob');
  await waitForMediaFrom(bob, 'alice');
  const victim = nodes.find((n) => n.id === fleet.holder('salle-5'));
  const survivor = nodes.find((n) => n !== victim);
  const killedAt = Date.now();
  victim.proc.kill('SIGKILL');
  await fleet.waitFor(
    'both participants back in salle-5 on the other node',
    async () =>
      fleet.holder('salle-5') === survivor.id &&
      identities(await admin(fleet, r1).listParticipants('salle-5')).join() === 'alice,bob',
    15000,
  );
  console.log(`# reconnected on ${survivor.id} ${Date.now() - killedAt} ms after the kill`);
  await waitForMediaFrom(alice, 'bob');
  await waitForMediaFrom(bob, 'alice');
  await leave(alice, bob);
});

test('a Redis restart under a running meeting: the meeting flows on, and joins work once Redis is back', async () => {
  const redis = await startRedis();
  const own = new Fleet({ redisPort: redis.port });
  try {
    await own.node('node-r');
    const replica = await own.replica();
    await own.waitFor('node registered', () => own.liveNodes().length === 1);
    const alice = await join(own, replica, 'alice', 'salle-6');
    const bob = await join(own, replica, 'bob', 'salle-6');
    await waitForMediaFrom(bob, 'alice');

    await redis.stop();
    // The meeting does not need Redis.
    await waitForMediaFrom(alice, 'bob');
    await waitForMediaFrom(bob, 'alice');
    // A new room cannot be placed: a clear error, not a hang.
    await assert.rejects(admin(own, replica).createRoom({ name: 'salle-7' }), /unavailable|unreachable|503/i);

    const back = await startRedis(redis.port);
    try {
      await own.waitFor('the node registered again', () => own.liveNodes().includes('node-r'));
      const carol = await join(own, replica, 'carol', 'salle-6');
      await waitForMediaFrom(carol, 'alice');
      await waitForMediaFrom(alice, 'carol');
      assert.equal(own.holder('salle-6'), 'node-r', 'the placement was written again');
      await leave(alice, bob, carol);
    } finally {
      await own.stop();
      await back.stop();
    }
  } finally {
    await own.stop();
    await redis.stop();
  }
});
