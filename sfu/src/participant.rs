//! The async shell of one participant session: owns its two peer connections
//! (publisher: the client offers; subscriber: the server offers), speaks the
//! signal protocol with the client and carries out the room's commands.

use crate::forwarder::{DownTrack, ForwarderCommand, ForwarderHandle, LevelSink};
use crate::negotiation::Negotiation;
use crate::outbound::Rtx;
use crate::quality::{QualityMeter, Sample};
use crate::red::{Delivery, Encoding};
use crate::room::RoomInput;
use crate::room_task::RoomEvent;
use crate::worker::{
    AUDIO_LEVEL_URI, Conn, ConnEvent, ConnNotice, ConnRole, OpenConn, TRANSPORT_CC_URI,
    WorkerError, WorkerHandle,
};
use livekit_protocol as lk;
use lk::signal_request::Message as Req;
use lk::signal_response::Message as Resp;
use prost::Message as _;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RTCRtpRtxParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{
    RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverId, RTCRtpTransceiverInit,
};
use rtc::statistics::StatsSelector;
use rtc::statistics::report::RTCStatsReportEntry;
use salon_common::{ParticipantSid, TrackSid};
use std::collections::HashMap;
use tokio::sync::mpsc;

/// Why a session ended with an error. The client gets a leave message; no
/// one else is affected.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error("webrtc: {0}")]
    WebRtc(#[from] rtc::shared::error::Error),
    #[error(transparent)]
    Worker(#[from] WorkerError),
    #[error("bad signal message: {0}")]
    BadSignal(&'static str),
    #[error("client is not reading its signal messages")]
    ClientTooSlow,
    #[error("a peer connection failed inside webrtc-rs")]
    ConnectionLost,
}

/// What the room tells a participant's session to do.
// Control-plane messages, a handful per join or publish: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum ParticipantCommand {
    Signal(Resp),
    AddDownTrack {
        publisher: ParticipantSid,
        track: lk::TrackInfo,
        forwarder: ForwarderHandle,
    },
    RemoveDownTrack {
        track: TrackSid,
    },
    /// An encoded data packet for the client.
    Data {
        kind: lk::data_packet::Kind,
        payload: bytes::Bytes,
    },
    Disconnect,
}

#[derive(Clone)]
pub(crate) struct ParticipantHandle {
    tx: mpsc::UnboundedSender<ParticipantCommand>,
}

impl ParticipantHandle {
    pub(crate) fn new() -> (Self, mpsc::UnboundedReceiver<ParticipantCommand>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }

    pub(crate) fn send(&self, command: ParticipantCommand) {
        // A session that has ended already told the room it left.
        let _ = self.tx.send(command);
    }
}

/// ICE settings for every connection Salon makes.
///
/// - No mDNS: webrtc-rs otherwise opens a multicast socket per connection to
///   resolve browsers' `.local` candidates; its queries would leave the
///   machine, and the SFU needs none of it: clients reach its host
///   candidates and it learns theirs from their connectivity checks, as
///   LiveKit does.
/// - No wait before nominating a peer-reflexive pair. A client's checks
///   usually arrive before its trickled candidates, so its address is first
///   known as peer-reflexive, and webrtc-rs's default 1 s wait (for a better
///   pair that never comes to a server) added a second to every join the
///   load test measured.
pub fn setting_engine_builder() -> SettingEngineBuilder {
    SettingEngineBuilder::new()
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .with_prflx_acceptance_min_wait(Some(std::time::Duration::ZERO))
}

/// A down track's negotiation as its subscriber connection has it.
struct Negotiated {
    track: TrackSid,
    sender: RTCRtpSenderId,
    mime: String,
    /// For the track's codec, from the sender's parameters.
    payload_type: Option<u8>,
    /// The section the sender sends in.
    mid: Option<String>,
}

struct DownEntry {
    publisher: ParticipantSid,
    sender: RTCRtpSenderId,
    forwarder: ForwarderHandle,
    ssrc: u32,
    /// The RTX stream offered beside a video track's.
    rtx_ssrc: Option<u32>,
    /// A screen share: served first from the subscriber's link.
    first: bool,
    attached: bool,
}

pub(crate) struct SessionParts {
    pub(crate) sid: ParticipantSid,
    pub(crate) worker: WorkerHandle,
    pub(crate) room: mpsc::UnboundedSender<RoomEvent>,
    pub(crate) commands: mpsc::UnboundedReceiver<ParticipantCommand>,
    pub(crate) from_client: mpsc::Receiver<lk::SignalRequest>,
    pub(crate) to_client: mpsc::Sender<lk::SignalResponse>,
    /// See `JoinParams::sync_streams`.
    pub(crate) sync_streams: bool,
}

struct Session {
    sid: ParticipantSid,
    room: mpsc::UnboundedSender<RoomEvent>,
    to_client: mpsc::Sender<lk::SignalResponse>,
    publisher: Conn,
    subscriber: Conn,
    negotiation: Negotiation,
    /// Forwarding to a subscriber before its DTLS handshake completes would
    /// lose packets, among them the keyframe it starts decoding from.
    subscriber_connected: bool,
    offer_id: u32,
    down: HashMap<TrackSid, DownEntry>,
    /// Track ids (cids) whose media arrived on the publisher connection.
    publishing: std::collections::HashSet<String>,
    /// The codec each announced track asked for (AddTrack's first simulcast codec).
    preferred_codecs: HashMap<String, String>,
    /// What each announced audio track asked of its Opus (RED, DTX, stereo).
    audio_answers: HashMap<String, crate::sdp::AudioAnswer>,
    /// The subscriber's last answer: which formats it accepted for each section.
    subscriber_answer: String,
    /// Candidates that came before the description they belong to.
    early_candidates: Vec<(lk::SignalTarget, RTCIceCandidateInit)>,
    quality: QualityMeter,
    /// Whether a connection is disconnected or failed, for the quality.
    link_down: [bool; 2],
    /// See `JoinParams::sync_streams`.
    sync_streams: bool,
}

/// How often a participant's connection quality is measured, as LiveKit
/// sends its updates.
const QUALITY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs one participant's session until the client leaves, the room
/// disconnects it, or it misbehaves. Always tells the room it left.
pub(crate) async fn run(parts: SessionParts) {
    let SessionParts {
        sid,
        worker,
        room,
        mut commands,
        mut from_client,
        to_client,
        sync_streams,
    } = parts;
    let (notice_tx, mut notices) = mpsc::unbounded_channel();
    let (keyframe_tx, mut keyframe_rx) = mpsc::unbounded_channel();
    let built = async {
        let publisher = worker
            .open(OpenConn {
                owner: sid.clone(),
                notices: notice_tx.clone(),
                role: ConnRole::Publisher {
                    levels: LevelSink {
                        room: room.clone(),
                        publisher: sid.clone(),
                    },
                },
            })
            .await?;
        let subscriber = worker
            .open(OpenConn {
                owner: sid.clone(),
                notices: notice_tx,
                role: ConnRole::Subscriber {
                    keyframe_requests: keyframe_tx,
                },
            })
            .await?;
        Ok::<_, WorkerError>((publisher, subscriber))
    }
    .await;
    let (publisher, subscriber) = match built {
        Ok(conns) => conns,
        Err(err) => {
            tracing::warn!(%err, "could not set up peer connections");
            let _ = room.send(RoomEvent::Input(RoomInput::Leave { sid }));
            return;
        }
    };
    let mut session = Session {
        sid: sid.clone(),
        room: room.clone(),
        to_client,
        publisher,
        subscriber,
        negotiation: Negotiation::default(),
        subscriber_connected: false,
        offer_id: 0,
        down: HashMap::new(),
        publishing: std::collections::HashSet::new(),
        preferred_codecs: HashMap::new(),
        audio_answers: HashMap::new(),
        subscriber_answer: String::new(),
        early_candidates: Vec::new(),
        quality: QualityMeter::default(),
        link_down: [false; 2],
        sync_streams,
    };
    let mut quality_tick = tokio::time::interval(QUALITY_INTERVAL);
    quality_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let outcome: Result<(), SessionError> = async {
        loop {
            tokio::select! {
                request = from_client.recv() => match request {
                    None => return Ok(()),
                    Some(request) => {
                        if session.handle_request(request).await? {
                            return Ok(());
                        }
                    }
                },
                command = commands.recv() => match command {
                    None | Some(ParticipantCommand::Disconnect) => return Ok(()),
                    Some(command) => session.handle_command(command).await?,
                },
                Some(notice) = notices.recv() => session.handle_notice(notice).await?,
                Some(ssrc) = keyframe_rx.recv() => session.keyframe_requested(ssrc),
                _ = quality_tick.tick() => session.measure_quality().await?,
            }
        }
    }
    .await;
    if let Err(err) = &outcome {
        tracing::info!(participant = %sid, %err, "session ended with an error");
        let _ = session.to_client.try_send(lk::SignalResponse {
            message: Some(crate::leave_message(
                lk::DisconnectReason::StateMismatch,
                lk::leave_request::Action::Disconnect,
            )),
        });
    }
    for entry in session.down.values() {
        entry.forwarder.send(ForwarderCommand::Remove(sid.clone()));
    }
    let _ = room.send(RoomEvent::Input(RoomInput::Leave { sid: sid.clone() }));
    // Dropping the session closes both connections in their worker.
    drop(session);
    tracing::debug!(participant = %sid, "session closed");
}

/// The stream id of a track sent to a subscriber (the first part of its
/// `a=msid`): the publisher's sid, then, for a client that plays a stream's
/// tracks in step (`sync_streams`), which of the publisher's streams it
/// belongs to, as LiveKit groups them: the stream the publisher named in
/// AddTrack, else camera with microphone and screen with its audio.
/// Otherwise, and for tracks of other sources, the track's sid: each track
/// is a stream of its own.
fn stream_id(publisher: &ParticipantSid, track: &lk::TrackInfo, sync_streams: bool) -> String {
    let group = match lk::TrackSource::try_from(track.source) {
        _ if !track.stream.is_empty() => Some(track.stream.as_str()),
        Ok(lk::TrackSource::Camera | lk::TrackSource::Microphone) => Some("camera"),
        Ok(lk::TrackSource::ScreenShare | lk::TrackSource::ScreenShareAudio) => Some("screen"),
        _ => None,
    };
    match group.filter(|_| sync_streams) {
        Some(group) => format!("{publisher}|{group}"),
        None => format!("{publisher}|{}", track.sid),
    }
}

/// Offers RED first and Opus after it in the section of the sender of a
/// track its publisher sends in RED, as LiveKit does. (Other audio tracks
/// offer their codec, which webrtc-rs follows with RED as a repair format.)
/// A subscriber whose earlier answer turned RED down gets Opus alone.
fn offer_red(pc: &mut RTCPeerConnection, sender: RTCRtpSenderId) {
    let Some(mut transceiver) = pc.rtp_transceiver(RTCRtpTransceiverId::from(sender)) else {
        return;
    };
    let opus = crate::red::opus_codec();
    let preferred = vec![crate::red::red_codec(), opus.clone()];
    if let Err(err) = transceiver.set_codec_preferences(preferred) {
        tracing::debug!(%err, "RED not offered to this subscriber");
        if let Err(err) = transceiver.set_codec_preferences(vec![opus]) {
            tracing::debug!(%err, "Opus preference not set");
        }
    }
}

/// Sets a description we made as local and returns the SDP to send, as the
/// connection holds it after setting.
fn apply_local(
    pc: &mut RTCPeerConnection,
    now: std::time::Instant,
    desc: RTCSessionDescription,
) -> Result<String, rtc::shared::error::Error> {
    pc.set_local_description(now, desc)?;
    Ok(pc.local_description().map(|d| d.sdp).unwrap_or_default())
}

impl Session {
    fn send(&self, message: Resp) -> Result<(), SessionError> {
        self.to_client
            .try_send(lk::SignalResponse {
                message: Some(message),
            })
            .map_err(|_| SessionError::ClientTooSlow)
    }

    fn to_room(&self, input: RoomInput) {
        let _ = self.room.send(RoomEvent::Input(input));
    }

    fn conn(&self, target: lk::SignalTarget) -> &Conn {
        match target {
            lk::SignalTarget::Publisher => &self.publisher,
            lk::SignalTarget::Subscriber => &self.subscriber,
        }
    }

    /// Returns true when the client left.
    async fn handle_request(&mut self, request: lk::SignalRequest) -> Result<bool, SessionError> {
        let Some(message) = request.message else {
            return Ok(false);
        };
        match message {
            Req::Offer(offer) => self.handle_offer(offer).await?,
            Req::Answer(answer) => self.handle_answer(answer).await?,
            Req::Trickle(trickle) => {
                let target = lk::SignalTarget::try_from(trickle.target)
                    .map_err(|_| SessionError::BadSignal("unknown trickle target"))?;
                let init: RTCIceCandidateInit = serde_json::from_str(&trickle.candidate_init)
                    .map_err(|_| SessionError::BadSignal("malformed ICE candidate"))?;
                self.add_candidate(target, init).await?;
            }
            Req::AddTrack(request) => {
                if let Some(codec) = request.simulcast_codecs.first()
                    && !codec.codec.is_empty()
                    && self.preferred_codecs.len() < 64
                {
                    self.preferred_codecs
                        .insert(request.cid.clone(), codec.codec.clone());
                }
                if request.r#type == lk::TrackType::Audio as i32 && self.audio_answers.len() < 64 {
                    self.audio_answers
                        .insert(request.cid.clone(), crate::sdp::AudioAnswer::of(&request));
                }
                self.to_room(RoomInput::AddTrack {
                    sid: self.sid.clone(),
                    request,
                });
            }
            Req::Mute(mute) => self.to_room(RoomInput::Mute {
                sid: self.sid.clone(),
                track: TrackSid::new(mute.sid),
                muted: mute.muted,
            }),
            Req::Subscription(update) => {
                let mut tracks: Vec<TrackSid> =
                    update.track_sids.into_iter().map(TrackSid::new).collect();
                for pt in update.participant_tracks {
                    tracks.extend(pt.track_sids.into_iter().map(TrackSid::new));
                }
                self.to_room(RoomInput::UpdateSubscription {
                    sid: self.sid.clone(),
                    tracks,
                    subscribe: update.subscribe,
                });
            }
            Req::TrackSetting(settings) => self.to_room(RoomInput::TrackSettings {
                sid: self.sid.clone(),
                settings,
            }),
            Req::UpdateMetadata(update) => self.to_room(RoomInput::UpdateMetadata {
                sid: self.sid.clone(),
                update,
            }),
            Req::Leave(_) => return Ok(true),
            Req::Ping(ts) => self.send(Resp::Pong(ts))?,
            Req::PingReq(ping) => self.send(Resp::PongResp(lk::Pong {
                last_ping_timestamp: ping.timestamp,
                timestamp: salon_common::unix_millis(),
            }))?,
            other => {
                tracing::debug!(participant = %self.sid, message = ?std::mem::discriminant(&other), "signal message not handled yet");
            }
        }
        Ok(false)
    }

    async fn handle_offer(&mut self, offer: lk::SessionDescription) -> Result<(), SessionError> {
        if offer.r#type != "offer" {
            return Err(SessionError::BadSignal("offer is not of type offer"));
        }
        let still_sending = crate::sdp::sending_track_ids(&offer.sdp);
        let offer_sdp = offer.sdp.clone();
        let desc = RTCSessionDescription::offer(offer.sdp)
            .map_err(|_| SessionError::BadSignal("malformed offer SDP"))?;
        let preferred = self.preferred_codecs.clone();
        let audio = self.audio_answers.clone();
        let sdp = self
            .publisher
            .with(move |conn, now| {
                conn.pc
                    .set_remote_description(now, desc)
                    .map_err(|_| SessionError::BadSignal("offer SDP rejected"))?;
                let answer = conn.pc.create_answer(None)?;
                let sdp = apply_local(&mut conn.pc, now, answer)?;
                // Browsers send the answer's first codec: put the one asked for there.
                let sdp = crate::sdp::prefer_codecs(&sdp, &offer_sdp, &preferred);
                // RED, DTX and mono as the tracks asked, which the browser
                // reads from the answer alone.
                let sdp = crate::sdp::tune_audio(&sdp, &offer_sdp, &audio);
                conn.audio_level_ext = crate::sdp::extmap_id(&sdp, AUDIO_LEVEL_URI);
                Ok::<_, SessionError>(sdp)
            })
            .await??;
        self.send(Resp::Answer(lk::SessionDescription {
            r#type: "answer".to_owned(),
            sdp,
            id: offer.id,
            mid_to_track_id: HashMap::new(),
        }))?;
        self.flush_early_candidates(lk::SignalTarget::Publisher)
            .await?;
        let stopped: Vec<String> = self
            .publishing
            .iter()
            .filter(|cid| !still_sending.contains(*cid))
            .cloned()
            .collect();
        for cid in stopped {
            self.publishing.remove(&cid);
            self.to_room(RoomInput::Unpublish {
                sid: self.sid.clone(),
                cid,
            });
        }
        Ok(())
    }

    async fn handle_answer(&mut self, answer: lk::SessionDescription) -> Result<(), SessionError> {
        if !self.negotiation.is_awaiting() {
            // A stale or unsolicited answer: nothing to apply it to.
            return Ok(());
        }
        // Where the client numbers what it receives for transport-wide
        // feedback, Salon's estimate of its downlink comes from.
        let transport_cc = crate::sdp::extmap_id(&answer.sdp, TRANSPORT_CC_URI);
        let answer_sdp = answer.sdp.clone();
        let desc = RTCSessionDescription::answer(answer.sdp)
            .map_err(|_| SessionError::BadSignal("malformed answer SDP"))?;
        self.subscriber
            .with(move |conn, now| {
                conn.pc.set_remote_description(now, desc)?;
                conn.set_transport_cc(transport_cc);
                Ok::<_, rtc::shared::error::Error>(())
            })
            .await?
            .map_err(|_| SessionError::BadSignal("answer SDP rejected"))?;
        self.subscriber_answer = answer_sdp;
        self.flush_early_candidates(lk::SignalTarget::Subscriber)
            .await?;
        if self.negotiation.answered() {
            self.send_offer().await?;
        }
        self.attach_down_tracks().await?;
        Ok(())
    }

    async fn add_candidate(
        &mut self,
        target: lk::SignalTarget,
        init: RTCIceCandidateInit,
    ) -> Result<(), SessionError> {
        let conn = self.conn(target);
        let refused = conn
            .with(move |conn, _| {
                if conn.pc.remote_description().is_none() {
                    return Some(init);
                }
                if let Err(err) = conn.pc.add_remote_candidate(init) {
                    tracing::debug!(%err, "ignored a remote ICE candidate");
                }
                None
            })
            .await?;
        // Candidates that come before their description wait for it.
        if let Some(init) = refused
            && self.early_candidates.len() < 64
        {
            self.early_candidates.push((target, init));
        }
        Ok(())
    }

    async fn flush_early_candidates(
        &mut self,
        target: lk::SignalTarget,
    ) -> Result<(), SessionError> {
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.early_candidates)
            .into_iter()
            .partition(|(t, _)| *t == target);
        self.early_candidates = later;
        for (t, init) in now {
            self.add_candidate(t, init).await?;
        }
        Ok(())
    }

    async fn send_offer(&mut self) -> Result<(), SessionError> {
        let sdp = self
            .subscriber
            .with(|conn, now| {
                let offer = conn.pc.create_offer(None)?;
                apply_local(&mut conn.pc, now, offer)
            })
            .await??;
        self.offer_id += 1;
        self.send(Resp::Offer(lk::SessionDescription {
            r#type: "offer".to_owned(),
            sdp,
            id: self.offer_id,
            mid_to_track_id: HashMap::new(),
        }))
    }

    /// Starts forwarding to down tracks whose negotiation has completed, now
    /// that the payload type the subscriber accepted is known.
    async fn attach_down_tracks(&mut self) -> Result<(), SessionError> {
        if !self.subscriber_connected || self.negotiation.is_awaiting() {
            return Ok(());
        }
        let waiting: Vec<(TrackSid, RTCRtpSenderId, String)> = self
            .down
            .iter()
            .filter(|(_, e)| !e.attached)
            .map(|(t, e)| (t.clone(), e.sender, e.forwarder.codec.mime_type.clone()))
            .collect();
        if waiting.is_empty() {
            return Ok(());
        }
        // The worker hands the list back with the payload type each sender
        // negotiated for the track's codec, and the section it sends in.
        let negotiated: Vec<Negotiated> = self
            .subscriber
            .with(move |conn, _| {
                waiting
                    .into_iter()
                    .map(|(track, sender, mime)| {
                        let payload_type = conn.pc.rtp_sender(sender).and_then(|mut s| {
                            s.get_parameters()
                                .rtp_parameters
                                .codecs
                                .iter()
                                .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(&mime))
                                .map(|c| c.payload_type)
                        });
                        let mid = conn
                            .pc
                            .rtp_transceiver(RTCRtpTransceiverId::from(sender))
                            .and_then(|t| t.mid().clone());
                        Negotiated {
                            track,
                            sender,
                            mime,
                            payload_type,
                            mid,
                        }
                    })
                    .collect()
            })
            .await?;
        for n in negotiated {
            let Some(entry) = self.down.get_mut(&n.track) else {
                continue;
            };
            // The sender's parameters list what was offered; what the
            // subscriber took (RED, RTX) only its answer says.
            let formats = n
                .mid
                .as_deref()
                .map(|mid| crate::sdp::formats(&self.subscriber_answer, mid))
                .unwrap_or_default();
            let route = if entry.forwarder.kind == RtpCodecKind::Audio {
                let codec = &entry.forwarder.codec;
                let encoding = Encoding::of(&codec.mime_type, &codec.sdp_fmtp_line);
                let name = codec.mime_type.rsplit('/').next().unwrap_or_default();
                crate::red::route_audio(encoding, name, &formats)
                    .map(|route| (route.payload_type, route.delivery))
            } else {
                n.payload_type.map(|pt| (pt, Delivery::Whole))
            };
            let Some((payload_type, delivery)) = route else {
                tracing::warn!(mime = %n.mime, "subscriber did not accept the track's codec");
                continue;
            };
            let rtx = entry
                .rtx_ssrc
                .zip(crate::sdp::rtx_for(&formats, payload_type))
                .map(|(ssrc, payload_type)| Rtx { ssrc, payload_type });
            tracing::debug!(participant = %self.sid, track = %n.track, payload_type, ?delivery, ?rtx, "forwarding to a subscriber");
            entry.attached = true;
            entry.forwarder.send(ForwarderCommand::Add(DownTrack {
                subscriber: self.sid.clone(),
                conn: self.subscriber.id,
                sender: n.sender,
                ssrc: entry.ssrc,
                payload_type,
                delivery,
                rtx,
                first: entry.first,
            }));
        }
        Ok(())
    }

    /// Reads the connections' loss counters and tells the room how the
    /// participant's link did since the last time.
    async fn measure_quality(&mut self) -> Result<(), SessionError> {
        // What arrived of what the publisher sent, before any repair:
        // the link's loss (`repair.rs`).
        let (uplink_received, uplink_lost) = self
            .publisher
            .with(|conn, _| {
                let (expected, received) = conn.uplink;
                (received, expected.saturating_sub(received))
            })
            .await?;
        let downlink_loss = self
            .subscriber
            .with(|conn, now| {
                let report = conn.pc.get_stats(now, StatsSelector::None);
                report
                    .iter()
                    .filter_map(|e| match e {
                        RTCStatsReportEntry::RemoteInboundRtp(s) => Some(s.fraction_lost),
                        _ => None,
                    })
                    .reduce(f64::max)
            })
            .await?;
        let (quality, score) = self.quality.update(Sample {
            uplink_received,
            uplink_lost,
            downlink_loss,
            connected: !self.link_down.contains(&true),
        });
        self.to_room(RoomInput::Quality {
            sid: self.sid.clone(),
            quality,
            score,
        });
        Ok(())
    }

    /// The subscriber lost video on `ssrc` and wants a keyframe.
    fn keyframe_requested(&self, ssrc: u32) {
        if let Some(entry) = self.down.values().find(|e| e.ssrc == ssrc && e.attached) {
            entry
                .forwarder
                .send(ForwarderCommand::RequestKeyframe(self.sid.clone()));
        }
    }

    async fn handle_command(&mut self, command: ParticipantCommand) -> Result<(), SessionError> {
        match command {
            ParticipantCommand::Signal(message) => {
                let joined = matches!(message, Resp::Join(_));
                self.send(message)?;
                // The subscriber connection carries the room's data packets
                // from the start, so it is negotiated as soon as the client
                // knows it joined, as LiveKit does.
                if joined && self.negotiation.tracks_changed() {
                    self.send_offer().await?;
                }
            }
            ParticipantCommand::AddDownTrack {
                publisher,
                track,
                forwarder,
            } => {
                let track_sid = TrackSid::new(track.sid.clone());
                if self.down.contains_key(&track_sid) {
                    return Ok(());
                }
                // Any non-zero value unique within the subscriber connection will do.
                let ssrc: u32 = rand::random::<u32>().max(1);
                // Video gets an RTX stream (RFC 4588) for retransmissions
                // and probe padding, as browsers and LiveKit use it.
                let rtx_ssrc = (forwarder.kind == RtpCodecKind::Video)
                    .then(|| rand::random::<u32>().max(1))
                    .filter(|&r| r != ssrc);
                // A RED track goes to each subscriber as RED or as the Opus
                // inside it: the sender is Opus's, and RED is offered first
                // beside it, as LiveKit offers them.
                let red = crate::red::is_red(&forwarder.codec.mime_type);
                let codec = if red {
                    crate::red::opus_codec().rtp_codec
                } else {
                    forwarder.codec.clone()
                };
                // livekit-client finds the publisher and the track from these ids.
                let stream = stream_id(&publisher, &track, self.sync_streams);
                let local = MediaStreamTrack::new(
                    stream,
                    track.sid.clone(),
                    track.sid.clone(),
                    forwarder.kind,
                    vec![RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            ssrc: Some(ssrc),
                            rtx: rtx_ssrc.map(|ssrc| RTCRtpRtxParameters { ssrc }),
                            ..Default::default()
                        },
                        codec,
                        ..Default::default()
                    }],
                );
                let fresh_transceiver = self.sync_streams;
                let sender = self
                    .subscriber
                    .with(move |conn, _| {
                        let sender = if fresh_transceiver {
                            // A transceiver used before keeps, in the
                            // browser, the receiving track it had, with the
                            // id of the track it carried then; with a
                            // stream id shared by two tracks, that id is
                            // all livekit-client has to tell which track
                            // it is. So each track gets a transceiver of
                            // its own, as LiveKit does with sync streams.
                            let init = RTCRtpTransceiverInit {
                                direction: RTCRtpTransceiverDirection::Sendonly,
                                streams: Vec::new(),
                                send_encodings: Vec::new(),
                            };
                            conn.pc
                                .add_transceiver_from_track(local, Some(init))?
                                .into()
                        } else {
                            conn.pc.add_track(local)?
                        };
                        if red {
                            offer_red(&mut conn.pc, sender);
                        }
                        Ok::<_, rtc::shared::error::Error>(sender)
                    })
                    .await??;
                self.down.insert(
                    track_sid,
                    DownEntry {
                        publisher: publisher.clone(),
                        sender,
                        forwarder,
                        ssrc,
                        rtx_ssrc,
                        first: track.source == lk::TrackSource::ScreenShare as i32,
                        attached: false,
                    },
                );
                if self.negotiation.tracks_changed() {
                    self.send_offer().await?;
                }
            }
            ParticipantCommand::RemoveDownTrack { track } => {
                if let Some(entry) = self.down.remove(&track) {
                    entry
                        .forwarder
                        .send(ForwarderCommand::Remove(self.sid.clone()));
                    let sender = entry.sender;
                    let removed = self
                        .subscriber
                        .with(move |conn, _| conn.pc.remove_track(sender))
                        .await?;
                    if let Err(err) = removed {
                        tracing::debug!(%err, "removing a down track failed");
                    }
                    if self.negotiation.tracks_changed() {
                        self.send_offer().await?;
                    }
                }
            }
            ParticipantCommand::Data { kind, payload } => {
                self.subscriber
                    .post(move |conn, now| conn.send_data(now, kind, &payload));
            }
            ParticipantCommand::Disconnect => {}
        }
        Ok(())
    }

    async fn handle_notice(&mut self, notice: ConnNotice) -> Result<(), SessionError> {
        let target = if notice.conn == self.publisher.id {
            lk::SignalTarget::Publisher
        } else {
            lk::SignalTarget::Subscriber
        };
        match notice.event {
            ConnEvent::Track { cid, forwarder } => {
                self.publishing.insert(cid.clone());
                let _ = self.room.send(RoomEvent::Media {
                    publisher: self.sid.clone(),
                    cid,
                    forwarder,
                });
            }
            ConnEvent::Broken => return Err(SessionError::ConnectionLost),
            ConnEvent::StreamState { ssrc, active } => {
                let Some((track, entry)) = self.down.iter().find(|(_, e)| e.ssrc == ssrc) else {
                    return Ok(());
                };
                let state = if active {
                    lk::StreamState::Active
                } else {
                    lk::StreamState::Paused
                };
                tracing::debug!(participant = %self.sid, %track, ?state, "stream state");
                self.send(Resp::StreamStateUpdate(lk::StreamStateUpdate {
                    stream_states: vec![lk::StreamStateInfo {
                        participant_sid: entry.publisher.to_string(),
                        track_sid: track.to_string(),
                        state: state as i32,
                    }],
                }))?;
            }
            ConnEvent::Data { kind, payload } => match lk::DataPacket::decode(payload) {
                Ok(packet) => self.to_room(RoomInput::Data {
                    sid: self.sid.clone(),
                    kind,
                    packet,
                }),
                // A malformed packet costs its sender that packet only.
                Err(err) => tracing::debug!(participant = %self.sid, %err, "malformed data packet"),
            },
            ConnEvent::State(state) => {
                tracing::debug!(participant = %self.sid, ?target, %state, "peer connection state");
                self.link_down[target as usize] = matches!(
                    state,
                    RTCPeerConnectionState::Disconnected | RTCPeerConnectionState::Failed
                );
                if target == lk::SignalTarget::Subscriber {
                    self.subscriber_connected = state == RTCPeerConnectionState::Connected;
                    self.attach_down_tracks().await?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_camera_and_its_microphone_share_a_stream_where_the_client_syncs_streams() {
        let publisher = ParticipantSid::new("PA_pub".to_owned());
        let track = |sid: &str, source: lk::TrackSource| lk::TrackInfo {
            sid: sid.to_owned(),
            source: source as i32,
            ..Default::default()
        };
        let camera = track("TR_cam", lk::TrackSource::Camera);
        let mic = track("TR_mic", lk::TrackSource::Microphone);
        let screen = track("TR_scr", lk::TrackSource::ScreenShare);
        let screen_audio = track("TR_sca", lk::TrackSource::ScreenShareAudio);
        let other = track("TR_unk", lk::TrackSource::Unknown);
        assert_eq!(stream_id(&publisher, &camera, true), "PA_pub|camera");
        assert_eq!(stream_id(&publisher, &mic, true), "PA_pub|camera");
        assert_eq!(stream_id(&publisher, &screen, true), "PA_pub|screen");
        assert_eq!(stream_id(&publisher, &screen_audio, true), "PA_pub|screen");
        assert_eq!(stream_id(&publisher, &other, true), "PA_pub|TR_unk");
        // A stream the publisher named groups its tracks instead.
        let named = lk::TrackInfo {
            stream: "second-camera".to_owned(),
            ..camera.clone()
        };
        assert_eq!(stream_id(&publisher, &named, true), "PA_pub|second-camera");
        assert_eq!(stream_id(&publisher, &named, false), "PA_pub|TR_cam");
        // Firefox: the track's own stream, whose id names it.
        assert_eq!(stream_id(&publisher, &camera, false), "PA_pub|TR_cam");
        assert_eq!(stream_id(&publisher, &mic, false), "PA_pub|TR_mic");
    }
}
