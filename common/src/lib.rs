//! Types that both the signaling service and the SFU need: identifiers and
//! the LiveKit defaults they share.

mod ids;
pub mod netstat;
pub mod procstat;

pub use ids::{ParticipantIdentity, ParticipantSid, RoomName, RoomSid, TrackSid, new_sid};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// LiveKit closes a room this long after its last participant leaves
/// (`empty_timeout`); integrators rely on the same default here.
pub const DEFAULT_EMPTY_TIMEOUT: Duration = Duration::from_secs(300);

/// Largest signal message a peer may send (LiveKit's limit).
pub const MAX_SIGNAL_MESSAGE_BYTES: usize = 2 * 1024 * 1024;

/// Read buffer of a signal WebSocket. tungstenite's default (128 KiB) is
/// zeroed on reads, which made a quarter of a node's CPU in a 1 → 150
/// load test (perf); signal messages are small, and a larger one is read
/// in several goes.
pub const SIGNAL_READ_BUFFER_BYTES: usize = 4 * 1024;

/// Largest participant metadata, in bytes (LiveKit's limit).
pub const MAX_METADATA_BYTES: usize = 512 * 1024;

/// Longest participant name or identity, in bytes (LiveKit's limit).
pub const MAX_NAME_BYTES: usize = 256;

/// Salon's own version.
pub const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The LiveKit server version whose client protocol Salon speaks, reported
/// as the server's version: livekit-client turns features on by it (RPC
/// needs 1.8.0). Below 1.13.6, where VP9/AV1 simulcast by rid begins, which
/// Salon does not forward yet.
pub const LIVEKIT_COMPATIBLE_VERSION: &str = "1.9.0";

/// Wall-clock milliseconds since the Unix epoch, for the timestamps LiveKit's
/// messages carry (join times, pongs). Zero if the clock is before 1970.
pub fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Parses the durations operators type on the command line: `90s`, `30m`,
/// `6h`, `2d`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(format!("bad duration unit in {s:?}; use s, m, h or d")),
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_operator_units() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("6h"), Ok(Duration::from_secs(21600)));
        assert!(parse_duration("5w").is_err());
        assert!(parse_duration("h").is_err());
    }
}
