//! The little SDP reading the SFU does itself; everything else is left to
//! webrtc-rs.

use std::collections::{HashMap, HashSet};

/// The media sections of an SDP split into `lines`: for each, the index of
/// its `m=` line and its lines, that one first.
fn media_sections<'a>(lines: &'a [&'a str]) -> impl Iterator<Item = (usize, &'a [&'a str])> {
    let starts: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("m="))
        .collect();
    let ends: Vec<usize> = starts
        .iter()
        .skip(1)
        .copied()
        .chain([lines.len()])
        .collect();
    starts
        .into_iter()
        .zip(ends)
        .map(move |(start, end)| (start, &lines[start..end]))
}

/// The value of the first `prefix` attribute of a section, e.g. `a=mid:`.
fn attribute<'a>(section: &[&'a str], prefix: &str) -> Option<&'a str> {
    section.iter().find_map(|l| l.strip_prefix(prefix))
}

/// The track id of a section: the second part of `a=msid`.
fn msid_track<'a>(section: &[&'a str]) -> Option<&'a str> {
    attribute(section, "a=msid:").and_then(|m| m.split_whitespace().nth(1))
}

/// Ids of the tracks a publisher's offer still sends. livekit-client
/// unpublishes a track by removing it from its connection and renegotiating,
/// so a track missing here has been unpublished.
pub fn sending_track_ids(sdp: &str) -> HashSet<String> {
    let lines: Vec<&str> = sdp.lines().map(str::trim_end).collect();
    media_sections(&lines)
        .filter(|(_, section)| sends(section))
        .filter_map(|(_, section)| msid_track(section).map(str::to_owned))
        .collect()
}

/// The track id (`a=msid`) of each media section, by its `a=mid`. The load
/// generator reads Janus's offers with it.
pub fn track_ids_by_mid(sdp: &str) -> HashMap<String, String> {
    let lines: Vec<&str> = sdp.lines().map(str::trim_end).collect();
    media_sections(&lines)
        .filter_map(|(_, section)| {
            let mid = attribute(section, "a=mid:")?.trim();
            Some((mid.to_owned(), msid_track(section)?.to_owned()))
        })
        .collect()
}

/// The id an SDP gives the RTP header extension `uri` (`a=extmap:<id> <uri>`),
/// from its first media section that has it. Browsers use one id per
/// extension across sections.
pub fn extmap_id(sdp: &str, uri: &str) -> Option<u8> {
    sdp.lines().find_map(|line| {
        let rest = line.trim_end().strip_prefix("a=extmap:")?;
        let (id, ext) = rest.split_once(' ')?;
        if ext.split_whitespace().next()? != uri {
            return None;
        }
        // The id may carry a direction: `a=extmap:3/sendonly <uri>`.
        id.split('/').next()?.parse().ok()
    })
}

/// Reorders the formats of each media section of an answer so that the codec
/// its publisher asked for in AddTrack (`cid` → codec name such as `h264`)
/// comes first: browsers send the first codec of the answer. The track of a
/// section is read from the offer (`a=mid` → `a=msid`), since a receive-only
/// answer names none. Sections without a preference are left alone, and so
/// is every line but the `m=` lines.
pub fn prefer_codecs(answer: &str, offer: &str, preferred: &HashMap<String, String>) -> String {
    if preferred.is_empty() {
        return answer.to_owned();
    }
    let offer_lines: Vec<&str> = offer.lines().map(str::trim_end).collect();
    let by_mid: HashMap<&str, &str> = media_sections(&offer_lines)
        .filter_map(|(_, section)| {
            let mid = attribute(section, "a=mid:")?.trim();
            let codec = preferred.get(msid_track(section)?)?;
            Some((mid, codec.as_str()))
        })
        .collect();
    // Split on CRLF exactly, so that the answer is rebuilt byte for byte.
    let lines: Vec<&str> = answer.split("\r\n").collect();
    let mut out: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    for (start, section) in media_sections(&lines) {
        reorder_section(section, &mut out[start], &by_mid);
    }
    out.join("\r\n")
}

