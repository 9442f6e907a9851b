//! The little SDP reading the SFU does itself; everything else is left to
//! webrtc-rs.

use std::collections::HashSet;

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

    #[test]
    fn garbage_yields_nothing() {
        assert!(sending_track_ids("").is_empty());
        assert!(sending_track_ids("a=msid:x y\r\nnot sdp").is_empty());
        assert!(sending_track_ids("m=\r\na=msid:\r\n").is_empty());
    }
}
