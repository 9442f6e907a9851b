//! The worker's UDP socket: reads that say when the kernel received each
//! datagram (`Receiver`), and batched sends. A forwarded packet becomes one datagram per
//! subscriber, all queued at once; `sendmmsg` hands them to the kernel in
//! one system call instead of one each, which saves the per-call entry,
//! socket lookup and locking that perf showed next to the copies
//! themselves.
//!
//! UDP GSO (`UDP_SEGMENT`) is no help here: it splits one buffer into
//! equal segments for one destination, while a fan-out sends to as many
//! destinations as there are subscribers.

use super::core::Transmit;
use bytes::BytesMut;
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage, recvmsg,
    sendmmsg, setsockopt, sockopt,
};
use nix::sys::time::TimeSpec;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::Interest;

/// Most datagrams per system call. A 1 → 150 fan-out takes five calls
/// instead of 150; beyond this the gain per call is small and the stack
/// arrays built for each call grow.
pub(super) const BATCH: usize = 32;

/// A datagram read: its length in the buffer, its source, and when the
/// kernel received it (None if the kernel did not say).
pub(super) struct Received {
    pub(super) len: usize,
    pub(super) from: SocketAddr,
    pub(super) at: Option<SystemTime>,
}

/// Reads datagrams with the kernel's receive time (`SO_TIMESTAMPNS`), so
/// that the forwarding delay counts the time a datagram waited in the
/// socket while the worker was busy or not scheduled.
pub(super) struct Receiver {
    /// Room for the timestamp's control message, allocated once.
    control: Vec<u8>,
}

impl Receiver {
    /// Asks the kernel for receive times on `socket`; if it refuses, reads
    /// go on without them.
    pub(super) fn new(socket: &tokio::net::UdpSocket) -> Self {
        if let Err(err) = setsockopt(socket, sockopt::ReceiveTimestampns, &true) {
            tracing::debug!(%err, "no receive timestamps on the media socket");
        }
        Self {
            control: nix::cmsg_space!(TimeSpec),
        }
    }

    /// The next datagram into `buf`, or `WouldBlock`.
    pub(super) fn try_recv(
        &mut self,
        socket: &tokio::net::UdpSocket,
        buf: &mut [u8],
    ) -> io::Result<Received> {
        let fd = socket.as_raw_fd();
        let control = &mut self.control;
        socket.try_io(Interest::READABLE, || {
            let mut iov = [IoSliceMut::new(buf)];
            let msg = recvmsg::<SockaddrStorage>(
                fd,
                &mut iov,
                Some(&mut control[..]),
                MsgFlags::empty(),
            )?;
            let from = msg
                .address
                .as_ref()
                .and_then(socket_addr)
                .ok_or_else(|| io::Error::other("a datagram without a source address"))?;
            let at = msg.cmsgs().ok().and_then(|mut cmsgs| {
                cmsgs.find_map(|cmsg| match cmsg {
                    ControlMessageOwned::ScmTimestampns(ts) => since_epoch(ts),
                    _ => None,
                })
            });
            Ok(Received {
                len: msg.bytes,
                from,
                at,
            })
        })
    }
}

fn socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    addr.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

