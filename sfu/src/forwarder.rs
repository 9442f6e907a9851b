//! The async shell around one published track: reads its RTP from the
//! publisher's connection, lets the `LayerRewriter` choose and renumber, and
//! writes each forwarded packet to every subscriber's down track.

use crate::rewriter::{KeyframeCodec, LayerRewriter, Verdict};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RtpCodecKind};
use salon_common::ParticipantSid;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

/// LiveKit throttles keyframe requests to about one per 500 ms: each one
/// costs the publisher a large frame.
const PLI_INTERVAL: Duration = Duration::from_millis(500);

/// One subscriber's copy of the track.
pub(crate) struct DownTrack {
    pub(crate) subscriber: ParticipantSid,
    pub(crate) local: Arc<TrackLocalStaticRTP>,
    pub(crate) ssrc: u32,
    pub(crate) payload_type: u8,
}

pub(crate) enum ForwarderCommand {
    Add(DownTrack),
    Remove(ParticipantSid),
    RequestKeyframe,
}

/// What the room keeps of a forwarder: a way to command it, and the codec
/// subscribers must negotiate.
#[derive(Clone)]
pub(crate) struct ForwarderHandle {
    pub(crate) tx: mpsc::UnboundedSender<ForwarderCommand>,
    pub(crate) codec: RTCRtpCodec,
    pub(crate) kind: RtpCodecKind,
}

impl ForwarderHandle {
    pub(crate) fn send(&self, command: ForwarderCommand) {
        // A closed forwarder means its publisher left; the room cleans up on its own.
        let _ = self.tx.send(command);
    }
}

/// Waits for the track's first layer to open, then returns the codec and a
/// handle while forwarding goes on in a task of its own.
pub(crate) async fn start(track: Arc<dyn TrackRemote>) -> Option<ForwarderHandle> {
    let mut rids: HashMap<u32, String> = HashMap::new();
    let (ssrc, codec) = loop {
        match track.poll().await? {
            TrackRemoteEvent::OnOpen(init) => {
                rids.insert(init.ssrc, init.rid.clone().unwrap_or_default());
                if let Some(codec) = track.codec(init.ssrc).await {
                    break (init.ssrc, codec);
                }
            }
            TrackRemoteEvent::OnEnded | TrackRemoteEvent::OnError => return None,
            _ => {}
        }
    };
    let kind = track.kind().await;
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = ForwarderHandle {
        tx,
        codec: codec.clone(),
        kind,
    };
    tracing::debug!(ssrc, mime = %codec.mime_type, "forwarding a new track");
    let is_video = kind == RtpCodecKind::Video;
    // Audio and codecs we cannot parse switch nowhere: every packet may start.
    let keyframe_codec = if is_video {
        KeyframeCodec::from_mime(&codec.mime_type)
    } else {
        None
    };
    tokio::spawn(run(track, rx, rids, keyframe_codec, is_video));
    Some(handle)
}

async fn run(
    track: Arc<dyn TrackRemote>,
    mut commands: mpsc::UnboundedReceiver<ForwarderCommand>,
    mut rids: HashMap<u32, String>,
    keyframe_codec: Option<KeyframeCodec>,
    is_video: bool,
) {
    let mut rewriter = LayerRewriter::new();
    let mut down: Vec<DownTrack> = Vec::new();
    let mut last_pli: Option<Instant> = None;
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                None => break,
                Some(ForwarderCommand::Add(d)) => {
                    down.retain(|x| x.subscriber != d.subscriber);
                    down.push(d);
                    if is_video {
                        request_keyframe(&track, rewriter.current_ssrc(), &mut last_pli, true).await;
                    }
                }
                Some(ForwarderCommand::Remove(subscriber)) => {
                    down.retain(|x| x.subscriber != subscriber);
                }
                Some(ForwarderCommand::RequestKeyframe) => {
                    tracing::trace!("a subscriber asked for a keyframe");
                    request_keyframe(&track, rewriter.current_ssrc(), &mut last_pli, false).await;
                }
            },
            event = track.poll() => match event {
                None | Some(TrackRemoteEvent::OnEnded) => break,
                Some(TrackRemoteEvent::OnOpen(init)) => {
                    rids.insert(init.ssrc, init.rid.unwrap_or_default());
                }
                Some(TrackRemoteEvent::OnRtpPacket(mut packet)) => {
                    let ssrc = packet.header.ssrc;
                    let rid = rids.get(&ssrc).map(String::as_str).unwrap_or("");
                    let keyframe =
                        keyframe_codec.is_none_or(|c| c.is_keyframe(&packet.payload));
                    let verdict = rewriter.process(
                        Instant::now(),
                        ssrc,
                        rid,
                        packet.header.sequence_number,
                        packet.header.timestamp,
                        keyframe,
                    );
                    if let Some(wanted) = rewriter.wanted_keyframe() {
                        request_keyframe(&track, Some(wanted), &mut last_pli, false).await;
                    }
                    let Verdict::Forward { sequence, timestamp } = verdict else {
                        continue;
                    };
                    packet.header.sequence_number = sequence;
                    packet.header.timestamp = timestamp;
                    // Extension ids are negotiated per connection; the publisher's
                    // mean nothing to a subscriber.
                    packet.header.extension = false;
                    packet.header.extensions.clear();
                    packet.header.extensions_padding = 0;
                    for d in &down {
                        let mut out = packet.clone();
                        out.header.ssrc = d.ssrc;
                        out.header.payload_type = d.payload_type;
                        if let Err(err) = d.local.write_rtp(out).await {
                            tracing::trace!(%err, "down track write failed");
                        }
                    }
                }
                Some(_) => {}
            },
        }
    }
    tracing::debug!("track forwarding ended");
}

async fn request_keyframe(
    track: &Arc<dyn TrackRemote>,
    ssrc: Option<u32>,
    last: &mut Option<Instant>,
    force: bool,
) {
    let Some(media_ssrc) = ssrc else {
        return;
    };
    let now = Instant::now();
    if !force && last.is_some_and(|t| now.duration_since(t) < PLI_INTERVAL) {
        return;
    }
    *last = Some(now);
    let pli = PictureLossIndication {
        sender_ssrc: 0,
        media_ssrc,
    };
    tracing::trace!(media_ssrc, "asking the publisher for a keyframe");
    if let Err(err) = track.write_rtcp(vec![Box::new(pli)]).await {
        tracing::trace!(%err, "keyframe request failed");
    }
}
