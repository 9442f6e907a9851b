//! ICE-TCP (RFC 6544) for clients whose network lets no UDP through, as
//! many administrations' networks do. Each worker accepts TCP on the same
//! port number as its UDP socket; the client's connections carry the same
//! datagrams as UDP would, each framed by a 16-bit length (RFC 4571).
//! Frames go to the core like UDP datagrams, keyed by the connection's
//! remote address; a connection whose first frame names no connection of
//! ours is closed.

use bytes::BytesMut;
use rtc::shared::tcp_framing::TcpFrameDecoder;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

/// Most ICE-TCP connections one worker keeps open.
const MAX_LINKS: usize = 4096;
/// Datagrams queued per connection for writing; beyond it they are dropped,
/// as a congested path would drop them.
const WRITE_QUEUE: usize = 512;
/// Frames read from all connections and not yet taken by the core.
const READ_QUEUE: usize = 1024;
/// A connection silent this long is closed, so that idle connections cannot
/// use up `MAX_LINKS`. Browsers send ICE consent checks every few seconds.
const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub(super) enum TcpInput {
    /// A frame, and when the read that completed it returned: its arrival,
    /// as the kernel's time is a UDP datagram's (a frame may wait in the
    /// queue behind a worker busy with a batch of UDP).
    Frame(SocketAddr, Vec<u8>, Instant),
    Closed(SocketAddr),
}

struct Link {
    writer: mpsc::Sender<BytesMut>,
    reader: AbortHandle,
}

pub(super) struct TcpLinks {
    links: HashMap<SocketAddr, Link>,
    inputs_tx: mpsc::Sender<TcpInput>,
    pub(super) inputs: mpsc::Receiver<TcpInput>,
}

impl TcpLinks {
    pub(super) fn new() -> Self {
        let (inputs_tx, inputs) = mpsc::channel(READ_QUEUE);
        Self {
            links: HashMap::new(),
            inputs_tx,
            inputs,
        }
    }

    pub(super) fn accept(&mut self, stream: TcpStream, from: SocketAddr) {
        if self.links.len() >= MAX_LINKS {
            tracing::debug!("too many ICE-TCP connections; refusing one");
            return;
        }
        // Media is latency-bound: no Nagle delay on small packets.
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let (writer, queue) = mpsc::channel(WRITE_QUEUE);
        let reader = tokio::spawn(read_frames(read, from, self.inputs_tx.clone())).abort_handle();
        tokio::spawn(write_frames(write, queue));
        if let Some(old) = self.links.insert(from, Link { writer, reader }) {
            old.reader.abort();
        }
    }

    pub(super) fn send(&self, to: SocketAddr, datagram: BytesMut) {
        if let Some(link) = self.links.get(&to) {
            let _ = link.writer.try_send(datagram);
        }
    }

    /// Closes a connection: its reader stops and its writer finishes.
    pub(super) fn close(&mut self, peer: SocketAddr) {
        if let Some(link) = self.links.remove(&peer) {
            link.reader.abort();
        }
    }
}

async fn read_frames(mut read: OwnedReadHalf, from: SocketAddr, inputs: mpsc::Sender<TcpInput>) {
    let mut decoder = TcpFrameDecoder::new();
    let mut buf = vec![0u8; 4096];
    loop {
        match tokio::time::timeout(IDLE_TIMEOUT, read.read(&mut buf)).await {
            Err(_) | Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                let read_at = Instant::now();
                decoder.extend_from_slice(&buf[..n]);
                while let Some(frame) = decoder.next_packet() {
                    if inputs
                        .send(TcpInput::Frame(from, frame, read_at))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    }
    let _ = inputs.send(TcpInput::Closed(from)).await;
}

async fn write_frames(mut write: OwnedWriteHalf, mut queue: mpsc::Receiver<BytesMut>) {
    let mut framed = Vec::with_capacity(2048);
    while let Some(datagram) = queue.recv().await {
        let Ok(len) = u16::try_from(datagram.len()) else {
            continue;
        };
        framed.clear();
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&datagram);
        if write.write_all(&framed).await.is_err() {
            return;
        }
    }
    let _ = write.shutdown().await;
}
