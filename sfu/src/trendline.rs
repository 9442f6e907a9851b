//! A queue building up on a subscriber's link, seen early, from the trend
//! of its packets' one-way delay (sans-IO).
//!
//! webrtc-rs's GCC (Pion's design) filters each group's change in delay
//! and compares it with a threshold of 12.5 ms. A link overloaded by half
//! again what it carries delays each 30 fps frame by a few milliseconds
//! more than the one before: under that threshold, so the queue grows
//! until the bottleneck's buffer overflows, with seconds of delay on the
//! way, and then the loss drags the estimate to its floor and the picture
//! freezes (a viewer behind a 900 kb/s link, `bottleneck.test.js`). This
//! is libwebrtc's answer, which browsers run on their own uplinks: fit a
//! line to the accumulated delay of the last groups, scale its slope by
//! how many groups it rests on, and compare that with a threshold that
//! adapts. An overuse it finds is answered in `outbound.rs` by cutting the
//! estimate to a little under what the link delivered.

use rtc::interceptor::PacketReport;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Packets sent within this of a group's first belong to it.
const GROUP_SPAN: Duration = Duration::from_millis(5);
/// A packet that arrives within this of its group's last, and less late
/// than that one, was held in a queue with it: the same group.
const BURST_SPAN: Duration = Duration::from_millis(5);
/// Groups the line is fitted to.
const WINDOW: usize = 20;
/// Smoothing of the accumulated delay before fitting.
const SMOOTHING: f64 = 0.9;
/// The slope counts for at most this many groups behind it...
const MAX_DELTAS: f64 = 60.0;
/// ... times this.
const TREND_GAIN: f64 = 4.0;
/// The threshold starts here and stays within these bounds, in ms.
const INITIAL_THRESHOLD: f64 = 12.5;
const MIN_THRESHOLD: f64 = 6.0;
const MAX_THRESHOLD: f64 = 600.0;
/// How fast the threshold follows the trend, per ms, when the trend is
/// outside it (up) and inside it (down); a trend further out than
/// `OUTLIER` ms is not followed at all.
const K_UP: f64 = 0.0087;
const K_DOWN: f64 = 0.039;
const OUTLIER: f64 = 15.0;
/// The trend must stay over the threshold this long (ms of send time),
/// over two groups at least, and still rising, to be an overuse.
const OVERUSE_TIME_MS: f64 = 10.0;
/// What "delivered lately" means, by arrival time: short, so that a queue
/// found soon after the link shrank is not measured at its old rate.
const DELIVERY_WINDOW: Duration = Duration::from_millis(300);
/// Fewer packets than this in the window say too little about the rate.
const MIN_DELIVERED_PACKETS: usize = 10;
/// A bound on the window's packets, whatever the peer reports.
const MAX_DELIVERED_PACKETS: usize = 10_000;
/// Packets arriving together after a queue let them go are one group for
/// at most this long.
const MAX_BURST: Duration = Duration::from_millis(100);
/// Arrival times that move this much further than the send times (or go
/// back) mean the receiver's clock jumped (its feedback's reference time
/// wrapped, or the peer says so): everything learnt is forgotten.
const CLOCK_JUMP: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Normal,
    Overusing,
    Underusing,
}

#[derive(Debug, Clone, Copy)]
struct Group {
    first_sent: Instant,
    last_sent: Instant,
    first_arrived: Duration,
    /// The latest arrival in the group, on the receiver's clock.
    arrived: Duration,
}

impl Group {
    fn of(sent: Instant, arrived: Duration) -> Self {
        Self {
            first_sent: sent,
            last_sent: sent,
            first_arrived: arrived,
            arrived,
        }
    }
}

/// One subscriber connection's delay trend.
#[derive(Debug)]
pub struct Trendline {
    current: Option<Group>,
    previous: Option<Group>,
    first_arrival: Option<Duration>,
    deltas: u32,
    accumulated: f64,
    smoothed: f64,
    /// (arrival ms since the first, smoothed accumulated delay ms).
    history: VecDeque<(f64, f64)>,
    threshold: f64,
    threshold_updated: Option<f64>,
    over_ms: Option<f64>,
    over_count: u32,
    last_trend: f64,
    usage: Usage,
    /// Whether an overuse was found in the reports `observe` last took.
    found: bool,
    /// Arrived packets in the delivery window: arrival, bytes.
    delivered: VecDeque<(Duration, usize)>,
}

