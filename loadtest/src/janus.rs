//! The same synthetic participant against Janus's VideoRoom plugin, over
//! Janus's WebSocket transport, so both servers carry identical load in one
//! run. Publishers `join` and `publish`; subscribers wait until every
//! publisher is in, then join one subscriber handle to all their feeds.
//! Janus puts its candidates in its SDP and takes ours the same way, so
//! there is no trickle here.

use crate::ledger::Kind;
use crate::peer::{self, PcEvent, Peer, SendPlan, lock};
use crate::{Participant, RunContext};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use webrtc::peer_connection::{PeerConnection, RTCPeerConnectionState, RTCSessionDescription};

/// Janus closes sessions silent for 60 s by default.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// How long to wait for an answer or an event from Janus.
const REPLY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long subscribers wait for every publisher to be in the room.
const PUBLISHERS_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub(crate) enum JanusError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    #[error("websocket: {0}")]
    Socket(String),
    #[error("janus refused {0}: {1}")]
    Refused(&'static str, String),
    #[error("no reply from janus to {0}")]
    Timeout(&'static str),
    #[error("janus sent {0}")]
    Protocol(&'static str),
    #[error("webrtc: {0}")]
    WebRtc(#[from] webrtc::error::Error),
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One Janus session over one WebSocket. Replies come back by transaction;
/// asynchronous plugin events are kept until someone asks for them.
struct Session {
    ws: Ws,
    id: u64,
    next_transaction: u64,
    events: VecDeque<Value>,
}

impl Session {
    async fn connect(url: &str) -> Result<Self, JanusError> {
        let connect_err =
            |e: &dyn std::fmt::Display| JanusError::Connect(url.to_owned(), e.to_string());
        let mut request = url.into_client_request().map_err(|e| connect_err(&e))?;
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", http_value("janus-protocol"));
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(|e| connect_err(&e))?;
        let mut session = Self {
            ws,
            id: 0,
            next_transaction: 0,
            events: VecDeque::new(),
        };
        let reply = session.call("create", json!({"janus": "create"})).await?;
        session.id = reply["data"]["id"]
            .as_u64()
            .ok_or(JanusError::Protocol("a session without an id"))?;
        Ok(session)
    }

    async fn send(&mut self, mut message: Value) -> Result<String, JanusError> {
        self.next_transaction += 1;
        let transaction = format!("t{}", self.next_transaction);
        message["transaction"] = json!(transaction);
        if self.id != 0 {
            message["session_id"] = json!(self.id);
        }
        self.ws
            .send(WsMessage::Text(message.to_string().into()))
            .await
            .map_err(|e| JanusError::Socket(e.to_string()))?;
        Ok(transaction)
    }

    async fn read(&mut self) -> Result<Value, JanusError> {
        loop {
            let frame = self
                .ws
                .next()
                .await
                .ok_or_else(|| JanusError::Socket("closed by janus".to_owned()))?
                .map_err(|e| JanusError::Socket(e.to_string()))?;
            if let WsMessage::Text(text) = frame {
                return serde_json::from_str(&text)
                    .map_err(|_| JanusError::Protocol("a message that is not JSON"));
            }
        }
    }

    /// Sends a request and waits for its `success` (or `error`); plugin
    /// events that arrive meanwhile are kept.
    async fn call(&mut self, what: &'static str, message: Value) -> Result<Value, JanusError> {
        let transaction = self.send(message).await?;
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        loop {
            let reply = tokio::time::timeout_at(deadline, self.read())
                .await
                .map_err(|_| JanusError::Timeout(what))??;
            let mine = reply["transaction"] == json!(transaction);
            match reply["janus"].as_str() {
                Some("success") if mine => return Ok(reply),
                Some("error") if mine => {
                    return Err(JanusError::Refused(what, reply["error"].to_string()));
                }
                Some("ack") if mine => {}
                Some("event") => self.events.push_back(reply),
                _ => {}
            }
        }
    }

    async fn attach(&mut self) -> Result<u64, JanusError> {
        let reply = self
            .call(
                "attach",
                json!({"janus": "attach", "plugin": "janus.plugin.videoroom"}),
            )
            .await?;
        reply["data"]["id"]
            .as_u64()
            .ok_or(JanusError::Protocol("a handle without an id"))
    }

    /// A synchronous VideoRoom request: the answer is in `plugindata`.
    async fn request(
        &mut self,
        what: &'static str,
        handle: u64,
        body: Value,
    ) -> Result<Value, JanusError> {
        let reply = self
            .call(
                what,
                json!({"janus": "message", "handle_id": handle, "body": body}),
            )
            .await?;
        let data = reply["plugindata"]["data"].clone();
        if data["videoroom"] == "event" && data.get("error_code").is_some() {
            return Err(JanusError::Refused(what, data["error"].to_string()));
        }
        Ok(data)
    }

    /// An asynchronous VideoRoom request: acknowledged at once, answered by
    /// an event (with a JSEP for offers and answers).
    async fn message(
        &mut self,
        what: &'static str,
        handle: u64,
        body: Value,
        jsep: Option<Value>,
    ) -> Result<Value, JanusError> {
        let mut message = json!({"janus": "message", "handle_id": handle, "body": body});
        if let Some(jsep) = jsep {
            message["jsep"] = jsep;
        }
        let transaction = self.send(message).await?;
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        loop {
            if let Some(at) = self
                .events
                .iter()
                .position(|e| e["transaction"] == json!(transaction))
                && let Some(event) = self.events.remove(at)
            {
                let data = &event["plugindata"]["data"];
                if data.get("error_code").is_some() {
                    return Err(JanusError::Refused(what, data["error"].to_string()));
                }
                return Ok(event);
            }
            let reply = tokio::time::timeout_at(deadline, self.read())
                .await
                .map_err(|_| JanusError::Timeout(what))??;
            match reply["janus"].as_str() {
                Some("event") => self.events.push_back(reply),
                Some("error") if reply["transaction"] == json!(transaction) => {
                    return Err(JanusError::Refused(what, reply["error"].to_string()));
                }
                _ => {}
            }
        }
    }

    async fn keepalive(&mut self) -> Result<(), JanusError> {
        self.send(json!({"janus": "keepalive"})).await.map(|_| ())
    }
}

fn http_value(s: &'static str) -> tokio_tungstenite::tungstenite::http::HeaderValue {
    tokio_tungstenite::tungstenite::http::HeaderValue::from_static(s)
}

/// Janus names rooms by number: derive one from the room name.
fn room_number(name: &str) -> u64 {
    let mut h = DefaultHasher::new();
    h.write(name.as_bytes());
    1 + h.finish() % 1_000_000_000
}

/// The ledger's name for a publisher's stream, known to both sides.
fn stream_key(feed: u64, kind: Kind) -> String {
    format!("janus:{feed}:{kind:?}")
}

async fn gathered_sdp(
    pc: &Arc<dyn PeerConnection>,
    events: &mut mpsc::UnboundedReceiver<PcEvent>,
) -> Result<String, JanusError> {
    // Janus takes candidates in the SDP: wait until they are all there.
    tokio::time::timeout(REPLY_TIMEOUT, async {
        while let Some(event) = events.recv().await {
            if matches!(event, PcEvent::GatheringComplete) {
                break;
            }
        }
    })
    .await
    .map_err(|_| JanusError::Timeout("ICE gathering"))?;
    Ok(pc
        .local_description()
        .await
        .map(|d| d.sdp)
        .unwrap_or_default())
}

fn jsep_sdp(event: &Value) -> Result<String, JanusError> {
    event["jsep"]["sdp"]
        .as_str()
        .map(str::to_owned)
        .ok_or(JanusError::Protocol("an event without the expected SDP"))
}

pub(crate) async fn run(
    who: Participant,
    ctx: Arc<RunContext>,
    joined: oneshot::Sender<Duration>,
) -> Result<(), JanusError> {
    let started = Instant::now();
    let mut session = Session::connect(&ctx.url).await?;
    let room = room_number(&ctx.room);
    let mut joined = Some(joined);
    let mut stop = ctx.stop.clone();
    let mut keepalive = tokio::time::interval(KEEPALIVE);

    // The first participant creates the room; later ones find it exists.
    let control = session.attach().await?;
    let created = session
        .request(
            "create",
            control,
            json!({
                "request": "create", "room": room, "publishers": 1000,
                "videocodec": "vp8", "audiocodec": "opus", "bitrate": 0,
                "notify_joining": false,
            }),
        )
        .await;
    match created {
        Ok(_) => {}
        // 427: the room exists already.
        Err(JanusError::Refused(_, e)) if e.contains("already exists") => {}
        Err(e) => return Err(e),
    }

    let mut publisher: Option<Peer> = None;
    let mut plans = Vec::new();
    let mut keyframe_requests = None;
    let mut own_feed = None;
    if who.video.is_some() || who.audio {
        let joined_room = session
            .message(
                "join",
                control,
                json!({"request": "join", "ptype": "publisher", "room": room, "display": who.identity}),
                None,
            )
            .await?;
        let feed = joined_room["plugindata"]["data"]["id"]
            .as_u64()
            .ok_or(JanusError::Protocol("a join without a feed id"))?;
        own_feed = Some(feed);
        let mut peer = peer::new_peer(ctx.bind_ip, true).await?;
        keyframe_requests = peer.keyframe_requests.take();
        let stream_id = format!("{}-stream", who.identity);
        let mut outs = Vec::new();
        if let Some(layers) = &who.video {
            let cid = format!("{}-video", who.identity);
            outs.push(peer::add_video(&peer.pc, &stream_id, &cid, layers, who.simulcast).await?);
        }
        if who.audio {
            let cid = format!("{}-audio", who.identity);
            outs.push(peer::add_audio(&peer.pc, &stream_id, &cid).await?);
        }
        let offer = peer.pc.create_offer(None).await?;
        peer.pc.set_local_description(offer).await?;
        let sdp = gathered_sdp(&peer.pc, &mut peer.events).await?;
        let answer = session
            .message(
                "publish",
                control,
                json!({"request": "publish"}),
                Some(json!({"type": "offer", "sdp": sdp, "trickle": false})),
            )
            .await?;
        peer.pc
            .set_remote_description(RTCSessionDescription::answer(jsep_sdp(&answer)?)?)
            .await?;
        for out in outs {
            let stream =
                lock(&ctx.ledger).register(&stream_key(feed, out.kind), who.index, out.kind);
            plans.push(SendPlan {
                out,
                stream,
                video: ctx.video.clone(),
                audio: ctx.audio.clone(),
                pacing_factor: ctx.pacing_factor,
            });
        }
        publisher = Some(peer);
    }

    let mut subscriber: Option<Peer> = None;
    let mut track_keys: HashMap<String, String> = HashMap::new();
    if who.subscribe {
        let feeds =
            wait_for_publishers(&mut session, control, room, ctx.publishers, own_feed).await?;
        if !feeds.is_empty() {
            let handle = session.attach().await?;
            let streams: Vec<Value> = feeds.iter().map(|f| json!({"feed": f})).collect();
            let attached = session
                .message(
                    "subscribe",
                    handle,
                    json!({"request": "join", "ptype": "subscriber", "room": room, "streams": streams}),
                    None,
                )
                .await?;
            let mut mid_keys = HashMap::new();
            for s in attached["plugindata"]["data"]["streams"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let (Some(mid), Some(feed), Some(kind)) =
                    (s["mid"].as_str(), s["feed_id"].as_u64(), s["type"].as_str())
                else {
                    continue;
                };
                let kind = if kind == "audio" {
                    Kind::Audio
                } else {
                    Kind::Video
                };
                mid_keys.insert(mid.to_owned(), stream_key(feed, kind));
            }
            let offer = jsep_sdp(&attached)?;
            track_keys = keys_by_track_id(&offer, &mid_keys);
            let mut peer = peer::new_peer(ctx.bind_ip, false).await?;
            peer.pc
                .set_remote_description(RTCSessionDescription::offer(offer)?)
                .await?;
            let answer = peer.pc.create_answer(None).await?;
            peer.pc.set_local_description(answer).await?;
            let sdp = gathered_sdp(&peer.pc, &mut peer.events).await?;
            session
                .message(
                    "start",
                    handle,
                    json!({"request": "start"}),
                    Some(json!({"type": "answer", "sdp": sdp, "trickle": false})),
                )
                .await?;
            subscriber = Some(peer);
        }
    }

    let outcome = loop {
        tokio::select! {
            event = peer::next_event(publisher.as_mut().map(|p| &mut p.events)) => {
                let Some(PcEvent::State(state)) = event else { continue };
                if state == RTCPeerConnectionState::Failed {
                    break Err(JanusError::Protocol("a publishing connection that failed"));
                }
                // The first time only: later ones find nothing left to start.
                if state == RTCPeerConnectionState::Connected
                    && let Some(tx) = joined.take()
                {
                    let _ = tx.send(started.elapsed());
                    if let Some(p) = &publisher {
                        let plans = std::mem::take(&mut plans);
                        peer::start_sending(&p.pc, plans, keyframe_requests.take(), &ctx.ledger, &ctx.stop);
                    }
                }
            }
            event = peer::next_event(subscriber.as_mut().map(|p| &mut p.events)) => {
                match event {
                    Some(PcEvent::State(RTCPeerConnectionState::Connected)) => {
                        if publisher.is_none()
                            && let Some(tx) = joined.take()
                        {
                            let _ = tx.send(started.elapsed());
                        }
                    }
                    Some(PcEvent::State(RTCPeerConnectionState::Failed)) => {
                        break Err(JanusError::Protocol("a subscribing connection that failed"));
                    }
                    Some(PcEvent::Track(track)) => {
                        let ledger = ctx.ledger.clone();
                        let index = who.index;
                        let id = track.track_id().await;
                        match track_keys.get(&id) {
                            Some(key) => {
                                tokio::spawn(peer::receive(track, key.clone(), index, ledger));
                            }
                            None => tracing::warn!(track = %id, "a track janus did not announce"),
                        }
                    }
                    _ => {}
                }
            }
            _ = keepalive.tick() => session.keepalive().await?,
            // Janus's own events (webrtcup, media, slowlink) need no answer.
            frame = session.read() => { frame?; }
            _ = stop.changed() => break Ok(()),
        }
    };
    let _ = session.send(json!({"janus": "destroy"})).await;
    let _ = session.ws.close(None).await;
    for peer in [publisher, subscriber].into_iter().flatten() {
        let _ = peer.pc.close().await;
    }
    outcome
}

/// Feeds of the room's publishers other than `own`, once there are
/// `expected` of them (or the wait runs out).
async fn wait_for_publishers(
    session: &mut Session,
    handle: u64,
    room: u64,
    expected: usize,
    own: Option<u64>,
) -> Result<Vec<u64>, JanusError> {
    let deadline = Instant::now() + PUBLISHERS_TIMEOUT;
    loop {
        let list = session
            .request(
                "listparticipants",
                handle,
                json!({"request": "listparticipants", "room": room}),
            )
            .await?;
        let feeds: Vec<u64> = list["participants"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["publisher"] == json!(true))
            .filter_map(|p| p["id"].as_u64())
            .collect();
        if feeds.len() >= expected || Instant::now() >= deadline {
            return Ok(feeds.into_iter().filter(|f| Some(*f) != own).collect());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Ledger keys by the track ids Janus gives its subscriber tracks: from
/// its offer, `a=mid` → `a=msid`, and from its `attached` event, mid → feed.
fn keys_by_track_id(offer: &str, mid_keys: &HashMap<String, String>) -> HashMap<String, String> {
    salon_sfu::sdp::track_ids_by_mid(offer)
        .into_iter()
        .filter_map(|(mid, track)| Some((track, mid_keys.get(&mid)?.clone())))
        .collect()
}
