// The app's decisions, as plain functions of plain data, so that they can be
// tested without a browser or a server.

/** Longest chat message, in characters. */
export const MAX_CHAT_CHARS = 2000;

/** What the layout needs to know of one tile. */
export interface TileInfo {
  /** `identity:source`, unique on the stage. */
  key: string;
  identity: string;
  isLocal: boolean;
  isScreen: boolean;
}

/** Columns for a grid of `n` tiles on a screen `width` pixels wide. */
export function gridColumns(n: number, width: number): number {
  if (n <= 1) return 1;
  // A phone keeps tiles readable: one column up to 2 people, then two.
  if (width < 600) return n <= 2 ? 1 : 2;
  return Math.ceil(Math.sqrt(n));
}

/**
 * The tile shown large in speaker view: the pinned one if it is still
 * there, else a shared screen (someone else's first), else the most recent
 * remote speaker, else the first remote participant, else oneself.
 */
export function featuredTile(tiles: TileInfo[], pinned: string | null, speakers: string[]): string | null {
  if (tiles.length === 0) return null;
  if (pinned && tiles.some((t) => t.key === pinned)) return pinned;
  const screens = tiles.filter((t) => t.isScreen);
  const screen = screens.find((t) => !t.isLocal) ?? screens[0];
  if (screen) return screen.key;
  for (const identity of speakers) {
    const tile = tiles.find((t) => t.identity === identity && !t.isLocal && !t.isScreen);
    if (tile) return tile.key;
  }
  return (tiles.find((t) => !t.isLocal) ?? tiles[0]).key;
}

/** Speaker view when a screen is shared or someone is pinned; else what the person chose. */
export function layoutMode(chosen: 'grid' | 'speaker', tiles: TileInfo[], pinned: string | null): 'grid' | 'speaker' {
  if (tiles.length <= 1) return 'grid';
  if (pinned && tiles.some((t) => t.key === pinned)) return 'speaker';
  if (tiles.some((t) => t.isScreen)) return 'speaker';
  return chosen;
}

/** A chat message to send, trimmed, or why not. */
export function chatMessage(text: string): { ok: true; text: string } | { ok: false; reason: 'empty' | 'tooLong' } {
  const trimmed = text.trim();
  if (!trimmed) return { ok: false, reason: 'empty' };
  if ([...trimmed].length > MAX_CHAT_CHARS) return { ok: false, reason: 'tooLong' };
  return { ok: true, text: trimmed };
}

/** The participant list as RoomService ListParticipants answers it (protobuf JSON). */
export interface ListedParticipant {
  identity: string;
  name?: string;
  permission?: { hidden?: boolean; canSubscribe?: boolean };
}

/** Guests waiting to be admitted: hidden and unable to subscribe. */
export function waitingGuests(listed: ListedParticipant[]): { identity: string; name: string }[] {
  return listed
    .filter((p) => p.permission?.hidden === true && p.permission?.canSubscribe !== true)
    .map((p) => ({ identity: p.identity, name: p.name || p.identity }));
}

/** Who joined the waiting list since `before`. */
export function newArrivals<T extends { identity: string }>(before: T[], now: T[]): T[] {
  const known = new Set(before.map((p) => p.identity));
  return now.filter((p) => !known.has(p.identity));
}

/** The attribute a raised hand sets: when it was raised, in ms. */
export const HAND_ATTRIBUTE = 'hand';

/** Raised hands, first raised first. */
export function raisedHands(people: { identity: string; attributes: Record<string, string> }[]): string[] {
  return people
    .filter((p) => p.attributes[HAND_ATTRIBUTE])
    .sort((a, b) => Number(a.attributes[HAND_ATTRIBUTE]) - Number(b.attributes[HAND_ATTRIBUTE]))
    .map((p) => p.identity);
}

/**
 * The host key in a host link's fragment (`#host=…`), if any. It travels
 * in the fragment so that it never reaches a server log.
 */
export function hostKeyFromHash(hash: string): string | null {
  const key = new URLSearchParams(hash.replace(/^#/, '')).get('host');
  return key && /^[0-9a-f]{32}$/.test(key) ? key : null;
}

/** The link guests open: the meeting's room, nothing secret. */
export function guestLink(origin: string, room: string): string {
  return `${origin}/?room=${encodeURIComponent(room)}`;
}
