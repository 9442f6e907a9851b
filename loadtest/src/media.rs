//! The synthetic media every load-test publisher sends: VP8 clips encoded by
//! libvpx (one per simulcast layer) and Opus packets encoded by libopus,
//! made by `media/make.sh` and built into the binary. Real encoder output, so
//! a browser in the same room decodes what the load generator sends.

use bytes::Bytes;
use rtc::media::io::ivf_reader::IVFReader;
use rtc::media::io::ogg_reader::OggReader;
use std::io::Cursor;
use std::time::Duration;

static HIGH: &[u8] = include_bytes!("../media/high.ivf");
static MEDIUM: &[u8] = include_bytes!("../media/medium.ivf");
static LOW: &[u8] = include_bytes!("../media/low.ivf");
static AUDIO: &[u8] = include_bytes!("../media/audio.ogg");

/// The clips are encoded at 30 frames per second.
pub(crate) const FRAME_INTERVAL: Duration = Duration::from_nanos(1_000_000_000 / 30);
/// One Opus packet per Ogg page, 20 ms each.
pub(crate) const AUDIO_INTERVAL: Duration = Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("built-in {0} clip is unreadable: {1}")]
    Unreadable(&'static str, String),
    #[error("built-in {0} clip is empty")]
    Empty(&'static str),
}

/// A simulcast layer, as livekit-client names them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Quality {
    Low,
    Medium,
    High,
}

impl Quality {
    /// livekit-client's rids, lowest first.
    pub(crate) fn rid(self) -> &'static str {
        match self {
            Quality::Low => "q",
            Quality::Medium => "h",
            Quality::High => "f",
        }
    }

    pub(crate) fn index(self) -> u8 {
        self as u8
    }

    pub(crate) fn protocol(self) -> livekit_protocol::VideoQuality {
        match self {
            Quality::Low => livekit_protocol::VideoQuality::Low,
            Quality::Medium => livekit_protocol::VideoQuality::Medium,
            Quality::High => livekit_protocol::VideoQuality::High,
        }
    }

    /// Every layer up to this one, lowest first: what a simulcast publisher
    /// of this resolution sends.
    pub(crate) fn layers_up_to(self) -> Vec<Quality> {
        [Quality::Low, Quality::Medium, Quality::High]
            .into_iter()
            .filter(|q| *q <= self)
            .collect()
    }
}

pub(crate) struct VideoClip {
    pub(crate) quality: Quality,
    pub(crate) width: u32,
    pub(crate) height: u32,
    /// Encoded frames in order; the first is a keyframe.
    pub(crate) frames: Vec<Bytes>,
}

impl VideoClip {
    pub(crate) fn load(quality: Quality) -> Result<Self, MediaError> {
        let (name, data) = match quality {
            Quality::High => ("high", HIGH),
            Quality::Medium => ("medium", MEDIUM),
            Quality::Low => ("low", LOW),
        };
        let unreadable = |e: rtc::shared::error::Error| MediaError::Unreadable(name, e.to_string());
        let (mut reader, header) = IVFReader::new(Cursor::new(data)).map_err(unreadable)?;
        let mut frames = Vec::new();
        // The reader reports the end of the clip as an error: stop there.
        while let Ok((frame, _)) = reader.parse_next_frame() {
            frames.push(frame.freeze());
        }
        if frames.is_empty() || !is_vp8_keyframe(&frames[0]) {
            return Err(MediaError::Empty(name));
        }
        Ok(Self {
            quality,
            width: u32::from(header.width),
            height: u32::from(header.height),
            frames,
        })
    }

    /// Bits per second when played at 30 frames per second.
    pub(crate) fn bitrate(&self) -> u32 {
        let bytes: usize = self.frames.iter().map(Bytes::len).sum();
        let seconds = self.frames.len() as f64 * FRAME_INTERVAL.as_secs_f64();
        (bytes as f64 * 8.0 / seconds) as u32
    }
}

/// VP8's frame tag: the lowest bit of the first byte is 0 on a keyframe.
pub(crate) fn is_vp8_keyframe(frame: &[u8]) -> bool {
    frame.first().is_some_and(|b| b & 1 == 0)
}

pub(crate) struct AudioClip {
    /// Opus packets, 20 ms each.
    pub(crate) packets: Vec<Bytes>,
}

impl AudioClip {
    pub(crate) fn load() -> Result<Self, MediaError> {
        let unreadable =
            |e: rtc::shared::error::Error| MediaError::Unreadable("audio", e.to_string());
        let (mut reader, _) = OggReader::new(Cursor::new(AUDIO), true).map_err(unreadable)?;
        let mut packets = Vec::new();
        while let Ok((page, _)) = reader.parse_next_page() {
            if page.starts_with(b"OpusTags") || page.is_empty() {
                continue;
            }
            packets.push(page.freeze());
        }
        if packets.is_empty() {
            return Err(MediaError::Empty("audio"));
        }
        Ok(Self { packets })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clips_have_the_bitrates_of_livekit_layers() {
        for (quality, width, low, high) in [
            (Quality::High, 1280, 1_400_000, 2_000_000),
            (Quality::Medium, 640, 400_000, 600_000),
            (Quality::Low, 320, 120_000, 180_000),
        ] {
            let clip = VideoClip::load(quality).expect("clip");
            assert_eq!(clip.width, width);
            assert_eq!(clip.frames.len(), 60, "two seconds at 30 fps");
            let rate = clip.bitrate();
            assert!((low..high).contains(&rate), "{quality:?}: {rate} b/s");
        }
    }

    #[test]
    fn audio_is_twenty_millisecond_opus_packets() {
        let clip = AudioClip::load().expect("clip");
        assert!(
            (95..=101).contains(&clip.packets.len()),
            "{}",
            clip.packets.len()
        );
        // The TOC byte's configuration says the frame length: these are
        // the 20 ms ones of SILK, hybrid and CELT (RFC 6716, 3.1).
        let config = clip.packets[10][0] >> 3;
        assert!(
            [1, 5, 9, 13, 15, 19, 23, 27, 31].contains(&config),
            "config {config}"
        );
    }
}
