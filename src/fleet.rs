//! The server roles: `salon sfu` (a media node), `salon signaling` (a
//! replica in front of the nodes) and `salon dev` (one of each in one
//! process, on the in-memory store, bound to 127.0.0.1).

use crate::{KeyArgs, load_keys};
use salon_sfu::{Node, NodeConfig, Placement, Registration, run_registry};
use salon_signaling::auth::KeyStore;
use salon_signaling::{Backend, Fleet, FleetConfig, SignalingConfig, app_with_shutdown};
use salon_store::{LoadMeasure, MemoryStore, NodeId, RedisStore, Store};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, oneshot, watch};

/// A node writes its registry entry this often...
const HEARTBEAT: Duration = Duration::from_secs(2);
/// ...and the entry is gone this long after the last write.
const NODE_TTL: Duration = Duration::from_secs(5);
/// A room's placement outlives its node's last renewal by this much: long
/// enough to ride out a short Redis outage, short enough that a room of a
/// dead node is free again soon even if nobody notices the death sooner.
const ROOM_LEASE: Duration = Duration::from_secs(10);

#[derive(clap::Args)]
pub(crate) struct DevArgs {
    /// HTTP/WebSocket port (LiveKit's default is 7880).
    #[arg(long, default_value_t = 7880)]
    port: u16,
    /// Directory of the built web app.
    #[arg(long, default_value = "web/dist")]
    web_dir: PathBuf,
    /// Turn off the open guest mode in which anyone who opens the page can
    /// get a join token for any room.
    #[arg(long)]
    no_guest_tokens: bool,
    #[command(flatten)]
    media: MediaArgs,
    #[command(flatten)]
    keys: KeyArgs,
}

#[derive(clap::Args)]
struct MediaArgs {
    /// UDP port of the first media worker (the others use the next ports);
    /// 0 picks free ports.
    #[arg(long, default_value_t = 0)]
    rtc_port: u16,
    /// Media worker threads, each with one UDP port; 0 means one per core.
    #[arg(long, default_value_t = 0)]
    media_workers: usize,
    /// Serve Prometheus metrics at /metrics on this port (LiveKit uses
    /// 6789; 0 picks a free one), on the address the node's other
    /// endpoints use. Off unless given.
    #[arg(long)]
    prometheus_port: Option<u16>,
    /// Send the datagrams that wait for one peer as one UDP GSO message,
    /// which the kernel segments: less CPU per packet. A path that refuses
    /// GSO turns it off by itself.
    #[arg(
        long,
        env = "SALON_UDP_GSO",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    udp_gso: bool,
}

#[derive(clap::Args)]
struct StoreArgs {
    /// The fleet's shared state.
    #[arg(
        long,
        env = "SALON_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    redis: String,
    /// Prefix of the keys Salon writes, so that fleets can share one Redis.
    #[arg(long, default_value = "salon")]
    redis_prefix: String,
}

#[derive(clap::Args)]
pub(crate) struct SignalingArgs {
    /// Address of the HTTP API, signal endpoint and web app.
    #[arg(long, default_value = "127.0.0.1:7880")]
    listen: SocketAddr,
    /// Directory of the built web app.
    #[arg(long, default_value = "web/dist")]
    web_dir: PathBuf,
    /// Open guest mode: anyone who opens the web app may make meetings and
    /// get join tokens (signed with the first key).
    #[arg(long)]
    guest_tokens: bool,
    /// What "least loaded" means when a room is placed on a node:
    /// participants, rooms, tracks, cpu or packets.
    #[arg(long, default_value = "participants")]
    placement: LoadMeasure,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    keys: KeyArgs,
}

#[derive(clap::Args)]
pub(crate) struct SfuArgs {
    /// Address of the node's internal endpoints, which signaling replicas
    /// relay signal traffic and admin calls to.
    #[arg(long, default_value = "127.0.0.1:7881")]
    listen: SocketAddr,
    /// URL replicas reach those endpoints at; `http://<listen>` by default.
    #[arg(long)]
    internal_url: Option<String>,
    /// Address the media sockets bind to and announce.
    #[arg(long, default_value = "127.0.0.1")]
    rtc_ip: IpAddr,
    #[command(flatten)]
    media: MediaArgs,
    /// Most participants the node takes; 0 means no limit.
    #[arg(long, default_value_t = 0)]
    max_participants: u32,
    /// After SIGTERM, how long meetings may go on before the node stops.
    #[arg(long, default_value = "30m", value_parser = salon_common::parse_duration)]
    drain_grace: Duration,
    /// The node's name in the registry; a fresh one by default.
    #[arg(long)]
    node_id: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    keys: KeyArgs,
}

