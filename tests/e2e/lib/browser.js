// Debian's chromium, driven by playwright-core, with fake camera and microphone.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/// `extraArgs` add to the flags, such as a file for the fake microphone.
export async function launchBrowser(extraArgs = []) {
  const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';
  return chromium.launch({
    executablePath,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--use-fake-device-for-media-stream',
      '--use-fake-ui-for-media-stream',
      '--autoplay-policy=no-user-gesture-required',
      ...extraArgs,
    ],
  });
}

export async function newPage(browser) {
  const context = await browser.newContext({ permissions: ['camera', 'microphone'] });
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error('[page error]', e.message));
  return page;
}

export function artifactsDir() {
  const dir = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../artifacts');
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

/// What a page's livekit-client room receives from every remote participant:
/// frames decoded per video track, bytes received per audio track.
export async function remoteStats(page) {
  return page.evaluate(async () => {
    const room = window.salonRoom;
    const out = {};
    for (const p of room.remoteParticipants.values()) {
      const entry = { framesDecoded: 0, audioBytes: 0, frameWidth: 0 };
      for (const pub of p.trackPublications.values()) {
        const track = pub.track;
        if (!track || !track.receiver) continue;
        const stats = await track.receiver.getStats();
        stats.forEach((s) => {
          if (s.type !== 'inbound-rtp') return;
          if (s.kind === 'video') {
            entry.framesDecoded += s.framesDecoded ?? 0;
            entry.frameWidth = Math.max(entry.frameWidth, s.frameWidth ?? 0);
          }
          if (s.kind === 'audio') entry.audioBytes += s.bytesReceived ?? 0;
        });
      }
      out[p.identity] = entry;
    }
    return out;
  });
}

/// Waits until `page` decodes video and receives audio from `identity`, and
/// both keep rising; returns the last reading.
export async function waitForMediaFrom(page, identity, timeoutMs = 45000) {
  const deadline = Date.now() + timeoutMs;
  let first;
  let last;
  while (Date.now() < deadline) {
    const stats = (await remoteStats(page))[identity];
    if (stats && stats.framesDecoded > 0 && stats.audioBytes > 0) {
      if (!first) first = stats;
      else if (stats.framesDecoded > first.framesDecoded + 10 && stats.audioBytes > first.audioBytes) {
        return stats;
      }
    }
    last = stats;
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`no media from ${identity}: last stats ${JSON.stringify(last)}`);
}
