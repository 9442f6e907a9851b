//! Opus in RED (RFC 2198), as Chrome sends it when the answer lists `red`
//! first: each packet carries the last frame or two again ahead of the
//! new one, so that a lost packet costs nothing. Salon passes RED on to
//! subscribers that accepted it and gives the others only the new frame
//! (the primary encoding), as LiveKit does. Sans-IO and allocation-free:
//! a payload is read in place, and what a subscriber gets is a range of it.

use crate::sdp::Format;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters};
use std::ops::Range;

/// The payload type Salon offers RED with, as livekit-client and LiveKit
/// number it.
pub const RED_PAYLOAD_TYPE: u8 = 63;
/// Opus's payload type in Salon's own offers (and webrtc-rs's defaults).
pub const OPUS_PAYLOAD_TYPE: u8 = 111;

/// Why a RED payload could not be read. Either way the packet is not one a
/// decoder could use, and subscribers that get only the primary lose it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RedError {
    #[error("RED payload ends inside its block headers")]
    TruncatedHeader,
    #[error("RED payload is shorter than its redundant blocks say")]
    TruncatedBlock,
}

/// Where a RED payload's primary encoding is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Primary {
    /// The payload type the primary block's header names.
    pub payload_type: u8,
    /// Its bytes within the RED payload: all that follows the redundant ones.
    pub range: Range<usize>,
}

/// Finds the primary encoding of a RED payload. Every header but the last
/// has its F bit set and takes 4 bytes (F | PT, a 14-bit timestamp offset,
/// a 10-bit length); the last takes 1 (F = 0 | PT). The redundant blocks
/// follow the headers in order, and the primary follows them.
pub fn primary(payload: &[u8]) -> Result<Primary, RedError> {
    let mut at = 0;
    let mut redundant = 0;
    loop {
        let first = *payload.get(at).ok_or(RedError::TruncatedHeader)?;
        if first & 0x80 == 0 {
            at += 1;
            let start = at + redundant;
            if start > payload.len() {
                return Err(RedError::TruncatedBlock);
            }
            return Ok(Primary {
                payload_type: first & 0x7f,
                range: start..payload.len(),
            });
        }
        let header = payload.get(at..at + 4).ok_or(RedError::TruncatedHeader)?;
        redundant += usize::from(header[2] & 0x03) << 8 | usize::from(header[3]);
        at += 4;
    }
}

/// The payload type of the primary codec named by RED's format parameters
/// (`a=fmtp:63 111/111`: the payload type of each block in turn).
pub fn fmtp_primary(fmtp: &str) -> Option<u8> {
    fmtp.trim().split('/').next()?.trim().parse().ok()
}

/// What a published audio track's packets are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// The codec itself (Opus, or whatever the publisher sends).
    Plain,
    /// RED around Opus; `primary` is the Opus payload type the blocks name
    /// in the publisher's numbering, if its description said.
    Red { primary: Option<u8> },
}

impl Encoding {
    /// From the publisher's negotiated codec.
    pub fn of(mime_type: &str, fmtp: &str) -> Self {
        if is_red(mime_type) {
            Encoding::Red {
                primary: fmtp_primary(fmtp),
            }
        } else {
            Encoding::Plain
        }
    }
}

impl Encoding {
    /// The part of a payload that a subscriber without RED gets: the
    /// primary encoding of RED, all of anything else. `None` if there is
    /// nothing it could decode: RED that cannot be read, or whose primary is
    /// not the codec the publisher's description named.
    pub fn primary_range(self, payload: &[u8]) -> Option<Range<usize>> {
        let Encoding::Red { primary: named } = self else {
            return Some(0..payload.len());
        };
        // Padding only (the publisher's pacer probing its link): nothing to
        // cut, and dropping it would leave a gap in the sequence numbers that
        // only this subscriber sees, and counts as loss.
        if payload.is_empty() {
            return Some(0..0);
        }
        let found = primary(payload).ok()?;
        if named.is_some_and(|pt| pt != found.payload_type) {
            return None;
        }
        Some(found.range)
    }
}

/// What of each payload one subscriber gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The payload as the publisher sent it.
    Whole,
    /// The primary encoding of a RED payload only: the subscriber did not
    /// accept RED.
    Primary,
}

/// How a subscriber gets a track: the payload type its answer gave the
/// codec it gets, and what of each payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioRoute {
    pub payload_type: u8,
    pub delivery: Delivery,
}

/// Chooses how a subscriber gets an audio track, from the formats its
/// answer accepted for the track's section. `codec` is the MIME subtype
/// the publisher sends (`opus`, `red`, …). `None`: nothing it accepted fits.
pub fn route_audio(encoding: Encoding, codec: &str, formats: &[Format]) -> Option<AudioRoute> {
    let find = |name: &str| {
        formats
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
            .map(|f| f.payload_type)
    };
    match encoding {
        Encoding::Plain => find(codec).map(|payload_type| AudioRoute {
            payload_type,
            delivery: Delivery::Whole,
        }),
        Encoding::Red { primary } => {
            let opus = find("opus")?;
            // The blocks' headers name the publisher's Opus payload type,
            // and are passed on unchanged: they must mean Opus to the
            // subscriber too.
            match find("red") {
                Some(red) if primary == Some(opus) => Some(AudioRoute {
                    payload_type: red,
                    delivery: Delivery::Whole,
                }),
                _ => Some(AudioRoute {
                    payload_type: opus,
                    delivery: Delivery::Primary,
                }),
            }
        }
    }
}

/// Whether a MIME type (`audio/red`) or subtype (`red`) is RED's.
pub fn is_red(mime_type: &str) -> bool {
    mime_type
        .rsplit('/')
        .next()
        .is_some_and(|s| s.eq_ignore_ascii_case("red"))
}

/// Opus as Salon registers it (webrtc-rs's defaults).
pub fn opus_codec() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: "audio/opus".to_owned(),
            clock_rate: 48000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: OPUS_PAYLOAD_TYPE,
    }
}

/// RED around Opus as livekit-client offers it and LiveKit registers it:
/// two blocks (one redundant, the primary), both Opus.
pub fn red_codec() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: "audio/red".to_owned(),
            clock_rate: 48000,
            channels: 2,
            sdp_fmtp_line: format!("{OPUS_PAYLOAD_TYPE}/{OPUS_PAYLOAD_TYPE}"),
            rtcp_feedback: vec![],
        },
        payload_type: RED_PAYLOAD_TYPE,
    }
}

#[cfg(test)]
#[path = "red_tests.rs"]
mod tests;
