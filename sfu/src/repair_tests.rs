use super::*;
use rtc::interceptor::{AttributedPacket, RTPHeaderExtension};
use rtc::shared::TransportContext;

const MID: u8 = 4;
const RID: u8 = 10;
const RRID: u8 = 11;
const VP8: u8 = 96;
const RTX: u8 = 97;

fn info(ssrc: u32) -> StreamInfo {
    let extension = |uri: &str, id: u16| RTPHeaderExtension {
        uri: uri.to_owned(),
        id,
    };
    StreamInfo {
        ssrc,
        payload_type: VP8,
        rtp_header_extensions: vec![
            extension(MID_URI, MID.into()),
            extension(RID_URI, RID.into()),
            extension(RRID_URI, RRID.into()),
        ],
        ..Default::default()
    }
}

/// A packet on `ssrc` with the given (id, value) header extensions.
fn packet(
    ssrc: u32,
    payload_type: u8,
    sequence: u16,
    extensions: &[(u8, &'static str)],
    payload: &'static [u8],
) -> rtc::rtp::Packet {
    let mut packet = rtc::rtp::Packet {
        header: rtc::rtp::header::Header {
            version: 2,
            ssrc,
            payload_type,
            sequence_number: sequence,
            timestamp: 9000,
            marker: true,
            ..Default::default()
        },
        payload: Bytes::from_static(payload),
    };
    for &(id, value) in extensions {
        packet
            .header
            .set_extension(id, Bytes::from_static(value.as_bytes()))
            .expect("extension");
    }
    packet
}

/// What comes out of the interceptor for `packet`.
fn read(repair: &mut RtxRepair, packet: rtc::rtp::Packet) -> rtc::rtp::Packet {
    repair
        .handle_read(TaggedPacket {
            now: Instant::now(),
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(packet)),
        })
        .expect("read");
    match repair.poll_read().expect("passed on").message.packet {
        Packet::Rtp(packet) => packet,
        _ => panic!("an RTP packet came back as something else"),
    }
}

/// Two bound simulcast streams of one camera, "q" and "h", each seen once
/// with its rid.
fn camera() -> RtxRepair {
    camera_telling(std::sync::mpsc::channel().0)
}

fn camera_telling(feedback: std::sync::mpsc::Sender<Feedback>) -> RtxRepair {
    let mut repair = RtxRepair::new(feedback);
    repair.bind_remote_stream(&info(1000));
    repair.bind_remote_stream(&info(2000));
    read(
        &mut repair,
        packet(1000, VP8, 10, &[(MID, "0"), (RID, "q")], b"q"),
    );
    read(
        &mut repair,
        packet(2000, VP8, 50, &[(MID, "0"), (RID, "h")], b"h"),
    );
    repair
}

#[test]
fn a_retransmission_named_by_rrid_becomes_the_packet_it_repeats() {
    let (tx, told) = std::sync::mpsc::channel();
    let mut repair = camera_telling(tx);
    // RTX of "h": sequence 7 of its own, carrying original 53 (0x0035).
    let out = read(
        &mut repair,
        packet(
            2001,
            RTX,
            7,
            &[(MID, "0"), (RRID, "h")],
            &[0x00, 0x35, 0xaa, 0xbb],
        ),
    );
    assert_eq!(out.header.ssrc, 2000);
    assert_eq!(out.header.payload_type, VP8);
    assert_eq!(out.header.sequence_number, 53);
    assert_eq!(out.header.timestamp, 9000);
    assert!(out.header.marker);
    assert_eq!(&out.payload[..], &[0xaa, 0xbb]);
    // For the link: "q" 10, "h" 50 and 53 sent, 51-52 unknown yet, 53
    // lost the first time. A padding probe counts for nothing.
    read(&mut repair, packet(2001, RTX, 8, &[], &[]));
    assert_eq!((repair.expected, repair.received), (5, 2));
    assert!(
        told.try_recv().is_err(),
        "no report before {REPORT_EVERY} packets"
    );
}

#[test]
fn later_retransmissions_without_the_extension_are_still_recognised() {
    let mut repair = camera();
    read(
        &mut repair,
        packet(1001, RTX, 1, &[(MID, "0"), (RRID, "q")], &[0, 11, 1]),
    );
    // Once acknowledged, a browser stops naming its streams.
    let out = read(&mut repair, packet(1001, RTX, 2, &[], &[0, 12, 2]));
    assert_eq!((out.header.ssrc, out.header.sequence_number), (1000, 12));
    assert_eq!(&out.payload[..], &[2]);
}

#[test]
fn the_same_rid_in_another_media_section_is_another_stream() {
    let mut repair = camera();
    repair.bind_remote_stream(&info(3000));
    // A screen share, media section "1", with its own "h".
    read(
        &mut repair,
        packet(3000, VP8, 70, &[(MID, "1"), (RID, "h")], b"s"),
    );
    let screen = read(
        &mut repair,
        packet(3001, RTX, 1, &[(MID, "1"), (RRID, "h")], &[0, 71, 0]),
    );
    let camera = read(
        &mut repair,
        packet(2001, RTX, 1, &[(MID, "0"), (RRID, "h")], &[0, 51, 0]),
    );
    assert_eq!(screen.header.ssrc, 3000);
    assert_eq!(camera.header.ssrc, 2000);
}

#[test]
fn media_padding_and_unknown_streams_pass_untouched() {
    let mut repair = camera();
    // The stream's own packets are left as they are.
    let media = read(&mut repair, packet(2000, VP8, 51, &[], b"media"));
    assert_eq!(
        (media.header.ssrc, media.header.sequence_number),
        (2000, 51)
    );
    assert_eq!(&media.payload[..], b"media");
    // A padding probe on RTX carries no original.
    let probe = read(
        &mut repair,
        packet(2001, RTX, 8, &[(MID, "0"), (RRID, "h")], &[]),
    );
    assert_eq!((probe.header.ssrc, probe.header.sequence_number), (2001, 8));
    // A repair of a rid nobody sends.
    let stray = read(
        &mut repair,
        packet(4001, RTX, 1, &[(MID, "0"), (RRID, "f")], &[0, 1, 0]),
    );
    assert_eq!(stray.header.ssrc, 4001);
    // An unbound SSRC without any name.
    let unknown = read(&mut repair, packet(5000, VP8, 1, &[], &[0, 1, 0]));
    assert_eq!(
        (unknown.header.ssrc, unknown.header.sequence_number),
        (5000, 1)
    );
}

#[test]
fn a_stream_unbound_takes_its_repairs_with_it() {
    let mut repair = camera();
    read(
        &mut repair,
        packet(2001, RTX, 1, &[(MID, "0"), (RRID, "h")], &[0, 51, 0]),
    );
    repair.unbind_remote_stream(&info(2000));
    let out = read(&mut repair, packet(2001, RTX, 2, &[], &[0, 52, 0]));
    assert_eq!(out.header.ssrc, 2001);
}

#[test]
fn a_probe_repeating_a_packet_that_arrived_is_no_repair() {
    let (tx, told) = std::sync::mpsc::channel();
    let mut repair = camera_telling(tx);
    read(&mut repair, packet(2000, VP8, 52, &[], b"h"));
    // 50 and 52 arrived; a probe repeats 50, then 51 comes again twice.
    let probe = read(
        &mut repair,
        packet(2001, RTX, 1, &[(MID, "0"), (RRID, "h")], &[0, 50, 0]),
    );
    assert_eq!(probe.header.ssrc, 2001);
    let first = read(&mut repair, packet(2001, RTX, 2, &[], &[0, 51, 0]));
    let again = read(&mut repair, packet(2001, RTX, 3, &[], &[0, 51, 0]));
    assert_eq!(
        (first.header.ssrc, first.header.sequence_number),
        (2000, 51)
    );
    assert_eq!(again.header.ssrc, 2001);
    // 50, 52 arrived, 51 came only when sent again.
    assert_eq!((repair.expected, repair.received), (4, 3));
    drop(told);
}

#[test]
fn the_window_knows_what_is_missing_across_wraps_and_jumps() {
    let mut window = SeqWindow::default();
    assert!(!window.missing(5), "an empty window knows nothing");
    let advances: Vec<_> = [65530, 65531, 65533, 0, 2, 0, 65532]
        .into_iter()
        .map(|sequence| window.insert(sequence))
        .collect();
    // The first, the next, past one gap each, a duplicate, a late one.
    assert_eq!(
        advances,
        [Some(1), Some(1), Some(2), Some(3), Some(2), None, Some(0)]
    );
    for (sequence, missing) in [
        (65530, false),
        (65532, false),
        (65534, true),
        (65535, true),
        (0, false),
        (1, true),
        (2, false),
        // Newer than any: missing, up to the lookahead.
        (3, true),
        (2 + SeqWindow::LOOKAHEAD, true),
        (3 + SeqWindow::LOOKAHEAD, false),
        (2u16.wrapping_add(0x8000), false),
        // Older than the window: not known missing, and not taken.
        (2u16.wrapping_sub(SeqWindow::SIZE), false),
    ] {
        assert_eq!(window.missing(sequence), missing, "sequence {sequence}");
    }
    assert_eq!(window.insert(2u16.wrapping_sub(SeqWindow::SIZE)), None);
    // A jump further than the window forgets everything before it.
    assert_eq!(window.insert(5000), Some(4998));
    assert!(!window.missing(4999 - SeqWindow::SIZE));
    assert!(window.missing(4999));
    // Bits of numbers skipped by a jump are cleared, not left from a lap
    // before: 2 + 1024 shares 2's bit.
    let mut window = SeqWindow::default();
    window.insert(2);
    window.insert(10);
    window.insert(2 + SeqWindow::SIZE);
    assert!(window.missing(2 + SeqWindow::SIZE - 1));
    assert!(!window.missing(2 + SeqWindow::SIZE));
}

#[test]
fn a_repair_far_past_the_stream_is_refused() {
    let mut repair = camera();
    // "h" is at 50: 50 + 64 may come again before its original, 50 + 65
    // cannot, nor anything half the number space away.
    for original in [50 + 65, 50 + 0x8000] {
        let [high, low] = u16::to_be_bytes(original);
        let payload: &'static [u8] = Box::leak(Box::new([high, low, 0]));
        let out = read(
            &mut repair,
            packet(2001, RTX, 1, &[(MID, "0"), (RRID, "h")], payload),
        );
        assert_eq!(out.header.ssrc, 2001, "original {original}");
    }
    let out = read(&mut repair, packet(2001, RTX, 2, &[], &[0, 50 + 64, 0]));
    assert_eq!((out.header.ssrc, out.header.sequence_number), (2000, 114));
    // The stream's own packets still count after it.
    let next = read(&mut repair, packet(2000, VP8, 51, &[], b"h"));
    assert_eq!(next.header.sequence_number, 51);
    assert!(repair.bound[&2000].arrived.missing(52));
}

#[test]
fn a_declared_rtx_stream_is_put_back_before_the_nack_generator() {
    let mut repair = RtxRepair::new(std::sync::mpsc::channel().0);
    // A camera without simulcast: its description pairs 7000 with 7001,
    // and webrtc-rs binds both.
    repair.bind_remote_stream(&StreamInfo {
        ssrc_rtx: Some(7001),
        ..info(7000)
    });
    repair.bind_remote_stream(&StreamInfo {
        payload_type: RTX,
        ..info(7001)
    });
    read(&mut repair, packet(7000, VP8, 1, &[], b"a"));
    read(&mut repair, packet(7000, VP8, 3, &[], b"c"));
    let out = read(&mut repair, packet(7001, RTX, 40, &[], &[0, 2, b'b']));
    assert_eq!((out.header.ssrc, out.header.sequence_number), (7000, 2));
    assert_eq!(out.header.payload_type, VP8);
    assert_eq!((repair.expected, repair.received), (3, 2));
}

#[test]
fn a_stream_that_changes_codec_is_repaired_with_the_new_one() {
    let mut repair = camera();
    read(&mut repair, packet(2000, 98, 51, &[], b"h"));
    let out = read(
        &mut repair,
        packet(2001, RTX, 1, &[(MID, "0"), (RRID, "h")], &[0, 52, 0]),
    );
    assert_eq!(out.header.payload_type, 98);
}

#[test]
fn a_new_rtx_stream_for_a_layer_replaces_the_old() {
    let mut repair = camera();
    read(
        &mut repair,
        packet(2001, RTX, 1, &[(MID, "0"), (RRID, "h")], &[0, 51, 0]),
    );
    read(
        &mut repair,
        packet(2002, RTX, 1, &[(MID, "0"), (RRID, "h")], &[0, 52, 0]),
    );
    assert_eq!(repair.repairs.len(), 1);
    let stale = read(&mut repair, packet(2001, RTX, 2, &[], &[0, 53, 0]));
    assert_eq!(stale.header.ssrc, 2001);
}

#[test]
fn the_link_counts_reach_the_worker_every_few_dozen_packets() {
    let (tx, told) = std::sync::mpsc::channel();
    let mut repair = RtxRepair::new(tx);
    repair.bind_remote_stream(&info(1000));
    // Every fourth packet lost.
    let mut sent = 0u16;
    while told.try_recv().is_err() {
        sent += 1;
        if !sent.is_multiple_of(4) {
            read(&mut repair, packet(1000, VP8, sent, &[], b"m"));
        }
        assert!(sent < 200, "no report");
    }
    let counted = u64::from(REPORT_EVERY);
    assert_eq!(
        (repair.expected, repair.received),
        (u64::from(sent), counted)
    );
    assert_eq!(u64::from(sent), counted + counted / 3);
}
