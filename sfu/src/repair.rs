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
//! Each packet put back is also told to the worker: the stream's counters
//! now see it as received, but the link lost it, and the connection
//! quality is about the link.

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

    fn bit(sequence: u16) -> (usize, u64) {
        let index = usize::from(sequence % Self::SIZE);
        (index / 64, 1 << (index % 64))
    }

    /// Notes that `sequence` arrived.
    pub(crate) fn insert(&mut self, sequence: u16) {
        let highest = *self.highest.get_or_insert(sequence);
        let ahead = sequence.wrapping_sub(highest);
        if ahead != 0 && ahead < 0x8000 {
            // Newer: what lies between was not seen (yet).
            if ahead >= Self::SIZE {
                self.bits = [0; Self::WORDS];
            } else {
                for skipped in 1..=ahead {
                    let (word, mask) = Self::bit(highest.wrapping_add(skipped));
                    self.bits[word] &= !mask;
                }
            }
            self.highest = Some(sequence);
        } else if highest.wrapping_sub(sequence) >= Self::SIZE {
            return;
        }
        let (word, mask) = Self::bit(sequence);
        self.bits[word] |= mask;
    }

    /// Whether `sequence` is one the window knows to be missing: later
    /// than its start, and not arrived. A sequence number newer than any
    /// seen counts as missing too (its original is still on the way, or
    /// lost with the ones before it).
    pub(crate) fn missing(&self, sequence: u16) -> bool {
        let Some(highest) = self.highest else {
            return false;
        };
        let behind = highest.wrapping_sub(sequence);
        if behind >= 0x8000 {
            return true;
        }
        if behind >= Self::SIZE {
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

pub(crate) struct RtxRepair {
    /// Where each repaired packet is told.
    repaired: std::sync::mpsc::Sender<Feedback>,
    ids: Ids,
    bound: HashMap<u32, Bound>,
    /// Which SSRC sends each (mid, rid), from the streams' packets: a
    /// handful per connection, searched without building a key.
    by_rid: Vec<Named>,
    /// Which stream each RTX SSRC repairs, from its packets' `rrid`: a
    /// browser stops sending the extension once its SSRC is acknowledged.
    repairs: HashMap<u32, u32>,
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

impl RtxRepair {
    pub(crate) fn new(repaired: std::sync::mpsc::Sender<Feedback>) -> Self {
        Self {
            repaired,
            ids: Ids::default(),
            bound: HashMap::new(),
            by_rid: Vec::new(),
            repairs: HashMap::new(),
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

    /// Notes a packet of a bound stream, and learns which (mid, rid) it is.
    fn learn_stream(&mut self, packet: &rtc::rtp::Packet) {
        if let Some(bound) = self.bound.get_mut(&packet.header.ssrc) {
            bound.arrived.insert(packet.header.sequence_number);
        }
        let Some(rid) = Self::extension(packet, self.ids.rid) else {
            return;
        };
        let mid = Self::extension(packet, self.ids.mid).unwrap_or_default();
        let ssrc = packet.header.ssrc;
        // Browsers repeat the rid on every packet until it is acknowledged:
        // an entry is written once, not per packet.
        if self.stream_named(mid, rid) == Some(ssrc) {
            return;
        }
        let (mid, rid) = (Bytes::copy_from_slice(mid), Bytes::copy_from_slice(rid));
        self.by_rid
            .retain(|named| named.mid != mid || named.rid != rid);
        self.by_rid.push(Named { mid, rid, ssrc });
    }

    /// The stream a packet on an unbound SSRC repairs, if it is RTX.
    fn repaired(&mut self, packet: &rtc::rtp::Packet) -> Option<u32> {
        let ssrc = packet.header.ssrc;
        if let Some(&primary) = self.repairs.get(&ssrc) {
            return Some(primary);
        }
        let rrid = Self::extension(packet, self.ids.rrid)?;
        let mid = Self::extension(packet, self.ids.mid).unwrap_or_default();
        let primary = self.stream_named(mid, rrid)?;
        self.repairs.insert(ssrc, primary);
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
        bound.arrived.insert(sequence);
        packet.header.ssrc = primary;
        packet.header.payload_type = bound.payload_type;
        packet.header.sequence_number = sequence;
        // The padding, if any, was taken off when the packet was read.
        packet.header.padding = false;
        packet.payload = packet.payload.slice(2..);
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
            if self.bound.contains_key(&packet.header.ssrc) {
                self.learn_stream(packet);
            } else if let Some(primary) = self.repaired(packet)
                && self.unwrap(packet, primary)
            {
                tracing::trace!(
                    primary,
                    sequence = packet.header.sequence_number,
                    "a retransmission put back into its stream"
                );
                let _ = self.repaired.send(Feedback::Repaired);
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
