// Opus as livekit-client publishes it with its defaults (red: true,
// dtx: true), which only the server's answer turns on: RED (each packet
// carries the previous frame again), passed on to subscribers that take it
// and cut down to plain Opus for those that do not; DTX (a packet every
// 400 ms in silence instead of every 20 ms); and mono for a mono microphone.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { startSdkFixture } from './lib/sdk.js';
import { artifactsDir, launchBrowser, newPage } from './lib/browser.js';
import {
  audioRates,
  formats,
  publishedAudioSdp,
  receivedAudio,
  sentAudioRates,
  waitForAudio,
  writeWav,
} from './lib/audio.js';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let fx;
let talkerBrowser;
let silentBrowser;

before(async () => {
  fx = await startSdkFixture();
  const dir = artifactsDir();
  // A voice that never stops: 220 Hz and its octave, rising and falling.
  const speech = path.join(dir, 'red-speech.wav');
  writeWav(speech, 4, (t) => {
    const envelope = 0.6 + 0.4 * Math.sin(2 * Math.PI * 3 * t);
    return 0.8 * envelope * (0.5 * Math.sin(2 * Math.PI * 220 * t) + 0.2 * Math.sin(2 * Math.PI * 440 * t));
  });
  const silence = path.join(dir, 'silence.wav');
  writeWav(silence, 30, () => 0);
  talkerBrowser = await launchBrowser([`--use-file-for-fake-audio-capture=${speech}`]);
  silentBrowser = await launchBrowser([`--use-file-for-fake-audio-capture=${silence}%noloop`]);
});

after(async () => {
  await talkerBrowser?.close();
  await silentBrowser?.close();
  await fx?.close();
});

// A raw microphone: no processing that might take the voice for noise.
const raw = { audioCaptureDefaults: { echoCancellation: false, noiseSuppression: false, autoGainControl: false } };

/// A page in `browser` that joins `room` as `identity` with `options` and
/// publishes its microphone only. `init` runs in the page before any of its
/// scripts.
async function joinWithMic(browser, identity, room, options = {}, init) {
  const page = await newPage(browser);
  if (init) await page.context().addInitScript(init);
  await page.goto(fx.pages.url + '/sdk.html');
  await page.evaluate(([url, t, o]) => window.joinRoom(url, t, o, false), [
    fx.salon.wsUrl,
    await fx.token(identity, room),
    options,
  ]);
  await page.evaluate(() => window.salonRoom.localParticipant.setMicrophoneEnabled(true));
  return page;
}

/// A page that joins `room` and publishes nothing.
async function joinToListen(identity, room, init) {
  const page = await newPage(fx.browser);
  if (init) await page.context().addInitScript(init);
  await page.goto(fx.pages.url + '/sdk.html');
  await page.evaluate(([url, t]) => window.joinRoom(url, t, {}, false), [fx.salon.wsUrl, await fx.token(identity, room)]);
  return page;
}

/// The remote audio publication of `identity` as `page` sees it.
const remoteAudio = (page, identity) =>
  page.evaluate((who) => {
    const p = window.salonRoom.getParticipantByIdentity(who);
    const pub = p && [...p.audioTrackPublications.values()][0];
    return pub ? { mimeType: pub.mimeType, subscribed: pub.isSubscribed } : null;
  }, identity);

