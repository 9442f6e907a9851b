//! A media node: the rooms it hosts, and the calls the signaling service
//! makes on it (join a participant, the RoomService admin calls).

use crate::metrics::{MetricsError, NodeMetrics};
use crate::participant::{self, ParticipantHandle, SessionParts};
use crate::room::{Grants, JoinRequest, Room, RoomConfig, RoomError, RoomInput};
use crate::room_task::{self, RoomEvent, RoomSnapshot};
use crate::worker::{WorkerError, WorkerHandle, Workers};
use livekit_protocol as lk;
use salon_common::{ParticipantIdentity, ParticipantSid, RoomName, TrackSid, new_sid};
use salon_store::{NodeId, NodeLoad, Store, StoreError};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Errors of node calls, as the signaling service maps them to clients.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("requested room does not exist")]
    RoomNotFound,
    #[error(transparent)]
    Room(#[from] RoomError),
    #[error("the room closed while the call was in progress")]
    RoomClosed,
    #[error("this node is draining and takes no new room")]
    Draining,
    #[error("the room is placed on another node ({0})")]
    PlacedElsewhere(NodeId),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How a node takes part in a fleet: it hosts a new room only once it holds
/// the room's lease in the shared store, so two nodes never host one room.
#[derive(Clone)]
pub struct Placement {
    pub store: Arc<dyn Store>,
    pub node: NodeId,
    pub lease: Duration,
}

#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Address that media sockets bind to and that ICE candidates announce.
    pub rtc_bind_ip: IpAddr,
    /// The first media worker's UDP port; the others take the ports after
    /// it. 0 lets each pick a free port.
    pub rtc_port: u16,
    /// Media workers, each with its own thread and port; 0 means one per core.
    pub media_workers: usize,
    /// Whether a subscriber's datagrams that wait together leave as one
    /// UDP GSO message (`worker/udp.rs`). A path that refuses GSO turns it
    /// off by itself; this is for comparing, or for a path that takes GSO
    /// and then misbehaves.
    pub udp_gso: bool,
}

/// Who joins, and with which rights.
#[derive(Clone, Debug)]
pub struct JoinParams {
    pub room: RoomName,
    pub identity: ParticipantIdentity,
    pub name: String,
    pub metadata: String,
    pub attributes: HashMap<String, String>,
    pub grants: Grants,
    pub auto_subscribe: bool,
    /// The `client_protocol` the client connected with: other clients pick
    /// how to send it data (streams, RPC) by it.
    pub client_protocol: i32,
    /// Whether the client plays a participant's camera and microphone (and
    /// a screen and its audio) in step when they share a stream id, as
    /// Chromium and Safari do: LiveKit's sync streams. Firefox names the
    /// tracks it receives itself, so livekit-client finds a track there by
    /// the stream id alone, which must then be the track's.
    pub sync_streams: bool,
}

/// A joined participant's signal channel to and from the node. Dropping
/// `to_node` ends the session.
pub struct Session {
    pub sid: ParticipantSid,
    pub to_node: mpsc::Sender<lk::SignalRequest>,
    pub from_node: mpsc::Receiver<lk::SignalResponse>,
}

/// Signal messages buffered per direction; a client that falls this far
/// behind is disconnected rather than allowed to grow memory.
const SIGNAL_QUEUE: usize = 256;

#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

/// A room's task, and the media worker its connections live in.
#[derive(Clone)]
struct RoomEntry {
    tx: mpsc::UnboundedSender<RoomEvent>,
    worker: WorkerHandle,
}

type Rooms = HashMap<RoomName, RoomEntry>;

struct Inner {
    workers: Workers,
    rooms: Mutex<Rooms>,
    placement: OnceLock<Placement>,
    draining: AtomicBool,
}

