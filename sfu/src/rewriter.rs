//! Turns the packets of one published track (possibly several simulcast
//! layers, each with its own SSRC, sequence and timestamp space) into one
//! continuous stream per subscriber, of the layer that subscriber should get.
//! Sans-IO and allocation-free.

use crate::clock::MediaClock;
use livekit_protocol as lk;
use std::time::{Duration, Instant};

/// A layer that sent nothing for this long is taken as stopped (publishers
/// drop their top layers when their uplink shrinks, and dynacast pauses the
/// ones nobody watches), and another may replace it.
const STALL: Duration = Duration::from_millis(1000);

/// A layer is taken as stopped sooner when a lower one goes on without
/// it: when a publisher's uplink shrinks, Chrome stops its top layers
/// and keeps the small one, and waiting the whole `STALL` kept its
/// viewers' pictures frozen that much longer. Sooner means after this
/// many of the layer's own frame intervals (so that a layer sent at a
/// few frames a second is not taken for stopped between two frames),
/// and never before `OUTRUN_MIN`. All layers quiet together (a still
/// screen, a publisher's hiccup) is not this case: the lower layer must
/// have been going already when this one went quiet.
const OUTRUN_FRAMES: u32 = 4;
const OUTRUN_MIN: Duration = Duration::from_millis(300);
/// A lower layer "goes on" while its packets come without a gap longer
/// than this many of its frame intervals (and `GOING_MIN`): after a
/// longer one, it was quiet too.
const GOING_FRAMES: u32 = 3;
const GOING_MIN: Duration = Duration::from_millis(150);
/// Sequence numbers this far behind a layer's newest are a restart, not
/// a late packet.
const RESTART_BEHIND: i16 = -1024;

/// A simulcast layer's place in quality order: `SINGLE` for a stream without
/// simulcast, then LiveKit's rids `q`, `h` and `f`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rank(u8);

impl Rank {
    pub const SINGLE: Rank = Rank(0);
    pub const LOW: Rank = Rank(1);
    pub const MEDIUM: Rank = Rank(2);
    pub const HIGH: Rank = Rank(3);
    const COUNT: usize = 4;

    /// The rank of a layer by its rid; livekit-client names its layers
    /// `q`, `h`, `f` from the lowest up, whatever their number.
    pub fn of_rid(rid: &str) -> Rank {
        match rid {
            "q" => Rank::LOW,
            "h" => Rank::MEDIUM,
            "f" => Rank::HIGH,
            _ => Rank::SINGLE,
        }
    }

    /// The rank of a LiveKit video quality; `None` for `OFF`.
    pub fn of_quality(quality: lk::VideoQuality) -> Option<Rank> {
        match quality {
            lk::VideoQuality::Low => Some(Rank::LOW),
            lk::VideoQuality::Medium => Some(Rank::MEDIUM),
            lk::VideoQuality::High => Some(Rank::HIGH),
            lk::VideoQuality::Off => None,
        }
    }

    /// The LiveKit quality of a simulcast rank (a single stream counts as high).
    pub fn quality(self) -> lk::VideoQuality {
        match self {
            Rank::LOW => lk::VideoQuality::Low,
            Rank::MEDIUM => lk::VideoQuality::Medium,
            _ => lk::VideoQuality::High,
        }
    }

    pub(crate) fn index(self) -> usize {
        usize::from(self.0).min(Self::COUNT - 1)
    }
}

/// What a subscriber wants of a track: nothing (its element is hidden, or
/// it disabled the track), or layers up to a rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Demand {
    Paused,
    UpTo(Rank),
}

impl Demand {
    /// A new subscription gets the best layer until it says otherwise, as in LiveKit.
    pub const DEFAULT: Demand = Demand::UpTo(Rank::HIGH);
}

/// How far, in seconds, the time between two layers' captures (by their
/// sender reports) may be from the wall time between their packets for a
/// switch to go by the reports.
const CAPTURE_SLACK_SECONDS: i64 = 1;

