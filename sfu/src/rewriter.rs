//! Turns the packets of one published track (possibly several simulcast
//! layers, each with its own SSRC, sequence and timestamp space) into one
//! continuous stream for subscribers. Sans-IO and allocation-free.

use std::time::{Duration, Instant};

/// A layer that sent nothing for this long is taken as stopped (publishers
/// drop their top layers when their uplink shrinks), and a lower one may
/// replace it.
const STALL: Duration = Duration::from_millis(1000);

/// LiveKit's rids, lowest quality first.
fn rid_rank(rid: &str) -> u8 {
    match rid {
        "q" => 1,
        "h" => 2,
        "f" => 3,
        _ => 0,
    }
}

/// A video codec whose keyframes the SFU can recognise, and so switch
/// layers on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyframeCodec {
    Vp8,
    H264,
}

impl KeyframeCodec {
    /// The codec of a MIME type such as `video/VP8`; `None` for codecs whose
    /// keyframes are not parsed (audio, VP9, AV1).
    pub fn from_mime(mime_type: &str) -> Option<Self> {
        if mime_type.eq_ignore_ascii_case("video/vp8") {
            Some(Self::Vp8)
        } else if mime_type.eq_ignore_ascii_case("video/h264") {
            Some(Self::H264)
        } else {
            None
        }
    }

    /// Whether an RTP payload of this codec starts a keyframe.
    pub fn is_keyframe(self, payload: &[u8]) -> bool {
        match self {
            Self::Vp8 => vp8_keyframe(payload),
            Self::H264 => h264_keyframe(payload),
        }
    }
}

fn vp8_keyframe(payload: &[u8]) -> bool {
    // RFC 7741 §4.2: payload descriptor, then the VP8 header whose first bit
    // (P) is 0 on a keyframe, only in the first packet of a partition (S=1, PID=0).
    let Some(&first) = payload.first() else {
        return false;
    };
    let start_of_partition = first & 0x10 != 0 && first & 0x07 == 0;
    if !start_of_partition {
        return false;
    }
    let mut i = 1;
    if first & 0x80 != 0 {
        let Some(&ext) = payload.get(i) else {
            return false;
        };
        i += 1;
        if ext & 0x80 != 0 {
            // PictureID: 7 or 15 bits.
            let Some(&pid) = payload.get(i) else {
                return false;
            };
            i += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            i += 1; // TL0PICIDX
        }
        if ext & 0x30 != 0 {
            i += 1; // TID/Y/KEYIDX
        }
    }
    payload.get(i).is_some_and(|b| b & 0x01 == 0)
}

fn h264_keyframe(payload: &[u8]) -> bool {
    let Some(&header) = payload.first() else {
        return false;
    };
    match header & 0x1f {
        // IDR slice or SPS.
        5 | 7 => true,
        // STAP-A: look at each aggregated NAL unit.
        24 => {
            let mut i = 1;
            while i + 2 < payload.len() {
                let size = u16::from_be_bytes([payload[i], payload[i + 1]]) as usize;
                if let Some(&nal) = payload.get(i + 2)
                    && matches!(nal & 0x1f, 5 | 7)
                {
                    return true;
                }
                i += 2 + size;
            }
            false
        }
        // FU-A: the start fragment of an IDR.
        28 => payload
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && matches!(fu & 0x1f, 5 | 7)),
        _ => false,
    }
}

/// What to do with one incoming packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forward with these sequence number and timestamp.
    Forward { sequence: u16, timestamp: u32 },
    /// Not the layer being sent.
    Drop,
}

/// Chooses which layer of a track to forward and rewrites sequence numbers and
/// timestamps so that layer switches look like one stream to the decoder.
///
/// This first version picks the best layer the publisher sends, moves to a
/// better one when it appears and to a lower one when the current stops,
/// always on a keyframe.
#[derive(Debug, Default)]
pub struct LayerRewriter {
    current: Option<Layer>,
    /// A better layer seen since the last switch; switch on its next keyframe.
    target: Option<u32>,
    target_rank: u8,
    last_out_seq: u16,
    last_out_ts: u32,
    started: bool,
}

#[derive(Debug, Clone, Copy)]
struct Layer {
    ssrc: u32,
    rank: u8,
    seq_offset: u16,
    ts_offset: u32,
    last_seen: Instant,
}

impl LayerRewriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// The SSRC the rewriter waits on a keyframe from, if it wants one; the
    /// caller asks the publisher for it (PLI).
    pub fn wanted_keyframe(&self) -> Option<u32> {
        self.target
    }

    /// The SSRC of the layer being forwarded, if any.
    pub fn current_ssrc(&self) -> Option<u32> {
        self.current.map(|c| c.ssrc)
    }

    /// Handles a packet of layer `rid` and SSRC `ssrc`.
    pub fn process(
        &mut self,
        now: Instant,
        ssrc: u32,
        rid: &str,
        sequence: u16,
        timestamp: u32,
        keyframe: bool,
    ) -> Verdict {
        let rank = rid_rank(rid);
        let on_current = self.current.is_some_and(|c| c.ssrc == ssrc);
        if !on_current {
            let better = self.current.is_none_or(|c| rank > c.rank);
            let stalled = self
                .current
                .is_none_or(|c| now.saturating_duration_since(c.last_seen) > STALL);
            let best_candidate = self.target.is_none() || rank >= self.target_rank;
            if (better || stalled) && best_candidate {
                self.target = Some(ssrc);
                self.target_rank = rank;
            }
            if self.target == Some(ssrc) && keyframe {
                self.switch_to(now, ssrc, rank, sequence, timestamp);
            } else {
                return Verdict::Drop;
            }
        }
        let Some(layer) = self.current.as_mut() else {
            return Verdict::Drop;
        };
        layer.last_seen = now;
        let out_seq = sequence.wrapping_add(layer.seq_offset);
        let out_ts = timestamp.wrapping_add(layer.ts_offset);
        let seq_delta = out_seq.wrapping_sub(self.last_out_seq);
        if seq_delta != 0 && seq_delta < 0x8000 {
            self.last_out_seq = out_seq;
            self.last_out_ts = out_ts;
        }
        Verdict::Forward {
            sequence: out_seq,
            timestamp: out_ts,
        }
    }

    fn switch_to(&mut self, now: Instant, ssrc: u32, rank: u8, sequence: u16, timestamp: u32) {
        let (seq_offset, ts_offset) = if self.started {
            // Continue right after the last packet sent; one frame later at 90 kHz/30 fps.
            let next_seq = self.last_out_seq.wrapping_add(1);
            let next_ts = self.last_out_ts.wrapping_add(3000);
            (
                next_seq.wrapping_sub(sequence),
                next_ts.wrapping_sub(timestamp),
            )
        } else {
            (0, 0)
        };
        self.started = true;
        self.current = Some(Layer {
            ssrc,
            rank,
            seq_offset,
            ts_offset,
            last_seen: now,
        });
        self.last_out_seq = sequence.wrapping_add(seq_offset).wrapping_sub(1);
        self.target = None;
        self.target_rank = 0;
    }
}

#[cfg(test)]
#[path = "rewriter_tests.rs"]
mod tests;
