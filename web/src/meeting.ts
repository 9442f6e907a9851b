// The meeting: the stage of tiles (grid or speaker view), the control bar,
// and the side panel with the chat and the participant list (with the
// waiting room, for hosts).
import {
  ConnectionQuality,
  Participant,
  Room,
  RoomEvent,
  Track,
  type TrackPublication,
} from 'livekit-client';
import * as api from './api';
import { el, reconcile } from './dom';
import type { Key } from './i18n';
import { icon, type IconName } from './icons';
import {
  chatMessage,
  featuredTile,
  gridColumns,
  guestLink,
  HAND_ATTRIBUTE,
  layoutMode,
  newArrivals,
  raisedHands,
  waitingGuests,
  type TileInfo,
} from './logic';

/** The chat topic LiveKit's own components use, so their apps can talk with this one. */
const CHAT_TOPIC = 'lk.chat';
/** How often a host looks for guests in the waiting room. */
const WAITING_POLL_MS = 2000;

export interface MeetingOptions {
  room: Room;
  roomName: string;
  token: string;
  role: 'host' | 'guest';
  tr: (key: Key) => string;
  /** A notice to show once (devices that failed to start). */
  notice?: string;
}

interface ChatLine {
  name: string;
  text: string;
  mine: boolean;
}

type Panel = 'chat' | 'people' | null;

export class MeetingView {
  readonly root: HTMLElement;
  private readonly stage: HTMLElement;
  private readonly hint: HTMLElement;
  private readonly banner: HTMLElement;
  private readonly notice: HTMLElement;
  private readonly live: HTMLElement;
  private readonly controls: HTMLElement;
  private readonly panel: HTMLElement;
  private readonly chatLog: HTMLElement;
  private readonly chatForm: HTMLFormElement;
  private readonly chatInput: HTMLInputElement;
  private readonly peopleList: HTMLElement;
  private readonly waitingList: HTMLElement;
  private readonly tiles = new Map<string, HTMLElement>();
  private pinned: string | null = null;
  private chosenLayout: 'grid' | 'speaker' = 'grid';
  private open: Panel = null;
  private chat: ChatLine[] = [];
  private unread = 0;
  private waiting: { identity: string; name: string }[] = [];
  private pollTimer: number | undefined;
  private renderQueued = false;
  private closed = false;

  constructor(private readonly opts: MeetingOptions) {
    const { tr } = opts;
    this.stage = el('section', { className: 'stage', ariaLabel: tr('stage') });
    this.hint = el('p', { className: 'hint', textContent: tr('alone') });
    this.banner = el('p', { className: 'banner', role: 'status', hidden: true, textContent: tr('reconnecting') });
    this.notice = el('p', { className: 'notice', role: 'status', hidden: !opts.notice, textContent: opts.notice ?? '' });
    this.live = el('div', { className: 'sr-only', ariaLive: 'polite' });
    this.controls = el('nav', { className: 'controls', ariaLabel: tr('controls') });
    this.chatLog = el('ol', { className: 'chat-log', role: 'log', ariaLabel: tr('chat'), ariaLive: 'polite' });
    this.chatInput = el('input', { id: 'chat-input', maxLength: 2000, autocomplete: 'off' });
    this.chatForm = el(
      'form',
      { className: 'chat-form' },
      el('label', { htmlFor: 'chat-input', className: 'sr-only', textContent: tr('message') }),
      this.chatInput,
      el('button', { type: 'submit', textContent: tr('send') }),
    );
    this.chatForm.onsubmit = (ev) => {
      ev.preventDefault();
      void this.sendChat();
    };
    this.peopleList = el('ul', { className: 'people' });
    this.waitingList = el('ul', { className: 'waiting' });
    this.panel = el('aside', { className: 'panel', hidden: true });
    const main = el('main', { className: 'meeting' }, this.banner, this.notice, this.stage, this.hint);
    this.root = el('div', { className: 'meeting-root' }, main, this.panel, this.controls, this.live);
    this.listen();
    if (opts.role === 'host') this.pollWaiting();
    this.render();
  }

  private get room() {
    return this.opts.room;
  }

  private tr(key: Key) {
    return this.opts.tr(key);
  }

  /** Stops timers; the room itself is the caller's. */
  close() {
    this.closed = true;
    window.clearTimeout(this.pollTimer);
  }