/// The layers of one track the publisher is sending right now.
#[derive(Debug, Default, Clone)]
pub struct LayerTable {
    seen: [Option<Seen>; Rank::COUNT],
    rates: [Rate; Rank::COUNT],
    /// Each layer's line from RTP time to the publisher's NTP time, from
    /// its last sender report, with the SSRC it came for.
    clocks: [Option<(u32, MediaClock)>; Rank::COUNT],
    /// Each layer outrun by a lower one (see `OUTRUN_FRAMES`). It changes
    /// only with a packet, so it is worked out once per packet here rather
    /// than for every subscriber when a layer is chosen.
    outrun: [bool; Rank::COUNT],
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    ssrc: u32,
    /// Its newest packet (by sequence number: a retransmission put back
    /// into the stream, or a late packet, is not news of the layer), and
    /// when it came.
    sequence: u16,
    at: Instant,
    /// The first packet after its last gap longer than `going_gap`:
    /// since when it has gone on without a pause.
    since: Instant,
    /// The newest RTP timestamp it sent, and when its first packet came.
    frame: u32,
    frame_at: Instant,
    /// The time between its frames, averaged; `None` until it has sent
    /// two.
    frame_gap: Option<Duration>,
}

impl Seen {
    fn new(now: Instant, ssrc: u32, sequence: u16, timestamp: u32) -> Self {
        Self {
            ssrc,
            sequence,
            at: now,
            since: now,
            frame: timestamp,
            frame_at: now,
            frame_gap: None,
        }
    }

    /// How long the layer may go without a packet, while a lower one goes
    /// on, before it counts as stopped; the whole `STALL` until its pace
    /// is known.
    fn outrun(&self) -> Duration {
        self.frame_gap
            .map_or(STALL, |g| (g * OUTRUN_FRAMES).clamp(OUTRUN_MIN, STALL))
    }

    /// The longest gap between its packets that still counts as going on.
    fn going_gap(&self) -> Duration {
        self.frame_gap
            .map_or(GOING_MIN, |g| (g * GOING_FRAMES).clamp(GOING_MIN, STALL))
    }
}

/// A subscriber's share of its link for one track, in bits per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// What the layer sent must fit in: the estimate, delay and loss
    /// together.
    pub layers: u64,
    /// What decides whether the video pauses. Random loss on its own (a
    /// poor Wi-Fi) drags the whole estimate to its floor, yet the lowest
    /// layer still gets through with retransmissions; so only a queue
    /// building up, or loss too heavy for retransmissions to mend, pauses
    /// it (see `Outbound::estimate`).
    pub pause: u64,
}

impl Budget {
    /// The same limit for both.
    pub fn uniform(bits_per_second: u64) -> Self {
        Self {
            layers: bits_per_second,
            pause: bits_per_second,
        }
    }

    /// Divides the budget among tracks that want `wants` (in bits per
    /// second; `None`: not known, as much as it can get). A track that
    /// wants less than an equal share gets what it wants, with some
    /// headroom, and the rest is shared among the others the same way
    /// (water filling): a thumbnail asking for a small layer leaves the
    /// room to the large tile beside it, where equal shares would hold the
    /// large one down for nothing. Tracks marked `first` (screen shares)
    /// are served before all the others, as LiveKit serves them: a slide
    /// too blurred to read costs a meeting more than a smaller face.
    pub fn divide(self, wants: &[Want]) -> Vec<Budget> {
        let layers = divide_first(self.layers, wants);
        let pause = divide_first(self.pause, wants);
        layers
            .into_iter()
            .zip(pause)
            .map(|(layers, pause)| Budget { layers, pause })
            .collect()
    }
}

/// What one track asks of its subscriber's link (see `Budget::divide`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    /// The bitrate of the layer it asks for; `None` while not measured.
    pub rate: Option<u64>,
    /// Served before the others (a screen share).
    pub first: bool,
}

impl Want {
    pub fn of(rate: Option<u64>) -> Self {
        Self { rate, first: false }
    }
}

