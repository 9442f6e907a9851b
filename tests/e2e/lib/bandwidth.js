// What the bandwidth tests share: salon with its bandwidth log beside a
// network of the test's own (packet loss, a shaped link), a publisher
// whose camera makes three simulcast layers worth choosing between, what
// it sends on each, and the estimates Salon logs (at debug level) when it
// fits layers to links.
import { before, after } from 'node:test';
import { startSdkFixture } from './sdk.js';

/// A 1280×720 camera, sent as livekit-client's three simulcast layers.
export const HD_PUBLISHER = {
  videoCaptureDefaults: { resolution: { width: 1280, height: 720, frameRate: 30 } },
  publishDefaults: { simulcast: true },
};

/// The RUST_LOG that makes salon log each subscriber's estimate once a
/// second and each stream state it sends.
export const BANDWIDTH_LOG = `${process.env.RUST_LOG ?? 'info'},salon_sfu::worker::core=debug,salon_sfu::participant=debug`;

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/// What the publisher on `page` sends on each simulcast layer, by rid, and
/// what limits it (Chrome's qualityLimitationReason: none, cpu, bandwidth).
export async function publisherLayers(page) {
  return page.evaluate(async () => {
    const track = window.salonRoom.localParticipant.getTrackPublication('camera').track;
    const out = {};
    (await track.sender.getStats()).forEach((s) => {
      if (s.type === 'outbound-rtp' && s.rid) {
        out[s.rid] = {
          width: s.frameWidth ?? 0,
          frames: s.framesEncoded ?? 0,
          bytes: s.bytesSent ?? 0,
          limitation: s.qualityLimitationReason ?? '',
        };
      }
    });
    return out;
  });
}

/// A viewer's video on its subscriber connection (one video stream: it
/// watches one camera): the layer it decodes, how the picture goes, and
/// the bytes received.
export async function viewerVideo(page) {
  return page.evaluate(async () => {
    const stats = await window.salonRoom.engine.pcManager.subscriber.getStats();
    let v = {};
    stats.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') v = s;
    });
    return {
      now: Date.now(),
      width: v.frameWidth ?? 0,
      decoded: v.framesDecoded ?? 0,
      freezes: v.freezeCount ?? 0,
      freezeMs: Math.round((v.totalFreezesDuration ?? 0) * 1000),
      bytes: v.bytesReceived ?? 0,
      lost: v.packetsLost ?? 0,
      nacks: v.nackCount ?? 0,
      plis: v.pliCount ?? 0,
      keyframes: v.keyFramesDecoded ?? 0,
    };
  });
}

/// The publisher's own estimate of its uplink, in bits per second (Chrome's
/// availableOutgoingBitrate on the connection the camera is sent on), if
/// it has one.
export async function publisherUplink(page) {
  return page.evaluate(async () => {
    const track = window.salonRoom.localParticipant.getTrackPublication('camera').track;
    let rate;
    (await track.sender.getStats()).forEach((s) => {
      if (s.type === 'candidate-pair' && s.nominated && s.availableOutgoingBitrate !== undefined) {
        rate = s.availableOutgoingBitrate;
      }
    });
    return rate;
  });
}

/// Salon's log so far, a line each.
export function salonLog(salon) {
  return (
    salon
      .log()
      // Without a terminal, salon's log still has its colours.
      .replace(/\x1b\[[0-9;]*m/g, '')
      .split('\n')
  );
}

/// The last bandwidth estimate Salon logged, in bits per second.
export function lastEstimate(salon) {
  const lines = salonLog(salon).filter((line) => line.includes("a subscriber's bandwidth estimate"));
  const m = lines.at(-1)?.match(/estimate=(\d+)/);
  return m ? Number(m[1]) : undefined;
}

/// The bandwidth probes Salon concluded, in order: when (ms since the
/// epoch, from the log line's time), what they found (Carried, Congested,
/// Unknown) and, if the link carried the probe, how many bits per second.
export function probeVerdicts(salon) {
  return salonLog(salon)
    .filter((line) => line.includes('bandwidth probe') && line.includes('verdict='))
    .map((line) => {
      const m = line.match(/verdict=(\w+)(?:\((\d+)\))?/);
      return { at: Date.parse(line.slice(0, line.indexOf('Z') + 1)), verdict: m[1], bps: m[2] ? Number(m[2]) : undefined };
    });
}

/// Registers the file's before and after hooks: `network()` (a loss table,
/// a shaper: anything with `remove()`) made first, so that lacking the
/// tool or the right to use it is a failure, not a skip; then salon,
/// logging each subscriber's estimate once a second and each stream state
/// it sends. Returns where the tests find both once they run: `fx`, `net`.
export function bandwidthFixture(network) {
  const shared = {};
  before(async () => {
    shared.net = network();
    shared.fx = await startSdkFixture({ salonEnv: { RUST_LOG: BANDWIDTH_LOG } });
  });
  after(async () => {
    shared.net?.remove();
    await shared.fx?.close();
  });
  return shared;
}
