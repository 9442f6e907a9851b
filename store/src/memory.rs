//! The store in one process's memory: `salon dev` and tests.

use crate::{MeetingRecord, NodeId, NodeInfo, Store, StoreError};
use salon_common::RoomName;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Most meetings held at once: anyone the guest mode serves may make them,
/// so memory must stay bounded.
const MAX_MEETINGS: usize = 100_000;

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    nodes: HashMap<NodeId, (NodeInfo, Instant)>,
    rooms: HashMap<RoomName, (NodeId, Instant)>,
    meetings: HashMap<RoomName, (MeetingRecord, Instant)>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Locks the maps, with what expired dropped.
    fn live(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the maps consistent.
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        inner.nodes.retain(|_, (_, until)| *until > now);
        inner.rooms.retain(|_, (_, until)| *until > now);
        inner.meetings.retain(|_, (_, until)| *until > now);
        inner
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn put_node(&self, info: &NodeInfo, ttl: Duration) -> Result<(), StoreError> {
        self.live()
            .nodes
            .insert(info.id.clone(), (info.clone(), Instant::now() + ttl));
        Ok(())
    }

    async fn remove_node(&self, id: &NodeId) -> Result<(), StoreError> {
        self.live().nodes.remove(id);
        Ok(())
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, StoreError> {
        let mut nodes: Vec<NodeInfo> = self.live().nodes.values().map(|(n, _)| n.clone()).collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }

    async fn claim_room(
        &self,
        room: &RoomName,
        node: &NodeId,
        replacing: Option<&NodeId>,
        lease: Duration,
    ) -> Result<NodeId, StoreError> {
        let mut inner = self.live();
        let holder = inner.rooms.get(room).map(|(n, _)| n.clone());
        match holder {
            Some(h) if &h != node && Some(&h) != replacing => Ok(h),
            _ => {
                inner
                    .rooms
                    .insert(room.clone(), (node.clone(), Instant::now() + lease));
                Ok(node.clone())
            }
        }
    }

    async fn room_owner(&self, room: &RoomName) -> Result<Option<NodeId>, StoreError> {
        Ok(self.live().rooms.get(room).map(|(n, _)| n.clone()))
    }

    async fn release_room(&self, room: &RoomName, node: &NodeId) -> Result<(), StoreError> {
        let mut inner = self.live();
        if inner.rooms.get(room).is_some_and(|(n, _)| n == node) {
            inner.rooms.remove(room);
        }
        Ok(())
    }

    async fn create_meeting(
        &self,
        room: &RoomName,
        meeting: &MeetingRecord,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut inner = self.live();
        if inner.meetings.contains_key(room) {
            return Ok(false);
        }
        if inner.meetings.len() >= MAX_MEETINGS {
            return Err(StoreError::Full);
        }
        inner
            .meetings
            .insert(room.clone(), (meeting.clone(), Instant::now() + ttl));
        Ok(true)
    }

    async fn meeting(&self, room: &RoomName) -> Result<Option<MeetingRecord>, StoreError> {
        Ok(self.live().meetings.get(room).map(|(m, _)| m.clone()))
    }
}
