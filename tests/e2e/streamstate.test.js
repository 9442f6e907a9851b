// When a subscriber's downlink cannot carry even the smallest simulcast
// layer, Salon pauses its video rather than send what the link would only
// lose, tells its client so (LiveKit's StreamStateUpdate, which
// livekit-client shows as the track's streamState and the room's
// TrackStreamStateChanged), and keeps the sound going; once the link
// could carry the smallest layer again, the video resumes in the same
// stream. Here a viewer's downlink loses most of its datagrams (nftables,
// as in bandwidth.test.js), then none. Loss that heavy (40 % or more over
// two seconds) pauses the video even with no queue building; once it
// stops, nothing says the link is short of room, and the video resumes
// while the estimate is still at its floor (probes then raise it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { waitForMediaFrom } from './lib/browser.js';
import { lossTable } from './lib/netloss.js';
import { bandwidthFixture, HD_PUBLISHER, lastEstimate, publisherLayers, salonLog, sleep } from './lib/bandwidth.js';

const shared = bandwidthFixture(lossTable);

/// Share of Salon's datagrams to the viewer dropped while the link is bad.
/// Above 10 % loss GCC's estimate keeps falling as long as the loss lasts,
/// faster the more is lost: 60 % took it from the clear link's 3-10 Mb/s
/// to its floor (50 kb/s, well below 3/4 of the smallest layer) in 4-5 s
/// (25 % took 9 s). Audio, alone on the link then, is lost as much, which
/// holds the estimate at the floor until the loss stops.
const LOSS_PERCENT = 60;

/// The viewer's subscriber connection: its video and audio inbound-rtp
/// entries (the viewer watches one camera and one microphone), the video
/// track's stream state as livekit-client has it, and the UDP ports it
/// receives on.
async function viewerStats(page) {
  return page.evaluate(async () => {
    const stats = await window.salonRoom.engine.pcManager.subscriber.getStats();
    const video = [];
    const audio = [];
    let ports;
    stats.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') video.push(s);
      if (s.type === 'inbound-rtp' && s.kind === 'audio') audio.push(s);
      if (s.type === 'candidate-pair' && s.state === 'succeeded' && s.nominated) {
        const local = stats.get(s.localCandidateId);
        const remote = stats.get(s.remoteCandidateId);
        ports = { protocol: local.protocol, local: local.port, remote: remote.port };
      }
    });
    const v = video[0] ?? {};
    const a = audio[0] ?? {};
    const camera = window.salonRoom.getParticipantByIdentity('pat')?.getTrackPublication('camera');
    return {
      now: Date.now(),
      state: camera?.track?.streamState,
      videoSsrcs: video.map((s) => s.ssrc),
      ssrc: v.ssrc,
      width: v.frameWidth ?? 0,
      decoded: v.framesDecoded ?? 0,
      videoPackets: v.packetsReceived ?? 0,
      videoLost: v.packetsLost ?? 0,
      plis: v.pliCount ?? 0,
      keyframes: v.keyFramesDecoded ?? 0,
      audioSsrc: a.ssrc,
      audioPackets: a.packetsReceived ?? 0,
      audioLost: a.packetsLost ?? 0,
      ports,
    };
  });
}

