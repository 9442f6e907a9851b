//! Bad input on the signal WebSocket ends that one session with an error and
//! harms no one else.

mod common;

use common::{Ws, config, join_token, keys, listen, next_response, node};
use futures::{SinkExt, StreamExt};
use livekit_protocol as lk;
use prost::Message as _;
use salon_signaling::auth::{TokenSpec, VideoGrant, create_token};
use salon_signaling::{Backend, app};
use std::net::SocketAddr;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

async fn server() -> SocketAddr {
    serve().await.0
}

/// A running server, and its router for calls that need no socket.
async fn serve() -> (SocketAddr, axum::Router) {
    let router = app(
        config(false),
        Backend::Local(node()),
        std::sync::Arc::new(salon_store::MemoryStore::new()),
    );
    (listen(router.clone()).await, router)
}

async fn connect(addr: SocketAddr, room: &str, identity: &str) -> (Ws, lk::JoinResponse) {
    let url = format!(
        "ws://{addr}/rtc?access_token={}",
        join_token(room, identity)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    let first = next_response(&mut ws).await.expect("a first message");
    let Some(lk::signal_response::Message::Join(join)) = first.message else {
        panic!("expected a join response, got {first:?}");
    };
    (ws, join)
}

/// Reads until a leave message or the socket closes; true if either came.
async fn ends_session(ws: &mut Ws) -> bool {
    loop {
        match next_response(ws).await {
            None => return true,
            Some(lk::SignalResponse {
                message: Some(lk::signal_response::Message::Leave(_)),
            }) => return true,
            Some(_) => continue,
        }
    }
}

async fn ping_pong(ws: &mut Ws) {
    let ping = lk::SignalRequest {
        message: Some(lk::signal_request::Message::Ping(42)),
    };
    ws.send(Message::Binary(ping.encode_to_vec().into()))
        .await
        .expect("send");
    loop {
        let r = next_response(ws).await.expect("still connected");
        if let Some(lk::signal_response::Message::Pong(ts)) = r.message {
            assert_eq!(ts, 42);
            return;
        }
    }
}

#[tokio::test]
async fn malformed_protobuf_ends_only_that_session() {
    let addr = server().await;
    let (mut bystander, _) = connect(addr, "other-room", "bystander").await;
    let (mut neighbour, join) = connect(addr, "abuse-room", "neighbour").await;
    assert_eq!(join.room.map(|r| r.name).as_deref(), Some("abuse-room"));
    let (mut attacker, _) = connect(addr, "abuse-room", "attacker").await;

    attacker
        .send(Message::Binary(vec![0xff, 0xff, 0xff, 0xff, 0x0f].into()))
        .await
        .expect("send");
    assert!(ends_session(&mut attacker).await);

    ping_pong(&mut neighbour).await;
    ping_pong(&mut bystander).await;
}

#[tokio::test]
async fn malformed_sdp_ends_only_that_session() {
    let addr = server().await;
    let (mut neighbour, _) = connect(addr, "sdp-room", "neighbour").await;
    let (mut attacker, _) = connect(addr, "sdp-room", "attacker").await;
    let offer = lk::SignalRequest {
        message: Some(lk::signal_request::Message::Offer(lk::SessionDescription {
            r#type: "offer".to_owned(),
            sdp: "this is not SDP\r\nm=garbage\r\n".to_owned(),
            ..Default::default()
        })),
    };
    attacker
        .send(Message::Binary(offer.encode_to_vec().into()))
        .await
        .expect("send");
    assert!(ends_session(&mut attacker).await);
    ping_pong(&mut neighbour).await;
}

#[tokio::test]
async fn malformed_ice_candidates_end_only_that_session() {
    let addr = server().await;
    let (mut neighbour, _) = connect(addr, "ice-room", "neighbour").await;
    let (mut attacker, _) = connect(addr, "ice-room", "attacker").await;
    let trickle = lk::SignalRequest {
        message: Some(lk::signal_request::Message::Trickle(lk::TrickleRequest {
            candidate_init: "{not json".to_owned(),
            target: 0,
            r#final: false,
        })),
    };
    attacker
        .send(Message::Binary(trickle.encode_to_vec().into()))
        .await
        .expect("send");
    assert!(ends_session(&mut attacker).await);
    ping_pong(&mut neighbour).await;
}

#[tokio::test]
async fn an_oversized_message_closes_the_socket() {
    let addr = server().await;
    let (mut neighbour, _) = connect(addr, "big-room", "neighbour").await;
    let (mut attacker, _) = connect(addr, "big-room", "attacker").await;
    let huge = vec![0u8; 3 * 1024 * 1024];
    // The server may close while the frame is still being written.
    let _ = attacker.send(Message::Binary(huge.into())).await;
    assert!(ends_session(&mut attacker).await);
    ping_pong(&mut neighbour).await;
}

#[tokio::test]
async fn json_text_frames_are_answered_in_json() {
    let addr = server().await;
    let (mut ws, _) = connect(addr, "json-room", "json").await;
    ws.send(Message::Text(r#"{"ping":"7"}"#.into()))
        .await
        .expect("send");
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("answer")
            .expect("open")
            .expect("frame");
        if let Message::Text(t) = frame {
            let v: serde_json::Value = serde_json::from_str(t.as_str()).expect("json");
            if v.get("pong").is_some() {
                assert_eq!(v["pong"], "7");
                return;
            }
        }
    }
}

#[tokio::test]
async fn a_second_session_with_the_same_identity_replaces_the_first() {
    let addr = server().await;
    let (mut first, _) = connect(addr, "dup-room", "same").await;
    let (mut second, _) = connect(addr, "dup-room", "same").await;
    let leave = loop {
        match next_response(&mut first).await {
            Some(lk::SignalResponse {
                message: Some(lk::signal_response::Message::Leave(l)),
            }) => break l,
            Some(_) => continue,
            None => panic!("closed without a leave message"),
        }
    };
    assert_eq!(leave.reason, lk::DisconnectReason::DuplicateIdentity as i32);
    ping_pong(&mut second).await;
}

#[tokio::test]
async fn connected_clients_get_a_refreshed_token() {
    let addr = server().await;
    let (mut ws, _) = connect(addr, "refresh-room", "holder").await;
    loop {
        let r = next_response(&mut ws).await.expect("still connected");
        if let Some(lk::signal_response::Message::RefreshToken(token)) = r.message {
            let keys = keys();
            let claims = keys.verify(&token).expect("a valid token");
            assert_eq!(claims.sub, "holder");
            assert_eq!(claims.join_room(), Ok("refresh-room"));
            return;
        }
    }
}

#[tokio::test]
async fn an_admitted_guest_gets_a_token_that_rejoins_admitted() {
    use tower::ServiceExt;
    let (addr, router) = serve().await;
    let waiting = create_token(
        "devkey",
        "secret",
        TokenSpec {
            identity: "waiter".to_owned(),
            grant: VideoGrant {
                room: Some("lobby-room".to_owned()),
                room_join: true,
                can_publish: Some(false),
                can_subscribe: Some(false),
                can_publish_data: Some(false),
                hidden: true,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .expect("token");
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/rtc?access_token={waiting}"))
            .await
            .expect("connect");
    let admin = create_token(
        "devkey",
        "secret",
        TokenSpec {
            identity: "host".to_owned(),
            grant: VideoGrant {
                room: Some("lobby-room".to_owned()),
                room_admin: true,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .expect("token");
    let keys = keys();
    let mut admitted = false;
    loop {
        let r = next_response(&mut ws).await.expect("still connected");
        match r.message {
            Some(lk::signal_response::Message::Join(_)) => {
                let body = serde_json::json!({
                    "room": "lobby-room",
                    "identity": "waiter",
                    "permission": { "canSubscribe": true, "canPublish": true, "canPublishData": true },
                });
                let req = axum::http::Request::post("/twirp/livekit.RoomService/UpdateParticipant")
                    .header("content-type", "application/json")
                    .header("authorization", format!("Bearer {admin}"))
                    .body(axum::body::Body::from(body.to_string()))
                    .expect("request");
                let res = router.clone().oneshot(req).await.expect("response");
                assert_eq!(res.status(), axum::http::StatusCode::OK);
                admitted = true;
            }
            Some(lk::signal_response::Message::RefreshToken(token)) if admitted => {
                let claims = keys.verify(&token).expect("valid");
                if claims.video.can_subscribe() {
                    assert!(claims.video.can_publish() && !claims.video.hidden);
                    return;
                }
            }
            _ => {}
        }
    }
}
