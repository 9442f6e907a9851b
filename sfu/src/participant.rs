//! The async shell of one participant session: owns its two peer connections
//! (publisher: the client offers; subscriber: the server offers), speaks the
//! signal protocol with the client and carries out the room's commands.

use crate::feedback::{FEEDBACK_SLOT, KeyframeRequestTap};
use crate::forwarder::{self, DownTrack, ForwarderCommand, ForwarderHandle, LevelSink};
use crate::negotiation::Negotiation;
use crate::room::RoomInput;
use crate::room_task::RoomEvent;
use livekit_protocol as lk;
use lk::signal_request::Message as Req;
use lk::signal_response::Message as Resp;
use rtc::interceptor::{Registry, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use salon_common::{ParticipantSid, TrackSid};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription, register_default_interceptors,
};
use webrtc::rtp_transceiver::RtpSender;

/// Why a session ended with an error. The client gets a leave message; no
/// one else is affected.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error("webrtc: {0}")]
    WebRtc(#[from] webrtc::error::Error),
    #[error("bad signal message: {0}")]
    BadSignal(&'static str),
    #[error("client is not reading its signal messages")]
    ClientTooSlow,
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

enum PcEvent {
    Candidate(lk::SignalTarget, RTCIceCandidateInit),
    Track(Arc<dyn TrackRemote>),
    State(lk::SignalTarget, RTCPeerConnectionState),
}

struct PcHandler {
    target: lk::SignalTarget,
    tx: mpsc::UnboundedSender<PcEvent>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for PcHandler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let _ = self.tx.send(PcEvent::Candidate(self.target, init));
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.tx.send(PcEvent::Track(track));
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.tx.send(PcEvent::State(self.target, state));
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
pub fn setting_engine() -> webrtc::peer_connection::SettingEngine {
    webrtc::peer_connection::SettingEngineBuilder::new()
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .with_prflx_acceptance_min_wait(Some(std::time::Duration::ZERO))
        .build()
}

const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

async fn new_peer_connection(
    bind_ip: IpAddr,
    handler: PcHandler,
    keyframe_requests: Option<mpsc::UnboundedSender<u32>>,
) -> Result<Arc<dyn PeerConnection>, SessionError> {
    let mut media = MediaEngine::default();
    media.register_default_codecs()?;
    // Simulcast layers are told apart by these extensions.
    for uri in [
        "urn:ietf:params:rtp-hdrext:sdes:mid",
        "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
        "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
    ] {
        media.register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: uri.to_owned(),
            },
            RtpCodecKind::Video,
            None,
        )?;
    }
    // Microphones' levels tell who is speaking.
    media.register_header_extension(
        RTCRtpHeaderExtensionCapability {
            uri: AUDIO_LEVEL_URI.to_owned(),
        },
        RtpCodecKind::Audio,
        None,
    )?;
    let mut registry = register_default_interceptors(Registry::new(), &mut media)?;
    if let Some(tx) = keyframe_requests {
        registry = registry.with(Slot::from(FEEDBACK_SLOT), KeyframeRequestTap::new(tx));
    }
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(setting_engine())
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(handler))
        .with_udp_addrs(vec![SocketAddr::new(bind_ip, 0)])
        .build()
        .await?;
    Ok(Arc::new(pc))
}

struct DownEntry {
    sender: Arc<dyn RtpSender>,
    local: Arc<TrackLocalStaticRTP>,
    forwarder: ForwarderHandle,
    ssrc: u32,
    attached: bool,
}

pub(crate) struct SessionParts {
    pub(crate) sid: ParticipantSid,
    pub(crate) bind_ip: IpAddr,
    pub(crate) room: mpsc::UnboundedSender<RoomEvent>,
    pub(crate) commands: mpsc::UnboundedReceiver<ParticipantCommand>,
    pub(crate) from_client: mpsc::Receiver<lk::SignalRequest>,
    pub(crate) to_client: mpsc::Sender<lk::SignalResponse>,
}

