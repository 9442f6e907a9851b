//! The books of a load test: what every publisher sent and when, what every
//! subscriber received and when. Plain data, no I/O and no clock: callers
//! pass `Instant`s in, so the arithmetic is tested on its own.
//!
//! A packet is recognised on the far side by a hash of its media payload,
//! which no SFU rewrites (headers, SSRCs, sequence numbers and timestamps all
//! change on the way). The payload is untouched, so the media stays
//! decodable. Counting is done over a measurement window: a packet counts if
//! it was *sent* while the window was open, however late it arrives.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hasher};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Audio,
    Video,
}

/// A handle on a registered stream, cheap to copy into a send loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct StreamRef(u32);

/// Layers are indexed 0 (lowest) to 2; audio and single-layer video use 0.
const LAYERS: usize = 3;
/// Enough latency samples for stable percentiles without unbounded memory.
const MAX_LATENCY_SAMPLES: usize = 4_000_000;

struct Stream {
    publisher: usize,
    kind: Kind,
    sent_in_window: [u64; LAYERS],
}

struct Sent {
    at: Instant,
    layer: u8,
    /// Its place among the packets sent on its layer in the window.
    ordinal: Option<u64>,
}

/// Packets of one layer a subscriber got in a row, before the server moved
/// it to another: the first and last by their place in the window, and
/// when those were sent.
#[derive(Clone, Copy)]
struct Run {
    layer: usize,
    first: u64,
    last: u64,
    first_sent: Instant,
    last_sent: Instant,
}

#[derive(Default)]
struct Tally {
    by_layer: [u64; LAYERS],
    /// In the order they began; a run ends when a packet of another layer
    /// arrives.
    runs: Vec<Run>,
    bytes: u64,
}

impl Tally {
    fn count(&mut self, layer: usize, ordinal: u64, sent: Instant) {
        self.by_layer[layer] += 1;
        match self.runs.last_mut() {
            Some(run) if run.layer == layer => {
                if ordinal < run.first {
                    run.first = ordinal;
                    run.first_sent = sent;
                }
                if ordinal > run.last {
                    run.last = ordinal;
                    run.last_sent = sent;
                }
            }
            _ => self.runs.push(Run {
                layer,
                first: ordinal,
                last: ordinal,
                first_sent: sent,
                last_sent: sent,
            }),
        }
    }

    /// How many packets the subscriber should have got of a stream that
    /// sent `sent` per layer in the window. The SFU moves a subscriber
    /// between layers as its link allows, so what was not forwarded of a
    /// layer while it was on another is no loss: of each run of a layer
    /// it got, the packets between the first and the last count, and the
    /// window's start and end count on the layers it started and ended on
    /// (by when their packets were sent, so that a straggler of an old
    /// layer does not count as the end). A packet counts once however
    /// many runs cover it (a late one, or a resend, of a layer left starts
    /// a run inside an earlier one). That is what its RTP sequence numbers
    /// say too, which the SFU keeps continuous across switches.
    fn expected(&self, sent: &[u64; LAYERS]) -> Option<u64> {
        let first = self.runs.iter().min_by_key(|r| r.first_sent)?;
        let last = self.runs.iter().max_by_key(|r| r.last_sent)?;
        // Ordinal ranges, inclusive, per layer: the runs, the window's
        // start before the first and its end after the last.
        let mut ranges: Vec<(usize, u64, u64)> = self
            .runs
            .iter()
            .map(|r| (r.layer, r.first, r.last))
            .collect();
        ranges.push((first.layer, 0, first.first));
        let end = sent[last.layer].saturating_sub(1).max(last.last);
        ranges.push((last.layer, last.last, end));
        ranges.sort_unstable();
        let mut total = 0;
        let mut open: Option<(usize, u64, u64)> = None;
        for (layer, lo, hi) in ranges {
            match &mut open {
                Some((l, _, h)) if *l == layer && lo <= h.saturating_add(1) => *h = (*h).max(hi),
                _ => {
                    if let Some((_, l, h)) = open {
                        total += h - l + 1;
                    }
                    open = Some((layer, lo, hi));
                }
            }
        }
        if let Some((_, l, h)) = open {
            total += h - l + 1;
        }
        Some(total)
    }
}

#[derive(Default)]
struct Subscriber {
    streams: HashMap<StreamRef, Tally>,
    /// Streams it received anything of, in the window or not.
    seen: HashSet<StreamRef>,
}

