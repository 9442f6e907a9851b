// What Salon itself sends each subscriber beside the forwarded media: the
// packets a lossy downlink lost, again, when the browser asks for them
// (NACK), and a sender report per stream. Both are Salon's own work, since
// forwarded RTP bypasses webrtc-rs's interceptors; the browser's getStats()
// shows whether they arrive and make sense.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startSdkFixture } from './lib/sdk.js';
import { waitForMediaFrom } from './lib/browser.js';
import { connectionPorts, lossTable } from './lib/netloss.js';

let fx;
let loss;

before(async () => {
  // No nftables (or no right to use it) is a failure, not a skip.
  loss = lossTable();
  fx = await startSdkFixture();
});

after(async () => {
  loss?.remove();
  await fx?.close();
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/// A publisher with camera and microphone, and a subscriber that only
/// watches, so that its subscriber connection carries just those two streams.
async function publisherAndViewer(room) {
  const pub = await fx.joinWithSdk('pia', room);
  const sub = await fx.joinWithSdk('sue', room, {}, {}, false);
  await waitForMediaFrom(sub, 'pia');
  return { pub, sub };
}

/// The subscriber connection's inbound-rtp entries by kind, each with the
/// remote-outbound-rtp (what the last sender report said) of its stream.
async function inbound(page) {
  return page.evaluate(async () => {
    const stats = await window.salonRoom.engine.pcManager.subscriber.getStats();
    const out = {};
    stats.forEach((s) => {
      if (s.type !== 'inbound-rtp') return;
      const remote = s.remoteId ? stats.get(s.remoteId) : undefined;
      out[s.kind] = {
        ssrc: s.ssrc,
        packetsReceived: s.packetsReceived,
        packetsLost: s.packetsLost,
        nackCount: s.nackCount ?? 0,
        // Packets that came again on the RTX stream (RFC 4588), and its SSRC.
        retransmitted: s.retransmittedPacketsReceived ?? 0,
        rtxSsrc: s.rtxSsrc,
        framesDecoded: s.framesDecoded ?? 0,
        frameWidth: s.frameWidth,
        remote: remote && {
          reportsSent: remote.reportsSent,
          packetsSent: remote.packetsSent,
          remoteTimestamp: remote.remoteTimestamp,
          // When the report arrived.
          timestamp: remote.timestamp,
        },
      };
    });
    return { now: Date.now(), ...out };
  });
}

test('a subscriber whose downlink loses packets gets them again (NACK)', async () => {
  const { pub, sub } = await publisherAndViewer('nack-room');
  const ports = await connectionPorts(sub, 'subscriber');
  assert.equal(ports?.protocol, 'udp', `the subscriber receives over UDP: ${JSON.stringify(ports)}`);
  const start = await inbound(sub);
  assert.ok(start.video && start.audio, JSON.stringify(start));

  // A tenth of all Salon sends this subscriber is lost. Video and audio are
  // counted apart: the browser asks again only for video (the offer has no
  // NACK for Opus), so audio shows what the loss does when nothing is sent
  // again, and video what Salon's retransmissions make of it.
  let dropped;
  try {
    loss.dropStream(ports.remote, ports.local, 10, start.video.ssrc);
    loss.dropStream(ports.remote, ports.local, 10, start.audio.ssrc);
    loss.drop(ports.remote, ports.local, 10);
    await sleep(10000);
    // Before clear(): the counters go with the rules.
    dropped = { all: loss.dropped(), video: loss.dropped(start.video.ssrc), audio: loss.dropped(start.audio.ssrc) };
  } finally {
    loss.clear();
  }
  // The gaps of the last moments are still being asked for.
  await sleep(1000);
  const end = await inbound(sub);

  const delta = (kind, key) => end[kind][key] - start[kind][key];
  const video = {
    dropped: dropped.video,
    nacks: delta('video', 'nackCount'),
    retransmitted: delta('video', 'retransmitted'),
    rtxSsrc: end.video.rtxSsrc,
    lost: delta('video', 'packetsLost'),
    received: delta('video', 'packetsReceived'),
    decoded: delta('video', 'framesDecoded'),
    width: [start.video.frameWidth, end.video.frameWidth],
  };
  const audio = {
    dropped: dropped.audio,
    lost: delta('audio', 'packetsLost'),
    received: delta('audio', 'packetsReceived'),
  };
  console.log(`dropped ${dropped.all} in all; video ${JSON.stringify(video)}; audio ${JSON.stringify(audio)}`);

  assert.equal(end.video.ssrc, start.video.ssrc, 'the same video stream throughout');
  // A rule's count is of messages: a run of datagrams Salon sends one
  // peer as one UDP GSO message crosses loopback's netfilter whole, and
  // goes or is dropped whole (on a real link each datagram would take its
  // own chance). What the browser found missing on the stream is the count
  // of packets lost.
  assert.ok(dropped.all >= 50 && video.dropped >= 15 && video.lost >= 30, `packets dropped: ${JSON.stringify({ dropped, video })}`);
  assert.ok(video.nacks > 0, `NACKs sent: ${video.nacks}`);
  // The packets asked for came again on the video's RTX stream, which
  // Salon's offer announced beside it.
  const offer = await sub.evaluate(() => window.salonRoom.engine.pcManager.subscriber._pc.currentRemoteDescription.sdp);
  assert.match(offer, new RegExp(`a=ssrc-group:FID ${end.video.ssrc} ${end.video.rtxSsrc}`), 'the RTX stream in the offer');
  // Most of them: a retransmission can be dropped too (a tenth of all
  // datagrams are), and the browser may skip a frame rather than ask again
  // (the publisher's VP8 has temporal layers, so half the frames are
  // referenced by none). Packets repaired over RTX still count as lost on
  // the media stream in the browser's statistics (and its receiver
  // reports), as they would with LiveKit.
  assert.ok(video.retransmitted >= 0.5 * video.lost, `retransmissions on RTX: ${JSON.stringify(video)}`);
  // Without retransmission every dropped packet stays lost, as audio's do.
  assert.ok(audio.dropped >= 20 && audio.lost >= 0.7 * audio.dropped, `audio ${JSON.stringify(audio)}`);
  // The picture went on: at least 5 frames a second (20 without loss).
  assert.ok(video.decoded >= 50, `frames decoded: ${video.decoded}`);
  await waitForMediaFrom(sub, 'pia');
  for (const page of [pub, sub]) await page.context().close();
});

test('sender reports reach the subscriber for every stream it receives', async () => {
  const { pub, sub } = await publisherAndViewer('report-room');
  // Salon reports each stream once a second. A report is compared with the
  // browser's counts read at most 100 ms after it arrived, and once a
  // hundred packets came, so that those sent in between are few.
  const fresh = {};
  let stats;
  const deadline = Date.now() + 10000;
  while (!(fresh.audio && fresh.video) && Date.now() < deadline) {
    stats = await inbound(sub);
    for (const kind of ['audio', 'video']) {
      const s = stats[kind];
      const ready = s?.remote?.reportsSent >= 2 && s.packetsReceived >= 100;
      if (!fresh[kind] && ready && stats.now - s.remote.timestamp <= 100) fresh[kind] = { now: stats.now, ...s };
    }
    await sleep(50);
  }
  console.log(JSON.stringify(fresh));
  for (const kind of ['audio', 'video']) {
    const s = fresh[kind];
    const what = `${kind}: ${JSON.stringify(s ?? stats?.[kind])}`;
    assert.ok(s, `a second report, just arrived: ${what}`);
    // The counts are those of this subscriber's stream, as Salon sent it:
    // about what the browser received, and not more than it saw (nothing is
    // lost on loopback, and the report went out before the stats were read).
    assert.ok(s.remote.packetsSent > 0 && s.remote.packetsSent >= 0.8 * s.packetsReceived, what);
    assert.ok(s.remote.packetsSent <= s.packetsReceived + s.packetsLost + 5, what);
    // Salon writes the wall clock, as NTP time.
    assert.ok(Math.abs(s.remote.remoteTimestamp - s.now) < 3000, what);
  }
  for (const page of [pub, sub]) await page.context().close();
});