fn reorder_section(section: &[&str], m_line: &mut String, by_mid: &HashMap<&str, &str>) {
    let mid = attribute(section, "a=mid:");
    let Some(codec) = mid.and_then(|m| by_mid.get(m.trim())) else {
        return;
    };
    move_to_front(m_line, &payload_types_of(section, codec));
}

/// The payload types a section's `a=rtpmap` lines give codec `name`.
fn payload_types_of<'a>(section: &[&'a str], name: &str) -> HashSet<&'a str> {
    section
        .iter()
        .filter_map(|l| l.strip_prefix("a=rtpmap:"))
        .filter_map(|r| {
            let (pt, rest) = r.split_once(' ')?;
            let codec = rest.split('/').next()?;
            codec.eq_ignore_ascii_case(name).then_some(pt)
        })
        .collect()
}

/// Puts the `wanted` payload types first on an `m=` line, the others after
/// them in their order.
fn move_to_front(m_line: &mut String, wanted: &HashSet<&str>) {
    if wanted.is_empty() {
        return;
    }
    let mut parts = m_line.split(' ');
    let head: Vec<&str> = parts.by_ref().take(3).collect();
    if head.len() < 3 {
        return;
    }
    let (first, rest): (Vec<&str>, Vec<&str>) = parts.partition(|pt| wanted.contains(pt));
    *m_line = head
        .into_iter()
        .chain(first)
        .chain(rest)
        .collect::<Vec<_>>()
        .join(" ");
}

/// One format of a media section: its payload type, codec name (from
/// `a=rtpmap`) and format parameters (`a=fmtp`, empty if none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pub payload_type: u8,
    pub name: String,
    pub fmtp: String,
}

/// The formats of the section `mid`, in the order of its `m=` line: what
/// an answer accepted for that section. A rejected section (port 0) has
/// none. Formats without an `a=rtpmap` are left out.
pub fn formats(sdp: &str, mid: &str) -> Vec<Format> {
    let lines: Vec<&str> = sdp.lines().map(str::trim_end).collect();
    let Some((_, section)) = media_sections(&lines)
        .find(|(_, section)| attribute(section, "a=mid:").map(str::trim) == Some(mid))
    else {
        return Vec::new();
    };
    let mut fields = section[0].split_whitespace();
    if fields.nth(1) == Some("0") {
        return Vec::new();
    }
    // Protocol, then the formats.
    fields
        .skip(1)
        .filter_map(|pt| {
            let payload_type: u8 = pt.parse().ok()?;
            let rtpmap = format!("a=rtpmap:{pt} ");
            let name = attribute(section, &rtpmap)?.split('/').next()?.trim();
            let fmtp = format!("a=fmtp:{pt} ");
            let fmtp = attribute(section, &fmtp).unwrap_or_default().trim();
            Some(Format {
                payload_type,
                name: name.to_owned(),
                fmtp: fmtp.to_owned(),
            })
        })
        .collect()
}

/// The payload type of the RTX format (RFC 4588) that repairs
/// `payload_type` among `formats` (its `apt=`), if there is one.
pub fn rtx_for(formats: &[Format], payload_type: u8) -> Option<u8> {
    formats
        .iter()
        .find(|f| {
            f.name.eq_ignore_ascii_case("rtx")
                && f.fmtp.split(';').any(|p| {
                    p.trim()
                        .strip_prefix("apt=")
                        .and_then(|apt| apt.trim().parse::<u8>().ok())
                        == Some(payload_type)
                })
        })
        .map(|f| f.payload_type)
}

/// Whether the publisher's answer lists RED first, so that the browser
/// sends Opus in RED.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Red {
    #[default]
    Preferred,
    Disabled,
}

/// Opus's discontinuous transmission: in silence, a packet every 400 ms
/// instead of every 20.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Dtx {
    #[default]
    On,
    Off,
}

