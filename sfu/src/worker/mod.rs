//! Media workers: one thread per core, each with one UDP socket shared by
//! all the peer connections of the rooms pinned to it. The thread is a thin
//! shell around `WorkerCore` (sans-IO): it reads datagrams, commands and
//! the clock, and sends what the core queues. Forwarding a packet from a
//! publisher to its subscribers happens inside the core, with no task, lock
//! or channel between them.

mod core;
mod data;
mod demux;
mod tcp;
mod udp;

pub(crate) use self::core::{AUDIO_LEVEL_URI, Connection, TRANSPORT_CC_URI};
use crate::forwarder::{ForwarderCommand, ForwarderHandle, LevelSink};
use crate::metrics::{DelayRecorder, NodeMetrics};
use crate::node::NodeConfig;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::shared::TransportProtocol;
use salon_common::ParticipantSid;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};
use tokio::sync::{mpsc, oneshot};

/// A peer connection inside a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ConnId(u64);

/// A published track inside a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct TrackKey(u64);

/// What a connection tells the session that owns it.
pub(crate) enum ConnEvent {
    State(RTCPeerConnectionState),
    /// The connection failed inside webrtc-rs and was closed.
    Broken,
    /// A track arrived and is being forwarded (publisher connections).
    Track {
        cid: String,
        forwarder: ForwarderHandle,
    },
    /// The down track sent on `ssrc` paused for lack of bandwidth, or
    /// resumed (subscriber connections).
    StreamState {
        ssrc: u32,
        active: bool,
    },
    /// A data packet the client sent (publisher connections), undecoded.
    Data {
        kind: livekit_protocol::data_packet::Kind,
        payload: bytes::BytesMut,
    },
}

pub(crate) struct ConnNotice {
    pub(crate) conn: ConnId,
    pub(crate) event: ConnEvent,
}

/// What a new connection needs.
pub(crate) struct OpenConn {
    pub(crate) owner: ParticipantSid,
    pub(crate) notices: mpsc::UnboundedSender<ConnNotice>,
    pub(crate) role: ConnRole,
}

/// Which way media flows on a connection, as LiveKit's two transports have it.
pub(crate) enum ConnRole {
    /// The client sends; we receive. Its audio levels go to `levels`.
    Publisher { levels: LevelSink },
    /// We send; the subscriber's keyframe requests (the SSRC it lost) go
    /// to `keyframe_requests`.
    Subscriber {
        keyframe_requests: mpsc::UnboundedSender<u32>,
    },
}

type ConnFn = Box<dyn FnOnce(&mut Connection, Instant) + Send>;

pub(crate) enum WorkerCommand {
    Open {
        open: OpenConn,
        reply: oneshot::Sender<Result<ConnId, String>>,
    },
    /// Runs `f` on a connection: the control plane (descriptions,
    /// candidates, tracks) goes through here.
    With {
        conn: ConnId,
        f: ConnFn,
    },
    Forward {
        track: TrackKey,
        command: ForwarderCommand,
    },
    Close(ConnId),
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("media worker is gone")]
    Gone,
    #[error("peer connection is closed")]
    Closed,
    #[error("could not open a peer connection: {0}")]
    Open(String),
    #[error("cannot bind the media socket {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start a media worker thread: {0}")]
    Thread(std::io::Error),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
}

#[derive(Clone)]
pub(crate) struct WorkerHandle {
    tx: mpsc::UnboundedSender<WorkerCommand>,
}

impl WorkerHandle {
    pub(crate) fn send(&self, command: WorkerCommand) {
        // A worker only stops when the node does.
        let _ = self.tx.send(command);
    }

    pub(crate) async fn open(&self, open: OpenConn) -> Result<Conn, WorkerError> {
        let (reply, rx) = oneshot::channel();
        self.send(WorkerCommand::Open { open, reply });
        let id = rx
            .await
            .map_err(|_| WorkerError::Gone)?
            .map_err(WorkerError::Open)?;
        Ok(Conn {
            id,
            worker: self.clone(),
        })
    }
}

/// A session's hold on one of its connections. Dropping it closes the
/// connection.
pub(crate) struct Conn {
    pub(crate) id: ConnId,
    worker: WorkerHandle,
}

impl Conn {
    /// Runs `f` on the connection in its worker and returns what it returns.
    pub(crate) async fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, Instant) -> R + Send + 'static,
    ) -> Result<R, WorkerError> {
        let (tx, rx) = oneshot::channel();
        self.worker.send(WorkerCommand::With {
            conn: self.id,
            f: Box::new(move |conn, now| {
                let _ = tx.send(f(conn, now));
            }),
        });
        rx.await.map_err(|_| WorkerError::Closed)
    }
}

impl Conn {
    /// Runs `f` on the connection in its worker without waiting for it.
    pub(crate) fn post(&self, f: impl FnOnce(&mut Connection, Instant) + Send + 'static) {
        self.worker.send(WorkerCommand::With {
            conn: self.id,
            f: Box::new(f),
        });
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.worker.send(WorkerCommand::Close(self.id));
    }
}

