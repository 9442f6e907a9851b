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

/// Feeds packets and returns the forwarded (seq, ts) pairs.
fn run(r: &mut LayerRewriter, packets: &[(u32, &str, u16, u32, bool)]) -> Vec<(u16, u32)> {
    run_at(r, Instant::now(), packets)
}

fn run_at(
    r: &mut LayerRewriter,
    now: Instant,
    packets: &[(u32, &str, u16, u32, bool)],
) -> Vec<(u16, u32)> {
    packets
        .iter()
        .filter_map(
            |&(ssrc, rid, seq, ts, key)| match r.process(now, ssrc, rid, seq, ts, key) {
                Verdict::Forward {
                    sequence,
                    timestamp,
                } => Some((sequence, timestamp)),
                Verdict::Drop => None,
            },
        )
        .collect()
}

#[test]
fn forwarding_waits_for_a_keyframe() {
    let mut r = LayerRewriter::new();
    let out = run(
        &mut r,
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
    let mut r = LayerRewriter::new();
    let out = run(
        &mut r,
        &[
            (1, "q", 100, 1000, true),
            (1, "q", 101, 4000, false),
            // "f" appears: wanted, but not until its keyframe.
            (3, "f", 5000, 900_000, false),
        ],
    );
    assert_eq!(out, vec![(100, 1000), (101, 4000)]);
    assert_eq!(r.wanted_keyframe(), Some(3));
    let out = run(
        &mut r,
        &[
            (1, "q", 102, 7000, false),
            (3, "f", 5001, 903_000, true),
            (3, "f", 5002, 906_000, false),
            (1, "q", 103, 10_000, false),
        ],
    );
    // q's 102 went out; then f continues at 103, one frame later, and q stops.
    assert_eq!(out, vec![(102, 7000), (103, 10_000), (104, 13_000)]);
    assert_eq!(r.wanted_keyframe(), None);
}

#[test]
fn a_worse_layer_never_takes_over() {
    let mut r = LayerRewriter::new();
    let out = run(
        &mut r,
        &[
            (3, "f", 1, 10, true),
            (1, "q", 50, 70, true),
            (3, "f", 2, 20, false),
        ],
    );
    assert_eq!(out, vec![(1, 10), (2, 20)]);
}

#[test]
fn sequence_numbers_wrap_without_gaps() {
    let mut r = LayerRewriter::new();
    let out = run(
        &mut r,
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
    let mut r = LayerRewriter::new();
    let out = run(
        &mut r,
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
fn when_the_current_layer_stops_a_lower_one_takes_over_on_its_keyframe() {
    let t0 = Instant::now();
    let mut r = LayerRewriter::new();
    let out = run_at(
        &mut r,
        t0,
        &[(3, "f", 1, 10, true), (3, "f", 2, 3010, false)],
    );
    assert_eq!(out, vec![(1, 10), (2, 3010)]);
    // "h" keeps coming, "f" went quiet: within a second nothing changes...
    let t1 = t0 + Duration::from_millis(500);
    assert!(run_at(&mut r, t1, &[(2, "h", 70, 500, true)]).is_empty());
    // ...after it, "h" is wanted and taken on its next keyframe.
    let t2 = t0 + Duration::from_millis(1500);
    assert!(run_at(&mut r, t2, &[(2, "h", 71, 600, false)]).is_empty());
    assert_eq!(r.wanted_keyframe(), Some(2));
    let out = run_at(
        &mut r,
        t2,
        &[(2, "h", 72, 700, true), (2, "h", 73, 800, false)],
    );
    assert_eq!(out, vec![(3, 6010), (4, 6110)]);
}