impl Default for Trendline {
    fn default() -> Self {
        Self {
            current: None,
            previous: None,
            first_arrival: None,
            deltas: 0,
            accumulated: 0.0,
            smoothed: 0.0,
            history: VecDeque::with_capacity(WINDOW + 1),
            threshold: INITIAL_THRESHOLD,
            threshold_updated: None,
            over_ms: None,
            over_count: 0,
            last_trend: 0.0,
            usage: Usage::Normal,
            found: false,
            delivered: VecDeque::new(),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Signed `a - b` in ms.
fn ms_between(a: Instant, b: Instant) -> f64 {
    match a.checked_duration_since(b) {
        Some(d) => ms(d),
        None => -ms(b.duration_since(a)),
    }
}

impl Trendline {
    /// Takes the reports of one transport-wide feedback, in send order;
    /// returns whether they showed an overuse (a queue building up) afresh.
    /// `usage` says how the link is used after them.
    pub fn observe(&mut self, reports: &[PacketReport]) -> bool {
        self.found = false;
        for report in reports {
            let Some(arrived) = report.arrival else {
                continue;
            };
            self.note_delivery(arrived, report.size);
            self.add(report.departure, arrived);
        }
        self.found
    }

    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// Bits per second the link delivered over the last `DELIVERY_WINDOW` of
    /// arrivals, if enough packets arrived to tell.
    pub fn delivered_rate(&self) -> Option<u64> {
        let (first, _) = *self.delivered.front()?;
        let (last, _) = *self.delivered.back()?;
        if self.delivered.len() < MIN_DELIVERED_PACKETS {
            return None;
        }
        let span = last.saturating_sub(first).max(Duration::from_millis(100));
        // The first packet's bytes arrived before the span began.
        let bytes: usize = self.delivered.iter().skip(1).map(|&(_, b)| b).sum();
        Some((bytes as f64 * 8.0 / span.as_secs_f64()) as u64)
    }

    fn note_delivery(&mut self, arrived: Duration, size: usize) {
        if self.delivered.back().is_some_and(|&(last, _)| {
            arrived < last || self.delivered.len() >= MAX_DELIVERED_PACKETS
        }) {
            // The receiver's clock went back (or a peer floods): start over.
            self.delivered.clear();
        }
        self.delivered.push_back((arrived, size));
        while self
            .delivered
            .front()
            .is_some_and(|&(at, _)| arrived.saturating_sub(at) > DELIVERY_WINDOW)
        {
            self.delivered.pop_front();
        }
    }

    fn add(&mut self, sent: Instant, arrived: Duration) {
        let Some(group) = self.current.as_mut() else {
            self.current = Some(Group::of(sent, arrived));
            return;
        };
        if sent < group.first_sent {
            // Sent before the group began: reordered, and of a group done with.
            return;
        }
        let sent_since = sent.saturating_duration_since(group.last_sent);
        if arrived + CLOCK_JUMP < group.arrived || arrived > group.arrived + sent_since + CLOCK_JUMP
        {
            *self = Self {
                current: Some(Group::of(sent, arrived)),
                delivered: std::mem::take(&mut self.delivered),
                ..Self::default()
            };
            return;
        }
        let same_group = sent.saturating_duration_since(group.first_sent) <= GROUP_SPAN;
        let burst = {
            let arrival_delta = arrived.saturating_sub(group.arrived);
            let propagation = ms(arrival_delta) - ms_between(sent, group.last_sent);
            arrived >= group.arrived
                && arrival_delta <= BURST_SPAN
                && propagation < 0.0
                && arrived.saturating_sub(group.first_arrived) < MAX_BURST
        };
        if same_group || burst {
            group.last_sent = group.last_sent.max(sent);
            group.arrived = group.arrived.max(arrived);
            return;
        }
        let done = *group;
        *group = Group::of(sent, arrived);
        if let Some(previous) = self.previous.replace(done) {
            let send_delta = ms_between(done.last_sent, previous.last_sent);
            let arrival_delta = ms(done.arrived) - ms(previous.arrived);
            self.update(arrival_delta, send_delta, done.arrived);
        }
    }

    fn update(&mut self, arrival_delta: f64, send_delta: f64, arrived: Duration) {
        self.deltas = self.deltas.saturating_add(1).min(1000);
        let first = *self.first_arrival.get_or_insert(arrived);
        self.accumulated += arrival_delta - send_delta;
        self.smoothed = SMOOTHING * self.smoothed + (1.0 - SMOOTHING) * self.accumulated;
        let at = ms(arrived.saturating_sub(first));
        self.history.push_back((at, self.smoothed));
        if self.history.len() > WINDOW {
            self.history.pop_front();
        }
        if self.history.len() == WINDOW
            && let Some(slope) = slope(&self.history)
        {
            self.detect(slope, send_delta, at);
        }
    }

    fn detect(&mut self, trend: f64, send_delta: f64, now_ms: f64) {
        let modified = f64::from(self.deltas).min(MAX_DELTAS) * trend * TREND_GAIN;
        if modified > self.threshold {
            let over = match self.over_ms {
                None => send_delta / 2.0,
                Some(over) => over + send_delta,
            };
            self.over_ms = Some(over);
            self.over_count += 1;
            if over > OVERUSE_TIME_MS && self.over_count > 1 && trend >= self.last_trend {
                self.over_ms = Some(0.0);
                self.over_count = 0;
                self.usage = Usage::Overusing;
                self.found = true;
            }
        } else {
            self.over_ms = None;
            self.over_count = 0;
            self.usage = if modified < -self.threshold {
                Usage::Underusing
            } else {
                Usage::Normal
            };
        }
        self.last_trend = trend;
        self.adapt_threshold(modified, now_ms);
    }

    fn adapt_threshold(&mut self, modified: f64, now_ms: f64) {
        let last = *self.threshold_updated.get_or_insert(now_ms);
        self.threshold_updated = Some(now_ms);
        if modified.abs() > self.threshold + OUTLIER {
            return;
        }
        let k = if modified.abs() < self.threshold {
            K_DOWN
        } else {
            K_UP
        };
        let elapsed = (now_ms - last).clamp(0.0, 100.0);
        self.threshold += k * (modified.abs() - self.threshold) * elapsed;
        self.threshold = self.threshold.clamp(MIN_THRESHOLD, MAX_THRESHOLD);
    }
}

/// The least-squares slope of `points` (x, y); `None` if every x is the same.
fn slope(points: &VecDeque<(f64, f64)>) -> Option<f64> {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(sx, sy), &(x, y)| (sx + x, sy + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), &(x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    (den != 0.0).then(|| num / den)
}

#[cfg(test)]
#[path = "trendline_tests.rs"]
mod tests;