struct Session {
    sid: ParticipantSid,
    room: mpsc::UnboundedSender<RoomEvent>,
    to_client: mpsc::Sender<lk::SignalResponse>,
    publisher: Arc<dyn PeerConnection>,
    subscriber: Arc<dyn PeerConnection>,
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
    /// Candidates that came before the description they belong to.
    early_candidates: Vec<(lk::SignalTarget, RTCIceCandidateInit)>,
    /// The id the publisher connection's last answer gave the audio level extension.
    audio_level_ext: Option<u8>,
}

/// Runs one participant's session until the client leaves, the room
/// disconnects it, or it misbehaves. Always tells the room it left.
pub(crate) async fn run(parts: SessionParts) {
    let SessionParts {
        sid,
        bind_ip,
        room,
        mut commands,
        mut from_client,
        to_client,
    } = parts;
    let (pc_tx, mut pc_rx) = mpsc::unbounded_channel();
    let (keyframe_tx, mut keyframe_rx) = mpsc::unbounded_channel();
    let built = async {
        let publisher = new_peer_connection(
            bind_ip,
            PcHandler {
                target: lk::SignalTarget::Publisher,
                tx: pc_tx.clone(),
            },
            None,
        )
        .await?;
        let subscriber = new_peer_connection(
            bind_ip,
            PcHandler {
                target: lk::SignalTarget::Subscriber,
                tx: pc_tx.clone(),
            },
            Some(keyframe_tx),
        )
        .await?;
        Ok::<_, SessionError>((publisher, subscriber))
    }
    .await;
    let (publisher, subscriber) = match built {
        Ok(pcs) => pcs,
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
        early_candidates: Vec::new(),
        audio_level_ext: None,
    };
    // The handlers hold the senders of peer connection events from here on.
    drop(pc_tx);
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
                Some(event) = pc_rx.recv() => session.handle_pc_event(event).await?,
                Some(ssrc) = keyframe_rx.recv() => session.keyframe_requested(ssrc),
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
    let _ = session.publisher.close().await;
    let _ = session.subscriber.close().await;
    tracing::debug!(participant = %sid, "session closed");
}

