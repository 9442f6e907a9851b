//! The kernel's floor under a forwarded packet: what one thread pays in
//! CPU to hand 1200-byte datagrams to the kernel for loopback receivers,
//! one `sendto` each, `sendmmsg` in batches of 32, or `sendmmsg` with UDP
//! GSO (`UDP_SEGMENT`: each message carries several datagrams for one
//! receiver, as a paced burst of two or three packets of a track would go
//! to each subscriber), with nothing else done per datagram (no SRTP, no
//! copy, no bookkeeping). On loopback the
//! receivers' side of delivery (the socket queue, the wake-up) runs in the
//! sender's context too, as it does for Salon in the load test. Salon's
//! CPU per forwarded packet minus this is what Salon itself costs.
//!
//! `cargo bench -p salon-benches --bench udp_floor` (FLOOR_SECONDS, 3 by
//! default, per row). Loopback only; every loop is bounded in time.

use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, sendmmsg};
use std::io::IoSlice;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const DATAGRAM: usize = 1200;
const BATCH: usize = 32;
const FANOUTS: [usize; 3] = [1, 9, 150];
/// Datagrams per receiver in one GSO message.
const GSO_SEGMENTS: [usize; 2] = [2, 3];

#[derive(Clone, Copy)]
enum Send {
    /// `sendto`, one datagram a call.
    One,
    Batched,
    /// `sendmmsg` of messages that each carry this many datagrams.
    Gso(usize),
}

impl Send {
    fn name(self) -> String {
        match self {
            Self::One => "sendto".into(),
            Self::Batched => format!("sendmmsg ×{BATCH}"),
            Self::Gso(k) => format!("sendmmsg ×{BATCH}, GSO ×{k}"),
        }
    }

    /// Datagrams one message carries.
    fn segments(self) -> usize {
        match self {
            Self::Gso(k) => k,
            Self::One | Self::Batched => 1,
        }
    }
}
/// The longest a row may run, whatever FLOOR_SECONDS says.
const MAX_SECONDS: u64 = 30;

/// CPU time of the calling thread (user + system), from /proc.
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("/proc/thread-self/stat");
    // Fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

struct Receivers {
    addrs: Vec<SocketAddr>,
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    drainer: Option<std::thread::JoinHandle<()>>,
}

impl Receivers {
    /// `n` loopback sockets, drained by a thread of their own.
    fn open(n: usize) -> Self {
        let sockets: Vec<UdpSocket> = (0..n)
            .map(|_| {
                let s = UdpSocket::bind("127.0.0.1:0").expect("bind a receiver");
                s.set_nonblocking(true).expect("nonblocking");
                s
            })
            .collect();
        let addrs = sockets
            .iter()
            .map(|s| s.local_addr().expect("address"))
            .collect();
        let received = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let drainer = {
            let (received, stop) = (received.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    let mut got = 0;
                    for s in &sockets {
                        while s.recv(&mut buf).is_ok() {
                            got += 1;
                        }
                    }
                    received.fetch_add(got, Ordering::Relaxed);
                    if got == 0 {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
            })
        };
        Self {
            addrs,
            received,
            stop,
            drainer: Some(drainer),
        }
    }

    fn close(mut self) -> u64 {
        // What is still queued arrives within a moment.
        std::thread::sleep(Duration::from_millis(100));
        self.stop.store(true, Ordering::Relaxed);
        if let Some(d) = self.drainer.take() {
            d.join().expect("the drainer");
        }
        self.received.load(Ordering::Relaxed)
    }
}

/// Datagrams per second: a busy server's worth, which the drainer keeps
/// up with (a dropped datagram skips part of the receiver's side).
const RATE: f64 = 100_000.0;

/// Sends to `receivers` for `seconds`, as a forwarding server does: a
/// burst of one datagram per receiver (at least 32), or one message per
/// receiver with GSO, for each incoming packet or burst of them, then a
/// sleep until the next, at `RATE` datagrams a second. Returns the
/// datagrams sent and the sending thread's CPU time.
fn run(send: Send, receivers: &Receivers, seconds: Duration) -> (u64, Duration) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind the sender");
    let payload = [0x5au8; DATAGRAM];
    let addrs: Vec<SockaddrStorage> = receivers
        .addrs
        .iter()
        .map(|&a| SockaddrStorage::from(a))
        .collect();
    let segments = send.segments();
    // In messages.
    let burst = addrs.len().max(BATCH);
    let interval = Duration::from_secs_f64((burst * segments) as f64 / RATE);
    // Room for a control message only where one goes: an empty one the
    // kernel would refuse.
    let cmsg_buffer = matches!(send, Send::Gso(_)).then(|| nix::cmsg_space!(u16));
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, cmsg_buffer);
    let iovs: Vec<Vec<IoSlice<'_>>> = (0..BATCH)
        .map(|_| vec![IoSlice::new(&payload); segments])
        .collect();
    let gso_size = DATAGRAM as u16;
    let gso = [ControlMessage::UdpGsoSegments(&gso_size)];
    let cmsgs: &[ControlMessage<'_>] = match send {
        Send::Gso(_) => &gso,
        Send::One | Send::Batched => &[],
    };
    let fd = socket.as_raw_fd();
    let mut sent = 0u64;
    let start = Instant::now();
    let cpu = thread_cpu();
    let mut due = start;
    while start.elapsed() < seconds {
        let mut i = 0;
        while i < burst {
            if let Send::One = send {
                if socket
                    .send_to(&payload, receivers.addrs[i % addrs.len()])
                    .is_ok()
                {
                    sent += 1;
                }
                i += 1;
                continue;
            }
            let n = BATCH.min(burst - i);
            let to: [Option<SockaddrStorage>; BATCH] =
                std::array::from_fn(|k| Some(addrs[(i + k) % addrs.len()]));
            let results = sendmmsg(
                fd,
                &mut headers,
                &iovs[..n],
                &to[..n],
                cmsgs,
                MsgFlags::empty(),
            );
            sent += results.map_or(0, |r| r.map(|m| m.bytes / DATAGRAM).sum::<usize>() as u64);
            i += n;
        }
        due += interval;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    (sent, thread_cpu().saturating_sub(cpu))
}

fn main() {
    let seconds = std::env::var("FLOOR_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .min(MAX_SECONDS);
    let seconds = Duration::from_secs(seconds);
    println!("| send | destinations | datagrams | received | sender CPU µs / datagram |");
    println!("|---|---:|---:|---:|---:|");
    let sends = [Send::One, Send::Batched]
        .into_iter()
        .chain(GSO_SEGMENTS.map(Send::Gso));
    for fanout in FANOUTS {
        for send in sends.clone() {
            let receivers = Receivers::open(fanout);
            let (sent, cpu) = run(send, &receivers, seconds);
            let received = receivers.close();
            println!(
                "| {} | {fanout} | {sent} | {:.1} % | {:.2} |",
                send.name(),
                received as f64 * 100.0 / sent.max(1) as f64,
                cpu.as_secs_f64() * 1e6 / sent.max(1) as f64,
            );
        }
    }
}
