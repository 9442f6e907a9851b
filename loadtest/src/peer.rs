//! The WebRTC side of a synthetic participant, shared by every target: a
//! loopback-only peer connection, the send loops that play the built-in
//! clips in real time, and the receive loop that books every packet.

use crate::ledger::{Kind, Ledger, StreamRef, payload_hash};
use crate::media::{AUDIO_INTERVAL, AudioClip, FRAME_INTERVAL, Quality, VideoClip};
use crate::pacer::Pacer;
use bytes::Bytes;
use rtc::interceptor::{Registry, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtp::codec::opus::OpusPayloader;
use rtc::rtp::codec::vp8::Vp8Payloader;
use rtc::rtp::packetizer::{Packetizer, new_packetizer};
use rtc::rtp::sequence::new_random_sequencer;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use salon_sfu::feedback::{FEEDBACK_SLOT, RtcpTap};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceGatheringState, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, register_default_interceptors,
};
use webrtc::rtp_transceiver::RtpSender;

const MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
const RID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";
/// Room for SRTP's tag and the header extensions under a 1200-byte datagram.
const MTU: usize = 1160;
/// An encoder answers a burst of keyframe requests with one keyframe.
const KEYFRAME_MIN_INTERVAL: Duration = Duration::from_millis(300);
/// What a packet weighs on the wire besides its payload, for the pacer: the
/// RTP header with mid and rid, SRTP's tag, UDP and IP.
const RTP_OVERHEAD: usize = 60;

pub(crate) type Shared<T> = Arc<Mutex<T>>;

/// The ledger is a plain struct behind a std mutex, held for a few
/// arithmetic steps per packet and never across an await.
pub(crate) fn lock(ledger: &Shared<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    ledger
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) enum PcEvent {
    Candidate(RTCIceCandidateInit),
    Track(Arc<dyn TrackRemote>),
    State(RTCPeerConnectionState),
    GatheringComplete,
}

struct Handler {
    tx: mpsc::UnboundedSender<PcEvent>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let _ = self.tx.send(PcEvent::Candidate(init));
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.tx.send(PcEvent::GatheringComplete);
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.tx.send(PcEvent::Track(track));
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.tx.send(PcEvent::State(state));
    }
}

pub(crate) fn vp8() -> RTCRtpCodec {
    let fb = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    };
    RTCRtpCodec {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![fb("nack", ""), fb("nack", "pli"), fb("ccm", "fir")],
    }
}

pub(crate) fn opus() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

pub(crate) struct Peer {
    pub(crate) pc: Arc<dyn PeerConnection>,
    pub(crate) events: mpsc::UnboundedReceiver<PcEvent>,
    /// SSRCs the remote asked a keyframe of (publishing connections only).
    pub(crate) keyframe_requests: Option<mpsc::UnboundedReceiver<u32>>,
}

/// A peer connection that offers only VP8 and Opus and gathers on one
/// address only (127.0.0.1 unless told otherwise): load tests never send
/// beyond this machine.
pub(crate) async fn new_peer(
    bind_ip: IpAddr,
    publishing: bool,
) -> Result<Peer, webrtc::error::Error> {
    let mut media = MediaEngine::default();
    media.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: vp8(),
            payload_type: 96,
        },
        RtpCodecKind::Video,
    )?;
    media.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: opus(),
            payload_type: 111,
        },
        RtpCodecKind::Audio,
    )?;
    for (uri, kind) in [
        (MID_URI, RtpCodecKind::Video),
        (RID_URI, RtpCodecKind::Video),
        (MID_URI, RtpCodecKind::Audio),
    ] {
        media.register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: uri.to_owned(),
            },
            kind,
            None,
        )?;
    }
    let mut registry = register_default_interceptors(Registry::new(), &mut media)?;
    let (tx, events) = mpsc::unbounded_channel();
    let keyframe_requests = if publishing {
        let (ktx, krx) = mpsc::unbounded_channel();
        registry = registry.with(Slot::from(FEEDBACK_SLOT), RtcpTap::new(ktx));
        Some(krx)
    } else {
        None
    };
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(salon_sfu::setting_engine_builder().build())
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(Handler { tx }))
        .with_udp_addrs(vec![SocketAddr::new(bind_ip, 0)])
        .build()
        .await?;
    Ok(Peer {
        pc: Arc::new(pc),
        events,
        keyframe_requests,
    })
}