#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
enum Window {
    #[default]
    NotStarted,
    Open(Instant),
    Closed(Instant, Instant),
}

#[derive(Default)]
pub(crate) struct Ledger {
    keys: HashMap<String, StreamRef>,
    streams: Vec<Stream>,
    sent: HashMap<(StreamRef, u64), Sent>,
    subscribers: HashMap<usize, Subscriber>,
    window: Window,
    latencies_us: Vec<u32>,
    /// Packets whose payload matched nothing sent: a sign that something on
    /// the way changed the media, which would make every other figure wrong.
    unmatched: u64,
    /// Running totals for the progress line.
    pub(crate) received_packets: u64,
    pub(crate) received_bytes: u64,
}

/// What one subscriber got during the window.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SubscriberFigures {
    pub participant: usize,
    /// Streams it received at least one in-window packet of, and streams
    /// published by others.
    pub streams_received: usize,
    pub streams_expected: usize,
    pub packets_received: u64,
    /// Of those, how many came from each layer, lowest first. Audio and a
    /// single-layer camera count on the layer their lane was sent as.
    pub packets_by_layer: [u64; LAYERS],
    /// Packets sent in the window on the layers it was forwarded, each
    /// while it was on it (the top layer for a stream it got nothing of).
    pub packets_expected: u64,
    pub bitrate_bps: u64,
    /// received / expected, 0 to 1.
    pub delivered: f64,
    /// 1 - delivered: what the subscriber lost on the way.
    pub loss: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Figures {
    pub window_s: f64,
    pub packets_sent: u64,
    pub subscribers: Vec<SubscriberFigures>,
    pub packets_received: u64,
    pub packets_expected: u64,
    pub forwarded_packets_per_s: f64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub unmatched_packets: u64,
}

impl Ledger {
    pub(crate) fn register(&mut self, key: &str, publisher: usize, kind: Kind) -> StreamRef {
        if let Some(r) = self.keys.get(key) {
            return *r;
        }
        let r = StreamRef(self.streams.len() as u32);
        self.streams.push(Stream {
            publisher,
            kind,
            sent_in_window: [0; LAYERS],
        });
        self.keys.insert(key.to_owned(), r);
        r
    }

    pub(crate) fn lookup(&self, key: &str) -> Option<StreamRef> {
        self.keys.get(key).copied()
    }

    pub(crate) fn kind(&self, stream: StreamRef) -> Kind {
        self.streams[stream.0 as usize].kind
    }

    pub(crate) fn start_window(&mut self, at: Instant) {
        self.window = Window::Open(at);
    }

    pub(crate) fn end_window(&mut self, at: Instant) {
        if let Window::Open(start) = self.window {
            self.window = Window::Closed(start, at);
        }
    }

    pub(crate) fn sent(&mut self, stream: StreamRef, layer: u8, hash: u64, at: Instant) {
        let layer = layer.min(LAYERS as u8 - 1);
        let ordinal = match self.window {
            Window::Open(_) => {
                let count = &mut self.streams[stream.0 as usize].sent_in_window[usize::from(layer)];
                *count += 1;
                Some(*count - 1)
            }
            Window::NotStarted | Window::Closed(..) => None,
        };
        self.sent
            .insert((stream, hash), Sent { at, layer, ordinal });
    }

    /// Books a packet a subscriber received on `stream`.
    pub(crate) fn received(
        &mut self,
        subscriber: usize,
        stream: StreamRef,
        hash: u64,
        len: usize,
        at: Instant,
    ) {
        self.received_packets += 1;
        self.received_bytes += len as u64;
        let Some(sent) = self.sent.get(&(stream, hash)) else {
            self.unmatched += 1;
            return;
        };
        let books = self.subscribers.entry(subscriber).or_default();
        books.seen.insert(stream);
        let Some(ordinal) = sent.ordinal else {
            return;
        };
        let tally = books.streams.entry(stream).or_default();
        tally.count(usize::from(sent.layer), ordinal, sent.at);
        tally.bytes += len as u64;
        if self.latencies_us.len() < MAX_LATENCY_SAMPLES {
            let us = at.saturating_duration_since(sent.at).as_micros();
            self.latencies_us
                .push(u32::try_from(us).unwrap_or(u32::MAX));
        }
    }

