import {
  Participant,
  RemoteParticipant,
  Room,
  RoomEvent,
  Track,
  type TrackPublication,
} from 'livekit-client';
import { type Lang, type Key, pickLang, t } from './i18n';
import './style.css';

let lang: Lang = pickLang(location.search, localStorage.getItem('salon.lang'));
const app = document.getElementById('app')!;
let room: Room | undefined;

function tr(key: Key) {
  return t(lang, key);
}

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Partial<HTMLElementTagNameMap[K]> = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

function setLang(next: Lang) {
  lang = next;
  localStorage.setItem('salon.lang', next);
  document.documentElement.lang = next;
  meeting = undefined;
  if (room) renderMeeting(room);
  else renderJoin();
}

function langButton() {
  return el('button', {
    className: 'lang',
    type: 'button',
    textContent: tr('language'),
    ariaLabel: tr('languageLabel'),
    onclick: () => setLang(lang === 'fr' ? 'en' : 'fr'),
  });
}

function renderJoin(error?: string) {
  const params = new URLSearchParams(location.search);
  const name = el('input', {
    id: 'name',
    name: 'name',
    required: true,
    maxLength: 100,
    autocomplete: 'name',
    value: localStorage.getItem('salon.name') ?? '',
  });
  const roomInput = el('input', {
    id: 'room',
    name: 'room',
    required: true,
    maxLength: 100,
    value: params.get('room') ?? '',
  });
  const submit = el('button', { type: 'submit', id: 'join', textContent: tr('join') });
  const form = el(
    'form',
    { className: 'join' },
    el('label', { htmlFor: 'name', textContent: tr('name') }),
    name,
    el('label', { htmlFor: 'room', textContent: tr('room') }),
    roomInput,
    submit,
  );
  if (error) form.append(el('p', { className: 'error', role: 'alert', textContent: tr('error') + error }));
  notice = '';
  form.onsubmit = async (ev) => {
    ev.preventDefault();
    submit.disabled = true;
    submit.textContent = tr('joining');
    localStorage.setItem('salon.name', name.value.trim());
    try {
      await join(name.value.trim(), roomInput.value.trim());
    } catch (e) {
      room = undefined;
      meeting = undefined;
      renderJoin(e instanceof Error ? e.message : String(e));
    }
  };
  app.replaceChildren(
    el('header', {}, el('h1', { textContent: tr('title') }), langButton()),
    el('main', {}, el('p', { className: 'subtitle', textContent: tr('subtitle') }), form),
  );
  (name.value ? roomInput : name).focus();
}

