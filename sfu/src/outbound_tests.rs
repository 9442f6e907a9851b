#![allow(clippy::unwrap_used)]

use super::*;
use crate::clock::ntp_units;
use crate::fanout::Fanout;
use crate::probe::ProbeVerdict;
use crate::rewriter::Rank;
use crate::srtp::Profile;
use rtc::crypto::RTCCryptoProvider;
use rtc::crypto::providers::RingProvider;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
    PacketStatusChunk, RecvDelta, RunLengthChunk, SymbolTypeTcc,
};
use rtc::rtp::packet::Packet;
use rtc::shared::marshal::Unmarshal;
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;
use salon_common::ParticipantSid;
use std::time::UNIX_EPOCH;

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
        rtx: None,
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
        vp8: None,
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
    let again = ob.resend(now, 0xabc, 100, &mut pool).unwrap();
    assert_eq!(first, again, "same index, same keys: the same datagram");
    assert!(
        ob.resend(now, 0xabc, 101, &mut pool).is_none(),
        "never sent"
    );
    assert!(
        ob.resend(now, 0xdef, 100, &mut pool).is_none(),
        "unknown stream"
    );
    for sequence in 101..101 + HISTORY as u16 {
        ob.send(now, info(), out(&payload, sequence, 1), &mut pool)
            .unwrap();
    }
    assert!(
        ob.resend(now, 0xabc, 100, &mut pool).is_none(),
        "overwritten"
    );
}

/// A subscriber that NACKs without end gets at most so many resends a
/// second.
#[test]
fn resends_are_capped_per_second() {
    let mut pool = BufferPool::default();
    let mut ob = outbound(8);
    let t0 = Instant::now();
    let payload = Bytes::from_static(b"payload");
    ob.send(t0, info(), out(&payload, 1, 1), &mut pool).unwrap();
    let resent = (0..MAX_RESENDS_PER_SECOND + 50)
        .filter(|_| ob.resend(t0, 0xabc, 1, &mut pool).is_some())
        .count();
    assert_eq!(resent, MAX_RESENDS_PER_SECOND as usize);
    let later = t0 + Duration::from_secs(1);
    assert!(ob.resend(later, 0xabc, 1, &mut pool).is_some());
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
    ob.resend(t0, 0xabc, 1, &mut pool).unwrap();
    let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let reports = ob.tick(t0 + Duration::from_millis(500), wall);
    assert_eq!(reports.len(), 1);
    let sr = &reports[0].1;
    assert_eq!(sr.ssrc, 0xabc);
    assert_eq!(sr.packet_count, 3);
    assert_eq!(sr.octet_count, 3000);
    assert_eq!(sr.rtp_time, 90_000 + 45_000);
    assert_eq!(sr.ntp_time >> 32, 1_700_000_000 + 2_208_988_800);

    // An idle stream reports nothing and lets go of its history.
    assert!(ob.tick(t0 + IDLE, wall).is_empty());
    assert!(ob.resend(t0, 0xabc, 2, &mut pool).is_none());
}

#[test]
fn with_the_publishers_clock_known_a_sender_report_follows_its_line_not_the_last_packet() {
    let mut pool = BufferPool::default();
    let mut ob = outbound(3);
    let t0 = Instant::now();
    let payload = Bytes::from(vec![0u8; 100]);
    ob.send(t0, info(), out(&payload, 1, 90_000), &mut pool)
        .unwrap();
    let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    // The publisher's report put RTP time 500_000 at 0.25 s before the
    // wall time of the report to come: the packet sent at 90_000 left an
    // encoder long after its capture, which the report knows and the
    // sending time does not.
    let ntp = Ntp::from_wall(wall);
    let clock = MediaClock {
        ntp: ntp.plus(-ntp_units(Duration::from_millis(250))),
        rtp: 500_000,
        rate: 90_000,
    };
    ob.set_clock(0xabc, Some(clock));
    let reports = ob.tick(t0 + Duration::from_millis(500), wall);
    assert_eq!(reports[0].1.ntp_time, ntp.0);
    assert_eq!(reports[0].1.rtp_time, 500_000 + 22_500);

    // Unknown again (the subscriber's layer has no report yet): the line
    // stays, rather than the packets' timing in between.
    ob.set_clock(0xabc, None);
    let reports = ob.tick(t0 + Duration::from_millis(1000), wall);
    assert_eq!(reports[0].1.rtp_time, 500_000 + 22_500);
    // A line that puts now before the last report's RTP time: no report
    // until time catches up.
    ob.set_clock(
        0xabc,
        Some(clock.shifted(ntp_units(Duration::from_millis(100)), 0)),
    );
    assert!(ob.tick(t0 + Duration::from_millis(1000), wall).is_empty());
    let later = wall + Duration::from_millis(200);
    let reports = ob.tick(t0 + Duration::from_millis(1200), later);
    assert_eq!(reports[0].1.rtp_time, 500_000 + 22_500 + 9_000);
    // A stream never sent on is not made up.
    ob.set_clock(0xdef, Some(clock));
    assert_eq!(ob.tick(t0 + Duration::from_millis(1200), later).len(), 1);
}

