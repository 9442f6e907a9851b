//! One published track inside its media worker: the layers its publisher
//! sends, the `Fanout` that picks a layer and renumbers for every
//! subscriber, and the audio levels it reports. Sans-IO: the worker core
//! hands it packets and carries out the routes and keyframe requests.

use crate::fanout::Fanout;
use crate::red::{Delivery, Encoding};
use crate::rewriter::{Demand, KeyframeCodec, Rank};
use crate::room::RoomInput;
use crate::room_task::RoomEvent;
use crate::speakers::LevelWindow;
use crate::worker::{ConnId, TrackKey, WorkerCommand, WorkerHandle};
use bytes::Bytes;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId};
use salon_common::ParticipantSid;
use std::time::Instant;
use tokio::sync::mpsc;

/// One subscriber's copy of the track: a sender on its subscriber
/// connection, in the same worker as the publisher's.
pub(crate) struct DownTrack {
    pub(crate) subscriber: ParticipantSid,
    pub(crate) conn: ConnId,
    pub(crate) sender: RTCRtpSenderId,
    pub(crate) ssrc: u32,
    pub(crate) payload_type: u8,
    /// All of each payload, or the primary encoding of RED only.
    pub(crate) delivery: Delivery,
    /// Where retransmissions and padding go, if the subscriber accepted RTX.
    pub(crate) rtx: Option<crate::outbound::Rtx>,
    /// Served first when the subscriber's estimate is divided (a screen
    /// share; `Budget::divide`).
    pub(crate) first: bool,
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

/// What the worker does after a command.
pub(crate) enum Followup {
    Done,
    /// Ask the publisher for a keyframe of the layer on this SSRC.
    Keyframe(u32),
    /// This down track is gone: its connection may let go of its stream.
    Unsubscribed(DownTrack),
}

/// Where an audio track's levels go: the room, as its publisher's.
#[derive(Clone)]
pub(crate) struct LevelSink {
    pub(crate) room: mpsc::UnboundedSender<RoomEvent>,
    pub(crate) publisher: ParticipantSid,
}

/// What the room and the sessions keep of a forwarder: a way to command it
/// through its worker, and the codec subscribers must negotiate.
#[derive(Clone)]
pub(crate) struct ForwarderHandle {
    pub(crate) worker: WorkerHandle,
    pub(crate) track: TrackKey,
    pub(crate) codec: RTCRtpCodec,
    pub(crate) kind: RtpCodecKind,
}

impl ForwarderHandle {
    pub(crate) fn send(&self, command: ForwarderCommand) {
        self.worker.send(WorkerCommand::Forward {
            track: self.track,
            command,
        });
    }
}

pub(crate) struct Forwarder {
    /// The publisher's connection and the receiver the track arrives on.
    pub(crate) publisher: ConnId,
    pub(crate) receiver: RTCRtpReceiverId,
    pub(crate) fanout: Fanout<DownTrack>,
    /// The codec's RTP clock, for sender reports of the copies.
    pub(crate) clock_rate: u32,
    /// Video layers are fitted to subscribers' bandwidth; audio is not.
    pub(crate) video: bool,
    /// Whether the publisher sends RED, whose primary some subscribers get.
    encoding: Encoding,
    levels: Option<(LevelSink, u8, LevelWindow)>,
}

impl Forwarder {
    /// `levels` is where an audio track's levels go, with the id the
    /// publisher's connection gave the audio level extension; video ignores it.
    pub(crate) fn new(
        publisher: ConnId,
        receiver: RTCRtpReceiverId,
        codec: &RTCRtpCodec,
        kind: RtpCodecKind,
        levels: Option<(LevelSink, u8)>,
    ) -> Self {
        let is_video = kind == RtpCodecKind::Video;
        // Audio and codecs we cannot parse switch nowhere: every packet may start.
        let keyframe_codec = if is_video {
            KeyframeCodec::from_mime(&codec.mime_type)
        } else {
            None
        };
        Self {
            publisher,
            receiver,
            fanout: Fanout::new(codec.clock_rate, keyframe_codec),
            clock_rate: codec.clock_rate,
            video: is_video,
            encoding: Encoding::of(&codec.mime_type, &codec.sdp_fmtp_line),
            levels: levels
                .filter(|_| !is_video)
                .map(|(sink, ext)| (sink, ext, LevelWindow::default())),
        }
    }

    pub(crate) fn command(&mut self, now: Instant, command: ForwarderCommand) -> Followup {
        match command {
            ForwarderCommand::Add(d) => self.fanout.add(d.subscriber.clone(), d),
            ForwarderCommand::Remove(subscriber) => {
                if let Some(down) = self.fanout.forget(&subscriber) {
                    return Followup::Unsubscribed(down);
                }
            }
            ForwarderCommand::Demand { subscriber, demand } => {
                self.fanout.set_demand(&subscriber, demand);
            }
            ForwarderCommand::RequestKeyframe(subscriber) => {
                if let Some(ssrc) = self.fanout.keyframe_lost(now, &subscriber) {
                    return Followup::Keyframe(ssrc);
                }
            }
        }
        Followup::Done
    }

    /// The primary encoding of a RED payload, for subscribers that did not
    /// accept RED: a view of the same buffer, not a copy. `None`: nothing
    /// they could decode (see `Encoding::primary_range`).
    pub(crate) fn red_primary(&self, payload: &Bytes) -> Option<Bytes> {
        let range = self.encoding.primary_range(payload)?;
        Some(payload.slice(range))
    }

    /// Takes one packet of layer `rank`: notes its level, lets the fan-out
    /// route it, and strips what only meant something to the publisher's
    /// connection. `routes` then says where it goes.
    pub(crate) fn on_packet(&mut self, now: Instant, rank: Rank, packet: &mut rtp::Packet) {
        if let Some((sink, ext, window)) = &mut self.levels
            && let Some(level) = packet.header.get_extension(*ext)
            && let Some(&byte) = level.first()
            && let Some(sum) = window.observe(now, byte & 0x7f)
        {
            let _ = sink.room.send(RoomEvent::Input(RoomInput::AudioLevel {
                sid: sink.publisher.clone(),
                sum,
            }));
        }
        self.fanout.on_packet(
            now,
            rank,
            packet.header.ssrc,
            packet.header.sequence_number,
            packet.header.timestamp,
            &packet.payload,
        );
        // Extension ids are negotiated per connection; the publisher's mean
        // nothing to a subscriber.
        packet.header.extension = false;
        packet.header.extensions.clear();
        packet.header.extensions_padding = 0;
    }
}
