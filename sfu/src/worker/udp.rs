//! The worker's UDP socket: reads that say when the kernel received each
//! datagram (`Receiver`), and batched sends. A forwarded packet becomes one datagram per
//! subscriber, all queued at once; `sendmmsg` hands them to the kernel in
//! one system call instead of one each, which saves the per-call entry,
//! socket lookup and locking that perf showed next to the copies
//! themselves.
//!
//! When a flush holds several datagrams for one destination (the packets
//! of a paced burst, read together while the copies of the one before
//! went out), they go as one message with UDP GSO (`UDP_SEGMENT`): the
//! kernel walks its send path once for them, which cost 20-40 % less per
//! datagram on loopback (`benches/benches/udp_floor.rs`). GSO takes
//! segments of one size but the last, which may be shorter; a run that
//! breaks that rule goes as several messages, in order. `--udp-gso
//! false` turns it off.

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

/// Most datagrams one GSO message carries. The kernel takes up to 64; a
/// paced burst gives two or three per subscriber, and the stack arrays
/// built for each call grow with this.
const MAX_SEGMENTS: usize = 8;

/// Datagrams queued before `push` asks for a flush.
const MAX_QUEUED: usize = 1024;

/// Datagrams waiting for the next `flush`, with the kernel's message
/// headers, allocated once.
pub(super) struct SendBatch {
    /// Each with its place in the queue, which keeps a destination's
    /// datagrams in order when they are sorted by destination.
    queued: Vec<(u32, Transmit)>,
    /// Runs of `queued` that go as one message each.
    messages: Vec<Message>,
    headers: MultiHeaders<SockaddrStorage>,
    /// The same with room for the `UDP_SEGMENT` control message.
    gso_headers: MultiHeaders<SockaddrStorage>,
    /// False if not asked for (`--udp-gso false`), or once the kernel
    /// refused a GSO message as such (a device that cannot segment):
    /// everything goes one datagram a message from then.
    gso: bool,
    /// Messages of several datagrams the kernel took, ever: what tells a
    /// test that GSO was used, not merely left on.
    gso_sent: u64,
}

/// `count` datagrams of the queue from `first`, all to the first one's
/// destination; `size` is the first one's length, which is the segment
/// size when there are several.
#[derive(Clone, Copy, Debug)]
struct Message {
    first: usize,
    count: usize,
    size: usize,
}

impl SendBatch {
    /// `gso`: whether to try GSO at all (`NodeConfig::udp_gso`).
    pub(super) fn new(gso: bool) -> Self {
        Self {
            queued: Vec::with_capacity(MAX_QUEUED),
            messages: Vec::with_capacity(MAX_QUEUED),
            headers: MultiHeaders::preallocate(BATCH, None),
            gso_headers: MultiHeaders::preallocate(BATCH, Some(nix::cmsg_space!(u16))),
            gso,
            gso_sent: 0,
        }
    }

    /// Whether runs for one peer go as GSO messages (and so whether the
    /// worker reads ahead before it sends): asked for, and not refused.
    pub(super) fn gso_enabled(&self) -> bool {
        self.gso
    }

    /// Queues a datagram; true when the batch is full and must be flushed.
    pub(super) fn push(&mut self, transmit: Transmit) -> bool {
        self.queued.push((self.queued.len() as u32, transmit));
        self.queued.len() >= MAX_QUEUED
    }