/// The next event of a connection that may not exist yet: without one,
/// never ready, so a `select!` can wait on it unconditionally.
pub(crate) async fn next_event(
    events: Option<&mut mpsc::UnboundedReceiver<PcEvent>>,
) -> Option<PcEvent> {
    match events {
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}

/// A track added to a publishing connection, before negotiation.
pub(crate) struct Outgoing {
    pub(crate) kind: Kind,
    pub(crate) track: Arc<TrackLocalStaticRTP>,
    pub(crate) sender: Arc<dyn RtpSender>,
    /// (layer, ssrc), lowest layer first; one entry without simulcast.
    pub(crate) layers: Vec<(Quality, u32)>,
    pub(crate) simulcast: bool,
}

pub(crate) async fn add_video(
    pc: &Arc<dyn PeerConnection>,
    stream_id: &str,
    track_id: &str,
    layers: &[Quality],
    simulcast: bool,
) -> Result<Outgoing, webrtc::error::Error> {
    let layers: Vec<(Quality, u32)> = layers
        .iter()
        .map(|q| (*q, rand::random::<u32>().max(1)))
        .collect();
    let encodings = layers
        .iter()
        .map(|(q, ssrc)| RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                rid: if simulcast {
                    q.rid().to_owned()
                } else {
                    String::new()
                },
                ssrc: Some(*ssrc),
                ..Default::default()
            },
            codec: vp8(),
            ..Default::default()
        })
        .collect();
    let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        stream_id.to_owned(),
        track_id.to_owned(),
        track_id.to_owned(),
        RtpCodecKind::Video,
        encodings,
    )));
    let sender = pc.add_track(track.clone() as Arc<dyn TrackLocal>).await?;
    Ok(Outgoing {
        kind: Kind::Video,
        track,
        sender,
        layers,
        simulcast,
    })
}

pub(crate) async fn add_audio(
    pc: &Arc<dyn PeerConnection>,
    stream_id: &str,
    track_id: &str,
) -> Result<Outgoing, webrtc::error::Error> {
    let ssrc = rand::random::<u32>().max(1);
    let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        stream_id.to_owned(),
        track_id.to_owned(),
        track_id.to_owned(),
        RtpCodecKind::Audio,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: opus(),
            ..Default::default()
        }],
    )));
    let sender = pc.add_track(track.clone() as Arc<dyn TrackLocal>).await?;
    Ok(Outgoing {
        kind: Kind::Audio,
        track,
        sender,
        layers: vec![(Quality::High, ssrc)],
        simulcast: false,
    })
}

/// Sets a description we made as local and returns the SDP to send, as the
/// connection holds it after setting.
pub(crate) async fn apply_local(
    pc: &Arc<dyn PeerConnection>,
    desc: webrtc::peer_connection::RTCSessionDescription,
) -> Result<String, webrtc::error::Error> {
    pc.set_local_description(desc).await?;
    Ok(pc
        .local_description()
        .await
        .map(|d| d.sdp)
        .unwrap_or_default())
}

/// What the send loops need of the negotiated connection.
struct Negotiated {
    payload_type: u8,
    mid: Option<(u8, Bytes)>,
    rid_id: Option<u8>,
}

async fn negotiated(
    pc: &Arc<dyn PeerConnection>,
    out: &Outgoing,
) -> Result<Negotiated, webrtc::error::Error> {
    let params = out.sender.get_parameters().await?;
    let payload_type = params
        .rtp_parameters
        .codecs
        .first()
        .map(|c| c.payload_type)
        .ok_or_else(|| webrtc::error::Error::Other("no codec negotiated".to_owned()))?;
    let ext_id = |uri: &str| {
        params
            .rtp_parameters
            .header_extensions
            .iter()
            .find(|e| e.uri == uri)
            .and_then(|e| u8::try_from(e.id).ok())
    };
    // The transceiver whose sender is this track's: the list's order is not
    // the order tracks were added in.
    let mut mid = None;
    for transceiver in pc.get_transceivers().await {
        if let Ok(Some(sender)) = transceiver.sender().await
            && std::ptr::addr_eq(Arc::as_ptr(&sender), Arc::as_ptr(&out.sender))
        {
            mid = transceiver.mid().await?;
            break;
        }
    }
    Ok(Negotiated {
        payload_type,
        mid: ext_id(MID_URI).zip(mid.map(Bytes::from)),
        rid_id: if out.simulcast { ext_id(RID_URI) } else { None },
    })
}

