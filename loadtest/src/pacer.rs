//! A browser's send pacing, sans-IO. libwebrtc does not hand an encoded
//! frame to the network at once: its pacer releases the packets of all of a
//! camera's layers at a multiple of the target rate (the pacing factor,
//! 2.5 by default) in bursts every 5 ms. A keyframe, several times the size
//! of a delta frame, so spreads over tens of milliseconds. Without this the
//! generator would send every keyframe as one burst no browser sends, and
//! the latency of that burst's last copies would measure the burst rather
//! than the server.

use std::time::{Duration, Instant};

/// How often libwebrtc's pacer releases a burst.
pub(crate) const BURST_INTERVAL: Duration = Duration::from_millis(5);

/// A leaky bucket: packets leave while the bytes sent and not yet drained
/// at the pacing rate stay under one burst interval's worth.
#[derive(Debug)]
pub(crate) struct Pacer {
    /// Bytes per second.
    rate: f64,
    /// Bytes sent and not yet drained at `rate`, as of `at`.
    debt: f64,
    at: Option<Instant>,
}

impl Pacer {
    /// A pacer releasing `bits_per_second`; zero or less lets everything
    /// through at once.
    pub(crate) fn new(bits_per_second: f64) -> Self {
        Self {
            rate: bits_per_second.max(0.0) / 8.0,
            debt: 0.0,
            at: None,
        }
    }

    /// Whether a packet of `size` bytes may leave at `now`; if it may, it
    /// is counted as sent.
    pub(crate) fn admit(&mut self, now: Instant, size: usize) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        self.drain(now);
        if self.debt >= self.burst() {
            return false;
        }
        self.debt += size as f64;
        true
    }

    /// When the next packet may leave, if one is waiting.
    pub(crate) fn next_release(&self, now: Instant) -> Instant {
        if self.rate <= 0.0 {
            return now;
        }
        let excess = self.debt - self.burst();
        if excess <= 0.0 {
            return self.at.map_or(now, |at| at.max(now));
        }
        let at = self.at.unwrap_or(now);
        // A whole burst interval at least, as the real pacer sleeps between
        // bursts rather than waking per packet.
        let wait = Duration::from_secs_f64(excess / self.rate).max(BURST_INTERVAL);
        (at + wait).max(now)
    }

    fn drain(&mut self, now: Instant) {
        if let Some(at) = self.at
            && let Some(elapsed) = now.checked_duration_since(at)
        {
            self.debt = (self.debt - self.rate * elapsed.as_secs_f64()).max(0.0);
        }
        self.at = Some(self.at.map_or(now, |at| at.max(now)));
    }

    fn burst(&self) -> f64 {
        self.rate * BURST_INTERVAL.as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACKET: usize = 1200;

    /// Sends `packets` through the pacer as the send loop does, waking at
    /// `next_release`, and returns when each one left.
    fn play(pacer: &mut Pacer, start: Instant, packets: usize) -> Vec<Duration> {
        let mut now = start;
        let mut left = Vec::new();
        while left.len() < packets {
            if pacer.admit(now, PACKET) {
                left.push(now - start);
            } else {
                let next = pacer.next_release(now);
                assert!(next > now, "a refused packet must wait");
                now = next;
            }
        }
        left
    }

    #[test]
    fn a_keyframe_spreads_at_the_pacing_rate() {
        // 2.2 Mb/s of layers paced at 2.5 times: 687 500 bytes a second.
        let mut pacer = Pacer::new(2.5 * 2_200_000.0);
        let start = Instant::now();
        // A 1280-wide keyframe and its smaller layers: about 50 kB.
        let left = play(&mut pacer, start, 42);
        let last = left.last().copied().expect("packets");
        // 50 400 bytes at 687 500 a second take 73 ms; the first burst
        // leaves at once, so the last packet leaves a burst's worth earlier.
        assert!(
            (Duration::from_millis(60)..Duration::from_millis(80)).contains(&last),
            "{last:?}"
        );
        // Packets leave in bursts: at most one interval's bytes at a time.
        let first_burst = left.iter().filter(|t| t.is_zero()).count();
        assert!((2..=4).contains(&first_burst), "{first_burst}");
        // Every gap between bursts is at least the burst interval.
        let mut times: Vec<Duration> = left.clone();
        times.dedup();
        for pair in times.windows(2) {
            assert!(pair[1] - pair[0] >= BURST_INTERVAL, "{times:?}");
        }
    }

    #[test]
    fn a_delta_frame_leaves_at_once() {
        let mut pacer = Pacer::new(2.5 * 2_200_000.0);
        let start = Instant::now();
        // A keyframe, then a pause long enough to drain it.
        play(&mut pacer, start, 42);
        let later = start + Duration::from_millis(200);
        // Three packets of a delta frame fit in one burst.
        for _ in 0..3 {
            assert!(pacer.admit(later, PACKET));
        }
    }

    #[test]
    fn zero_rate_does_not_pace() {
        let mut pacer = Pacer::new(0.0);
        let now = Instant::now();
        for _ in 0..1000 {
            assert!(pacer.admit(now, PACKET));
        }
        assert_eq!(pacer.next_release(now), now);
    }
}