fn fleet_keys(args: &KeyArgs) -> Result<KeyStore, String> {
    let keys = load_keys(args)?;
    if keys.is_empty() {
        return Err("no API keys: give --keys, --key-file or LIVEKIT_KEYS".into());
    }
    Ok(KeyStore::new(keys))
}

/// A node serving its internal endpoints and writing its registry entry.
struct RunningNode {
    node: Node,
    internal_url: String,
    wake: Arc<Notify>,
    stop: oneshot::Sender<()>,
    registry: tokio::task::JoinHandle<()>,
}

/// Where a node serves its endpoints.
struct NodeEndpoints {
    /// The internal endpoints (signal relay, admin calls).
    listen: SocketAddr,
    /// How replicas reach them; `http://<listen>` by default.
    internal_url: Option<String>,
    /// `/metrics`, if asked for.
    prometheus: Option<SocketAddr>,
}

async fn start_node(
    store: Arc<dyn Store>,
    keys: KeyStore,
    config: NodeConfig,
    endpoints: NodeEndpoints,
    max_participants: u32,
    id: NodeId,
) -> Result<RunningNode, String> {
    let NodeEndpoints {
        listen,
        internal_url,
        prometheus,
    } = endpoints;
    let node = Node::start(config).map_err(|e| e.to_string())?;
    if let Some(addr) = prometheus {
        let bound = serve_metrics(node.clone(), addr).await?;
        println!("Prometheus metrics at http://{bound}/metrics");
    }
    node.join_fleet(Placement {
        store: store.clone(),
        node: id.clone(),
        lease: ROOM_LEASE,
    });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let internal_url = internal_url.unwrap_or_else(|| format!("http://{bound}"));
    // The node serves the same endpoints as a replica, for its own rooms
    // only, and checks the same tokens.
    let router = salon_signaling::app(
        SignalingConfig {
            keys,
            guest_key: None,
            web_dir: None,
        },
        Backend::Local(node.clone()),
        store.clone(),
    );
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, router).await {
            tracing::error!(%err, "internal endpoints stopped");
        }
    });
    let wake = Arc::new(Notify::new());
    let (stop, stopped) = oneshot::channel();
    let registry = tokio::spawn(run_registry(
        node.clone(),
        store,
        Registration {
            id,
            internal_url: internal_url.clone(),
            media_addrs: Vec::new(),
            max_participants,
            interval: HEARTBEAT,
            ttl: NODE_TTL,
            lease: ROOM_LEASE,
        },
        wake.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    Ok(RunningNode {
        node,
        internal_url,
        wake,
        stop,
        registry,
    })
}

/// Serves the node's `/metrics` on `addr`; returns the address bound.
/// Unauthenticated, as Prometheus scrapes it (and as LiveKit's is): it
/// tells counts and timings, nothing of who is in which room.
async fn serve_metrics(node: Node, addr: SocketAddr) -> Result<SocketAddr, String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let router = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .with_state(node);
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, router).await {
            tracing::error!(%err, "metrics endpoint stopped");
        }
    });
    Ok(bound)
}

async fn metrics(
    axum::extract::State(node): axum::extract::State<Node>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match node.metrics().await {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(err) => {
            tracing::warn!(%err, "metrics");
            (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                err.to_string(),
            )
                .into_response()
        }
    }
}

impl RunningNode {
    /// Removes the registry entry and releases the node's rooms.
    async fn leave_fleet(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(3), self.registry).await;
    }
}

/// SIGTERM or Ctrl-C.
async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub(crate) async fn sfu(args: SfuArgs) -> Result<(), String> {
    let store: Arc<dyn Store> = Arc::new(
        RedisStore::connect(&args.store.redis, &args.store.redis_prefix)
            .map_err(|e| e.to_string())?,
    );
    let id = NodeId::new(args.node_id.unwrap_or_else(|| salon_common::new_sid("SN_")));
    let running = start_node(
        store,
        fleet_keys(&args.keys)?,
        NodeConfig {
            rtc_bind_ip: args.rtc_ip,
            rtc_port: args.media.rtc_port,
            media_workers: args.media.media_workers,
            udp_gso: args.media.udp_gso,
        },
        NodeEndpoints {
            listen: args.listen,
            internal_url: args.internal_url,
            prometheus: args
                .media
                .prometheus_port
                .map(|port| SocketAddr::new(args.listen.ip(), port)),
        },
        args.max_participants,
        id.clone(),
    )
    .await?;
    let media: Vec<String> = running
        .node
        .media_addrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    println!(
        "Salon media node {id}: internal endpoints at {}, media on {}",
        running.internal_url,
        media.join(", ")
    );
    terminated().await;
    running.node.drain();
    running.wake.notify_one();
    tracing::info!(grace = ?args.drain_grace, "draining: no new rooms; meetings go on until they end or the grace period runs out");
    let grace = tokio::time::sleep(args.drain_grace);
    tokio::pin!(grace);
    let second = terminated();
    tokio::pin!(second);
    loop {
        tokio::select! {
            () = &mut grace => {
                tracing::info!("grace period over; stopping");
                break;
            }
            () = &mut second => {
                tracing::info!("second signal; stopping now");
                break;
            }
            () = tokio::time::sleep(Duration::from_secs(1)) => {
                if running.node.load().await.participants == 0 {
                    tracing::info!("no meeting left; stopping");
                    break;
                }
            }
        }
    }
    running.leave_fleet().await;
    Ok(())
}