    /// Whether each of `subscribers` has had packets of every stream
    /// published by someone else.
    pub(crate) fn everyone_sees_everything(&self, subscribers: &[usize]) -> bool {
        subscribers.iter().all(|s| {
            let seen = self.subscribers.get(s).map(|b| &b.seen);
            self.streams
                .iter()
                .enumerate()
                .filter(|(_, stream)| stream.publisher != *s)
                .all(|(i, _)| seen.is_some_and(|seen| seen.contains(&StreamRef(i as u32))))
        })
    }

    /// The window's figures for `subscribers` (participant indexes). Every
    /// stream published by someone else counts as expected.
    pub(crate) fn figures(&self, subscribers: &[usize]) -> Figures {
        let window = match self.window {
            Window::Closed(start, end) => end.saturating_duration_since(start),
            Window::Open(_) | Window::NotStarted => Duration::ZERO,
        };
        let secs = window.as_secs_f64();
        let per_second = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let empty = Subscriber::default();
        let mut out = Vec::with_capacity(subscribers.len());
        for &participant in subscribers {
            let books = self.subscribers.get(&participant).unwrap_or(&empty);
            let mut fig = SubscriberFigures {
                participant,
                streams_received: 0,
                streams_expected: 0,
                packets_received: 0,
                packets_by_layer: [0; LAYERS],
                packets_expected: 0,
                bitrate_bps: 0,
                delivered: 0.0,
                loss: 0.0,
            };
            let mut bytes = 0;
            for (index, stream) in self.streams.iter().enumerate() {
                if stream.publisher == participant {
                    continue;
                }
                fig.streams_expected += 1;
                let tally = books.streams.get(&StreamRef(index as u32));
                let received: u64 = tally.map_or(0, |t| t.by_layer.iter().sum());
                if received > 0 {
                    fig.streams_received += 1;
                }
                fig.packets_received += received;
                if let Some(t) = tally {
                    for (sum, n) in fig.packets_by_layer.iter_mut().zip(t.by_layer) {
                        *sum += n;
                    }
                }
                // The top layer sent if it got nothing.
                let top = || {
                    (0..LAYERS)
                        .rev()
                        .find(|l| stream.sent_in_window[*l] > 0)
                        .map_or(0, |l| stream.sent_in_window[l])
                };
                fig.packets_expected += tally
                    .and_then(|t| t.expected(&stream.sent_in_window))
                    .unwrap_or_else(top);
                bytes += tally.map_or(0, |t| t.bytes);
            }
            fig.bitrate_bps = per_second(bytes * 8) as u64;
            fig.delivered = if fig.packets_expected > 0 {
                fig.packets_received as f64 / fig.packets_expected as f64
            } else {
                0.0
            };
            fig.loss = 1.0 - fig.delivered;
            out.push(fig);
        }
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        let ms = |p| percentile(&sorted, p).map(|us| f64::from(us) / 1000.0);
        let packets_received = out.iter().map(|s| s.packets_received).sum();
        Figures {
            window_s: secs,
            packets_sent: self
                .streams
                .iter()
                .map(|s| s.sent_in_window.iter().sum::<u64>())
                .sum(),
            packets_expected: out.iter().map(|s| s.packets_expected).sum(),
            packets_received,
            forwarded_packets_per_s: per_second(packets_received),
            latency_p50_ms: ms(0.50),
            latency_p99_ms: ms(0.99),
            unmatched_packets: self.unmatched,
            subscribers: out,
        }
    }
}

/// Nearest-rank percentile of sorted samples.
pub(crate) fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Identifies a media payload whatever the SFU did to the RTP header. VP8's
/// payload descriptor is skipped: SFUs may rewrite its picture ids.
pub(crate) fn payload_hash(kind: Kind, payload: &[u8]) -> u64 {
    let media = match kind {
        Kind::Audio => payload,
        Kind::Video => payload.get(vp8_descriptor_len(payload)..).unwrap_or(&[]),
    };
    let mut hasher = DefaultHasher::new();
    hasher.write(media);
    hasher.finish()
}

