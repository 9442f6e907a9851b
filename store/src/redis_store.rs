//! The store in Redis, shared by every signaling replica and SFU node.
//!
//! Keys, under a prefix so that several fleets (or test runs) can share one
//! Redis:
//! - `{p}:node:{id}`: the node's entry as JSON, expiring with its ttl;
//!   `{p}:nodes` is the set of ids, pruned of those whose entry expired;
//! - `{p}:room:{name}`: the id of the node holding the room, expiring with
//!   its lease; claims, renewals and releases are Lua scripts, so each is
//!   one atomic compare-and-set;
//! - `{p}:meeting:{name}`: a meeting as JSON, expiring after its lifetime.

use crate::{MeetingRecord, NodeId, NodeInfo, Store, StoreError};
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use salon_common::RoomName;
use std::time::Duration;

/// A call that takes longer fails: joins must not hang on a lost Redis.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Takes the room for ARGV[1] when it is free, already ARGV[1]'s, or held
/// by ARGV[2] (a node the caller found gone); returns the holder.
const CLAIM: &str = r"
local cur = redis.call('GET', KEYS[1])
if (not cur) or cur == ARGV[1] or (ARGV[2] ~= '' and cur == ARGV[2]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
  return ARGV[1]
end
return cur
";

/// Deletes the placement only if ARGV[1] still holds it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    claim: redis::Script,
    release: redis::Script,
}

fn unavailable(err: redis::RedisError) -> StoreError {
    StoreError::Unavailable(err.to_string())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisStore {
    /// Connects lazily: a node or replica starts while Redis is down, and
    /// the connection comes back by itself after Redis restarts.
    pub fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::Unavailable(format!("bad Redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(unavailable)?;
        Ok(Self {
            conn,
            prefix: prefix.to_owned(),
            claim: redis::Script::new(CLAIM),
            release: redis::Script::new(RELEASE),
        })
    }

    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}:{kind}:{name}", self.prefix)
    }

    fn nodes_key(&self) -> String {
        format!("{}:nodes", self.prefix)
    }
}

#[async_trait::async_trait]
impl Store for RedisStore {
    async fn put_node(&self, info: &NodeInfo, ttl: Duration) -> Result<(), StoreError> {
        let json = serde_json::to_string(info).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(self.key("node", info.id.as_str()))
            .arg(json)
            .arg("PX")
            .arg(millis(ttl))
            .ignore()
            .sadd(self.nodes_key(), info.id.as_str())
            .ignore()
            .exec_async(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn remove_node(&self, id: &NodeId) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .del(self.key("node", id.as_str()))
            .ignore()
            .srem(self.nodes_key(), id.as_str())
            .ignore()
            .exec_async(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, StoreError> {
        let mut conn = self.conn.clone();
        let mut ids: Vec<String> = conn.smembers(self.nodes_key()).await.map_err(unavailable)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        ids.sort();
        let keys: Vec<String> = ids.iter().map(|id| self.key("node", id)).collect();
        let entries: Vec<Option<String>> = conn.mget(&keys).await.map_err(unavailable)?;
        let mut nodes = Vec::with_capacity(ids.len());
        let mut gone = Vec::new();
        for (id, entry) in ids.iter().zip(entries) {
            match entry.map(|json| serde_json::from_str::<NodeInfo>(&json)) {
                Some(Ok(info)) => nodes.push(info),
                Some(Err(err)) => {
                    tracing::warn!(node = %id, %err, "skipping a malformed node entry")
                }
                None => gone.push(id.clone()),
            }
        }
        if !gone.is_empty() {
            // Entries expire by themselves; the index is tidied by whoever reads it.
            let _: Result<(), _> = conn.srem(self.nodes_key(), gone).await;
        }
        Ok(nodes)
    }

    async fn claim_room(
        &self,
        room: &RoomName,
        node: &NodeId,
        replacing: Option<&NodeId>,
        lease: Duration,
    ) -> Result<NodeId, StoreError> {
        let mut conn = self.conn.clone();
        let holder: String = self
            .claim
            .key(self.key("room", room.as_str()))
            .arg(node.as_str())
            .arg(replacing.map_or("", NodeId::as_str))
            .arg(millis(lease))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(NodeId::new(holder))
    }

    async fn room_owner(&self, room: &RoomName) -> Result<Option<NodeId>, StoreError> {
        let mut conn = self.conn.clone();
        let holder: Option<String> = conn
            .get(self.key("room", room.as_str()))
            .await
            .map_err(unavailable)?;
        Ok(holder.map(NodeId::new))
    }

    async fn release_room(&self, room: &RoomName, node: &NodeId) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .release
            .key(self.key("room", room.as_str()))
            .arg(node.as_str())
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn create_meeting(
        &self,
        room: &RoomName,
        meeting: &MeetingRecord,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let json =
            serde_json::to_string(meeting).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut conn = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(self.key("meeting", room.as_str()))
            .arg(json)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(set.is_some())
    }

    async fn meeting(&self, room: &RoomName) -> Result<Option<MeetingRecord>, StoreError> {
        let mut conn = self.conn.clone();
        let json: Option<String> = conn
            .get(self.key("meeting", room.as_str()))
            .await
            .map_err(unavailable)?;
        json.map(|j| serde_json::from_str(&j).map_err(|e| StoreError::Corrupt(e.to_string())))
            .transpose()
    }
}
