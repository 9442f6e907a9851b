//! Types that both the signaling service and the SFU need: identifiers and
//! the LiveKit defaults they share.

mod ids;

pub use ids::{ParticipantIdentity, ParticipantSid, RoomName, RoomSid, TrackSid, new_sid};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// LiveKit closes a room this long after its last participant leaves
/// (`empty_timeout`); integrators rely on the same default here.
pub const DEFAULT_EMPTY_TIMEOUT: Duration = Duration::from_secs(300);

/// Largest signal message a peer may send (LiveKit's limit).
pub const MAX_SIGNAL_MESSAGE_BYTES: usize = 2 * 1024 * 1024;

/// Largest participant metadata, in bytes (LiveKit's limit).
pub const MAX_METADATA_BYTES: usize = 512 * 1024;

/// Longest participant name or identity, in bytes (LiveKit's limit).
pub const MAX_NAME_BYTES: usize = 256;

/// The version reported to clients in `ServerInfo`.
pub const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Wall-clock milliseconds since the Unix epoch, for the timestamps LiveKit's
/// messages carry (join times, pongs). Zero if the clock is before 1970.
pub fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
