//! Probing a subscriber's link before its video moves up. When the
//! bandwidth estimate keeps a subscriber below the layer it asked for, the
//! connection sends extra packets for a moment, so that it carries as much
//! as the larger layer would, and the transport-wide feedback for them
//! says whether the link took it: packets that left at the probe's rate
//! and arrived at that rate, without loss, prove the room is there; a
//! queue (arrivals spread out) or loss says it is not. Proven room raises
//! the estimate at once; without probing, GCC's estimate only creeps up
//! (8 % a second, then some 60 kb/s a second near where it last fell) and
//! moves the video up untested. Sans-IO: the caller sends the padding and
//! feeds the feedback.
//!
//! The extra packets are RTP padding on the RTX stream of a video track
//! (`Outbound::pad`). Copies of media packets, the simpler choice, do not
//! work: SRTP's replay protection drops them before the receiver's
//! transport-wide feedback counts them.

use rtc::interceptor::PacketReport;
use std::time::{Duration, Instant};

/// How long a probe sends. Long enough for a few feedback reports to
/// cover it (browsers send one every 50–100 ms), short enough that a link
/// too small for it is overloaded only briefly.
pub const PROBE_DURATION: Duration = Duration::from_millis(500);
/// How long after a probe its feedback is awaited before the verdict.
const SETTLE: Duration = Duration::from_millis(400);
/// The smallest extra rate worth probing for: below it GCC's own growth
/// gets there soon enough.
const MIN_EXTRA: u64 = 100_000;
/// The probe aims this much above the rate it must prove (in tenths), so
/// that a link that carries the goal shows it with room to spare.
const HEADROOM_TENTHS: u64 = 12;
/// Fewer packets than this in the probe's window prove nothing.
const MIN_PACKETS: u32 = 10;
/// Loss in the window above this fraction (in percent) is congestion.
const MAX_LOSS_PERCENT: u32 = 10;
/// Arrivals slower than this share (in percent) of the sending rate mean
/// a queue grew: the link is smaller than what was sent.
const MIN_DELIVERY_PERCENT: u64 = 85;
/// Waits before probing again after a probe that found congestion: twice
/// as long after each one, up to the last.
const FIRST_BACKOFF: Duration = Duration::from_secs(3);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// After a probe that proved room, the next one waits for the layers to
/// move up and settle.
const AFTER_SUCCESS: Duration = Duration::from_secs(2);

/// What a probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeVerdict {
    /// The link delivered this many bits per second without congestion.
    Carried(u64),
    /// A queue grew or packets were lost: no more room than before.
    Congested,
    /// Too little feedback to tell.
    Unknown,
}

/// What the feedback said about the packets that left during the probe.
#[derive(Debug, Default, Clone, Copy)]
struct Window {
    packets: u32,
    lost: u32,
    sent_bytes: u64,
    arrived_bytes: u64,
    first_departure: Option<Instant>,
    last_departure: Option<Instant>,
    /// The last packet's size is not part of the sending rate: it left at
    /// `last_departure`, after the span measured.
    last_size: u64,
    first_arrival: Option<Duration>,
    last_arrival: Option<Duration>,
    first_arrived_size: u64,
}

impl Window {
    fn add(&mut self, report: &PacketReport) {
        self.packets += 1;
        self.sent_bytes += report.size as u64;
        if self.first_departure.is_none_or(|d| report.departure < d) {
            self.first_departure = Some(report.departure);
        }
        if self.last_departure.is_none_or(|d| report.departure >= d) {
            self.last_departure = Some(report.departure);
            self.last_size = report.size as u64;
        }
        match report.arrival.filter(|_| report.arrived) {
            Some(arrival) => {
                self.arrived_bytes += report.size as u64;
                if self.first_arrival.is_none_or(|a| arrival < a) {
                    self.first_arrival = Some(arrival);
                    self.first_arrived_size = report.size as u64;
                }
                if self.last_arrival.is_none_or(|a| arrival > a) {
                    self.last_arrival = Some(arrival);
                }
            }
            None => self.lost += 1,
        }
    }

    fn verdict(&self) -> ProbeVerdict {
        let (Some(d0), Some(d1), Some(a0), Some(a1)) = (
            self.first_departure,
            self.last_departure,
            self.first_arrival,
            self.last_arrival,
        ) else {
            return ProbeVerdict::Unknown;
        };
        let sent_span = d1.saturating_duration_since(d0).as_micros() as u64;
        let arrival_span = a1.saturating_sub(a0).as_micros() as u64;
        if self.packets < MIN_PACKETS || sent_span == 0 || arrival_span == 0 {
            return ProbeVerdict::Unknown;
        }
        if self.lost * 100 > self.packets * MAX_LOSS_PERCENT {
            return ProbeVerdict::Congested;
        }
        let sent_rate = (self.sent_bytes - self.last_size) * 8 * 1_000_000 / sent_span;
        let arrived_rate =
            (self.arrived_bytes - self.first_arrived_size) * 8 * 1_000_000 / arrival_span;
        if arrived_rate * 100 < sent_rate * MIN_DELIVERY_PERCENT {
            return ProbeVerdict::Congested;
        }
        // Never more than was sent: a burst of arrivals after a delay
        // would otherwise look like a larger link.
        ProbeVerdict::Carried(arrived_rate.min(sent_rate))
    }
}