pub(crate) struct SendPlan {
    pub(crate) out: Outgoing,
    pub(crate) stream: StreamRef,
    pub(crate) video: Vec<Arc<VideoClip>>,
    pub(crate) audio: Arc<AudioClip>,
    /// Multiple of a camera's bitrate its packets are paced at; 0 for none.
    pub(crate) pacing_factor: f64,
}

/// Plays a track's clip in real time until `stop` turns true. Camera
/// packets wait in a queue for the pacer (see `pacer.rs`); packets are
/// booked in the ledger just before they go out, so queueing here does not
/// count as the server's latency.
async fn send(
    pc: Arc<dyn PeerConnection>,
    plan: SendPlan,
    ledger: Shared<Ledger>,
    mut keyframes: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), webrtc::error::Error> {
    let neg = negotiated(&pc, &plan.out).await?;
    let start = Instant::now();
    let mut lanes: Vec<Lane> = plan
        .out
        .layers
        .iter()
        .map(|(quality, ssrc)| {
            let (payloader, clock_rate): (Box<dyn rtc::rtp::packetizer::Payloader>, u32) =
                match plan.out.kind {
                    Kind::Video => (
                        {
                            let mut vp8 = Vp8Payloader::default();
                            // As browsers do: lets receivers see loss inside a frame.
                            vp8.enable_picture_id = true;
                            Box::new(vp8)
                        },
                        90_000,
                    ),
                    Kind::Audio => (Box::new(OpusPayloader), 48_000),
                };
            Lane {
                layer: quality.index(),
                rid: Bytes::from_static(quality.rid().as_bytes()),
                packetizer: Box::new(new_packetizer(
                    start,
                    MTU,
                    neg.payload_type,
                    *ssrc,
                    payloader,
                    Box::new(new_random_sequencer()),
                    clock_rate,
                )),
                frames: match plan.out.kind {
                    Kind::Video => plan
                        .video
                        .iter()
                        .find(|c| c.quality == *quality)
                        .map(|c| c.frames.clone())
                        .unwrap_or_default(),
                    Kind::Audio => plan.audio.packets.clone(),
                },
            }
        })
        .collect();
    let (interval, samples) = match plan.out.kind {
        Kind::Video => (FRAME_INTERVAL, 3000),
        Kind::Audio => (AUDIO_INTERVAL, 960),
    };
    // libwebrtc paces video only at the layers' rate times the factor;
    // audio goes out as it comes.
    let paced_rate = match plan.out.kind {
        Kind::Video => {
            plan.pacing_factor
                * plan
                    .video
                    .iter()
                    .filter(|c| lanes.iter().any(|l| l.layer == c.quality.index()))
                    .map(|c| f64::from(c.bitrate()))
                    .sum::<f64>()
        }
        Kind::Audio => 0.0,
    };
    let mut pacer = Pacer::new(paced_rate);
    let mut queue: VecDeque<(u8, Bytes, rtc::rtp::Packet)> = VecDeque::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut position = 0usize;
    let mut last_keyframe = start;
    let mut watching_keyframes = true;
    loop {
        let release = tokio::time::Instant::from_std(pacer.next_release(Instant::now()));
        tokio::select! {
            _ = ticker.tick() => {
                for lane in &mut lanes {
                    if lane.frames.is_empty() {
                        continue;
                    }
                    let frame = &lane.frames[position % lane.frames.len()];
                    let packets = lane
                        .packetizer
                        .packetize(Instant::now(), frame, samples)
                        .map_err(|e| webrtc::error::Error::Other(e.to_string()))?;
                    queue.extend(packets.into_iter().map(|p| (lane.layer, lane.rid.clone(), p)));
                }
                position = position.wrapping_add(1);
            }
            _ = tokio::time::sleep_until(release), if !queue.is_empty() => {}
            changed = keyframes.changed(), if watching_keyframes => {
                if changed.is_err() {
                    // Nobody routes requests to this track any more; keep sending.
                    watching_keyframes = false;
                    continue;
                }
                // Jump back to the clip's keyframe, as an encoder would send one.
                if plan.out.kind == Kind::Video && last_keyframe.elapsed() >= KEYFRAME_MIN_INTERVAL {
                    last_keyframe = Instant::now();
                    position = 0;
                }
                continue;
            }
            _ = stop.changed() => return Ok(()),
        }
        if *stop.borrow() {
            return Ok(());
        }
        while let Some((_, _, packet)) = queue.front() {
            if !pacer.admit(Instant::now(), packet.payload.len() + RTP_OVERHEAD) {
                break;
            }
            let Some((layer, rid, mut packet)) = queue.pop_front() else {
                break;
            };
            if let Some((id, mid)) = &neg.mid {
                let _ = packet.header.set_extension(*id, mid.clone());
            }
            if let Some(id) = neg.rid_id {
                let _ = packet.header.set_extension(id, rid);
            }
            let hash = payload_hash(plan.out.kind, &packet.payload);
            lock(&ledger).sent(plan.stream, layer, hash, Instant::now());
            plan.out.track.write_rtp(packet).await?;
        }
    }
}

