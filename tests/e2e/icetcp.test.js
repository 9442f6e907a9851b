// A network that lets no UDP through, as many administrations' networks do:
// chromium told to use no UDP (its enterprise policy of that name) still
// meets the others, over ICE-TCP to the media worker's TCP port.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startSdkFixture } from './lib/sdk.js';
import { waitForMediaFrom } from './lib/browser.js';

let fx;

before(async () => {
  fx = await startSdkFixture({
    browserArgs: ['--webrtc-ip-handling-policy=disable_non_proxied_udp'],
    salonArgs: ['--prometheus-port', '0'],
  });
});

after(async () => {
  await fx?.close();
});

/// The protocol of the candidate pair that carries `identity`'s camera to `page`.
async function cameraTransport(page, identity) {
  return page.evaluate(async (identity) => {
    const track = window.salonRoom.getParticipantByIdentity(identity)?.getTrackPublication('camera')?.track;
    if (!track?.receiver) return null;
    const stats = await track.receiver.getStats();
    let pairId = null;
    stats.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
    });
    if (!pairId) {
      stats.forEach((s) => {
        if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pairId = s.id;
      });
    }
    const pair = pairId && stats.get(pairId);
    const local = pair && stats.get(pair.localCandidateId);
    const remote = pair && stats.get(pair.remoteCandidateId);
    return local && remote ? { local: local.protocol, remote: remote.protocol, remotePort: remote.port } : null;
  }, identity);
}

test('with UDP blocked, participants meet over ICE-TCP', async () => {
  const tia = await fx.joinWithSdk('tia', 'tcp-room');
  const tom = await fx.joinWithSdk('tom', 'tcp-room');
  await waitForMediaFrom(tom, 'tia');
  await waitForMediaFrom(tia, 'tom');
  const transport = await cameraTransport(tom, 'tia');
  assert.equal(transport?.local, 'tcp', `tom receives over ${JSON.stringify(transport)}`);
  assert.equal(transport?.remote, 'tcp');
  // What came over TCP is timed like UDP's: the forwarding delay
  // histogram counts it (nothing else reaches this salon; media, and the
  // STUN and RTCP answered, all came over TCP).
  const url = fx.salon.output().match(/Prometheus metrics at (http:\/\/\S+)/)?.[1];
  assert.ok(url, 'salon says where its metrics are');
  const count = async () => {
    const text = await (await fetch(url, { signal: AbortSignal.timeout(5000) })).text();
    return Number(text.match(/^salon_forward_delay_seconds_count (\S+)$/m)?.[1] ?? 0);
  };
  const first = await count();
  await new Promise((r) => setTimeout(r, 1500));
  const later = await count();
  assert.ok(later > first && first > 0, `forwarding delays counted over ICE-TCP: ${first}, then ${later}`);
});
