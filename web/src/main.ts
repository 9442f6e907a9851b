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
  form.onsubmit = async (ev) => {
    ev.preventDefault();
    submit.disabled = true;
    submit.textContent = tr('joining');
    localStorage.setItem('salon.name', name.value.trim());
    try {
      await join(name.value.trim(), roomInput.value.trim());
    } catch (e) {
      room = undefined;
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
    RoomEvent.TrackSubscribed,
    RoomEvent.TrackUnsubscribed,
    RoomEvent.TrackMuted,
    RoomEvent.TrackUnmuted,
    RoomEvent.LocalTrackPublished,
    RoomEvent.LocalTrackUnpublished,
    RoomEvent.ActiveSpeakersChanged,
  ]) {
    r.on(ev, () => renderMeeting(r));
  }
  r.on(RoomEvent.Disconnected, () => {
    room = undefined;
    renderJoin();
  });
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}`;
  await r.connect(url, token);
  room = r;
  history.replaceState(null, '', `?room=${encodeURIComponent(roomName)}`);
  renderMeeting(r);
  await r.localParticipant.enableCameraAndMicrophone();
  renderMeeting(r);
}

function tile(p: Participant, isLocal: boolean) {
  const video = p.getTrackPublication(Track.Source.Camera) as TrackPublication | undefined;
  const audio = p.getTrackPublication(Track.Source.Microphone) as TrackPublication | undefined;
  const label = (p.name || p.identity) + (isLocal ? ` (${tr('you')})` : '');
  const figure = el('figure', {
    className: 'tile' + (p.isSpeaking ? ' speaking' : ''),
  });
  figure.dataset.identity = p.identity;
  if (video?.track && !video.isMuted) {
    const v = video.track.attach() as HTMLVideoElement;
    v.muted = true;
    v.playsInline = true;
    figure.append(v);
  } else {
    figure.append(el('div', { className: 'avatar', ariaHidden: 'true', textContent: label.slice(0, 1).toUpperCase() }));
  }
  if (!isLocal && audio?.track) {
    figure.append(audio.track.attach());
  }
  const muted = !audio || audio.isMuted;
  figure.append(
    el('figcaption', {}, label, muted ? el('span', { className: 'muted', textContent: ` — ${tr('muted')}` }) : ''),
  );
  return figure;
}

function renderMeeting(r: Room) {
  const local = r.localParticipant;
  const remotes: RemoteParticipant[] = Array.from(r.remoteParticipants.values());
  const grid = el('section', { className: 'grid', ariaLabel: tr('participants') });
  grid.style.setProperty('--cols', String(Math.ceil(Math.sqrt(remotes.length + 1))));
  grid.append(tile(local, true), ...remotes.map((p) => tile(p, false)));
  const micOn = local.isMicrophoneEnabled;
  const camOn = local.isCameraEnabled;
  const controls = el(
    'nav',
    { className: 'controls' },
    el('button', {
      type: 'button',
      id: 'mic',
      textContent: micOn ? tr('micOn') : tr('micOff'),
      ariaPressed: String(!micOn),
      onclick: async () => {
        await local.setMicrophoneEnabled(!local.isMicrophoneEnabled);
        renderMeeting(r);
      },
    }),
    el('button', {
      type: 'button',
      id: 'cam',
      textContent: camOn ? tr('camOn') : tr('camOff'),
      ariaPressed: String(!camOn),
      onclick: async () => {
        await local.setCameraEnabled(!local.isCameraEnabled);
        renderMeeting(r);
      },
    }),
    el('button', {
      type: 'button',
      id: 'leave',
      className: 'danger',
      textContent: tr('leave'),
      onclick: () => r.disconnect(),
    }),
  );
  const main = el('main', { className: 'meeting' }, grid);
  if (remotes.length === 0) main.append(el('p', { className: 'hint', textContent: tr('alone') }));
  app.replaceChildren(el('header', {}, el('h1', { textContent: `${tr('title')} — ${r.name}` }), langButton()), main, controls);
}

document.documentElement.lang = lang;
renderJoin();
