//! Retransmissions from simulcast publishers, put back into their streams.
//!
//! A browser that publishes simulcast names its streams by `rid` and sends
//! no SSRCs in its description, so its RTX streams (RFC 4588) are known
//! only by the `repaired-rtp-stream-id` header extension (`rrid`) they
//! carry. webrtc-rs 0.21 recovers RTX only for SSRCs the description
//! declares and drops the rest ("TODO: repair rtp stream id"), so every
//! retransmission Salon's NACKs obtained from a simulcast camera was thrown
//! away. Loss on a publisher's uplink then reached every subscriber
//! whole, and at 25 % loss their pictures froze. Its NACK generator never
//! saw the lost packets arrive either, and kept asking for them.
//!
//! This interceptor sits in a publisher connection's chain below the NACK
//! generator. It learns which SSRC carries which (mid, rid) from the
//! streams' own packets, which RTX SSRC repairs which stream from the
//! `rrid` of its packets, and turns each retransmission back into the
//! packet it repeats: the stream's SSRC and payload type, the original
//! sequence number (the first two bytes of the RTX payload), the rest of
//! the payload. From there on it is a late packet of its stream, for the
//! NACK generator, the receiver reports and the forwarder alike. RTX
//! packets that carry no original, or one that already arrived (a
//! browser's bandwidth probes), pass on untouched, and webrtc-rs drops
//! them as before.
//!
//! Firefox declares its simulcast SSRCs and their RTX pairs in its
//! description as well, and sends `rrid`; its retransmissions were lost
//! the same way (lossy.test.js), and are put back here too. The RTX of a stream without simulcast
//! (`a=ssrc-group:FID`) webrtc-rs puts back itself, but only after the
//! NACK generator, which then keeps asking for what came: that is put back
//! here as well.
//!
//! It also counts, for the connection quality, what the publisher's link
//! lost: packets the streams' sequence numbers say were sent, against those
//! that arrived the first time. webrtc-rs's own loss counter comes from
//! its receiver reports, whose running total keeps a packet lost if its
//! repair came after the report, while the repair counts as received.

use crate::feedback::Feedback;
use bytes::Bytes;
use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use std::collections::{HashMap, VecDeque};
use std::time::Instant;

/// Between webrtc-rs's FEC decoder (6 000) and its NACK generator (7 000):
/// the generator must see a retransmission as the packet it asked for.
pub(crate) const REPAIR_SLOT: usize = 6_500;

const MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
const RID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";
const RRID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id";

/// A stream webrtc-rs bound: the payload type its media goes with, and
/// which of its recent packets arrived.
#[derive(Debug, Clone)]
struct Bound {
    payload_type: u8,
    arrived: SeqWindow,
}

/// Sequence numbers a stream's recent packets arrived with. A browser also
/// sends packets it has no reason to think lost on RTX: its bandwidth
/// probes repeat recent media. Those are neither loss nor news, and go on
/// untouched (webrtc-rs drops them) rather than to every subscriber twice.
#[derive(Debug, Clone, Default)]
pub(crate) struct SeqWindow {
    highest: Option<u16>,
    bits: [u64; SeqWindow::WORDS],
}

impl SeqWindow {
    const WORDS: usize = 16;
    /// 1 024 packets: seconds of video, longer than any retransmission
    /// comes.
    const SIZE: u16 = (Self::WORDS * 64) as u16;
    /// How far past the newest packet a repair may reach.
    const LOOKAHEAD: u16 = 64;

    fn bit(sequence: u16) -> (usize, u64) {
        let index = usize::from(sequence % Self::SIZE);
        (index / 64, 1 << (index % 64))
    }

    /// Notes that `sequence` arrived. Returns `None` if it had already
    /// (a duplicate) or is older than the window; otherwise how many
    /// numbers it moves the stream on: 1 for the next one or the first,
    /// more past a gap, 0 for a late one filling a gap.
    pub(crate) fn insert(&mut self, sequence: u16) -> Option<u16> {
        let Some(highest) = self.highest else {
            self.highest = Some(sequence);
            self.set(sequence);
            return Some(1);
        };
        let ahead = sequence.wrapping_sub(highest);
        if ahead != 0 && ahead < 0x8000 {
            // Newer: what lies between was not seen (yet).
            if ahead >= Self::SIZE {
                self.bits = [0; Self::WORDS];
            } else {
                for skipped in 1..ahead {
                    self.clear(highest.wrapping_add(skipped));
                }
            }
            self.highest = Some(sequence);
            self.set(sequence);
            return Some(ahead);
        }
        if highest.wrapping_sub(sequence) >= Self::SIZE || !self.missing(sequence) {
            return None;
        }
        self.set(sequence);
        Some(0)
    }

