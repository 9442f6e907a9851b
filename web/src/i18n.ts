// Labels in French (default) and English. Every control's label lives here.
export type Lang = 'fr' | 'en';

const messages = {
  fr: {
    title: 'Salon',
    subtitle: 'Visioconférence souveraine',
    name: 'Votre nom',
    room: 'Nom de la réunion',
    join: 'Rejoindre',
    joining: 'Connexion…',
    leave: 'Quitter',
    micOn: 'Couper le micro',
    micOff: 'Activer le micro',
    camOn: 'Couper la caméra',
    camOff: 'Activer la caméra',
    you: 'vous',
    muted: 'micro coupé',
    alone: 'Vous êtes seul·e dans la réunion. Partagez le lien pour inviter.',
    error: 'Connexion impossible : ',
    language: 'English',
    languageLabel: 'Switch to English',
    participants: 'Participants',
    controls: 'Commandes de la réunion',
    noDevices: 'Caméra ou micro indisponible : ',
  },
  en: {
    title: 'Salon',
    subtitle: 'Sovereign video conferencing',
    name: 'Your name',
    room: 'Meeting name',
    join: 'Join',
    joining: 'Connecting…',
    leave: 'Leave',
    micOn: 'Mute microphone',
    micOff: 'Unmute microphone',
    camOn: 'Turn camera off',
    camOff: 'Turn camera on',
    you: 'you',
    muted: 'muted',
    alone: 'You are alone in the meeting. Share the link to invite others.',
    error: 'Could not connect: ',
    language: 'Français',
    languageLabel: 'Passer en français',
    participants: 'Participants',
    controls: 'Meeting controls',
    noDevices: 'Camera or microphone unavailable: ',
  },
} as const;

export type Key = keyof (typeof messages)['fr'];

/** French unless the link (`?lang=en`) or an earlier choice says otherwise. */
export function pickLang(search: string, stored: string | null): Lang {
  const fromUrl = new URLSearchParams(search).get('lang');
  if (fromUrl === 'en' || fromUrl === 'fr') return fromUrl;
  if (stored === 'en' || stored === 'fr') return stored;
  return 'fr';
}

export function t(lang: Lang, key: Key): string {
  return messages[lang][key];
}