#[derive(Debug, Clone, Copy)]
struct Probe {
    start: Instant,
    /// Extra bits per second sent on top of the media.
    rate: u64,
    /// Extra bytes sent so far.
    sent: u64,
    /// Stopped before its time: a queue built up.
    stopped: bool,
    window: Window,
}

/// One connection's probes: at most one at a time, spaced out after those
/// that found congestion.
#[derive(Debug)]
pub struct Prober {
    probe: Option<Probe>,
    not_before: Option<Instant>,
    backoff: Duration,
}

impl Default for Prober {
    fn default() -> Self {
        Self {
            probe: None,
            not_before: None,
            backoff: FIRST_BACKOFF,
        }
    }
}

impl Prober {
    /// Starts a probe if none runs and none failed lately. The link must
    /// show it carries `goal` bits per second while `media` is what the
    /// connection sends anyway; returns whether a probe started.
    pub fn start(&mut self, now: Instant, media: u64, goal: u64) -> bool {
        if self.probe.is_some() || self.not_before.is_some_and(|t| now < t) {
            return false;
        }
        let target = goal.saturating_mul(HEADROOM_TENTHS) / 10;
        let rate = target.saturating_sub(media).max(MIN_EXTRA);
        self.probe = Some(Probe {
            start: now,
            rate,
            sent: 0,
            stopped: false,
            window: Window::default(),
        });
        true
    }

    /// Whether a probe is sending now.
    pub fn is_sending(&self, now: Instant) -> bool {
        self.probe
            .is_some_and(|p| !p.stopped && now.saturating_duration_since(p.start) < PROBE_DURATION)
    }

    /// Stops a probe's padding at once: the link's queue is building
    /// (`trendline.rs`), and the rest of the probe would only deepen it.
    /// Its verdict is `Congested`.
    pub fn stop_sending(&mut self) {
        if let Some(p) = self.probe.as_mut() {
            p.stopped = true;
        }
    }

    /// Bytes the probe is behind on at `now`: send about this much more.
    pub fn due(&self, now: Instant) -> u64 {
        let Some(p) = self.probe.filter(|_| self.is_sending(now)) else {
            return 0;
        };
        let elapsed = now.saturating_duration_since(p.start).as_micros() as u64;
        (p.rate * elapsed / 8 / 1_000_000).saturating_sub(p.sent)
    }

    /// Counts `bytes` sent for the probe.
    pub fn sent(&mut self, bytes: usize) {
        if let Some(p) = self.probe.as_mut() {
            p.sent += bytes as u64;
        }
    }

    /// Takes the feedback about packets sent (media and probe alike): those
    /// that left while the probe was sending are its evidence.
    pub fn observe(&mut self, reports: &[PacketReport]) {
        let Some(p) = self.probe.as_mut() else {
            return;
        };
        let end = p.start + PROBE_DURATION;
        for report in reports
            .iter()
            .filter(|r| r.departure >= p.start && r.departure < end)
        {
            p.window.add(report);
        }
    }

    /// The probe's verdict once its feedback had time to come in; sets
    /// when the next probe may start.
    pub fn conclude(&mut self, now: Instant) -> Option<ProbeVerdict> {
        let p = self.probe?;
        if now < p.start + PROBE_DURATION + SETTLE {
            return None;
        }
        self.probe = None;
        // Stopped for a queue building: that is the answer.
        let verdict = if p.stopped {
            ProbeVerdict::Congested
        } else {
            p.window.verdict()
        };
        match verdict {
            ProbeVerdict::Carried(_) => {
                self.backoff = FIRST_BACKOFF;
                self.not_before = Some(now + AFTER_SUCCESS);
            }
            // Nothing sent (no stream to pad): nothing learnt about the
            // link either, so no reason to wait longer next time.
            ProbeVerdict::Unknown if p.sent == 0 => {
                self.not_before = Some(now + FIRST_BACKOFF);
            }
            ProbeVerdict::Congested | ProbeVerdict::Unknown => {
                self.not_before = Some(now + self.backoff);
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            }
        }
        Some(verdict)
    }
}

#[cfg(test)]
#[path = "probe_tests.rs"]
mod tests;