fn since_epoch(ts: TimeSpec) -> Option<SystemTime> {
    let secs = u64::try_from(ts.tv_sec()).ok()?;
    let nanos = u32::try_from(ts.tv_nsec()).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// Turns the kernel's receive times (wall clock) into the worker's
/// monotonic clock. Peer connections take a datagram's time as its arrival:
/// it is what the transport-wide feedback tells a publisher's browser, and
/// what the receiver reports' jitter is made of. Timed at the read, every
/// moment the worker waited for a core would show as a queue on the
/// publisher's uplink, and the browser's estimate would fall for it (on a
/// busy two-core machine, often); the kernel's time is the packet's own.
#[derive(Debug, Default)]
pub(super) struct ArrivalClock {
    last: Option<Instant>,
}

/// The two clocks read together (`Anchor::read`), once per wake-up: their
/// offset holds until the wall clock is stepped.
#[derive(Debug, Clone, Copy)]
pub(super) struct Anchor {
    instant: Instant,
    wall: SystemTime,
}

impl Anchor {
    /// The wall clock read between two reads of the monotonic one, matched
    /// with their midpoint: a thread descheduled between the reads moves
    /// the match by half that time at most, not all of it.
    pub(super) fn read() -> Self {
        let before = Instant::now();
        let wall = SystemTime::now();
        let after = Instant::now();
        Self {
            instant: before + after.saturating_duration_since(before) / 2,
            wall,
        }
    }

    /// When a datagram read at `now` was received, on the monotonic clock:
    /// the kernel's time `at`, no later than the read, or the read itself
    /// where the kernel gave no time. As it is, however long ago: what the
    /// forwarding delay counts from (`ArrivalClock` bounds it for peers).
    pub(super) fn received(&self, now: Instant, at: Option<SystemTime>) -> Instant {
        at.and_then(|at| match at.duration_since(self.wall) {
            Ok(later) => self.instant.checked_add(later),
            Err(earlier) => self.instant.checked_sub(earlier.duration()),
        })
        .map_or(now, |received| received.min(now))
    }
}

/// A datagram said to have waited in the socket longer than this did not:
/// the wall clock was stepped meanwhile. Its arrival is its read.
const MAX_SOCKET_WAIT: Duration = Duration::from_secs(1);

impl ArrivalClock {
    /// When a datagram `received` (`Anchor::received`) and read at `now`
    /// arrived: never before the previous datagram's arrival, and never
    /// `MAX_SOCKET_WAIT` before `now`, so that a step of the wall clock
    /// cannot send time backwards or far into the past.
    pub(super) fn arrival(&mut self, now: Instant, received: Instant) -> Instant {
        let mut arrived = if now.saturating_duration_since(received) <= MAX_SOCKET_WAIT {
            received
        } else {
            now
        };
        // The last arrival was no later than the last `now`, so no later
        // than this one.
        if let Some(last) = self.last {
            arrived = arrived.max(last);
        }
        self.last = Some(arrived);
        arrived
    }
}

/// Datagrams waiting for the next `flush`, with the kernel's message
/// headers, allocated once.
pub(super) struct SendBatch {
    queued: Vec<Transmit>,
    headers: MultiHeaders<SockaddrStorage>,
}

impl SendBatch {
    pub(super) fn new() -> Self {
        Self {
            queued: Vec::with_capacity(BATCH),
            headers: MultiHeaders::preallocate(BATCH, None),
        }
    }

    /// Queues a datagram; true when the batch is full and must be flushed.
    pub(super) fn push(&mut self, transmit: Transmit) -> bool {
        self.queued.push(transmit);
        self.queued.len() >= BATCH
    }

    /// Sends what is queued and gives each buffer to `recycle`. A datagram
    /// the kernel refuses is dropped, as the network could drop it; a full
    /// send buffer drops the rest of the batch.
    pub(super) fn flush(
        &mut self,
        socket: &tokio::net::UdpSocket,
        mut recycle: impl FnMut(BytesMut),
    ) {
        let mut start = 0;
        while start < self.queued.len() {
            let chunk = &self.queued[start..self.queued.len().min(start + BATCH)];
            match send_chunk(socket, &mut self.headers, chunk) {
                Ok(sent) => start += sent.max(1),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    tracing::trace!("media socket full; dropped {}", self.queued.len() - start);
                    break;
                }
                // The error belongs to the first datagram of the chunk
                // (sendmmsg reports one only when it sent nothing).
                Err(err) => {
                    tracing::trace!(%err, "media socket write");
                    start += 1;
                }
            }
        }
        for transmit in self.queued.drain(..) {
            recycle(transmit.datagram);
        }
    }
}

