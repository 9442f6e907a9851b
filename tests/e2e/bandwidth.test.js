// Salon estimates each subscriber's downlink from its transport-wide
// congestion control feedback and gives it the best simulcast layer that
// fits. Here a viewer's downlink degrades under real packet loss: it must
// get a smaller layer while the publisher still sends the large one (so the
// SFU chose, not the publisher or the viewer's SDK), in the same stream,
// the small layer for as long as the loss lasts (random loss is no reason
// to pause the video), and the large layer back once the link is fine
// again, after Salon probed the link for the room it needs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { waitForMediaFrom } from './lib/browser.js';
import { lossTable } from './lib/netloss.js';
import { bandwidthFixture, HD_PUBLISHER, lastEstimate, probeVerdicts, publisherLayers, sleep } from './lib/bandwidth.js';

const shared = bandwidthFixture(lossTable);

/// Share of Salon's datagrams to the viewer dropped while the link is bad:
/// well above the 10 % up to which GCC holds its estimate, so that the
/// estimate falls within seconds from wherever it had climbed (on a clear
/// link it grows by some 8 % a second, whatever is sent), and on down to
/// its floor while the loss lasts. Random loss rather than a rate limit
/// (nftables' `limit rate`): a limit drops only what exceeds it, and GCC's
/// delay half misses a moderate queue (sfu/README.md), so the estimate
/// climbs past the limit again and again and the layer keeps moving, which
/// leaves no steady smaller layer to wait for.
const LOSS_PERCENT = 25;

/// Seconds the loss goes on once the viewer is on the smallest layer:
/// enough for GCC's estimate to fall from there to its floor, well below
/// that layer, which used to pause the video.
const LOSS_HOLD_SECONDS = 10;

/// The viewer's subscriber connection: its video inbound-rtp entries (one
/// unless a layer switch showed up as a new stream: the viewer publishes
/// nothing and watches one camera) and the UDP ports it receives on.
async function viewerVideo(page) {
  return page.evaluate(async () => {
    const stats = await window.salonRoom.engine.pcManager.subscriber.getStats();
    const video = [];
    let ports;
    stats.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') video.push(s);
      if (s.type === 'candidate-pair' && s.state === 'succeeded' && s.nominated) {
        const local = stats.get(s.localCandidateId);
        const remote = stats.get(s.remoteCandidateId);
        ports = { protocol: local.protocol, local: local.port, remote: remote.port };
      }
    });
    const v = video[0] ?? {};
    return {
      now: Date.now(),
      ssrcs: video.map((s) => s.ssrc),
      ssrc: v.ssrc,
      width: v.frameWidth ?? 0,
      decoded: v.framesDecoded ?? 0,
      // Complete frames handed on towards the decoder: when it stops with
      // bytes still coming, frames arrive that the browser cannot place.
      assembled: v.framesReceived ?? 0,
      dropped: v.framesDropped ?? 0,
      keyframes: v.keyFramesDecoded ?? 0,
      freezes: v.freezeCount ?? 0,
      lost: v.packetsLost ?? 0,
      nacks: v.nackCount ?? 0,
      plis: v.pliCount ?? 0,
      bytes: v.bytesReceived ?? 0,
      ports,
    };
  });
}

