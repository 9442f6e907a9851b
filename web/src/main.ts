// Salon's web app: home (new meeting, or join one by name), the pre-join
// screen (preview, devices, name), the waiting room, the meeting, and the
// screen that says why a meeting ended.
import {
  createLocalVideoTrack,
  DisconnectReason,
  type LocalVideoTrack,
  Room,
  RoomEvent,
} from 'livekit-client';
import * as api from './api';
import { el } from './dom';
import { type Key, type Lang, pickLang, t } from './i18n';
import { hostKeyFromHash } from './logic';
import { MeetingView } from './meeting';
import './style.css';

let lang: Lang = pickLang(location.search, localStorage.getItem('salon.lang'));
const app = document.getElementById('app')!;

function tr(key: Key) {
  return t(lang, key);
}

/** What is on screen, so that switching language redraws it. */
let redraw: () => void = () => {};
let meeting: MeetingView | undefined;

function setLang(next: Lang) {
  lang = next;
  localStorage.setItem('salon.lang', next);
  document.documentElement.lang = next;
  if (meeting) {
    // The meeting keeps its media elements; only its labels change.
    meeting.render();
  }
  redraw();
}

function langButton() {
  return el('button', {
    type: 'button',
    className: 'lang',
    textContent: tr('language'),
    ariaLabel: tr('languageLabel'),
    onclick: () => setLang(lang === 'fr' ? 'en' : 'fr'),
  });
}

function header(title = tr('title')) {
  return el('header', { className: 'top' }, el('h1', { textContent: title }), langButton());
}

function show(view: () => HTMLElement[]) {
  redraw = () => {
    app.replaceChildren(...view());
  };
  redraw();
}

function field(id: string, label: Key, input: HTMLElement) {
  return el('div', { className: 'field' }, el('label', { htmlFor: id, textContent: tr(label) }), input);
}

// ---- home -------------------------------------------------------------------

function home(error?: string) {
  show(() => {
    const waiting = el('input', { type: 'checkbox', id: 'waiting-room', checked: true });
    const create = el('button', { type: 'button', id: 'create', textContent: tr('create') });
    create.onclick = async () => {
      create.disabled = true;
      try {
        const m = await api.createMeeting(waiting.checked);
        localStorage.setItem(`salon.host.${m.room}`, m.hostKey);
        history.pushState(null, '', `?room=${encodeURIComponent(m.room)}`);
        prejoin(m.room);
      } catch (e) {
        home(e instanceof Error ? e.message : String(e));
      }
    };
    const roomInput = el('input', { id: 'room', name: 'room', required: true, maxLength: 100 });
    const form = el(
      'form',
      { className: 'card' },
      el('h2', { textContent: tr('joinMeeting') }),
      field('room', 'room', roomInput),
      el('button', { type: 'submit', id: 'continue', textContent: tr('continue') }),
    );
    form.onsubmit = (ev) => {
      ev.preventDefault();
      const room = roomInput.value.trim();
      if (!room) return;
      history.pushState(null, '', `?room=${encodeURIComponent(room)}`);
      prejoin(room);
    };
    return [
      header(),
      el(
        'main',
        { className: 'home' },
        el('p', { className: 'subtitle', textContent: tr('subtitle') }),
        error ? el('p', { className: 'error', role: 'alert', textContent: tr('error') + error }) : '',
        el(
          'div',
          { className: 'cards' },
          el(
            'section',
            { className: 'card' },
            el('h2', { textContent: tr('newMeeting') }),
            el('p', { textContent: tr('newMeetingHint') }),
            el('div', { className: 'check' }, waiting, el('label', { htmlFor: 'waiting-room', textContent: tr('waitingRoomOption') })),
            create,
          ),
          form,
        ),
      ),
    ];
  });
}

// ---- pre-join ---------------------------------------------------------------

interface Choices {
  name: string;
  mic: boolean;
  cam: boolean;
  audioInput?: string;
  videoInput?: string;
  audioOutput?: string;
}

let preview: LocalVideoTrack | undefined;

function stopPreview() {
  preview?.stop();
  preview = undefined;
}