/// Whether the publisher is asked for stereo (`stereo=1`). livekit-client
/// offers it on every audio section; left in the answer, a mono
/// microphone would be sent as two channels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Channels {
    #[default]
    Mono,
    Stereo,
}

/// How the publisher's answer sets up one of its audio tracks, from what it
/// asked for in AddTrack; the default is LiveKit's (RED, DTX, mono).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AudioAnswer {
    pub red: Red,
    pub dtx: Dtx,
    pub channels: Channels,
}

impl AudioAnswer {
    /// As LiveKit reads an AddTrack request: the flags (deprecated, and
    /// still sent by livekit-client), or the features that replace them.
    #[allow(deprecated)]
    pub fn of(request: &livekit_protocol::AddTrackRequest) -> Self {
        use livekit_protocol::AudioTrackFeature as F;
        let has = |f: F| request.audio_features.contains(&(f as i32));
        Self {
            red: if request.disable_red {
                Red::Disabled
            } else {
                Red::Preferred
            },
            dtx: if request.disable_dtx || has(F::TfNoDtx) {
                Dtx::Off
            } else {
                Dtx::On
            },
            channels: if request.stereo || has(F::TfStereo) {
                Channels::Stereo
            } else {
                Channels::Mono
            },
        }
    }
}

/// Sets up each audio track the publisher's offer sends, in the answer to
/// it, as LiveKit does: RED first (or Opus, if RED is disabled), `usedtx=1`
/// on Opus unless DTX is off, and `stereo=1` only for stereo. A track's
/// settings are found by its id (`a=msid` of the offer's section, the
/// `cid` of AddTrack); a track without any gets the defaults. Sections
/// that send nothing are left alone, and so is every other line.
pub fn tune_audio(answer: &str, offer: &str, settings: &HashMap<String, AudioAnswer>) -> String {
    let offer_lines: Vec<&str> = offer.lines().map(str::trim_end).collect();
    let sending: Vec<(&str, &str)> = media_sections(&offer_lines)
        .filter(|(_, section)| sends(section))
        .filter_map(|(_, section)| {
            Some((attribute(section, "a=mid:")?.trim(), msid_track(section)?))
        })
        .collect();
    // Firefox names its tracks with ids of its own, not AddTrack's cids: a
    // track of an unknown id takes the settings no section claims, if only
    // one track's are left.
    let claimed: HashSet<&str> = sending.iter().map(|(_, track)| *track).collect();
    let mut unclaimed = settings
        .iter()
        .filter(|(cid, _)| !claimed.contains(cid.as_str()))
        .map(|(_, tuning)| *tuning);
    let fallback = match (unclaimed.next(), unclaimed.next()) {
        (Some(only), None) => only,
        _ => AudioAnswer::default(),
    };
    let by_mid: HashMap<&str, AudioAnswer> = sending
        .into_iter()
        .map(|(mid, track)| (mid, settings.get(track).copied().unwrap_or(fallback)))
        .collect();
    // Split on CRLF exactly, so that the answer is rebuilt byte for byte.
    let lines: Vec<&str> = answer.split("\r\n").collect();
    let sections: Vec<(usize, &[&str])> = media_sections(&lines).collect();
    let head = sections.first().map_or(lines.len(), |(start, _)| *start);
    let mut out: Vec<String> = lines[..head].iter().map(|l| (*l).to_owned()).collect();
    for (_, section) in sections {
        let tuning = section[0]
            .starts_with("m=audio ")
            .then(|| attribute(section, "a=mid:"))
            .flatten()
            .and_then(|mid| by_mid.get(mid.trim()));
        match tuning {
            Some(tuning) => tune_section(section, *tuning, &mut out),
            None => out.extend(section.iter().map(|l| (*l).to_owned())),
        }
    }
    out.join("\r\n")
}

/// Whether an offer's section sends media: not rejected, not receive-only.
fn sends(section: &[&str]) -> bool {
    // A port of 0 rejects the section outright.
    let rejected = section[0].split_whitespace().nth(1) == Some("0");
    let receives_only = section
        .iter()
        .any(|l| *l == "a=recvonly" || *l == "a=inactive");
    !rejected && !receives_only
}

