//! The LiveKit signal endpoint: `GET /rtc` upgraded to a WebSocket carrying
//! `SignalRequest`/`SignalResponse` protobufs, and `GET /rtc/validate`.

use crate::auth::{self, AuthError, Claims};
use crate::fleet::{FleetError, NodeSocket};
use crate::{AppState, Backend, Fleet};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, RawQuery, State};
use axum::http::header::USER_AGENT;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use livekit_protocol as lk;
use prost::Message as _;
use salon_common::{ParticipantIdentity, RoomName};
use salon_sfu::{Grants, JoinParams, Node};
use serde::Deserialize;
use std::time::Duration;

/// Query parameters livekit-client sends on `/rtc`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RtcParams {
    #[serde(default)]
    access_token: String,
    #[serde(default)]
    auto_subscribe: Option<String>,
    #[serde(default)]
    reconnect: Option<String>,
    #[serde(default)]
    client_protocol: Option<String>,
    /// The signal protocol's version.
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    browser: Option<String>,
}

/// A client that sends nothing for this long is gone (JoinResponse's
/// ping_timeout; clients ping every ping_interval).
const PING_TIMEOUT: Duration = Duration::from_secs(15);

/// How often a connected client gets a refreshed token, as LiveKit does.
const TOKEN_REFRESH_INTERVAL: Duration = Duration::from_secs(5 * 60);

fn check(state: &AppState, params: &RtcParams) -> Result<(Claims, RoomName), AuthError> {
    let claims = state.keys.verify(&params.access_token)?;
    let room = claims.join_room()?.to_owned();
    let room = crate::validate_room_name(&room).map_err(|e| AuthError::Invalid(e.to_owned()))?;
    Ok((claims, room))
}

fn unauthorized(err: AuthError) -> Response {
    (StatusCode::UNAUTHORIZED, err.to_string()).into_response()
}

/// The single-peer-connection protocol (`/rtc/v1`) is not served yet.
pub(crate) async fn v1_not_supported() -> Response {
    (
        StatusCode::NOT_FOUND,
        "the v1 signal path is not supported; use /rtc",
    )
        .into_response()
}

/// `GET /rtc/validate`: lets a client learn why a connection was refused.
pub(crate) async fn validate(
    State(state): State<AppState>,
    Query(params): Query<RtcParams>,
) -> Response {
    match check(&state, &params) {
        Ok(_) => (StatusCode::OK, "success").into_response(),
        Err(err) => unauthorized(err),
    }
}

pub(crate) async fn connect(
    State(state): State<AppState>,
    Query(mut params): Query<RtcParams>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    // livekit-client does not say which browser it runs in; LiveKit reads
    // the user agent, and so does Salon.
    let firefox_agent = headers
        .get(USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_firefox_agent);
    let mut query = query.unwrap_or_default();
    if params.browser.is_none() && firefox_agent {
        params.browser = Some("firefox".to_owned());
        // A node hears of it the same way when a replica relays the join.
        query.push_str("&browser=firefox");
    }
    // Refuse before upgrading, so a bad token never gets a WebSocket.
    let (claims, room) = match check(&state, &params) {
        Ok(ok) => ok,
        Err(err) => {
            tracing::info!(%err, "refused a signal connection");
            return unauthorized(err);
        }
    };
    let client = ClientOptions {
        auto_subscribe: params.auto_subscribe.as_deref() != Some("0"),
        reconnect: params.reconnect.as_deref() == Some("1"),
        // Unknown or absent: the protocol of clients that predate the field.
        client_protocol: params
            .client_protocol
            .as_deref()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0),
        sync_streams: sync_streams(&params),
    };
    let ws = ws
        .read_buffer_size(salon_common::SIGNAL_READ_BUFFER_BYTES)
        .max_message_size(salon_common::MAX_SIGNAL_MESSAGE_BYTES)
        .max_frame_size(salon_common::MAX_SIGNAL_MESSAGE_BYTES);
    match state.backend.clone() {
        Backend::Local(node) => {
            ws.on_upgrade(move |socket| session(state, node, socket, claims, room, client))
        }
        Backend::Fleet(fleet) => {
            // The node is found and connected before the client's upgrade,
            // so that a join that cannot be placed fails with a clear error.
            match open_on_node(&fleet, &room, &query).await {
                Ok(upstream) => ws.on_upgrade(move |socket| relay::run(state, socket, upstream)),
                Err(err) => {
                    tracing::warn!(%room, %err, "join could not be placed");
                    (StatusCode::SERVICE_UNAVAILABLE, err.to_string()).into_response()
                }
            }
        }
    }
}