/// `total` shared among `wants`, in their order: first among the tracks
/// served first whose rate is known (one whose rate is not would take it
/// all, pausing the rest for a second or two), then what they leave among
/// the others.
fn divide_first(total: u64, wants: &[Want]) -> Vec<u64> {
    let served_first = |w: &Want| w.first && w.rate.is_some();
    let first: Vec<Option<u64>> = wants
        .iter()
        .filter(|w| served_first(w))
        .map(|w| w.rate)
        .collect();
    let rest: Vec<Option<u64>> = wants
        .iter()
        .filter(|w| !served_first(w))
        .map(|w| w.rate)
        .collect();
    let first_shares = water_fill(total, &first);
    let left = total - first_shares.iter().sum::<u64>();
    let mut first_shares = first_shares.into_iter();
    let mut rest_shares = water_fill(left, &rest).into_iter();
    wants
        .iter()
        .map(|w| {
            if served_first(w) {
                first_shares.next()
            } else {
                rest_shares.next()
            }
            .unwrap_or(0)
        })
        .collect()
}

/// A layer's bitrate moves from second to second: a track gets this much
/// more than it wants (in percent), so that it does not drop a layer and
/// climb back each time its layer runs a little over.
const WANT_HEADROOM_PERCENT: u64 = 115;

/// `total` shared among `wants` (see `Budget::divide`), in their order.
fn water_fill(total: u64, wants: &[Option<u64>]) -> Vec<u64> {
    let wanted =
        |w: Option<u64>| w.map_or(u64::MAX, |w| w.saturating_mul(WANT_HEADROOM_PERCENT) / 100);
    let mut order: Vec<usize> = (0..wants.len()).collect();
    order.sort_by_key(|&i| wanted(wants[i]));
    let mut shares = vec![0; wants.len()];
    let mut remaining = total;
    for (done, &i) in order.iter().enumerate() {
        let equal = remaining / (wants.len() - done) as u64;
        let share = wanted(wants[i]).min(equal);
        shares[i] = share;
        remaining -= share;
    }
    shares
}

/// How often a layer's bitrate is measured.
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// The bytes one layer carried in the current window and its rate over
/// the last complete one.
#[derive(Debug, Default, Clone, Copy)]
struct Rate {
    start: Option<Instant>,
    bytes: u64,
    bits_per_second: Option<u64>,
}

impl LayerTable {
    /// Notes a packet of layer `rank` on `ssrc` with sequence number
    /// `sequence` and RTP timestamp `timestamp`.
    pub fn observe(&mut self, now: Instant, rank: Rank, ssrc: u32, sequence: u16, timestamp: u32) {
        let seen = &mut self.seen[rank.index()];
        let Some(s) = seen.as_mut().filter(|s| s.ssrc == ssrc) else {
            *seen = Some(Seen::new(now, ssrc, sequence, timestamp));
            self.find_outrun();
            return;
        };
        let ahead = sequence.wrapping_sub(s.sequence) as i16;
        if ahead <= 0 && ahead > RESTART_BEHIND {
            return;
        }
        if now.saturating_duration_since(s.at) > s.going_gap() {
            s.since = now;
        }
        s.sequence = sequence;
        s.at = now;
        if (timestamp.wrapping_sub(s.frame) as i32) > 0 {
            let gap = now.saturating_duration_since(s.frame_at).min(STALL);
            s.frame_gap = Some(s.frame_gap.map_or(gap, |g| (g * 3 + gap) / 4));
            s.frame = timestamp;
            s.frame_at = now;
        }
        self.find_outrun();
    }

    /// Works out `outrun` again: a layer is outrun by a lower one that was
    /// going when it went quiet and has gone on past its `outrun()`.
    fn find_outrun(&mut self) {
        for (i, outrun) in self.outrun.iter_mut().enumerate() {
            *outrun = self.seen[i].as_ref().is_some_and(|seen| {
                let outrun_at = seen.at.checked_add(seen.outrun()).unwrap_or(seen.at);
                self.seen[..i]
                    .iter()
                    .flatten()
                    .any(|lower| lower.at > outrun_at && lower.since <= seen.at)
            });
        }
    }

