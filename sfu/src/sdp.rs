//! The little SDP reading the SFU does itself; everything else is left to
//! webrtc-rs.

use std::collections::{HashMap, HashSet};

/// Ids (the second part of `a=msid`) of the tracks a publisher's offer still
/// sends. livekit-client unpublishes a track by removing it from its
/// connection and renegotiating, so a track missing here has been unpublished.
pub fn sending_track_ids(sdp: &str) -> HashSet<String> {
    let mut sending = HashSet::new();
    let mut section: Option<(Option<String>, bool)> = None;
    let mut finish = |section: &mut Option<(Option<String>, bool)>| {
        if let Some((Some(id), true)) = section.take() {
            sending.insert(id);
        }
    };
    for line in sdp.lines() {
        let line = line.trim_end();
        if line.starts_with("m=") {
            finish(&mut section);
            // A port of 0 rejects the section outright.
            let rejected = line.split_whitespace().nth(1) == Some("0");
            section = Some((None, !rejected));
            continue;
        }
        let Some((id, sends)) = section.as_mut() else {
            continue;
        };
        if let Some(msid) = line.strip_prefix("a=msid:") {
            *id = msid.split_whitespace().nth(1).map(str::to_owned);
        } else if line == "a=recvonly" || line == "a=inactive" {
            *sends = false;
        }
    }
    finish(&mut section);
    sending
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
    let by_mid: HashMap<String, String> = mids_to_tracks(offer)
        .into_iter()
        .filter_map(|(mid, cid)| preferred.get(&cid).map(|codec| (mid, codec.clone())))
        .collect();
    let sdp = answer;
    let lines: Vec<&str> = sdp.split("\r\n").collect();
    let mut out: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    let mut start = None;
    for i in 0..=lines.len() {
        let at_boundary = i == lines.len() || lines[i].starts_with("m=");
        if at_boundary {
            if let Some(s) = start {
                reorder_section(&lines[s..i], &mut out[s], &by_mid);
            }
            start = (i < lines.len()).then_some(i);
        }
    }
    out.join("\r\n")
}

/// `a=mid` → the track id of `a=msid`, per media section.
fn mids_to_tracks(sdp: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let (mut mid, mut track): (Option<&str>, Option<&str>) = (None, None);
    for line in sdp.lines().map(str::trim_end).chain(std::iter::once("m=")) {
        if line.starts_with("m=") {
            if let (Some(m), Some(t)) = (mid.take(), track.take()) {
                out.insert(m.to_owned(), t.to_owned());
            }
            continue;
        }
        if let Some(m) = line.strip_prefix("a=mid:") {
            mid = Some(m.trim());
        } else if let Some(m) = line.strip_prefix("a=msid:") {
            track = m.split_whitespace().nth(1);
        }
    }
    out
}

fn reorder_section(section: &[&str], m_line: &mut String, by_mid: &HashMap<String, String>) {
    let mid = section.iter().find_map(|l| l.strip_prefix("a=mid:"));
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
    fn garbage_yields_nothing() {
        assert!(sending_track_ids("").is_empty());
        assert!(sending_track_ids("a=msid:x y\r\nnot sdp").is_empty());
        assert!(sending_track_ids("m=\r\na=msid:\r\n").is_empty());
    }
}
