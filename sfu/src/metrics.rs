//! What a node tells Prometheus: how long a packet spends inside Salon,
//! what its media workers send, what it hosts, and the process's CPU and
//! memory (read from /proc at each scrape: the prometheus crate's own
//! process collector counts CPU in whole seconds). The workers count into shared atomics; the forwarding delay
//! goes through a per-worker copy of the histogram (`DelayRecorder`) so
//! that the hot path touches no shared cache line per packet.

use prometheus::{
    Counter, Encoder, Histogram, HistogramOpts, IntCounter, IntGauge, Registry, TextEncoder,
    local::LocalHistogram,
};
use std::time::{Duration, Instant};

/// Forwarding delays worth telling apart: tens of microseconds when the
/// worker is idle, milliseconds when a burst's copies queue behind each
/// other, more when the worker falls behind.
const DELAY_BUCKETS: &[f64] = &[
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1,
];
/// A worker adds its delays to the shared histogram this often.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot set up the metrics: {0}")]
    Setup(#[from] prometheus::Error),
    #[error("cannot encode the metrics: {0}")]
    Encode(String),
}

/// A node's metrics, registered in a registry of its own (not the crate's
/// global one), so that two nodes in one process (tests) do not collide.
#[derive(Clone)]
pub struct NodeMetrics {
    registry: Registry,
    pub(crate) forward_delay: Histogram,
    pub(crate) datagrams_sent: IntCounter,
    pub(crate) rooms: IntGauge,
    pub(crate) participants: IntGauge,
    pub(crate) tracks: IntGauge,
    cpu: Counter,
    /// Held while the CPU counter is brought up to date: two scrapes at
    /// once would both add the same interval.
    cpu_update: std::sync::Arc<std::sync::Mutex<()>>,
    rss: IntGauge,
}

impl NodeMetrics {
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let forward_delay = Histogram::with_opts(
            HistogramOpts::new(
                "salon_forward_delay_seconds",
                "From when the kernel received a UDP datagram (or, where it does not say, \
                 when the worker read it; for ICE-TCP, when the read that completed the frame \
                 returned) to when the last datagram it caused (its copies \
                 to subscribers, a retransmission, a reply) was sent or queued for ICE-TCP",
            )
            .buckets(DELAY_BUCKETS.to_vec()),
        )?;
        let datagrams_sent = IntCounter::new(
            "salon_datagrams_sent_total",
            "UDP and ICE-TCP datagrams the media workers sent",
        )?;
        let rooms = IntGauge::new("salon_rooms", "Rooms open on this node")?;
        let participants = IntGauge::new("salon_participants", "Participants on this node")?;
        let tracks = IntGauge::new("salon_published_tracks", "Tracks published on this node")?;
        registry.register(Box::new(forward_delay.clone()))?;
        registry.register(Box::new(datagrams_sent.clone()))?;
        registry.register(Box::new(rooms.clone()))?;
        registry.register(Box::new(participants.clone()))?;
        registry.register(Box::new(tracks.clone()))?;
        let cpu = Counter::new(
            "process_cpu_seconds_total",
            "User and system CPU time of the process",
        )?;
        let rss = IntGauge::new("process_resident_memory_bytes", "Resident memory")?;
        registry.register(Box::new(cpu.clone()))?;
        registry.register(Box::new(rss.clone()))?;
        Ok(Self {
            registry,
            forward_delay,
            datagrams_sent,
            rooms,
            participants,
            tracks,
            cpu,
            cpu_update: Default::default(),
            rss,
        })
    }

    /// The text exposition format, as `/metrics` serves it, with the
    /// process's figures read now (left as they were where /proc has none).
    pub fn render(&self) -> Result<String, MetricsError> {
        {
            let _one_at_a_time = self
                .cpu_update
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Ok(now) = salon_common::procstat::sample("self") {
                // A counter only goes up: add what was used since the last read.
                let used = now.cpu.as_secs_f64() - self.cpu.get();
                if used > 0.0 {
                    self.cpu.inc_by(used);
                }
                self.rss
                    .set(i64::try_from(now.rss_bytes).unwrap_or(i64::MAX));
            }
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(|e| MetricsError::Encode(e.to_string()))?;
        String::from_utf8(out).map_err(|e| MetricsError::Encode(e.to_string()))
    }
}

/// One worker's forwarding delays, added to the node's histogram once a
/// second, not per packet.
pub(crate) struct DelayRecorder {
    local: LocalHistogram,
    flushed: Instant,
}

impl DelayRecorder {
    pub(crate) fn new(histogram: &Histogram, now: Instant) -> Self {
        Self {
            local: histogram.local(),
            flushed: now,
        }
    }

    /// A datagram whose output was all handed to the kernel at `now`,
    /// `delay` after it arrived.
    pub(crate) fn record(&mut self, delay: Duration, now: Instant) {
        self.local.observe(delay.as_secs_f64());
        self.tick(now);
    }

    /// When the worker should wake to flush, if delays are waiting: a
    /// worker that went quiet still shows its last ones.
    pub(crate) fn due(&self) -> Option<Instant> {
        // The local copy counts what it holds, and a flush empties it.
        (self.local.get_sample_count() > 0).then(|| self.flushed + FLUSH_INTERVAL)
    }

    /// Flushes if a second has passed since the last flush.
    pub(crate) fn tick(&mut self, now: Instant) {
        if now.saturating_duration_since(self.flushed) >= FLUSH_INTERVAL {
            self.local.flush();
            self.flushed = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_reach_the_exposition_once_flushed() {
        let metrics = NodeMetrics::new().expect("metrics");
        let t0 = Instant::now();
        let mut recorder = DelayRecorder::new(&metrics.forward_delay, t0);
        recorder.record(Duration::from_micros(300), t0);
        recorder.record(Duration::from_millis(3), t0 + Duration::from_millis(3));
        // Not yet: under a second since the last flush; the worker is
        // asked to wake for it.
        assert_eq!(metrics.forward_delay.get_sample_count(), 0);
        assert_eq!(recorder.due(), Some(t0 + FLUSH_INTERVAL));
        recorder.record(
            Duration::from_millis(1500),
            t0 + Duration::from_millis(1500),
        );
        assert_eq!(metrics.forward_delay.get_sample_count(), 3);
        assert_eq!(recorder.due(), None);
        // Some CPU time to count (the clock ticks in 10 ms).
        let spin = Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        metrics.datagrams_sent.inc_by(7);
        metrics.participants.set(2);
        let text = metrics.render().expect("render");
        assert!(
            text.contains("salon_forward_delay_seconds_bucket{le=\"0.0005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("salon_forward_delay_seconds_bucket{le=\"0.005\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("salon_forward_delay_seconds_count 3"),
            "{text}"
        );
        assert!(text.contains("salon_datagrams_sent_total 7"), "{text}");
        assert!(text.contains("salon_participants 2"), "{text}");
        // This test's own CPU time, in fractions of a second.
        let cpu: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("process_cpu_seconds_total "))
            .and_then(|v| v.parse().ok())
            .expect("process_cpu_seconds_total");
        assert!(cpu > 0.0, "{cpu}");
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
    }

    #[test]
    fn two_nodes_in_one_process_keep_their_own() {
        let a = NodeMetrics::new().expect("a");
        let b = NodeMetrics::new().expect("b");
        a.datagrams_sent.inc();
        assert_eq!(b.datagrams_sent.get(), 0);
    }
}