    /// Takes a sender report of the publisher's for `ssrc`; `false` if no
    /// layer is sent on it (yet).
    pub fn set_clock(&mut self, ssrc: u32, clock: MediaClock) -> bool {
        let Some(i) = self
            .seen
            .iter()
            .position(|s| s.is_some_and(|s| s.ssrc == ssrc))
        else {
            return false;
        };
        self.clocks[i] = Some((ssrc, clock));
        true
    }

    /// The line from RTP time to the publisher's NTP time of the layer on
    /// `ssrc`, if a report gave it.
    pub fn clock(&self, ssrc: u32) -> Option<MediaClock> {
        self.clocks
            .iter()
            .flatten()
            .find(|(s, _)| *s == ssrc)
            .map(|&(_, clock)| clock)
    }

    /// Counts `bytes` of layer `rank` towards its bitrate.
    pub fn measure(&mut self, now: Instant, rank: Rank, bytes: usize) {
        let rate = &mut self.rates[rank.index()];
        let start = *rate.start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= RATE_WINDOW {
            let window = (rate.bytes * 8 * 1_000_000) / (elapsed.as_micros().max(1) as u64);
            // Averaged with the window before, so that one keyframe does
            // not make the layer look twice as large for a second.
            rate.bits_per_second = Some(rate.bits_per_second.map_or(window, |b| (b + window) / 2));
            rate.start = Some(now);
            rate.bytes = 0;
        }
        rate.bytes += bytes as u64;
    }

    /// The best live layer whose bitrate fits in `budget.layers`. If none
    /// does, still the lowest one unless `budget.pause` is well below it
    /// (`None`: the video pauses, as LiveKit's does, and the sound goes
    /// on); `paused` says whether it is paused now, so that it resumes only
    /// once the lowest layer fits in `budget.pause`, and does not flap at
    /// the edge.
    pub fn fitting(&self, now: Instant, budget: Budget, paused: bool) -> Option<Rank> {
        let mut lowest = None;
        let mut best = None;
        for i in (0..Rank::COUNT).filter(|&i| self.live(now, i).is_some()) {
            lowest.get_or_insert(i);
            if self.rates[i]
                .bits_per_second
                .is_some_and(|b| b <= budget.layers)
            {
                best = Some(i);
            }
        }
        let Some(i) = lowest else {
            // Nothing live, or nothing measured yet: no reason to hold back.
            return Some(Rank::HIGH);
        };
        let needed = self.rates[i].bits_per_second.unwrap_or(0);
        let keep = if paused {
            budget.pause >= needed
        } else {
            budget.pause.saturating_mul(4) >= needed.saturating_mul(3)
        };
        keep.then_some(Rank(best.unwrap_or(i) as u8))
    }

    /// The extra bits per second a subscriber held at `current` by its
    /// budget (`None`: paused) would need for the next live layer up, if
    /// there is one it asked for (`asked`) with a measured bitrate.
    pub fn step_up(&self, now: Instant, current: Option<Rank>, asked: Rank) -> Option<u64> {
        let from = current.map_or(0, |r| r.index() + 1);
        let next = (from..=asked.index())
            .find(|&i| self.live(now, i).is_some() && self.rates[i].bits_per_second.is_some())?;
        let current_rate = current
            .and_then(|r| self.rates[r.index()].bits_per_second)
            .unwrap_or(0);
        let next_rate = self.rates[next].bits_per_second.unwrap_or(0);
        Some(next_rate.saturating_sub(current_rate).max(1))
    }

    fn live(&self, now: Instant, index: usize) -> Option<u32> {
        let seen = self.seen[index].as_ref()?;
        if now.saturating_duration_since(seen.at) > STALL {
            return None;
        }
        (!self.outrun[index]).then_some(seen.ssrc)
    }

    /// The bitrate of the layer a subscriber asking for up to `asked` gets
    /// when nothing limits it: `None` if not measured yet, nothing if no
    /// layer is live (a muted camera sends nothing, and needs no share).
    /// Never less than the lowest live layer's, which a paused track's
    /// share must reach to resume (a static screen's large layer can
    /// measure below its small one).
    pub fn wanted_rate(&self, now: Instant, asked: Rank) -> Option<u64> {
        let Some((rank, _)) = self.choose(now, asked) else {
            return Some(0);
        };
        let wanted = self.rates[rank.index()].bits_per_second?;
        let lowest = (0..Rank::COUNT)
            .find(|&i| self.live(now, i).is_some())
            .and_then(|i| self.rates[i].bits_per_second)
            .unwrap_or(0);
        Some(wanted.max(lowest))
    }

