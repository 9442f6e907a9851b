//! The node's entry in the fleet's registry: a heartbeat that writes its
//! addresses and load, renews the leases of the rooms it hosts and gives up
//! those of rooms that closed.

use crate::node::Node;
use salon_common::RoomName;
use salon_common::procstat;
use salon_store::{NodeId, NodeInfo, NodeLoad, NodeState, Store};
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a node says about itself, and how often.
#[derive(Clone, Debug)]
pub struct Registration {
    pub id: NodeId,
    /// Where signaling replicas reach this node (`http://host:port`).
    pub internal_url: String,
    /// Announced media addresses; the workers' own when empty.
    pub media_addrs: Vec<String>,
    pub max_participants: u32,
    /// Time between heartbeats (~2 s).
    pub interval: Duration,
    /// How long the entry outlives the last heartbeat (~5 s).
    pub ttl: Duration,
    /// How long a room's placement outlives the last renewal.
    pub lease: Duration,
}

/// Process CPU and datagrams sent at the last heartbeat, for rates.
struct Counters {
    at: Instant,
    cpu: Option<Duration>,
    sent: u64,
}

impl Counters {
    fn read(node: &Node) -> Self {
        Self {
            at: Instant::now(),
            cpu: procstat::sample("self").ok().map(|s| s.cpu),
            sent: node.datagrams_sent(),
        }
    }
}

/// Runs the heartbeat until `stop` completes, then removes the entry and
/// releases every room this node held. `wake` makes a beat happen now (the
/// node started draining). Store errors are logged and retried on the next
/// beat: the node's meetings go on while Redis is away.
pub async fn run_registry(
    node: Node,
    store: Arc<dyn Store>,
    reg: Registration,
    wake: Arc<tokio::sync::Notify>,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut held: HashSet<RoomName> = HashSet::new();
    let mut last = Counters::read(&node);
    let mut beat = tokio::time::interval(reg.interval);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reachable = true;
    loop {
        tokio::select! {
            _ = beat.tick() => {}
            () = wake.notified() => {}
            () = &mut stop => break,
        }
        let now = Counters::read(&node);
        let mut load = node.load().await;
        rates(&mut load, &last, &now);
        last = now;
        let ok = heartbeat(&node, store.as_ref(), &reg, load, &mut held).await;
        if ok != reachable {
            if ok {
                tracing::info!("shared store reachable again; registry entry rewritten");
            } else {
                tracing::warn!("shared store unreachable; meetings go on, new rooms wait");
            }
            reachable = ok;
        }
    }
    if let Err(err) = store.remove_node(&reg.id).await {
        tracing::warn!(%err, "could not remove this node's registry entry");
    }
    for room in held {
        let _ = store.release_room(&room, &reg.id).await;
    }
}

fn rates(load: &mut NodeLoad, last: &Counters, now: &Counters) {
    let secs = now.at.duration_since(last.at).as_secs_f64();
    if secs <= 0.0 {
        return;
    }
    load.packets_per_sec = now.sent.saturating_sub(last.sent) as f64 / secs;
    if let (Some(a), Some(b)) = (last.cpu, now.cpu) {
        load.cpu = b.saturating_sub(a).as_secs_f64() / secs;
    }
}

/// One beat; false if the store could not be reached.
async fn heartbeat(
    node: &Node,
    store: &dyn Store,
    reg: &Registration,
    load: NodeLoad,
    held: &mut HashSet<RoomName>,
) -> bool {
    let media_addrs = if reg.media_addrs.is_empty() {
        node.media_addrs().iter().map(|a| a.to_string()).collect()
    } else {
        reg.media_addrs.clone()
    };
    let info = NodeInfo {
        id: reg.id.clone(),
        internal_url: reg.internal_url.clone(),
        media_addrs,
        max_participants: reg.max_participants,
        state: if node.is_draining() {
            NodeState::Draining
        } else {
            NodeState::Active
        },
        load,
        updated_at_ms: salon_common::unix_millis(),
    };
    if store.put_node(&info, reg.ttl).await.is_err() {
        return false;
    }
    let hosted: HashSet<RoomName> = node.room_names().into_iter().collect();
    for room in &hosted {
        // A renewal; after a Redis restart it also writes the lease afresh.
        match store.claim_room(room, &reg.id, None, reg.lease).await {
            Ok(holder) if holder == reg.id => {
                held.insert(room.clone());
            }
            Ok(holder) => {
                // Another node took the room while this one was silent: its
                // participants here rejoin there, so the meeting is whole again.
                tracing::warn!(%room, %holder, "room was placed on another node; handing it over");
                held.remove(room);
                let _ = node.hand_over(room).await;
            }
            Err(_) => return false,
        }
    }
    let closed: Vec<RoomName> = held.difference(&hosted).cloned().collect();
    for room in closed {
        if store.release_room(&room, &reg.id).await.is_err() {
            return false;
        }
        held.remove(&room);
    }
    true
}
