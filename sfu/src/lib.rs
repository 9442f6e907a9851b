//! Salon's media node. `room`, `rewriter` and `negotiation` are sans-IO state
//! machines; `room_task`, `participant` and `forwarder` are the tokio shells
//! that own sockets, peer connections and the clock.

pub mod fanout;
pub mod feedback;
mod forwarder;
pub mod negotiation;
mod node;
mod participant;
pub mod rewriter;
pub mod room;
mod room_task;
pub mod sdp;
pub mod speakers;

pub use node::{JoinParams, Node, NodeConfig, NodeError, Session};
pub use participant::{apply_local, setting_engine};
pub use room::{Grants, RoomConfig, RoomError};
pub use room_task::RoomSnapshot;

use livekit_protocol as lk;

/// The signal message that ends a session: LiveKit's `LeaveRequest`, which
/// tells the client why and whether to come back.
pub fn leave_message(
    reason: lk::DisconnectReason,
    action: lk::leave_request::Action,
) -> lk::signal_response::Message {
    lk::signal_response::Message::Leave(lk::LeaveRequest {
        can_reconnect: action != lk::leave_request::Action::Disconnect,
        reason: reason as i32,
        action: action as i32,
        regions: None,
    })
}
