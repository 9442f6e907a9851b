use super::*;

fn seconds(s: f64) -> i64 {
    (s * 4_294_967_296.0) as i64
}

#[test]
fn ntp_of_wall_time_counts_from_1900() {
    let wall = UNIX_EPOCH + Duration::from_millis(1_700_000_000_500);
    let ntp = Ntp::from_wall(wall);
    assert_eq!(ntp.0 >> 32, 1_700_000_000 + NTP_UNIX_OFFSET);
    assert_eq!(ntp.0 as u32, 1 << 31);
    assert_eq!(
        Ntp::from_wall(wall + Duration::from_millis(250)).since(ntp),
        ntp_units(Duration::from_millis(250))
    );
}

#[test]
fn a_clock_maps_rtp_time_both_ways_across_the_wrap() {
    let ntp = Ntp::from_wall(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let clock = MediaClock {
        ntp,
        rtp: u32::MAX - 44_999,
        rate: 90_000,
    };
    // One second later in RTP time, past the wrap.
    assert_eq!(clock.ntp_of(45_000).since(ntp), seconds(1.0));
    // Half a second before the report.
    assert_eq!(
        clock.ntp_of(u32::MAX - 44_999 - 45_000).since(ntp),
        seconds(-0.5)
    );
    assert_eq!(clock.rtp_at(ntp.plus(seconds(1.0))), 45_000);
    assert_eq!(clock.rtp_at(ntp.plus(seconds(-0.5))), u32::MAX - 89_999);
    // There and back again lands where it started, to the tick.
    for rtp in [0u32, 1, 12_345_678, u32::MAX] {
        assert_eq!(clock.rtp_at(clock.ntp_of(rtp)), rtp, "{rtp}");
    }
}

#[test]
fn a_shifted_clock_is_the_same_line_in_other_coordinates() {
    let ntp = Ntp::from_wall(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let clock = MediaClock {
        ntp,
        rtp: 1_000,
        rate: 48_000,
    };
    let moved = clock.shifted(seconds(2.0), 7);
    for rtp in [1_000u32, 49_000, 0] {
        assert_eq!(
            moved.ntp_of(rtp.wrapping_add(7)),
            clock.ntp_of(rtp).plus(seconds(2.0))
        );
    }
}

#[test]
fn ticks_between_captures_on_two_layers_follow_their_reports() {
    let ntp = Ntp::from_wall(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    // Two simulcast layers of one camera, each with its own random start.
    let low = MediaClock {
        ntp,
        rtp: 5_000,
        rate: 90_000,
    };
    let high = MediaClock {
        ntp: ntp.plus(seconds(0.2)),
        rtp: 3_000_000_000,
        rate: 90_000,
    };
    // The high layer's frame 0.3 s after its report was captured 0.1 s
    // after the low layer's frame 0.4 s after its own.
    let ticks = high.ticks_since(3_000_000_000 + 27_000, &low, 5_000 + 36_000);
    assert_eq!(ticks, 9_000);
    assert_eq!(
        low.ticks_since(5_000 + 36_000, &high, 3_000_000_000 + 27_000),
        -9_000
    );
}

#[test]
fn the_offset_starts_at_the_first_report_and_moves_slowly_after() {
    let publisher = Ntp::from_wall(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let mut offset = ClockOffset::default();
    assert_eq!(offset.units(), None);
    // Salon's clock is 3 s ahead, and the report took 10 ms.
    offset.observe(publisher, publisher.plus(seconds(3.010)));
    assert_eq!(offset.units(), Some(seconds(3.010)));
    // A report held 160 ms in a queue moves it by a sixteenth of that.
    offset.observe(publisher, publisher.plus(seconds(3.170)));
    let moved = offset.units().expect("known") - seconds(3.010);
    assert!((moved - seconds(0.010)).abs() < 2, "{moved}");
    // The publisher's clock is set 5 s back: a step, taken at once.
    offset.observe(publisher, publisher.plus(seconds(8.0)));
    assert_eq!(offset.units(), Some(seconds(8.0)));
    // Nonsense from a peer saturates instead of overflowing.
    offset.observe(Ntp(0), Ntp(u64::MAX / 2));
    offset.observe(Ntp(u64::MAX / 2), Ntp(0));
    assert!(offset.units().is_some());
}
