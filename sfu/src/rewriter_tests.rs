use super::*;
use std::time::{Duration, Instant};

const VP8_KEY: &[u8] = &[0x10, 0x00, 0x9d, 0x01, 0x2a];
const VP8_DELTA: &[u8] = &[0x10, 0x01];

#[test]
fn vp8_keyframes_are_recognised_with_and_without_extensions() {
    assert!(KeyframeCodec::Vp8.is_keyframe(VP8_KEY));
    assert!(!KeyframeCodec::Vp8.is_keyframe(VP8_DELTA));
    // X=1, I=1 with a 15-bit picture id, then the VP8 header with P=0.
    assert!(KeyframeCodec::Vp8.is_keyframe(&[0x90, 0x80, 0x81, 0x23, 0x00]));
    // Not the start of a partition.
    assert!(!KeyframeCodec::Vp8.is_keyframe(&[0x00, 0x00]));
    assert!(!KeyframeCodec::Vp8.is_keyframe(&[]));
    assert!(!KeyframeCodec::Vp8.is_keyframe(&[0x90]));
}

#[test]
fn only_vp8_and_h264_keyframes_are_parsed() {
    assert_eq!(
        KeyframeCodec::from_mime("video/vp8"),
        Some(KeyframeCodec::Vp8)
    );
    assert_eq!(
        KeyframeCodec::from_mime("video/H264"),
        Some(KeyframeCodec::H264)
    );
    assert_eq!(KeyframeCodec::from_mime("video/VP9"), None);
    assert_eq!(KeyframeCodec::from_mime("audio/opus"), None);
}

#[test]
fn h264_keyframes_are_recognised_in_each_packetization() {
    assert!(KeyframeCodec::H264.is_keyframe(&[0x65, 0x00]));
    assert!(!KeyframeCodec::H264.is_keyframe(&[0x41, 0x00]));
    // STAP-A carrying SPS.
    assert!(KeyframeCodec::H264.is_keyframe(&[0x18, 0x00, 0x02, 0x67, 0x42]));
    // FU-A start of an IDR.
    assert!(KeyframeCodec::H264.is_keyframe(&[0x7c, 0x85, 0x00]));
    assert!(!KeyframeCodec::H264.is_keyframe(&[0x7c, 0x05, 0x00]));
    // Truncated STAP-A does not panic.
    assert!(!KeyframeCodec::H264.is_keyframe(&[0x18, 0xff]));
}

/// A subscriber's rewriter with the track's layer table, as the fan-out has them.
struct Sub {
    layers: LayerTable,
    r: LayerRewriter,
}

impl Sub {
    fn new(demand: Demand) -> Self {
        Self {
            layers: LayerTable::default(),
            r: LayerRewriter::new(90_000, demand),
        }
    }

    /// Feeds packets (ssrc, rid, seq, ts, keyframe) at `now`; returns the
    /// forwarded (seq, ts) pairs.
    fn feed(&mut self, now: Instant, packets: &[(u32, &str, u16, u32, bool)]) -> Vec<(u16, u32)> {
        packets
            .iter()
            .filter_map(|&(ssrc, rid, seq, ts, key)| {
                self.layers.observe(now, Rank::of_rid(rid), ssrc, seq, ts);
                match self.r.process(now, &self.layers, ssrc, seq, ts, key, None) {
                    Verdict::Forward {
                        sequence,
                        timestamp,
                        ..
                    } => Some((sequence, timestamp)),
                    Verdict::Drop => None,
                }
            })
            .collect()
    }
}

#[test]
fn forwarding_waits_for_a_keyframe() {
    let mut s = Sub::new(Demand::DEFAULT);
    let out = s.feed(
        Instant::now(),
        &[
            (1, "", 10, 100, false),
            (1, "", 11, 100, true),
            (1, "", 12, 200, false),
        ],
    );
    assert_eq!(out, vec![(11, 100), (12, 200)]);
}