function prejoin(roomName: string, error?: string) {
  const hostKey = localStorage.getItem(`salon.host.${roomName}`);
  const choices: Choices = {
    name: localStorage.getItem('salon.name') ?? '',
    mic: localStorage.getItem('salon.mic') !== 'off',
    cam: localStorage.getItem('salon.cam') !== 'off',
  };
  const video = el('video', { className: 'preview mirror', muted: true, playsInline: true, autoplay: true });
  video.setAttribute('aria-label', tr('previewLabel'));
  const previewBox = el('div', { className: 'preview-box' }, video);
  const previewOff = el('p', { className: 'preview-off', textContent: tr('previewOff') });
  const selects: Record<'videoinput' | 'audioinput' | 'audiooutput', HTMLSelectElement> = {
    videoinput: el('select', { id: 'camera-select' }),
    audioinput: el('select', { id: 'mic-select' }),
    audiooutput: el('select', { id: 'speaker-select' }),
  };

  async function startPreview() {
    stopPreview();
    previewOff.hidden = choices.cam;
    video.hidden = !choices.cam;
    if (!choices.cam) return;
    try {
      preview = await createLocalVideoTrack({ deviceId: choices.videoInput });
      preview.attach(video);
    } catch (e) {
      previewOff.hidden = false;
      previewOff.textContent = tr('noDevices') + (e instanceof Error ? e.message : String(e));
    }
  }

  async function fillDevices() {
    for (const kind of ['videoinput', 'audioinput', 'audiooutput'] as const) {
      let devices: MediaDeviceInfo[] = [];
      try {
        devices = await Room.getLocalDevices(kind);
      } catch {
        // No permission or no such device: the default is all there is.
      }
      const select = selects[kind];
      select.replaceChildren(
        el('option', { value: '', textContent: tr('defaultDevice') }),
        ...devices.filter((d) => d.deviceId && d.deviceId !== 'default').map((d) => el('option', { value: d.deviceId, textContent: d.label || d.deviceId })),
      );
      // Firefox and others that cannot choose an output hide the choice.
      if (kind === 'audiooutput') select.closest('.field')?.toggleAttribute('hidden', devices.length === 0);
    }
  }

  show(() => {
    const name = el('input', { id: 'name', name: 'name', required: true, maxLength: 100, autocomplete: 'name', value: choices.name });
    const switchButton = (id: string, label: Key, on: () => boolean, flip: () => void) => {
      const b = el('button', { type: 'button', id, className: 'switch', textContent: tr(label), ariaPressed: String(on()) });
      b.onclick = () => {
        flip();
        b.ariaPressed = String(on());
        void startPreview();
      };
      return b;
    };
    selects.videoinput.onchange = () => {
      choices.videoInput = selects.videoinput.value || undefined;
      void startPreview();
    };
    selects.audioinput.onchange = () => (choices.audioInput = selects.audioinput.value || undefined);
    selects.audiooutput.onchange = () => (choices.audioOutput = selects.audiooutput.value || undefined);
    const submit = el('button', { type: 'submit', id: 'join', textContent: tr('join') });
    const form = el(
      'form',
      { className: 'card prejoin-form' },
      el('h2', { textContent: tr('prejoinTitle') }),
      el('p', { className: 'room-name', textContent: roomName }),
      hostKey ? el('p', { className: 'host-badge', textContent: tr('hostBadge') }) : '',
      field('name', 'name', name),
      field('camera-select', 'camera', selects.videoinput),
      field('mic-select', 'microphone', selects.audioinput),
      field('speaker-select', 'speaker', selects.audiooutput),
      el(
        'div',
        { className: 'switches' },
        switchButton('start-mic', 'startMic', () => choices.mic, () => (choices.mic = !choices.mic)),
        switchButton('start-cam', 'startCam', () => choices.cam, () => (choices.cam = !choices.cam)),
      ),
      error ? el('p', { className: 'error', role: 'alert', textContent: tr('error') + error }) : '',
      submit,
    );
    form.onsubmit = async (ev) => {
      ev.preventDefault();
      choices.name = name.value.trim();
      if (!choices.name) return;
      submit.disabled = true;
      submit.textContent = tr('joining');
      localStorage.setItem('salon.name', choices.name);
      localStorage.setItem('salon.mic', choices.mic ? 'on' : 'off');
      localStorage.setItem('salon.cam', choices.cam ? 'on' : 'off');
      stopPreview();
      try {
        await join(roomName, hostKey, choices);
      } catch (e) {
        prejoin(roomName, e instanceof Error ? e.message : String(e));
      }
    };
    queueMicrotask(() => (name.value ? submit : name).focus());
    return [header(), el('main', { className: 'prejoin' }, el('div', { className: 'preview-col' }, previewBox, previewOff), form)];
  });
  void fillDevices().then(startPreview);
}

