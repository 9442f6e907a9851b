//! The per-packet cost of forwarding: the fan-out chooses a layer and
//! renumbers for every subscriber, then per subscriber the RTP header is
//! rewritten and the packet SRTP-protected with that subscriber's keys. Fanned out to 1, 10 and 100
//! subscribers, for the two SRTP profiles browsers negotiate.
//!
//! `forward/…` is Salon's path (`salon_sfu::outbound`: header and SRTP in
//! place in a pooled buffer, noted for NACKs). `rtc_srtp/…` does the same
//! with webrtc-rs's `rtc-srtp` context, which allocates the packet it
//! returns: the path before Salon protected packets itself.

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rtc::crypto::RTCCryptoProvider;
use rtc::crypto::providers::RingProvider;
use rtc::rtp::header::Header;
use rtc::shared::marshal::{Marshal, MarshalSize};
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;
use salon_common::ParticipantSid;
use salon_sfu::fanout::Fanout;
use salon_sfu::outbound::{BufferPool, OutPacket, Outbound, StreamInfo};
use salon_sfu::rewriter::Rank;
use salon_sfu::srtp::{Profile, SrtpSender};
use std::hint::black_box;
use std::time::Instant;

/// A typical video packet: 12-byte header and a payload filling a 1200-byte datagram.
const PAYLOAD: usize = 1188;

fn subscriber_context(profile: ProtectionProfile, seed: u8, provider: &RingProvider) -> Context {
    let key: Vec<u8> = (0..profile.key_len())
        .map(|i| seed.wrapping_add(i as u8))
        .collect();
    let salt: Vec<u8> = (0..profile.salt_len()).map(|i| seed ^ i as u8).collect();
    Context::new(&key, &salt, profile, None, None, provider.crypto()).expect("srtp context")
}

fn outbound(profile: Profile, seed: u8, provider: &RingProvider) -> Outbound {
    let key: Vec<u8> = (0..16).map(|i| seed.wrapping_add(i as u8)).collect();
    let salt: Vec<u8> = (0..profile.salt_len()).map(|i| seed ^ i as u8).collect();
    Outbound::new(SrtpSender::new(profile, &key, &salt, provider.crypto()).expect("srtp sender"))
}

/// A video track's fan-out to `subscribers` sinks, numbered from 0.
fn fanout_to(subscribers: usize) -> Fanout<usize> {
    let mut fan = Fanout::new(90_000, None);
    for i in 0..subscribers {
        fan.add(ParticipantSid::new(format!("PA_{i}")), i);
    }
    fan
}

fn forward(c: &mut Criterion) {
    let provider = RingProvider::new();
    let payload = Bytes::from(vec![0x5au8; PAYLOAD]);
    for (name, profile) in [
        ("aead_aes128_gcm", Profile::AeadAes128Gcm),
        ("aes128_cm_hmac_sha1_80", Profile::Aes128CmHmacSha1_80),
    ] {
        let mut group = c.benchmark_group(format!("forward/{name}"));
        for fanout in [1usize, 10, 100] {
            let mut subscribers: Vec<Outbound> = (0..fanout)
                .map(|i| outbound(profile, i as u8, &provider))
                .collect();
            let mut fan = fanout_to(fanout);
            let mut pool = BufferPool::default();
            let info = StreamInfo {
                sender: Default::default(),
                clock_rate: 90_000,
                rtx: None,
            };
            let mut seq: u16 = 0;
            let mut ts: u32 = 0;
            let now = Instant::now();
            group.throughput(Throughput::Elements(fanout as u64));
            group.bench_with_input(BenchmarkId::from_parameter(fanout), &fanout, |b, _| {
                b.iter(|| {
                    seq = seq.wrapping_add(1);
                    ts = ts.wrapping_add(3000);
                    fan.on_packet(now, Rank::HIGH, 7, seq, ts, &payload);
                    for (&i, route) in fan.routes() {
                        let packet = OutPacket {
                            ssrc: 0x1000 + i as u32,
                            payload_type: 96,
                            sequence: route.sequence,
                            timestamp: route.timestamp,
                            marker: false,
                            payload: &payload,
                            vp8: route.vp8,
                        };
                        let datagram = subscribers[i]
                            .send(now, info, packet, &mut pool)
                            .expect("protect");
                        // The shell gives the buffer back once sent.
                        pool.give(black_box(datagram));
                    }
                });
            });
        }
        group.finish();
    }
}

/// The layer choice alone, without SRTP: a publisher's three simulcast
/// layers, a packet of each per iteration, fanned out to 10 subscribers
/// who all want the best. What `forward/` spends deciding when the track
/// has layers to choose between.
fn layers(c: &mut Criterion) {
    let payload = vec![0x5au8; PAYLOAD];
    let mut group = c.benchmark_group("layers");
    let mut fan = fanout_to(10);
    let mut seq: u16 = 0;
    let mut ts: u32 = 0;
    let start = Instant::now();
    let mut tick = 0u64;
    group.throughput(Throughput::Elements(3));
    group.bench_function("three_to_10", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1);
            ts = ts.wrapping_add(3000);
            tick = tick.wrapping_add(1);
            // A frame's worth of time between iterations.
            let now = start + std::time::Duration::from_micros(tick * 33_000);
            for (rank, ssrc) in [(Rank::LOW, 5), (Rank::MEDIUM, 6), (Rank::HIGH, 7)] {
                fan.on_packet(now, rank, ssrc, seq, ts, &payload);
                black_box(fan.routes().count());
            }
        });
    });
    group.finish();
}

fn rtc_srtp(c: &mut Criterion) {
    let provider = RingProvider::new();
    let payload = vec![0x5au8; PAYLOAD];
    for (name, profile) in [
        ("aead_aes128_gcm", ProtectionProfile::AeadAes128Gcm),
        (
            "aes128_cm_hmac_sha1_80",
            ProtectionProfile::Aes128CmHmacSha1_80,
        ),
    ] {
        let mut group = c.benchmark_group(format!("rtc_srtp/{name}"));
        for fanout in [1usize, 10, 100] {
            let mut contexts: Vec<Context> = (0..fanout)
                .map(|i| subscriber_context(profile, i as u8, &provider))
                .collect();
            let ssrcs: Vec<u32> = (0..fanout as u32).map(|i| 0x1000 + i).collect();
            let mut fan = fanout_to(fanout);
            let mut buf = vec![0u8; 12 + PAYLOAD];
            let mut seq: u16 = 0;
            let mut ts: u32 = 0;
            let now = Instant::now();
            group.throughput(Throughput::Elements(fanout as u64));
            group.bench_with_input(BenchmarkId::from_parameter(fanout), &fanout, |b, _| {
                b.iter(|| {
                    seq = seq.wrapping_add(1);
                    ts = ts.wrapping_add(3000);
                    fan.on_packet(now, Rank::HIGH, 7, seq, ts, &payload);
                    for (&i, route) in fan.routes() {
                        let header = Header {
                            version: 2,
                            payload_type: 96,
                            sequence_number: route.sequence,
                            timestamp: route.timestamp,
                            ssrc: ssrcs[i],
                            ..Default::default()
                        };
                        let len = header.marshal_size();
                        header.marshal_to(&mut buf[..len]).expect("header");
                        buf[len..len + PAYLOAD].copy_from_slice(&payload);
                        let out = contexts[i]
                            .encrypt_rtp_with_header(&buf[..len + PAYLOAD], &header)
                            .expect("protect");
                        black_box(out);
                    }
                });
            });
        }
        group.finish();
    }
}

criterion_group!(benches, forward, layers, rtc_srtp);
criterion_main!(benches);