test('a subscriber whose downlink degrades gets a smaller layer, and the large one back once it recovers', async () => {
  const pub = await shared.fx.joinWithSdk('pat', 'bandwidth-room', {}, HD_PUBLISHER);
  // Adaptive stream off: the viewer asks for the best layer whatever its
  // element's size, and never changes its mind on its own.
  const viewer = await shared.fx.joinWithSdk('vic', 'bandwidth-room', {}, { adaptiveStream: false }, false);
  await waitForMediaFrom(viewer, 'pat');
  await viewer.evaluate(() => {
    window.streamStates = [];
    window.salonRoom.on(LivekitClient.RoomEvent.TrackStreamStateChanged, (pub, state) =>
      window.streamStates.push({ state, kind: pub.kind }),
    );
  });
  await viewer.evaluate(() =>
    window.salonRoom
      .getParticipantByIdentity('pat')
      .getTrackPublication('camera')
      .setVideoQuality(LivekitClient.VideoQuality.HIGH),
  );
  /// The layer the viewer's SDK asks Salon for.
  const quality = () =>
    viewer.evaluate(() => {
      const camera = window.salonRoom.getParticipantByIdentity('pat').getTrackPublication('camera');
      return LivekitClient.VideoQuality[camera.videoQuality];
    });

  const t0 = Date.now();
  const samples = [];
  const sample = async (phase) => {
    const [v, p] = await Promise.all([viewerVideo(viewer), publisherLayers(pub)]);
    const prev = samples.at(-1);
    const ms = prev ? v.now - prev.now : 0;
    const s = { t: (v.now - t0) / 1000, phase, ...v, publisher: p, estimate: lastEstimate(shared.fx.salon) };
    samples.push(s);
    const rate = (now, then) => (then !== undefined && ms ? Math.round((8 * (now - then)) / ms) : '-');
    const layers = Object.entries(p)
      .sort(([, a], [, b]) => a.width - b.width)
      .map(([rid, l]) => `${rid} ${l.width} ${rate(l.bytes, prev?.publisher[rid]?.bytes)}`)
      .join(', ');
    console.log(
      `${s.t.toFixed(1).padStart(5)} s ${phase.padEnd(8)} width ${String(s.width).padStart(4)} ` +
        `decoded ${s.decoded} assembled ${s.assembled} dropped ${s.dropped} lost ${s.lost} nacks ${s.nacks} ` +
        `plis ${s.plis} keyframes ${s.keyframes} freezes ${s.freezes} | in ${rate(s.bytes, prev?.bytes)} kb/s, ` +
        `estimate ${s.estimate === undefined ? '-' : Math.round(s.estimate / 1000)} kb/s | sent (kb/s): ${layers}`,
    );
    return s;
  };
  /// Samples once a second until `check` holds for `readings` readings in
  /// a row of this phase, with frames decoded in between; returns the
  /// first of them, with `after`: seconds since the phase began.
  const waitFor = async (phase, what, check, timeoutMs, readings = 2) => {
    const begin = samples.at(-1);
    const deadline = Date.now() + timeoutMs;
    let run = [];
    while (Date.now() < deadline) {
      await sleep(1000);
      const s = await sample(phase);
      if (!check(s)) run = [];
      else if (run.length > 0 && s.decoded <= run.at(-1).decoded) run = [s];
      else run.push(s);
      if (run.length >= readings) {
        run[0].after = Number((run[0].t - (begin?.t ?? 0)).toFixed(1));
        return run[0];
      }
    }
    throw new Error(`${what} within ${timeoutMs / 1000} s: last ${JSON.stringify(samples.at(-1))}`);
  };

  // Chrome's publisher starts its largest layer only once its own uplink
  // estimate allows; the viewer must be on it before the loss, so that
  // the loss has something to take away.
  await waitFor('clear', 'the largest layer', (s) => s.width >= 1280, 40000);
  // A few seconds more on the clear link: the layer there is the one to
  // come back to.
  for (let i = 0; i < 3; i++) {
    await sleep(1000);
    await sample('clear');
  }
  const before = samples.at(-1);
  assert.equal(before.ports?.protocol, 'udp', `the viewer receives over UDP: ${JSON.stringify(before.ports)}`);

  let during;
  let dropped;
  let qualityDuring;
  try {
    shared.net.drop(before.ports.remote, before.ports.local, LOSS_PERCENT);
    // One reading is enough (a frame that small was decoded).
    during = await waitFor('loss', 'a smaller layer under loss', (s) => s.width > 0 && s.width <= 320, 20000, 1);
    // Still under loss: whether the viewer's SDK asked for less.
    qualityDuring = await quality();
    for (let i = 0; i < LOSS_HOLD_SECONDS; i++) {
      await sleep(1000);
      await sample('loss');
    }
    dropped = shared.net.dropped();
  } finally {
    shared.net.clear();
  }
  const clearedAt = Date.now();
  const recovered = await waitFor('recovery', 'the large layer back', (s) => s.width >= before.width, 60000);
  // A little longer: the large layer holds on the clear link.
  for (let i = 0; i < 3; i++) {
    await sleep(1000);
    await sample('recovery');
  }
  const last = samples.at(-1);
  const held = samples.filter((s) => s.phase === 'loss' && s.t > during.t);
  const endOfLoss = held.at(-1);
  const clearAgain = samples[samples.indexOf(endOfLoss) + 1];
  const streamStates = await viewer.evaluate(() => window.streamStates);
  const probes = probeVerdicts(shared.fx.salon).map((p) => ({ ...p, t: Number(((p.at - t0) / 1000).toFixed(1)) }));
  const recoveredAt = t0 + recovered.t * 1000;
  const probesInRecovery = probes.filter((p) => p.at >= clearedAt && p.at <= recoveredAt);

  const watched = samples.slice(samples.indexOf(before));
  const stalls = watched.filter((s, i) => i > 0 && s.decoded <= watched[i - 1].decoded).map((s) => s.t);
  // The layer the viewer had before the loss is the publisher's largest.
  const [bigRid] = Object.entries(before.publisher).sort(([, a], [, b]) => b.width - a.width)[0];
  const big = (s) => s.publisher[bigRid] ?? { width: 0, frames: 0 };
  const delta = (key, a = before, b = last) => b[key] - a[key];
  const summary = {
    dropped,
    widths: { before: before.width, during: during.width, recovered: recovered.width, last: last.width },
    secondsToDrop: during.after,
    secondsToRecover: recovered.after,
    estimateKbps: Object.fromEntries(
      Object.entries({
        before: before.estimate,
        atDrop: during.estimate,
        lowest: Math.min(...watched.map((s) => s.estimate ?? Infinity)),
        endOfLoss: endOfLoss.estimate,
        atRecovery: recovered.estimate,
        last: last.estimate,
      }).map(([k, v]) => [k, Math.round(v / 1000)]),
    ),
    viewer: Object.fromEntries(
      ['decoded', 'dropped', 'lost', 'nacks', 'plis', 'keyframes', 'freezes'].map((k) => [k, delta(k)]),
    ),
    // From the first reading on the clear link again: the switches back up.
    afterLoss: Object.fromEntries(['dropped', 'plis', 'freezes'].map((k) => [k, delta(k, clearAgain)])),
    stalls,
    ssrcs: [...new Set(watched.flatMap((s) => s.ssrcs))],
    qualityDuring,
    heldWidths: held.map((s) => s.width),
    probes: probes.map(({ t, verdict, bps }) => ({ t, verdict, kbps: bps && Math.round(bps / 1000) })),
    streamStates,
    publisherLargest: {
      rid: bigRid,
      widths: [big(before).width, big(during).width],
      framesDuringLoss: big(during).frames - big(before).frames,
      secondsOfLoss: Number((during.t - before.t).toFixed(1)),
    },
  };
  console.log(`summary ${JSON.stringify(summary)}`);

  assert.ok(dropped >= 50, `packets dropped: ${dropped}`);
  assert.ok(during.width < before.width, `a smaller layer under loss: ${JSON.stringify(summary.widths)}`);
  // The loss went on while the estimate fell to its floor, far below the
  // smallest layer: the video stayed on that layer, not paused. Random
  // loss is what retransmissions mend; only a queue building up, or a
  // third of the packets lost, pauses it.
  assert.ok(
    summary.estimateKbps.endOfLoss * 1000 < 100_000,
    `the estimate fell below the smallest layer: ${JSON.stringify(summary.estimateKbps)}`,
  );
  assert.ok(
    held.every((s) => s.width > 0 && s.width <= 320),
    `the smallest layer while the loss lasted: ${JSON.stringify(summary.heldWidths)}`,
  );
  assert.deepEqual(streamStates, [], 'no stream state change: the video never paused');
  // Back up only over room proven first: a probe the link carried, after
  // the loss and before the large layer came back.
  assert.ok(
    probesInRecovery.some((p) => p.verdict === 'Carried'),
    `a probe the link carried before the large layer came back: ${JSON.stringify(summary.probes)}`,
  );
  // The viewer's SDK still asked for the best layer, and the publisher
  // still sent it at full size all along (15 frames a second at least):
  // the smaller picture is Salon's choice for this link.
  assert.equal(qualityDuring, 'HIGH');
  const { framesDuringLoss, secondsOfLoss } = summary.publisherLargest;
  assert.ok(
    big(during).width >= before.width && framesDuringLoss >= 15 * secondsOfLoss,
    `the publisher kept sending its largest layer: ${JSON.stringify(summary.publisherLargest)}`,
  );
  // One stream to the decoder throughout: Salon switches layers behind one
  // SSRC, on keyframes, so the picture goes on across every switch. Loss
  // alone does not hold decoding up for a whole second (NACKs repair it:
  // 25 % on one layer without switches left frames decoded every second);
  // a switch the browser cannot follow does.
  assert.deepEqual(summary.ssrcs, [before.ssrc], 'the same video stream throughout');
  assert.deepEqual(stalls, [], `seconds without a frame decoded: ${JSON.stringify(summary)}`);
  // A receiver that lost its picture asks for a keyframe (PLI); on the
  // clear link again it has no reason to.
  assert.equal(summary.afterLoss.plis, 0, `keyframe requests after the loss: ${JSON.stringify(summary.afterLoss)}`);
});
