//! What a subscriber connection sends outside webrtc-rs's pipeline: each
//! forwarded packet is written once, into a pooled buffer, with the
//! subscriber's header and SRTP (`srtp.rs`). Because those packets bypass
//! webrtc-rs's interceptors, this is also where their history for NACKs,
//! the counts for sender reports and the transport-wide sequence numbers
//! the bandwidth estimate comes from live. Sans-IO.

use crate::srtp::{Rollover, SrtpError, SrtpSender};
use bytes::{Bytes, BytesMut};
use rtc::interceptor::{BandwidthEstimator, Gcc, History, convert_twcc};
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::rtp_transceiver::RTCRtpSenderId;
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Packets kept per stream for retransmission: about half a second of
/// 720p video, longer than a NACK takes to come back on a sane link.
const HISTORY: usize = 512;
/// A stream idle this long (paused, or unsubscribed) lets go of its
/// history, which holds its publisher's buffers.
const IDLE: Duration = Duration::from_secs(5);
/// How often each stream's sender report goes out, as webrtc-rs and
/// browsers do.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Room for the RTP header, the largest payload a datagram carries and the tag.
const BUFFER_CAPACITY: usize = 2048;
/// Free buffers kept; a burst beyond it allocates, and the surplus is dropped.
const POOL_SIZE: usize = 4096;
const RTP_HEADER_LEN: usize = 12;
/// Most packets resent to one connection per second. A subscriber NACKing
/// everything over and over costs the worker this much and no more; a sane
/// one on a lossy link asks for a fraction of it.
const MAX_RESENDS_PER_SECOND: u32 = 1000;
/// With the transport-wide sequence number: a one-byte-header extension
/// block (RFC 8285) of one word holding it.
const RTP_HEADER_WITH_TWCC_LEN: usize = 20;
/// Sent packets whose feedback has not come by then count as lost and are
/// forgotten.
const FEEDBACK_WAIT: Duration = Duration::from_secs(2);
/// The estimate's ceiling, where it also starts. At the ceiling it limits
/// nothing (`Outbound::estimate` is `None`): a link is taken to carry what
/// the subscriber asks for until congestion (queueing delay, loss) says
/// otherwise. Starting lower would hold every new subscriber, and a
/// meeting's many tracks sharing one estimate, below what a sound link
/// carries; GCC only learns a link's size by overloading it. The ceiling
/// is not far above what a screen of video tiles needs, so that loss,
/// which lowers the estimate by steps, brings it down within seconds.
const MAX_ESTIMATE: f64 = 30_000_000.0;
const MIN_ESTIMATE: f64 = 50_000.0;

/// Datagram buffers, reused once the shell has sent them.
#[derive(Default)]
pub struct BufferPool {
    free: Vec<BytesMut>,
}

impl BufferPool {
    pub fn take(&mut self) -> BytesMut {
        match self.free.pop() {
            Some(mut buf) => {
                buf.clear();
                buf
            }
            None => BytesMut::with_capacity(BUFFER_CAPACITY),
        }
    }

    /// Takes back a datagram the shell is done with.
    pub fn give(&mut self, buf: BytesMut) {
        if buf.capacity() >= BUFFER_CAPACITY && self.free.len() < POOL_SIZE {
            self.free.push(buf);
        }
    }
}

/// One forwarded packet as it goes to a subscriber.
#[derive(Clone, Copy)]
pub struct OutPacket<'a> {
    pub ssrc: u32,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: &'a Bytes,
    /// VP8 frame numbers to write over the payload's.
    pub vp8: Option<(crate::vp8::Descriptor, crate::vp8::Numbering)>,
}

/// Which sender a stream belongs to, and its clock.
#[derive(Clone, Copy)]
pub struct StreamInfo {
    pub sender: RTCRtpSenderId,
    pub clock_rate: u32,
}

#[derive(Clone)]
struct Sent {
    sequence: u16,
    timestamp: u32,
    marker: bool,
    payload_type: u8,
    payload: Bytes,
    vp8: Option<(crate::vp8::Descriptor, crate::vp8::Numbering)>,
}

struct OutStream {
    info: StreamInfo,
    rollover: Rollover,
    /// A ring by sequence number, allocated on the first packet.
    history: Vec<Option<Sent>>,
    packets: u32,
    octets: u32,
    /// The last timestamp sent and when: sender reports extrapolate from it.
    last: Option<(u32, Instant)>,
}