#[test]
fn a_better_layer_is_taken_on_its_keyframe_with_continuous_numbering() {
    let t0 = Instant::now();
    let mut s = Sub::new(Demand::DEFAULT);
    let out = s.feed(
        t0,
        &[
            (1, "q", 100, 1000, true),
            (1, "q", 101, 4000, false),
            // "f" appears: wanted, but not until its keyframe.
            (3, "f", 5000, 900_000, false),
        ],
    );
    assert_eq!(out, vec![(100, 1000), (101, 4000)]);
    assert_eq!(s.r.wanted_keyframe(), Some((Rank::HIGH, 3)));
    let t1 = t0 + Duration::from_millis(33);
    let out = s.feed(
        t1,
        &[
            (1, "q", 102, 7000, false),
            (3, "f", 5001, 903_000, true),
            (3, "f", 5002, 906_000, false),
            (1, "q", 103, 10_000, false),
        ],
    );
    // q's 102 went out; then f continues at 103, as much later in media time
    // as in wall time (0 ms here: one tick), and q stops.
    assert_eq!(out, vec![(102, 7000), (103, 7001), (104, 10_001)]);
    assert_eq!(s.r.wanted_keyframe(), None);
    assert_eq!(s.r.current_layer(), Some((Rank::HIGH, 3)));
}

#[test]
fn with_the_layers_sender_reports_a_switch_keeps_the_publishers_timing() {
    use crate::clock::{MediaClock, Ntp};
    let t0 = Instant::now();
    let mut s = Sub::new(Demand::DEFAULT);
    s.feed(t0, &[(1, "q", 100, 1000, true)]);
    s.feed(t0, &[(3, "f", 5000, 900_000, false)]);
    // Each layer has its own timestamps; their reports put both on the
    // publisher's clock: q's 1000 and f's 900_000 were captured together.
    let ntp = Ntp(1 << 60);
    for (ssrc, rtp) in [(1, 1000), (3, 900_000)] {
        let clock = MediaClock {
            ntp,
            rtp,
            rate: 90_000,
        };
        assert!(s.layers.set_clock(ssrc, clock));
    }
    // A report for an SSRC no layer is sent on is not taken.
    let stray = MediaClock {
        ntp,
        rtp: 0,
        rate: 90_000,
    };
    assert!(!s.layers.set_clock(9, stray));
    assert_eq!(s.layers.clock(9), None);
    // f's keyframe, captured 2 frames (6000 ticks) after q's last one,
    // comes 200 ms of wall time later: a keyframe takes long to encode.
    let out = s.feed(
        t0 + Duration::from_millis(200),
        &[(1, "q", 101, 4000, false), (3, "f", 5001, 906_000, true)],
    );
    // It continues 3000 ticks after q's 4000 (its capture, not the 18_000
    // the wall clock would say), and the layer's timestamps now carry the
    // offset that moves f's report onto the stream.
    assert_eq!(out, vec![(101, 4000), (102, 7000)]);
    assert_eq!(s.r.timing(), Some((3, 7000u32.wrapping_sub(906_000))));
}

#[test]
fn sender_reports_far_from_the_wall_clock_are_not_followed_at_a_switch() {
    use crate::clock::{MediaClock, Ntp};
    let t0 = Instant::now();
    let mut s = Sub::new(Demand::DEFAULT);
    s.feed(t0, &[(1, "q", 100, 1000, true)]);
    s.feed(t0, &[(3, "f", 5000, 900_000, false)]);
    // f's report would put its keyframe 10 s after q's last frame, as no
    // encoder delays a frame: the publisher's reports disagree.
    let ntp = Ntp(1 << 60);
    let clock = |rtp| MediaClock {
        ntp,
        rtp,
        rate: 90_000,
    };
    assert!(s.layers.set_clock(1, clock(1000)));
    assert!(s.layers.set_clock(3, clock(900_000 - 900_000)));
    let out = s.feed(
        t0 + Duration::from_millis(200),
        &[(3, "f", 5001, 906_000, true)],
    );
    // The wall clock's 200 ms: 18 000 ticks.
    assert_eq!(out, vec![(101, 1000 + 18_000)]);
}