    /// The layer to send to a subscriber that takes layers up to `cap`: the
    /// best live one at or below it, else the lowest live one above it (a
    /// larger picture beats none).
    pub fn choose(&self, now: Instant, cap: Rank) -> Option<(Rank, u32)> {
        let below = (0..=cap.index())
            .rev()
            .find_map(|i| self.live(now, i).map(|ssrc| (i, ssrc)));
        let chosen = below.or_else(|| {
            (cap.index() + 1..Rank::COUNT).find_map(|i| self.live(now, i).map(|ssrc| (i, ssrc)))
        });
        chosen.map(|(i, ssrc)| (Rank(i as u8), ssrc))
    }
}

/// A video codec whose keyframes the SFU can recognise, and so switch
/// layers on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyframeCodec {
    Vp8,
    H264,
}

impl KeyframeCodec {
    /// The codec of a MIME type such as `video/VP8`; `None` for codecs whose
    /// keyframes are not parsed (audio, VP9, AV1).
    pub fn from_mime(mime_type: &str) -> Option<Self> {
        if mime_type.eq_ignore_ascii_case("video/vp8") {
            Some(Self::Vp8)
        } else if mime_type.eq_ignore_ascii_case("video/h264") {
            Some(Self::H264)
        } else {
            None
        }
    }

    /// Whether an RTP payload of this codec starts a keyframe.
    pub fn is_keyframe(self, payload: &[u8]) -> bool {
        match self {
            Self::Vp8 => vp8_keyframe(payload),
            Self::H264 => h264_keyframe(payload),
        }
    }
}

fn vp8_keyframe(payload: &[u8]) -> bool {
    // RFC 7741 §4.2: payload descriptor, then the VP8 header whose first bit
    // (P) is 0 on a keyframe, only in the first packet of a partition (S=1, PID=0).
    let Some(&first) = payload.first() else {
        return false;
    };
    let start_of_partition = first & 0x10 != 0 && first & 0x07 == 0;
    if !start_of_partition {
        return false;
    }
    let mut i = 1;
    if first & 0x80 != 0 {
        let Some(&ext) = payload.get(i) else {
            return false;
        };
        i += 1;
        if ext & 0x80 != 0 {
            // PictureID: 7 or 15 bits.
            let Some(&pid) = payload.get(i) else {
                return false;
            };
            i += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            i += 1; // TL0PICIDX
        }
        if ext & 0x30 != 0 {
            i += 1; // TID/Y/KEYIDX
        }
    }
    payload.get(i).is_some_and(|b| b & 0x01 == 0)
}

fn h264_keyframe(payload: &[u8]) -> bool {
    let Some(&header) = payload.first() else {
        return false;
    };
    match header & 0x1f {
        // IDR slice or SPS.
        5 | 7 => true,
        // STAP-A: look at each aggregated NAL unit.
        24 => {
            let mut i = 1;
            while i + 2 < payload.len() {
                let size = u16::from_be_bytes([payload[i], payload[i + 1]]) as usize;
                if let Some(&nal) = payload.get(i + 2)
                    && matches!(nal & 0x1f, 5 | 7)
                {
                    return true;
                }
                i += 2 + size;
            }
            false
        }
        // FU-A: the start fragment of an IDR.
        28 => payload
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && matches!(fu & 0x1f, 5 | 7)),
        _ => false,
    }
}

/// What to do with one incoming packet for one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forward with these sequence number and timestamp (and, for VP8,
    /// frame numbers).
    Forward {
        sequence: u16,
        timestamp: u32,
        vp8: Option<crate::vp8::Numbering>,
    },
    /// Not for this subscriber: another layer, or it paused the track.
    Drop,
}