impl Inner {
    fn rooms(&self) -> std::sync::MutexGuard<'_, Rooms> {
        // A poisoned lock only means a panic elsewhere; the map itself is intact.
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Node {
    /// Starts the node's media workers; fails if their sockets cannot bind.
    pub fn start(config: NodeConfig) -> Result<Self, WorkerError> {
        let workers = Workers::start(&config, NodeMetrics::new()?)?;
        Ok(Self {
            inner: Arc::new(Inner {
                workers,
                rooms: Mutex::new(HashMap::new()),
                placement: OnceLock::new(),
                draining: AtomicBool::new(false),
            }),
        })
    }

    /// Makes this node take rooms only under a lease from `placement`'s
    /// store. Set once, before the node serves; later calls are ignored.
    pub fn join_fleet(&self, placement: Placement) {
        let _ = self.inner.placement.set(placement);
    }

    /// Stops taking new rooms; the rooms here go on.
    pub fn drain(&self) {
        self.inner.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Relaxed)
    }

    /// The rooms open here now.
    pub fn room_names(&self) -> Vec<RoomName> {
        self.rooms()
            .iter()
            .filter(|(_, r)| !r.tx.is_closed())
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The media workers' UDP addresses.
    pub fn media_addrs(&self) -> &[SocketAddr] {
        self.inner.workers.addrs()
    }

    /// Datagrams sent by the media workers since the node started.
    pub fn datagrams_sent(&self) -> u64 {
        self.inner.workers.datagrams_sent()
    }

    /// The node's metrics in Prometheus's text format, with what it hosts
    /// counted now.
    pub async fn metrics(&self) -> Result<String, MetricsError> {
        let load = self.load().await;
        let metrics = self.inner.workers.metrics();
        metrics.rooms.set(i64::from(load.rooms));
        metrics.participants.set(i64::from(load.participants));
        metrics.tracks.set(i64::from(load.tracks));
        metrics.render()
    }

    /// Rooms, participants and published tracks here now (the parts of the
    /// load that the node's rooms know).
    pub async fn load(&self) -> NodeLoad {
        let rooms: Vec<_> = self.rooms().values().map(|r| r.tx.clone()).collect();
        let mut load = NodeLoad::default();
        for room in rooms {
            if let Ok(s) = snapshot(&room).await {
                load.rooms += 1;
                load.participants += u32::try_from(s.participants.len()).unwrap_or(u32::MAX);
                let tracks: usize = s.participants.iter().map(|p| p.tracks.len()).sum();
                load.tracks += u32::try_from(tracks).unwrap_or(u32::MAX);
            }
        }
        load
    }

    /// Checks that a room not open here may be opened: the node is not
    /// draining and, in a fleet, holds the room's lease.
    async fn may_open(&self, room: &RoomName) -> Result<(), NodeError> {
        if self.room(room).is_some() {
            return Ok(());
        }
        if self.is_draining() {
            return Err(NodeError::Draining);
        }
        if let Some(p) = self.inner.placement.get() {
            let holder = p.store.claim_room(room, &p.node, None, p.lease).await?;
            if holder != p.node {
                return Err(NodeError::PlacedElsewhere(holder));
            }
        }
        Ok(())
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, Rooms> {
        self.inner.rooms()
    }

    fn room(&self, name: &RoomName) -> Option<mpsc::UnboundedSender<RoomEvent>> {
        self.rooms()
            .get(name)
            .filter(|r| !r.tx.is_closed())
            .map(|r| r.tx.clone())
    }

    /// The room's task, started with `config` if the room does not exist.
    fn room_or_create(&self, name: &RoomName, config: RoomConfig) -> RoomEntry {
        let mut rooms = self.rooms();
        if let Some(entry) = rooms.get(name).filter(|r| !r.tx.is_closed()) {
            return entry.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let room = Room::new(
            name.clone(),
            config,
            salon_common::unix_millis(),
            Instant::now(),
        );
        let node = Arc::downgrade(&self.inner);
        let own_tx = tx.clone();
        tokio::spawn(room_task::run(room, rx, move |name| {
            if let Some(node) = node.upgrade() {
                let mut rooms = node.rooms();
                // Only forget the room if it was not already replaced.
                if rooms.get(name).is_some_and(|r| r.tx.same_channel(&own_tx)) {
                    rooms.remove(name);
                }
            }
        }));
        let entry = RoomEntry {
            tx,
            worker: self.inner.workers.pick(),
        };
        rooms.insert(name.clone(), entry.clone());
        entry
    }

    /// Joins a participant, creating the room on first join as LiveKit does.
    pub async fn join(&self, params: JoinParams) -> Result<Session, NodeError> {
        let sid = ParticipantSid::new(new_sid("PA_"));
        let request = JoinRequest {
            sid: sid.clone(),
            identity: params.identity,
            name: params.name,
            metadata: params.metadata,
            attributes: params.attributes,
            grants: params.grants,
            auto_subscribe: params.auto_subscribe,
            client_protocol: params.client_protocol,
            joined_at_ms: salon_common::unix_millis(),
        };
        self.may_open(&params.room).await?;
        // A room that closes between lookup and join is created afresh, once.
        for _ in 0..2 {
            let RoomEntry { tx: room, worker } =
                self.room_or_create(&params.room, RoomConfig::default());
            let (handle, commands) = ParticipantHandle::new();
            let (reply_tx, reply_rx) = oneshot::channel();
            let sent = room.send(RoomEvent::Join {
                request: request.clone(),
                participant: handle,
                reply: reply_tx,
            });
            if sent.is_err() {
                continue;
            }
            let Ok(result) = reply_rx.await else {
                continue;
            };
            result?;
            let (to_node, from_client) = mpsc::channel(SIGNAL_QUEUE);
            let (to_client, from_node) = mpsc::channel(SIGNAL_QUEUE);
            tokio::spawn(participant::run(SessionParts {
                sid: sid.clone(),
                worker,
                room,
                commands,
                from_client,
                to_client,
                sync_streams: params.sync_streams,
            }));
            return Ok(Session {
                sid,
                to_node,
                from_node,
            });
        }
        Err(NodeError::RoomClosed)
    }

    pub async fn create_room(
        &self,
        name: RoomName,
        config: RoomConfig,
    ) -> Result<lk::Room, NodeError> {
        self.may_open(&name).await?;
        let room = self.room_or_create(&name, config).tx;
        Ok(snapshot(&room).await?.room)
    }

    /// Rooms, all or those named.
    pub async fn list_rooms(&self, names: &[RoomName]) -> Vec<lk::Room> {
        let rooms: Vec<_> = self
            .rooms()
            .iter()
            .filter(|(name, _)| names.is_empty() || names.contains(name))
            .map(|(_, r)| r.tx.clone())
            .collect();
        let mut out = Vec::with_capacity(rooms.len());
        for room in rooms {
            if let Ok(s) = snapshot(&room).await {
                out.push(s.room);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Closes a room that the fleet placed on another node, asking its
    /// participants to rejoin (there).
    pub async fn hand_over(&self, name: &RoomName) -> Result<(), NodeError> {
        let room = self.room(name).ok_or(NodeError::RoomNotFound)?;
        admin(&room, RoomInput::HandOver).await.map(|_| ())
    }

    pub async fn delete_room(&self, name: &RoomName) -> Result<(), NodeError> {
        let room = self.room(name).ok_or(NodeError::RoomNotFound)?;
        admin(&room, RoomInput::Close).await.map(|_| ())
    }

    pub async fn list_participants(
        &self,
        name: &RoomName,
    ) -> Result<Vec<lk::ParticipantInfo>, NodeError> {
        let room = self.room(name).ok_or(NodeError::RoomNotFound)?;
        Ok(snapshot(&room).await?.participants)
    }

    pub async fn get_participant(
        &self,
        name: &RoomName,
        identity: &ParticipantIdentity,
    ) -> Result<lk::ParticipantInfo, NodeError> {
        self.list_participants(name)
            .await?
            .into_iter()
            .find(|p| p.identity == identity.as_str())
            .ok_or(NodeError::Room(RoomError::ParticipantNotFound))
    }

    pub async fn remove_participant(
        &self,
        name: &RoomName,
        identity: ParticipantIdentity,
    ) -> Result<(), NodeError> {
        let room = self.room(name).ok_or(NodeError::RoomNotFound)?;
        admin(&room, RoomInput::Remove { identity })
            .await
            .map(|_| ())
    }

    pub async fn mute_published_track(
        &self,
        name: &RoomName,
        identity: ParticipantIdentity,
        track: TrackSid,
        muted: bool,
    ) -> Result<lk::TrackInfo, NodeError> {
        let room = self.room(name).ok_or(NodeError::RoomNotFound)?;
        let snapshot = admin(
            &room,
            RoomInput::AdminMute {
                identity,
                track: track.clone(),
                muted,
            },
        )
        .await?;
        snapshot
            .participants
            .iter()
            .flat_map(|p| p.tracks.iter())
            .find(|t| t.sid == track.as_str())
            .cloned()
            .ok_or(NodeError::Room(RoomError::TrackNotFound))
    }

    pub async fn update_participant(
        &self,
        name: &RoomName,
        request: lk::UpdateParticipantRequest,
    ) -> Result<lk::ParticipantInfo, NodeError> {
        let room = self.room(name).ok_or(NodeError::RoomNotFound)?;
        let identity = ParticipantIdentity::new(request.identity);
        let snapshot = admin(
            &room,
            RoomInput::AdminUpdate {
                identity: identity.clone(),
                name: request.name,
                metadata: request.metadata,
                attributes: request.attributes,
                permission: request.permission,
            },
        )
        .await?;
        snapshot
            .participants
            .into_iter()
            .find(|p| p.identity == identity.as_str())
            .ok_or(NodeError::Room(RoomError::ParticipantNotFound))
    }
}

impl Node {
    /// RoomService SendData: a data packet from the server to the room's
    /// participants (all, or those the request names).
    #[allow(deprecated)] // destination_sids: older server SDKs still send them
    pub async fn send_data(
        &self,
        name: &RoomName,
        request: lk::SendDataRequest,
    ) -> Result<(), NodeError> {
        let room = self.room(name).ok_or(NodeError::RoomNotFound)?;
        let kind = lk::data_packet::Kind::try_from(request.kind)
            .map_err(|_| NodeError::Room(RoomError::Invalid("unknown data packet kind")))?;
        let packet = lk::DataPacket {
            destination_identities: request.destination_identities.clone(),
            value: Some(lk::data_packet::Value::User(lk::UserPacket {
                payload: request.data,
                destination_identities: request.destination_identities,
                destination_sids: request.destination_sids,
                topic: request.topic,
                nonce: request.nonce,
                ..Default::default()
            })),
            ..Default::default()
        };
        admin(&room, RoomInput::AdminData { kind, packet }).await?;
        Ok(())
    }
}

async fn snapshot(room: &mpsc::UnboundedSender<RoomEvent>) -> Result<RoomSnapshot, NodeError> {
    let (tx, rx) = oneshot::channel();
    room.send(RoomEvent::Snapshot(tx))
        .map_err(|_| NodeError::RoomClosed)?;
    rx.await.map_err(|_| NodeError::RoomClosed)
}

async fn admin(
    room: &mpsc::UnboundedSender<RoomEvent>,
    input: RoomInput,
) -> Result<RoomSnapshot, NodeError> {
    let (tx, rx) = oneshot::channel();
    room.send(RoomEvent::Admin { input, reply: tx })
        .map_err(|_| NodeError::RoomClosed)?;
    Ok(rx.await.map_err(|_| NodeError::RoomClosed)??)
}
