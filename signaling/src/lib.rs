//! Salon's signaling service: the LiveKit signal protocol at `/rtc`, the
//! Twirp RoomService, guest tokens for the web app, and the web app itself.

pub mod auth;
mod fleet;
pub mod meetings;
mod rtc;
mod twirp;

pub use fleet::{Fleet, FleetConfig};

use auth::{KeyStore, TokenSpec, VideoGrant};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use meetings::Role;
use salon_common::RoomName;
use salon_sfu::Node;
use salon_store::Store;
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

/// Where rooms live, as this service sees them.
#[derive(Clone)]
pub enum Backend {
    /// On a node in this process: `salon sfu`'s own endpoints, and tests.
    Local(Node),
    /// On the fleet's nodes, placed through the shared store; signal
    /// traffic and admin calls are relayed to the node hosting the room.
    Fleet(Arc<Fleet>),
}

#[derive(Clone)]
pub struct AppState {
    keys: Arc<KeyStore>,
    guest_key: Option<Arc<String>>,
    meetings: meetings::Meetings,
    backend: Backend,
    /// Turns true when the service stops: relayed connections then ask
    /// their clients to reconnect (through another replica).
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl AppState {
    /// Completes when the service stops; never if it is not told to.
    async fn stopping(&self) {
        let mut rx = self.shutdown.clone();
        if rx.wait_for(|stop| *stop).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
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

/// The whole HTTP surface, as one router that tests can call without a
/// server. `store` keeps the web app's meetings.
pub fn app(config: SignalingConfig, backend: Backend, store: Arc<dyn Store>) -> Router {
    app_with_shutdown(config, backend, store, tokio::sync::watch::channel(false).1)
}

/// [`app`], whose relayed connections end with a reconnect hint when
/// `shutdown` turns true.
pub fn app_with_shutdown(
    config: SignalingConfig,
    backend: Backend,
    store: Arc<dyn Store>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Router {
    let state = AppState {
        keys: Arc::new(config.keys),
        guest_key: config.guest_key.map(Arc::new),
        meetings: meetings::Meetings::new(store),
        backend,
        shutdown,
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
        .route(
            "/api/meetings",
            post(create_meeting).layer(DefaultBodyLimit::max(64 * 1024)),
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
#[serde(rename_all = "camelCase")]
struct GuestTokenRequest {
    room: String,
    name: String,
    #[serde(default)]
    host_key: Option<String>,
}

#[derive(Debug, Serialize)]
struct GuestTokenResponse {
    token: String,
    identity: String,
    role: &'static str,
    /// The token only lets its holder wait until a host admits them.
    waiting: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateMeetingRequest {
    #[serde(default)]
    waiting_room: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct CreateMeetingResponse {
    room: String,
    host_key: String,
}

/// The attribute that tells the web app who hosts. Participants cannot set
/// attributes under `salon.` themselves (the room refuses), so it can be trusted.
const ROLE_ATTRIBUTE: &str = "salon.role";

/// The key guest tokens are signed with, if guest mode is on.
fn guest_signing_key(state: &AppState) -> Result<(&str, &str), (StatusCode, &'static str)> {
    let key = state.guest_key.as_deref().ok_or((
        StatusCode::FORBIDDEN,
        "guest tokens are disabled on this server",
    ))?;
    let secret = state.keys.secret(key).ok_or((
        StatusCode::INTERNAL_SERVER_ERROR,
        "guest key is not configured",
    ))?;
    Ok((key, secret))
}

/// Makes a meeting for the web app's "new meeting" button (open guest
/// mode): a fresh room name and the host key that goes with it.
async fn create_meeting(
    State(state): State<AppState>,
    Json(req): Json<CreateMeetingRequest>,
) -> Response {
    if let Err(refused) = guest_signing_key(&state) {
        return refused.into_response();
    }
    match state.meetings.create(req.waiting_room).await {
        Ok(m) => Json(CreateMeetingResponse {
            room: m.room.to_string(),
            host_key: m.host_key,
        })
        .into_response(),
        Err(err) => (StatusCode::SERVICE_UNAVAILABLE, err.to_string()).into_response(),
    }
}

/// Issues a join token for the web app (open guest mode). What it grants
/// follows from the meeting: hosts may administer the room; guests of a
/// meeting with a waiting room get a hidden token that may do nothing until
/// a host admits them (RoomService UpdateParticipant).
async fn guest_token(
    State(state): State<AppState>,
    Json(req): Json<GuestTokenRequest>,
) -> Response {
    let (key, secret) = match guest_signing_key(&state) {
        Ok(k) => k,
        Err(refused) => return refused.into_response(),
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
    let role = match state.meetings.role(&room, req.host_key.as_deref()).await {
        Ok(role) => role,
        Err(err) => {
            tracing::warn!(%err, "meeting lookup failed");
            return (StatusCode::SERVICE_UNAVAILABLE, err.to_string()).into_response();
        }
    };
    let (identity, role_name, waiting) = match role {
        Role::Host => (salon_common::new_sid("host-"), "host", false),
        Role::Guest { waiting } => (salon_common::new_sid("guest-"), "guest", waiting),
    };
    let spec = TokenSpec {
        identity: identity.clone(),
        name: name.to_owned(),
        attributes: [(ROLE_ATTRIBUTE.to_owned(), role_name.to_owned())].into(),
        grant: VideoGrant {
            room: Some(room.to_string()),
            room_join: true,
            room_admin: role == Role::Host,
            can_publish: Some(!waiting),
            can_subscribe: Some(!waiting),
            can_publish_data: Some(!waiting),
            can_update_own_metadata: Some(!waiting),
            hidden: waiting,
            ..Default::default()
        },
        ..Default::default()
    };
    match auth::create_token(key, secret, spec) {
        Ok(token) => Json(GuestTokenResponse {
            token,
            identity,
            role: role_name,
            waiting,
        })
        .into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}