/// The node's workers; rooms are spread over them.
pub(crate) struct Workers {
    workers: Vec<WorkerHandle>,
    next: std::sync::atomic::AtomicUsize,
    /// Each worker's UDP address, as its ICE candidates announce it.
    addrs: Vec<SocketAddr>,
    /// What the workers count: datagrams sent (the node's load as the
    /// registry reports it; added to once per send batch, not per packet)
    /// and the forwarding delay.
    metrics: NodeMetrics,
}

impl Workers {
    /// Starts `config.media_workers` workers (one per core when 0) on its
    /// address; the first binds `config.rtc_port` and the others the ports
    /// after it, or all pick a free port when it is 0.
    pub(crate) fn start(config: &NodeConfig, metrics: NodeMetrics) -> Result<Self, WorkerError> {
        let (ip, port, count) = (config.rtc_bind_ip, config.rtc_port, config.media_workers);
        let udp_gso = config.udp_gso;
        let count = if count == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            count
        };
        let mut workers = Vec::with_capacity(count);
        let mut addrs = Vec::with_capacity(count);
        for i in 0..count {
            let port = if port == 0 {
                0
            } else {
                port.saturating_add(i as u16)
            };
            let addr = SocketAddr::new(ip, port);
            let socket = std::net::UdpSocket::bind(addr)
                .and_then(|s| s.set_nonblocking(true).map(|()| s))
                .map_err(|source| WorkerError::Bind { addr, source })?;
            let udp_addr = socket
                .local_addr()
                .map_err(|source| WorkerError::Bind { addr, source })?;
            // ICE-TCP on the same port number; with free ports asked for,
            // any free one if that number is taken for TCP.
            let tcp = std::net::TcpListener::bind(udp_addr)
                .or_else(|err| {
                    if port == 0 {
                        std::net::TcpListener::bind(SocketAddr::new(ip, 0))
                    } else {
                        Err(err)
                    }
                })
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|source| WorkerError::Bind {
                    addr: udp_addr,
                    source,
                })?;
            let (tx, rx) = mpsc::unbounded_channel();
            let handle = WorkerHandle { tx };
            let own = handle.clone();
            let counters = metrics.clone();
            std::thread::Builder::new()
                .name(format!("salon-media-{i}"))
                .spawn(move || run(socket, tcp, own, rx, counters, udp_gso))
                .map_err(WorkerError::Thread)?;
            workers.push(handle);
            addrs.push(udp_addr);
        }
        Ok(Self {
            workers,
            next: std::sync::atomic::AtomicUsize::new(0),
            addrs,
            metrics,
        })
    }

    pub(crate) fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    pub(crate) fn metrics(&self) -> &NodeMetrics {
        &self.metrics
    }

    pub(crate) fn datagrams_sent(&self) -> u64 {
        self.metrics.datagrams_sent.get()
    }

    /// The worker for a new room: the next one in turn.
    pub(crate) fn pick(&self) -> WorkerHandle {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.workers[i % self.workers.len()].clone()
    }
}

/// Datagrams read in one go before the core's output is flushed.
const READ_BATCH: usize = 64;
/// Datagrams queued after which the worker sends before it reads on. With
/// GSO it reads what waits before it sends, so that the packets of a paced
/// burst, which arrive while the copies of the one before go out, leave
/// together (by GSO to each subscriber). This bounds what the first of
/// them waits for the others: about two packets' copies at 1 -> 150.
const READ_AHEAD: usize = 300;
/// Large enough for any datagram a peer may send on a typical path MTU.
const RECV_BUFFER: usize = 2048;

/// The worker thread: a single-threaded runtime around the core.
fn run(
    socket: std::net::UdpSocket,
    tcp: std::net::TcpListener,
    handle: WorkerHandle,
    commands: mpsc::UnboundedReceiver<WorkerCommand>,
    metrics: NodeMetrics,
    udp_gso: bool,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            tracing::error!(%err, "cannot start a media worker");
            return;
        }
    };
    runtime.block_on(async move {
        let sockets = tokio::net::UdpSocket::from_std(socket)
            .and_then(|udp| Ok((udp, tokio::net::TcpListener::from_std(tcp)?)));
        let (udp, tcp) = match sockets {
            Ok(s) => s,
            Err(err) => {
                tracing::error!(%err, "cannot use the media sockets");
                return;
            }
        };
        let addrs = udp.local_addr().and_then(|u| Ok((u, tcp.local_addr()?)));
        let (udp_addr, tcp_addr) = match addrs {
            Ok(a) => a,
            Err(err) => {
                tracing::error!(%err, "media socket has no address");
                return;
            }
        };
        tracing::info!(%udp_addr, %tcp_addr, udp_gso, "media worker listening (UDP, ICE-TCP)");
        let clock = (Instant::now(), SystemTime::now());
        let core =
            self::core::WorkerCore::new(udp_addr, Some(tcp_addr), handle.tx.downgrade(), clock);
        drop(handle);
        let batch = udp::SendBatch::new(udp_gso);
        shell(core, udp, tcp, commands, metrics, batch).await;
    });
}