#[test]
fn a_forgotten_stream_is_neither_resent_nor_reported() {
    let mut pool = BufferPool::default();
    let mut ob = outbound(3);
    let t0 = Instant::now();
    let payload = Bytes::from_static(b"payload");
    ob.send(t0, info(), out(&payload, 1, 90_000), &mut pool)
        .unwrap();
    let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    assert_eq!(ob.tick(t0, wall).len(), 1);
    ob.forget_stream(0xabc);
    assert!(ob.resend(t0, 0xabc, 1, &mut pool).is_none());
    assert!(ob.tick(t0, wall).is_empty());
    // Sent on again (subscribed again with the same SSRC): a new stream.
    ob.send(t0, info(), out(&payload, 2, 90_000), &mut pool)
        .unwrap();
    assert_eq!(ob.tick(t0, wall)[0].1.packet_count, 1);
}

#[test]
fn with_transport_cc_every_packet_carries_the_next_transport_wide_number() {
    let mut pool = BufferPool::default();
    let mut ob = outbound(4);
    ob.set_transport_cc(Some(5));
    let now = Instant::now();
    let payload = Bytes::from_static(b"payload");
    let mut receiver = receiver(4);
    let first = ob
        .send(now, info(), out(&payload, 7, 1), &mut pool)
        .unwrap();
    let again = ob.resend(now, 0xabc, 7, &mut pool).unwrap();
    for (datagram, number) in [(first, 0u16), (again, 1)] {
        let plain = receiver.decrypt_rtp(&datagram);
        // The resent copy is the same RTP packet: a replay to the receiver's
        // SRTP, which is why only the first decrypts here.
        let Ok(plain) = plain else {
            assert_eq!(number, 1);
            assert_eq!(&datagram[12..20], &[0xbe, 0xde, 0, 1, 0x51, 0, 1, 0]);
            continue;
        };
        let packet = Packet::unmarshal(&mut plain.freeze()).unwrap();
        assert!(packet.header.extension);
        assert_eq!(
            packet.header.get_extension(5).unwrap().as_ref(),
            &number.to_be_bytes()
        );
        assert_eq!(packet.payload, payload);
    }
}

/// Transport-wide feedback for `count` packets from `first`, arriving
/// `spacing` apart from `start` on the receiver's clock, except those
/// `lost` says never arrived.
fn feedback(
    first: u16,
    count: u16,
    start: Duration,
    spacing: Duration,
    lost: impl Fn(u16) -> bool,
) -> TransportLayerCc {
    let arrivals: Vec<Option<Duration>> = (0..count)
        .map(|i| (!lost(first.wrapping_add(i))).then(|| start + spacing * u32::from(i)))
        .collect();
    feedback_at(first, &arrivals)
}

/// Packets of 1200 bytes sent 1 ms apart (about 10 Mb/s) for two
/// seconds. They arrive `arrival_spacing` apart: 1 ms when the link keeps
/// up, 4 ms when it carries a quarter of that and a queue builds; those
/// `lost` picks never arrive. The subscriber reports every 50 ms of its
/// clock, and the report reaches us 10 ms later.
fn estimate_after(arrival_spacing: Duration, lost: impl Fn(u16) -> bool + Copy) -> Option<Budget> {
    const PACKETS: u32 = 2000;
    let mut pool = BufferPool::default();
    let mut ob = outbound(6);
    ob.set_transport_cc(Some(3));
    let t0 = Instant::now();
    let payload = Bytes::from(vec![0u8; 1200]);
    let sent_at = |n: u32| Duration::from_millis(u64::from(n));
    let arrives_at = |n: u32| Duration::from_millis(5) + arrival_spacing * n;
    let interval = Duration::from_millis(50);
    let mut next_sent = 0u32;
    let mut next_reported = 0u32;
    let mut report_at = interval;
    while next_reported < PACKETS {
        // Everything sent before the report reaches us.
        let delivered = report_at + Duration::from_millis(10);
        while next_sent < PACKETS && sent_at(next_sent) < delivered {
            let now = t0 + sent_at(next_sent);
            let n = next_sent as u16;
            let datagram = ob
                .send(now, info(), out(&payload, n, 0), &mut pool)
                .unwrap();
            pool.give(datagram);
            next_sent += 1;
        }
        let first = next_reported;
        while next_reported < next_sent && arrives_at(next_reported) < report_at {
            next_reported += 1;
        }
        if next_reported > first {
            let fb = feedback(
                first as u16,
                (next_reported - first) as u16,
                Duration::from_secs(1) + arrives_at(first),
                arrival_spacing,
                lost,
            );
            ob.on_transport_feedback(t0 + delivered, &fb);
        }
        report_at += interval;
    }
    ob.estimate()
}

