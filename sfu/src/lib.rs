//! Salon's media node. `room`, `fanout`, `rewriter`, `speakers`,
//! `negotiation`, `forwarder` and the media worker's core are sans-IO state
//! machines; `room_task`, `participant` and the worker thread are the shells
//! that own sockets, threads and the clock.

pub mod clock;
pub mod fanout;
pub mod feedback;
mod forwarder;
pub mod metrics;
pub mod negotiation;
mod node;
pub mod outbound;
mod participant;
pub mod probe;
pub mod quality;
pub mod red;
mod registry;
mod repair;
pub mod rewriter;
pub mod room;
mod room_task;
pub mod sdp;
pub mod speakers;
pub mod srtp;
pub mod trendline;
pub mod twcc;
pub mod vp8;
mod worker;

pub use node::{JoinParams, Node, NodeConfig, NodeError, Placement, Session};
pub use participant::setting_engine_builder;
pub use registry::{Registration, run_registry};
pub use room::{Grants, RoomConfig, RoomError};
pub use room_task::RoomSnapshot;
pub use worker::WorkerError;

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