fn tune_section(section: &[&str], tuning: AudioAnswer, out: &mut Vec<String>) {
    let opus = payload_types_of(section, "opus");
    let first = match tuning.red {
        Red::Preferred => payload_types_of(section, "red"),
        Red::Disabled => opus.clone(),
    };
    let mut m_line = section[0].to_owned();
    move_to_front(&mut m_line, &first);
    out.push(m_line);
    let has_fmtp = |pt: &str| {
        let prefix = format!("a=fmtp:{pt} ");
        section.iter().any(|l| l.starts_with(&prefix))
    };
    for line in &section[1..] {
        if let Some((pt, params)) = line
            .strip_prefix("a=fmtp:")
            .and_then(|rest| rest.split_once(' '))
            .filter(|(pt, _)| opus.contains(pt))
        {
            let params = opus_params(params, tuning);
            // A format without parameters has no fmtp line.
            if !params.is_empty() {
                out.push(format!("a=fmtp:{pt} {params}"));
            }
            continue;
        }
        out.push((*line).to_owned());
        if let Some((pt, _)) = line
            .strip_prefix("a=rtpmap:")
            .and_then(|rest| rest.split_once(' '))
            .filter(|(pt, _)| opus.contains(pt) && !has_fmtp(pt))
        {
            let params = opus_params("", tuning);
            if !params.is_empty() {
                out.push(format!("a=fmtp:{pt} {params}"));
            }
        }
    }
}