  private listen() {
    const r = this.room;
    for (const ev of [
      RoomEvent.ParticipantConnected,
      RoomEvent.ParticipantDisconnected,
      RoomEvent.ParticipantNameChanged,
      RoomEvent.ParticipantAttributesChanged,
      RoomEvent.TrackSubscribed,
      RoomEvent.TrackUnsubscribed,
      RoomEvent.TrackMuted,
      RoomEvent.TrackUnmuted,
      RoomEvent.LocalTrackPublished,
      RoomEvent.LocalTrackUnpublished,
      RoomEvent.ActiveSpeakersChanged,
      RoomEvent.ConnectionQualityChanged,
      RoomEvent.ParticipantPermissionsChanged,
    ]) {
      r.on(ev, () => this.queueRender());
    }
    r.on(RoomEvent.Reconnecting, () => this.setReconnecting(true));
    r.on(RoomEvent.SignalReconnecting, () => this.setReconnecting(true));
    r.on(RoomEvent.Reconnected, () => this.setReconnecting(false));
    r.registerTextStreamHandler(CHAT_TOPIC, async (reader, from) => {
      const text = await reader.readAll();
      const sender = r.getParticipantByIdentity(from.identity);
      this.addChat({ name: sender?.name || from.identity, text, mine: false });
    });
    window.addEventListener('resize', () => this.queueRender());
  }

  private setReconnecting(on: boolean) {
    this.banner.hidden = !on;
  }

  private queueRender() {
    if (this.renderQueued || this.closed) return;
    this.renderQueued = true;
    setTimeout(() => {
      this.renderQueued = false;
      if (!this.closed) this.render();
    }, 0);
  }

  private people(): Participant[] {
    return [this.room.localParticipant, ...this.room.remoteParticipants.values()];
  }

  render() {
    this.renderStage();
    this.renderControls();
    this.renderPanel();
  }

  // ---- stage ---------------------------------------------------------------

  private renderStage() {
    const infos: TileInfo[] = [];
    const wanted: HTMLElement[] = [];
    for (const p of this.people()) {
      const isLocal = p === this.room.localParticipant;
      const sources: ('camera' | 'screen')[] = ['camera'];
      if (p.getTrackPublication(Track.Source.ScreenShare)?.track) sources.push('screen');
      for (const source of sources) {
        const key = `${p.identity}:${source}`;
        infos.push({ key, identity: p.identity, isLocal, isScreen: source === 'screen' });
        let tile = this.tiles.get(key);
        if (!tile) {
          tile = el('figure', { className: 'tile', dataset: { identity: p.identity, source } });
          this.tiles.set(key, tile);
        }
        this.updateTile(tile, p, isLocal, source, key);
        wanted.push(tile);
      }
    }
    for (const [key, tile] of this.tiles) {
      if (!wanted.includes(tile)) {
        tile.remove();
        this.tiles.delete(key);
        if (this.pinned === key) this.pinned = null;
      }
    }
    const speakers = this.room.activeSpeakers.map((p) => p.identity);
    const mode = layoutMode(this.chosenLayout, infos, this.pinned);
    const featured = mode === 'speaker' ? featuredTile(infos, this.pinned, speakers) : null;
    for (const [key, tile] of this.tiles) tile.classList.toggle('featured', key === featured);
    this.stage.className = `stage ${mode}`;
    this.stage.style.setProperty('--cols', String(gridColumns(wanted.length, window.innerWidth)));
    this.stage.style.setProperty('--rows', String(Math.max(1, wanted.length - 1)));
    // The featured tile goes first; moving a playing element within one
    // task does not pause it.
    const ordered = featured ? [...wanted].sort((a, b) => Number(b.classList.contains('featured')) - Number(a.classList.contains('featured'))) : wanted;
    reconcile(this.stage, ordered);
    this.hint.hidden = this.room.remoteParticipants.size > 0;
  }

