//! The trend on a simulated link: a bottleneck of a given rate with a
//! FIFO in front, fed 30 frames a second.

use super::*;
use rtc::rtcp::transport_feedbacks::cc_feedback_report::Ecn;

/// How far ahead of the sender's clock the receiver's reads at send time
/// `sent`: 12 days for the first 3 s of every simulation, then nothing (its
/// 24-bit feedback reference time wrapped) in `a_jump_...`, where it is set.
fn receiver_clock(sent: Duration) -> Duration {
    JUMP.with(|jump| match jump.get() {
        Some(at) if sent < at => Duration::from_secs(12 * 24 * 3600),
        _ => Duration::ZERO,
    })
}

thread_local! {
    static JUMP: std::cell::Cell<Option<Duration>> = const { std::cell::Cell::new(None) };
}

/// Sends `seconds` of video at `send_kbps` through a link of `link_kbps`
/// (with 20 ms of propagation), 1200-byte packets, each frame's packets
/// leaving together; feeds the reports to `trend` a feedback every 100 ms
/// and returns the usage after each, with the queue's delay then. The
/// receiver's clock reads `RECEIVER_CLOCK` ahead of the sender's.
fn run(
    trend: &mut Trendline,
    t0: Instant,
    from: Duration,
    seconds: u32,
    send_kbps: u64,
    link_kbps: u64,
    link_free_at: &mut Duration,
) -> Vec<(Duration, Usage, Duration)> {
    let frame = Duration::from_micros(33_333);
    let bytes_per_frame = send_kbps * 1000 / 8 / 30;
    let packets_per_frame = bytes_per_frame.div_ceil(1200).max(1);
    let size = (bytes_per_frame / packets_per_frame) as usize;
    let per_packet = Duration::from_secs_f64(size as f64 * 8.0 / (link_kbps as f64 * 1000.0));
    let mut out = Vec::new();
    let mut pending = Vec::new();
    let mut next_feedback = from + Duration::from_millis(100);
    let frames = seconds * 30;
    for f in 0..frames {
        let sent = from + frame * f;
        for _ in 0..packets_per_frame {
            // The link serves packets in turn at its rate.
            let start = (*link_free_at).max(sent);
            *link_free_at = start + per_packet;
            let arrival = *link_free_at + Duration::from_millis(20) + receiver_clock(sent);
            pending.push(PacketReport {
                ssrc: 1,
                id: 0,
                rtp_sequence_number: 0,
                is_twcc: true,
                twcc_sequence_number: 0,
                size,
                arrived: true,
                departure: t0 + sent,
                arrival: Some(arrival),
                ecn: Ecn::default(),
            });
        }
        if sent >= next_feedback {
            trend.observe(&pending);
            let usage = trend.usage();
            let queue = link_free_at.saturating_sub(sent);
            out.push((sent, usage, queue));
            pending.clear();
            next_feedback += Duration::from_millis(100);
        }
    }
    out
}

#[test]
fn a_link_with_room_to_spare_is_never_overused() {
    let mut trend = Trendline::default();
    let mut free = Duration::ZERO;
    let t0 = Instant::now();
    let out = run(&mut trend, t0, Duration::ZERO, 20, 800, 2000, &mut free);
    assert!(
        out.iter().all(|&(_, u, _)| u != Usage::Overusing),
        "{out:?}"
    );
    let delivered = trend.delivered_rate().expect("enough packets");
    assert!((700_000..900_000).contains(&delivered), "{delivered}");
}

#[test]
fn an_overload_is_found_within_half_a_second() {
    // 10 s at 800 kb/s on a 2 Mb/s link, then the link drops: to 600 kb/s
    // (1.33 times overloaded, a queue growing by a quarter second each
    // second), 533 kb/s (1.5 times) or 400 kb/s (twice).
    for link in [600, 533, 400] {
        let mut trend = Trendline::default();
        let mut free = Duration::ZERO;
        let t0 = Instant::now();
        run(&mut trend, t0, Duration::ZERO, 10, 800, 2000, &mut free);
        assert_eq!(trend.usage(), Usage::Normal);
        let out = run(
            &mut trend,
            t0,
            Duration::from_secs(10),
            10,
            800,
            link,
            &mut free,
        );
        let found = out.iter().find(|&&(_, u, _)| u == Usage::Overusing);
        let Some(&(at, _, queue)) = found else {
            panic!("{link} kb/s: overuse never found: {out:?}");
        };
        let after = at - Duration::from_secs(10);
        assert!(
            after < Duration::from_millis(500) && queue < Duration::from_millis(400),
            "{link} kb/s: found {after:?} after the drop, with {queue:?} queued"
        );
        // What it delivered is the link's rate, give or take.
        let delivered = trend.delivered_rate().expect("enough packets") / 1000;
        assert!(
            delivered * 10 >= link * 8 && delivered * 10 <= link * 12,
            "{link} kb/s: delivered {delivered} kb/s"
        );
    }
}

#[test]
fn lost_and_reordered_reports_do_not_confuse_it() {
    let mut trend = Trendline::default();
    let t0 = Instant::now();
    let report = |sent_ms: u64, arrived_ms: Option<u64>| PacketReport {
        ssrc: 1,
        id: 0,
        rtp_sequence_number: 0,
        is_twcc: true,
        twcc_sequence_number: 0,
        size: 1000,
        arrived: arrived_ms.is_some(),
        departure: t0 + Duration::from_millis(sent_ms),
        arrival: arrived_ms.map(Duration::from_millis),
        ecn: Ecn::default(),
    };
    let mut reports = Vec::new();
    for i in 0..200u64 {
        // Every fifth lost, every seventh sent out of order.
        let sent = if i % 7 == 3 { i * 33 - 40 } else { i * 33 };
        reports.push(report(sent, (i % 5 != 0).then_some(i * 33 + 20)));
    }
    assert!(!trend.observe(&reports));
    assert_ne!(trend.usage(), Usage::Overusing);
    assert!(!trend.observe(&[]));
}

#[test]
fn a_jump_of_the_receivers_clock_starts_it_over() {
    JUMP.with(|jump| jump.set(Some(Duration::from_secs(3))));
    let mut trend = Trendline::default();
    let mut free = Duration::ZERO;
    let t0 = Instant::now();
    // Overused: a 400 kb/s link sent 800 kb/s.
    run(&mut trend, t0, Duration::ZERO, 3, 800, 400, &mut free);
    assert_eq!(trend.usage(), Usage::Overusing);
    // The receiver's clock goes back 12 days, as its feedback's 24-bit
    // reference time wraps, and the link is wide: no overuse from that, a
    // rate again once enough packets arrived, and no growth without bound.
    let mut wide = Duration::from_secs(3);
    let out = run(
        &mut trend,
        t0,
        Duration::from_secs(3),
        5,
        300,
        2000,
        &mut wide,
    );
    JUMP.with(|jump| jump.set(None));
    assert!(
        out.iter().all(|&(_, u, _)| u != Usage::Overusing),
        "{out:?}"
    );
    let delivered = trend.delivered_rate().expect("a rate");
    assert!((200_000..400_000).contains(&delivered), "{delivered}");
    assert!(trend.delivered.len() < 1000);
}
