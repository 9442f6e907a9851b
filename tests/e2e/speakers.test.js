// Active speakers as livekit-client shows them: a participant who talks is
// flagged as speaking for the others, from the audio levels in its packets.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { startSdkFixture } from './lib/sdk.js';
import { artifactsDir, launchBrowser, newPage, waitForMediaFrom } from './lib/browser.js';
import { writeWav } from './lib/audio.js';

let fx;
let talkerBrowser;

/// Writes 4 s of speech-like sound: a 220 Hz voice whose loudness rises and
/// falls three times a second, never silent.
function writeSpeechWav(file) {
  writeWav(file, 4, (t) => {
    const envelope = 0.6 + 0.4 * Math.sin(2 * Math.PI * 3 * t);
    return 0.8 * envelope * (0.5 * Math.sin(2 * Math.PI * 220 * t) + 0.2 * Math.sin(2 * Math.PI * 440 * t));
  });
}

before(async () => {
  fx = await startSdkFixture();
  const wav = path.join(artifactsDir(), 'speech.wav');
  writeSpeechWav(wav);
  talkerBrowser = await launchBrowser([`--use-file-for-fake-audio-capture=${wav}`]);
});

after(async () => {
  await talkerBrowser?.close();
  await fx?.close();
});

/// Who `page`'s livekit-client currently shows as speaking.
const speakingAt = (page) => page.evaluate(() => window.salonRoom.activeSpeakers.map((p) => p.identity));

test('a participant who talks shows as speaking to the others', async () => {
  // Raw microphone: no processing that might take the voice for noise.
  const raw = { audioCaptureDefaults: { echoCancellation: false, noiseSuppression: false, autoGainControl: false } };
  const tia = await newPage(talkerBrowser);
  await tia.goto(fx.pages.url + '/sdk.html');
  await tia.evaluate(([url, t, o]) => window.joinRoom(url, t, o), [fx.salon.wsUrl, await fx.token('tia', 'speak-room'), raw]);
  const leo = await fx.joinWithSdk('leo', 'speak-room');
  await waitForMediaFrom(leo, 'tia');

  await leo.waitForFunction(
    () => window.salonRoom.getParticipantByIdentity('tia')?.isSpeaking === true,
    null,
    { timeout: 20000 },
  );
  const level = await leo.evaluate(() => window.salonRoom.getParticipantByIdentity('tia').audioLevel);
  assert.ok(level > 0, `a speaking level, got ${level}`);
  assert.deepEqual(await speakingAt(leo), ['tia']);
  // The talker sees herself speaking too, and not the listener, whose
  // fake microphone only beeps now and then.
  await tia.waitForFunction(() => window.salonRoom.localParticipant.isSpeaking === true, null, { timeout: 10000 });
  assert.ok(!(await speakingAt(tia)).includes('leo'));

  // She mutes: within a few seconds nobody shows her as speaking.
  await tia.evaluate(() => window.salonRoom.localParticipant.setMicrophoneEnabled(false));
  await leo.waitForFunction(
    () => window.salonRoom.getParticipantByIdentity('tia')?.isSpeaking === false,
    null,
    { timeout: 10000 },
  );
});