/// One subscriber's view of a track: which layer it gets, and the sequence
/// and timestamp rewrite that makes layer switches and pauses look like one
/// stream to its decoder.
///
/// It follows the layer the `LayerTable` chooses for its demand, and
/// switches only on a keyframe of the new layer, sending the old one until
/// then so the picture never freezes for longer than a keyframe takes.
#[derive(Debug)]
pub struct LayerRewriter {
    demand: Demand,
    /// The best layer the subscriber's link carries, from its bandwidth
    /// estimate; the demand is capped by it. `None`: not even the lowest,
    /// and the stream is paused.
    budget: Option<Rank>,
    clock_rate: u32,
    current: Option<Current>,
    /// The layer to switch to on its next keyframe.
    target: Option<(Rank, u32)>,
    last_out_seq: u16,
    last_out_ts: u32,
    last_out_at: Option<Instant>,
    /// The SSRC and timestamp offset of the layer `last_out_ts` came
    /// from: with the layers' sender reports, they say when its packet was
    /// captured, so that a switch keeps the stream's timestamps on the
    /// publisher's clock.
    last_layer: Option<(u32, u32)>,
    /// VP8's own frame numbers, continued across switches like the RTP ones.
    vp8: crate::vp8::Renumber,
}

#[derive(Debug, Clone, Copy)]
struct Current {
    rank: Rank,
    ssrc: u32,
    /// The incoming sequence number the switch happened at; packets of the
    /// layer from before it were never forwarded and must stay so.
    first_seq: u16,
    seq_offset: u16,
    ts_offset: u32,
}

impl LayerRewriter {
    /// A rewriter for a stream whose RTP clock runs at `clock_rate` Hz.
    pub fn new(clock_rate: u32, demand: Demand) -> Self {
        Self {
            demand,
            budget: Some(Rank::HIGH),
            clock_rate: clock_rate.max(1),
            current: None,
            target: None,
            last_out_seq: 0,
            last_out_ts: 0,
            last_out_at: None,
            last_layer: None,
            vp8: crate::vp8::Renumber::default(),
        }
    }

    pub fn demand(&self) -> Demand {
        self.demand
    }

    /// Changes what the subscriber wants; takes effect with the next packet
    /// (at once for a pause, on a keyframe for anything else).
    pub fn set_demand(&mut self, demand: Demand) {
        self.demand = demand;
        if demand == Demand::Paused {
            self.current = None;
            self.target = None;
        }
    }

    /// Caps the layer at what the subscriber's link carries; takes effect
    /// on the next keyframe of the layer it leads to (at once for `None`,
    /// a pause).
    pub fn set_budget(&mut self, budget: Option<Rank>) {
        self.budget = budget;
        if budget.is_none() {
            self.current = None;
            self.target = None;
        }
    }

    pub fn budget(&self) -> Option<Rank> {
        self.budget
    }

    /// The layer the rewriter waits on a keyframe from, if any; the caller
    /// asks the publisher for it (PLI).
    pub fn wanted_keyframe(&self) -> Option<(Rank, u32)> {
        self.target
    }

    /// The layer being forwarded, if any.
    pub fn current_layer(&self) -> Option<(Rank, u32)> {
        self.current.map(|c| (c.rank, c.ssrc))
    }

