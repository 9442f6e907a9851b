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
        .filter(|(_, section)| {
            // A port of 0 rejects the section outright.
            let rejected = section[0].split_whitespace().nth(1) == Some("0");
            let receives_only = section
                .iter()
                .any(|l| *l == "a=recvonly" || *l == "a=inactive");
            !rejected && !receives_only
        })
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
    let wanted: HashSet<&str> = section
        .iter()
        .filter_map(|l| l.strip_prefix("a=rtpmap:"))
        .filter_map(|r| {
            let (pt, rest) = r.split_once(' ')?;
            let name = rest.split('/').next()?;
            name.eq_ignore_ascii_case(codec).then_some(pt)
        })
        .collect();
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
}
