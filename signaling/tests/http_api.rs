//! The HTTP surface called in-process through the router: token checks,
//! Twirp encodings and errors, guest tokens and body limits.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use livekit_protocol as lk;
use prost::Message;
mod common;

use common::{config, keys, node};
use salon_signaling::auth::{TokenSpec, VideoGrant, create_token};
use salon_signaling::{Backend, app};
use tower::ServiceExt;

fn router(guest: bool) -> Router {
    app(
        config(guest),
        Backend::Local(node()),
        std::sync::Arc::new(salon_store::MemoryStore::new()),
    )
}

fn token(grant: VideoGrant) -> String {
    create_token(
        "devkey",
        "secret",
        TokenSpec {
            identity: "tester".to_owned(),
            grant,
            ..Default::default()
        },
    )
    .expect("token")
}

async fn send(router: &Router, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let res = router.clone().oneshot(req).await.expect("response");
    let status = res.status();
    let body = res.into_body().collect().await.expect("body").to_bytes();
    (status, body.to_vec())
}

fn twirp(
    method: &str,
    content_type: &str,
    token: Option<&str>,
    body: impl Into<Body>,
) -> Request<Body> {
    let mut req = Request::post(format!("/twirp/livekit.RoomService/{method}"))
        .header(header::CONTENT_TYPE, content_type);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    req.body(body.into()).expect("request")
}

