//! A signaling replica's view of the SFU fleet: which node hosts a room
//! (placing it on the least loaded live node when nobody does), and the
//! internal connections that carry a participant's signal traffic and the
//! admin calls to that node.
//!
//! Nodes serve the same `/rtc` and Twirp endpoints as this service, on
//! their internal address, and check the same tokens: a replica relays a
//! client's WebSocket frames and admin requests as they are, and never
//! needs to trust or be trusted by a node beyond what the token grants.

use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use salon_common::RoomName;
use salon_store::{LoadMeasure, NodeId, NodeInfo, Store, StoreError, least_loaded};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A node that refused a connection is left out of placement this long,
/// so that clients of a node that died move on before its entry expires.
const UNREACHABLE_FOR: Duration = Duration::from_secs(10);

/// Internal calls that take longer fail: a hung node must not hang clients.
const NODE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest admin response a node may send back.
const MAX_NODE_RESPONSE: usize = 16 * 1024 * 1024;

pub(crate) type NodeSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[derive(Clone, Copy, Debug)]
pub struct FleetConfig {
    /// What "least loaded" means when placing a new room.
    pub measure: LoadMeasure,
    /// How long a placement made here lasts before its node renews it.
    pub lease: Duration,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum FleetError {
    #[error("requested room does not exist")]
    RoomNotFound,
    #[error("no media node can take the room now")]
    NoNode,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("media node {0} is unreachable: {1}")]
    Unreachable(NodeId, String),
}

pub struct Fleet {
    store: Arc<dyn Store>,
    config: FleetConfig,
    http: Client<HttpConnector, Full<Bytes>>,
    unreachable: Mutex<HashMap<NodeId, Instant>>,
}

impl Fleet {
    pub fn new(store: Arc<dyn Store>, config: FleetConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        connector.set_nodelay(true);
        Self {
            store,
            config,
            http: Client::builder(TokioExecutor::new()).build(connector),
            unreachable: Mutex::new(HashMap::new()),
        }
    }

    fn unreachable(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Instant>> {
        // A panic while holding the lock leaves the map consistent.
        let mut map = self
            .unreachable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|_, since| since.elapsed() < UNREACHABLE_FOR);
        map
    }

    /// Leaves `node` out of placement for a while: it refused a connection.
    fn mark_unreachable(&self, node: &NodeId) {
        tracing::warn!(%node, "media node unreachable; placing its rooms elsewhere");
        self.unreachable().insert(node.clone(), Instant::now());
    }

    /// The live nodes this replica can reach.
    pub(crate) async fn nodes(&self) -> Result<Vec<NodeInfo>, FleetError> {
        let mut nodes = self.store.nodes().await?;
        let unreachable = self.unreachable();
        nodes.retain(|n| !unreachable.contains_key(&n.id));
        Ok(nodes)
    }

    /// The node hosting `room`. With `create`, a room nobody hosts, or whose
    /// node is gone, is placed on the least loaded node that takes rooms;
    /// the claim is atomic, so replicas racing for one room agree.
    pub(crate) async fn place(
        &self,
        room: &RoomName,
        create: bool,
    ) -> Result<NodeInfo, FleetError> {
        for _ in 0..3 {
            let nodes = self.nodes().await?;
            let holder = self.store.room_owner(room).await?;
            if let Some(id) = &holder
                && let Some(node) = nodes.iter().find(|n| &n.id == id)
            {
                return Ok(node.clone());
            }
            if !create {
                return Err(FleetError::RoomNotFound);
            }
            let target = least_loaded(&nodes, self.config.measure).ok_or(FleetError::NoNode)?;
            // A holder that is not among the live nodes is gone: take over
            // from it, unless another replica already did.
            let claimed = self
                .store
                .claim_room(room, &target.id, holder.as_ref(), self.config.lease)
                .await?;
            if claimed == target.id {
                if let Some(old) = holder {
                    tracing::info!(%room, from = %old, to = %target.id, "room moved to a live node");
                }
                return Ok(target.clone());
            }
            // Someone placed it first: read again and follow them.
        }
        Err(FleetError::NoNode)
    }

    /// Opens a participant's signal connection on `node`, with the query
    /// (token, options) the client sent. A node that cannot be reached is
    /// left out of placement for a while.
    pub(crate) async fn connect_signal(
        &self,
        node: &NodeInfo,
        query: &str,
    ) -> Result<NodeSocket, FleetError> {
        let base = node
            .internal_url
            .replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1);
        let url = format!("{}/rtc?{query}", base.trim_end_matches('/'));
        let config = WebSocketConfig::default()
            .read_buffer_size(salon_common::SIGNAL_READ_BUFFER_BYTES)
            .max_message_size(Some(salon_common::MAX_SIGNAL_MESSAGE_BYTES))
            .max_frame_size(Some(salon_common::MAX_SIGNAL_MESSAGE_BYTES));
        let connect = tokio_tungstenite::connect_async_with_config(url, Some(config), true);
        let failure = match tokio::time::timeout(NODE_TIMEOUT, connect).await {
            Ok(Ok((socket, _))) => return Ok(socket),
            Ok(Err(err)) => err.to_string(),
            Err(_) => "timed out".into(),
        };
        self.mark_unreachable(&node.id);
        Err(FleetError::Unreachable(node.id.clone(), failure))
    }

    /// Sends an admin request to `node` as the client made it (same path,
    /// body, content type and token) and returns the node's answer. A node
    /// that cannot be reached is left out of placement for a while.
    pub(crate) async fn forward(
        &self,
        node: &NodeInfo,
        path: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<(StatusCode, HeaderValue, Bytes), FleetError> {
        let unreachable = |e: String| FleetError::Unreachable(node.id.clone(), e);
        let url = format!("{}{path}", node.internal_url.trim_end_matches('/'));
        let mut request = Request::post(url);
        for name in [header::CONTENT_TYPE, header::AUTHORIZATION] {
            if let Some(value) = headers.get(&name) {
                request = request.header(name, value);
            }
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| unreachable(e.to_string()))?;
        let call = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let status = response.status();
            let content_type = response
                .headers()
                .get(header::CONTENT_TYPE)
                .cloned()
                .unwrap_or(HeaderValue::from_static("application/json"));
            let body = Limited::new(response.into_body(), MAX_NODE_RESPONSE)
                .collect()
                .await
                .map_err(|e| unreachable(e.to_string()))?
                .to_bytes();
            Ok((status, content_type, body))
        };
        let answer = tokio::time::timeout(NODE_TIMEOUT, call)
            .await
            .map_err(|_| unreachable("timed out".into()))
            .and_then(|answer| answer);
        if answer.is_err() {
            self.mark_unreachable(&node.id);
        }
        answer
    }
}