/// Sets a description we made as local and returns the SDP to send, as the
/// connection holds it after setting. The load generator's clients use it too.
pub async fn apply_local(
    pc: &Arc<dyn PeerConnection>,
    desc: RTCSessionDescription,
) -> Result<String, webrtc::error::Error> {
    pc.set_local_description(desc).await?;
    Ok(pc
        .local_description()
        .await
        .map(|d| d.sdp)
        .unwrap_or_default())
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
                self.add_candidate(target, init).await;
            }
            Req::AddTrack(request) => {
                if let Some(codec) = request.simulcast_codecs.first()
                    && !codec.codec.is_empty()
                    && self.preferred_codecs.len() < 64
                {
                    self.preferred_codecs
                        .insert(request.cid.clone(), codec.codec.clone());
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
        self.publisher
            .set_remote_description(desc)
            .await
            .map_err(|_| SessionError::BadSignal("offer SDP rejected"))?;
        let answer = self.publisher.create_answer(None).await?;
        let sdp = apply_local(&self.publisher, answer).await?;
        // Browsers send the answer's first codec: put the one asked for there.
        let sdp = crate::sdp::prefer_codecs(&sdp, &offer_sdp, &self.preferred_codecs);
        self.audio_level_ext = crate::sdp::extmap_id(&sdp, AUDIO_LEVEL_URI);
        self.send(Resp::Answer(lk::SessionDescription {
            r#type: "answer".to_owned(),
            sdp,
            id: offer.id,
            mid_to_track_id: HashMap::new(),
        }))?;
        self.flush_early_candidates(lk::SignalTarget::Publisher)
            .await;
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
        let desc = RTCSessionDescription::answer(answer.sdp)
            .map_err(|_| SessionError::BadSignal("malformed answer SDP"))?;
        self.subscriber
            .set_remote_description(desc)
            .await
            .map_err(|_| SessionError::BadSignal("answer SDP rejected"))?;
        self.flush_early_candidates(lk::SignalTarget::Subscriber)
            .await;
        if self.negotiation.answered() {
            self.send_offer().await?;
        }
        self.attach_down_tracks().await;
        Ok(())
    }

    async fn add_candidate(&mut self, target: lk::SignalTarget, init: RTCIceCandidateInit) {
        let pc = match target {
            lk::SignalTarget::Publisher => &self.publisher,
            lk::SignalTarget::Subscriber => &self.subscriber,
        };
        if pc.remote_description().await.is_none() {
            if self.early_candidates.len() < 64 {
                self.early_candidates.push((target, init));
            }
            return;
        }
        if let Err(err) = pc.add_ice_candidate(init).await {
            tracing::debug!(%err, "ignored a remote ICE candidate");
        }
    }

    async fn flush_early_candidates(&mut self, target: lk::SignalTarget) {
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.early_candidates)
            .into_iter()
            .partition(|(t, _)| *t == target);
        self.early_candidates = later;
        for (t, init) in now {
            self.add_candidate(t, init).await;
        }
    }

    async fn send_offer(&mut self) -> Result<(), SessionError> {
        let offer = self.subscriber.create_offer(None).await?;
        let sdp = apply_local(&self.subscriber, offer).await?;
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
    async fn attach_down_tracks(&mut self) {
        if !self.subscriber_connected || self.negotiation.is_awaiting() {
            return;
        }
        for entry in self.down.values_mut().filter(|e| !e.attached) {
            let Ok(params) = entry.sender.get_parameters().await else {
                continue;
            };
            let mime = &entry.forwarder.codec.mime_type;
            let Some(codec) = params
                .rtp_parameters
                .codecs
                .iter()
                .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
            else {
                tracing::warn!(%mime, "subscriber did not accept the track's codec");
                continue;
            };
            entry.attached = true;
            entry.forwarder.send(ForwarderCommand::Add(DownTrack {
                subscriber: self.sid.clone(),
                local: entry.local.clone(),
                ssrc: entry.ssrc,
                payload_type: codec.payload_type,
            }));
        }
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
            ParticipantCommand::Signal(message) => self.send(message)?,
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
                // livekit-client finds the publisher and the track from these ids.
                let local = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
                    format!("{publisher}|{}", track.sid),
                    track.sid.clone(),
                    track.sid.clone(),
                    forwarder.kind,
                    vec![RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            ssrc: Some(ssrc),
                            ..Default::default()
                        },
                        codec: forwarder.codec.clone(),
                        ..Default::default()
                    }],
                )));
                let sender = self
                    .subscriber
                    .add_track(local.clone() as Arc<dyn TrackLocal>)
                    .await?;
                self.down.insert(
                    track_sid,
                    DownEntry {
                        sender,
                        local,
                        forwarder,
                        ssrc,
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
                    if let Err(err) = self.subscriber.remove_track(&entry.sender).await {
                        tracing::debug!(%err, "removing a down track failed");
                    }
                    if self.negotiation.tracks_changed() {
                        self.send_offer().await?;
                    }
                }
            }
            ParticipantCommand::Disconnect => {}
        }
        Ok(())
    }

    async fn handle_pc_event(&mut self, event: PcEvent) -> Result<(), SessionError> {
        match event {
            PcEvent::Candidate(target, init) => {
                let candidate_init = serde_json::to_string(&init)
                    .map_err(|_| SessionError::BadSignal("unencodable local candidate"))?;
                self.send(Resp::Trickle(lk::TrickleRequest {
                    candidate_init,
                    target: target as i32,
                    r#final: false,
                }))?;
            }
            PcEvent::Track(track) => {
                let room = self.room.clone();
                let publisher = self.sid.clone();
                let cid = track.track_id().await;
                self.publishing.insert(cid.clone());
                let levels = self.audio_level_ext.map(|ext_id| LevelSink {
                    room: room.clone(),
                    publisher: publisher.clone(),
                    ext_id,
                });
                tokio::spawn(async move {
                    if let Some(forwarder) = forwarder::start(track, levels).await {
                        let _ = room.send(RoomEvent::Media {
                            publisher,
                            cid,
                            forwarder,
                        });
                    }
                });
            }
            PcEvent::State(target, state) => {
                tracing::debug!(participant = %self.sid, ?target, %state, "peer connection state");
                if target == lk::SignalTarget::Subscriber {
                    self.subscriber_connected = state == RTCPeerConnectionState::Connected;
                    self.attach_down_tracks().await;
                }
            }
        }
        Ok(())
    }
}