/// Opus's format parameters with DTX and stereo as `tuning` has them.
fn opus_params(params: &str, tuning: AudioAnswer) -> String {
    let mut kept: Vec<&str> = params
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .filter(|p| !p.starts_with("usedtx="))
        .filter(|p| tuning.channels == Channels::Stereo || *p != "stereo=1")
        .collect();
    if tuning.dtx == Dtx::On {
        kept.push("usedtx=1");
    }
    kept.join(";")
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\n\
o=- 1 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
a=mid:0\r\n\
a=sendonly\r\n\
a=msid:stream-a mic-1\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
a=mid:1\r\n\
a=inactive\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
a=mid:2\r\n\
a=msid:stream-b screen-1\r\n\
a=sendonly\r\n\
m=video 0 UDP/TLS/RTP/SAVPF 96\r\n\
a=mid:3\r\n\
a=msid:stream-c rejected-1\r\n\
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n\
a=mid:4\r\n";

    #[test]
    fn only_sections_that_still_send_count() {
        let ids = sending_track_ids(OFFER);
        assert_eq!(
            ids,
            HashSet::from(["mic-1".to_owned(), "screen-1".to_owned()])
        );
    }

    const PUB_OFFER: &str = "v=0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
a=mid:0\r\n\
a=msid:s mic-1\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 102 104 98\r\n\
a=mid:1\r\n\
a=msid:s cam-1\r\n";

    const ANSWER: &str = "v=0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
a=mid:0\r\n\
a=rtpmap:111 opus/48000/2\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 102 104 98\r\n\
a=mid:1\r\n\
a=rtpmap:96 VP8/90000\r\n\
a=rtpmap:102 H264/90000\r\n\
a=fmtp:102 packetization-mode=1\r\n\
a=rtpmap:104 H264/90000\r\n\
a=rtpmap:98 VP9/90000\r\n";

    #[test]
    fn the_requested_codec_moves_to_the_front_of_its_section() {
        let prefs = HashMap::from([("cam-1".to_owned(), "h264".to_owned())]);
        let out = prefer_codecs(ANSWER, PUB_OFFER, &prefs);
        assert!(out.contains("m=video 9 UDP/TLS/RTP/SAVPF 102 104 96 98\r\n"));
        assert!(out.contains("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"));
        assert_eq!(out.len(), ANSWER.len(), "only the order changes");
    }

    #[test]
    fn unknown_codecs_and_tracks_change_nothing() {
        for prefs in [
            HashMap::from([("cam-1".to_owned(), "av1".to_owned())]),
            HashMap::from([("other".to_owned(), "h264".to_owned())]),
            HashMap::new(),
        ] {
            assert_eq!(prefer_codecs(ANSWER, PUB_OFFER, &prefs), ANSWER);
        }
        let prefs = HashMap::from([("x".to_owned(), "h264".to_owned())]);
        let odd = "m=\r\na=mid:\r\na=msid:s x\r\n";
        assert_eq!(prefer_codecs(odd, odd, &prefs), odd);
    }

    #[test]
    fn track_ids_are_found_by_mid() {
        let ids = track_ids_by_mid(OFFER);
        assert_eq!(ids.get("0").map(String::as_str), Some("mic-1"));
        assert_eq!(ids.get("2").map(String::as_str), Some("screen-1"));
        assert_eq!(ids.get("1"), None, "no msid");
        assert_eq!(ids.len(), 3);
    }

    #[test]
    fn garbage_yields_nothing() {
        assert!(track_ids_by_mid("m=\r\na=msid:\r\n").is_empty());
        assert!(sending_track_ids("").is_empty());
        assert!(sending_track_ids("a=msid:x y\r\nnot sdp").is_empty());
        assert!(sending_track_ids("m=\r\na=msid:\r\n").is_empty());
    }

    #[test]
    fn extension_ids_are_read_with_or_without_a_direction() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
a=extmap:1/sendrecv urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n";
        assert_eq!(
            extmap_id(sdp, "urn:ietf:params:rtp-hdrext:ssrc-audio-level"),
            Some(1)
        );
        assert_eq!(
            extmap_id(sdp, "urn:ietf:params:rtp-hdrext:sdes:mid"),
            Some(4)
        );
        assert_eq!(extmap_id(sdp, "urn:example:none"), None);
        assert_eq!(extmap_id("a=extmap:x urn:a\r\n", "urn:a"), None);
    }

    /// livekit-client's offer: a microphone, a second (screen share)
    /// audio track, a receive-only placeholder and a camera.
    const AUDIO_OFFER: &str = "v=0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\n\
a=mid:0\r\n\
a=sendonly\r\n\
a=msid:s mic-1\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 minptime=10;useinbandfec=1;stereo=1\r\n\
a=rtpmap:63 red/48000/2\r\n\
a=fmtp:63 111/111\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 63\r\n\
a=mid:1\r\n\
a=sendonly\r\n\
a=msid:s screen-audio-1\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 63\r\n\
a=mid:2\r\n\
a=recvonly\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
a=mid:3\r\n\
a=msid:s cam-1\r\n";

    /// webrtc-rs's answer to it: the offer's order and Opus parameters.
    const AUDIO_ANSWER: &str = "v=0\r\n\
o=- 1 2 IN IP4 0.0.0.0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 63\r\n\
a=mid:0\r\n\
a=recvonly\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 minptime=10;useinbandfec=1;stereo=1\r\n\
a=rtpmap:63 red/48000/2\r\n\
a=fmtp:63 111/111\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 63\r\n\
a=mid:1\r\n\
a=recvonly\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 minptime=10;useinbandfec=1;stereo=1\r\n\
a=rtpmap:63 red/48000/2\r\n\
a=fmtp:63 111/111\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 63\r\n\
a=mid:2\r\n\
a=sendonly\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 minptime=10;useinbandfec=1;stereo=1\r\n\
a=rtpmap:63 red/48000/2\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
a=mid:3\r\n\
a=rtpmap:96 VP8/90000\r\n";

    /// The lines of section `mid` of `sdp`.
    fn section_of(sdp: &str, mid: &str) -> Vec<String> {
        let lines: Vec<&str> = sdp.split("\r\n").collect();
        media_sections(&lines)
            .find(|(_, s)| attribute(s, "a=mid:") == Some(mid))
            .map(|(_, s)| s.iter().map(|l| (*l).to_owned()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn by_default_an_audio_track_gets_red_dtx_and_mono() {
        let out = tune_audio(AUDIO_ANSWER, AUDIO_OFFER, &HashMap::new());
        for mid in ["0", "1"] {
            let section = section_of(&out, mid);
            assert_eq!(section[0], "m=audio 9 UDP/TLS/RTP/SAVPF 63 111", "{out}");
            assert!(
                section.contains(&"a=fmtp:111 minptime=10;useinbandfec=1;usedtx=1".to_owned()),
                "{out}"
            );
            assert!(section.contains(&"a=fmtp:63 111/111".to_owned()), "{out}");
        }
        // The receive-only placeholder and the video are as they were.
        assert_eq!(section_of(&out, "2"), section_of(AUDIO_ANSWER, "2"));
        assert_eq!(section_of(&out, "3"), section_of(AUDIO_ANSWER, "3"));
        assert!(out.starts_with("v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\nm=audio"));
        assert!(out.ends_with("a=rtpmap:96 VP8/90000\r\n"));
    }

    #[test]
    fn each_track_gets_what_its_add_track_asked_for() {
        let settings = HashMap::from([
            (
                "mic-1".to_owned(),
                AudioAnswer {
                    red: Red::Disabled,
                    dtx: Dtx::Off,
                    channels: Channels::Mono,
                },
            ),
            (
                "screen-audio-1".to_owned(),
                AudioAnswer {
                    red: Red::Preferred,
                    dtx: Dtx::On,
                    channels: Channels::Stereo,
                },
            ),
        ]);
        let out = tune_audio(AUDIO_ANSWER, AUDIO_OFFER, &settings);
        let mic = section_of(&out, "0");
        assert_eq!(mic[0], "m=audio 9 UDP/TLS/RTP/SAVPF 111 63");
        assert!(
            mic.contains(&"a=fmtp:111 minptime=10;useinbandfec=1".to_owned()),
            "{out}"
        );
        let screen = section_of(&out, "1");
        assert_eq!(screen[0], "m=audio 9 UDP/TLS/RTP/SAVPF 63 111");
        assert!(
            screen.contains(&"a=fmtp:111 minptime=10;useinbandfec=1;stereo=1;usedtx=1".to_owned()),
            "{out}"
        );
    }

    #[test]
    fn a_track_under_an_id_of_its_own_takes_the_only_unclaimed_settings() {
        let off = AudioAnswer {
            dtx: Dtx::Off,
            ..AudioAnswer::default()
        };
        let offer = "m=audio 9 RTP/SAVPF 111\r\na=mid:0\r\na=msid:{s} {e7c2}\r\n";
        let answer = "m=audio 9 RTP/SAVPF 111\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10\r\n";
        let one = HashMap::from([("mic".to_owned(), off)]);
        assert!(tune_audio(answer, offer, &one).contains("a=fmtp:111 minptime=10\r\n"));
        let two = HashMap::from([("mic".to_owned(), off), ("other".to_owned(), off)]);
        assert!(tune_audio(answer, offer, &two).contains("a=fmtp:111 minptime=10;usedtx=1\r\n"));
    }

    #[test]
    #[allow(deprecated)]
    fn add_track_flags_and_features_both_count() {
        let plain = lk_request(|_| {});
        assert_eq!(AudioAnswer::of(&plain), AudioAnswer::default());
        let flags = lk_request(|r| {
            r.disable_red = true;
            r.disable_dtx = true;
            r.stereo = true;
        });
        let features = lk_request(|r| {
            r.audio_features = vec![
                livekit_protocol::AudioTrackFeature::TfStereo as i32,
                livekit_protocol::AudioTrackFeature::TfNoDtx as i32,
            ];
        });
        assert_eq!(
            AudioAnswer::of(&flags),
            AudioAnswer {
                red: Red::Disabled,
                dtx: Dtx::Off,
                channels: Channels::Stereo
            }
        );
        assert_eq!(
            AudioAnswer::of(&features),
            AudioAnswer {
                red: Red::Preferred,
                dtx: Dtx::Off,
                channels: Channels::Stereo
            }
        );
    }

    fn lk_request(
        f: impl FnOnce(&mut livekit_protocol::AddTrackRequest),
    ) -> livekit_protocol::AddTrackRequest {
        let mut request = livekit_protocol::AddTrackRequest::default();
        f(&mut request);
        request
    }

    #[test]
    fn opus_without_parameters_gets_an_fmtp_line_for_dtx() {
        let offer = "v=0\r\nm=audio 9 RTP/SAVPF 111\r\na=mid:a\r\na=msid:s t\r\n";
        let answer = "v=0\r\nm=audio 9 RTP/SAVPF 111\r\na=mid:a\r\na=rtpmap:111 opus/48000/2\r\na=recvonly\r\n";
        let out = tune_audio(answer, offer, &HashMap::new());
        assert_eq!(
            out,
            "v=0\r\nm=audio 9 RTP/SAVPF 111\r\na=mid:a\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 usedtx=1\r\na=recvonly\r\n"
        );
        // And an fmtp line left with nothing goes.
        let answer = "m=audio 9 RTP/SAVPF 111\r\na=mid:a\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 stereo=1\r\n";
        let off = HashMap::from([(
            "t".to_owned(),
            AudioAnswer {
                dtx: Dtx::Off,
                ..AudioAnswer::default()
            },
        )]);
        assert_eq!(
            tune_audio(answer, offer, &off),
            "m=audio 9 RTP/SAVPF 111\r\na=mid:a\r\na=rtpmap:111 opus/48000/2\r\n"
        );
    }

    #[test]
    fn tuning_garbage_does_not_panic() {
        for (answer, offer) in [
            ("", ""),
            (
                "m=audio\r\na=mid:\r\na=fmtp:\r\na=rtpmap:",
                "m=audio\r\na=mid:\r\na=msid:s x",
            ),
            ("m=audio 9\r\na=mid:0\r\na=rtpmap:x opus", AUDIO_OFFER),
        ] {
            let _ = tune_audio(answer, offer, &HashMap::new());
        }
        let untouched = "v=0\r\nm=video 9 RTP/SAVPF 96\r\na=mid:0\r\n";
        assert_eq!(
            tune_audio(untouched, AUDIO_OFFER, &HashMap::new()),
            untouched
        );
    }

    #[test]
    fn the_rtx_format_is_the_one_whose_apt_names_the_codec() {
        let answer = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99\r\na=mid:1\r\n\
            a=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
            a=rtpmap:98 H264/90000\r\na=rtpmap:99 rtx/90000\r\na=fmtp:99 apt=98\r\n";
        let formats = formats(answer, "1");
        assert_eq!(rtx_for(&formats, 96), Some(97));
        assert_eq!(rtx_for(&formats, 98), Some(99));
        assert_eq!(rtx_for(&formats, 100), None);
        let without = formats
            .into_iter()
            .filter(|f| f.name != "rtx")
            .collect::<Vec<_>>();
        assert_eq!(rtx_for(&without, 96), None);
    }

    #[test]
    fn formats_are_those_of_the_section_in_order() {
        let out = formats(AUDIO_ANSWER, "2");
        assert_eq!(
            out,
            vec![
                Format {
                    payload_type: 111,
                    name: "opus".to_owned(),
                    fmtp: "minptime=10;useinbandfec=1;stereo=1".to_owned()
                },
                Format {
                    payload_type: 63,
                    name: "red".to_owned(),
                    fmtp: String::new()
                },
            ]
        );
        assert!(formats(AUDIO_ANSWER, "9").is_empty());
        assert!(
            formats(
                "m=audio 0 RTP/SAVPF 111\r\na=mid:0\r\na=rtpmap:111 opus/48000\r\n",
                "0"
            )
            .is_empty()
        );
        assert!(formats("m=audio\r\na=mid:0\r\n", "0").is_empty());
        assert!(formats("", "0").is_empty());
    }
}
