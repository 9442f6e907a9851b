//! The same contract, checked on both stores: the in-memory one and Redis
//! (the real server on 127.0.0.1:6379, under a prefix of its own).

use super::*;
use std::sync::Arc;

fn redis() -> Arc<dyn Store> {
    let prefix = format!("salon-test-{}", rand_suffix());
    Arc::new(RedisStore::connect("redis://127.0.0.1:6379", &prefix).expect("Redis URL"))
}

fn memory() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

fn rand_suffix() -> String {
    salon_common::new_sid("")
}

fn node(id: &str, participants: u32) -> NodeInfo {
    NodeInfo {
        id: NodeId::new(id),
        internal_url: format!("http://127.0.0.1:1/{id}"),
        media_addrs: vec!["127.0.0.1:5000".into()],
        max_participants: 0,
        state: NodeState::Active,
        load: NodeLoad {
            participants,
            ..NodeLoad::default()
        },
        updated_at_ms: salon_common::unix_millis(),
    }
}

const LEASE: Duration = Duration::from_secs(10);

async fn registry_entries_expire(store: Arc<dyn Store>) {
    store.put_node(&node("a", 1), LEASE).await.unwrap();
    store
        .put_node(&node("b", 2), Duration::from_millis(200))
        .await
        .unwrap();
    let ids: Vec<_> = store
        .nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(ids, [NodeId::new("a"), NodeId::new("b")]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let nodes = store.nodes().await.unwrap();
    assert_eq!(
        nodes,
        [node("a", 1)].map(|mut n| {
            n.updated_at_ms = nodes[0].updated_at_ms;
            n
        })
    );
    store.remove_node(&NodeId::new("a")).await.unwrap();
    assert!(store.nodes().await.unwrap().is_empty());
}

async fn a_room_has_one_holder(store: Arc<dyn Store>) {
    let room = RoomName::new("r1");
    let (a, b) = (NodeId::new("a"), NodeId::new("b"));
    assert_eq!(store.room_owner(&room).await.unwrap(), None);
    assert_eq!(store.claim_room(&room, &a, None, LEASE).await.unwrap(), a);
    // Another node is told who holds it, and nothing changes.
    assert_eq!(store.claim_room(&room, &b, None, LEASE).await.unwrap(), a);
    // Naming the wrong node as gone does not take it either.
    let c = NodeId::new("c");
    assert_eq!(
        store.claim_room(&room, &b, Some(&c), LEASE).await.unwrap(),
        a
    );
    // The holder renews.
    assert_eq!(store.claim_room(&room, &a, None, LEASE).await.unwrap(), a);
    // b may only release what b holds.
    store.release_room(&room, &b).await.unwrap();
    assert_eq!(store.room_owner(&room).await.unwrap(), Some(a.clone()));
    // Taking over from a node known to be gone.
    assert_eq!(
        store.claim_room(&room, &b, Some(&a), LEASE).await.unwrap(),
        b
    );
    // The old holder, back, cannot remove the new placement.
    store.release_room(&room, &a).await.unwrap();
    assert_eq!(store.room_owner(&room).await.unwrap(), Some(b.clone()));
    store.release_room(&room, &b).await.unwrap();
    assert_eq!(store.room_owner(&room).await.unwrap(), None);
}

async fn a_lease_runs_out(store: Arc<dyn Store>) {
    let room = RoomName::new("r2");
    let (a, b) = (NodeId::new("a"), NodeId::new("b"));
    let short = Duration::from_millis(200);
    assert_eq!(store.claim_room(&room, &a, None, short).await.unwrap(), a);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(store.claim_room(&room, &b, None, LEASE).await.unwrap(), b);
}

async fn concurrent_claims_agree(store: Arc<dyn Store>) {
    for round in 0..50 {
        let room = RoomName::new(format!("race-{round}"));
        let claims = (0..4).map(|i| {
            let store = store.clone();
            let room = room.clone();
            tokio::spawn(async move {
                let me = NodeId::new(format!("n{i}"));
                store.claim_room(&room, &me, None, LEASE).await.unwrap()
            })
        });
        let holders: Vec<NodeId> = futures_join(claims).await;
        assert!(holders.iter().all(|h| h == &holders[0]), "{holders:?}");
        assert_eq!(
            store.room_owner(&room).await.unwrap().as_ref(),
            Some(&holders[0])
        );
    }
}

async fn futures_join<T: Send + 'static>(
    tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for t in tasks.collect::<Vec<_>>() {
        out.push(t.await.unwrap());
    }
    out
}

async fn meetings_are_made_once(store: Arc<dyn Store>) {
    let room = RoomName::new("abc-defg-hij");
    let m = MeetingRecord {
        host_key: "k1".into(),
        waiting_room: true,
    };
    assert_eq!(store.meeting(&room).await.unwrap(), None);
    assert!(store.create_meeting(&room, &m, LEASE).await.unwrap());
    let other = MeetingRecord {
        host_key: "k2".into(),
        waiting_room: false,
    };
    assert!(!store.create_meeting(&room, &other, LEASE).await.unwrap());
    assert_eq!(store.meeting(&room).await.unwrap(), Some(m));
}

macro_rules! on_both {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn memory() {
                super::$name(super::memory()).await
            }
            #[tokio::test]
            async fn redis() {
                super::$name(super::redis()).await
            }
        }
    };
}

on_both!(registry_entries_expire);
on_both!(a_room_has_one_holder);
on_both!(a_lease_runs_out);
on_both!(concurrent_claims_agree);
on_both!(meetings_are_made_once);

#[tokio::test]
async fn an_unreachable_redis_is_an_error_not_a_hang() {
    // Nothing listens on port 1.
    let store = RedisStore::connect("redis://127.0.0.1:1", "x").unwrap();
    let started = std::time::Instant::now();
    let err = store.nodes().await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn placement_skips_draining_and_full_nodes() {
    let mut nodes = vec![node("a", 5), node("b", 1), node("c", 0), node("d", 1)];
    nodes[2].state = NodeState::Draining;
    nodes[1].max_participants = 1;
    // b is full, c drains: d has fewer participants than a.
    let best = least_loaded(&nodes, LoadMeasure::Participants).unwrap();
    assert_eq!(best.id.as_str(), "d");
    nodes[0].load.participants = 1;
    // A tie goes to the lower id, so that every replica picks the same.
    let best = least_loaded(&nodes, LoadMeasure::Participants).unwrap();
    assert_eq!(best.id.as_str(), "a");
    nodes[0].load.rooms = 3;
    assert_eq!(
        least_loaded(&nodes, LoadMeasure::Rooms)
            .unwrap()
            .id
            .as_str(),
        "d"
    );
    nodes.retain(|n| n.id.as_str() == "c");
    assert!(least_loaded(&nodes, LoadMeasure::Participants).is_none());
}