const NONE_LOST: fn(u16) -> bool = |_| false;

#[test]
fn the_estimate_holds_on_a_clear_link_and_falls_when_a_queue_builds() {
    // A clear link limits nothing.
    assert_eq!(estimate_after(Duration::from_millis(1), NONE_LOST), None);
    // A quarter of about 9.6 Mb/s arrives: the estimate goes below that,
    // and the queue is reason enough to pause.
    let congested = estimate_after(Duration::from_millis(4), NONE_LOST).expect("an estimate");
    assert!(
        congested.layers < 2_400_000,
        "congested link: {congested:?}"
    );
    assert!(congested.layers >= MIN_ESTIMATE as u64, "{congested:?}");
    assert!(congested.pause < 2_400_000, "congested link: {congested:?}");
}

#[test]
fn random_loss_lowers_the_layers_but_pauses_only_when_heavy() {
    let clear = Duration::from_millis(1);
    // One packet in five lost, with no queue: the layers come down (GCC's
    // loss half falls past 10 %, here by half in two seconds), but the
    // link is not known to be short of room, so the lowest layer is not
    // paused.
    let lossy = estimate_after(clear, |n| n % 5 == 0).expect("an estimate");
    assert!(lossy.layers < 15_000_000, "20 % loss: {lossy:?}");
    assert_eq!(
        lossy.pause, MAX_ESTIMATE as u64,
        "20 % loss, no queue: {lossy:?}"
    );
    // One in two: retransmissions cannot keep up; the video pauses too.
    let heavy = estimate_after(clear, |n| n % 2 == 0).expect("an estimate");
    assert_eq!(heavy.pause, heavy.layers, "50 % loss: {heavy:?}");
    assert!(heavy.pause < 3_000_000, "50 % loss: {heavy:?}");
}

