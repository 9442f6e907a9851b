//! Salon's media node. `room`, `rewriter` and `negotiation` are sans-IO state
//! machines; `room_task`, `participant` and `forwarder` are the tokio shells
//! that own sockets, peer connections and the clock.

mod feedback;
mod forwarder;
pub mod negotiation;
mod node;
mod participant;
pub mod rewriter;
pub mod room;
mod room_task;
pub mod sdp;

pub use node::{JoinParams, Node, NodeConfig, NodeError, Session};
pub use room::{Grants, RoomConfig, RoomError};
pub use room_task::RoomSnapshot;
