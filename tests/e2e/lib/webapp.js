// Going through Salon's web app in chromium (playwright pages): make a
// meeting, open its link, pass the pre-join screen.
import assert from 'node:assert/strict';
import { newPage } from './browser.js';

/// Makes a meeting from the home page; returns the page (now on the
/// pre-join screen) and the meeting's room name.
export async function createMeeting(browser, salon, { waitingRoom }) {
  const page = await newPage(browser);
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.goto(salon.httpUrl + '/');
  const box = page.getByLabel('Salle d’attente : j’admets les invités');
  if (!waitingRoom) await box.uncheck();
  await page.getByRole('button', { name: 'Créer la réunion' }).click();
  await page.getByLabel('Votre nom').waitFor();
  const room = new URL(page.url()).searchParams.get('room');
  assert.match(room, /^[a-z]{3}-[a-z]{4}-[a-z]{3}$/);
  return { page, room };
}

/// Opens the guest link of `room`; the page is on the pre-join screen.
export async function openLink(browser, salon, room) {
  const page = await newPage(browser);
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.goto(`${salon.httpUrl}/?room=${room}`);
  await page.getByLabel('Votre nom').waitFor();
  return page;
}

/// Fills the name on the pre-join screen and joins; returns the identity.
/// With `waiting`, the page is expected in the waiting room, not the meeting.
export async function joinAs(page, name, { waiting = false } = {}) {
  await page.getByLabel('Votre nom').fill(name);
  await page.getByRole('button', { name: 'Rejoindre' }).click();
  await page.waitForFunction(() => window.salonRoom?.state === 'connected', null, { timeout: 20000 });
  if (waiting) await page.getByRole('heading', { name: 'Salle d’attente' }).waitFor();
  else await page.getByRole('button', { name: 'Quitter' }).waitFor();
  return page.evaluate(() => window.salonRoom.localParticipant.identity);
}

/// Frames the video element at `selector` shows over 2 s (-1 if there is
/// none). Takes playwright and puppeteer pages alike. Firefox counts no
/// playback quality for a MediaStream source, but counts painted frames.
export async function framesPlayed(page, selector) {
  return page.evaluate(async (sel) => {
    const v = document.querySelector(sel);
    if (!v) return -1;
    const shown = () => v.mozPaintedFrames ?? v.getVideoPlaybackQuality().totalVideoFrames;
    const before = shown();
    await new Promise((r) => setTimeout(r, 2000));
    return shown() - before;
  }, selector);
}
