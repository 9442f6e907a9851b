//! The fleet's shared state, behind one trait with two implementations:
//! [`MemoryStore`] for `salon dev` and tests, [`RedisStore`] for a fleet of
//! signaling replicas and SFU nodes.
//!
//! What it holds:
//! - the node registry: each SFU node's addresses, capacity and load,
//!   written on a heartbeat and gone when the node falls silent;
//! - room placement: which node hosts a room, as a lease that only its
//!   holder renews or releases, claimed atomically so that a room is never
//!   placed on two nodes;
//! - meetings made by the web app (host keys, waiting rooms).

mod memory;
mod redis_store;

pub use memory::MemoryStore;
pub use redis_store::RedisStore;

use salon_common::RoomName;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// An SFU node's name in the fleet: unique per process start.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(String);

impl NodeId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether a node takes new rooms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    #[default]
    Active,
    /// Shutting down: its meetings go on, but it takes no new room.
    Draining,
}

/// What a node carries now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeLoad {
    pub rooms: u32,
    pub participants: u32,
    pub tracks: u32,
    /// RTP packets forwarded per second, over the last heartbeat.
    pub packets_per_sec: f64,
    /// CPU use of the node process, in cores (1.0 = one core busy).
    pub cpu: f64,
}

/// A node's registry entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: NodeId,
    /// Where signaling replicas reach the node's signal and admin endpoints
    /// (`http://host:port`).
    pub internal_url: String,
    /// The media addresses its ICE candidates announce (`ip:port`).
    pub media_addrs: Vec<String>,
    /// Most participants it accepts; 0 means no limit.
    pub max_participants: u32,
    pub state: NodeState,
    pub load: NodeLoad,
    /// Wall-clock time of this entry, Unix milliseconds.
    pub updated_at_ms: i64,
}

impl NodeInfo {
    /// A node that may take a new room: active and not full.
    pub fn accepts_rooms(&self) -> bool {
        self.state == NodeState::Active
            && (self.max_participants == 0 || self.load.participants < self.max_participants)
    }
}

/// A meeting made from the web app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeetingRecord {
    pub host_key: String,
    pub waiting_room: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("shared state is unreachable: {0}")]
    Unavailable(String),
    #[error("shared state holds a malformed entry: {0}")]
    Corrupt(String),
    #[error("too many meetings; try again later")]
    Full,
}

/// The fleet's shared state. Every call is one atomic step in the store.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Writes a node's entry; it disappears `ttl` after the last write.
    async fn put_node(&self, info: &NodeInfo, ttl: Duration) -> Result<(), StoreError>;
    /// Removes a node's entry at once (a clean shutdown).
    async fn remove_node(&self, id: &NodeId) -> Result<(), StoreError>;
    /// The nodes heard from within their ttl.
    async fn nodes(&self) -> Result<Vec<NodeInfo>, StoreError>;

    /// Claims `room` for `node` for `lease`, and returns who holds it now.
    /// The claim succeeds (returns `node`) when nobody holds the room, when
    /// `node` already holds it (a renewal), or when `replacing` holds it (the
    /// caller knows that node is gone). Otherwise the holder is returned and
    /// nothing changes.
    async fn claim_room(
        &self,
        room: &RoomName,
        node: &NodeId,
        replacing: Option<&NodeId>,
        lease: Duration,
    ) -> Result<NodeId, StoreError>;
    /// Who holds `room`, if anyone.
    async fn room_owner(&self, room: &RoomName) -> Result<Option<NodeId>, StoreError>;
    /// Gives `room` up, only if `node` still holds it: a node never removes
    /// a placement that another node took over.
    async fn release_room(&self, room: &RoomName, node: &NodeId) -> Result<(), StoreError>;

    /// Stores a new meeting under `room`; false if one exists already.
    async fn create_meeting(
        &self,
        room: &RoomName,
        meeting: &MeetingRecord,
        ttl: Duration,
    ) -> Result<bool, StoreError>;
    async fn meeting(&self, room: &RoomName) -> Result<Option<MeetingRecord>, StoreError>;
}

/// The node a new room goes to: among those that accept rooms, the least
/// loaded by `measure`; ties go to the lower id, so that replicas agree.
pub fn least_loaded(nodes: &[NodeInfo], measure: LoadMeasure) -> Option<&NodeInfo> {
    nodes.iter().filter(|n| n.accepts_rooms()).min_by(|a, b| {
        measure
            .of(&a.load)
            .total_cmp(&measure.of(&b.load))
            .then_with(|| a.id.cmp(&b.id))
    })
}

/// How "least loaded" is measured when placing a room.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LoadMeasure {
    #[default]
    Participants,
    Rooms,
    Tracks,
    Cpu,
    PacketsPerSec,
}

impl LoadMeasure {
    fn of(self, load: &NodeLoad) -> f64 {
        match self {
            Self::Participants => load.participants.into(),
            Self::Rooms => load.rooms.into(),
            Self::Tracks => load.tracks.into(),
            Self::Cpu => load.cpu,
            Self::PacketsPerSec => load.packets_per_sec,
        }
    }
}

impl std::str::FromStr for LoadMeasure {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "participants" => Self::Participants,
            "rooms" => Self::Rooms,
            "tracks" => Self::Tracks,
            "cpu" => Self::Cpu,
            "packets" => Self::PacketsPerSec,
            _ => {
                return Err(format!(
                    "unknown load measure {s:?}: participants, rooms, tracks, cpu or packets"
                ));
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed call is the test failing
mod tests;