#[tokio::test]
async fn validate_accepts_a_good_token_and_refuses_bad_ones() {
    let r = router(false);
    let good = token(VideoGrant {
        room: Some("r".to_owned()),
        room_join: true,
        ..Default::default()
    });
    let (status, body) = send(
        &r,
        Request::get(format!("/rtc/validate?access_token={good}"))
            .body(Body::empty())
            .expect("req"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"success");
    for bad in ["", "abc", "a.b.c"] {
        let (status, _) = send(
            &r,
            Request::get(format!("/rtc/validate?access_token={bad}"))
                .body(Body::empty())
                .expect("req"),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad:?}");
    }
    // A token for joining that lacks roomJoin.
    let no_join = token(VideoGrant {
        room: Some("r".to_owned()),
        ..Default::default()
    });
    let (status, body) = send(
        &r,
        Request::get(format!("/rtc/validate?access_token={no_join}"))
            .body(Body::empty())
            .expect("req"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(String::from_utf8_lossy(&body).contains("roomJoin"));
}

#[tokio::test]
async fn the_v1_signal_path_answers_404_so_clients_fall_back() {
    let r = router(false);
    let (status, _) = send(
        &r,
        Request::get("/rtc/v1/validate?access_token=x")
            .body(Body::empty())
            .expect("req"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn twirp_speaks_protobuf_and_json() {
    let r = router(false);
    let admin = token(VideoGrant {
        room_create: true,
        room_list: true,
        ..Default::default()
    });
    let create = lk::CreateRoomRequest {
        name: "proto-room".to_owned(),
        max_participants: 3,
        ..Default::default()
    };
    let (status, body) = send(
        &r,
        twirp(
            "CreateRoom",
            "application/protobuf",
            Some(&admin),
            create.encode_to_vec(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let room = lk::Room::decode(body.as_slice()).expect("protobuf room");
    assert_eq!(room.name, "proto-room");
    assert_eq!(room.max_participants, 3);
    assert_eq!(room.empty_timeout, 300, "LiveKit's default empty timeout");

    let (status, body) = send(
        &r,
        twirp("ListRooms", "application/json", Some(&admin), "{}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(json["rooms"][0]["name"], "proto-room");
    assert_eq!(json["rooms"][0]["maxParticipants"], 3);
}

#[tokio::test]
async fn twirp_errors_follow_the_twirp_spec() {
    let r = router(false);
    let (status, body) = send(&r, twirp("ListRooms", "application/json", None, "{}")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(json["code"], "unauthenticated");

    let admin = token(VideoGrant {
        room_list: true,
        ..Default::default()
    });
    let (status, body) = send(&r, twirp("Nope", "application/json", Some(&admin), "{}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&body).contains("bad_route"));

    let (status, _) = send(&r, twirp("ListRooms", "text/plain", Some(&admin), "{}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, body) = send(
        &r,
        twirp("ListRooms", "application/json", Some(&admin), "{not json"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("malformed"));

    let room_admin = token(VideoGrant {
        room_admin: true,
        room: Some("missing".to_owned()),
        ..Default::default()
    });
    let (status, body) = send(
        &r,
        twirp(
            "ListParticipants",
            "application/json",
            Some(&room_admin),
            r#"{"room":"missing"}"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&body).contains("not_found"));
}

#[tokio::test]
async fn oversized_api_bodies_are_refused() {
    let r = router(true);
    let admin = token(VideoGrant {
        room_create: true,
        ..Default::default()
    });
    let huge = vec![b' '; 10 * 1024 * 1024 + 1];
    let (status, _) = send(
        &r,
        twirp("CreateRoom", "application/json", Some(&admin), huge),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    let big_name = format!(r#"{{"room":"r","name":"{}"}}"#, "x".repeat(100_000));
    let req = Request::post("/api/token")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(big_name))
        .expect("req");
    let (status, _) = send(&r, req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

fn guest_request(room: &str, name: &str) -> Request<Body> {
    Request::post("/api/token")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            serde_json::json!({ "room": room, "name": name }).to_string(),
        ))
        .expect("req")
}

#[tokio::test]
async fn guest_tokens_join_only_their_room_and_can_be_switched_off() {
    let r = router(true);
    let (status, body) = send(&r, guest_request("standup", "Alice")).await;
    assert_eq!(status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
    let token = json["token"].as_str().expect("token");
    let keys = keys();
    let claims = keys.verify(token).expect("valid guest token");
    assert_eq!(claims.join_room(), Ok("standup"));
    assert_eq!(claims.name, "Alice");
    assert!(!claims.video.room_admin && !claims.video.room_create && !claims.video.room_list);

    for (room, name) in [("", "Alice"), ("standup", ""), ("standup", "a\u{7}b")] {
        let (status, _) = send(&r, guest_request(room, name)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{room:?} {name:?}");
    }

    let off = router(false);
    let (status, _) = send(&off, guest_request("standup", "Alice")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

fn post_json(path: &str, body: serde_json::Value) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("req")
}

async fn token_claims(
    r: &Router,
    body: serde_json::Value,
) -> (serde_json::Value, salon_signaling::auth::Claims) {
    let (status, bytes) = send(r, post_json("/api/token", body)).await;
    assert_eq!(status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    let keys = keys();
    let claims = keys
        .verify(json["token"].as_str().expect("token"))
        .expect("valid");
    (json, claims)
}

#[tokio::test]
async fn a_meeting_with_a_waiting_room_gives_hosts_admin_and_guests_nothing_until_admitted() {
    let r = router(true);
    let (status, bytes) = send(
        &r,
        post_json("/api/meetings", serde_json::json!({ "waitingRoom": true })),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let meeting: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    let room = meeting["room"].as_str().expect("room").to_owned();
    let host_key = meeting["hostKey"].as_str().expect("hostKey").to_owned();
    assert_eq!(host_key.len(), 32);

    let (json, host) = token_claims(
        &r,
        serde_json::json!({ "room": room, "name": "Hélène", "hostKey": host_key }),
    )
    .await;
    assert_eq!(json["role"], "host");
    assert_eq!(json["waiting"], false);
    assert!(host.video.room_admin, "a host administers the room");
    assert_eq!(host.join_room(), Ok(room.as_str()));
    assert!(host.video.can_publish() && host.video.can_subscribe() && !host.video.hidden);
    assert_eq!(
        host.attributes.get("salon.role").map(String::as_str),
        Some("host")
    );

    for key in [None, Some("0".repeat(32))] {
        let mut body = serde_json::json!({ "room": room, "name": "Gaston" });
        if let Some(k) = key {
            body["hostKey"] = k.into();
        }
        let (json, guest) = token_claims(&r, body).await;
        assert_eq!(json["role"], "guest");
        assert_eq!(json["waiting"], true);
        let v = &guest.video;
        assert!(!v.room_admin);
        assert!(v.hidden && !v.can_publish() && !v.can_subscribe() && !v.can_publish_data());
        assert!(!v.can_update_own_metadata());
    }

    // Without a waiting room, guests come straight in, and may raise a hand.
    let (_, bytes) = send(
        &r,
        post_json("/api/meetings", serde_json::json!({ "waitingRoom": false })),
    )
    .await;
    let open: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    let (json, guest) = token_claims(
        &r,
        serde_json::json!({ "room": open["room"], "name": "Gaston" }),
    )
    .await;
    assert_eq!(json["waiting"], false);
    assert!(
        guest.video.can_publish()
            && guest.video.can_update_own_metadata()
            && !guest.video.room_admin
    );

    // Guest mode off: no meetings either.
    let (status, _) = send(
        &router(false),
        post_json("/api/meetings", serde_json::json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}