async function join(name: string, roomName: string) {
  const res = await fetch('/api/token', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ name, room: roomName }),
  });
  if (!res.ok) throw new Error(await res.text());
  const { token } = (await res.json()) as { token: string };
  const r = new Room({ adaptiveStream: true, dynacast: true });
  (window as unknown as { salonRoom: Room }).salonRoom = r;
  for (const ev of [
    RoomEvent.ParticipantConnected,
    RoomEvent.ParticipantDisconnected,
    RoomEvent.ParticipantNameChanged,
    RoomEvent.TrackSubscribed,
    RoomEvent.TrackUnsubscribed,
    RoomEvent.TrackMuted,
    RoomEvent.TrackUnmuted,
    RoomEvent.LocalTrackPublished,
    RoomEvent.LocalTrackUnpublished,
    RoomEvent.ActiveSpeakersChanged,
  ]) {
    r.on(ev, () => {
      if (room === r) renderMeeting(r);
    });
  }
  r.on(RoomEvent.Disconnected, () => {
    if (room === r) {
      room = undefined;
      meeting = undefined;
      renderJoin();
    }
  });
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}`;
  await r.connect(url, token);
  room = r;
  history.replaceState(null, '', `?room=${encodeURIComponent(roomName)}`);
  renderMeeting(r);
  try {
    await r.localParticipant.enableCameraAndMicrophone();
  } catch (e) {
    // Still in the meeting, without camera or microphone.
    notice = tr('noDevices') + (e instanceof Error ? e.message : String(e));
  }
  renderMeeting(r);
}

/** The meeting view, kept between renders so that video elements keep playing. */
interface MeetingView {
  root: HTMLElement;
  grid: HTMLElement;
  hint: HTMLElement;
  notice: HTMLElement;
  controls: HTMLElement;
  tiles: Map<string, HTMLElement>;
}

let meeting: MeetingView | undefined;
let notice = '';

function buildMeeting(r: Room): MeetingView {
  const grid = el('section', { className: 'grid', ariaLabel: tr('participants') });
  const hint = el('p', { className: 'hint', textContent: tr('alone') });
  const noticeEl = el('p', { className: 'error', role: 'status' });
  const controls = el('nav', { className: 'controls', ariaLabel: tr('controls') });
  const main = el('main', { className: 'meeting' }, noticeEl, grid, hint);
  const root = el('div', { className: 'meeting-root' });
  root.append(el('header', {}, el('h1', { textContent: `${tr('title')} — ${r.name}` }), langButton()), main, controls);
  app.replaceChildren(root);
  return { root, grid, hint, notice: noticeEl, controls, tiles: new Map() };
}

/** The element showing `track`, created once and reused while the track lives. */
function mediaElement(tile: HTMLElement, track: Track, kind: 'video' | 'audio'): HTMLMediaElement {
  const existing = tile.querySelector<HTMLMediaElement>(`${kind}[data-track="${track.sid}"]`);
  if (existing) return existing;
  tile.querySelectorAll(kind).forEach((old) => old.remove());
  const media = track.attach();
  media.dataset.track = track.sid ?? '';
  if (media instanceof HTMLVideoElement) {
    media.muted = true;
    media.playsInline = true;
  }
  return media;
}

function updateTile(tile: HTMLElement, p: Participant, isLocal: boolean) {
  const video = p.getTrackPublication(Track.Source.Camera) as TrackPublication | undefined;
  const audio = p.getTrackPublication(Track.Source.Microphone) as TrackPublication | undefined;
  const label = (p.name || p.identity) + (isLocal ? ` (${tr('you')})` : '');
  tile.classList.toggle('speaking', p.isSpeaking);
  const children: Node[] = [];
  if (video?.track && !video.isMuted) {
    children.push(mediaElement(tile, video.track, 'video'));
  } else {
    children.push(el('div', { className: 'avatar', ariaHidden: 'true', textContent: label.slice(0, 1).toUpperCase() }));
  }
  if (!isLocal && audio?.track) {
    children.push(mediaElement(tile, audio.track, 'audio'));
  }
  const muted = !audio || audio.isMuted;
  children.push(
    el('figcaption', {}, label, muted ? el('span', { className: 'muted', textContent: ` — ${tr('muted')}` }) : ''),
  );
  // Only what changed is replaced: removing a playing element pauses it, so
  // media elements stay where they are when they can.
  for (const c of Array.from(tile.childNodes)) if (!children.includes(c)) c.remove();
  children.forEach((c, i) => {
    if (tile.childNodes[i] !== c) tile.insertBefore(c, tile.childNodes[i] ?? null);
  });
}

function renderMeeting(r: Room) {
  if (!meeting || !meeting.root.isConnected) meeting = buildMeeting(r);
  const view = meeting;
  const local = r.localParticipant;
  const people: [Participant, boolean][] = [
    [local, true],
    ...Array.from(r.remoteParticipants.values()).map((p): [Participant, boolean] => [p, false]),
  ];
  const seen = new Set<string>();
  for (const [p, isLocal] of people) {
    seen.add(p.identity);
    let tile = view.tiles.get(p.identity);
    if (!tile) {
      tile = el('figure', { className: 'tile' });
      tile.dataset.identity = p.identity;
      view.tiles.set(p.identity, tile);
      view.grid.append(tile);
    }
    updateTile(tile, p, isLocal);
  }
  for (const [identity, tile] of view.tiles) {
    if (!seen.has(identity)) {
      tile.remove();
      view.tiles.delete(identity);
    }
  }
  view.grid.style.setProperty('--cols', String(Math.ceil(Math.sqrt(people.length))));
  view.hint.hidden = people.length > 1;
  view.notice.textContent = notice;
  view.notice.hidden = !notice;

  /** A microphone or camera switch: its label says what pressing it does. */
  const toggle = (id: string, isOn: () => boolean, labels: [Key, Key], set: (enabled: boolean) => Promise<unknown>) =>
    el('button', {
      type: 'button',
      id,
      textContent: tr(isOn() ? labels[0] : labels[1]),
      ariaPressed: String(!isOn()),
      onclick: async () => {
        await set(!isOn());
        renderMeeting(r);
      },
    });
  view.controls.replaceChildren(
    toggle('mic', () => local.isMicrophoneEnabled, ['micOn', 'micOff'], (e) => local.setMicrophoneEnabled(e)),
    toggle('cam', () => local.isCameraEnabled, ['camOn', 'camOff'], (e) => local.setCameraEnabled(e)),
    el('button', {
      type: 'button',
      id: 'leave',
      className: 'danger',
      textContent: tr('leave'),
      onclick: () => r.disconnect(),
    }),
  );
}

document.documentElement.lang = lang;
renderJoin();