struct Lane {
    layer: u8,
    rid: Bytes,
    packetizer: Box<dyn Packetizer>,
    frames: Vec<Bytes>,
}

/// Starts a send loop per track once the publishing connection is up, and
/// routes the connection's keyframe requests to the loop sending that SSRC.
pub(crate) fn start_sending(
    pc: &Arc<dyn PeerConnection>,
    plans: Vec<SendPlan>,
    keyframe_requests: Option<mpsc::UnboundedReceiver<u32>>,
    ledger: &Shared<Ledger>,
    stop: &watch::Receiver<bool>,
) {
    let mut routes = Vec::new();
    for plan in plans {
        let (ktx, krx) = watch::channel(0u64);
        routes.push((plan.out.layers.iter().map(|(_, s)| *s).collect(), ktx));
        let pc = pc.clone();
        let ledger = ledger.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            if let Err(err) = send(pc, plan, ledger, krx, stop).await {
                tracing::warn!(%err, "a send loop stopped");
            }
        });
    }
    if let Some(requests) = keyframe_requests {
        route_keyframe_requests(requests, routes);
    }
}

/// Turns keyframe requests (PLI/FIR by SSRC) into a counter per track that
/// its send loop watches.
fn route_keyframe_requests(
    mut requests: mpsc::UnboundedReceiver<u32>,
    tracks: Vec<(Vec<u32>, watch::Sender<u64>)>,
) {
    tokio::spawn(async move {
        while let Some(ssrc) = requests.recv().await {
            for (ssrcs, tx) in &tracks {
                if ssrcs.contains(&ssrc) {
                    tx.send_modify(|n| *n += 1);
                }
            }
        }
    });
}

/// Books every packet of a received track until it ends. `key` names the
/// publisher's stream in the ledger; the stream may be registered a moment
/// after its first packets arrive.
pub(crate) async fn receive(
    track: Arc<dyn TrackRemote>,
    key: String,
    subscriber: usize,
    ledger: Shared<Ledger>,
) {
    let mut stream: Option<(StreamRef, Kind)> = None;
    while let Some(event) = track.poll().await {
        match event {
            TrackRemoteEvent::OnRtpPacket(packet) => {
                let now = Instant::now();
                let mut books = lock(&ledger);
                if stream.is_none() {
                    stream = books.lookup(&key).map(|s| (s, books.kind(s)));
                }
                if let Some((s, kind)) = stream {
                    let hash = payload_hash(kind, &packet.payload);
                    books.received(subscriber, s, hash, packet.payload.len(), now);
                }
            }
            TrackRemoteEvent::OnEnded | TrackRemoteEvent::OnError => break,
            _ => {}
        }
    }
}
