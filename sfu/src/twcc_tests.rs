#![allow(clippy::unwrap_used)]

use super::*;
use rtc::interceptor::History;
use std::time::Duration;

/// A small deterministic generator, so that the comparison below covers
/// many orders of feedback without a dependency.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

/// The log answers as rtc-interceptor's `History` does, for the way Salon
/// uses it: packets numbered one after another (across the 16-bit wrap),
/// feedback for some of them, late, reordered, repeated or lost, and for
/// numbers never sent; reports taken now and then; stale packets pruned.
#[test]
fn it_reports_what_rtc_interceptors_history_reports() {
    let t0 = Instant::now();
    let mut rng = Lcg(7);
    let mut log = SendLog::default();
    let mut history = History::new();
    let mut twcc: u16 = 65_000;
    let mut sent: Vec<u16> = Vec::new();
    let mut reported = 0usize;
    for step in 0..20_000u64 {
        let now = t0 + Duration::from_millis(step);
        for _ in 0..rng.next(4) {
            let size = 100 + rng.next(1100) as usize;
            let ssrc = 1 + rng.next(3) as u32;
            let sequence = rng.next(65_536) as u16;
            log.sent(ssrc, sequence, twcc, size, now);
            history.add_outgoing(ssrc, sequence, true, twcc, size, now);
            sent.push(twcc);
            twcc = twcc.wrapping_add(1);
        }
        if rng.next(20) == 0 && !sent.is_empty() {
            // Feedback for a run of recent packets, some lost, some not
            // mentioned, now and then a number never sent.
            let from = sent.len().saturating_sub(1 + rng.next(80) as usize);
            for &n in &sent[from..] {
                let ack = match rng.next(10) {
                    0 => continue,
                    1 => Acknowledgement::lost(n),
                    2 => Acknowledgement::received(n.wrapping_add(30_000), None, Ecn::NotEct),
                    _ => Acknowledgement::received(
                        n,
                        Some(Duration::from_millis(step + rng.next(50))),
                        Ecn::NotEct,
                    ),
                };
                log.acknowledge(ack);
                history.on_twcc_feedback(now, ack);
            }
        }
        if rng.next(10) == 0 {
            let expected = history.take_reports();
            let got = log.take_reports();
            assert_eq!(got, &expected[..], "step {step}");
            reported += got.len();
        }
        if rng.next(500) == 0 {
            let cutoff = now - Duration::from_secs(2);
            log.prune_before(cutoff);
            history.prune_before(cutoff);
        }
        // Salon's log only ever holds what is in flight.
        if sent.len() > 10_000 {
            sent.drain(..5_000);
        }
    }
    assert!(reported > 10_000, "reports compared: {reported}");
}

#[test]
fn feedback_for_packets_not_in_flight_is_ignored() {
    let t0 = Instant::now();
    let mut log = SendLog::default();
    log.acknowledge(Acknowledgement::received(3, None, Ecn::NotEct));
    assert!(log.take_reports().is_empty());
    for n in 0..3u16 {
        log.sent(1, n, 10 + n, 500, t0);
    }
    // Before the first number, after the last, and far away.
    for n in [9u16, 13, 40_000] {
        log.acknowledge(Acknowledgement::received(n, None, Ecn::NotEct));
    }
    assert!(log.take_reports().is_empty());
    log.acknowledge(Acknowledgement::received(
        11,
        Some(Duration::ZERO),
        Ecn::NotEct,
    ));
    let reports = log.take_reports();
    assert_eq!(reports.len(), 2);
    assert!(!reports[0].arrived, "10 was never mentioned: lost");
    assert!(reports[1].arrived);
    assert_eq!(log.len(), 1);
}
