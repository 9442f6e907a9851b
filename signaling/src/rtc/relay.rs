//! A participant's signal connection relayed between the client and the
//! node hosting its room. Frames pass unchanged both ways; the node runs
//! the session (join, pings, token refresh), so this only copies and tells
//! the client to come back when the node goes away.

use super::{Wire, encode, leave};
use crate::AppState;
use crate::fleet::NodeSocket;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::{SinkExt, StreamExt};
use livekit_protocol as lk;
use tokio_tungstenite::tungstenite::Message as NodeMessage;

/// How a relayed connection ended.
enum End {
    /// The client left: the node is told by closing its side.
    Client,
    /// The node closed the session itself, after its own leave message.
    Node,
    /// The node vanished (crash, network): the client is asked to rejoin,
    /// which places its room on a live node.
    NodeLost,
    /// This replica stops: the client is asked to rejoin through another.
    Shutdown,
}

pub(super) async fn run(state: AppState, mut client: WebSocket, mut node: NodeSocket) {
    let mut wire = Wire::Binary;
    let stopping = state.stopping();
    tokio::pin!(stopping);
    let end = loop {
        tokio::select! {
            () = &mut stopping => break End::Shutdown,
            incoming = client.recv() => {
                let frame = match incoming {
                    Some(Ok(Message::Binary(b))) => {
                        wire = Wire::Binary;
                        NodeMessage::Binary(b)
                    }
                    Some(Ok(Message::Text(t))) => {
                        wire = Wire::Json;
                        NodeMessage::Text(t.as_str().into())
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break End::Client,
                };
                if node.send(frame).await.is_err() {
                    break End::NodeLost;
                }
            }
            outgoing = node.next() => {
                let frame = match outgoing {
                    Some(Ok(NodeMessage::Binary(b))) => Message::Binary(b),
                    Some(Ok(NodeMessage::Text(t))) => Message::Text(t.as_str().into()),
                    Some(Ok(NodeMessage::Close(_))) => break End::Node,
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => break End::NodeLost,
                };
                if client.send(frame).await.is_err() {
                    break End::Client;
                }
            }
        }
    };
    match end {
        End::Client => {
            let _ = node.close(None).await;
        }
        End::Node => {}
        End::NodeLost | End::Shutdown => {
            if matches!(end, End::NodeLost) {
                tracing::warn!("media node connection lost; asking the client to rejoin");
            }
            let _ = node.close(None).await;
            let msg = leave(
                lk::DisconnectReason::ServerShutdown,
                lk::leave_request::Action::Reconnect,
            );
            if let Some(m) = encode(wire, &msg) {
                let _ = client.send(m).await;
            }
        }
    }
    let _ = client
        .send(Message::Close(Some(CloseFrame {
            code: 1000,
            reason: "".into(),
        })))
        .await;
}