#[test]
fn a_worse_layer_never_takes_over() {
    let mut s = Sub::new(Demand::DEFAULT);
    let out = s.feed(
        Instant::now(),
        &[
            (3, "f", 1, 10, true),
            (1, "q", 50, 70, true),
            (3, "f", 2, 20, false),
        ],
    );
    assert_eq!(out, vec![(1, 10), (2, 20)]);
}

#[test]
fn a_capped_subscriber_gets_the_best_layer_under_its_cap() {
    let now = Instant::now();
    let mut s = Sub::new(Demand::UpTo(Rank::MEDIUM));
    let out = s.feed(
        now,
        &[
            (3, "f", 1, 10, true),
            (2, "h", 20, 10, true),
            (1, "q", 30, 10, true),
            (3, "f", 2, 20, false),
            (2, "h", 21, 20, false),
        ],
    );
    // f came first (better than nothing), then h, which it is from its keyframe
    // on; numbering runs on without a gap.
    assert_eq!(out, vec![(1, 10), (2, 11), (3, 21)]);
    assert_eq!(s.r.current_layer(), Some((Rank::MEDIUM, 2)));
}

#[test]
fn a_lower_cap_keeps_the_old_layer_until_the_new_keyframe() {
    let t0 = Instant::now();
    let mut s = Sub::new(Demand::DEFAULT);
    s.feed(t0, &[(3, "f", 1, 0, true), (1, "q", 100, 0, true)]);
    s.r.set_demand(Demand::UpTo(Rank::LOW));
    // No freeze: f goes on until q's keyframe.
    let out = s.feed(t0, &[(3, "f", 2, 3000, false), (1, "q", 101, 3000, false)]);
    assert_eq!(out, vec![(2, 3000)]);
    assert_eq!(s.r.wanted_keyframe(), Some((Rank::LOW, 1)));
    let t1 = t0 + Duration::from_millis(100);
    let out = s.feed(t1, &[(1, "q", 102, 9000, true), (3, "f", 3, 6000, false)]);
    // q's keyframe follows f's 2 at 3, 100 ms (9000 ticks) later; f stops.
    assert_eq!(out, vec![(3, 12_000)]);
}

#[test]
fn a_pause_stops_the_stream_and_a_resume_continues_it_on_a_keyframe() {
    let t0 = Instant::now();
    let mut s = Sub::new(Demand::DEFAULT);
    assert_eq!(s.feed(t0, &[(1, "", 10, 0, true)]), vec![(10, 0)]);
    s.r.set_demand(Demand::Paused);
    assert!(s.feed(t0, &[(1, "", 11, 3000, true)]).is_empty());
    assert_eq!(
        s.r.wanted_keyframe(),
        None,
        "a paused subscriber asks for nothing"
    );
    let t1 = t0 + Duration::from_secs(2);
    s.r.set_demand(Demand::UpTo(Rank::HIGH));
    assert!(s.feed(t1, &[(1, "", 50, 180_000, false)]).is_empty());
    assert_eq!(s.r.wanted_keyframe(), Some((Rank::SINGLE, 1)));
    // Two seconds later in wall time, 180 000 ticks later in media time.
    assert_eq!(
        s.feed(t1, &[(1, "", 51, 183_000, true)]),
        vec![(11, 180_000)]
    );
}

#[test]
fn sequence_numbers_wrap_without_gaps() {
    let mut s = Sub::new(Demand::DEFAULT);
    let out = s.feed(
        Instant::now(),
        &[
            (1, "", 65534, 0, true),
            (1, "", 65535, 1, false),
            (1, "", 0, 2, false),
        ],
    );
    assert_eq!(out, vec![(65534, 0), (65535, 1), (0, 2)]);
}