#[test]
fn there_is_no_estimate_without_feedback_or_before_congestion() {
    let mut ob = outbound(7);
    assert_eq!(ob.estimate(), None);
    ob.set_transport_cc(Some(3));
    assert_eq!(ob.estimate(), None, "no congestion seen yet: no limit");
    ob.set_transport_cc(None);
    assert_eq!(ob.estimate(), None);
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
/// 1 → 10 fan-out at 500 packets a second: the fan-out picks and renumbers,
/// then for each subscriber the header (with its transport-wide number) is
/// written and SRTP-protected into a pooled buffer, noted for NACKs,
/// reports and the bandwidth estimate, and the shell gives the buffer back
/// once sent. After warm-up none of it allocates. The once-a-second upkeep
/// (sender reports, forgetting unacknowledged packets) runs between the
/// measured stretches: it may allocate, once a second, not per packet.
#[test]
fn forwarding_to_ten_subscribers_allocates_nothing_after_warm_up() {
    let t0 = Instant::now();
    let mut fanout: Fanout<usize> = Fanout::new(90_000, None);
    let mut subscribers: Vec<Outbound> = (0..10).map(|i| outbound(i as u8)).collect();
    for s in &mut subscribers {
        s.set_transport_cc(Some(3));
    }
    for i in 0..10 {
        fanout.add(ParticipantSid::new(format!("PA_{i}")), i);
    }
    let mut pool = BufferPool::default();
    let mut queue: std::collections::VecDeque<BytesMut> = std::collections::VecDeque::new();
    // What the publisher's connection hands the worker: a decrypted payload
    // it allocated on receipt, shared by every copy.
    let payloads: Vec<Bytes> = (0..64).map(|i| Bytes::from(vec![i as u8; 1100])).collect();
    let mut forwarded = 0u64;
    let at = |n: u32| t0 + Duration::from_millis(2 * u64::from(n));
    // One second of packets, from packet `first` on.
    let mut second = |first: u32,
                      fanout: &mut Fanout<usize>,
                      subscribers: &mut [Outbound],
                      forwarded: &mut u64| {
        for n in first..first + 500 {
            let now = at(n);
            let payload = &payloads[n as usize % payloads.len()];
            fanout.on_packet(
                now,
                Rank::SINGLE,
                0x1234,
                n as u16,
                n.wrapping_mul(180),
                payload,
            );
            for (&i, route) in fanout.routes() {
                let packet = OutPacket {
                    ssrc: 0x5000 + i as u32,
                    payload_type: 96,
                    sequence: route.sequence,
                    timestamp: route.timestamp,
                    marker: false,
                    payload,
                    vp8: None,
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
    let wall = SystemTime::now();
    let mut allocated = 0;
    for s in 0..40u32 {
        if s == 10 {
            // Warmed up: buffers, histories and indexes have their size.
            forwarded = 0;
            allocated = 0;
        }
        allocated += allocation_counter::measure(|| {
            second(s * 500, &mut fanout, &mut subscribers, &mut forwarded)
        })
        .count_total;
        for sub in &mut subscribers {
            sub.tick(at(s * 500 + 500), wall);
        }
    }
    assert_eq!(forwarded, 30 * 500 * 10);
    assert_eq!(
        allocated, 0,
        "{allocated} allocations for {forwarded} forwarded packets"
    );
}

/// Transport-wide feedback from `first` on, one entry per packet: when it
/// arrived on the receiver's clock, or `None` if it never did.
fn feedback_at(first: u16, arrivals: &[Option<Duration>]) -> TransportLayerCc {
    let tick = Duration::from_millis(64);
    let start = arrivals
        .iter()
        .flatten()
        .next()
        .copied()
        .unwrap_or_default();
    let reference = (start.as_micros() / tick.as_micros()) as u32;
    let mut at = tick * reference;
    let mut recv_deltas = Vec::new();
    let mut packet_chunks: Vec<PacketStatusChunk> = Vec::new();
    for arrival in arrivals {
        let symbol = match arrival {
            Some(arrival) => {
                recv_deltas.push(RecvDelta {
                    type_tcc_packet: SymbolTypeTcc::PacketReceivedLargeDelta,
                    delta: arrival.as_micros() as i64 - at.as_micros() as i64,
                });
                at = *arrival;
                SymbolTypeTcc::PacketReceivedLargeDelta
            }
            None => SymbolTypeTcc::PacketNotReceived,
        };
        match packet_chunks.last_mut() {
            Some(PacketStatusChunk::RunLengthChunk(run)) if run.packet_status_symbol == symbol => {
                run.run_length += 1;
            }
            _ => packet_chunks.push(PacketStatusChunk::RunLengthChunk(RunLengthChunk {
                packet_status_symbol: symbol,
                run_length: 1,
                ..Default::default()
            })),
        }
    }
    TransportLayerCc {
        base_sequence_number: first,
        packet_status_count: arrivals.len() as u16,
        reference_time: reference,
        packet_chunks,
        recv_deltas,
        ..Default::default()
    }
}

/// A subscriber's downlink in simulated time: a queue drained at
/// `capacity` bits per second; the subscriber reports every 50 ms what
/// arrived, and the report reaches the sender 10 ms later.
struct Downlink {
    ob: Outbound,
    pool: BufferPool,
    t0: Instant,
    /// Simulated milliseconds so far.
    ms: u64,
    capacity: u64,
    /// When the link is free again, on the receiver's clock.
    free: Duration,
    /// Transport-wide number and arrival of each packet not reported yet.
    unreported: Vec<(u16, Duration)>,
    sequence: u16,
    /// Bytes the probe sent.
    padded: usize,
}

impl Downlink {
    fn new(capacity: u64) -> Self {
        let mut ob = outbound(8);
        ob.set_transport_cc(Some(3));
        Self {
            ob,
            pool: BufferPool::default(),
            t0: Instant::now(),
            ms: 0,
            capacity,
            free: Duration::ZERO,
            unreported: Vec::new(),
            sequence: 0,
            padded: 0,
        }
    }

    fn now(&self) -> Instant {
        self.t0 + Duration::from_millis(self.ms)
    }

    /// The transport-wide number a datagram carries (bytes 16..18 of the
    /// header: the extension element after 0xBEDE and its length).
    fn twcc_number(datagram: &[u8]) -> u16 {
        u16::from_be_bytes([datagram[17], datagram[18]])
    }

    fn deliver(&mut self, datagram: BytesMut) {
        let departed = Duration::from_millis(self.ms);
        let start = self.free.max(departed);
        self.free =
            start + Duration::from_micros(datagram.len() as u64 * 8 * 1_000_000 / self.capacity);
        self.unreported.push((
            Self::twcc_number(&datagram),
            self.free + Duration::from_millis(5),
        ));
        self.pool.give(datagram);
    }

    /// Runs for `ms` milliseconds sending `media` bits per second of
    /// 1000-byte packets, plus whatever a probe asks for every 10 ms.
    fn run(&mut self, ms: u64, media: u64) {
        let payload = Bytes::from(vec![0u8; 1000 - 20 - 16]);
        let end = self.ms + ms;
        let mut media_bytes = 0u64;
        let started = self.ms;
        while self.ms < end {
            while media_bytes * 8 * 1000 < media * (self.ms - started + 1) {
                let now = self.now();
                let datagram = self
                    .ob
                    .send(
                        now,
                        with_rtx(),
                        out(&payload, self.sequence, 0),
                        &mut self.pool,
                    )
                    .expect("sent");
                self.sequence = self.sequence.wrapping_add(1);
                media_bytes += datagram.len() as u64;
                self.deliver(datagram);
            }
            if self.ms.is_multiple_of(10)
                && let Some((ssrc, bytes)) = self.ob.padding_due(self.now())
            {
                let mut padding = Vec::new();
                let (now, pool) = (self.now(), &mut self.pool);
                self.ob.pad(now, ssrc, bytes, pool, |d| padding.push(d));
                for datagram in padding {
                    self.padded += datagram.len();
                    self.deliver(datagram);
                }
            }
            if self.ms.is_multiple_of(50) {
                self.report();
            }
            self.ms += 1;
        }
    }

    /// What arrived by now, reported (a packet still queued is not yet).
    fn report(&mut self) {
        let arrived_by = Duration::from_millis(self.ms);
        let count = self
            .unreported
            .iter()
            .take_while(|(_, arrival)| *arrival <= arrived_by)
            .count();
        if count == 0 {
            return;
        }
        let batch: Vec<_> = self.unreported.drain(..count).collect();
        let arrivals: Vec<_> = batch
            .iter()
            .map(|(_, a)| Some(Duration::from_secs(1) + *a))
            .collect();
        let fb = feedback_at(batch[0].0, &arrivals);
        let at = self.now() + Duration::from_millis(10);
        self.ob.on_transport_feedback(at, &fb);
    }
}

#[test]
fn a_moderate_queue_brings_the_estimate_under_the_link_and_holds_it_there() {
    // A 1 Mb/s link sent 1.4 Mb/s: each 5 ms group is delayed some 2 ms
    // more than the one before, which GCC's own check (12.5 ms) misses
    // until the queue overflows; the trend sees it.
    let mut link = Downlink::new(1_000_000);
    link.run(2000, 1_400_000);
    let found = link.ob.estimate().expect("the queue was found");
    let queued = link.free.saturating_sub(Duration::from_millis(link.ms));
    assert!(
        (500_000..=1_000_000).contains(&found.layers),
        "under what the link delivers: {found:?}"
    );
    assert!(found.pause <= 1_000_000, "{found:?}");
    assert!(queued < Duration::from_millis(1000), "queued {queued:?}");
    // Sending what the estimate allows, the queue drains, and GCC, which
    // climbs whatever the link, is held under what it delivered.
    link.run(10_000, found.layers * 9 / 10);
    let held = link.ob.estimate().expect("still limited");
    let queued = link.free.saturating_sub(Duration::from_millis(link.ms));
    assert!(held.layers <= 1_000_000, "{held:?}");
    assert!(queued < Duration::from_millis(50), "queued {queued:?}");
}

/// The estimate falls on a 1 Mb/s link sent 4 Mb/s; then the link widens
/// to `capacity` while the subscriber gets 300 kb/s. A probe for 1.5 Mb/s
/// more than the estimate goes out as padding.
fn probe_after_congestion(capacity: u64) -> (Downlink, Budget, Option<ProbeVerdict>) {
    let mut link = Downlink::new(1_000_000);
    link.run(1000, 4_000_000);
    assert!(link.ob.estimate().is_some(), "congestion seen");
    link.capacity = capacity;
    link.run(4000, 300_000);
    let before = link.ob.estimate().expect("still limited");
    assert!(before.layers < 2_000_000, "{before:?}");
    // The once-a-second upkeep measures what the connection sends.
    link.ob.tick(link.now(), SystemTime::now());
    link.run(1000, 300_000);
    link.ob.tick(link.now(), SystemTime::now());
    assert!(link.ob.start_probe(link.now(), 1_500_000));
    assert!(link.ob.is_probing(link.now()));
    link.run(1000, 300_000);
    assert!(!link.ob.is_probing(link.now()));
    let verdict = link.ob.conclude_probe(link.now());
    (link, before, verdict)
}

#[test]
fn a_probe_that_the_link_carries_raises_the_estimate_at_once() {
    let (link, before, verdict) = probe_after_congestion(10_000_000);
    let Some(ProbeVerdict::Carried(rate)) = verdict else {
        panic!("the link had room: {verdict:?}");
    };
    let after = link.ob.estimate().expect("an estimate");
    // 1.5 Mb/s more was asked for, but the link's queue was found at
    // about 1 Mb/s (the estimate is at most that; 0.85 of it just after
    // the cut): a probe goes a quarter above it at most, and the estimate
    // rises to what it carried.
    let found = before.layers * 100 / 85;
    let goal = found * 5 / 4;
    assert!(
        after.layers >= goal * 9 / 10 && after.layers <= goal * 12 / 10 * 11 / 10,
        "before {before:?}, carried {rate}, after {after:?}"
    );
    // Half a second at about 1.2 × the goal, less what the media sent.
    let expected = goal * 12 / 10 - link.ob.rate;
    let padded = link.padded as u64 * 8 * 2;
    assert!(
        padded >= expected * 8 / 10 && padded <= expected * 12 / 10,
        "probe sent {padded} b/s, expected about {expected}"
    );
}

#[test]
fn a_probe_that_the_link_cannot_carry_leaves_the_estimate() {
    let (link, before, verdict) = probe_after_congestion(1_000_000);
    assert_eq!(verdict, Some(ProbeVerdict::Congested));
    let after = link.ob.estimate().expect("an estimate");
    assert!(
        after.layers <= before.layers * 3 / 2,
        "before {before:?}, after {after:?}"
    );
}

#[test]
fn without_rtx_there_is_no_probe_and_no_padding() {
    let t0 = Instant::now();
    let payload = Bytes::from_static(b"a frame");
    let limited = |info: StreamInfo| {
        let mut pool = BufferPool::default();
        let mut ob = outbound(9);
        ob.set_transport_cc(Some(3));
        let datagram = ob
            .send(t0, info, out(&payload, 42, 7000), &mut pool)
            .unwrap();
        pool.give(datagram);
        // As after congestion: 1 Mb/s.
        ob.congestion.as_mut().unwrap().estimator =
            Gcc::new(1_000_000.0, MIN_ESTIMATE, MAX_ESTIMATE);
        ob
    };
    let mut ob = limited(info());
    assert!(!ob.start_probe(t0, 500_000), "nothing to pad");
    // Forced, it pads nothing.
    ob.congestion
        .as_mut()
        .unwrap()
        .prober
        .start(t0, 0, 1_000_000);
    assert_eq!(ob.padding_due(t0 + Duration::from_millis(100)), None);
    // With an RTX stream, the same connection probes.
    assert!(limited(with_rtx()).start_probe(t0, 500_000));
}

fn with_rtx() -> StreamInfo {
    StreamInfo {
        rtx: Some(Rtx {
            ssrc: 0xdef0_0001,
            payload_type: 97,
        }),
        ..info()
    }
}

#[test]
fn with_rtx_a_nacked_packet_goes_again_on_the_rtx_stream() {
    let mut pool = BufferPool::default();
    let mut ob = outbound(10);
    let payload = Bytes::from_static(b"a frame of video");
    let t0 = Instant::now();
    for sequence in [65535u16, 0] {
        let datagram = ob
            .send(t0, with_rtx(), out(&payload, sequence, 9000), &mut pool)
            .unwrap();
        pool.give(datagram);
    }
    let mut rx = receiver(10);
    let mut rtx_numbers = Vec::new();
    for original in [65535u16, 0, 65535] {
        let datagram = ob
            .resend(t0, 0xabc, original, &mut pool)
            .expect("in the history");
        let plain = rx.decrypt_rtp(&datagram).unwrap();
        let packet = Packet::unmarshal(&mut plain.freeze()).unwrap();
        assert_eq!(packet.header.ssrc, 0xdef0_0001);
        assert_eq!(packet.header.payload_type, 97);
        assert_eq!(packet.header.timestamp, 9000);
        // RFC 4588: the original sequence number, then the payload.
        assert_eq!(&packet.payload[..2], &original.to_be_bytes());
        assert_eq!(&packet.payload[2..], &payload[..]);
        rtx_numbers.push(packet.header.sequence_number);
    }
    // The RTX stream numbers its own packets, one after another.
    let first = rtx_numbers[0];
    assert_eq!(
        rtx_numbers,
        vec![first, first.wrapping_add(1), first.wrapping_add(2)]
    );
}

#[test]
fn with_rtx_probe_padding_goes_on_the_rtx_stream_at_any_point() {
    let mut pool = BufferPool::default();
    let mut ob = outbound(11);
    ob.set_transport_cc(Some(3));
    let t0 = Instant::now();
    // Too small to be worth resending as a probe.
    let payload = Bytes::from_static(b"the middle of a frame");
    let mut packet = out(&payload, 7, 3000);
    packet.marker = false;
    let datagram = ob.send(t0, with_rtx(), packet, &mut pool).unwrap();
    pool.give(datagram);
    ob.congestion
        .as_mut()
        .unwrap()
        .prober
        .start(t0, 0, 1_000_000);
    let later = t0 + Duration::from_millis(20);
    // Mid-frame: RTX takes no numbers from the media stream.
    let (ssrc, bytes) = ob.padding_due(later).expect("padding due");
    assert_eq!(ssrc, 0xabc);
    // 1.2 Mb/s for 20 ms: 3 kB, in padding-only packets.
    assert_eq!(bytes, 3000);
    let mut sent = Vec::new();
    ob.pad(later, ssrc, bytes, &mut pool, |d| sent.push(d));
    let total: usize = sent.iter().map(|d| d.len()).sum();
    assert!((3000..3000 + 300).contains(&total), "{total} bytes");
    let mut rx = receiver(11);
    for datagram in &sent {
        let plain = rx.decrypt_rtp(datagram).unwrap();
        let packet = Packet::unmarshal(&mut plain.freeze()).unwrap();
        assert_eq!(packet.header.ssrc, 0xdef0_0001);
        assert_eq!(packet.header.payload_type, 97);
        assert!(packet.header.padding);
        assert_eq!(packet.header.timestamp, 3000);
        assert!(packet.payload.is_empty());
    }
    // Not kept for NACKs: the history still answers for the media only.
    assert!(ob.resend(later, 0xabc, 7, &mut pool).is_some());
}

#[test]
fn with_rtx_a_probe_resends_recent_media_newest_first() {
    let mut pool = BufferPool::default();
    let mut ob = outbound(12);
    ob.set_transport_cc(Some(3));
    let t0 = Instant::now();
    // Ten packets of a frame, the fifth one small.
    for sequence in 100..110u16 {
        let size = if sequence == 104 { 40 } else { 1000 };
        let payload = Bytes::from(vec![sequence as u8; size]);
        let datagram = ob
            .send(t0, with_rtx(), out(&payload, sequence, 9000), &mut pool)
            .unwrap();
        pool.give(datagram);
    }
    let mut sent = Vec::new();
    ob.pad(t0, 0xabc, 4000, &mut pool, |d| sent.push(d));
    // About 4 kB in four packets of media, not sixteen of padding.
    assert_eq!(sent.len(), 4, "{} packets", sent.len());
    let mut rx = receiver(12);
    let mut originals = Vec::new();
    for datagram in &sent {
        let plain = rx.decrypt_rtp(datagram).unwrap();
        let packet = Packet::unmarshal(&mut plain.freeze()).unwrap();
        assert_eq!(packet.header.ssrc, 0xdef0_0001, "on the RTX stream");
        assert!(!packet.header.padding);
        let original = u16::from_be_bytes([packet.payload[0], packet.payload[1]]);
        assert!(packet.payload[2..].iter().all(|&b| b == original as u8));
        originals.push(original);
    }
    assert_eq!(originals, vec![109, 108, 107, 106]);
    // The next probe goes on further back, past the small one.
    let mut more = Vec::new();
    ob.pad(t0, 0xabc, 2000, &mut pool, |d| more.push(d));
    let originals: Vec<u16> = more
        .iter()
        .map(|d| {
            let plain = rx.decrypt_rtp(d).unwrap();
            let p = Packet::unmarshal(&mut plain.freeze()).unwrap();
            u16::from_be_bytes([p.payload[0], p.payload[1]])
        })
        .collect();
    assert_eq!(originals, vec![105, 103]);
    // The media's own history is untouched: a NACK still finds 109.
    assert!(ob.resend(t0, 0xabc, 109, &mut pool).is_some());
}

/// Heavy loss, then a connection with next to nothing to measure (video
/// paused, microphone silent): the video stays paused until enough
/// packets say the loss is over.
#[test]
fn heavy_loss_holds_while_too_few_packets_say_otherwise() {
    let mut pool = BufferPool::default();
    let mut ob = outbound(12);
    ob.set_transport_cc(Some(3));
    let t0 = Instant::now();
    let wall = SystemTime::now();
    let payload = Bytes::from(vec![0u8; 200]);
    let mut sent = 0u16;
    let mut second = |ob: &mut Outbound, at: u32, packets: u16, lost: fn(u16) -> bool| {
        let now = t0 + Duration::from_secs(u64::from(at));
        for _ in 0..packets {
            let datagram = ob
                .send(now, info(), out(&payload, sent, 0), &mut pool)
                .unwrap();
            pool.give(datagram);
            sent += 1;
        }
        if packets > 0 {
            let fb = feedback(
                sent - packets,
                packets,
                Duration::from_secs(u64::from(at)),
                Duration::from_millis(5),
                lost,
            );
            ob.on_transport_feedback(now + Duration::from_millis(300), &fb);
        }
        ob.tick(now + Duration::from_millis(900), wall);
        ob.estimate().expect("congestion seen")
    };
    let heavy = second(&mut ob, 1, 60, |n| n % 2 == 0);
    assert_eq!(heavy.pause, heavy.layers, "half lost: {heavy:?}");
    // Two seconds with a packet or two: too few to tell; still heavy.
    for at in 2..4 {
        let quiet = second(&mut ob, at, 2, |_| false);
        assert_eq!(quiet.pause, quiet.layers, "second {at}: {quiet:?}");
    }
    // A third lost, as a small sample of heavy loss may read: still
    // heavy (it takes 40 % to become so, under 30 % to stop).
    let third = second(&mut ob, 4, 60, |n| n % 20 < 8);
    assert_eq!(third.pause, third.layers, "a third lost: {third:?}");
    // Enough packets, none lost: the delay-based half decides again.
    second(&mut ob, 5, 60, |_| false);
    let clear = second(&mut ob, 6, 60, |_| false);
    assert!(clear.pause > clear.layers, "{clear:?}");
    // A third lost on a clean link is not heavy either.
    second(&mut ob, 7, 60, |n| n % 3 == 0);
    let third = second(&mut ob, 8, 60, |n| n % 3 == 0);
    assert!(third.pause > third.layers, "a third lost: {third:?}");
    // Heavy again, then nothing to measure at all: the verdict lapses
    // after 10 s.
    let heavy = |ob: &Outbound| ob.congestion.as_ref().expect("transport-cc").heavy;
    second(&mut ob, 9, 60, |n| n % 2 == 0);
    second(&mut ob, 10, 60, |n| n % 2 == 0);
    // The window still holds second 10 at 11; ten seconds without a
    // sample after that.
    for at in 11..21 {
        second(&mut ob, at, 0, |_| false);
        assert!(heavy(&ob), "second {at}");
    }
    second(&mut ob, 21, 0, |_| false);
    assert!(!heavy(&ob), "lapsed");
}

/// The transport-wide number a datagram carries, if any: the one
/// extension `write` puts after the 12-byte header (it is not encrypted).
fn transport_number(datagram: &[u8]) -> Option<u16> {
    (datagram[0] & 0x10 != 0).then(|| u16::from_be_bytes([datagram[17], datagram[18]]))
}

#[test]
fn audio_is_numbered_only_while_the_connection_also_gets_video() {
    let mut pool = BufferPool::default();
    let mut ob = outbound(9);
    ob.set_transport_cc(Some(5));
    let now = Instant::now();
    let payload = Bytes::from_static(b"opus");
    let audio = StreamInfo {
        clock_rate: 48_000,
        ..info()
    };
    let send =
        |ob: &mut Outbound, pool: &mut BufferPool, info: StreamInfo, ssrc: u32, sequence: u16| {
            let packet = OutPacket {
                ssrc,
                ..out(&payload, sequence, 0)
            };
            let datagram = ob.send(now, info, packet, pool).unwrap();
            transport_number(&datagram)
        };
    // A listener: its audio goes without numbers, so its browser has
    // nothing to report on.
    assert_eq!(send(&mut ob, &mut pool, audio, 1, 1), None);
    assert_eq!(send(&mut ob, &mut pool, audio, 1, 2), None);
    // With a video beside it, the audio is numbered too, in one sequence.
    assert_eq!(send(&mut ob, &mut pool, info(), 2, 1), Some(0));
    assert_eq!(send(&mut ob, &mut pool, audio, 1, 3), Some(1));
    assert_eq!(send(&mut ob, &mut pool, info(), 2, 2), Some(2));
    // A retransmission of the audio is numbered as well.
    let again = ob.resend(now, 1, 3, &mut pool).unwrap();
    assert_eq!(transport_number(&again), Some(3));
    // A second video, and a second audio that comes and goes: the audio
    // stays numbered while any video is left.
    assert_eq!(send(&mut ob, &mut pool, info(), 4, 1), Some(4));
    assert_eq!(send(&mut ob, &mut pool, audio, 5, 1), Some(5));
    ob.forget_stream(5);
    ob.forget_stream(4);
    assert_eq!(send(&mut ob, &mut pool, audio, 1, 4), Some(6));
    // The last video unsubscribed: the audio goes without numbers again.
    ob.forget_stream(2);
    assert_eq!(send(&mut ob, &mut pool, audio, 1, 5), None);
    let again = ob.resend(now, 1, 5, &mut pool).unwrap();
    assert_eq!(transport_number(&again), None);
}
