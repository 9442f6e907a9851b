//! A synthetic participant that speaks LiveKit's signal protocol (`/rtc`,
//! two peer connections, as livekit-client does on its v0 path), so it loads
//! Salon and a LiveKit server alike.

use crate::peer::{self, Outgoing, PcEvent, Peer, SendPlan, lock};
use crate::{Participant, RunContext};
use futures::{SinkExt, StreamExt};
use livekit_protocol as lk;
use lk::signal_request::Message as Req;
use lk::signal_response::Message as Resp;
use prost::Message as _;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use webrtc::peer_connection::{
    PeerConnection, RTCIceCandidateInit, RTCPeerConnectionState, RTCSessionDescription,
};

#[derive(Debug, thiserror::Error)]
pub(crate) enum SignalError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    #[error("signal connection: {0}")]
    Socket(String),
    #[error("server sent {0}")]
    Protocol(&'static str),
    #[error("server asked to leave (reason {0})")]
    Left(i32),
    #[error("webrtc: {0}")]
    WebRtc(#[from] webrtc::error::Error),
    #[error("token: {0}")]
    Token(String),
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Signal {
    ws: Ws,
}

impl Signal {
    async fn send(&mut self, message: Req) -> Result<(), SignalError> {
        let bytes = lk::SignalRequest {
            message: Some(message),
        }
        .encode_to_vec();
        self.ws
            .send(WsMessage::Binary(bytes.into()))
            .await
            .map_err(|e| SignalError::Socket(e.to_string()))
    }

    /// The next signal message; None when the server closed the socket.
    async fn recv(&mut self) -> Result<Option<Resp>, SignalError> {
        loop {
            let Some(frame) = self.ws.next().await else {
                return Ok(None);
            };
            match frame.map_err(|e| SignalError::Socket(e.to_string()))? {
                WsMessage::Binary(bytes) => {
                    let response = lk::SignalResponse::decode(bytes.as_ref())
                        .map_err(|_| SignalError::Protocol("an undecodable message"))?;
                    if let Some(message) = response.message {
                        return Ok(Some(message));
                    }
                }
                WsMessage::Close(_) => return Ok(None),
                _ => {}
            }
        }
    }
}

fn signal_url(base: &str, token: &str, subscribe: bool) -> String {
    let base = base.trim_end_matches('/');
    format!(
        "{base}/rtc?access_token={token}&auto_subscribe={}&sdk=rust&protocol=15&adaptive_stream=0",
        u8::from(subscribe)
    )
}

/// One connection's side: the peer, and candidates that came before the
/// description they belong to.
struct Side {
    pc: Arc<dyn PeerConnection>,
    events: tokio::sync::mpsc::UnboundedReceiver<PcEvent>,
    early: Vec<RTCIceCandidateInit>,
}

impl Side {
    fn new(peer: Peer) -> Self {
        Self {
            pc: peer.pc,
            events: peer.events,
            early: Vec::new(),
        }
    }

    async fn add_candidate(&mut self, init: RTCIceCandidateInit) {
        if self.pc.remote_description().await.is_none() {
            self.early.push(init);
        } else if let Err(err) = self.pc.add_ice_candidate(init).await {
            tracing::debug!(%err, "remote candidate refused");
        }
    }

    async fn flush(&mut self) {
        for init in std::mem::take(&mut self.early) {
            if let Err(err) = self.pc.add_ice_candidate(init).await {
                tracing::debug!(%err, "remote candidate refused");
            }
        }
    }
}

/// Joins, publishes and subscribes as `who` says, until the run stops.
/// `joined` fires once the connection that matters (the publishing one for
/// publishers) is up.
pub(crate) async fn run(
    who: Participant,
    ctx: Arc<RunContext>,
    joined: oneshot::Sender<Duration>,
) -> Result<(), SignalError> {
    let started = Instant::now();
    let token = ctx.auth.token_for(&ctx.room, &who.identity)?;
    let url = signal_url(&ctx.url, &token, who.subscribe);
    let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .map_err(|e| SignalError::Connect(ctx.url.clone(), e.to_string()))?;
    let mut signal = Signal { ws };
    let join = match signal.recv().await? {
        Some(Resp::Join(join)) => join,
        Some(Resp::Leave(leave)) => return Err(SignalError::Left(leave.reason)),
        _ => return Err(SignalError::Protocol("no JoinResponse")),
    };
    let mut ping = tokio::time::interval(Duration::from_secs(
        u64::try_from(join.ping_interval).unwrap_or(5).clamp(1, 10),
    ));
    let mut stop = ctx.stop.clone();
    let mut joined = Some(joined);

    let mut publisher: Option<Side> = None;
    let mut announced: HashMap<String, Outgoing> = HashMap::new();
    let mut plans: Vec<SendPlan> = Vec::new();
    let mut keyframe_requests = None;
    if who.video.is_some() || who.audio {
        let mut peer = peer::new_peer(ctx.bind_ip, true).await?;
        keyframe_requests = peer.keyframe_requests.take();
        let pc = peer.pc.clone();
        publisher = Some(Side::new(peer));
        let stream_id = format!("{}-stream", who.identity);
        if let Some(layers) = &who.video {
            let cid = format!("{}-video", who.identity);
            let out = peer::add_video(&pc, &stream_id, &cid, layers, who.simulcast).await?;
            signal
                .send(Req::AddTrack(video_request(&cid, &out, &ctx)))
                .await?;
            announced.insert(cid, out);
        }
        if who.audio {
            let cid = format!("{}-audio", who.identity);
            let out = peer::add_audio(&pc, &stream_id, &cid).await?;
            signal
                .send(Req::AddTrack(lk::AddTrackRequest {
                    cid: cid.clone(),
                    name: "microphone".to_owned(),
                    r#type: lk::TrackType::Audio as i32,
                    source: lk::TrackSource::Microphone as i32,
                    ..Default::default()
                }))
                .await?;
            announced.insert(cid, out);
        }
    }
    let mut subscriber: Option<Side> = None;

    let outcome = loop {
        tokio::select! {
            message = signal.recv() => {
                let Some(message) = message? else {
                    break Err(SignalError::Socket("closed by the server".to_owned()));
                };
                match message {
                    Resp::TrackPublished(published) => {
                        let Some(out) = announced.remove(&published.cid) else { continue };
                        let Some(info) = published.track else {
                            break Err(SignalError::Protocol("TrackPublished without a track"));
                        };
                        let stream = lock(&ctx.ledger).register(&info.sid, who.index, out.kind);
                        plans.push(SendPlan {
                            out,
                            stream,
                            video: ctx.video.clone(),
                            audio: ctx.audio.clone(),
                            pacing_factor: ctx.pacing_factor,
                        });
                        if announced.is_empty()
                            && let Some(side) = &publisher
                        {
                            let offer = side.pc.create_offer(None).await?;
                            let sdp = peer::apply_local(&side.pc, offer).await?;
                            signal.send(Req::Offer(lk::SessionDescription {
                                r#type: "offer".to_owned(),
                                sdp,
                                ..Default::default()
                            })).await?;
                        }
                    }
                    Resp::Answer(answer) => {
                        if let Some(side) = &mut publisher {
                            side.pc.set_remote_description(RTCSessionDescription::answer(answer.sdp)?).await?;
                            side.flush().await;
                        }
                    }
                    Resp::Offer(offer) => {
                        if subscriber.is_none() {
                            subscriber = Some(Side::new(peer::new_peer(ctx.bind_ip, false).await?));
                        }
                        if let Some(side) = &mut subscriber {
                            side.pc.set_remote_description(RTCSessionDescription::offer(offer.sdp)?).await?;
                            let answer = side.pc.create_answer(None).await?;
                            let sdp = peer::apply_local(&side.pc, answer).await?;
                            signal.send(Req::Answer(lk::SessionDescription {
                                r#type: "answer".to_owned(),
                                sdp,
                                id: offer.id,
                                ..Default::default()
                            })).await?;
                            side.flush().await;
                        }
                    }
                    Resp::Trickle(trickle) => {
                        let Ok(init) = serde_json::from_str::<RTCIceCandidateInit>(&trickle.candidate_init) else {
                            continue;
                        };
                        let side = if trickle.target == lk::SignalTarget::Publisher as i32 {
                            &mut publisher
                        } else {
                            &mut subscriber
                        };
                        match side {
                            Some(side) => side.add_candidate(init).await,
                            // The subscriber's offer is on its way.
                            None if trickle.target == lk::SignalTarget::Subscriber as i32 => {
                                let mut side = Side::new(peer::new_peer(ctx.bind_ip, false).await?);
                                side.early.push(init);
                                subscriber = Some(side);
                            }
                            None => {}
                        }
                    }
                    Resp::Leave(leave) => break Err(SignalError::Left(leave.reason)),
                    _ => {}
                }
            }
            event = peer::next_event(publisher.as_mut().map(|s| &mut s.events)) => {
                let Some(event) = event else { continue };
                match event {
                    PcEvent::Candidate(init) => trickle(&mut signal, init, lk::SignalTarget::Publisher).await?,
                    PcEvent::State(state) => {
                        if state == RTCPeerConnectionState::Failed {
                            break Err(SignalError::Protocol("a publisher connection that failed"));
                        }
                        // The first time only: later ones find nothing left to start.
                        if state == RTCPeerConnectionState::Connected
                            && let Some(tx) = joined.take()
                        {
                            let _ = tx.send(started.elapsed());
                            if let Some(side) = &publisher {
                                let plans = std::mem::take(&mut plans);
                                peer::start_sending(&side.pc, plans, keyframe_requests.take(), &ctx.ledger, &ctx.stop);
                            }
                        }
                    }
                    PcEvent::Track(_) | PcEvent::GatheringComplete => {}
                }
            }
            event = peer::next_event(subscriber.as_mut().map(|s| &mut s.events)) => {
                let Some(event) = event else { continue };
                match event {
                    PcEvent::Candidate(init) => trickle(&mut signal, init, lk::SignalTarget::Subscriber).await?,
                    PcEvent::State(state) => {
                        if state == RTCPeerConnectionState::Connected
                            && publisher.is_none()
                            && let Some(tx) = joined.take()
                        {
                            let _ = tx.send(started.elapsed());
                        }
                    }
                    PcEvent::Track(track) => {
                        if who.subscribe {
                            let ledger = ctx.ledger.clone();
                            let index = who.index;
                            tokio::spawn(async move {
                                // LiveKit's track id on the subscriber side is the track sid.
                                let key = track.track_id().await;
                                peer::receive(track, key, index, ledger).await;
                            });
                        }
                    }
                    PcEvent::GatheringComplete => {}
                }
            }
            _ = ping.tick() => {
                signal.send(Req::Ping(salon_common::unix_millis())).await?;
            }
            _ = stop.changed() => break Ok(()),
        }
    };
    let _ = signal
        .send(Req::Leave(lk::LeaveRequest {
            reason: lk::DisconnectReason::ClientInitiated as i32,
            ..Default::default()
        }))
        .await;
    let _ = signal.ws.close(None).await;
    for side in [publisher, subscriber].into_iter().flatten() {
        let _ = side.pc.close().await;
    }
    outcome
}

async fn trickle(
    signal: &mut Signal,
    init: RTCIceCandidateInit,
    target: lk::SignalTarget,
) -> Result<(), SignalError> {
    let candidate_init =
        serde_json::to_string(&init).map_err(|_| SignalError::Protocol("a bad candidate"))?;
    signal
        .send(Req::Trickle(lk::TrickleRequest {
            candidate_init,
            target: target as i32,
            r#final: false,
        }))
        .await
}

fn video_request(cid: &str, out: &Outgoing, ctx: &RunContext) -> lk::AddTrackRequest {
    let layers: Vec<lk::VideoLayer> = out
        .layers
        .iter()
        .filter_map(|(quality, ssrc)| {
            let clip = ctx.video.iter().find(|c| c.quality == *quality)?;
            Some(lk::VideoLayer {
                quality: quality.protocol() as i32,
                width: clip.width,
                height: clip.height,
                bitrate: clip.bitrate(),
                ssrc: *ssrc,
                ..Default::default()
            })
        })
        .collect();
    let (width, height) = layers.last().map_or((0, 0), |l| (l.width, l.height));
    lk::AddTrackRequest {
        cid: cid.to_owned(),
        name: "camera".to_owned(),
        r#type: lk::TrackType::Video as i32,
        source: lk::TrackSource::Camera as i32,
        width,
        height,
        simulcast_codecs: vec![lk::SimulcastCodec {
            codec: "vp8".to_owned(),
            cid: cid.to_owned(),
            layers: layers.clone(),
            ..Default::default()
        }],
        layers,
        ..Default::default()
    }
}
