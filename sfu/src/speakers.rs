//! Who is speaking, from the audio level publishers put in every audio
//! packet (RFC 6464: the level in -dBov, 0 the loudest, 127 silence).
//! Sans-IO: `LevelWindow` sums one track's packets over short windows, and
//! `Speakers` turns those sums into LiveKit's `SpeakersChanged` updates.

use livekit_protocol as lk;
use salon_common::ParticipantSid;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long one window of levels lasts.
pub const WINDOW: Duration = Duration::from_millis(500);

/// A packet at or above this loudness (35 dBov or louder, LiveKit's
/// default) counts as voice.
const ACTIVE_LEVEL: u8 = 35;

/// Share of a window's packets that must be voice for the window to count
/// as speech: pauses between words stay speech, a cough does not.
const MIN_ACTIVE_SHARE: f32 = 0.4;

/// A speaker whose track reported nothing for this long (it stopped, or
/// Opus DTX sends almost nothing during silence) has stopped speaking.
const SILENCE_AFTER: Duration = Duration::from_millis(1500);

/// Levels closer than this are not worth an update.
const LEVEL_STEP: f32 = 0.1;

/// One window of one track's levels, summed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowSum {
    /// The share of the window's packets that carried voice.
    pub active_share: f32,
    /// The mean linear level (0 to 1) of those packets.
    pub level: f32,
}

impl WindowSum {
    fn is_speech(&self) -> bool {
        self.active_share >= MIN_ACTIVE_SHARE
    }
}

/// Sums the levels of one audio track over consecutive windows.
#[derive(Debug, Default)]
pub struct LevelWindow {
    start: Option<Instant>,
    packets: u32,
    active: u32,
    linear_sum: f32,
}

impl LevelWindow {
    /// Takes one packet's level; returns the sum of a window when one ends.
    pub fn observe(&mut self, now: Instant, level_dbov: u8) -> Option<WindowSum> {
        let start = *self.start.get_or_insert(now);
        let mut done = None;
        if now.saturating_duration_since(start) >= WINDOW {
            done = Some(WindowSum {
                active_share: self.active as f32 / self.packets.max(1) as f32,
                level: if self.active == 0 {
                    0.0
                } else {
                    self.linear_sum / self.active as f32
                },
            });
            *self = Self {
                start: Some(now),
                ..Self::default()
            };
        }
        let level_dbov = level_dbov.min(127);
        self.packets += 1;
        if level_dbov <= ACTIVE_LEVEL {
            self.active += 1;
            self.linear_sum += 10f32.powf(-f32::from(level_dbov) / 20.0);
        }
        done
    }
}

#[derive(Debug, Clone, Copy)]
struct Speaking {
    level: f32,
    last_heard: Instant,
}

/// The speakers of one room: who speaks now, and what the participants
/// were last told.
#[derive(Debug, Default)]
pub struct Speakers {
    speaking: BTreeMap<ParticipantSid, Speaking>,
    announced: BTreeMap<ParticipantSid, f32>,
}

impl Speakers {
    /// A window of `who`'s microphone ended.
    pub fn report(&mut self, now: Instant, who: &ParticipantSid, sum: WindowSum) {
        if sum.is_speech() {
            self.speaking.insert(
                who.clone(),
                Speaking {
                    level: sum.level,
                    last_heard: now,
                },
            );
        } else {
            self.speaking.remove(who);
        }
    }

    /// `who` left or stopped publishing audio.
    pub fn remove(&mut self, who: &ParticipantSid) {
        self.speaking.remove(who);
    }

    /// When a speaker falls silent for lack of reports.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.speaking
            .values()
            .map(|s| s.last_heard + SILENCE_AFTER)
            .min()
    }

    /// The speakers as last announced, for someone who just arrived.
    pub fn announced(&self) -> Vec<lk::SpeakerInfo> {
        self.announced
            .iter()
            .map(|(who, &level)| lk::SpeakerInfo {
                sid: who.to_string(),
                level,
                active: true,
            })
            .collect()
    }

    /// What changed since the last call, as LiveKit's speaker updates:
    /// who started speaking or got louder or quieter, with a level, and who
    /// stopped, inactive at level 0. `None` if nothing changed.
    pub fn poll_changes(&mut self, now: Instant) -> Option<Vec<lk::SpeakerInfo>> {
        self.speaking
            .retain(|_, s| now.saturating_duration_since(s.last_heard) < SILENCE_AFTER);
        let mut changes = Vec::new();
        for (who, s) in &self.speaking {
            let moved = self
                .announced
                .get(who)
                .is_none_or(|&before| (before - s.level).abs() >= LEVEL_STEP);
            if moved {
                changes.push(lk::SpeakerInfo {
                    sid: who.to_string(),
                    level: s.level,
                    active: true,
                });
            }
        }
        for who in self.announced.keys() {
            if !self.speaking.contains_key(who) {
                changes.push(lk::SpeakerInfo {
                    sid: who.to_string(),
                    level: 0.0,
                    active: false,
                });
            }
        }
        for c in &changes {
            let who = ParticipantSid::new(c.sid.clone());
            if c.active {
                self.announced.insert(who, c.level);
            } else {
                self.announced.remove(&who);
            }
        }
        (!changes.is_empty()).then_some(changes)
    }
}

#[cfg(test)]
#[path = "speakers_tests.rs"]
mod tests;
