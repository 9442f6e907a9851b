//! What a subscriber connection sends outside webrtc-rs's pipeline: each
//! forwarded packet is written once, into a pooled buffer, with the
//! subscriber's header and SRTP (`srtp.rs`). Because those packets bypass
//! webrtc-rs's interceptors, this is also where their history for NACKs
//! and the counts for sender reports live. Sans-IO.

use crate::srtp::{Rollover, SrtpError, SrtpSender};
use bytes::{Bytes, BytesMut};
use rtc::rtcp::sender_report::SenderReport;
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

/// The streams one subscriber connection sends, and their SRTP.
pub struct Outbound {
    srtp: SrtpSender,
    streams: HashMap<u32, OutStream>,
}

impl Outbound {
    pub fn new(srtp: SrtpSender) -> Self {
        Self {
            srtp,
            streams: HashMap::new(),
        }
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
        });
        stream.packets = stream.packets.wrapping_add(1);
        stream.octets = stream.octets.wrapping_add(packet.payload.len() as u32);
        stream.last = Some((packet.timestamp, now));
        write(&mut self.srtp, pool, packet, roc)
    }

    /// The datagram that sends packet `sequence` of stream `ssrc` again, if
    /// it is still in the history.
    pub fn resend(&mut self, ssrc: u32, sequence: u16, pool: &mut BufferPool) -> Option<BytesMut> {
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
        };
        let roc = stream.rollover.of(sequence);
        stream.packets = stream.packets.wrapping_add(1);
        stream.octets = stream.octets.wrapping_add(sent.payload.len() as u32);
        write(&mut self.srtp, pool, packet, roc).ok()
    }

    /// A sender report for every stream that sent lately, `wall` being the
    /// wall clock at `now`; idle streams let go of their history.
    pub fn reports(
        &mut self,
        now: Instant,
        wall: SystemTime,
    ) -> Vec<(RTCRtpSenderId, SenderReport)> {
        let ntp = ntp_time(wall);
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

/// Writes `packet` with a plain 12-byte header (no extensions: their ids
/// are the publisher's, negotiated on another connection) and protects it.
fn write(
    srtp: &mut SrtpSender,
    pool: &mut BufferPool,
    packet: OutPacket<'_>,
    roc: u32,
) -> Result<BytesMut, SrtpError> {
    let mut buf = pool.take();
    buf.extend_from_slice(&[
        0x80,
        (u8::from(packet.marker) << 7) | (packet.payload_type & 0x7f),
    ]);
    buf.extend_from_slice(&packet.sequence.to_be_bytes());
    buf.extend_from_slice(&packet.timestamp.to_be_bytes());
    buf.extend_from_slice(&packet.ssrc.to_be_bytes());
    buf.extend_from_slice(packet.payload);
    srtp.protect(&mut buf, RTP_HEADER_LEN, packet.ssrc, roc, packet.sequence)?;
    Ok(buf)
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