    fn set(&mut self, sequence: u16) {
        let (word, mask) = Self::bit(sequence);
        self.bits[word] |= mask;
    }

    fn clear(&mut self, sequence: u16) {
        let (word, mask) = Self::bit(sequence);
        self.bits[word] &= !mask;
    }

    /// Whether `sequence` is one the window knows to be missing: within
    /// it and not arrived, or at most `LOOKAHEAD` past the newest (its
    /// original may be lost with the ones before it). Anything further
    /// ahead no honest sender repeats, and taking it would move the window
    /// past the stream.
    pub(crate) fn missing(&self, sequence: u16) -> bool {
        let Some(highest) = self.highest else {
            return false;
        };
        let ahead = sequence.wrapping_sub(highest);
        if ahead != 0 && ahead < 0x8000 {
            return ahead <= Self::LOOKAHEAD;
        }
        if highest.wrapping_sub(sequence) >= Self::SIZE {
            return false;
        }
        let (word, mask) = Self::bit(sequence);
        self.bits[word] & mask == 0
    }
}

/// A stream known by its media section and rid.
struct Named {
    mid: Bytes,
    rid: Bytes,
    ssrc: u32,
}

/// The header extension ids a connection negotiated for naming streams.
#[derive(Debug, Default, Clone, Copy)]
struct Ids {
    mid: Option<u8>,
    rid: Option<u8>,
    rrid: Option<u8>,
}

/// How many counted packets pass between two reports of the link's counts
/// to the worker: a few a second for a camera and a microphone.
const REPORT_EVERY: u32 = 64;

pub(crate) struct RtxRepair {
    /// Where the link's counts go (`Feedback::Uplink`).
    feedback: std::sync::mpsc::Sender<Feedback>,
    ids: Ids,
    bound: HashMap<u32, Bound>,
    /// Which SSRC sends each (mid, rid), from the streams' packets: a
    /// handful per connection, searched without building a key.
    by_rid: Vec<Named>,
    /// Which stream each RTX SSRC repairs: declared with the stream, or
    /// from its packets' `rrid` (a browser stops sending the extension once
    /// its SSRC is acknowledged). One per stream.
    repairs: HashMap<u32, u32>,
    /// Packets the streams' numbers say were sent, and those that arrived
    /// the first time, over the connection's life.
    expected: u64,
    received: u64,
    unreported: u32,
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

impl RtxRepair {
    pub(crate) fn new(feedback: std::sync::mpsc::Sender<Feedback>) -> Self {
        Self {
            feedback,
            ids: Ids::default(),
            bound: HashMap::new(),
            by_rid: Vec::new(),
            repairs: HashMap::new(),
            expected: 0,
            received: 0,
            unreported: 0,
            reads: VecDeque::new(),
            writes: VecDeque::new(),
        }
    }

    /// The value of extension `id` in `packet`, borrowed: this runs on
    /// every packet a publisher sends, and a clone of `Bytes` can allocate.
    fn extension(packet: &rtc::rtp::Packet, id: Option<u8>) -> Option<&[u8]> {
        let id = id?;
        if !packet.header.extension {
            return None;
        }
        packet
            .header
            .extensions
            .iter()
            .find(|extension| extension.id == id)
            .map(|extension| &extension.payload[..])
    }

    fn stream_named(&self, mid: &[u8], rid: &[u8]) -> Option<u32> {
        self.by_rid
            .iter()
            .find(|named| &named.mid[..] == mid && &named.rid[..] == rid)
            .map(|named| named.ssrc)
    }