    /// Sends what is queued and gives each buffer to `recycle`. With
    /// `coalesce`, datagrams for the same destination go together, by GSO
    /// where their sizes allow: worth a sort when the queue holds the
    /// output of several incoming packets. A datagram the kernel refuses
    /// is dropped, as the network could drop it; a full send buffer drops
    /// the rest of the batch.
    pub(super) fn flush(
        &mut self,
        socket: &tokio::net::UdpSocket,
        coalesce: bool,
        mut recycle: impl FnMut(BytesMut),
    ) {
        if coalesce && self.gso {
            self.queued.sort_unstable_by_key(|(at, t)| (t.to, *at));
        }
        self.plan();
        let mut next = 0;
        while next < self.messages.len() {
            let (chunk, segment) = batchable(&self.messages[next..]);
            let headers = match segment {
                Some(_) => &mut self.gso_headers,
                None => &mut self.headers,
            };
            let messages = &self.messages[next..next + chunk];
            match send_messages(socket, headers, &self.queued, messages, segment) {
                Ok(sent) => {
                    let taken = &self.messages[next..next + sent.min(chunk)];
                    self.gso_sent += taken.iter().filter(|m| m.count > 1).count() as u64;
                    next += sent.max(1);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    tracing::trace!("media socket full; dropped the rest of a batch");
                    break;
                }
                // The error belongs to the first message of the chunk
                // (sendmmsg reports one only when it sent nothing).
                Err(err) => {
                    let failed = self.messages[next];
                    // The call's first message may be a lone datagram,
                    // refused for the segment size the call gave it.
                    if segment.is_some() && gso_refused(&err) {
                        // GSO off, and everything not sent yet planned
                        // again one datagram a message: a call that held a
                        // GSO message gives each of its messages the
                        // segment size, which the kernel would refuse for
                        // a lone datagram too. Once per worker, so worth
                        // telling ops.
                        tracing::info!(%err, "the path refuses UDP GSO; sending without it");
                        self.gso = false;
                        let queued = &self.queued;
                        self.messages.truncate(next);
                        self.messages
                            .extend((failed.first..queued.len()).map(|k| Message {
                                first: k,
                                count: 1,
                                size: queued[k].1.datagram.len(),
                            }));
                        continue;
                    }
                    tracing::trace!(%err, "media socket write");
                    next += 1;
                }
            }
        }
        self.messages.clear();
        for (_, transmit) in self.queued.drain(..) {
            recycle(transmit.datagram);
        }
    }

    /// Cuts the queue into messages: a run of datagrams for one
    /// destination, of one size but the last, up to `MAX_SEGMENTS`, is one
    /// message if GSO is on.
    fn plan(&mut self) {
        self.messages.clear();
        let mut i = 0;
        while i < self.queued.len() {
            let (to, first) = (self.queued[i].1.to, self.queued[i].1.datagram.len());
            let mut count = 1;
            while self.gso && count < MAX_SEGMENTS {
                let Some((_, next)) = self.queued.get(i + count) else {
                    break;
                };
                let len = next.datagram.len();
                if next.to != to || len > first || len == 0 {
                    break;
                }
                count += 1;
                if len < first {
                    // A shorter one ends a message.
                    break;
                }
            }
            self.messages.push(Message {
                first: i,
                count,
                size: first,
            });
            i += count;
        }
    }
}

/// How many of `messages`, from the first, one call can take (at most
/// `BATCH`), and the GSO segment size they share if any has several
/// datagrams. A one-datagram message joins any call whose segment size is
/// at least its length, where the kernel sends it as it is.
fn batchable(messages: &[Message]) -> (usize, Option<usize>) {
    let mut segment: Option<usize> = None;
    let mut longest_single = 0;
    let mut n = 0;
    for m in messages.iter().take(BATCH) {
        if m.count == 1 {
            if segment.is_some_and(|s| m.size > s) {
                break;
            }
            longest_single = longest_single.max(m.size);
        } else {
            match segment {
                Some(s) if s != m.size => break,
                Some(_) => {}
                None if longest_single > m.size => break,
                None => segment = Some(m.size),
            }
        }
        n += 1;
    }
    (n.max(1), segment)
}

/// Whether the kernel refused a GSO message for being one: the device
/// cannot segment or checksum it (EIO, EOPNOTSUPP), or its segments do
/// not fit the path's MTU (EMSGSIZE since the 2025 fix "udp: gso: do not
/// drop small packets when PMTU reduces", in stable kernels too; EINVAL
/// before). The last depends on one peer's path, yet turns GSO off for
/// the whole worker: a peer behind a path under 1250 bytes costs the
/// others GSO's saving until the worker restarts (a cost in CPU, not in
/// packets).
fn gso_refused(err: &io::Error) -> bool {
    use nix::errno::Errno;
    matches!(
        err.raw_os_error().map(Errno::from_raw),
        Some(Errno::EIO | Errno::EINVAL | Errno::EOPNOTSUPP | Errno::EMSGSIZE)
    )
}