/// The signal connection to the node hosting `room` (placed now if needed);
/// a node that refuses is left out and the room placed again, once.
async fn open_on_node(
    fleet: &Fleet,
    room: &RoomName,
    query: &str,
) -> Result<NodeSocket, FleetError> {
    let node = fleet.place(room, true).await?;
    match fleet.connect_signal(&node, query).await {
        Ok(socket) => Ok(socket),
        // That node is now left out: place the room again, once.
        Err(_) => {
            let node = fleet.place(room, true).await?;
            fleet.connect_signal(&node, query).await
        }
    }
}

mod relay;

/// What the client asked for in its connection's query.
struct ClientOptions {
    auto_subscribe: bool,
    reconnect: bool,
    client_protocol: i32,
    sync_streams: bool,
}

/// Firefox's user agent, but not Firefox for iOS (WebKit inside).
fn is_firefox_agent(agent: &str) -> bool {
    agent.contains("Firefox/") && !agent.contains("FxiOS")
}

/// Whether the client gets a participant's camera and microphone in one
/// stream, to be played in step (`JoinParams::sync_streams`): as LiveKit
/// decides, from signal protocol 10 on and not for Firefox.
fn sync_streams(params: &RtcParams) -> bool {
    let protocol: i32 = params
        .protocol
        .as_deref()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let firefox = params
        .browser
        .as_deref()
        .is_some_and(|b| b.eq_ignore_ascii_case("firefox"));
    protocol > 9 && !firefox
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wire {
    Binary,
    Json,
}

pub(crate) fn encode(wire: Wire, response: &lk::SignalResponse) -> Option<Message> {
    match wire {
        Wire::Binary => Some(Message::Binary(response.encode_to_vec().into())),
        Wire::Json => serde_json::to_string(response)
            .ok()
            .map(|s| Message::Text(s.into())),
    }
}

pub(crate) fn leave(
    reason: lk::DisconnectReason,
    action: lk::leave_request::Action,
) -> lk::SignalResponse {
    lk::SignalResponse {
        message: Some(salon_sfu::leave_message(reason, action)),
    }
}

/// Ends a connection that never became a session: a leave message, then close.
async fn refuse(
    socket: &mut WebSocket,
    reason: lk::DisconnectReason,
    action: lk::leave_request::Action,
) {
    if let Some(m) = encode(Wire::Binary, &leave(reason, action)) {
        let _ = socket.send(m).await;
    }
    let _ = socket.send(Message::Close(None)).await;
}

async fn session(
    state: AppState,
    node: Node,
    mut socket: WebSocket,
    mut claims: Claims,
    room: RoomName,
    client: ClientOptions,
) {
    if client.reconnect {
        // Sessions cannot be resumed yet: ask for a fresh join instead.
        refuse(
            &mut socket,
            lk::DisconnectReason::StateMismatch,
            lk::leave_request::Action::Reconnect,
        )
        .await;
        return;
    }
    let v = &claims.video;
    let params = JoinParams {
        room: room.clone(),
        identity: ParticipantIdentity::new(claims.sub.clone()),
        name: claims.name.clone(),
        metadata: claims.metadata.clone(),
        attributes: claims.attributes.clone(),
        grants: Grants {
            can_publish: v.can_publish(),
            can_subscribe: v.can_subscribe(),
            can_publish_data: v.can_publish_data(),
            can_update_metadata: v.can_update_own_metadata(),
            hidden: v.hidden,
        },
        auto_subscribe: client.auto_subscribe,
        client_protocol: client.client_protocol,
        sync_streams: client.sync_streams,
    };
    let mut node_session = match node.join(params).await {
        Ok(s) => s,
        Err(err) => {
            tracing::info!(%room, %err, "join refused");
            refuse(
                &mut socket,
                lk::DisconnectReason::JoinFailure,
                lk::leave_request::Action::Disconnect,
            )
            .await;
            return;
        }
    };
    tracing::info!(%room, participant = %node_session.sid, "participant joined");
    let mut wire = Wire::Binary;
    let deadline = tokio::time::sleep(PING_TIMEOUT);
    tokio::pin!(deadline);
    // The first refresh comes soon after joining, so that a client holding a
    // short-lived token can still reconnect later.
    let mut refresh = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        TOKEN_REFRESH_INTERVAL,
    );
    // livekit-client takes the first message to be the JoinResponse: no
    // refresh goes out before it, however long the join takes.
    let mut joined = false;
    let close_reason: &str = loop {
        tokio::select! {
            incoming = socket.recv() => {
                let Some(Ok(frame)) = incoming else { break "client closed" };
                deadline.as_mut().reset(tokio::time::Instant::now() + PING_TIMEOUT);
                let request = match frame {
                    Message::Binary(bytes) => {
                        wire = Wire::Binary;
                        lk::SignalRequest::decode(bytes.as_ref()).map_err(|_| ())
                    }
                    Message::Text(text) => {
                        wire = Wire::Json;
                        serde_json::from_str::<lk::SignalRequest>(text.as_str()).map_err(|_| ())
                    }
                    Message::Close(_) => break "client closed",
                    Message::Ping(_) | Message::Pong(_) => continue,
                };
                let Ok(request) = request else {
                    // One malformed message ends this session only.
                    let msg = leave(lk::DisconnectReason::StateMismatch, lk::leave_request::Action::Disconnect);
                    if let Some(m) = encode(wire, &msg) {
                        let _ = socket.send(m).await;
                    }
                    break "malformed signal message";
                };
                if node_session.to_node.send(request).await.is_err() {
                    break "session ended";
                }
            }
            outgoing = node_session.from_node.recv() => {
                let Some(response) = outgoing else { break "session ended" };
                if let Some(lk::signal_response::Message::Update(update)) = &response.message
                    && let Some(me) = update.participants.iter().find(|p| p.sid == node_session.sid.as_str())
                    && claims.follow(me)
                {
                    // The client gets a token that says so right after.
                    refresh.reset_immediately();
                }
                let is_leave = matches!(response.message, Some(lk::signal_response::Message::Leave(_)));
                joined |= matches!(response.message, Some(lk::signal_response::Message::Join(_)));
                if let Some(m) = encode(wire, &response)
                    && socket.send(m).await.is_err()
                {
                    break "send failed";
                }
                if is_leave {
                    break "server sent leave";
                }
            }
            _ = refresh.tick(), if joined => {
                match auth::refresh_token(&state.keys, &claims) {
                    Ok(token) => {
                        let msg = lk::SignalResponse {
                            message: Some(lk::signal_response::Message::RefreshToken(token)),
                        };
                        if let Some(m) = encode(wire, &msg)
                            && socket.send(m).await.is_err()
                        {
                            break "send failed";
                        }
                    }
                    Err(err) => tracing::warn!(%err, "could not refresh a token"),
                }
            }
            _ = &mut deadline => break "ping timeout",
        }
    };
    tracing::info!(%room, participant = %node_session.sid, reason = close_reason, "participant left");
    drop(node_session.to_node);
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: 1000,
            reason: "".into(),
        })))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_streams_for_protocol_10_on_and_not_for_firefox() {
        let params = |protocol: &str, browser: Option<&str>| RtcParams {
            protocol: Some(protocol.to_owned()),
            browser: browser.map(str::to_owned),
            ..Default::default()
        };
        assert!(sync_streams(&params("16", None)));
        assert!(sync_streams(&params("16", Some("Chrome"))));
        assert!(!sync_streams(&params("16", Some("firefox"))));
        assert!(!sync_streams(&params("16", Some("Firefox"))));
        assert!(!sync_streams(&params("9", None)));
        assert!(!sync_streams(&params("not a number", None)));
        assert!(!sync_streams(&RtcParams::default()));
    }

    #[test]
    fn firefox_is_told_by_its_user_agent() {
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
        let chromium = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";
        let ios = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/120.0 Mobile/15E148 Safari/605.1.15";
        assert!(is_firefox_agent(firefox));
        assert!(!is_firefox_agent(chromium));
        assert!(!is_firefox_agent(ios));
    }
}
