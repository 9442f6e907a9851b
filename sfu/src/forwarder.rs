//! The async shell around one published track: reads its RTP from the
//! publisher's connection, lets the `Fanout` choose a layer and renumber for
//! each subscriber, and writes the packets to their down tracks.

use crate::fanout::Fanout;
use crate::rewriter::{Demand, KeyframeCodec, Rank};
use crate::room::RoomInput;
use crate::room_task::RoomEvent;
use crate::speakers::LevelWindow;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RtpCodecKind};
use salon_common::ParticipantSid;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

/// One subscriber's copy of the track.
pub(crate) struct DownTrack {
    pub(crate) subscriber: ParticipantSid,
    pub(crate) local: Arc<TrackLocalStaticRTP>,
    pub(crate) ssrc: u32,
    pub(crate) payload_type: u8,
}

pub(crate) enum ForwarderCommand {
    Add(DownTrack),
    /// The subscriber unsubscribed.
    Remove(ParticipantSid),
    /// What the subscriber wants of the track (it may come before `Add`).
    Demand {
        subscriber: ParticipantSid,
        demand: Demand,
    },
    /// The subscriber lost its picture.
    RequestKeyframe(ParticipantSid),
}

/// Where an audio track's levels go: the room, as its publisher's.
pub(crate) struct LevelSink {
    pub(crate) room: mpsc::UnboundedSender<RoomEvent>,
    pub(crate) publisher: ParticipantSid,
    /// The id the publisher's connection gave the audio level extension.
    pub(crate) ext_id: u8,
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
pub(crate) async fn start(
    track: Arc<dyn TrackRemote>,
    levels: Option<LevelSink>,
) -> Option<ForwarderHandle> {
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
    let fanout = Fanout::new(codec.clock_rate, keyframe_codec);
    let levels = levels.filter(|_| !is_video);
    tokio::spawn(run(track, rx, rids, fanout, levels));
    Some(handle)
}

async fn run(
    track: Arc<dyn TrackRemote>,
    mut commands: mpsc::UnboundedReceiver<ForwarderCommand>,
    mut rids: HashMap<u32, String>,
    mut fanout: Fanout<DownTrack>,
    levels: Option<LevelSink>,
) {
    let mut window = LevelWindow::default();
    loop {
        tokio::select! {
            command = commands.recv() => {
                let now = Instant::now();
                match command {
                    None => break,
                    Some(ForwarderCommand::Add(d)) => fanout.add(d.subscriber.clone(), d),
                    Some(ForwarderCommand::Remove(subscriber)) => fanout.forget(&subscriber),
                    Some(ForwarderCommand::Demand { subscriber, demand }) => {
                        fanout.set_demand(&subscriber, demand);
                    }
                    Some(ForwarderCommand::RequestKeyframe(subscriber)) => {
                        if let Some(ssrc) = fanout.keyframe_lost(now, &subscriber) {
                            request_keyframe(&track, ssrc).await;
                        }
                    }
                }
            },
            event = track.poll() => match event {
                None | Some(TrackRemoteEvent::OnEnded) => break,
                Some(TrackRemoteEvent::OnOpen(init)) => {
                    rids.insert(init.ssrc, init.rid.unwrap_or_default());
                }
                Some(TrackRemoteEvent::OnRtpPacket(mut packet)) => {
                    let now = Instant::now();
                    let ssrc = packet.header.ssrc;
                    let rank = rids.get(&ssrc).map_or(Rank::SINGLE, |rid| Rank::of_rid(rid));
                    if let Some(sink) = &levels
                        && let Some(level) = packet.header.get_extension(sink.ext_id)
                        && let Some(&byte) = level.first()
                        && let Some(sum) = window.observe(now, byte & 0x7f)
                    {
                        let _ = sink.room.send(RoomEvent::Input(RoomInput::AudioLevel {
                            sid: sink.publisher.clone(),
                            sum,
                        }));
                    }
                    fanout.on_packet(
                        now,
                        rank,
                        ssrc,
                        packet.header.sequence_number,
                        packet.header.timestamp,
                        &packet.payload,
                    );
                    // Extension ids are negotiated per connection; the publisher's
                    // mean nothing to a subscriber.
                    packet.header.extension = false;
                    packet.header.extensions.clear();
                    packet.header.extensions_padding = 0;
                    for (d, route) in fanout.routes() {
                        let mut out = packet.clone();
                        out.header.sequence_number = route.sequence;
                        out.header.timestamp = route.timestamp;
                        out.header.ssrc = d.ssrc;
                        out.header.payload_type = d.payload_type;
                        if let Err(err) = d.local.write_rtp(out).await {
                            tracing::trace!(%err, "down track write failed");
                        }
                    }
                    while let Some(ssrc) = fanout.poll_keyframe_request(now) {
                        request_keyframe(&track, ssrc).await;
                    }
                }
                Some(_) => {}
            },
        }
    }
    tracing::debug!("track forwarding ended");
}

async fn request_keyframe(track: &Arc<dyn TrackRemote>, media_ssrc: u32) {
    let pli = PictureLossIndication {
        sender_ssrc: 0,
        media_ssrc,
    };
    tracing::trace!(media_ssrc, "asking the publisher for a keyframe");
    if let Err(err) = track.write_rtcp(vec![Box::new(pli)]).await {
        tracing::trace!(%err, "keyframe request failed");
    }
}