impl OutStream {
    fn new(info: StreamInfo) -> Self {
        Self {
            info,
            rollover: Rollover::default(),
            history: Vec::new(),
            packets: 0,
            octets: 0,
            last: None,
        }
    }
}

/// Transport-wide congestion control (the TWCC header extension and its
/// feedback) on one connection: what was sent when, joined with when the
/// subscriber got it, into webrtc-rs's GCC estimator.
struct Congestion {
    /// The extension's id in the connection's negotiation.
    ext: u8,
    next: u16,
    history: History,
    estimator: Gcc,
}

/// The streams one subscriber connection sends, and their SRTP.
pub struct Outbound {
    srtp: SrtpSender,
    streams: HashMap<u32, OutStream>,
    congestion: Option<Congestion>,
    /// Resends in the current second, and when it began.
    resends: (Option<Instant>, u32),
}

impl Outbound {
    pub fn new(srtp: SrtpSender) -> Self {
        Self {
            srtp,
            streams: HashMap::new(),
            congestion: None,
            resends: (None, 0),
        }
    }

    /// Numbers every packet for transport-wide feedback from now on, with
    /// extension id `ext`, or stops if `None` (the subscriber did not
    /// accept the extension).
    pub fn set_transport_cc(&mut self, ext: Option<u8>) {
        match (ext, self.congestion.as_mut()) {
            (None, _) => self.congestion = None,
            (Some(ext), Some(cc)) => cc.ext = ext,
            (Some(ext), None) => {
                self.congestion = Some(Congestion {
                    ext,
                    next: 0,
                    history: History::new(),
                    estimator: Gcc::new(MAX_ESTIMATE, MIN_ESTIMATE, MAX_ESTIMATE),
                });
            }
        }
    }

    /// Takes the subscriber's transport-wide feedback.
    pub fn on_transport_feedback(&mut self, now: Instant, feedback: &TransportLayerCc) {
        let Some(cc) = self.congestion.as_mut() else {
            return;
        };
        for ack in convert_twcc(feedback) {
            cc.history.on_twcc_feedback(now, ack);
        }
        let reports = cc.history.take_reports();
        cc.estimator.on_reports(now, &reports);
    }

    /// What the subscriber's link carries, in bits per second, if it
    /// gives feedback and that feedback showed congestion (below the
    /// ceiling; at it, the link is not known to limit anything).
    pub fn estimate(&self) -> Option<u64> {
        let target = self.congestion.as_ref()?.estimator.target_bitrate();
        (target < MAX_ESTIMATE).then_some(target as u64)
    }

    /// The protected datagram of `packet`, noted for retransmission and
    /// reports. In steady state it allocates nothing.
    pub fn send(
        &mut self,
        now: Instant,
        info: StreamInfo,
        packet: OutPacket<'_>,
        pool: &mut BufferPool,
    ) -> Result<BytesMut, SrtpError> {
        let stream = self
            .streams
            .entry(packet.ssrc)
            .or_insert_with(|| OutStream::new(info));
        stream.info = info;
        let roc = stream.rollover.send(packet.sequence);
        if stream.history.is_empty() {
            stream.history.resize(HISTORY, None);
        }
        stream.history[packet.sequence as usize % HISTORY] = Some(Sent {
            sequence: packet.sequence,
            timestamp: packet.timestamp,
            marker: packet.marker,
            payload_type: packet.payload_type,
            payload: packet.payload.clone(),
            vp8: packet.vp8,
        });
        stream.packets = stream.packets.wrapping_add(1);
        stream.octets = stream.octets.wrapping_add(packet.payload.len() as u32);
        stream.last = Some((packet.timestamp, now));
        let datagram = write(&mut self.srtp, pool, packet, roc, self.congestion.as_mut())?;
        note_departure(self.congestion.as_mut(), now, &packet, datagram.len());
        Ok(datagram)
    }

    /// The datagram that sends packet `sequence` of stream `ssrc` again, if
    /// it is still in the history.
    pub fn resend(
        &mut self,
        now: Instant,
        ssrc: u32,
        sequence: u16,
        pool: &mut BufferPool,
    ) -> Option<BytesMut> {
        let (start, count) = &mut self.resends;
        if start.is_none_or(|s| now.saturating_duration_since(s) >= Duration::from_secs(1)) {
            *start = Some(now);
            *count = 0;
        }
        if *count >= MAX_RESENDS_PER_SECOND {
            return None;
        }
        *count += 1;
        let stream = self.streams.get_mut(&ssrc)?;
        let sent = stream
            .history
            .get(sequence as usize % HISTORY)?
            .as_ref()
            .filter(|s| s.sequence == sequence)?;
        let packet = OutPacket {
            ssrc,
            payload_type: sent.payload_type,
            sequence,
            timestamp: sent.timestamp,
            marker: sent.marker,
            payload: &sent.payload,
            vp8: sent.vp8,
        };
        let roc = stream.rollover.of(sequence);
        stream.packets = stream.packets.wrapping_add(1);
        stream.octets = stream.octets.wrapping_add(sent.payload.len() as u32);
        let datagram = write(&mut self.srtp, pool, packet, roc, self.congestion.as_mut()).ok()?;
        note_departure(self.congestion.as_mut(), now, &packet, datagram.len());
        Some(datagram)
    }