// ---- joining, the waiting room, the meeting -----------------------------------

async function join(roomName: string, hostKey: string | null, choices: Choices) {
  const { token, role, waiting } = await api.joinToken(roomName, choices.name, hostKey);
  const room = new Room({
    adaptiveStream: true,
    dynacast: true,
    videoCaptureDefaults: { deviceId: choices.videoInput },
    audioCaptureDefaults: { deviceId: choices.audioInput },
    audioOutput: { deviceId: choices.audioOutput },
  });
  (window as unknown as { salonRoom: Room }).salonRoom = room;
  let entered = false;
  room.on(RoomEvent.Disconnected, (reason?: DisconnectReason) => {
    meeting?.close();
    meeting = undefined;
    ended(roomName, reason);
  });
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}`;
  await room.connect(url, token);

  const enter = async () => {
    if (entered) return;
    entered = true;
    let notice = '';
    try {
      if (choices.cam) await room.localParticipant.setCameraEnabled(true);
      if (choices.mic) await room.localParticipant.setMicrophoneEnabled(true);
    } catch (e) {
      // Still in the meeting, without camera or microphone.
      notice = tr('noDevices') + (e instanceof Error ? e.message : String(e));
    }
    showMeeting(room, roomName, token, role, notice);
  };
  if (waiting && room.localParticipant.permissions?.canPublish !== true) {
    lobby(room);
    // The host admits: the server grants what the token did not.
    room.on(RoomEvent.ParticipantPermissionsChanged, (_prev, participant) => {
      if (participant === room.localParticipant && room.localParticipant.permissions?.canSubscribe) void enter();
    });
  } else {
    await enter();
  }
}

function lobby(room: Room) {
  show(() => [
    header(),
    el(
      'main',
      { className: 'lobby' },
      el(
        'section',
        { className: 'card', role: 'status' },
        el('div', { className: 'spinner', ariaHidden: 'true' }),
        el('h2', { textContent: tr('waitingTitle') }),
        el('p', { textContent: tr('waitingText') }),
        el('button', { type: 'button', id: 'cancel', className: 'secondary', textContent: tr('cancel'), onclick: () => room.disconnect() }),
      ),
    ),
  ]);
}

function showMeeting(room: Room, roomName: string, token: string, role: 'host' | 'guest', notice: string) {
  meeting?.close();
  const view = new MeetingView({ room, roomName, token, role, tr, notice });
  meeting = view;
  show(() => [header(`${tr('title')} — ${roomName}`), view.root]);
}

function ended(roomName: string, reason?: DisconnectReason) {
  const message: Key =
    reason === DisconnectReason.PARTICIPANT_REMOVED
      ? 'refused'
      : reason === DisconnectReason.ROOM_DELETED
        ? 'ended'
        : reason === DisconnectReason.CLIENT_INITIATED
          ? 'left'
          : 'ended';
  show(() => [
    header(),
    el(
      'main',
      { className: 'ended' },
      el(
        'section',
        { className: 'card' },
        el('p', { role: 'alert', className: 'ended-reason', textContent: tr(message) }),
        el('button', { type: 'button', id: 'rejoin', textContent: tr('rejoin'), onclick: () => prejoin(roomName) }),
        el('button', { type: 'button', id: 'home', className: 'secondary', textContent: tr('home'), onclick: () => { history.pushState(null, '', '/'); home(); } }),
      ),
    ),
  ]);
}

// ---- start ------------------------------------------------------------------

function route() {
  const room = new URLSearchParams(location.search).get('room');
  const key = hostKeyFromHash(location.hash);
  if (room && key) {
    // The host link: keep the key, and take it out of the address bar
    // before anyone shares their screen.
    localStorage.setItem(`salon.host.${room}`, key);
    history.replaceState(null, '', `${location.pathname}${location.search}`);
  }
  if (room) prejoin(room);
  else home();
}

window.addEventListener('popstate', () => {
  if (!meeting) route();
});
document.documentElement.lang = lang;
route();
