//! What the signaling tests share: the dev key, a node on loopback, join
//! tokens, a served router, and reading signal responses off a socket.
// Each test file uses a part of this.
#![allow(dead_code)]

use futures::StreamExt;
use livekit_protocol as lk;
use prost::Message as _;
use salon_sfu::{Node, NodeConfig};
use salon_signaling::SignalingConfig;
use salon_signaling::auth::{KeyStore, TokenSpec, VideoGrant, create_token};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The dev key, `devkey: secret`.
pub(crate) fn keys() -> KeyStore {
    KeyStore::new(HashMap::from([("devkey".to_owned(), "secret".to_owned())]))
}

/// The service's configuration with the dev key, guest tokens signed by it
/// when `guest`.
pub(crate) fn config(guest: bool) -> SignalingConfig {
    SignalingConfig {
        keys: keys(),
        guest_key: guest.then(|| "devkey".to_owned()),
        web_dir: None,
    }
}

/// A node with one media worker on loopback.
pub(crate) fn node() -> Node {
    Node::start(NodeConfig {
        rtc_bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        rtc_port: 0,
        media_workers: 1,
        udp_gso: true,
    })
    .expect("media worker starts")
}

/// Serves `router` on a free loopback port.
pub(crate) async fn listen(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// A token that lets `identity` join `room`, signed with the dev key.
pub(crate) fn join_token(room: &str, identity: &str) -> String {
    create_token(
        "devkey",
        "secret",
        TokenSpec {
            identity: identity.to_owned(),
            grant: VideoGrant {
                room: Some(room.to_owned()),
                room_join: true,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .expect("token")
}

/// The next signal response, or None when the server closed the socket.
pub(crate) async fn next_response(ws: &mut Ws) -> Option<lk::SignalResponse> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("no answer within 10 s");
        match frame {
            Some(Ok(Message::Binary(b))) => {
                return Some(lk::SignalResponse::decode(b.as_ref()).expect("protobuf"));
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}