  private updateTile(tile: HTMLElement, p: Participant, isLocal: boolean, source: 'camera' | 'screen', key: string) {
    const tr = (k: Key) => this.tr(k);
    const name = p.name || p.identity;
    const videoPub = p.getTrackPublication(source === 'camera' ? Track.Source.Camera : Track.Source.ScreenShare) as
      | TrackPublication
      | undefined;
    const children: Node[] = [];
    if (videoPub?.track && !videoPub.isMuted) {
      const video = mediaElement(tile, videoPub.track, 'video');
      video.classList.toggle('mirror', isLocal && source === 'camera');
      children.push(video);
    } else {
      children.push(el('div', { className: 'avatar', ariaHidden: 'true', textContent: name.slice(0, 1).toUpperCase() }));
    }
    const audioSource = source === 'camera' ? Track.Source.Microphone : Track.Source.ScreenShareAudio;
    const audioPub = p.getTrackPublication(audioSource);
    if (!isLocal && audioPub?.track) children.push(mediaElement(tile, audioPub.track, 'audio'));

    const label = source === 'screen' ? tr('screenOf') + name : name + (isLocal ? ` (${tr('you')})` : '');
    const caption = el('figcaption', {}, el('span', { className: 'name', textContent: label }));
    if (source === 'camera') {
      const mic = p.getTrackPublication(Track.Source.Microphone);
      if (!mic || mic.isMuted) caption.append(el('span', { className: 'badge muted', textContent: tr('muted') }));
      if (p.attributes[HAND_ATTRIBUTE]) {
        caption.append(el('span', { className: 'badge hand' }, icon('hand'), tr('handRaised')));
      }
      if (p.connectionQuality === ConnectionQuality.Poor || p.connectionQuality === ConnectionQuality.Lost) {
        caption.append(el('span', { className: 'badge weak', textContent: tr('weak') }));
      }
    }
    children.push(caption);
    const pinned = this.pinned === key;
    const pin = el('button', {
      type: 'button',
      className: 'pin',
      ariaLabel: (pinned ? tr('unpin') : tr('pin')) + label,
      ariaPressed: String(pinned),
      onclick: () => {
        this.pinned = pinned ? null : key;
        this.render();
      },
    });
    pin.append(icon('pin'));
    children.push(pin);
    tile.classList.toggle('speaking', source === 'camera' && p.isSpeaking);
    tile.classList.toggle('local', isLocal);
    tile.setAttribute('aria-label', label);
    reconcile(tile, children);
  }

  // ---- controls ------------------------------------------------------------

  private renderControls() {
    const tr = (k: Key) => this.tr(k);
    const local = this.room.localParticipant;
    const canPublish = local.permissions?.canPublish !== false;
    /** A switch whose label says what pressing it does. */
    const toggle = (id: string, icons: [IconName, IconName], on: boolean, labels: [Key, Key], act: () => Promise<unknown>, pressed = on) =>
      el(
        'button',
        {
          type: 'button',
          id,
          // A microphone or camera that is off is worth noticing.
          className: !on && (id === 'mic' || id === 'cam') ? 'alarm' : '',
          ariaLabel: tr(on ? labels[0] : labels[1]),
          title: tr(on ? labels[0] : labels[1]),
          ariaPressed: String(pressed),
          disabled: !canPublish && id !== 'hand',
          onclick: async () => {
            try {
              await act();
            } catch (e) {
              this.showNotice(tr('noDevices') + (e instanceof Error ? e.message : String(e)));
            }
            this.render();
          },
        },
        icon(on ? icons[0] : icons[1]),
        el('span', { className: 'label', textContent: tr(on ? labels[0] : labels[1]) }),
      );
    const hand = !!local.attributes[HAND_ATTRIBUTE];
    const panelButton = (id: string, name: IconName, panel: Exclude<Panel, null>, label: Key, badge = 0) =>
      el(
        'button',
        {
          type: 'button',
          id,
          ariaLabel: tr(label),
          title: tr(label),
          ariaExpanded: String(this.open === panel),
          onclick: () => this.togglePanel(panel),
        },
        icon(name),
        el('span', { className: 'label', textContent: tr(label) }),
        badge > 0 && el('span', { className: 'count', textContent: String(badge) }),
      );
    const layoutLabel: Key = this.chosenLayout === 'grid' ? 'speakerView' : 'gridView';
    reconcile(this.controls, [
      toggle('mic', ['mic', 'micOff'], local.isMicrophoneEnabled, ['micOn', 'micOff'], () => local.setMicrophoneEnabled(!local.isMicrophoneEnabled), !local.isMicrophoneEnabled),
      toggle('cam', ['cam', 'camOff'], local.isCameraEnabled, ['camOn', 'camOff'], () => local.setCameraEnabled(!local.isCameraEnabled), !local.isCameraEnabled),
      toggle('share', ['screen', 'screen'], local.isScreenShareEnabled, ['shareOn', 'shareOff'], () => local.setScreenShareEnabled(!local.isScreenShareEnabled)),
      toggle('hand', ['hand', 'hand'], hand, ['handUp', 'handDown'], () => local.setAttributes({ [HAND_ATTRIBUTE]: hand ? '' : String(Date.now()) })),
      panelButton('chat', 'chat', 'chat', 'chat', this.unread),
      panelButton('people', 'people', 'people', 'participants', this.waiting.length),
      el(
        'button',
        {
          type: 'button',
          id: 'layout',
          ariaLabel: tr(layoutLabel),
          title: tr(layoutLabel),
          onclick: () => {
            this.chosenLayout = this.chosenLayout === 'grid' ? 'speaker' : 'grid';
            this.render();
          },
        },
        icon(this.chosenLayout === 'grid' ? 'speaker' : 'grid'),
        el('span', { className: 'label', textContent: tr(layoutLabel) }),
      ),
      el(
        'button',
        {
          type: 'button',
          id: 'copy-link',
          ariaLabel: tr('copyLink'),
          title: tr('copyLink'),
          onclick: async () => {
            const link = guestLink(location.origin, this.opts.roomName);
            try {
              await navigator.clipboard.writeText(link);
            } catch {
              // No clipboard (an insecure origin): the link is shown anyway.
            }
            this.showNotice(tr('linkCopied') + link);
          },
        },
        icon('link'),
        el('span', { className: 'label', textContent: tr('copyLink') }),
      ),
      el(
        'button',
        { type: 'button', id: 'leave', className: 'danger', ariaLabel: tr('leave'), title: tr('leave'), onclick: () => this.room.disconnect() },
        icon('leave'),
        el('span', { className: 'label', textContent: tr('leave') }),
      ),
    ]);
  }

