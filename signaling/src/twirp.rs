//! LiveKit's RoomService over Twirp: `POST /twirp/livekit.RoomService/<Method>`
//! with protobuf or JSON bodies, answered in the same encoding.

use crate::auth::{AuthError, Claims};
use crate::fleet::FleetError;
use crate::{AppState, Backend, Fleet};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use livekit_protocol as lk;
use prost::Message;
use salon_common::{ParticipantIdentity, RoomName, TrackSid};
use salon_sfu::{Node, NodeError, RoomConfig, RoomError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// A Twirp error: its code string and HTTP status follow the Twirp spec.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TwirpError {
    #[error("{0}")]
    Unauthenticated(AuthError),
    #[error("{0}")]
    PermissionDenied(AuthError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Malformed(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    BadRoute(String),
    #[error("{0}")]
    Unavailable(String),
}

impl TwirpError {
    fn code(&self) -> (&'static str, StatusCode) {
        match self {
            Self::Unauthenticated(_) => ("unauthenticated", StatusCode::UNAUTHORIZED),
            Self::PermissionDenied(_) => ("permission_denied", StatusCode::FORBIDDEN),
            Self::NotFound(_) => ("not_found", StatusCode::NOT_FOUND),
            Self::Malformed(_) => ("malformed", StatusCode::BAD_REQUEST),
            Self::InvalidArgument(_) => ("invalid_argument", StatusCode::BAD_REQUEST),
            Self::BadRoute(_) => ("bad_route", StatusCode::NOT_FOUND),
            Self::Unavailable(_) => ("unavailable", StatusCode::SERVICE_UNAVAILABLE),
        }
    }
}

impl IntoResponse for TwirpError {
    fn into_response(self) -> Response {
        let (code, status) = self.code();
        let body = serde_json::json!({ "code": code, "msg": self.to_string() });
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

impl From<NodeError> for TwirpError {
    fn from(err: NodeError) -> Self {
        match err {
            NodeError::RoomNotFound => Self::NotFound(err.to_string()),
            NodeError::Room(RoomError::ParticipantNotFound | RoomError::TrackNotFound) => {
                Self::NotFound(err.to_string())
            }
            NodeError::Room(_) => Self::InvalidArgument(err.to_string()),
            NodeError::RoomClosed
            | NodeError::Draining
            | NodeError::PlacedElsewhere(_)
            | NodeError::Store(_) => Self::Unavailable(err.to_string()),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

fn encoding(headers: &HeaderMap) -> Result<Encoding, TwirpError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let ct = ct.split(';').next().unwrap_or("").trim();
    match ct {
        "application/protobuf" | "application/x-protobuf" => Ok(Encoding::Protobuf),
        "application/json" => Ok(Encoding::Json),
        _ => Err(TwirpError::BadRoute(format!(
            "unexpected Content-Type: {ct:?}"
        ))),
    }
}

fn decode<T: Message + Default + DeserializeOwned>(
    enc: Encoding,
    body: &[u8],
) -> Result<T, TwirpError> {
    match enc {
        Encoding::Protobuf => {
            T::decode(body).map_err(|e| TwirpError::Malformed(format!("bad protobuf body: {e}")))
        }
        Encoding::Json => {
            let body = if body.is_empty() {
                b"{}".as_slice()
            } else {
                body
            };
            serde_json::from_slice(body)
                .map_err(|e| TwirpError::Malformed(format!("bad JSON body: {e}")))
        }
    }
}

fn encode<T: Message + Serialize>(enc: Encoding, value: &T) -> Response {
    match enc {
        Encoding::Protobuf => (
            [(header::CONTENT_TYPE, "application/protobuf")],
            value.encode_to_vec(),
        )
            .into_response(),
        Encoding::Json => match serde_json::to_vec(value) {
            Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
            Err(e) => TwirpError::Unavailable(format!("encoding failed: {e}")).into_response(),
        },
    }
}

fn bearer(headers: &HeaderMap) -> &str {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .unwrap_or("")
}

/// The grant a call needs.
enum Need<'a> {
    Create,
    List,
    Admin { room: &'a str },
}

fn authorize(claims: &Claims, need: Need<'_>) -> Result<(), TwirpError> {
    let denied = |g| Err(TwirpError::PermissionDenied(AuthError::MissingGrant(g)));
    match need {
        Need::Create if !claims.video.room_create => denied("roomCreate"),
        Need::List if !claims.video.room_list => denied("roomList"),
        Need::Admin { room } => {
            if !claims.video.room_admin {
                return denied("roomAdmin");
            }
            match claims.video.room.as_deref() {
                Some(r) if r == room => Ok(()),
                _ => Err(TwirpError::PermissionDenied(AuthError::WrongRoom)),
            }
        }
        _ => Ok(()),
    }
}

/// Largest SendData payload: what one reliable data channel message carries
/// for livekit-client (it splits larger texts into streams itself).
const MAX_DATA_BYTES: usize = 64 * 1024;

fn room_name(name: &str) -> Result<RoomName, TwirpError> {
    crate::validate_room_name(name).map_err(|e| TwirpError::InvalidArgument(e.to_owned()))
}

/// A RoomService call, decoded.
enum Call {
    // Boxed: it is the one large request, with its egress options.
    CreateRoom(Box<lk::CreateRoomRequest>),
    ListRooms(lk::ListRoomsRequest),
    DeleteRoom(lk::DeleteRoomRequest),
    ListParticipants(lk::ListParticipantsRequest),
    GetParticipant(lk::RoomParticipantIdentity),
    RemoveParticipant(lk::RoomParticipantIdentity),
    MutePublishedTrack(lk::MuteRoomTrackRequest),
    UpdateParticipant(lk::UpdateParticipantRequest),
    SendData(lk::SendDataRequest),
}

/// Where a call goes: to the node hosting one room, or to every node.
enum Route {
    Room { name: RoomName, create: bool },
    All,
}

impl Call {
    fn decode(method: &str, enc: Encoding, body: &[u8]) -> Result<Self, TwirpError> {
        Ok(match method {
            "CreateRoom" => Self::CreateRoom(Box::new(decode(enc, body)?)),
            "ListRooms" => Self::ListRooms(decode(enc, body)?),
            "DeleteRoom" => Self::DeleteRoom(decode(enc, body)?),
            "ListParticipants" => Self::ListParticipants(decode(enc, body)?),
            "GetParticipant" => Self::GetParticipant(decode(enc, body)?),
            "RemoveParticipant" => Self::RemoveParticipant(decode(enc, body)?),
            "MutePublishedTrack" => Self::MutePublishedTrack(decode(enc, body)?),
            "UpdateParticipant" => Self::UpdateParticipant(decode(enc, body)?),
            "SendData" => Self::SendData(decode(enc, body)?),
            other => {
                return Err(TwirpError::BadRoute(format!(
                    "no such method: livekit.RoomService/{other}"
                )));
            }
        })
    }

    /// Checks the caller's grant and the request's limits, before anything
    /// runs anywhere; answers where the call goes.
    fn check(&self, claims: &Claims) -> Result<Route, TwirpError> {
        let room = |name: &str, create| -> Result<Route, TwirpError> {
            Ok(Route::Room {
                name: room_name(name)?,
                create,
            })
        };
        let admin = |name: &str| -> Result<Route, TwirpError> {
            authorize(claims, Need::Admin { room: name })?;
            room(name, false)
        };
        match self {
            Self::CreateRoom(req) => {
                authorize(claims, Need::Create)?;
                if req.metadata.len() > salon_common::MAX_METADATA_BYTES {
                    return Err(TwirpError::InvalidArgument("metadata too large".to_owned()));
                }
                room(&req.name, true)
            }
            Self::ListRooms(_) => {
                authorize(claims, Need::List)?;
                Ok(Route::All)
            }
            Self::DeleteRoom(req) => {
                authorize(claims, Need::Create)?;
                room(&req.room, false)
            }
            Self::ListParticipants(req) => admin(&req.room),
            Self::GetParticipant(req) | Self::RemoveParticipant(req) => admin(&req.room),
            Self::MutePublishedTrack(req) => admin(&req.room),
            Self::UpdateParticipant(req) => admin(&req.room),
            Self::SendData(req) => {
                let route = admin(&req.room)?;
                if req.data.len() > MAX_DATA_BYTES {
                    return Err(TwirpError::InvalidArgument("data too large".to_owned()));
                }
                Ok(route)
            }
        }
    }
}

pub(crate) async fn room_service(
    State(state): State<AppState>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, TwirpError> {
    let enc = encoding(&headers)?;
    let claims = state
        .keys
        .verify(bearer(&headers))
        .map_err(TwirpError::Unauthenticated)?;
    let call = Call::decode(&method, enc, &body)?;
    let route = call.check(&claims)?;
    match &state.backend {
        Backend::Local(node) => local_call(node, call, enc).await,
        Backend::Fleet(fleet) => fleet_call(fleet, route, &method, enc, &headers, body).await,
    }
}

/// Relays a call to the node(s) it concerns; each checks the token again.
async fn fleet_call(
    fleet: &Fleet,
    route: Route,
    method: &str,
    enc: Encoding,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, TwirpError> {
    let path = format!("/twirp/livekit.RoomService/{method}");
    match route {
        Route::Room { name, create } => {
            let node = fleet.place(&name, create).await?;
            let (status, content_type, body) = fleet.forward(&node, &path, headers, body).await?;
            Ok((status, [(header::CONTENT_TYPE, content_type)], body).into_response())
        }
        Route::All => {
            // Every node answers for its own rooms; a node that cannot is
            // left out rather than failing the whole list.
            let mut rooms = Vec::new();
            for node in fleet.nodes().await? {
                match fleet.forward(&node, &path, headers, body.clone()).await {
                    Ok((StatusCode::OK, _, answer)) => {
                        let list: lk::ListRoomsResponse = decode(enc, &answer)?;
                        rooms.extend(list.rooms);
                    }
                    Ok((status, _, _)) => {
                        tracing::warn!(node = %node.id, %status, "a node refused ListRooms")
                    }
                    Err(err) => tracing::warn!(%err, "a node did not answer ListRooms"),
                }
            }
            rooms.sort_by(|a, b| a.name.cmp(&b.name));
            rooms.dedup_by(|a, b| a.name == b.name);
            Ok(encode(enc, &lk::ListRoomsResponse { rooms }))
        }
    }
}

impl From<FleetError> for TwirpError {
    fn from(err: FleetError) -> Self {
        match err {
            FleetError::RoomNotFound => Self::NotFound(err.to_string()),
            FleetError::NoNode | FleetError::Store(_) | FleetError::Unreachable(..) => {
                Self::Unavailable(err.to_string())
            }
        }
    }
}

/// Runs a checked call on this process's node.
async fn local_call(node: &Node, call: Call, enc: Encoding) -> Result<Response, TwirpError> {
    match call {
        Call::CreateRoom(req) => {
            let req = *req;
            let mut config = RoomConfig {
                max_participants: req.max_participants,
                metadata: req.metadata,
                ..RoomConfig::default()
            };
            if req.empty_timeout > 0 {
                config.empty_timeout = Duration::from_secs(req.empty_timeout.into());
            }
            let room = node.create_room(room_name(&req.name)?, config).await?;
            Ok(encode(enc, &room))
        }
        Call::ListRooms(req) => {
            let names: Vec<RoomName> = req.names.into_iter().map(RoomName::new).collect();
            let rooms = node.list_rooms(&names).await;
            Ok(encode(enc, &lk::ListRoomsResponse { rooms }))
        }
        Call::DeleteRoom(req) => {
            node.delete_room(&room_name(&req.room)?).await?;
            Ok(encode(enc, &lk::DeleteRoomResponse {}))
        }
        Call::ListParticipants(req) => {
            let participants = node.list_participants(&room_name(&req.room)?).await?;
            Ok(encode(enc, &lk::ListParticipantsResponse { participants }))
        }
        Call::GetParticipant(req) => {
            let p = node
                .get_participant(
                    &room_name(&req.room)?,
                    &ParticipantIdentity::new(req.identity),
                )
                .await?;
            Ok(encode(enc, &p))
        }
        Call::RemoveParticipant(req) => {
            node.remove_participant(
                &room_name(&req.room)?,
                ParticipantIdentity::new(req.identity),
            )
            .await?;
            Ok(encode(enc, &lk::RemoveParticipantResponse {}))
        }
        Call::MutePublishedTrack(req) => {
            let track = node
                .mute_published_track(
                    &room_name(&req.room)?,
                    ParticipantIdentity::new(req.identity),
                    TrackSid::new(req.track_sid),
                    req.muted,
                )
                .await?;
            Ok(encode(
                enc,
                &lk::MuteRoomTrackResponse { track: Some(track) },
            ))
        }
        Call::UpdateParticipant(req) => {
            let room = room_name(&req.room)?;
            let p = node.update_participant(&room, req).await?;
            Ok(encode(enc, &p))
        }
        Call::SendData(req) => {
            let room = room_name(&req.room)?;
            node.send_data(&room, req).await?;
            Ok(encode(enc, &lk::SendDataResponse {}))
        }
    }
}
