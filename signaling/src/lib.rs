//! Salon's signaling service: the LiveKit signal protocol at `/rtc`, the
//! Twirp RoomService, guest tokens for the web app, and the web app itself.

pub mod auth;
mod rtc;
mod twirp;

use auth::{KeyStore, TokenSpec, VideoGrant};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use salon_common::RoomName;
use salon_sfu::Node;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

/// LiveKit's limit on an API request body.
const MAX_API_BODY_BYTES: usize = 10 * 1024 * 1024;

/// How the service is set up.
#[derive(Clone, Debug)]
pub struct SignalingConfig {
    pub keys: KeyStore,
    /// Key used to sign guest tokens; guest tokens are off when `None`.
    pub guest_key: Option<String>,
    /// Where the built web app lives; not served when `None`.
    pub web_dir: Option<PathBuf>,
}

#[derive(Clone)]
pub struct AppState {
    keys: Arc<KeyStore>,
    guest_key: Option<Arc<String>>,
    node: Node,
}

/// Room names are shown and used in URLs: keep them short and printable.
pub(crate) fn validate_room_name(name: &str) -> Result<RoomName, &'static str> {
    if name.is_empty() {
        return Err("room name is empty");
    }
    if name.len() > salon_common::MAX_NAME_BYTES {
        return Err("room name is too long");
    }
    if name.chars().any(char::is_control) {
        return Err("room name has control characters");
    }
    Ok(RoomName::new(name))
}

/// The whole HTTP surface, as one router that tests can call without a server.
pub fn app(config: SignalingConfig, node: Node) -> Router {
    let state = AppState {
        keys: Arc::new(config.keys),
        guest_key: config.guest_key.map(Arc::new),
        node,
    };
    let mut router = Router::new()
        .route("/rtc", get(rtc::connect))
        .route("/rtc/validate", get(rtc::validate))
        // livekit-client tries the single-connection `/rtc/v1` first and falls
        // back to `/rtc` when its validate URL answers 404.
        .route("/rtc/v1", get(rtc::v1_not_supported))
        .route("/rtc/v1/validate", get(rtc::v1_not_supported))
        .route(
            "/twirp/livekit.RoomService/{method}",
            post(twirp::room_service).layer(DefaultBodyLimit::max(MAX_API_BODY_BYTES)),
        )
        .route(
            "/api/token",
            post(guest_token).layer(DefaultBodyLimit::max(64 * 1024)),
        )
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state)
        // LiveKit apps run on their own origins and call the server from the
        // browser. Credentials travel in tokens, never cookies, so any origin may call.
        .layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(tower_http::cors::Any)
                .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
                .allow_headers(tower_http::cors::Any),
        );
    if let Some(dir) = config.web_dir {
        let index = dir.join("index.html");
        router = router.fallback_service(
            tower_http::services::ServeDir::new(dir)
                .fallback(tower_http::services::ServeFile::new(index)),
        );
    }
    router
}

#[derive(Debug, Deserialize)]
struct GuestTokenRequest {
    room: String,
    name: String,
}

#[derive(Debug, Serialize)]
struct GuestTokenResponse {
    token: String,
    identity: String,
}

/// Issues a join token for the web app's join form (open guest mode).
async fn guest_token(
    State(state): State<AppState>,
    Json(req): Json<GuestTokenRequest>,
) -> Response {
    let Some(key) = state.guest_key.as_deref() else {
        return (
            StatusCode::FORBIDDEN,
            "guest tokens are disabled on this server",
        )
            .into_response();
    };
    let Some(secret) = state.keys.secret(key) else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "guest key is not configured",
        )
            .into_response();
    };
    let room = match validate_room_name(req.room.trim()) {
        Ok(room) => room,
        Err(msg) => return (StatusCode::BAD_REQUEST, msg).into_response(),
    };
    let name = req.name.trim();
    if name.is_empty()
        || name.len() > salon_common::MAX_NAME_BYTES
        || name.chars().any(char::is_control)
    {
        return (
            StatusCode::BAD_REQUEST,
            "display name must be 1 to 256 bytes of text",
        )
            .into_response();
    }
    let identity = salon_common::new_sid("guest-");
    let spec = TokenSpec {
        identity: identity.clone(),
        name: name.to_owned(),
        grant: VideoGrant {
            room: Some(room.to_string()),
            room_join: true,
            can_publish: Some(true),
            can_subscribe: Some(true),
            can_publish_data: Some(true),
            ..Default::default()
        },
        ..Default::default()
    };
    match auth::create_token(key, secret, spec) {
        Ok(token) => Json(GuestTokenResponse { token, identity }).into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}