  private showNotice(text: string) {
    this.notice.textContent = text;
    this.notice.hidden = !text;
  }

  // ---- side panel ----------------------------------------------------------

  private togglePanel(panel: Exclude<Panel, null>) {
    this.open = this.open === panel ? null : panel;
    if (this.open === 'chat') this.unread = 0;
    this.render();
    if (this.open === 'chat') this.chatInput.focus();
  }

  private renderPanel() {
    const tr = (k: Key) => this.tr(k);
    this.panel.hidden = this.open === null;
    if (this.open === null) return;
    const title = this.open === 'chat' ? tr('chat') : tr('participants');
    const heading = el(
      'header',
      {},
      el('h2', { textContent: title }),
      el('button', { type: 'button', className: 'close', ariaLabel: tr('close'), onclick: () => this.togglePanel(this.open ?? 'chat') }, icon('close')),
    );
    this.panel.setAttribute('aria-label', title);
    if (this.open === 'chat') {
      if (this.chat.length === 0 && this.chatLog.childElementCount === 0) {
        this.chatLog.dataset.empty = tr('noMessages');
      }
      reconcile(this.panel, [heading, this.chatLog, this.chatForm]);
      return;
    }
    const children: Node[] = [heading];
    if (this.opts.role === 'host' && this.waiting.length > 0) {
      reconcile(
        this.waitingList,
        this.waiting.map((w) =>
          el(
            'li',
            { dataset: { identity: w.identity } },
            el('span', { className: 'name', textContent: w.name }),
            el('button', { type: 'button', className: 'admit', textContent: tr('admit').trim(), ariaLabel: tr('admit') + w.name, onclick: () => this.hostAction(() => api.admit(this.opts.roomName, w.identity, this.opts.token)) }),
            el('button', { type: 'button', className: 'refuse danger', textContent: tr('refuse').trim(), ariaLabel: tr('refuse') + w.name, onclick: () => this.hostAction(() => api.removeParticipant(this.opts.roomName, w.identity, this.opts.token)) }),
          ),
        ),
      );
      children.push(el('h3', { textContent: `${tr('waitingList')} (${this.waiting.length})` }), this.waitingList);
    }
    const hands = raisedHands(this.people().map((p) => ({ identity: p.identity, attributes: p.attributes })));
    const people = [...this.people()].sort((a, b) => {
      const ha = hands.indexOf(a.identity);
      const hb = hands.indexOf(b.identity);
      return (ha < 0 ? Infinity : ha) - (hb < 0 ? Infinity : hb);
    });
    reconcile(
      this.peopleList,
      people.map((p) => {
        const isLocal = p === this.room.localParticipant;
        const name = p.name || p.identity;
        const mic = p.getTrackPublication(Track.Source.Microphone);
        const item = el(
          'li',
          { dataset: { identity: p.identity } },
          el('span', { className: 'name', textContent: name + (isLocal ? ` (${tr('you')})` : '') + (p.attributes['salon.role'] === 'host' ? ` (${tr('host')})` : '') }),
          p.attributes[HAND_ATTRIBUTE] ? el('span', { className: 'badge hand' }, icon('hand'), tr('handRaised')) : null,
          !mic || mic.isMuted ? el('span', { className: 'badge muted', textContent: tr('muted') }) : null,
        );
        if (this.opts.role === 'host' && !isLocal) {
          if (mic?.trackSid && !mic.isMuted) {
            const sid = mic.trackSid;
            item.append(el('button', { type: 'button', className: 'icon-only', ariaLabel: tr('muteOther') + name, title: tr('muteOther') + name, onclick: () => this.hostAction(() => api.muteTrack(this.opts.roomName, p.identity, sid, this.opts.token)) }, icon('muteOther')));
          }
          item.append(el('button', { type: 'button', className: 'danger icon-only', ariaLabel: tr('remove') + name, title: tr('remove') + name, onclick: () => this.hostAction(() => api.removeParticipant(this.opts.roomName, p.identity, this.opts.token)) }, icon('remove')));
        }
        return item;
      }),
    );
    children.push(el('h3', { textContent: `${tr('participants')} (${people.length})` }), this.peopleList);
    reconcile(this.panel, children);
  }

