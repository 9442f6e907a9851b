//! Connection quality, as LiveKit reports it to clients (the bars next to a
//! name, livekit-client's `participant.connectionQuality`). Sans-IO: the
//! session samples its connections' RTP statistics now and then and feeds
//! the counters here; this says how the link did since the last sample.
//!
//! A participant's quality is the worse of its two directions: what reaches
//! the server of what it sends (packets lost on its uplink, from the
//! sequence numbers the server saw) and what reaches it of what the server
//! sends (the loss its receiver reports give).

use livekit_protocol::ConnectionQuality;

/// Loss at or below which a link is excellent, and above which it is poor.
/// Video conceals 2 % well; past 10 % freezes and robotic audio are common.
const EXCELLENT_LOSS: f64 = 0.02;
const POOR_LOSS: f64 = 0.10;

/// Fewer packets than this in a window say too little to judge loss by:
/// one lost packet of ten is chance, not a bad link.
const MIN_PACKETS: u64 = 50;

/// What a session read off its connections for one window.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    /// Packets received and lost so far on the publisher connection, over
    /// all its incoming streams (cumulative counters).
    pub uplink_received: u64,
    pub uplink_lost: u64,
    /// The worst fraction lost the client's receiver reports gave for the
    /// streams the server sends it, if it reported any.
    pub downlink_loss: Option<f64>,
    /// False when either connection is disconnected or failed.
    pub connected: bool,
}

/// The quality of one participant's link, window after window.
#[derive(Debug, Default)]
pub struct QualityMeter {
    last: Option<(u64, u64)>,
}

impl QualityMeter {
    /// The quality since the previous sample, and a score from 1 to 5 as
    /// LiveKit gives (a MOS-like number).
    pub fn update(&mut self, sample: Sample) -> (ConnectionQuality, f32) {
        let counters = (sample.uplink_received, sample.uplink_lost);
        let previous = self.last.replace(counters);
        if !sample.connected {
            return (ConnectionQuality::Lost, 0.0);
        }
        let uplink_loss = previous.and_then(|(received, lost)| {
            // Counters only grow; a smaller one is a new stream, not loss.
            let received = counters.0.checked_sub(received)?;
            let lost = counters.1.checked_sub(lost)?;
            let total = received + lost;
            (total >= MIN_PACKETS).then(|| lost as f64 / total as f64)
        });
        let loss = uplink_loss
            .unwrap_or(0.0)
            .max(sample.downlink_loss.unwrap_or(0.0));
        grade(loss)
    }
}

fn grade(loss: f64) -> (ConnectionQuality, f32) {
    // 5 at no loss, falling by 2 points per 10 % lost, never below 1.
    let score = (5.0 - 20.0 * loss).clamp(1.0, 5.0) as f32;
    let quality = if loss <= EXCELLENT_LOSS {
        ConnectionQuality::Excellent
    } else if loss <= POOR_LOSS {
        ConnectionQuality::Good
    } else {
        ConnectionQuality::Poor
    };
    (quality, score)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(received: u64, lost: u64, downlink: Option<f64>) -> Sample {
        Sample {
            uplink_received: received,
            uplink_lost: lost,
            downlink_loss: downlink,
            connected: true,
        }
    }

    #[test]
    fn uplink_loss_is_judged_per_window_not_since_the_start() {
        let mut m = QualityMeter::default();
        assert_eq!(m.update(sample(0, 0, None)).0, ConnectionQuality::Excellent);
        // 30 % lost in the first window.
        assert_eq!(m.update(sample(700, 300, None)).0, ConnectionQuality::Poor);
        // The next window loses 5 %: good, though the total is still 16 %.
        assert_eq!(m.update(sample(1650, 350, None)).0, ConnectionQuality::Good);
        // Then none: excellent again.
        let (q, score) = m.update(sample(2650, 350, None));
        assert_eq!(q, ConnectionQuality::Excellent);
        assert!((score - 5.0).abs() < f32::EPSILON);
    }

    #[test]
    fn the_worse_direction_decides() {
        let mut m = QualityMeter::default();
        m.update(sample(0, 0, None));
        assert_eq!(
            m.update(sample(1000, 0, Some(0.25))).0,
            ConnectionQuality::Poor
        );
        assert_eq!(
            m.update(sample(2000, 0, Some(0.05))).0,
            ConnectionQuality::Good
        );
        assert_eq!(
            m.update(sample(3000, 0, Some(0.0))).0,
            ConnectionQuality::Excellent
        );
    }

    #[test]
    fn a_few_packets_lost_of_a_few_sent_is_not_a_bad_link() {
        let mut m = QualityMeter::default();
        m.update(sample(0, 0, None));
        assert_eq!(m.update(sample(8, 2, None)).0, ConnectionQuality::Excellent);
    }

    #[test]
    fn a_disconnected_link_is_lost_and_counters_that_restart_are_not_loss() {
        let mut m = QualityMeter::default();
        m.update(sample(5000, 10, None));
        let lost = Sample {
            connected: false,
            ..sample(5000, 10, None)
        };
        assert_eq!(m.update(lost), (ConnectionQuality::Lost, 0.0));
        assert_eq!(
            m.update(sample(100, 0, None)).0,
            ConnectionQuality::Excellent
        );
    }
}