    /// A sender report for every stream that sent lately, `wall` being the
    /// wall clock at `now`; idle streams let go of their history.
    pub fn reports(
        &mut self,
        now: Instant,
        wall: SystemTime,
    ) -> Vec<(RTCRtpSenderId, SenderReport)> {
        let ntp = ntp_time(wall);
        if let Some(cc) = self.congestion.as_mut()
            && let Some(cutoff) = now.checked_sub(FEEDBACK_WAIT)
        {
            cc.history.prune_before(cutoff);
        }
        let mut reports = Vec::new();
        for (&ssrc, stream) in &mut self.streams {
            let Some((timestamp, at)) = stream.last else {
                continue;
            };
            let idle = now.saturating_duration_since(at);
            if idle >= IDLE {
                stream.history = Vec::new();
                continue;
            }
            // The RTP clock ran on since the last packet.
            let elapsed =
                (idle.as_micros() * u128::from(stream.info.clock_rate) / 1_000_000) as u32;
            reports.push((
                stream.info.sender,
                SenderReport {
                    ssrc,
                    ntp_time: ntp,
                    rtp_time: timestamp.wrapping_add(elapsed),
                    packet_count: stream.packets,
                    octet_count: stream.octets,
                    ..Default::default()
                },
            ));
        }
        reports
    }
}

/// Writes `packet` with a 12-byte header and, if the connection gives
/// transport-wide feedback, the next transport-wide sequence number as the
/// one extension (the publisher's extensions are not copied: their ids
/// were negotiated on another connection), and protects it.
fn write(
    srtp: &mut SrtpSender,
    pool: &mut BufferPool,
    packet: OutPacket<'_>,
    roc: u32,
    congestion: Option<&mut Congestion>,
) -> Result<BytesMut, SrtpError> {
    let mut buf = pool.take();
    let extension = if congestion.is_some() { 0x10 } else { 0 };
    buf.extend_from_slice(&[
        0x80 | extension,
        (u8::from(packet.marker) << 7) | (packet.payload_type & 0x7f),
    ]);
    buf.extend_from_slice(&packet.sequence.to_be_bytes());
    buf.extend_from_slice(&packet.timestamp.to_be_bytes());
    buf.extend_from_slice(&packet.ssrc.to_be_bytes());
    let header_len = match congestion {
        Some(cc) => {
            let [hi, lo] = cc.next.to_be_bytes();
            // 0xBEDE, one word: the element (id, length 2 - 1) and a pad byte.
            buf.extend_from_slice(&[0xbe, 0xde, 0x00, 0x01, (cc.ext << 4) | 1, hi, lo, 0]);
            RTP_HEADER_WITH_TWCC_LEN
        }
        None => RTP_HEADER_LEN,
    };
    buf.extend_from_slice(packet.payload);
    if let Some((descriptor, numbering)) = packet.vp8 {
        descriptor.write(&mut buf[header_len..], numbering);
    }
    srtp.protect(&mut buf, header_len, packet.ssrc, roc, packet.sequence)?;
    Ok(buf)
}

/// Notes for the bandwidth estimate that the packet just written leaves now.
fn note_departure(
    congestion: Option<&mut Congestion>,
    now: Instant,
    packet: &OutPacket<'_>,
    size: usize,
) {
    if let Some(cc) = congestion {
        cc.history
            .add_outgoing(packet.ssrc, packet.sequence, true, cc.next, size, now);
        cc.next = cc.next.wrapping_add(1);
    }
}

/// NTP's 64-bit fixed-point time (seconds since 1900 and a 32-bit fraction).
fn ntp_time(wall: SystemTime) -> u64 {
    const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
    let since = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs() + NTP_UNIX_OFFSET;
    let fraction = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
    (seconds << 32) | fraction
}

#[cfg(test)]
#[path = "outbound_tests.rs"]
mod tests;
