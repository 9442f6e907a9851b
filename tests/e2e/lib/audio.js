// Audio as the tests see it: WAV files for Chromium's fake microphone,
// the publisher's negotiated audio section, and what a subscriber
// receives and decodes, from livekit-client's own connections.
import fs from 'node:fs';

/// Writes a mono, 16-bit, 48 kHz WAV of `seconds`, each sample
/// `sample(t)` in [-1, 1] (t in seconds).
export function writeWav(file, seconds, sample) {
  const rate = 48000;
  const samples = Math.round(rate * seconds);
  const buf = Buffer.alloc(44 + samples * 2);
  buf.write('RIFF', 0);
  buf.writeUInt32LE(36 + samples * 2, 4);
  buf.write('WAVEfmt ', 8);
  buf.writeUInt32LE(16, 16);
  buf.writeUInt16LE(1, 20); // PCM
  buf.writeUInt16LE(1, 22); // mono
  buf.writeUInt32LE(rate, 24);
  buf.writeUInt32LE(rate * 2, 28);
  buf.writeUInt16LE(2, 32);
  buf.writeUInt16LE(16, 34);
  buf.write('data', 36);
  buf.writeUInt32LE(samples * 2, 40);
  for (let i = 0; i < samples; i++) {
    const v = Math.max(-1, Math.min(1, sample(i / rate)));
    buf.writeInt16LE(Math.round(v * 32767), 44 + i * 2);
  }
  fs.writeFileSync(file, buf);
}

/// The publisher connection's descriptions, cut to the section of the
/// microphone's transceiver: what the page offered and what the server answered.
export async function publishedAudioSdp(page) {
  return page.evaluate(() => {
    const pc = window.salonRoom.engine.pcManager.publisher._pc;
    const pub = [...window.salonRoom.localParticipant.audioTrackPublications.values()][0];
    const sender = pub?.track?.sender;
    const mid = pc.getTransceivers().find((t) => t.sender === sender)?.mid;
    const cut = (sdp) =>
      (sdp ?? '')
        .split(/\r\n(?=m=)/)
        .find((s) => s.startsWith('m=audio') && s.includes(`\r\na=mid:${mid}\r\n`));
    return {
      mid,
      offer: cut(pc.currentLocalDescription?.sdp),
      answer: cut(pc.currentRemoteDescription?.sdp),
    };
  });
}

/// A media section's formats in m= line order: payload type, codec name,
/// format parameters.
export function formats(section) {
  const lines = section.split('\r\n');
  const pts = lines[0].split(' ').slice(3);
  return pts.map((pt) => {
    const rtpmap = lines.find((l) => l.startsWith(`a=rtpmap:${pt} `));
    const fmtp = lines.find((l) => l.startsWith(`a=fmtp:${pt} `));
    return {
      pt: Number(pt),
      name: rtpmap ? rtpmap.split(' ')[1].split('/')[0].toLowerCase() : '',
      fmtp: fmtp ? fmtp.slice(fmtp.indexOf(' ') + 1) : '',
    };
  });
}

/// What the page's subscriber connection receives of audio, summed over its
/// streams, with the codec of the first: packets, bytes, samples played
/// that were not concealment, and energy.
export async function receivedAudio(page) {
  return page.evaluate(async () => {
    const stats = await window.salonRoom.engine.pcManager.subscriber.getStats();
    const out = { at: 0, packets: 0, lost: 0, bytes: 0, decoded: 0, energy: 0, codec: null, payloadType: null, streams: 0 };
    stats.forEach((s) => {
      if (s.type !== 'inbound-rtp' || s.kind !== 'audio') return;
      out.streams += 1;
      out.at = Math.max(out.at, s.timestamp);
      out.packets += s.packetsReceived ?? 0;
      out.lost += s.packetsLost ?? 0;
      out.bytes += s.bytesReceived ?? 0;
      out.decoded += (s.totalSamplesReceived ?? 0) - (s.concealedSamples ?? 0);
      out.energy += s.totalAudioEnergy ?? 0;
      const codec = s.codecId ? stats.get(s.codecId) : undefined;
      if (codec && !out.codec) {
        out.codec = codec.mimeType;
        out.payloadType = codec.payloadType;
      }
    });
    return out;
  });
}

/// What the page's publisher connection sends of audio, and in what codec.
export async function sentAudio(page) {
  return page.evaluate(async () => {
    const stats = await window.salonRoom.engine.pcManager.publisher.getStats();
    const out = { at: 0, packets: 0, bytes: 0, codec: null };
    stats.forEach((s) => {
      if (s.type !== 'outbound-rtp' || s.kind !== 'audio') return;
      out.at = Math.max(out.at, s.timestamp);
      out.packets += s.packetsSent ?? 0;
      out.bytes += s.bytesSent ?? 0;
      const codec = s.codecId ? stats.get(s.codecId) : undefined;
      if (codec && !out.codec) out.codec = codec.mimeType;
    });
    return out;
  });
}

/// Waits until the page receives audio and decodes some; returns the reading.
export async function waitForAudio(page, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  let first;
  let last;
  while (Date.now() < deadline) {
    last = await receivedAudio(page);
    if (last.packets > 0) {
      if (!first) first = last;
      else if (last.packets > first.packets + 10 && last.decoded > first.decoded) return last;
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`no audio received: ${JSON.stringify(last)}`);
}

/// What a page receives over `ms`: packets and payload bytes a second and
/// per packet, packets lost, samples decoded, energy gained. (Chromium's stats name Opus
/// as the codec of a RED stream too: it counts what it decodes.)
export async function audioRates(page, ms) {
  const a = await receivedAudio(page);
  await new Promise((r) => setTimeout(r, ms));
  const b = await receivedAudio(page);
  const s = (b.at - a.at) / 1000;
  return {
    packetsPerSecond: (b.packets - a.packets) / s,
    bytesPerSecond: (b.bytes - a.bytes) / s,
    bytesPerPacket: (b.bytes - a.bytes) / Math.max(1, b.packets - a.packets),
    lost: b.lost - a.lost,
    decoded: b.decoded - a.decoded,
    energy: b.energy - a.energy,
    codec: b.codec,
    payloadType: b.payloadType,
    streams: b.streams,
  };
}

/// What a page's publisher connection sends of audio over `ms`: packets
/// and payload bytes a second and per packet.
export async function sentAudioRates(page, ms) {
  const a = await sentAudio(page);
  await new Promise((r) => setTimeout(r, ms));
  const b = await sentAudio(page);
  const s = (b.at - a.at) / 1000;
  return {
    packetsPerSecond: (b.packets - a.packets) / s,
    bytesPerSecond: (b.bytes - a.bytes) / s,
    bytesPerPacket: (b.bytes - a.bytes) / Math.max(1, b.packets - a.packets),
  };
}