#[test]
fn lost_and_reordered_packets_keep_their_relative_numbers() {
    let mut s = Sub::new(Demand::DEFAULT);
    let out = s.feed(
        Instant::now(),
        &[
            (1, "", 10, 0, true),
            (1, "", 12, 0, false),
            (1, "", 11, 0, false),
            (1, "", 14, 0, false),
        ],
    );
    assert_eq!(out, vec![(10, 0), (12, 0), (11, 0), (14, 0)]);
}

#[test]
fn a_late_packet_from_before_a_switch_is_not_forwarded() {
    let t0 = Instant::now();
    let mut s = Sub::new(Demand::DEFAULT);
    s.feed(t0, &[(1, "q", 1, 0, true), (1, "q", 2, 0, false)]);
    let out = s.feed(t0, &[(3, "f", 101, 10, true), (3, "f", 100, 5, false)]);
    // 100 came after the switch at 101: its number would collide with q's.
    assert_eq!(out, vec![(3, 1)]);
}

/// When frame `i` of a layer at 30 frames a second from `t0` is sent.
fn frame_time(t0: Instant, i: u16) -> Instant {
    t0 + Duration::from_millis(33) * u32::from(i)
}

impl Sub {
    /// Frames `frames` of f (SSRC 3) and h (SSRC 2) at 30 a second from
    /// `t0`, a packet each, keyframes at frame 0; how many were forwarded.
    fn f_and_h(&mut self, t0: Instant, frames: std::ops::Range<u16>) -> usize {
        frames
            .map(|i| {
                let ts = u32::from(i) * 3000;
                let packets = [(3, "f", i, ts, i == 0), (2, "h", 100 + i, ts, i == 0)];
                self.feed(frame_time(t0, i), &packets).len()
            })
            .sum()
    }
}

#[test]
fn when_the_current_layer_stops_a_lower_one_takes_over_on_its_keyframe() {
    let t0 = Instant::now();
    let mut s = Sub::new(Demand::DEFAULT);
    let out = s.feed(t0, &[(3, "f", 1, 10, true), (3, "f", 2, 3010, false)]);
    assert_eq!(out, vec![(1, 10), (2, 3010)]);
    // "f" went quiet, and nothing else is sent: within a second nothing
    // changes (a still screen)...
    let t1 = t0 + Duration::from_millis(900);
    assert!(s.feed(t1, &[(2, "h", 70, 500, true)]).is_empty());
    assert_eq!(s.r.wanted_keyframe(), None);
    // ...after it, "h" is wanted and taken on its next keyframe.
    let t2 = t0 + Duration::from_millis(1500);
    assert!(s.feed(t2, &[(2, "h", 71, 600, false)]).is_empty());
    assert_eq!(s.r.wanted_keyframe(), Some((Rank::MEDIUM, 2)));
    let out = s.feed(t2, &[(2, "h", 72, 700, true), (2, "h", 73, 800, false)]);
    // 1.5 s after f's last packet: 135 000 ticks on.
    assert_eq!(out, vec![(3, 138_010), (4, 138_110)]);
}

#[test]
fn a_layer_that_stops_while_a_lower_one_goes_on_is_left_within_a_third_of_a_second() {
    let t0 = Instant::now();
    let frame = |i: u16| frame_time(t0, i);
    let mut s = Sub::new(Demand::DEFAULT);
    // f and h at 30 frames a second; the subscriber gets f.
    assert_eq!(s.f_and_h(t0, 0..30), 30, "f, every frame");
    // f stops (Chrome dropped it), h goes on.
    let mut wanted_at = None;
    for i in 30..60u16 {
        let packet = (2, "h", 100 + i, u32::from(i) * 3000, false);
        assert!(s.feed(frame(i), &[packet]).is_empty());
        if wanted_at.is_none() && s.r.wanted_keyframe() == Some((Rank::MEDIUM, 2)) {
            wanted_at = Some(frame(i));
        }
    }
    let after = wanted_at.expect("h wanted") - frame(29);
    assert!(
        after > Duration::from_millis(250) && after <= Duration::from_millis(350),
        "h wanted {after:?} after f's last packet"
    );
    // Its keyframe is taken at once.
    assert_eq!(s.feed(frame(60), &[(2, "h", 160, 180_000, true)]).len(), 1);
    assert_eq!(s.r.current_layer(), Some((Rank::MEDIUM, 2)));
}