    /// Counts a packet of a bound stream for the link, keeps its payload
    /// type (a publisher may change codec on a stream), and learns which
    /// (mid, rid) it is; false, and nothing done, if no stream is bound on
    /// its SSRC.
    fn learn_stream(&mut self, packet: &rtc::rtp::Packet) -> bool {
        let Some(bound) = self.bound.get_mut(&packet.header.ssrc) else {
            return false;
        };
        bound.payload_type = packet.header.payload_type;
        if let Some(advance) = bound.arrived.insert(packet.header.sequence_number) {
            // A jump past the window is a stream starting over, not a
            // thousand packets lost.
            let advance = if advance >= SeqWindow::SIZE {
                1
            } else {
                advance
            };
            self.count(u64::from(advance), 1);
        }
        let Some(rid) = Self::extension(packet, self.ids.rid) else {
            return true;
        };
        let mid = Self::extension(packet, self.ids.mid).unwrap_or_default();
        let ssrc = packet.header.ssrc;
        // Browsers repeat the rid on every packet until it is acknowledged:
        // an entry is written once, not per packet.
        if self.stream_named(mid, rid) == Some(ssrc) {
            return true;
        }
        let (mid, rid) = (Bytes::copy_from_slice(mid), Bytes::copy_from_slice(rid));
        self.by_rid
            .retain(|named| named.mid != mid || named.rid != rid);
        self.by_rid.push(Named { mid, rid, ssrc });
        true
    }

    /// Adds to the link's counts, and reports them now and then.
    fn count(&mut self, expected: u64, received: u64) {
        self.expected += expected;
        self.received += received;
        self.unreported += 1;
        if self.unreported >= REPORT_EVERY {
            self.unreported = 0;
            let _ = self.feedback.send(Feedback::Uplink {
                expected: self.expected,
                received: self.received,
            });
        }
    }

    /// The stream a packet on an unbound SSRC repairs, if it is RTX.
    fn repaired(&mut self, packet: &rtc::rtp::Packet) -> Option<u32> {
        let rrid = Self::extension(packet, self.ids.rrid)?;
        let mid = Self::extension(packet, self.ids.mid).unwrap_or_default();
        let primary = self.stream_named(mid, rrid)?;
        self.repairs.retain(|_, repaired| *repaired != primary);
        self.repairs.insert(packet.header.ssrc, primary);
        Some(primary)
    }

    /// Rewrites an RTX packet as the original it carries; false if it
    /// carries none (padding), its stream is gone, or the original is not
    /// missing.
    fn unwrap(&mut self, packet: &mut rtc::rtp::Packet, primary: u32) -> bool {
        let Some(bound) = self.bound.get_mut(&primary) else {
            return false;
        };
        let Some(&[high, low]) = packet.payload.get(..2) else {
            return false;
        };
        let sequence = u16::from_be_bytes([high, low]);
        if !bound.arrived.missing(sequence) {
            return false;
        }
        // Lost the first time: the link counts it as expected (if it is
        // past the newest), not as received.
        let advance = bound.arrived.insert(sequence).unwrap_or(0);
        packet.header.ssrc = primary;
        packet.header.payload_type = bound.payload_type;
        packet.header.sequence_number = sequence;
        // The padding, if any, was taken off when the packet was read.
        packet.header.padding = false;
        packet.payload = packet.payload.slice(2..);
        self.count(u64::from(advance), 0);
        true
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RtxRepair {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtp(packet) = &mut msg.message.packet {
            let ssrc = packet.header.ssrc;
            // A declared RTX stream is bound too: the repairs come first.
            let primary = match self.repairs.get(&ssrc).copied() {
                Some(primary) => Some(primary),
                None if self.learn_stream(packet) => None,
                None => self.repaired(packet),
            };
            if let Some(primary) = primary
                && self.unwrap(packet, primary)
            {
                tracing::trace!(
                    primary,
                    sequence = packet.header.sequence_number,
                    "a retransmission put back into its stream"
                );
            }
        }
        self.reads.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.reads.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        self.writes.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.writes.pop_front()
    }
}

impl Interceptor for RtxRepair {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}

    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        for extension in &info.rtp_header_extensions {
            let id = u8::try_from(extension.id).ok();
            match extension.uri.as_str() {
                MID_URI => self.ids.mid = id,
                RID_URI => self.ids.rid = id,
                RRID_URI => self.ids.rrid = id,
                _ => {}
            }
        }
        // webrtc-rs puts back a declared RTX stream's packets too, but
        // after the NACK generator, which then asks for them again.
        if let Some(rtx) = info.ssrc_rtx {
            self.repairs.retain(|_, repaired| *repaired != info.ssrc);
            self.repairs.insert(rtx, info.ssrc);
        }
        self.bound.insert(
            info.ssrc,
            Bound {
                payload_type: info.payload_type,
                arrived: SeqWindow::default(),
            },
        );
    }

    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.bound.remove(&info.ssrc);
        self.by_rid.retain(|named| named.ssrc != info.ssrc);
        self.repairs.retain(|_, primary| *primary != info.ssrc);
    }
}

#[cfg(test)]
#[path = "repair_tests.rs"]
mod tests;