/// One `sendmmsg` call for up to `BATCH` messages of `queued`, with
/// `UDP_SEGMENT` set to `segment` if given; how many the kernel took.
fn send_messages(
    socket: &tokio::net::UdpSocket,
    headers: &mut MultiHeaders<SockaddrStorage>,
    queued: &[(u32, Transmit)],
    messages: &[Message],
    segment: Option<usize>,
) -> io::Result<usize> {
    // On the stack, so that a send allocates nothing.
    let mut slices: [IoSlice<'_>; BATCH * MAX_SEGMENTS] =
        std::array::from_fn(|_| IoSlice::new(&[]));
    let mut spans = [(0usize, 0usize); BATCH];
    let mut used = 0;
    for (span, m) in spans.iter_mut().zip(messages) {
        for (slot, (_, t)) in slices[used..]
            .iter_mut()
            .zip(&queued[m.first..m.first + m.count])
        {
            *slot = IoSlice::new(&t.datagram[..]);
        }
        *span = (used, m.count);
        used += m.count;
    }
    let iovs: [&[IoSlice<'_>]; BATCH] =
        std::array::from_fn(|i| &slices[spans[i].0..spans[i].0 + spans[i].1]);
    let addrs: [Option<SockaddrStorage>; BATCH] = std::array::from_fn(|i| {
        messages
            .get(i)
            .map(|m| SockaddrStorage::from(queued[m.first].1.to))
    });
    let n = messages.len().min(BATCH);
    let segment = segment.and_then(|s| u16::try_from(s).ok());
    let gso;
    let cmsgs: &[ControlMessage<'_>] = match &segment {
        Some(size) => {
            gso = [ControlMessage::UdpGsoSegments(size)];
            &gso
        }
        None => &[],
    };
    let fd = socket.as_raw_fd();
    socket.try_io(Interest::WRITABLE, || {
        let results = sendmmsg(
            fd,
            headers,
            &iovs[..n],
            &addrs[..n],
            cmsgs,
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
            let mut batch = SendBatch::new(false);
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
                    batch.flush(&sender, false, |b| returned.push(b));
                }
            }
            batch.flush(&sender, false, |b| returned.push(b));
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
            let mut batch = SendBatch::new(false);
            for (i, to) in [good, bad, good].into_iter().enumerate() {
                let datagram = BytesMut::from(&[i as u8; 8][..]);
                batch.push(Transmit {
                    protocol: TransportProtocol::UDP,
                    to,
                    datagram,
                });
            }
            let mut returned = 0;
            batch.flush(&sender, true, |_| returned += 1);
            assert_eq!(returned, 3);
            let mut buf = [0u8; 16];
            for expected in [0u8, 2] {
                let (n, _) = receiver.recv_from(&mut buf).expect("a datagram");
                assert_eq!(&buf[..n], &[expected; 8]);
            }
        });
    }

    fn transmit(to: std::net::SocketAddr, byte: u8, len: usize) -> Transmit {
        Transmit {
            protocol: TransportProtocol::UDP,
            to,
            datagram: BytesMut::from(&vec![byte; len][..]),
        }
    }

    /// The output of three packets for two peers, queued packet by packet:
    /// sorted by peer, each peer's run of one size is one message, a
    /// shorter datagram ends a message and a longer one starts the next.
    #[test]
    fn runs_for_one_peer_become_messages_of_one_segment_size() {
        let a: std::net::SocketAddr = "127.0.0.1:1000".parse().expect("address");
        let b: std::net::SocketAddr = "127.0.0.1:2000".parse().expect("address");
        let mut batch = SendBatch::new(true);
        for (byte, len_a, len_b) in [(1, 1200, 1200), (2, 1200, 1100), (3, 900, 1200)] {
            batch.push(transmit(b, byte, len_b));
            batch.push(transmit(a, byte, len_a));
        }
        batch.queued.sort_unstable_by_key(|(at, t)| (t.to, *at));
        batch.plan();
        let planned: Vec<(std::net::SocketAddr, usize, usize)> = batch
            .messages
            .iter()
            .map(|m| (batch.queued[m.first].1.to, m.count, m.size))
            .collect();
        assert_eq!(planned, [(a, 3, 1200), (b, 2, 1200), (b, 1, 1200)]);
        // One call takes them all: one segment size, and the single
        // datagram fits it.
        assert_eq!(batchable(&batch.messages), (3, Some(1200)));
        // A single longer than the segment size waits for the next call,
        // and so does a message of another size.
        let m = |count, size| Message {
            first: 0,
            count,
            size,
        };
        assert_eq!(batchable(&[m(2, 1000), m(1, 1200)]), (1, Some(1000)));
        assert_eq!(batchable(&[m(1, 1200), m(2, 1000)]), (1, None));
        assert_eq!(batchable(&[m(2, 1000), m(2, 900)]), (1, Some(1000)));
        assert_eq!(batchable(&[m(1, 300), m(1, 1200)]), (2, None));
    }

    /// Coalesced by GSO on loopback, every datagram arrives whole, on its
    /// own and in its peer's order, and every buffer comes back.
    #[test]
    fn datagrams_sent_together_arrive_apart_and_in_order() {
        let (runtime, sender) = loopback_sender();
        runtime.block_on(async {
            let receivers = [
                std::net::UdpSocket::bind("127.0.0.1:0").expect("bind"),
                std::net::UdpSocket::bind("127.0.0.1:0").expect("bind"),
            ];
            let to: Vec<_> = receivers
                .iter()
                .map(|r| r.local_addr().expect("address"))
                .collect();
            // Four packets' copies, the third shorter, the fourth longer.
            let lens = [1200, 1200, 700, 1300];
            let mut batch = SendBatch::new(true);
            for (i, len) in lens.into_iter().enumerate() {
                for peer in &to {
                    batch.push(transmit(*peer, i as u8, len));
                }
            }
            let mut returned = 0;
            batch.flush(&sender, true, |_| returned += 1);
            assert_eq!(returned, lens.len() * to.len());
            assert!(batch.gso, "loopback takes GSO");
            // Each peer's 1200, 1200, 700 went as one message; the 1300
            // on its own.
            assert_eq!(batch.gso_sent, 2, "GSO messages");
            let mut buf = [0u8; 2048];
            for receiver in &receivers {
                receiver
                    .set_read_timeout(Some(std::time::Duration::from_secs(2)))
                    .expect("timeout");
                for (i, len) in lens.into_iter().enumerate() {
                    let (n, _) = receiver.recv_from(&mut buf).expect("a datagram");
                    assert_eq!(n, len, "datagram {i}");
                    assert!(buf[..n].iter().all(|&b| b == i as u8), "datagram {i}");
                }
            }
        });
    }

    /// A path that refuses GSO: the kernel refuses a GSO message whose
    /// segments are larger than the path's MTU (EMSGSIZE), as it refuses
    /// one for a device that cannot checksum (EIO). Here a network namespace of
    /// the test's own whose loopback takes 1000 bytes, so that the host's
    /// loopback is left as it is. The refused message goes again one
    /// datagram a message (fragmented by the kernel, reassembled whole),
    /// and GSO stays off for the batch from then on. Needs root, as the
    /// shaped browser tests do.
    #[test]
    fn a_path_that_refuses_gso_still_gets_every_datagram() {
        std::thread::spawn(|| {
            // Namespaces belong to a thread: only this one moves, and the
            // `ip` it starts inherits its namespace.
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("a network namespace of the test's own (run as root)");
            let up = std::process::Command::new("ip")
                .args(["link", "set", "lo", "mtu", "1000", "up"])
                .status()
                .expect("ip (iproute2)");
            assert!(up.success(), "ip link set lo up: {up}");

            let (runtime, sender) = loopback_sender();
            runtime.block_on(async {
                let receivers = [
                    std::net::UdpSocket::bind("127.0.0.1:0").expect("bind"),
                    std::net::UdpSocket::bind("127.0.0.1:0").expect("bind"),
                ];
                // Per peer: a shorter datagram, a message of its own that
                // the call also gives the segment size, then more than one
                // message's worth (so that the first call holds several
                // GSO messages, each refused).
                let count = MAX_SEGMENTS as u8 + 4;
                let len = |i: u8| if i == 0 { 1000 } else { 1200 };
                let mut batch = SendBatch::new(true);
                // Two rounds: the first finds out, the second sends
                // without trying.
                for round in 0..2u8 {
                    for i in 0..count {
                        for receiver in &receivers {
                            let to = receiver.local_addr().expect("address");
                            batch.push(transmit(to, round * count + i, len(i)));
                        }
                    }
                    let mut returned = 0;
                    batch.flush(&sender, true, |_| returned += 1);
                    assert_eq!(returned, 2 * usize::from(count), "every buffer comes back");
                    assert!(!batch.gso, "GSO is off once refused");
                    assert_eq!(batch.gso_sent, 0);
                    let mut buf = [0u8; 2048];
                    for receiver in &receivers {
                        receiver
                            .set_read_timeout(Some(Duration::from_secs(2)))
                            .expect("timeout");
                        for i in 0..count {
                            let (n, _) = receiver.recv_from(&mut buf).expect("a datagram");
                            let byte = round * count + i;
                            assert_eq!(n, len(i), "datagram {byte}");
                            assert!(buf[..n].iter().all(|&b| b == byte), "datagram {byte}");
                        }
                    }
                }
            });
        })
        .join()
        .expect("the test's thread");
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
