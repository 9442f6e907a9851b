import { describe, expect, it } from 'vitest';
import {
  chatMessage,
  featuredTile,
  gridColumns,
  guestLink,
  hostKeyFromHash,
  layoutMode,
  MAX_CHAT_CHARS,
  newArrivals,
  raisedHands,
  waitingGuests,
  type TileInfo,
} from './logic';
import { allKeys, pickLang, t } from './i18n';

const tile = (identity: string, opts: Partial<TileInfo> = {}): TileInfo => ({
  key: `${identity}:${opts.isScreen ? 'screen' : 'camera'}`,
  identity,
  isLocal: false,
  isScreen: false,
  ...opts,
});

describe('grid', () => {
  it('grows square on a desktop and stays narrow on a phone', () => {
    expect([1, 2, 4, 5, 9, 10].map((n) => gridColumns(n, 1280))).toEqual([1, 2, 2, 3, 3, 4]);
    expect([1, 2, 3, 8].map((n) => gridColumns(n, 390))).toEqual([1, 1, 2, 2]);
  });
});

describe('speaker view', () => {
  const me = tile('me', { isLocal: true });
  const ana = tile('ana');
  const ben = tile('ben');

  it('features the pinned tile while it exists', () => {
    expect(featuredTile([me, ana, ben], 'ben:camera', ['ana'])).toBe('ben:camera');
    expect(featuredTile([me, ana], 'ben:camera', ['ana'])).toBe('ana:camera');
  });

  it('features a shared screen, someone else’s before mine', () => {
    const mine = tile('me', { isLocal: true, isScreen: true });
    const anas = tile('ana', { isScreen: true });
    expect(featuredTile([me, mine, ana, anas], null, ['ben'])).toBe('ana:screen');
    expect(featuredTile([me, mine, ana], null, [])).toBe('me:screen');
  });

  it('features the latest remote speaker, never myself', () => {
    expect(featuredTile([me, ana, ben], null, ['me', 'ben'])).toBe('ben:camera');
    expect(featuredTile([me, ana, ben], null, [])).toBe('ana:camera');
    expect(featuredTile([me], null, ['me'])).toBe('me:camera');
  });

  it('switches to speaker view for screens and pins, else follows the choice', () => {
    expect(layoutMode('grid', [me, ana], null)).toBe('grid');
    expect(layoutMode('speaker', [me, ana], null)).toBe('speaker');
    expect(layoutMode('grid', [me, ana], 'ana:camera')).toBe('speaker');
    expect(layoutMode('grid', [me, ana, tile('ana', { isScreen: true })], null)).toBe('speaker');
    expect(layoutMode('speaker', [me], null)).toBe('grid');
  });
});

describe('chat', () => {
  it('trims, refuses empty and overlong messages', () => {
    expect(chatMessage('  bonjour ')).toEqual({ ok: true, text: 'bonjour' });
    expect(chatMessage('   ')).toEqual({ ok: false, reason: 'empty' });
    expect(chatMessage('é'.repeat(MAX_CHAT_CHARS)).ok).toBe(true);
    expect(chatMessage('é'.repeat(MAX_CHAT_CHARS + 1))).toEqual({ ok: false, reason: 'tooLong' });
  });
});

describe('waiting room', () => {
  it('lists hidden guests who may not subscribe, and who is new', () => {
    const listed = [
      { identity: 'host-1', name: 'Hélène', permission: { canSubscribe: true } },
      { identity: 'guest-1', name: 'Gaston', permission: { hidden: true } },
      { identity: 'rec', name: 'Recorder', permission: { hidden: true, canSubscribe: true } },
      { identity: 'guest-2', permission: { hidden: true, canSubscribe: false } },
    ];
    const waiting = waitingGuests(listed);
    expect(waiting).toEqual([
      { identity: 'guest-1', name: 'Gaston' },
      { identity: 'guest-2', name: 'guest-2' },
    ]);
    expect(newArrivals(waiting.slice(0, 1), waiting)).toEqual([{ identity: 'guest-2', name: 'guest-2' }]);
  });

  it('reads a host key only from a well-formed fragment', () => {
    const key = '0123456789abcdef0123456789abcdef';
    expect(hostKeyFromHash(`#host=${key}`)).toBe(key);
    expect(hostKeyFromHash('#host=nope')).toBeNull();
    expect(hostKeyFromHash('')).toBeNull();
    expect(guestLink('https://visio.example', 'abc-defg-hij')).toBe('https://visio.example/?room=abc-defg-hij');
  });
});

describe('hands', () => {
  it('orders raised hands by when they went up', () => {
    const people: { identity: string; attributes: Record<string, string> }[] = [
      { identity: 'a', attributes: { hand: '300' } },
      { identity: 'b', attributes: {} },
      { identity: 'c', attributes: { hand: '100' } },
    ];
    expect(raisedHands(people)).toEqual(['c', 'a']);
  });
});

describe('languages', () => {
  it('has every label in both languages, French by default', () => {
    for (const key of allKeys()) {
      expect(t('fr', key), key).toBeTruthy();
      expect(t('en', key), key).toBeTruthy();
    }
    expect(pickLang('', null)).toBe('fr');
    expect(pickLang('?lang=en', 'fr')).toBe('en');
    expect(pickLang('', 'en')).toBe('en');
  });
});