  private async hostAction(act: () => Promise<unknown>) {
    try {
      await act();
      await this.refreshWaiting();
    } catch (e) {
      this.showNotice(e instanceof Error ? e.message : String(e));
    }
  }

  // ---- chat ----------------------------------------------------------------

  private async sendChat() {
    const msg = chatMessage(this.chatInput.value);
    if (!msg.ok) {
      if (msg.reason === 'tooLong') this.showNotice(this.tr('chatTooLong'));
      return;
    }
    this.chatInput.value = '';
    const local = this.room.localParticipant;
    this.addChat({ name: local.name || local.identity, text: msg.text, mine: true });
    try {
      await local.sendText(msg.text, { topic: CHAT_TOPIC });
    } catch (e) {
      this.showNotice(e instanceof Error ? e.message : String(e));
    }
  }

  private addChat(line: ChatLine) {
    this.chat.push(line);
    delete this.chatLog.dataset.empty;
    this.chatLog.append(
      el(
        'li',
        { className: line.mine ? 'mine' : '' },
        el('strong', { textContent: line.mine ? `${line.name} (${this.tr('you')})` : line.name }),
        el('p', { textContent: line.text }),
      ),
    );
    this.chatLog.scrollTop = this.chatLog.scrollHeight;
    if (this.open !== 'chat' && !line.mine) this.unread += 1;
    this.renderControls();
  }

  // ---- waiting room (hosts) -------------------------------------------------

  private pollWaiting() {
    if (this.closed) return;
    void this.refreshWaiting().finally(() => {
      this.pollTimer = window.setTimeout(() => this.pollWaiting(), WAITING_POLL_MS);
    });
  }

  private async refreshWaiting() {
    let listed;
    try {
      listed = await api.listParticipants(this.opts.roomName, this.opts.token);
    } catch {
      return; // Tried again at the next poll.
    }
    const now = waitingGuests(listed);
    const arrived = newArrivals(this.waiting, now);
    this.waiting = now;
    if (arrived.length > 0) {
      this.live.textContent = arrived.map((a) => a.name + this.tr('waitingArrived')).join(' ');
      this.showNotice(this.live.textContent);
    }
    this.renderControls();
    if (this.open === 'people') this.renderPanel();
  }
}

/** The element showing `track`, created once and reused while the track lives. */
function mediaElement(tile: HTMLElement, track: Track, kind: 'video' | 'audio'): HTMLMediaElement {
  const existing = tile.querySelector<HTMLMediaElement>(`${kind}[data-track="${track.sid}"]`);
  if (existing) return existing;
  const media = track.attach();
  media.dataset.track = track.sid ?? '';
  if (media instanceof HTMLVideoElement) {
    media.muted = true;
    media.playsInline = true;
  }
  return media;
}
