use super::*;

/// A RED payload: a 4-byte header per redundant block, the primary's
/// 1-byte header, the redundant blocks, then the primary.
fn red(redundant: &[(u8, u16, &[u8])], primary_pt: u8, primary: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for &(pt, offset, block) in redundant {
        let len = block.len() as u16;
        out.push(0x80 | pt);
        out.push((offset >> 6) as u8);
        out.push(((offset as u8 & 0x3f) << 2) | (len >> 8) as u8);
        out.push(len as u8);
    }
    out.push(primary_pt);
    for &(_, _, block) in redundant {
        out.extend_from_slice(block);
    }
    out.extend_from_slice(primary);
    out
}

fn primary_of(payload: &[u8]) -> Result<(u8, &[u8]), RedError> {
    let p = primary(payload)?;
    Ok((p.payload_type, &payload[p.range]))
}

#[test]
fn a_packet_without_redundancy_is_its_primary() {
    let payload = red(&[], 111, b"new frame");
    assert_eq!(payload[0], 111);
    assert_eq!(primary_of(&payload), Ok((111, &b"new frame"[..])));
}

#[test]
fn one_redundant_block_is_skipped() {
    let payload = red(&[(111, 960, b"old")], 111, b"new frame");
    assert_eq!(primary_of(&payload), Ok((111, &b"new frame"[..])));
}

#[test]
fn two_redundant_blocks_are_skipped() {
    let long = [0xaa; 300];
    let payload = red(&[(111, 1920, &long), (111, 960, b"older")], 111, b"new");
    assert_eq!(primary_of(&payload), Ok((111, &b"new"[..])));
}

#[test]
fn the_longest_block_length_is_read_whole() {
    let long = [0x55; 1023];
    let payload = red(&[(111, 16383, &long)], 111, b"p");
    assert_eq!(primary_of(&payload), Ok((111, &b"p"[..])));
}

#[test]
fn an_empty_primary_is_empty() {
    let payload = red(&[(111, 960, b"old")], 111, b"");
    assert_eq!(primary_of(&payload), Ok((111, &b""[..])));
}

#[test]
fn truncated_packets_are_refused() {
    assert_eq!(primary(&[]), Err(RedError::TruncatedHeader));
    // A redundant block's header cut short.
    assert_eq!(primary(&[0x80 | 111, 0x0f]), Err(RedError::TruncatedHeader));
    // All headers F=1: no primary header.
    let payload = red(&[(111, 960, b"old")], 111, b"new");
    assert_eq!(primary(&payload[..4]), Err(RedError::TruncatedHeader));
    // The redundant block is longer than what follows.
    let cut = &payload[..5 + 2];
    assert_eq!(primary(cut), Err(RedError::TruncatedBlock));
}

#[test]
fn garbage_never_panics_and_stays_in_bounds() {
    // A fixed xorshift, so that a failure can be replayed.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut buf = [0u8; 64];
    for _ in 0..200_000 {
        let len = (next() % 65) as usize;
        for b in &mut buf[..len] {
            *b = next() as u8;
        }
        // Lean towards F bits set, where the interesting paths are.
        if len > 0 && next() % 2 == 0 {
            buf[0] |= 0x80;
        }
        if let Ok(p) = primary(&buf[..len]) {
            assert!(p.range.start <= p.range.end && p.range.end == len);
            assert!(p.payload_type < 0x80);
        }
    }
}

#[test]
fn the_fmtp_names_the_primary_codec() {
    assert_eq!(fmtp_primary("111/111"), Some(111));
    assert_eq!(fmtp_primary(" 109/109/109"), Some(109));
    assert_eq!(fmtp_primary(""), None);
    assert_eq!(fmtp_primary("opus/opus"), None);
    assert_eq!(
        Encoding::of("audio/red", "111/111"),
        Encoding::Red { primary: Some(111) }
    );
    assert_eq!(
        Encoding::of("audio/RED", ""),
        Encoding::Red { primary: None }
    );
    assert_eq!(Encoding::of("audio/opus", "minptime=10"), Encoding::Plain);
}

fn formats(list: &[(u8, &str)]) -> Vec<Format> {
    list.iter()
        .map(|&(payload_type, name)| Format {
            payload_type,
            name: name.to_owned(),
            fmtp: String::new(),
        })
        .collect()
}

#[test]
fn a_subscriber_that_accepted_red_gets_red() {
    let red = Encoding::Red { primary: Some(111) };
    let accepted = formats(&[(63, "red"), (111, "opus")]);
    assert_eq!(
        route_audio(red, "red", &accepted),
        Some(AudioRoute {
            payload_type: 63,
            delivery: Delivery::Whole
        })
    );
}

#[test]
fn a_subscriber_without_red_gets_the_primary() {
    let red = Encoding::Red { primary: Some(111) };
    let opus_only = formats(&[(111, "opus")]);
    let primary_only = Some(AudioRoute {
        payload_type: 111,
        delivery: Delivery::Primary,
    });
    assert_eq!(route_audio(red, "red", &opus_only), primary_only);
    // RED whose blocks would name another codec to it: the primary only.
    let renumbered = formats(&[(63, "red"), (109, "opus")]);
    assert_eq!(
        route_audio(red, "red", &renumbered),
        Some(AudioRoute {
            payload_type: 109,
            delivery: Delivery::Primary
        })
    );
    let unknown = Encoding::Red { primary: None };
    assert_eq!(
        route_audio(unknown, "red", &formats(&[(63, "red"), (111, "opus")])),
        primary_only
    );
    // Without Opus nothing fits.
    assert_eq!(route_audio(red, "red", &formats(&[(63, "red")])), None);
}

#[test]
fn plain_opus_goes_as_plain_opus() {
    let accepted = formats(&[(63, "red"), (111, "OPUS")]);
    assert_eq!(
        route_audio(Encoding::Plain, "opus", &accepted),
        Some(AudioRoute {
            payload_type: 111,
            delivery: Delivery::Whole
        })
    );
    assert_eq!(route_audio(Encoding::Plain, "PCMU", &accepted), None);
}

#[test]
fn the_registered_codecs_agree() {
    assert_eq!(
        fmtp_primary(&red_codec().rtp_codec.sdp_fmtp_line),
        Some(opus_codec().payload_type)
    );
    assert!(is_red(&red_codec().rtp_codec.mime_type));
    assert!(!is_red(&opus_codec().rtp_codec.mime_type));
}

#[test]
fn what_a_subscriber_without_red_gets() {
    let encoding = Encoding::Red { primary: Some(111) };
    let payload = red(&[(111, 960, b"older frame")], 111, b"new");
    let range = encoding.primary_range(&payload).expect("readable RED");
    assert_eq!(&payload[range], b"new");
    // Padding only: passed on as it is, empty, so that no gap opens.
    assert_eq!(encoding.primary_range(&[]), Some(0..0));
    // A primary of another codec, or garbage: nothing.
    let other = red(&[], 96, b"x");
    assert_eq!(encoding.primary_range(&other), None);
    assert_eq!(encoding.primary_range(&[0x80 | 111, 1]), None);
    // Unknown primary codec: whatever the packet names.
    let unknown = Encoding::Red { primary: None };
    assert_eq!(unknown.primary_range(&other), Some(1..2));
    // Not RED: all of it.
    assert_eq!(Encoding::Plain.primary_range(b"opus"), Some(0..4));
}
