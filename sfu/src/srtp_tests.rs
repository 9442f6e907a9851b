#![allow(clippy::unwrap_used)]

use super::*;
use rtc::crypto::providers::RingProvider;
use rtc::rtp::header::Header;
use rtc::shared::marshal::Marshal;
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;

fn rtc_profile(profile: Profile) -> ProtectionProfile {
    match profile {
        Profile::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
        Profile::Aes128CmHmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
    }
}

fn master(seed: u8, profile: Profile) -> (Vec<u8>, Vec<u8>) {
    let key = (0..16)
        .map(|i| seed.wrapping_mul(31).wrapping_add(i))
        .collect();
    let salt = (0..profile.salt_len() as u8)
        .map(|i| seed ^ (i * 7))
        .collect();
    (key, salt)
}

fn context(profile: Profile, seed: u8, crypto: &dyn RTCCrypto) -> Context {
    let (key, salt) = master(seed, profile);
    Context::new(&key, &salt, rtc_profile(profile), None, None, crypto).unwrap()
}

fn packet(ssrc: u32, sequence: u16) -> (Vec<u8>, usize) {
    let header = Header {
        version: 2,
        marker: sequence.is_multiple_of(3),
        payload_type: 96,
        sequence_number: sequence,
        timestamp: 90_000u32.wrapping_mul(sequence as u32),
        ssrc,
        ..Default::default()
    };
    let mut bytes = header.marshal().unwrap().to_vec();
    let header_len = bytes.len();
    bytes.extend((0..700u32).map(|i| (i as u8) ^ (sequence as u8)));
    (bytes, header_len)
}

fn protect(sender: &mut SrtpSender, roc: u32, ssrc: u32, sequence: u16) -> Vec<u8> {
    let (plain, header_len) = packet(ssrc, sequence);
    let mut buf = BytesMut::with_capacity(2048);
    buf.extend_from_slice(&plain);
    sender
        .protect(&mut buf, header_len, ssrc, roc, sequence)
        .unwrap();
    buf.to_vec()
}

/// The tap sees what webrtc-rs's DTLS handler does when a handshake ends:
/// rtc-srtp makes the local context, then the remote one, through the
/// connection's provider. The sender it yields must protect exactly as an
/// rtc-srtp context with the local keys does.
#[test]
fn the_tap_yields_the_local_keys_and_protects_as_rtc_srtp_does() {
    for profile in [Profile::AeadAes128Gcm, Profile::Aes128CmHmacSha1_80] {
        let tap = KeyTap::new(Arc::new(RingProvider::new()));
        assert!(tap.sender().is_none(), "no keys before a handshake");
        let _local = context(profile, 1, tap.crypto());
        assert!(tap.sender().is_none(), "half a pair is no session");
        let _remote = context(profile, 2, tap.crypto());
        let mut ours = tap.sender().expect("keys");
        assert_eq!(ours.profile(), profile);

        let plain = RingProvider::new();
        let mut reference = context(profile, 1, plain.crypto());
        let mut receiver = context(profile, 1, plain.crypto());
        for sequence in [1u16, 2, 3, 500] {
            let (bytes, _) = packet(0xfeed, sequence);
            let expected = reference.encrypt_rtp(&bytes).unwrap();
            let got = protect(&mut ours, 0, 0xfeed, sequence);
            assert_eq!(got, expected.to_vec(), "{profile:?} seq {sequence}");
            let opened = receiver.decrypt_rtp(&got).unwrap();
            assert_eq!(opened.to_vec(), bytes);
        }
    }
}

/// A second handshake (a DTLS restart) replaces the keys.
#[test]
fn the_last_pair_of_keys_wins() {
    let profile = Profile::AeadAes128Gcm;
    let tap = KeyTap::new(Arc::new(RingProvider::new()));
    for seed in [1, 2, 3, 4] {
        let _ = context(profile, seed, tap.crypto());
    }
    let mut ours = tap.sender().unwrap();
    let plain = RingProvider::new();
    let mut receiver = context(profile, 3, plain.crypto());
    let got = protect(&mut ours, 0, 9, 10);
    assert!(receiver.decrypt_rtp(&got).is_ok());
}

/// Across a sequence number wrap, and for a retransmission from before it,
/// the receiver's view of the rollover counter and ours agree.
#[test]
fn protection_follows_the_rollover_counter_across_a_wrap() {
    for profile in [Profile::AeadAes128Gcm, Profile::Aes128CmHmacSha1_80] {
        let plain = RingProvider::new();
        let (key, salt) = master(5, profile);
        let mut ours = SrtpSender::new(profile, &key, &salt, plain.crypto()).unwrap();
        let mut receiver = context(profile, 5, plain.crypto());
        let mut rollover = Rollover::default();
        // 65535 is "lost" and resent after the wrap.
        for sequence in [65_533u16, 65_534, 0, 1, 2] {
            let roc = rollover.send(sequence);
            let got = protect(&mut ours, roc, 7, sequence);
            let opened = receiver.decrypt_rtp(&got).unwrap();
            assert_eq!(opened.to_vec(), packet(7, sequence).0);
        }
        let roc = rollover.send(65_535);
        assert_eq!(roc, 0, "a retransmission from before the wrap");
        let got = protect(&mut ours, roc, 7, 65_535);
        assert!(receiver.decrypt_rtp(&got).is_ok(), "{profile:?}");
        assert_eq!(rollover.send(3), 1);
    }
}

#[test]
fn rollover_counts_wraps_and_reaches_back() {
    let mut r = Rollover::default();
    assert_eq!(r.send(65_000), 0);
    assert_eq!(r.send(65_535), 0);
    assert_eq!(r.send(10), 1);
    assert_eq!(r.of(65_500), 0);
    assert_eq!(r.of(5), 1);
    assert_eq!(r.send(20_000), 1);
    assert_eq!(r.send(40_000), 1);
    assert_eq!(r.send(65_535), 1);
    assert_eq!(r.send(0), 2);
}

#[test]
fn a_packet_shorter_than_its_header_is_refused() {
    let plain = RingProvider::new();
    let (key, salt) = master(1, Profile::AeadAes128Gcm);
    let mut ours = SrtpSender::new(Profile::AeadAes128Gcm, &key, &salt, plain.crypto()).unwrap();
    let mut buf = BytesMut::from(&[0x80u8, 96, 0, 1][..]);
    assert!(matches!(
        ours.protect(&mut buf, 12, 1, 0, 1),
        Err(SrtpError::TooLong)
    ));
}