    /// Handles a packet on `ssrc`; `layers` has already seen it. `vp8` is
    /// its payload descriptor if it is VP8.
    #[allow(clippy::too_many_arguments)]
    pub fn process(
        &mut self,
        now: Instant,
        layers: &LayerTable,
        ssrc: u32,
        sequence: u16,
        timestamp: u32,
        keyframe: bool,
        vp8: Option<&crate::vp8::Descriptor>,
    ) -> Verdict {
        let (Demand::UpTo(asked), Some(budget)) = (self.demand, self.budget) else {
            return Verdict::Drop;
        };
        let wanted = layers.choose(now, asked.min(budget));
        let on_current = self.current.is_some_and(|c| c.ssrc == ssrc);
        self.target = wanted.filter(|&(_, w)| Some(w) != self.current.map(|c| c.ssrc));
        if !on_current {
            if let Some((rank, _)) = self.target.filter(|&(_, w)| w == ssrc && keyframe) {
                self.switch_to(now, layers, rank, ssrc, sequence, timestamp);
                if let Some(descriptor) = vp8 {
                    self.vp8.switch(descriptor);
                }
                self.target = None;
            } else {
                return Verdict::Drop;
            }
        }
        let Some(layer) = self.current else {
            return Verdict::Drop;
        };
        if (sequence.wrapping_sub(layer.first_seq) as i16) < 0 {
            // Late packet from before the switch: its number is taken.
            return Verdict::Drop;
        }
        let out_seq = sequence.wrapping_add(layer.seq_offset);
        let out_ts = timestamp.wrapping_add(layer.ts_offset);
        let seq_delta = out_seq.wrapping_sub(self.last_out_seq);
        if seq_delta != 0 && seq_delta < 0x8000 {
            self.last_out_seq = out_seq;
            self.last_out_ts = out_ts;
            self.last_out_at = Some(now);
        }
        Verdict::Forward {
            sequence: out_seq,
            timestamp: out_ts,
            vp8: vp8.map(|d| self.vp8.apply(d)),
        }
    }

    fn switch_to(
        &mut self,
        now: Instant,
        layers: &LayerTable,
        rank: Rank,
        ssrc: u32,
        sequence: u16,
        timestamp: u32,
    ) {
        let (seq_offset, ts_offset) = match self.last_out_at {
            Some(last) => {
                // Continue right after the last packet sent, as much later
                // in media time as it was captured after it by the
                // publisher's sender reports (the sender reports this
                // stream's subscriber gets are those, translated: its
                // timestamps must stay on their line). Without reports, as
                // much later as it is in wall time. At least one tick, so
                // that the decoder sees a new frame.
                let elapsed = now.saturating_duration_since(last);
                let wall = (elapsed.as_micros() * u128::from(self.clock_rate) / 1_000_000)
                    .min(u128::from(u32::MAX)) as i64;
                // The reports are the publisher's to write: trusted as
                // far as the wall clock allows (an encoder's delay is well
                // under a second).
                let slack = i64::from(self.clock_rate) * CAPTURE_SLACK_SECONDS;
                let ticks = self
                    .captured_since_last(layers, ssrc, timestamp)
                    .filter(|captured| (captured - wall).abs() <= slack)
                    .unwrap_or(wall)
                    .clamp(1, i64::from(u32::MAX / 2)) as u32;
                let next_seq = self.last_out_seq.wrapping_add(1);
                let next_ts = self.last_out_ts.wrapping_add(ticks);
                (
                    next_seq.wrapping_sub(sequence),
                    next_ts.wrapping_sub(timestamp),
                )
            }
            None => (0, 0),
        };
        self.current = Some(Current {
            rank,
            ssrc,
            first_seq: sequence,
            seq_offset,
            ts_offset,
        });
        self.last_layer = Some((ssrc, ts_offset));
        self.last_out_seq = sequence.wrapping_add(seq_offset).wrapping_sub(1);
    }

    /// RTP ticks from the capture of the last packet sent to that of
    /// `timestamp` on `ssrc`, if both layers' sender reports are known.
    fn captured_since_last(&self, layers: &LayerTable, ssrc: u32, timestamp: u32) -> Option<i64> {
        let (last_ssrc, last_offset) = self.last_layer?;
        let last_clock = layers.clock(last_ssrc)?;
        let clock = layers.clock(ssrc)?;
        Some(clock.ticks_since(
            timestamp,
            &last_clock,
            self.last_out_ts.wrapping_sub(last_offset),
        ))
    }

    /// The SSRC of the layer being forwarded (or last forwarded, while
    /// paused) and what is added to its timestamps: what moves its sender
    /// reports into this stream's timestamps. A pause keeps the line,
    /// and a resume continues on it.
    pub fn timing(&self) -> Option<(u32, u32)> {
        self.last_layer
    }
}

#[cfg(test)]
#[path = "rewriter_tests.rs"]
mod tests;