/// One `sendmmsg` call for up to `BATCH` datagrams; how many the kernel took.
fn send_chunk(
    socket: &tokio::net::UdpSocket,
    headers: &mut MultiHeaders<SockaddrStorage>,
    chunk: &[Transmit],
) -> io::Result<usize> {
    // On the stack, so that a send allocates nothing.
    let iovs: [[IoSlice<'_>; 1]; BATCH] = std::array::from_fn(|i| {
        [IoSlice::new(
            chunk.get(i).map_or(&[][..], |t| &t.datagram[..]),
        )]
    });
    let addrs: [Option<SockaddrStorage>; BATCH] =
        std::array::from_fn(|i| chunk.get(i).map(|t| SockaddrStorage::from(t.to)));
    let n = chunk.len();
    let fd = socket.as_raw_fd();
    socket.try_io(Interest::WRITABLE, || {
        let results = sendmmsg(
            fd,
            headers,
            &iovs[..n],
            &addrs[..n],
            [] as [ControlMessage<'_>; 0],
            MsgFlags::empty(),
        )?;
        Ok(results.count())
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rtc::shared::TransportProtocol;

    /// A runtime, and a loopback socket on it that its reactor already
    /// knows to be writable (it learns so on its first turn).
    fn loopback_sender() -> (tokio::runtime::Runtime, tokio::net::UdpSocket) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("runtime");
        let sender = runtime.block_on(async {
            let sender = tokio::net::UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("bind");
            sender.writable().await.expect("writable");
            sender
        });
        (runtime, sender)
    }

    /// More datagrams than one call takes, to two receivers: each gets its
    /// own, whole and in order, and every buffer comes back.
    #[test]
    fn sends_every_datagram_across_calls_and_returns_the_buffers() {
        let (runtime, sender) = loopback_sender();
        runtime.block_on(async {
            let receivers = [
                std::net::UdpSocket::bind("127.0.0.1:0").expect("bind"),
                std::net::UdpSocket::bind("127.0.0.1:0").expect("bind"),
            ];
            let total = BATCH * 2 + 5;
            let mut batch = SendBatch::new();
            let mut returned = Vec::new();
            for i in 0..total {
                let to = receivers[i % 2].local_addr().expect("address");
                let datagram = BytesMut::from(&format!("datagram {i}").into_bytes()[..]);
                let transmit = Transmit {
                    protocol: TransportProtocol::UDP,
                    to,
                    datagram,
                };
                if batch.push(transmit) {
                    batch.flush(&sender, |b| returned.push(b));
                }
            }
            batch.flush(&sender, |b| returned.push(b));
            assert_eq!(returned.len(), total, "every buffer is recycled");

            let mut buf = [0u8; 64];
            for (r, receiver) in receivers.iter().enumerate() {
                receiver
                    .set_read_timeout(Some(std::time::Duration::from_secs(2)))
                    .expect("timeout");
                for i in (r..total).step_by(2) {
                    let (n, from) = receiver.recv_from(&mut buf).expect("a datagram");
                    assert_eq!(from, sender.local_addr().expect("address"));
                    assert_eq!(&buf[..n], format!("datagram {i}").as_bytes());
                }
            }
        });
    }

    /// A datagram the kernel refuses costs only itself.
    #[test]
    fn a_refused_datagram_does_not_stop_the_others() {
        let (runtime, sender) = loopback_sender();
        runtime.block_on(async {
            let receiver = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            receiver
                .set_read_timeout(Some(std::time::Duration::from_secs(2)))
                .expect("timeout");
            let good = receiver.local_addr().expect("address");
            // An IPv6 destination on an IPv4 socket: EAFNOSUPPORT for that one.
            let bad: std::net::SocketAddr = "[::1]:9".parse().expect("address");
            let mut batch = SendBatch::new();
            for (i, to) in [good, bad, good].into_iter().enumerate() {
                let datagram = BytesMut::from(&[i as u8; 8][..]);
                batch.push(Transmit {
                    protocol: TransportProtocol::UDP,
                    to,
                    datagram,
                });
            }
            let mut returned = 0;
            batch.flush(&sender, |_| returned += 1);
            assert_eq!(returned, 3);
            let mut buf = [0u8; 16];
            for expected in [0u8, 2] {
                let (n, _) = receiver.recv_from(&mut buf).expect("a datagram");
                assert_eq!(&buf[..n], &[expected; 8]);
            }
        });
    }

    /// An anchor read at a known offset between the two clocks.
    fn anchor(instant: Instant, wall: SystemTime) -> Anchor {
        Anchor { instant, wall }
    }

    /// The kernel's time becomes the monotonic clock's, as long before
    /// the anchor's instant as it was before the anchor's wall time.
    #[test]
    fn arrivals_are_when_the_kernel_got_the_datagram() {
        let mut clock = ArrivalClock::default();
        let now = Instant::now();
        let wall = SystemTime::now();
        let a = anchor(now, wall);
        let at = wall - Duration::from_millis(7);
        let received = a.received(now, Some(at));
        assert_eq!(received, now - Duration::from_millis(7));
        assert_eq!(clock.arrival(now, received), received);
        // Read later, from the same anchor: a datagram the kernel got after
        // the anchor was read.
        let later = now + Duration::from_millis(3);
        let got = a.received(later, Some(wall + Duration::from_millis(2)));
        assert_eq!(got, now + Duration::from_millis(2));
        assert_eq!(clock.arrival(later, got), got);
        // Without the kernel's time: the read's.
        let last = now + Duration::from_millis(4);
        assert_eq!(a.received(last, None), last);
        assert_eq!(clock.arrival(last, a.received(last, None)), last);
        // A read anchors the clocks between its two monotonic readings.
        let before = Instant::now();
        let read = Anchor::read();
        assert!(read.instant >= before && read.instant <= Instant::now());
    }

    /// A wall clock stepped forward or back never puts an arrival after
    /// the read, before the datagram that came before it, or far back.
    #[test]
    fn arrivals_never_go_back_or_ahead() {
        let mut clock = ArrivalClock::default();
        let now = Instant::now() + Duration::from_secs(10);
        let wall = SystemTime::now();
        let a = anchor(now, wall);
        let first = clock.arrival(now, a.received(now, Some(wall - Duration::from_millis(2))));
        assert_eq!(first, now - Duration::from_millis(2));
        // Stepped forward an hour after the anchor was read: the kernel's
        // time maps to an hour after the read, and the read it is.
        let read = now + Duration::from_millis(1);
        let stamped = wall + Duration::from_secs(3600);
        assert_eq!(a.received(read, Some(stamped)), read);
        assert_eq!(clock.arrival(read, a.received(read, Some(stamped))), read);
        // Stepped back an hour: the datagram seems to have waited an hour
        // in the socket, which it did not. The forwarding delay counts the
        // hour (the histogram's top bucket); the peer sees the read.
        let next = now + Duration::from_millis(2);
        let stamped = wall - Duration::from_secs(3600);
        let received = a.received(next, Some(stamped));
        assert!(received < now);
        assert_eq!(clock.arrival(next, received), next);
        // Stamped a little before the last arrival: no earlier than it.
        let again = clock.arrival(
            next,
            a.received(next, Some(wall - Duration::from_millis(5))),
        );
        assert_eq!(again, next);
    }

    /// A read gives the datagram, its source and the kernel's receive
    /// time, which is before the read and not long before.
    #[test]
    fn reads_say_who_sent_and_when_the_kernel_got_it() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let mut receiver = Receiver::new(&socket);
            let peer = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            let before = SystemTime::now();
            peer.send_to(b"hello", socket.local_addr().expect("addr"))
                .expect("send");
            socket.readable().await.expect("readable");
            let mut buf = [0u8; 64];
            let got = receiver.try_recv(&socket, &mut buf).expect("a datagram");
            let read = SystemTime::now();
            assert_eq!(&buf[..got.len], b"hello");
            assert_eq!(got.from, peer.local_addr().expect("addr"));
            let at = got.at.expect("the kernel's receive time");
            assert!(
                at >= before - Duration::from_millis(5) && at <= read,
                "{at:?}"
            );
            // Nothing more: the next read would block.
            let next = receiver.try_recv(&socket, &mut buf);
            assert_eq!(
                next.err().map(|e| e.kind()),
                Some(io::ErrorKind::WouldBlock)
            );
        });
    }
}
