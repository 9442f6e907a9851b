// Labels in French (default) and English. Every control's label lives here.
export type Lang = 'fr' | 'en';

const fr = {
  title: 'Salon',
  subtitle: 'Visioconférence souveraine',
  // Home
  newMeeting: 'Nouvelle réunion',
  newMeetingHint: 'Créez une réunion et partagez son lien.',
  waitingRoomOption: 'Salle d’attente : j’admets les invités',
  create: 'Créer la réunion',
  joinMeeting: 'Rejoindre une réunion',
  room: 'Nom de la réunion',
  continue: 'Continuer',
  // Pre-join
  prejoinTitle: 'Prêt·e à rejoindre ?',
  name: 'Votre nom',
  camera: 'Caméra',
  microphone: 'Micro',
  speaker: 'Haut-parleur',
  defaultDevice: 'Par défaut',
  previewOff: 'Caméra désactivée',
  previewLabel: 'Aperçu de votre caméra',
  startMic: 'Micro activé en entrant',
  startCam: 'Caméra activée en entrant',
  join: 'Rejoindre',
  joining: 'Connexion…',
  hostBadge: 'Vous êtes l’hôte de cette réunion.',
  // Lobby
  waitingTitle: 'Salle d’attente',
  waitingText: 'L’hôte va bientôt vous laisser entrer.',
  cancel: 'Annuler',
  // Meeting
  leave: 'Quitter',
  micOn: 'Couper le micro',
  micOff: 'Activer le micro',
  camOn: 'Couper la caméra',
  camOff: 'Activer la caméra',
  shareOn: 'Arrêter le partage',
  shareOff: 'Partager l’écran',
  handUp: 'Baisser la main',
  handDown: 'Lever la main',
  chat: 'Discussion',
  participants: 'Participants',
  speakerView: 'Vue intervenant',
  gridView: 'Vue mosaïque',
  copyLink: 'Copier le lien',
  linkCopied: 'Lien copié : ',
  you: 'vous',
  host: 'hôte',
  muted: 'micro coupé',
  handRaised: 'main levée',
  weak: 'connexion faible',
  screenOf: 'Écran de ',
  pin: 'Épingler ',
  unpin: 'Désépingler ',
  alone: 'Vous êtes seul·e dans la réunion. Partagez le lien pour inviter.',
  reconnecting: 'Connexion perdue, reconnexion…',
  controls: 'Commandes de la réunion',
  stage: 'Participants à l’écran',
  noDevices: 'Caméra ou micro indisponible : ',
  // Chat
  message: 'Message',
  send: 'Envoyer',
  noMessages: 'Aucun message pour l’instant.',
  chatTooLong: 'Message trop long (2000 caractères au plus).',
  close: 'Fermer',
  // Host
  waitingList: 'En attente',
  waitingArrived: ' attend dans la salle d’attente.',
  admit: 'Admettre ',
  refuse: 'Refuser ',
  muteOther: 'Couper le micro de ',
  remove: 'Retirer ',
  // Endings
  error: 'Connexion impossible : ',
  refused: 'L’hôte n’a pas accepté votre demande, ou vous a retiré·e de la réunion.',
  left: 'Vous avez quitté la réunion.',
  ended: 'La réunion est terminée.',
  rejoin: 'Rejoindre à nouveau',
  home: 'Accueil',
  language: 'English',
  languageLabel: 'Switch to English',
};

export type Key = keyof typeof fr;

const en: Record<Key, string> = {
  title: 'Salon',
  subtitle: 'Sovereign video conferencing',
  newMeeting: 'New meeting',
  newMeetingHint: 'Create a meeting and share its link.',
  waitingRoomOption: 'Waiting room: I admit guests',
  create: 'Create meeting',
  joinMeeting: 'Join a meeting',
  room: 'Meeting name',
  continue: 'Continue',
  prejoinTitle: 'Ready to join?',
  name: 'Your name',
  camera: 'Camera',
  microphone: 'Microphone',
  speaker: 'Speaker',
  defaultDevice: 'Default',
  previewOff: 'Camera off',
  previewLabel: 'Your camera preview',
  startMic: 'Microphone on when joining',
  startCam: 'Camera on when joining',
  join: 'Join',
  joining: 'Connecting…',
  hostBadge: 'You host this meeting.',
  waitingTitle: 'Waiting room',
  waitingText: 'The host will let you in soon.',
  cancel: 'Cancel',
  leave: 'Leave',
  micOn: 'Mute microphone',
  micOff: 'Unmute microphone',
  camOn: 'Turn camera off',
  camOff: 'Turn camera on',
  shareOn: 'Stop sharing',
  shareOff: 'Share screen',
  handUp: 'Lower hand',
  handDown: 'Raise hand',
  chat: 'Chat',
  participants: 'Participants',
  speakerView: 'Speaker view',
  gridView: 'Grid view',
  copyLink: 'Copy link',
  linkCopied: 'Link copied: ',
  you: 'you',
  host: 'host',
  muted: 'muted',
  handRaised: 'hand raised',
  weak: 'weak connection',
  screenOf: 'Screen of ',
  pin: 'Pin ',
  unpin: 'Unpin ',
  alone: 'You are alone in the meeting. Share the link to invite people.',
  reconnecting: 'Connection lost, reconnecting…',
  controls: 'Meeting controls',
  stage: 'Participants on screen',
  noDevices: 'Camera or microphone unavailable: ',
  message: 'Message',
  send: 'Send',
  noMessages: 'No messages yet.',
  chatTooLong: 'Message too long (2000 characters at most).',
  close: 'Close',
  waitingList: 'Waiting',
  waitingArrived: ' is waiting in the waiting room.',
  admit: 'Admit ',
  refuse: 'Refuse ',
  muteOther: 'Mute ',
  remove: 'Remove ',
  error: 'Could not connect: ',
  refused: 'The host did not let you in, or removed you from the meeting.',
  left: 'You left the meeting.',
  ended: 'The meeting has ended.',
  rejoin: 'Join again',
  home: 'Home',
  language: 'Français',
  languageLabel: 'Passer en français',
};

const messages: Record<Lang, Record<Key, string>> = { fr, en };

export function t(lang: Lang, key: Key): string {
  return messages[lang][key];
}

export function allKeys(): Key[] {
  return Object.keys(fr) as Key[];
}

/** `?lang=` wins, then what the person chose before, then French. */
export function pickLang(search: string, stored: string | null): Lang {
  const param = new URLSearchParams(search).get('lang');
  if (param === 'en' || param === 'fr') return param;
  if (stored === 'en' || stored === 'fr') return stored;
  return 'fr';
}
