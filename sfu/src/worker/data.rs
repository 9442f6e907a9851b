//! LiveKit's data channels. A client sends its data packets on the two
//! channels it opens on its publisher connection; the server opens the same
//! two on the subscriber connection and sends the room's packets there.

use bytes::BytesMut;
use livekit_protocol::data_packet::Kind;
use rtc::data_channel::{RTCDataChannelId, RTCDataChannelInit, RTCDataChannelState};
use rtc::peer_connection::RTCPeerConnection;
use std::collections::VecDeque;
use std::time::Instant;

/// The labels livekit-client gives its channels and looks for on ours.
pub(crate) const RELIABLE_LABEL: &str = "_reliable";
pub(crate) const LOSSY_LABEL: &str = "_lossy";

/// Packets kept for a channel that is not open yet: the first messages of
/// a meeting (a chat line sent as someone joins) must not be lost to the
/// handshake.
const MAX_EARLY_PACKETS: usize = 256;
/// And at most this many bytes of them: a client that never opens the
/// channels (it refused the data section) must not hold much.
const MAX_EARLY_BYTES: usize = 1024 * 1024;

/// Bytes a channel may hold unsent before further packets to that client
/// are dropped: a client that stops reading must not grow the server's
/// memory without bound. LiveKit drops for slow data subscribers too.
const MAX_BACKLOG_BYTES: usize = 4 * 1024 * 1024;

/// Which of a publisher connection's channels a packet came on.
pub(crate) fn kind_of(pc: &mut RTCPeerConnection, id: RTCDataChannelId) -> Option<Kind> {
    let dc = pc.data_channel(id)?;
    match dc.label() {
        RELIABLE_LABEL => Some(Kind::Reliable),
        LOSSY_LABEL => Some(Kind::Lossy),
        _ => None,
    }
}

/// The server's two channels on a subscriber connection.
pub(crate) struct DataOut {
    reliable: RTCDataChannelId,
    lossy: RTCDataChannelId,
    early: VecDeque<(Kind, BytesMut)>,
    early_bytes: usize,
}

impl DataOut {
    /// Creates both channels; call before the connection's first offer so
    /// that it negotiates the data section.
    pub(crate) fn open(pc: &mut RTCPeerConnection) -> Result<Self, rtc::shared::error::Error> {
        let reliable = pc.create_data_channel(RELIABLE_LABEL, None)?.id();
        let lossy = pc
            .create_data_channel(
                LOSSY_LABEL,
                Some(RTCDataChannelInit {
                    ordered: false,
                    max_retransmits: Some(0),
                    ..Default::default()
                }),
            )?
            .id();
        Ok(Self {
            reliable,
            lossy,
            early: VecDeque::new(),
            early_bytes: 0,
        })
    }

    fn channel(&self, kind: Kind) -> RTCDataChannelId {
        match kind {
            Kind::Reliable => self.reliable,
            Kind::Lossy => self.lossy,
        }
    }

    /// Sends `payload` (an encoded `DataPacket`) to the client, or keeps it
    /// until the channel opens.
    pub(crate) fn send(
        &mut self,
        pc: &mut RTCPeerConnection,
        now: Instant,
        kind: Kind,
        payload: &[u8],
    ) {
        let Some(mut dc) = pc.data_channel(self.channel(kind)) else {
            return;
        };
        match dc.ready_state() {
            RTCDataChannelState::Open => {}
            RTCDataChannelState::Connecting => {
                if self.early.len() < MAX_EARLY_PACKETS
                    && self.early_bytes + payload.len() <= MAX_EARLY_BYTES
                {
                    self.early_bytes += payload.len();
                    self.early.push_back((kind, BytesMut::from(payload)));
                } else {
                    tracing::debug!("data channel not open yet and its queue is full; dropped");
                }
                return;
            }
            _ => return,
        }
        if dc.outstanding_bytes() > MAX_BACKLOG_BYTES {
            tracing::debug!("a client is not reading its data channel; dropped a packet");
            return;
        }
        if let Err(err) = dc.send(now, BytesMut::from(payload)) {
            tracing::debug!(%err, "data packet not sent");
        }
    }

    /// A channel opened: what waited for it goes out.
    pub(crate) fn opened(&mut self, pc: &mut RTCPeerConnection, now: Instant) {
        let waiting = std::mem::take(&mut self.early);
        self.early_bytes = 0;
        for (kind, payload) in waiting {
            self.send(pc, now, kind, &payload);
        }
    }
}
