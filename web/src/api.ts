// Salon's HTTP API as the web app uses it: meetings, tokens, and the host's
// RoomService calls, made with the host's own token (its roomAdmin grant
// is what lets them through; the server checks it, not this page).
import type { ListedParticipant } from './logic';

async function post<T>(path: string, body: unknown, token?: string): Promise<T> {
  const headers: Record<string, string> = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(path, { method: 'POST', headers, body: JSON.stringify(body) });
  const text = await res.text();
  if (!res.ok) {
    let reason = text;
    try {
      reason = (JSON.parse(text) as { msg?: string }).msg ?? text;
    } catch {
      // plain text
    }
    throw new Error(reason || `HTTP ${res.status}`);
  }
  return JSON.parse(text) as T;
}

export interface Meeting {
  room: string;
  hostKey: string;
}

export interface JoinToken {
  token: string;
  identity: string;
  role: 'host' | 'guest';
  waiting: boolean;
}

export const createMeeting = (waitingRoom: boolean) => post<Meeting>('/api/meetings', { waitingRoom });

export const joinToken = (room: string, name: string, hostKey: string | null) =>
  post<JoinToken>('/api/token', { room, name, hostKey: hostKey ?? undefined });

const roomService = <T>(method: string, body: unknown, token: string) =>
  post<T>(`/twirp/livekit.RoomService/${method}`, body, token);

export const listParticipants = (room: string, token: string) =>
  roomService<{ participants?: ListedParticipant[] }>('ListParticipants', { room }, token).then(
    (r) => r.participants ?? [],
  );

export const admit = (room: string, identity: string, token: string) =>
  roomService('UpdateParticipant', {
    room,
    identity,
    permission: { canSubscribe: true, canPublish: true, canPublishData: true, canUpdateMetadata: true, hidden: false },
  }, token);

export const removeParticipant = (room: string, identity: string, token: string) =>
  roomService('RemoveParticipant', { room, identity }, token);

export const muteTrack = (room: string, identity: string, trackSid: string, token: string) =>
  roomService('MutePublishedTrack', { room, identity, trackSid, muted: true }, token);