pub(crate) async fn signaling(args: SignalingArgs) -> Result<(), String> {
    let store: Arc<dyn Store> = Arc::new(
        RedisStore::connect(&args.store.redis, &args.store.redis_prefix)
            .map_err(|e| e.to_string())?,
    );
    let keys = fleet_keys(&args.keys)?;
    let guest_key = if args.guest_tokens {
        Some(first_key(&keys).ok_or("no key to sign guest tokens")?)
    } else {
        None
    };
    let fleet = Arc::new(Fleet::new(
        store.clone(),
        FleetConfig {
            measure: args.placement,
            lease: ROOM_LEASE,
        },
    ));
    let config = SignalingConfig {
        keys,
        guest_key,
        web_dir: web_dir(&args.web_dir),
    };
    serve_public(config, fleet, store, args.listen, |bound| {
        println!("Salon signaling replica at http://{bound}/ (LiveKit URL ws://{bound})");
    })
    .await
}

/// The first key by name: the one guest tokens are signed with.
fn first_key(keys: &KeyStore) -> Option<String> {
    let mut names = keys.names();
    names.sort();
    names.into_iter().next()
}

fn web_dir(dir: &std::path::Path) -> Option<PathBuf> {
    if dir.join("index.html").is_file() {
        Some(dir.to_owned())
    } else {
        tracing::warn!(dir = %dir.display(), "web app not built; run `npm --prefix web run build` to serve it");
        None
    }
}

/// Serves a replica's endpoints until SIGTERM; then relayed clients are
/// asked to reconnect (elsewhere) and the listener closes.
async fn serve_public(
    config: SignalingConfig,
    fleet: Arc<Fleet>,
    store: Arc<dyn Store>,
    listen: SocketAddr,
    announce: impl FnOnce(SocketAddr),
) -> Result<(), String> {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let router = app_with_shutdown(config, Backend::Fleet(fleet), store, shutdown_rx);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    announce(listener.local_addr().map_err(|e| e.to_string())?);
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            terminated().await;
            tracing::info!("stopping: clients are asked to reconnect elsewhere");
            let _ = shutdown_tx.send(true);
        })
        .await
        .map_err(|e| e.to_string())?;
    // Relayed WebSockets run outside the server's connection tracking: give
    // them a moment to send their reconnect hint before the process ends.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

pub(crate) async fn dev(args: DevArgs) -> Result<(), String> {
    // Dev mode never listens beyond this machine.
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut keys = load_keys(&args.keys)?;
    if keys.is_empty() {
        keys.insert("devkey".to_owned(), "secret".to_owned());
    }
    let keys = KeyStore::new(keys);
    let guest_key = if args.no_guest_tokens {
        None
    } else {
        first_key(&keys)
    };
    // A fleet of one in this process: the same placement and relay as a
    // fleet, on the in-memory store.
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let running = start_node(
        store.clone(),
        keys.clone(),
        NodeConfig {
            rtc_bind_ip: ip,
            rtc_port: args.media.rtc_port,
            media_workers: args.media.media_workers,
            udp_gso: args.media.udp_gso,
        },
        NodeEndpoints {
            listen: SocketAddr::new(ip, 0),
            internal_url: None,
            prometheus: args
                .media
                .prometheus_port
                .map(|port| SocketAddr::new(ip, port)),
        },
        0,
        NodeId::new("dev"),
    )
    .await?;
    // Placement needs the node's first heartbeat.
    for _ in 0..50 {
        if !store.nodes().await.map_err(|e| e.to_string())?.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fleet = Arc::new(Fleet::new(
        store.clone(),
        FleetConfig {
            measure: LoadMeasure::default(),
            lease: ROOM_LEASE,
        },
    ));
    let config = SignalingConfig {
        keys,
        guest_key,
        web_dir: web_dir(&args.web_dir),
    };
    let served = serve_public(
        config,
        fleet,
        store,
        SocketAddr::new(ip, args.port),
        |bound| {
            println!("Salon is running. Open http://{bound}/ in your browser.");
            println!("LiveKit URL: ws://{bound}  API key: devkey  API secret: secret");
        },
    )
    .await;
    running.leave_fleet().await;
    served
}
