//! Meetings made from the web app: a room name drawn by the server, a host
//! key that only its creator holds, and whether guests wait to be let in.
//! The tokens the web app gets follow from this record, so the waiting room
//! is enforced by the grants the server signs, not by the page.
//!
//! Kept in memory: a signaling replica's meetings are its own until the
//! shared store (Redis, the fleet issue) holds them.

use rand::Rng;
use salon_common::RoomName;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a meeting link stays valid after it was made.
const MEETING_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// Most meetings held at once: creating them is open to anyone the guest
/// mode serves, so memory must stay bounded.
const MAX_MEETINGS: usize = 100_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MeetingError {
    #[error("too many meetings on this server; try again later")]
    Full,
}

/// Who a token is for in a meeting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Holds the host key: joins at once and may admit, refuse, mute, remove.
    Host,
    /// Anyone else: waits to be admitted where the meeting says so.
    Guest { waiting: bool },
}

struct Meeting {
    host_key: String,
    waiting_room: bool,
    created: Instant,
}

/// What the server made for a new meeting.
#[derive(Debug)]
pub struct NewMeeting {
    pub room: RoomName,
    pub host_key: String,
}

#[derive(Default)]
pub struct Meetings {
    inner: Mutex<HashMap<RoomName, Meeting>>,
}

impl Meetings {
    pub fn create(&self, waiting_room: bool, now: Instant) -> Result<NewMeeting, MeetingError> {
        let mut meetings = self.lock();
        meetings.retain(|_, m| now.duration_since(m.created) < MEETING_LIFETIME);
        if meetings.len() >= MAX_MEETINGS {
            return Err(MeetingError::Full);
        }
        let room = loop {
            let name = RoomName::new(meeting_name());
            if !meetings.contains_key(&name) {
                break name;
            }
        };
        let host_key = random_key();
        meetings.insert(
            room.clone(),
            Meeting {
                host_key: host_key.clone(),
                waiting_room,
                created: now,
            },
        );
        Ok(NewMeeting { room, host_key })
    }

    /// The role of whoever asks for a token to `room`, holding `host_key`
    /// or not. A room no meeting was made for is an open room: no waiting.
    pub fn role(&self, room: &RoomName, host_key: Option<&str>, now: Instant) -> Role {
        let meetings = self.lock();
        let Some(meeting) = meetings
            .get(room)
            .filter(|m| now.duration_since(m.created) < MEETING_LIFETIME)
        else {
            return Role::Guest { waiting: false };
        };
        match host_key {
            Some(key) if same_secret(key.as_bytes(), meeting.host_key.as_bytes()) => Role::Host,
            _ => Role::Guest {
                waiting: meeting.waiting_room,
            },
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RoomName, Meeting>> {
        // A panic while holding the lock leaves the map itself consistent.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Three groups of lowercase letters, like `abc-defg-hij`: easy to read out
/// over the phone, and 26^10 names, too many to find one by guessing.
fn meeting_name() -> String {
    let mut rng = rand::rng();
    let mut group = |n: usize| -> String {
        (0..n)
            .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
            .collect()
    };
    format!("{}-{}-{}", group(3), group(4), group(3))
}

/// 128 random bits, hex.
fn random_key() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares secrets in time that does not depend on where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_key_makes_a_host_and_anyone_else_waits() {
        let meetings = Meetings::default();
        let now = Instant::now();
        let m = meetings.create(true, now).expect("created");
        assert_eq!(meetings.role(&m.room, Some(&m.host_key), now), Role::Host);
        assert_eq!(
            meetings.role(&m.room, None, now),
            Role::Guest { waiting: true }
        );
        assert_eq!(
            meetings.role(&m.room, Some("00000000000000000000000000000000"), now),
            Role::Guest { waiting: true }
        );
        assert_eq!(
            meetings.role(&m.room, Some(""), now),
            Role::Guest { waiting: true }
        );
    }

    #[test]
    fn without_a_waiting_room_guests_come_straight_in() {
        let meetings = Meetings::default();
        let now = Instant::now();
        let m = meetings.create(false, now).expect("created");
        assert_eq!(
            meetings.role(&m.room, None, now),
            Role::Guest { waiting: false }
        );
        // A room no meeting was made for is open.
        assert_eq!(
            meetings.role(&RoomName::new("conseil"), Some(&m.host_key), now),
            Role::Guest { waiting: false }
        );
    }

    #[test]
    fn a_host_key_is_only_good_for_its_meeting_and_its_lifetime() {
        let meetings = Meetings::default();
        let now = Instant::now();
        let a = meetings.create(true, now).expect("created");
        let b = meetings.create(true, now).expect("created");
        assert_ne!(a.room, b.room);
        assert_eq!(
            meetings.role(&b.room, Some(&a.host_key), now),
            Role::Guest { waiting: true }
        );
        let later = now + MEETING_LIFETIME;
        assert_eq!(
            meetings.role(&a.room, Some(&a.host_key), later),
            Role::Guest { waiting: false }
        );
    }

    #[test]
    fn meeting_names_read_like_abc_defg_hij() {
        let name = meeting_name();
        let groups: Vec<&str> = name.split('-').collect();
        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            [3, 4, 3]
        );
        assert!(name.chars().all(|c| c == '-' || c.is_ascii_lowercase()));
    }
}