/// Removes RED from every answer the page makes: a browser that does not
/// take RED. Runs in the page.
function refuseRed() {
  const strip = (sdp) =>
    sdp
      .split(/\r\n(?=m=)/)
      .map((section) => {
        if (!section.startsWith('m=audio')) return section;
        const red = [...section.matchAll(/a=rtpmap:(\d+) red\//gi)].map((m) => m[1]);
        if (red.length === 0) return section;
        const lines = section.split('\r\n').filter((l) => !red.some((pt) => new RegExp(`^a=(rtpmap|fmtp|rtcp-fb):${pt}[ \\r]`).test(l + '\r')));
        const m = lines[0].split(' ');
        lines[0] = [...m.slice(0, 3), ...m.slice(3).filter((pt) => !red.includes(pt))].join(' ');
        return lines.join('\r\n');
      })
      .join('\r\n');
  const createAnswer = RTCPeerConnection.prototype.createAnswer;
  RTCPeerConnection.prototype.createAnswer = async function (...args) {
    const answer = await createAnswer.apply(this, args);
    return { type: answer.type, sdp: strip(answer.sdp) };
  };
}

/// Whether the page's microphone was announced as stereo in AddTrack: the
/// flag, or the feature livekit-client sets from the capture's channels.
const publishedStereo = (page) =>
  page.evaluate(() => {
    const info = [...window.salonRoom.localParticipant.audioTrackPublications.values()][0]?.trackInfo;
    const TF_STEREO = 0;
    return Boolean(info?.stereo || info?.audioFeatures?.includes(TF_STEREO));
  });

let redRoom;

/// Whether the audio section of the page's subscriber answer took RED.
const answerTookRed = (page) =>
  page.evaluate(() => {
    const sdp = window.salonRoom.engine.pcManager.subscriber._pc.currentLocalDescription?.sdp ?? '';
    const audio = sdp.split(/\r\n(?=m=)/).filter((s) => s.startsWith('m=audio'));
    return audio.length > 0 && audio.every((s) => /\r\na=rtpmap:\d+ red\//i.test(s));
  });

test('RED: the publisher sends Opus in RED and a subscriber that takes it decodes it', async () => {
  const talker = await joinWithMic(talkerBrowser, 'ria', 'red-room', raw);
  const listener = await joinToListen('lou', 'red-room');
  redRoom = { talker, listener };

  const { offer, answer } = await publishedAudioSdp(talker);
  assert.ok(offer && answer, `the microphone's section: ${JSON.stringify({ offer, answer })}`);
  const offered = formats(offer);
  const answered = formats(answer);
  console.log(`publisher offer ${JSON.stringify(offered.slice(0, 2))}, answer ${JSON.stringify(answered)}`);
  // livekit-client offers Opus first and RED after it.
  assert.equal(offered[0].name, 'opus');
  assert.ok(offered.some((f) => f.name === 'red'), 'RED offered');
  // The answer puts RED first: that is what makes Chromium send it.
  assert.equal(answered[0].name, 'red', `answer: ${answer}`);
  assert.equal(answered[0].fmtp, `${answered[1].pt}/${answered[1].pt}`);
  assert.equal(answered[1].name, 'opus');
  // Chromium's fake microphone without processing has two channels, which
  // livekit-client announces (TF_STEREO); stereo=1 stays for that alone.
  const stereo = await publishedStereo(talker);
  console.log(`announced as stereo: ${stereo}`);
  assert.equal(answered[1].fmtp.split(';').includes('stereo=1'), stereo, 'stereo=1 as AddTrack said');

  await listener.waitForFunction(
    () => {
      const p = window.salonRoom.getParticipantByIdentity('ria');
      return p && [...p.audioTrackPublications.values()].some((pub) => pub.isSubscribed);
    },
    null,
    { timeout: 20000 },
  );
  assert.equal((await remoteAudio(listener, 'ria')).mimeType, 'audio/red');
  assert.ok(await answerTookRed(listener), 'the subscriber took RED');
  await waitForAudio(listener);
  // What the publisher sends reaches the subscriber whole: as many bytes a
  // packet (the stats count payloads), each carrying the frame before again.
  const [sent, got] = await Promise.all([sentAudioRates(talker, 3000), audioRates(listener, 3000)]);
  console.log(`RED publisher sends ${JSON.stringify(sent)}; subscriber gets ${JSON.stringify(got)}`);
  assert.ok(Math.abs(got.bytesPerPacket / sent.bytesPerPacket - 1) < 0.15, 'the same payloads');
  assert.ok(got.packetsPerSecond > 40, `a voice goes at 50 packets a second: ${JSON.stringify(got)}`);
  assert.ok(got.decoded > 48000, `more than a second of sound decoded in 3: ${JSON.stringify(got)}`);
  assert.ok(got.energy > 0, `it is not silence: ${JSON.stringify(got)}`);
});

test('RED: a subscriber that does not take RED gets the plain Opus inside it', async () => {
  assert.ok(redRoom, 'the RED room of the test before');
  const { talker, listener } = redRoom;
  const plain = await joinToListen('sam', 'red-room', refuseRed);
  await waitForAudio(plain);
  assert.ok(!(await answerTookRed(plain)), 'its answer has no RED');
  assert.equal((await remoteAudio(plain, 'ria')).mimeType, 'audio/red', 'the track is RED all the same');
  // All at once, to compare what each link carries.
  const [sent, red, opus] = await Promise.all([
    sentAudioRates(talker, 5000),
    audioRates(listener, 5000),
    audioRates(plain, 5000),
  ]);
  const ratio = red.bytesPerPacket / opus.bytesPerPacket;
  console.log(
    `publisher ${JSON.stringify(sent)}; RED subscriber ${JSON.stringify(red)}; ` +
      `plain subscriber ${JSON.stringify(opus)}; RED/plain bytes a packet ${ratio.toFixed(2)}`,
  );
  assert.equal(opus.codec, 'audio/opus', JSON.stringify(opus));
  assert.equal(opus.payloadType, 111);
  // A packet for each of the publisher's (padding included), none lost.
  assert.ok(Math.abs(opus.packetsPerSecond - red.packetsPerSecond) < 3, 'as many packets as the RED subscriber');
  assert.ok(opus.packetsPerSecond > 40 && opus.lost === 0, `plain: ${JSON.stringify(opus)}`);
  assert.ok(opus.decoded > 2 * 48000, `over two seconds of sound decoded in 5: ${JSON.stringify(opus)}`);
  assert.ok(opus.energy > 0, JSON.stringify(opus));
  // RED carries the previous frame again: about twice the bytes of the
  // Opus frame alone, which is all the plain subscriber gets.
  assert.ok(ratio > 1.6 && ratio < 3.2, `RED/plain bytes a packet: ${ratio}`);
  for (const page of [plain, talker, listener]) await page.context().close();
});

test('DTX: a silent microphone sends a packet every 400 ms, and every 20 ms with dtx off', async () => {
  const quiet = await joinWithMic(silentBrowser, 'dia', 'dtx-room');
  const listener = await joinToListen('lis', 'dtx-room');
  const { offer, answer } = await publishedAudioSdp(quiet);
  const opus = formats(answer).find((f) => f.name === 'opus');
  console.log(`DTX publisher answer opus fmtp: ${opus?.fmtp}`);
  assert.ok(opus.fmtp.split(';').includes('usedtx=1'), `usedtx=1 in ${answer}`);
  // A mono microphone is asked for mono, though livekit-client offers stereo.
  assert.equal(await publishedStereo(quiet), false, 'announced as mono');
  assert.ok(formats(offer).find((f) => f.name === 'opus').fmtp.split(';').includes('stereo=1'));
  assert.ok(!opus.fmtp.split(';').includes('stereo=1'), `no stereo=1 in ${opus.fmtp}`);
  // In silence packets come seldom: waiting for the first is enough.
  for (let i = 0; i < 60 && (await receivedAudio(listener)).packets === 0; i++) await sleep(500);
  const dtx = await audioRates(listener, 5000);

  const loud = await joinWithMic(silentBrowser, 'nod', 'nodtx-room', { publishDefaults: { dtx: false } });
  const other = await joinToListen('nol', 'nodtx-room');
  const noDtxAnswer = (await publishedAudioSdp(loud)).answer;
  const noDtxOpus = formats(noDtxAnswer).find((f) => f.name === 'opus');
  assert.ok(!noDtxOpus.fmtp.includes('usedtx'), `no usedtx in ${noDtxOpus.fmtp}`);
  await waitForAudio(other);
  const full = await audioRates(other, 5000);
  console.log(`silence with DTX ${JSON.stringify(dtx)}; without ${JSON.stringify(full)}`);
  assert.ok(dtx.streams === 1 && dtx.packetsPerSecond < 20, `with DTX: ${JSON.stringify(dtx)}`);
  assert.ok(full.packetsPerSecond > 40, `without DTX: ${JSON.stringify(full)}`);
  for (const page of [quiet, listener, loud, other]) await page.context().close();
});

test('stereo: a track published as stereo keeps stereo=1; with red and dtx off, Opus goes first without usedtx', async () => {
  const options = { ...raw, publishDefaults: { forceStereo: true, red: false, dtx: false } };
  const page = await joinWithMic(talkerBrowser, 'ste', 'stereo-room', options);
  const { answer } = await publishedAudioSdp(page);
  const answered = formats(answer);
  console.log(`stereo publisher answer ${JSON.stringify(answered)}`);
  assert.equal(answered[0].name, 'opus', 'RED is not asked for');
  const fmtp = answered[0].fmtp.split(';');
  assert.ok(fmtp.includes('stereo=1'), answered[0].fmtp);
  assert.ok(!fmtp.includes('usedtx=1'), answered[0].fmtp);
  await page.context().close();
});