#[test]
fn layers_quiet_together_are_not_taken_for_stopped_by_the_first_one_back() {
    let t0 = Instant::now();
    let frame = |i: u16| frame_time(t0, i);
    let mut s = Sub::new(Demand::DEFAULT);
    s.f_and_h(t0, 0..10);
    // Both quiet for 800 ms (a still screen); h's next frame comes first,
    // a keyframe even, and f's right after it.
    let back = frame(9) + Duration::from_millis(800);
    assert!(s.feed(back, &[(2, "h", 110, 90_000, true)]).is_empty());
    assert_eq!(s.r.wanted_keyframe(), None);
    assert_eq!(s.feed(back, &[(3, "f", 10, 90_000, false)]).len(), 1);
    assert_eq!(s.r.current_layer(), Some((Rank::HIGH, 3)));
}

#[test]
fn a_top_layer_sent_at_a_few_frames_a_second_is_not_taken_for_stopped() {
    let t0 = Instant::now();
    let mut s = Sub::new(Demand::DEFAULT);
    // Three seconds of h at 30 frames a second, and f at 2 (every 15th
    // of h's frames, 495 ms apart: more than the 300 ms a layer at 30
    // frames a second is given).
    let mut forwarded = 0;
    for i in 0..90u16 {
        let at = frame_time(t0, i);
        let ts = u32::from(i) * 3000;
        if i % 15 == 0 {
            forwarded += s.feed(at, &[(3, "f", i / 15, ts, i == 0)]).len();
        }
        assert!(s.feed(at, &[(2, "h", 500 + i, ts, false)]).is_empty());
        assert_eq!(s.r.wanted_keyframe(), None, "no switch asked at frame {i}");
    }
    assert_eq!(forwarded, 6, "every frame of f");
}

#[test]
fn a_retransmission_does_not_bring_a_stopped_layer_back() {
    let t0 = Instant::now();
    let frame = |i: u16| frame_time(t0, i);
    let mut s = Sub::new(Demand::DEFAULT);
    s.f_and_h(t0, 0..30);
    // f stops; h goes on, and is wanted 300 ms on.
    for i in 30..42u16 {
        s.feed(frame(i), &[(2, "h", 100 + i, u32::from(i) * 3000, false)]);
    }
    assert_eq!(s.r.wanted_keyframe(), Some((Rank::MEDIUM, 2)));
    // A repair of one of f's last packets comes late (the publisher's
    // uplink is slow): forwarded, as the stream's own, but f stays stopped.
    assert_eq!(s.feed(frame(42), &[(3, "f", 25, 75_000, false)]).len(), 1);
    assert_eq!(s.r.wanted_keyframe(), Some((Rank::MEDIUM, 2)));
    assert_eq!(s.feed(frame(43), &[(2, "h", 143, 129_000, true)]).len(), 1);
    assert_eq!(s.r.current_layer(), Some((Rank::MEDIUM, 2)));
}

#[test]
fn choose_prefers_the_best_live_layer_under_the_cap_then_the_lowest_above() {
    let t0 = Instant::now();
    let mut table = LayerTable::default();
    table.observe(t0, Rank::MEDIUM, 2, 0, 0);
    table.observe(t0, Rank::HIGH, 3, 0, 0);
    assert_eq!(table.choose(t0, Rank::HIGH), Some((Rank::HIGH, 3)));
    assert_eq!(table.choose(t0, Rank::MEDIUM), Some((Rank::MEDIUM, 2)));
    // No q layer: the lowest above the cap beats nothing.
    assert_eq!(table.choose(t0, Rank::LOW), Some((Rank::MEDIUM, 2)));
    // Two seconds on, only f is still sent.
    let t1 = t0 + Duration::from_secs(2);
    table.observe(t1, Rank::HIGH, 3, 1, 90_000);
    assert_eq!(table.choose(t1, Rank::MEDIUM), Some((Rank::HIGH, 3)));
    assert_eq!(table.choose(t1 + Duration::from_secs(2), Rank::HIGH), None);
}