/// Each stream state Salon sent, with the estimate it had logged just
/// before (in the same round of fitting layers) and the budget that
/// decides pauses (its delay-based half, unless the loss is heavy), in
/// bits per second.
function salonStreamStates() {
  let estimate;
  let pause;
  const out = [];
  for (const line of salonLog(shared.fx.salon)) {
    const e = line.match(/a subscriber's bandwidth estimate.*estimate=(\d+) pause=(\d+)/);
    if (e) [estimate, pause] = [Number(e[1]), Number(e[2])];
    const m = line.match(/^(\S+) .*stream state .*state=(\w+)/);
    if (m) out.push({ at: m[1], state: m[2], estimate, pause });
  }
  return out;
}

test("when a viewer's link cannot carry even the smallest video, its video pauses with a StreamStateUpdate, the sound goes on, and the video comes back", async () => {
  const pub = await shared.fx.joinWithSdk('pat', 'streamstate-room', {}, HD_PUBLISHER);
  // Adaptive stream off: the viewer asks for the best layer whatever its
  // element's size; what it gets is Salon's choice for its link alone.
  const viewer = await shared.fx.joinWithSdk('vic', 'streamstate-room', {}, { adaptiveStream: false }, false);
  // Every stream state change the viewer's client hears of, with its time.
  await viewer.evaluate(() => {
    window.streamStates = [];
    window.salonRoom.on(LivekitClient.RoomEvent.TrackStreamStateChanged, (pub, state, participant) =>
      window.streamStates.push({ at: Date.now(), state, kind: pub.kind, track: pub.trackSid, from: participant.identity }),
    );
  });
  await waitForMediaFrom(viewer, 'pat');
  await viewer.evaluate(() =>
    window.salonRoom
      .getParticipantByIdentity('pat')
      .getTrackPublication('camera')
      .setVideoQuality(LivekitClient.VideoQuality.HIGH),
  );
  const streamStates = () => viewer.evaluate(() => window.streamStates);

  const t0 = Date.now();
  const samples = [];
  const sample = async (phase) => {
    const [v, p] = await Promise.all([viewerStats(viewer), publisherLayers(pub)]);
    const prev = samples.at(-1);
    const s = { t: (v.now - t0) / 1000, phase, ...v, publisher: p, estimate: lastEstimate(shared.fx.salon) };
    samples.push(s);
    const grew = (key) => (prev ? `+${s[key] - prev[key]}` : '');
    const ms = prev ? v.now - prev.now : 0;
    // The publisher's layers, smallest first: width and kb/s sent.
    s.layers = Object.entries(p)
      .filter(([, l]) => l.width > 0)
      .sort(([, a], [, b]) => a.width - b.width)
      .map(([rid, l]) => {
        const then = prev?.publisher[rid]?.bytes;
        return { rid, width: l.width, kbps: then !== undefined && ms ? Math.round((8 * (l.bytes - then)) / ms) : undefined };
      });
    const layers = s.layers.map((l) => `${l.rid} ${l.width} ${l.kbps ?? '-'}`).join(', ');
    console.log(
      `${s.t.toFixed(1).padStart(5)} s ${phase.padEnd(8)} ${String(s.state).padEnd(7)} width ${String(s.width).padStart(4)} ` +
        `decoded ${s.decoded} (${grew('decoded')}) video packets ${s.videoPackets} (${grew('videoPackets')}) ` +
        `lost ${s.videoLost} plis ${s.plis} keyframes ${s.keyframes} | audio packets ${s.audioPackets} ` +
        `(${grew('audioPackets')}) lost ${s.audioLost} | estimate ` +
        `${s.estimate === undefined ? '-' : Math.round(s.estimate / 1000)} kb/s | sent (kb/s): ${layers}`,
    );
    return s;
  };
  /// Samples once a second until `check` holds; returns that sample, with
  /// `after`: seconds since `since` (a sample).
  const waitFor = async (phase, what, check, timeoutMs, since = samples.at(-1)) => {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      await sleep(1000);
      const s = await sample(phase);
      if (check(s)) {
        s.after = Number((s.t - since.t).toFixed(1));
        return s;
      }
    }
    throw new Error(`${what} within ${timeoutMs / 1000} s: last ${JSON.stringify(samples.at(-1))}`);
  };
  const decoding = (s, i = samples.indexOf(s)) => i > 0 && s.decoded > samples[i - 1].decoded;

  // The picture plays on the clear link, at least two readings in a row,
  // and in the largest layer: Chrome's publisher starts that one only once
  // its own uplink estimate allows, and the smallest layer's bitrate (what
  // the pause is measured against) settles only once all three go.
  await sample('clear');
  await waitFor(
    'clear',
    'the largest layer playing',
    (s) => s.state === 'active' && s.width >= 1280 && decoding(s) && decoding(samples.at(-2)),
    40000,
  );
  const before = samples.at(-1);
  assert.equal(before.ports?.protocol, 'udp', `the viewer receives over UDP: ${JSON.stringify(before.ports)}`);
  assert.ok(before.audioSsrc, `the viewer receives audio: ${JSON.stringify(before)}`);

  let paused;
  let dropped;
  let lossStop;
  try {
    shared.net.drop(before.ports.remote, before.ports.local, LOSS_PERCENT);
    paused = await waitFor('loss', 'the video paused under loss', (s) => s.state === 'paused', 30000);
    // Still under loss, a few seconds of pause. The first second after the
    // pause may still bring retransmissions of earlier packets (the
    // browser asks for those it missed); from then on no video at all.
    for (let i = 0; i < 6; i++) {
      await sleep(1000);
      await sample('paused');
    }
    dropped = shared.net.dropped();
  } finally {
    shared.net.clear();
    lossStop = samples.at(-1);
  }
  const pausedEnd = samples.at(-1);
  const resumed = await waitFor('recovery', 'the video active again', (s) => s.state === 'active', 60000);
  // Frames decoded again, two readings in a row.
  const playing = await waitFor(
    'recovery',
    'video decoded again',
    (s) => decoding(s) && decoding(samples.at(-2)) && samples.indexOf(s) - samples.indexOf(resumed) >= 1,
    20000,
  );
  // A little longer: the video holds on the clear link.
  for (let i = 0; i < 3; i++) {
    await sleep(1000);
    await sample('recovery');
  }
  const last = samples.at(-1);
  const events = await streamStates();

  // The pause as the client saw it: from the first reading after the one
  // that showed it paused (a retransmission may still come within that
  // second) to the last reading before the loss stopped.
  const settled = samples[samples.indexOf(paused) + 1];
  const whilePaused = samples.slice(samples.indexOf(paused), samples.indexOf(pausedEnd) + 1);
  const delta = (key, a, b) => b[key] - a[key];
  const kb = (b) => (b === undefined ? undefined : Math.round(b / 1000));
  const summary = {
    lossPercent: LOSS_PERCENT,
    dropped,
    secondsToPause: paused.after,
    secondsToResume: resumed.after,
    secondsToFrames: Number((playing.t - lossStop.t).toFixed(1)),
    estimateKbps: {
      before: kb(before.estimate),
      atPause: kb(paused.estimate),
      lowest: kb(Math.min(...samples.map((s) => s.estimate ?? Infinity))),
      atLossStop: kb(lossStop.estimate),
      atResume: kb(resumed.estimate),
      last: kb(last.estimate),
    },
    paused: {
      seconds: Number((pausedEnd.t - paused.t).toFixed(1)),
      // In the second after the client heard of the pause.
      videoPacketsFirstSecond: delta('videoPackets', paused, settled),
      videoPackets: delta('videoPackets', settled, pausedEnd),
      decoded: delta('decoded', settled, pausedEnd),
      audioPackets: delta('audioPackets', paused, pausedEnd),
      audioLost: delta('audioLost', paused, pausedEnd),
      audioGrewEverySecond: whilePaused.every((s, i) => i === 0 || s.audioPackets > whilePaused[i - 1].audioPackets),
    },
    afterResume: {
      decoded: delta('decoded', resumed, last),
      videoPackets: delta('videoPackets', resumed, last),
      width: last.width,
      plis: delta('plis', lossStop, last),
      keyframes: delta('keyframes', lossStop, last),
    },
    videoSsrcs: [...new Set(samples.flatMap((s) => s.videoSsrcs))],
    events: events.map((e) => ({ ...e, at: Number(((e.at - t0) / 1000).toFixed(1)) })),
    // As Salon decided: the estimate it had then (kb/s).
    salon: salonStreamStates().map((e) => ({ ...e, estimate: kb(e.estimate), pause: kb(e.pause) })),
    // What the publisher sent on its smallest layer meanwhile (kb/s); the
    // median stands for the bitrate Salon measures and fits against.
    smallestLayerKbps: samples.map((s) => s.layers[0]?.kbps).filter((k) => k !== undefined),
  };
  const sorted = [...summary.smallestLayerKbps].sort((a, b) => a - b);
  summary.smallestLayerMedianKbps = sorted[Math.floor(sorted.length / 2)];
  for (const [key, value] of Object.entries(summary)) console.log(`summary ${key}: ${JSON.stringify(value)}`);

  assert.ok(dropped >= 50, `packets dropped: ${dropped}`);
  // The viewer's client heard PAUSED, then ACTIVE, once each, for the
  // camera only.
  assert.deepEqual(
    events.map((e) => [e.kind, e.from, e.state]),
    [
      ['video', 'pat', 'paused'],
      ['video', 'pat', 'active'],
    ],
    `stream state changes: ${JSON.stringify(summary.events)}`,
  );
  // Salon decided so, once each: the pause when its estimate had fallen
  // well below the smallest layer (320×180, some 140 kb/s: under 3/4 of it,
  // with room for the layer's bitrate going up and down), the resume once
  // the loss was over and the delay-based half, which alone decides then,
  // had room for the layer (with room the other way).
  const median = summary.smallestLayerMedianKbps;
  const decided = summary.salon;
  const numbers = JSON.stringify({ decided, median });
  assert.deepEqual(
    decided.map((e) => e.state),
    ['Paused', 'Active'],
    `stream states Salon sent: ${numbers}`,
  );
  assert.ok(decided[0].estimate < 0.75 * 1.25 * median, `estimate at the pause: ${numbers}`);
  assert.ok(decided[1].pause >= 0.8 * median, `estimate at the resume: ${numbers}`);
  // While paused no video came, and the sound went on: lossy, not gone.
  assert.equal(summary.paused.videoPackets, 0, `video while paused: ${JSON.stringify(summary.paused)}`);
  assert.equal(summary.paused.decoded, 0, `frames while paused: ${JSON.stringify(summary.paused)}`);
  assert.ok(
    summary.paused.audioPackets >= 5 * summary.paused.seconds && summary.paused.audioGrewEverySecond,
    `audio while paused: ${JSON.stringify(summary.paused)}`,
  );
  // And the video came back, in the same stream.
  assert.ok(summary.afterResume.decoded >= 30, `frames after the resume: ${JSON.stringify(summary.afterResume)}`);
  assert.deepEqual(summary.videoSsrcs, [before.ssrc], 'the same video stream throughout');
});
