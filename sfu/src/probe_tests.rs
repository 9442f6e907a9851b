#![allow(clippy::unwrap_used)]

use super::*;
use rtc::rtcp::transport_feedbacks::cc_feedback_report::Ecn;

/// What feedback says of a packet of `size` bytes that left at `departure`
/// and arrived at `arrival` on the receiver's clock (`None`: lost).
fn report(id: u64, size: usize, departure: Instant, arrival: Option<Duration>) -> PacketReport {
    PacketReport {
        ssrc: 1,
        id,
        rtp_sequence_number: id as u16,
        is_twcc: true,
        twcc_sequence_number: id as u16,
        size,
        arrived: arrival.is_some(),
        departure,
        arrival,
        ecn: Ecn::NotEct,
    }
}

/// Runs a probe against a link of `capacity` bits per second with a
/// queue (arrivals no faster than the link drains), losing every `lose`th
/// packet if set; sends what `due` asks for in 1200-byte packets every
/// 10 ms, plus `media` bits per second of media.
fn probe_link(capacity: u64, media: u64, goal: u64, lose: Option<u64>) -> ProbeVerdict {
    let t0 = Instant::now();
    let mut prober = Prober::default();
    assert!(prober.start(t0, media, goal));
    let mut reports = Vec::new();
    // The receiver's clock, and when the link is free again.
    let mut link_free = Duration::from_secs(10);
    let mut media_sent = 0u64;
    let mut id = 0u64;
    let mut send = |at: Instant, size: usize, reports: &mut Vec<PacketReport>| {
        id += 1;
        let departed = Duration::from_secs(10) + at.duration_since(t0);
        let start = link_free.max(departed);
        link_free = start + Duration::from_micros(size as u64 * 8 * 1_000_000 / capacity);
        let lost = lose.is_some_and(|n| id.is_multiple_of(n));
        reports.push(report(id, size, at, (!lost).then_some(link_free)));
    };
    for ms in (0..600).step_by(10) {
        let now = t0 + Duration::from_millis(ms);
        while media_sent * 8 * 1000 < media * ms {
            send(now, 1000, &mut reports);
            media_sent += 1000;
        }
        let mut due = prober.due(now);
        while due > 0 {
            send(now, 1200, &mut reports);
            prober.sent(1200);
            due = due.saturating_sub(1200);
        }
    }
    assert!(!prober.is_sending(t0 + PROBE_DURATION));
    prober.observe(&reports);
    assert_eq!(
        prober.conclude(t0 + PROBE_DURATION),
        None,
        "feedback still due"
    );
    prober.conclude(t0 + Duration::from_secs(1)).unwrap()
}

#[test]
fn a_link_with_room_carries_the_probe() {
    // 300 kb/s of media, 1.5 Mb/s to prove, a 5 Mb/s link.
    let ProbeVerdict::Carried(rate) = probe_link(5_000_000, 300_000, 1_500_000, None) else {
        panic!("the link had room");
    };
    assert!(rate >= 1_500_000, "carried {rate}");
    assert!(rate <= 2_000_000, "no more than was sent: {rate}");
}

#[test]
fn a_link_too_small_shows_a_queue() {
    // The same probe on a 1 Mb/s link: arrivals spread out behind it.
    assert_eq!(
        probe_link(1_000_000, 300_000, 1_500_000, None),
        ProbeVerdict::Congested
    );
}

#[test]
fn loss_during_the_probe_is_congestion() {
    assert_eq!(
        probe_link(5_000_000, 300_000, 1_500_000, Some(5)),
        ProbeVerdict::Congested
    );
}

#[test]
fn no_feedback_proves_nothing() {
    let t0 = Instant::now();
    let mut prober = Prober::default();
    assert!(prober.start(t0, 0, 1_000_000));
    assert!(prober.due(t0 + Duration::from_millis(100)) > 0);
    assert_eq!(
        prober.conclude(t0 + Duration::from_secs(1)),
        Some(ProbeVerdict::Unknown)
    );
}

#[test]
fn the_padding_rate_fills_the_gap_to_the_goal() {
    let t0 = Instant::now();
    let mut prober = Prober::default();
    assert!(prober.start(t0, 400_000, 1_000_000));
    // 1.2 × 1 Mb/s - 400 kb/s = 800 kb/s: 100 kB a second, 10 kB in 100 ms.
    assert_eq!(prober.due(t0 + Duration::from_millis(100)), 10_000);
    prober.sent(4_000);
    assert_eq!(prober.due(t0 + Duration::from_millis(100)), 6_000);
    // Done sending at the end of the probe, whatever is left.
    assert_eq!(prober.due(t0 + PROBE_DURATION), 0);
}

#[test]
fn probes_that_fail_wait_longer_each_time() {
    let t0 = Instant::now();
    let mut prober = Prober::default();
    let mut now = t0;
    let mut waits = Vec::new();
    for _ in 0..6 {
        assert!(prober.start(now, 0, 1_000_000));
        assert!(!prober.start(now, 0, 1_000_000), "one probe at a time");
        prober.sent(1200);
        let done = now + Duration::from_secs(1);
        assert_eq!(prober.conclude(done), Some(ProbeVerdict::Unknown));
        // The first second it may start again.
        let mut next = done;
        while !prober.start(next, 0, 1_000_000) {
            next += Duration::from_secs(1);
        }
        waits.push(next.duration_since(done).as_secs());
        prober.probe = None;
        now = next;
    }
    assert_eq!(waits, vec![3, 6, 12, 24, 48, 60]);
}

#[test]
fn a_probe_that_sent_nothing_does_not_lengthen_the_wait() {
    let t0 = Instant::now();
    let mut prober = Prober::default();
    for round in 0..3u32 {
        let now = t0 + Duration::from_secs(4) * round;
        assert!(prober.start(now, 0, 1_000_000), "round {round}");
        let done = now + Duration::from_secs(1);
        assert_eq!(prober.conclude(done), Some(ProbeVerdict::Unknown));
        assert!(!prober.start(done + Duration::from_secs(2), 0, 1_000_000));
    }
}