/// Length of the VP8 payload descriptor (RFC 7741, 4.2).
fn vp8_descriptor_len(p: &[u8]) -> usize {
    let Some(&first) = p.first() else { return 0 };
    if first & 0x80 == 0 {
        return 1;
    }
    let Some(&ext) = p.get(1) else { return 1 };
    let mut len = 2;
    if ext & 0x80 != 0 {
        // Picture id: 7 bits, or 15 when its first bit (M) is set.
        len += if p.get(len).is_some_and(|b| b & 0x80 != 0) {
            2
        } else {
            1
        };
    }
    if ext & 0x40 != 0 {
        len += 1; // TL0PICIDX
    }
    if ext & 0x30 != 0 {
        len += 1; // TID / KEYIDX
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn counts_only_packets_sent_in_the_window_however_late_they_arrive() {
        let t0 = Instant::now();
        let mut l = Ledger::default();
        let video = l.register("TR_v", 0, Kind::Video);
        l.sent(video, 2, 1, t0); // before the window
        l.start_window(t0 + ms(10));
        l.sent(video, 2, 2, t0 + ms(20));
        l.sent(video, 2, 3, t0 + ms(30));
        l.end_window(t0 + ms(1010));
        l.sent(video, 2, 4, t0 + ms(1020)); // after
        for hash in [1, 2, 3, 4] {
            l.received(1, video, hash, 1000, t0 + ms(1030));
        }
        let f = l.figures(&[1]);
        assert_eq!(f.window_s, 1.0);
        assert_eq!(f.packets_sent, 2);
        let s = &f.subscribers[0];
        assert_eq!((s.packets_received, s.packets_expected), (2, 2));
        assert_eq!(s.delivered, 1.0);
        assert_eq!(s.loss, 0.0);
        assert_eq!(s.bitrate_bps, 16_000);
        // Latencies of the two in-window packets: 1010 and 1000 ms.
        assert_eq!(f.latency_p50_ms, Some(1000.0));
        assert_eq!(f.latency_p99_ms, Some(1010.0));
    }

    #[test]
    fn expects_the_layer_the_subscriber_was_forwarded_and_skips_its_own_streams() {
        let t0 = Instant::now();
        let mut l = Ledger::default();
        let a = l.register("A", 0, Kind::Video);
        let b = l.register("B", 1, Kind::Audio);
        l.start_window(t0);
        for i in 0..10 {
            l.sent(a, 0, 100 + i, t0); // low layer: 10 packets
        }
        for i in 0..30 {
            l.sent(a, 2, 200 + i, t0); // high layer: 30 packets
        }
        for i in 0..50 {
            l.sent(b, 0, 300 + i, t0);
        }
        l.end_window(t0 + ms(1000));
        // Participant 1 gets 9 of the low layer, its own audio never counts.
        for i in 0..9 {
            l.received(1, a, 100 + i, 100, t0 + ms(5));
        }
        // Participant 2 gets nothing at all.
        let f = l.figures(&[1, 2]);
        let one = &f.subscribers[0];
        assert_eq!((one.streams_received, one.streams_expected), (1, 1));
        assert_eq!((one.packets_received, one.packets_expected), (9, 10));
        assert!((one.delivered - 0.9).abs() < 1e-9);
        let two = &f.subscribers[1];
        assert_eq!((two.streams_received, two.streams_expected), (0, 2));
        assert_eq!(two.packets_expected, 30 + 50, "top layer when nothing came");
        assert_eq!(two.delivered, 0.0);
    }

    #[test]
    fn a_move_between_layers_is_no_loss_but_a_gap_inside_a_layer_is() {
        let t0 = Instant::now();
        let mut l = Ledger::default();
        let a = l.register("A", 0, Kind::Video);
        l.start_window(t0);
        // 100 frames, each with three packets on the high layer and one on
        // the low one.
        for i in 0..100 {
            for k in 0..3 {
                l.sent(a, 2, 1000 + 3 * i + k, t0 + ms(10 * i));
            }
            l.sent(a, 0, 2000 + i, t0 + ms(10 * i));
        }
        l.end_window(t0 + ms(1000));
        // Participant 1 is on the high layer for 40 frames, then on the low
        // one, and loses a packet of each.
        for n in (0..120).filter(|&n| n != 10) {
            l.received(1, a, 1000 + n, 1000, t0 + ms(10 * (n / 3)));
        }
        for i in (40..100).filter(|&i| i != 70) {
            l.received(1, a, 2000 + i, 100, t0 + ms(10 * i));
        }
        // Participant 4 goes high, low for frames 30 to 59, and high again.
        for i in 0..100 {
            if (30..60).contains(&i) {
                l.received(4, a, 2000 + i, 100, t0 + ms(10 * i));
            } else {
                for k in 0..3 {
                    l.received(4, a, 1000 + 3 * i + k, 1000, t0 + ms(10 * i));
                }
            }
        }
        // Participant 5 is on the high layer for 40 frames, loses packet 118,
        // moves to the low layer, and then gets 118 resent.
        for n in (0..120).filter(|&n| n != 118) {
            l.received(5, a, 1000 + n, 1000, t0 + ms(10 * (n / 3)));
        }
        for i in 40..100 {
            l.received(5, a, 2000 + i, 100, t0 + ms(10 * i));
            if i == 45 {
                l.received(5, a, 1000 + 118, 1000, t0 + ms(390));
            }
        }
        // Participant 2 joins late: the low layer's last 50 only.
        for i in 50..100 {
            l.received(2, a, 2000 + i, 100, t0 + ms(10 * i));
        }
        // Participant 3 gets the low layer all along, but for its first 5.
        for i in 5..100 {
            l.received(3, a, 2000 + i, 100, t0 + ms(10 * i));
        }
        let f = l.figures(&[1, 2, 3, 4, 5]);
        let one = &f.subscribers[0];
        assert_eq!((one.packets_received, one.packets_expected), (178, 180));
        assert_eq!(one.packets_by_layer, [59, 0, 119]);
        let two = &f.subscribers[1];
        assert_eq!((two.packets_received, two.packets_expected), (50, 100));
        let three = &f.subscribers[2];
        assert_eq!((three.packets_received, three.packets_expected), (95, 100));
        let four = &f.subscribers[3];
        assert_eq!((four.packets_received, four.packets_expected), (240, 240));
        let five = &f.subscribers[4];
        assert_eq!((five.packets_received, five.packets_expected), (180, 180));
    }

    #[test]
    fn ready_once_every_subscriber_had_every_other_stream() {
        let t0 = Instant::now();
        let mut l = Ledger::default();
        assert!(l.everyone_sees_everything(&[0, 1]), "nothing published");
        let a = l.register("A", 0, Kind::Video);
        l.sent(a, 0, 1, t0);
        assert!(!l.everyone_sees_everything(&[0, 1]));
        l.received(1, a, 1, 10, t0);
        // Participant 0 publishes A and needs nothing else.
        assert!(l.everyone_sees_everything(&[0, 1]));
        assert!(!l.everyone_sees_everything(&[0, 1, 2]));
    }

    #[test]
    fn a_changed_payload_is_reported_not_counted() {
        let t0 = Instant::now();
        let mut l = Ledger::default();
        let a = l.register("A", 0, Kind::Audio);
        l.start_window(t0);
        l.sent(a, 0, payload_hash(Kind::Audio, b"opus"), t0);
        l.end_window(t0 + ms(100));
        l.received(1, a, payload_hash(Kind::Audio, b"0pus"), 4, t0);
        let f = l.figures(&[1]);
        assert_eq!(f.unmatched_packets, 1);
        assert_eq!(f.subscribers[0].packets_received, 0);
    }

    #[test]
    fn vp8_descriptor_rewrites_do_not_change_the_hash() {
        // X=1, S=1; I=1 with a 15-bit picture id; L=1; T=1.
        let a = [0x90, 0xE0, 0x81, 0x23, 0x05, 0x20, 0xAA, 0xBB, 0xCC];
        let mut b = a;
        b[2] = 0x85; // another picture id
        b[4] = 0x06; // another TL0PICIDX
        assert_eq!(vp8_descriptor_len(&a), 6);
        assert_eq!(payload_hash(Kind::Video, &a), payload_hash(Kind::Video, &b));
        let mut c = a;
        c[8] = 0xCD;
        assert_ne!(payload_hash(Kind::Video, &a), payload_hash(Kind::Video, &c));
        // The short descriptor of webrtc-rs's payloader without picture ids.
        assert_eq!(vp8_descriptor_len(&[0x10, 0x9d]), 1);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), Some(50));
        assert_eq!(percentile(&v, 0.99), Some(99));
        assert_eq!(percentile(&v, 1.0), Some(100));
        assert_eq!(percentile::<u32>(&[], 0.5), None);
    }
}
