#![allow(clippy::unwrap_used)]

use super::*;
use crate::fanout::Fanout;
use crate::rewriter::Rank;
use crate::srtp::Profile;
use rtc::crypto::RTCCryptoProvider;
use rtc::crypto::providers::RingProvider;
use rtc::rtp::packet::Packet;
use rtc::shared::marshal::Unmarshal;
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;
use salon_common::ParticipantSid;

const KEY: [u8; 16] = [7; 16];
const SALT: [u8; 12] = [3; 12];

fn outbound(seed: u8) -> Outbound {
    let provider = RingProvider::new();
    let key = KEY.map(|b| b ^ seed);
    Outbound::new(SrtpSender::new(Profile::AeadAes128Gcm, &key, &SALT, provider.crypto()).unwrap())
}

fn receiver(seed: u8) -> Context {
    let provider = RingProvider::new();
    let key = KEY.map(|b| b ^ seed);
    Context::new(
        &key,
        &SALT,
        ProtectionProfile::AeadAes128Gcm,
        None,
        None,
        provider.crypto(),
    )
    .unwrap()
}

fn info() -> StreamInfo {
    StreamInfo {
        sender: RTCRtpSenderId::default(),
        clock_rate: 90_000,
    }
}

fn out(payload: &Bytes, sequence: u16, timestamp: u32) -> OutPacket<'_> {
    OutPacket {
        ssrc: 0xabc,
        payload_type: 96,
        sequence,
        timestamp,
        marker: true,
        payload,
    }
}

#[test]
fn a_sent_packet_opens_at_the_subscriber_with_its_header_and_payload() {
    let mut pool = BufferPool::default();
    let mut ob = outbound(1);
    let payload = Bytes::from_static(b"a frame of video");
    let datagram = ob
        .send(Instant::now(), info(), out(&payload, 42, 9000), &mut pool)
        .unwrap();
    let plain = receiver(1).decrypt_rtp(&datagram).unwrap();
    let packet = Packet::unmarshal(&mut plain.freeze()).unwrap();
    assert_eq!(packet.header.ssrc, 0xabc);
    assert_eq!(packet.header.sequence_number, 42);
    assert_eq!(packet.header.timestamp, 9000);
    assert_eq!(packet.header.payload_type, 96);
    assert!(packet.header.marker);
    assert!(!packet.header.extension);
    assert_eq!(packet.payload, payload);
}

#[test]
fn a_nacked_packet_is_sent_again_while_the_history_holds_it() {
    let mut pool = BufferPool::default();
    let mut ob = outbound(2);
    let now = Instant::now();
    let payload = Bytes::from_static(b"payload");
    let first = ob
        .send(now, info(), out(&payload, 100, 1), &mut pool)
        .unwrap();
    let again = ob.resend(0xabc, 100, &mut pool).unwrap();
    assert_eq!(first, again, "same index, same keys: the same datagram");
    assert!(ob.resend(0xabc, 101, &mut pool).is_none(), "never sent");
    assert!(ob.resend(0xdef, 100, &mut pool).is_none(), "unknown stream");
    for sequence in 101..101 + HISTORY as u16 {
        ob.send(now, info(), out(&payload, sequence, 1), &mut pool)
            .unwrap();
    }
    assert!(ob.resend(0xabc, 100, &mut pool).is_none(), "overwritten");
}

#[test]
fn reports_count_what_was_sent_and_extrapolate_the_clock() {
    let mut pool = BufferPool::default();
    let mut ob = outbound(3);
    let t0 = Instant::now();
    let payload = Bytes::from(vec![0u8; 1000]);
    ob.send(t0, info(), out(&payload, 1, 90_000), &mut pool)
        .unwrap();
    ob.send(t0, info(), out(&payload, 2, 90_000), &mut pool)
        .unwrap();
    ob.resend(0xabc, 1, &mut pool).unwrap();
    let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let reports = ob.reports(t0 + Duration::from_millis(500), wall);
    assert_eq!(reports.len(), 1);
    let sr = &reports[0].1;
    assert_eq!(sr.ssrc, 0xabc);
    assert_eq!(sr.packet_count, 3);
    assert_eq!(sr.octet_count, 3000);
    assert_eq!(sr.rtp_time, 90_000 + 45_000);
    assert_eq!(sr.ntp_time >> 32, 1_700_000_000 + 2_208_988_800);

    // An idle stream reports nothing and lets go of its history.
    assert!(ob.reports(t0 + IDLE, wall).is_empty());
    assert!(ob.resend(0xabc, 2, &mut pool).is_none());
}

#[test]
fn the_pool_reuses_what_it_is_given_back() {
    let mut pool = BufferPool::default();
    let buf = pool.take();
    let ptr = buf.as_ptr();
    pool.give(buf);
    assert_eq!(pool.take().as_ptr(), ptr);
    // A buffer too small to hold a packet is not kept.
    pool.give(BytesMut::with_capacity(16));
    assert!(pool.free.is_empty());
}

/// The per-subscriber half of forwarding, as the worker runs it for a
/// 1 → 10 fan-out: the fan-out picks and renumbers, then for each
/// subscriber the header is written and SRTP-protected into a pooled
/// buffer, noted for NACKs and counted for reports, and the shell gives
/// the buffer back once sent. After warm-up none of it allocates.
#[test]
fn forwarding_to_ten_subscribers_allocates_nothing_after_warm_up() {
    let now = Instant::now();
    let mut fanout: Fanout<usize> = Fanout::new(90_000, None);
    let mut subscribers: Vec<Outbound> = (0..10).map(|i| outbound(i as u8)).collect();
    for i in 0..10 {
        fanout.add(ParticipantSid::new(format!("PA_{i}")), i);
    }
    let mut pool = BufferPool::default();
    let mut queue: std::collections::VecDeque<BytesMut> = std::collections::VecDeque::new();
    // What the publisher's connection hands the worker: a decrypted payload
    // it allocated on receipt, shared by every copy.
    let payloads: Vec<Bytes> = (0..64).map(|i| Bytes::from(vec![i as u8; 1100])).collect();
    let mut forwarded = 0u64;
    let mut run = |packets: u32, forwarded: &mut u64| {
        for n in 0..packets {
            let sequence = n as u16;
            let timestamp = n.wrapping_mul(3000);
            let payload = &payloads[n as usize % payloads.len()];
            fanout.on_packet(now, Rank::SINGLE, 0x1234, sequence, timestamp, payload);
            for (&i, route) in fanout.routes() {
                let packet = OutPacket {
                    ssrc: 0x5000 + i as u32,
                    payload_type: 96,
                    sequence: route.sequence,
                    timestamp: route.timestamp,
                    marker: false,
                    payload,
                };
                let datagram = subscribers[i].send(now, info(), packet, &mut pool).unwrap();
                queue.push_back(datagram);
                *forwarded += 1;
            }
            // The shell sends and gives the buffers back.
            while let Some(sent) = queue.pop_front() {
                pool.give(sent);
            }
        }
    };
    // The counter is live: a zero below is not for want of counting.
    let boxed = allocation_counter::measure(|| drop(std::hint::black_box(Box::new(1u64))));
    assert_eq!(boxed.count_total, 1);
    run(2 * HISTORY as u32, &mut forwarded);
    forwarded = 0;
    // allocation-counter counts this thread's allocations only.
    let allocated = allocation_counter::measure(|| run(20_000, &mut forwarded)).count_total;
    assert_eq!(forwarded, 200_000);
    assert_eq!(
        allocated, 0,
        "{allocated} allocations for {forwarded} forwarded packets"
    );
}
