//! A replica relaying signal connections to nodes, on real sockets: the
//! join goes through, a node that refuses connections is passed over, and
//! a replica that stops asks its clients to reconnect.

mod common;

use common::{Ws, config, join_token, listen, next_response};
use livekit_protocol as lk;
use salon_sfu::{Node, Placement};
use salon_signaling::{Backend, Fleet, FleetConfig, app, app_with_shutdown};
use salon_store::{LoadMeasure, MemoryStore, NodeId, NodeInfo, NodeLoad, NodeState, Store};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const LEASE: Duration = Duration::from_secs(10);

fn entry(id: &str, url: String, participants: u32) -> NodeInfo {
    NodeInfo {
        id: NodeId::new(id),
        internal_url: url,
        media_addrs: Vec::new(),
        max_participants: 0,
        state: NodeState::Active,
        load: NodeLoad {
            participants,
            ..NodeLoad::default()
        },
        updated_at_ms: 0,
    }
}

/// A node serving its internal endpoints, registered in `store` as `id`.
async fn node(store: &Arc<dyn Store>, id: &str, participants: u32) -> Node {
    let node = common::node();
    node.join_fleet(Placement {
        store: store.clone(),
        node: NodeId::new(id),
        lease: LEASE,
    });
    let addr = listen(app(
        config(false),
        Backend::Local(node.clone()),
        store.clone(),
    ))
    .await;
    store
        .put_node(&entry(id, format!("http://{addr}"), participants), LEASE)
        .await
        .expect("register");
    node
}

fn replica(store: &Arc<dyn Store>, shutdown: watch::Receiver<bool>) -> axum::Router {
    let fleet = Arc::new(Fleet::new(
        store.clone(),
        FleetConfig {
            measure: LoadMeasure::Participants,
            lease: LEASE,
        },
    ));
    app_with_shutdown(
        config(false),
        Backend::Fleet(fleet),
        store.clone(),
        shutdown,
    )
}

async fn join(addr: SocketAddr, room: &str, identity: &str) -> Ws {
    let token = join_token(room, identity);
    let url = format!("ws://{addr}/rtc?access_token={token}");
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    match next_response(&mut ws).await.and_then(|r| r.message) {
        Some(lk::signal_response::Message::Join(join)) => {
            assert_eq!(join.participant.expect("me").identity, identity);
        }
        other => panic!("expected a join response, got {other:?}"),
    }
    ws
}

#[tokio::test]
async fn a_join_through_a_replica_lands_on_the_node_and_a_dead_node_is_passed_over() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let live = node(&store, "live", 5).await;
    // A registered node that refuses connections, and looks least loaded.
    store
        .put_node(&entry("dead", "http://127.0.0.1:1".into(), 0), LEASE)
        .await
        .expect("register");
    let (_tx, rx) = watch::channel(false);
    let addr = listen(replica(&store, rx)).await;
    let _ws = join(addr, "salle", "alice").await;
    assert_eq!(
        store
            .room_owner(&salon_common::RoomName::new("salle"))
            .await
            .expect("store"),
        Some(NodeId::new("live"))
    );
    let rooms = live.list_rooms(&[]).await;
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0].num_participants, 1);
}

#[tokio::test]
async fn a_stopping_replica_asks_its_clients_to_reconnect() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let _node = node(&store, "n1", 0).await;
    let (tx, rx) = watch::channel(false);
    let addr = listen(replica(&store, rx)).await;
    let mut ws = join(addr, "salle", "bob").await;
    tx.send(true).expect("replica running");
    loop {
        match next_response(&mut ws).await {
            Some(lk::SignalResponse {
                message: Some(lk::signal_response::Message::Leave(leave)),
            }) => {
                assert_eq!(leave.action, lk::leave_request::Action::Reconnect as i32);
                break;
            }
            Some(_) => continue,
            None => panic!("closed without a reconnect hint"),
        }
    }
}

#[tokio::test]
async fn with_no_node_a_join_is_refused_with_a_clear_error() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let (_tx, rx) = watch::channel(false);
    let addr = listen(replica(&store, rx)).await;
    let token = join_token("salle", "carol");
    let url = format!("ws://{addr}/rtc?access_token={token}");
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default());
            assert!(body.contains("no media node"), "{body}");
        }
        other => panic!("expected 503, got {other:?}"),
    }
}
