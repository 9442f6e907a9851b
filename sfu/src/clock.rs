//! Media clocks, for lip sync.
//!
//! A receiver plays a participant's audio and video in step by their sender
//! reports: each maps the stream's RTP time to NTP time, and sound and
//! picture with the same NTP time were captured together. A publisher's
//! reports map RTP time to capture time. Salon rewrites timestamps, so it
//! translates those reports for its subscribers: the same line, moved by
//! the rewrite's timestamp offset in RTP time and by the distance between
//! the publisher's clock and Salon's in NTP time. Reports made up from when
//! Salon forwarded each stream's packets would put the encoders' delays in
//! the line: a camera encoded 100 ms slower than the microphone would look
//! captured 100 ms later than it was, and its picture would lag the voice.
//! Sans-IO: times come in as arguments.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// NTP time: 64-bit fixed point, seconds since 1900 and a 32-bit fraction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ntp(pub u64);

/// Seconds from 1900 (NTP's epoch) to 1970 (Unix's).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

impl Ntp {
    pub fn from_wall(wall: SystemTime) -> Self {
        let since = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
        let seconds = since.as_secs() + NTP_UNIX_OFFSET;
        let fraction = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
        Ntp((seconds << 32) | fraction)
    }

    /// `self - earlier` in units of 2^-32 s, signed: NTP times are compared
    /// within 68 years of each other.
    pub fn since(self, earlier: Ntp) -> i64 {
        self.0.wrapping_sub(earlier.0) as i64
    }

    /// `units` of 2^-32 s later (earlier if negative).
    pub fn plus(self, units: i64) -> Ntp {
        Ntp(self.0.wrapping_add_signed(units))
    }
}

/// `duration` in units of 2^-32 s.
pub fn ntp_units(duration: Duration) -> i64 {
    ((duration.as_nanos() << 32) / 1_000_000_000).min(i64::MAX as u128) as i64
}

/// RTP ticks at `rate` Hz in `units` of 2^-32 s, to the nearest.
fn ticks(units: i64, rate: u32) -> i64 {
    ((i128::from(units) * i128::from(rate) + (1 << 31)) >> 32) as i64
}

/// A stream's line from RTP time to NTP time, as a sender report draws
/// it: RTP time `rtp` is NTP time `ntp`, and the RTP clock runs at `rate`
/// Hz.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaClock {
    pub ntp: Ntp,
    pub rtp: u32,
    pub rate: u32,
}

impl MediaClock {
    /// The NTP time of RTP time `rtp`. RTP times are compared within 2^31
    /// ticks of each other (6.6 hours at 90 kHz); the reports it comes
    /// from are seconds old.
    pub fn ntp_of(&self, rtp: u32) -> Ntp {
        let ticks = i128::from(rtp.wrapping_sub(self.rtp) as i32);
        let rate = i128::from(self.rate.max(1));
        // To the nearest unit, so that `rtp_at` finds the same tick again.
        let units = ((ticks << 32) + rate / 2).div_euclid(rate);
        self.ntp.plus(units as i64)
    }

    /// The RTP time at NTP time `ntp`.
    pub fn rtp_at(&self, ntp: Ntp) -> u32 {
        self.rtp
            .wrapping_add(ticks(ntp.since(self.ntp), self.rate) as u32)
    }

    /// The same line with its NTP times `units` of 2^-32 s later and its
    /// RTP times `rtp_offset` ticks later (modulo 2^32).
    pub fn shifted(self, units: i64, rtp_offset: u32) -> MediaClock {
        MediaClock {
            ntp: self.ntp.plus(units),
            rtp: self.rtp.wrapping_add(rtp_offset),
            rate: self.rate,
        }
    }

    /// RTP ticks from `earlier` on `earlier_clock` to `rtp` on this one:
    /// how far apart in media time two packets were captured, from the
    /// reports of their streams (which come from one clock, the
    /// publisher's).
    pub fn ticks_since(&self, rtp: u32, earlier_clock: &MediaClock, earlier: u32) -> i64 {
        ticks(
            self.ntp_of(rtp).since(earlier_clock.ntp_of(earlier)),
            self.rate,
        )
    }
}

/// How far ahead of a publisher's NTP clock Salon's wall clock runs, plus
/// the one-way delay of its reports: what moves the lines of all its
/// streams onto Salon's clock. One per publisher connection, so that
/// whatever it is, it is the same for its audio and video and their
/// relative timing stays the publisher's.
#[derive(Debug, Default, Clone, Copy)]
pub struct ClockOffset {
    units: Option<i64>,
}

/// Each report moves the offset by this fraction of its difference: a
/// report held up in a queue must not shift the lines by its delay, and
/// clocks drift apart by a few parts per million only.
const OFFSET_SMOOTHING: i64 = 16;
/// A difference of more than a second (in units of 2^-32 s) is a step.
const OFFSET_STEP: u64 = 1 << 32;

impl ClockOffset {
    /// A report stamped `sent` by the publisher arrived at `arrived` on
    /// Salon's clock.
    pub fn observe(&mut self, sent: Ntp, arrived: Ntp) {
        let sample = arrived.since(sent);
        // Saturating: the times are the peer's to choose.
        let change = sample.saturating_sub(self.units.unwrap_or(sample));
        self.units = Some(match self.units {
            // The publisher's clock was set, or the first report waited
            // long somewhere: start again rather than creep there.
            Some(current) if change.unsigned_abs() <= OFFSET_STEP => {
                current.saturating_add(change / OFFSET_SMOOTHING)
            }
            _ => sample,
        });
    }

    /// In units of 2^-32 s; `None` before the first report.
    pub fn units(&self) -> Option<i64> {
        self.units
    }
}

#[cfg(test)]
#[path = "clock_tests.rs"]
mod tests;