async fn shell(
    mut core: self::core::WorkerCore,
    socket: tokio::net::UdpSocket,
    tcp: tokio::net::TcpListener,
    mut commands: mpsc::UnboundedReceiver<WorkerCommand>,
    metrics: NodeMetrics,
    mut batch: udp::SendBatch,
) {
    let sent = &metrics.datagrams_sent;
    let mut delays = DelayRecorder::new(&metrics.forward_delay, Instant::now());
    let mut receiver = udp::Receiver::new(&socket);
    let mut arrivals = udp::ArrivalClock::default();
    let mut links = tcp::TcpLinks::new();
    // When the datagrams whose output waits to be sent arrived.
    let mut causes: Vec<Instant> = Vec::with_capacity(READ_BATCH);
    let mut buf = vec![0u8; RECV_BUFFER];
    loop {
        let deadline = match (core.poll_timeout(), delays.due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            ready = socket.readable() => {
                if ready.is_err() {
                    continue;
                }
                let anchor = udp::Anchor::read();
                for _ in 0..READ_BATCH {
                    match receiver.try_recv(&socket, &mut buf) {
                        Ok(datagram) => {
                            let data = &buf[..datagram.len];
                            let now = Instant::now();
                            let received = anchor.received(now, datagram.at);
                            let arrived = arrivals.arrival(now, received);
                            let before = core.queued();
                            core.handle_datagram(now, arrived, TransportProtocol::UDP, datagram.from, data);
                            if core.queued() > before {
                                causes.push(received);
                            }
                            // Without GSO nothing is gained by waiting:
                            // each datagram's output goes before the next
                            // is read.
                            if !batch.gso_enabled() || core.queued() >= READ_AHEAD {
                                send_timed(&mut core, &socket, &links, &mut batch, sent, &mut delays, &mut causes);
                            }
                        }
                        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                        // ICMP errors for one peer surface here; they say nothing about others.
                        Err(err) => tracing::trace!(%err, "media socket read"),
                    }
                }
                send_timed(&mut core, &socket, &links, &mut batch, sent, &mut delays, &mut causes);
            }
            accepted = tcp.accept() => match accepted {
                Ok((stream, from)) => links.accept(stream, from),
                Err(err) => tracing::debug!(%err, "ICE-TCP accept"),
            },
            Some(input) = links.inputs.recv() => match input {
                tcp::TcpInput::Frame(from, frame, read_at) => {
                    let before = core.queued();
                    if !core.handle_datagram(Instant::now(), read_at, TransportProtocol::TCP, from, &frame) {
                        links.close(from);
                    }
                    if core.queued() > before {
                        causes.push(read_at);
                    }
                    send_timed(&mut core, &socket, &links, &mut batch, sent, &mut delays, &mut causes);
                }
                tcp::TcpInput::Closed(from) => links.close(from),
            },
            command = commands.recv() => match command {
                Some(command) => core.handle_command(Instant::now(), command),
                None => return,
            },
            () = sleep_until(deadline) => {
                let now = Instant::now();
                core.handle_timeout(now);
                delays.tick(now);
            }
        }
        send_queued(&mut core, &socket, &links, &mut batch, sent, false);
    }
}

/// Sends what the core has queued, and records the forwarding delay of
/// each datagram that caused some of it, from when it arrived (`causes`,
/// emptied) to now.
fn send_timed(
    core: &mut self::core::WorkerCore,
    socket: &tokio::net::UdpSocket,
    links: &tcp::TcpLinks,
    batch: &mut udp::SendBatch,
    sent: &prometheus::IntCounter,
    delays: &mut DelayRecorder,
    causes: &mut Vec<Instant>,
) {
    // The output of several datagrams may hold several for one peer.
    if send_queued(core, socket, links, batch, sent, causes.len() > 1) > 0 {
        let done = Instant::now();
        // From the kernel's time as it is: a stall the peer connection's
        // arrival is kept out of (over a second) is what the histogram's
        // top bucket is for.
        for received in causes.drain(..) {
            delays.record(done.saturating_duration_since(received), done);
        }
    }
    causes.clear();
}

fn send_queued(
    core: &mut self::core::WorkerCore,
    socket: &tokio::net::UdpSocket,
    links: &tcp::TcpLinks,
    batch: &mut udp::SendBatch,
    sent: &prometheus::IntCounter,
    coalesce: bool,
) -> u64 {
    let mut count = 0;
    while let Some(out) = core.poll_transmit() {
        count += 1;
        if out.protocol == TransportProtocol::TCP {
            links.send(out.to, out.datagram);
            continue;
        }
        if batch.push(out) {
            batch.flush(socket, coalesce, |datagram| core.recycle(datagram));
        }
    }
    batch.flush(socket, coalesce, |datagram| core.recycle(datagram));
    if count > 0 {
        sent.inc_by(count);
    }
    count
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}
