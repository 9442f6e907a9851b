//! Meetings made from the web app: a room name drawn by the server, a host
//! key that only its creator holds, and whether guests wait to be let in.
//! The tokens the web app gets follow from this record, so the waiting room
//! is enforced by the grants the server signs, not by the page.
//!
//! Kept in the shared store, so that a meeting made through one signaling
//! replica is known to all of them.

use rand::Rng;
use salon_common::RoomName;
use salon_store::{MeetingRecord, Store, StoreError};
use std::sync::Arc;
use std::time::Duration;

/// How long a meeting link stays valid after it was made.
const MEETING_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// Who a token is for in a meeting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Holds the host key: joins at once and may admit, refuse, mute, remove.
    Host,
    /// Anyone else: waits to be admitted where the meeting says so.
    Guest { waiting: bool },
}

/// What the server made for a new meeting.
#[derive(Debug)]
pub struct NewMeeting {
    pub room: RoomName,
    pub host_key: String,
}

#[derive(Clone)]
pub struct Meetings {
    store: Arc<dyn Store>,
}

impl Meetings {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    pub async fn create(&self, waiting_room: bool) -> Result<NewMeeting, StoreError> {
        let host_key = random_key();
        let record = MeetingRecord {
            host_key: host_key.clone(),
            waiting_room,
        };
        // 26^10 names: a clash is rare, and two in a row rarer still.
        for _ in 0..4 {
            let room = RoomName::new(meeting_name());
            if self
                .store
                .create_meeting(&room, &record, MEETING_LIFETIME)
                .await?
            {
                return Ok(NewMeeting { room, host_key });
            }
        }
        Err(StoreError::Full)
    }

    /// The role of whoever asks for a token to `room`, holding `host_key`
    /// or not. A room no meeting was made for is an open room: no waiting.
    pub async fn role(&self, room: &RoomName, host_key: Option<&str>) -> Result<Role, StoreError> {
        let Some(meeting) = self.store.meeting(room).await? else {
            return Ok(Role::Guest { waiting: false });
        };
        Ok(match host_key {
            Some(key) if same_secret(key.as_bytes(), meeting.host_key.as_bytes()) => Role::Host,
            _ => Role::Guest {
                waiting: meeting.waiting_room,
            },
        })
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
    use salon_store::MemoryStore;

    fn meetings() -> Meetings {
        Meetings::new(Arc::new(MemoryStore::new()))
    }

    async fn role(m: &Meetings, room: &RoomName, key: Option<&str>) -> Role {
        m.role(room, key).await.expect("store")
    }

    #[tokio::test]
    async fn the_host_key_makes_a_host_and_anyone_else_waits() {
        let meetings = meetings();
        let m = meetings.create(true).await.expect("created");
        assert_eq!(
            role(&meetings, &m.room, Some(&m.host_key)).await,
            Role::Host
        );
        let waits = Role::Guest { waiting: true };
        assert_eq!(role(&meetings, &m.room, None).await, waits);
        let wrong = "00000000000000000000000000000000";
        assert_eq!(role(&meetings, &m.room, Some(wrong)).await, waits);
        assert_eq!(role(&meetings, &m.room, Some("")).await, waits);
    }

    #[tokio::test]
    async fn without_a_waiting_room_guests_come_straight_in() {
        let meetings = meetings();
        let m = meetings.create(false).await.expect("created");
        let open = Role::Guest { waiting: false };
        assert_eq!(role(&meetings, &m.room, None).await, open);
        // A room no meeting was made for is open.
        let other = RoomName::new("conseil");
        assert_eq!(role(&meetings, &other, Some(&m.host_key)).await, open);
    }

    #[tokio::test]
    async fn a_host_key_is_only_good_for_its_meeting() {
        let meetings = meetings();
        let a = meetings.create(true).await.expect("created");
        let b = meetings.create(true).await.expect("created");
        assert_ne!(a.room, b.room);
        assert_eq!(
            role(&meetings, &b.room, Some(&a.host_key)).await,
            Role::Guest { waiting: true }
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