#[test]
fn ranks_follow_livekit_rids_and_qualities() {
    assert_eq!(Rank::of_rid("q"), Rank::LOW);
    assert_eq!(Rank::of_rid("h"), Rank::MEDIUM);
    assert_eq!(Rank::of_rid("f"), Rank::HIGH);
    assert_eq!(Rank::of_rid(""), Rank::SINGLE);
    assert_eq!(Rank::of_quality(lk::VideoQuality::Low), Some(Rank::LOW));
    assert_eq!(Rank::of_quality(lk::VideoQuality::Off), None);
    assert_eq!(Rank::HIGH.quality(), lk::VideoQuality::High);
}

#[test]
fn a_budget_goes_first_to_what_small_tracks_ask_for_and_the_rest_to_the_others() {
    let budget = Budget {
        layers: 1_000_000,
        pause: 2_000_000,
    };
    // Two thumbnails asking for 100 kb/s get that and 15 % more; the
    // large tile and a track whose layers are not measured yet share the
    // rest.
    let shares =
        budget.divide(&[Some(100_000), None, Some(2_000_000), Some(100_000)].map(Want::of));
    let layers: Vec<u64> = shares.iter().map(|b| b.layers).collect();
    assert_eq!(layers, vec![115_000, 385_000, 385_000, 115_000]);
    let pause: Vec<u64> = shares.iter().map(|b| b.pause).collect();
    assert_eq!(pause, vec![115_000, 885_000, 885_000, 115_000]);
    // Everyone asking for more than an equal share: equal shares.
    let even = Budget::uniform(900).divide(&[None, Some(5_000), Some(1_000)].map(Want::of));
    assert!(even.iter().all(|b| b.layers == 300), "{even:?}");
    // A paused track takes nothing; nothing is lost to rounding.
    let shares = Budget::uniform(1_000).divide(&[Some(0), None, None].map(Want::of));
    assert_eq!(shares.iter().map(|b| b.layers).sum::<u64>(), 1_000);
    assert_eq!(shares[0].layers, 0);
    assert!(Budget::uniform(1_000).divide(&[]).is_empty());
}

#[test]
fn a_screen_share_is_served_before_the_cameras() {
    let screen = |rate| Want {
        rate: Some(rate),
        first: true,
    };
    // A shared screen asking for 800 kb/s beside two cameras asking for
    // 1 Mb/s each, on a 1 Mb/s link: the screen gets what it asks and 15 %
    // more, the cameras share what is left.
    let shares = Budget::uniform(1_000_000).divide(&[
        Want::of(Some(1_000_000)),
        screen(800_000),
        Want::of(Some(1_000_000)),
    ]);
    let layers: Vec<u64> = shares.iter().map(|b| b.layers).collect();
    assert_eq!(layers, vec![40_000, 920_000, 40_000]);
    // Two screens wider than the link share it; the camera gets nothing.
    let shares = Budget::uniform(1_000).divide(&[screen(900), Want::of(Some(10)), screen(900)]);
    let layers: Vec<u64> = shares.iter().map(|b| b.layers).collect();
    assert_eq!(layers, vec![500, 0, 500]);
    // A screen whose layers are not measured yet is served with the rest,
    // not given everything.
    let unmeasured = Want {
        rate: None,
        first: true,
    };
    let shares = Budget::uniform(1_000).divide(&[unmeasured, Want::of(Some(100))]);
    let layers: Vec<u64> = shares.iter().map(|b| b.layers).collect();
    assert_eq!(layers, vec![885, 115]);
}
