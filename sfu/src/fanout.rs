//! One published track's fan-out: the layers its publisher sends, and for
//! every subscriber the layer it gets and the rewrite of its stream. Sans-IO:
//! the forwarder task feeds it packets and commands with an `Instant` and
//! carries out the routes and keyframe requests it returns.

use crate::clock::{MediaClock, Ntp};
use crate::rewriter::{Budget, Demand, KeyframeCodec, LayerRewriter, LayerTable, Rank, Verdict};
use salon_common::ParticipantSid;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// LiveKit throttles keyframe requests to about one per 500 ms per layer:
/// each one costs the publisher a large frame.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

/// Most subscribers whose demand is remembered before their down track
/// arrives; a bound so that nothing a peer sends grows it without limit.
const MAX_PENDING_DEMANDS: usize = 4096;

struct Down<S> {
    subscriber: ParticipantSid,
    sink: S,
    rewriter: LayerRewriter,
    pause: PauseBackoff,
}

/// A resume that the link could not carry (paused again within
/// `RESUME_TRIAL`) makes the next one wait, twice as long each time up to
/// `MAX_RESUME_WAIT`: while paused, the estimate grows back whatever the
/// link's size, and without it the video would come and go every few
/// seconds on a link too small for it.
const RESUME_TRIAL: Duration = Duration::from_secs(10);
const FIRST_RESUME_WAIT: Duration = Duration::from_secs(4);
const MAX_RESUME_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Default, Clone, Copy)]
struct PauseBackoff {
    wait: Duration,
    until: Option<Instant>,
    resumed_at: Option<Instant>,
}

impl PauseBackoff {
    fn paused(&mut self, now: Instant) {
        let failed = self
            .resumed_at
            .is_some_and(|r| now.saturating_duration_since(r) < RESUME_TRIAL);
        self.wait = if failed {
            (self.wait * 2).clamp(FIRST_RESUME_WAIT, MAX_RESUME_WAIT)
        } else {
            Duration::ZERO
        };
        self.until = Some(now + self.wait);
    }

    fn may_resume(&self, now: Instant) -> bool {
        self.until.is_none_or(|until| now >= until)
    }

    fn resumed(&mut self, now: Instant) {
        self.resumed_at = Some(now);
        self.until = None;
    }
}

/// Where one packet goes: the subscriber's sink, with the rewritten numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    index: usize,
    pub sequence: u16,
    pub timestamp: u32,
    /// For VP8: where its frame numbers are, and this subscriber's.
    pub vp8: Option<(crate::vp8::Descriptor, crate::vp8::Numbering)>,
}

/// The fan-out of one track to its subscribers' sinks (`S`: whatever the
/// shell writes to).
pub struct Fanout<S> {
    clock_rate: u32,
    keyframe_codec: Option<KeyframeCodec>,
    layers: LayerTable,
    downs: Vec<Down<S>>,
    /// Demands of subscribers whose sink is not attached yet (or again).
    demands: HashMap<ParticipantSid, Demand>,
    /// When a keyframe was last asked for, per layer.
    last_request: [Option<Instant>; 4],
    routes: Vec<Route>,
}

impl<S> Fanout<S> {
    /// `keyframe_codec` is `None` for audio and for video whose keyframes are
    /// not parsed: every packet of those may start a stream.
    pub fn new(clock_rate: u32, keyframe_codec: Option<KeyframeCodec>) -> Self {
        Self {
            clock_rate,
            keyframe_codec,
            layers: LayerTable::default(),
            downs: Vec::new(),
            demands: HashMap::new(),
            last_request: [None; 4],
            routes: Vec::new(),
        }
    }

    /// Starts sending to `subscriber` through `sink` (replacing any sink it had).
    pub fn add(&mut self, subscriber: ParticipantSid, sink: S) {
        self.remove(&subscriber);
        let demand = self
            .demands
            .get(&subscriber)
            .copied()
            .unwrap_or(Demand::DEFAULT);
        self.downs.push(Down {
            subscriber,
            sink,
            rewriter: LayerRewriter::new(self.clock_rate, demand),
            pause: PauseBackoff::default(),
        });
        // A new subscriber must not wait out another's throttle for its first picture.
        self.last_request = [None; 4];
        self.routes.reserve(self.downs.len());
    }

    pub fn remove(&mut self, subscriber: &ParticipantSid) {
        self.downs.retain(|d| &d.subscriber != subscriber);
    }

    /// Forgets a subscriber altogether: it unsubscribed. Returns its sink,
    /// if it had one, for the shell to let go of what it keeps for it.
    pub fn forget(&mut self, subscriber: &ParticipantSid) -> Option<S> {
        self.demands.remove(subscriber);
        // `add` keeps one sink per subscriber.
        let i = self
            .downs
            .iter()
            .position(|d| &d.subscriber == subscriber)?;
        Some(self.downs.remove(i).sink)
    }

    /// What `subscriber` wants from now on, whether or not its sink is attached yet.
    pub fn set_demand(&mut self, subscriber: &ParticipantSid, demand: Demand) {
        if let Some(d) = self.downs.iter_mut().find(|d| &d.subscriber == subscriber) {
            d.rewriter.set_demand(demand);
        }
        if self.demands.len() < MAX_PENDING_DEMANDS || self.demands.contains_key(subscriber) {
            self.demands.insert(subscriber.clone(), demand);
        }
    }

    /// Takes one packet of layer `rank`; afterwards `routes` says where it goes.
    pub fn on_packet(
        &mut self,
        now: Instant,
        rank: Rank,
        ssrc: u32,
        sequence: u16,
        timestamp: u32,
        payload: &[u8],
    ) {
        self.routes.clear();
        self.layers.observe(now, rank, ssrc, sequence, timestamp);
        self.layers.measure(now, rank, payload.len());
        let keyframe = self.keyframe_codec.is_none_or(|c| c.is_keyframe(payload));
        let vp8 = match self.keyframe_codec {
            Some(KeyframeCodec::Vp8) => crate::vp8::parse(payload),
            _ => None,
        };
        for (index, d) in self.downs.iter_mut().enumerate() {
            if let Verdict::Forward {
                sequence,
                timestamp,
                vp8: numbering,
            } = d.rewriter.process(
                now,
                &self.layers,
                ssrc,
                sequence,
                timestamp,
                keyframe,
                vp8.as_ref(),
            ) {
                self.routes.push(Route {
                    index,
                    sequence,
                    timestamp,
                    vp8: vp8.zip(numbering),
                });
            }
        }
    }

    /// Takes the publisher's sender report for `ssrc`: its RTP time `rtp`
    /// was NTP time `ntp` on the publisher's clock. `false` if no layer of
    /// the track is sent on `ssrc` (yet).
    pub fn sender_report(&mut self, ssrc: u32, ntp: Ntp, rtp: u32) -> bool {
        let clock = MediaClock {
            ntp,
            rtp,
            rate: self.clock_rate,
        };
        self.layers.set_clock(ssrc, clock)
    }

    /// Every subscriber's sink.
    pub fn sinks(&self) -> impl Iterator<Item = &S> + '_ {
        self.downs.iter().map(|d| &d.sink)
    }

    /// Every subscriber's sink, with the line from its stream's RTP time
    /// to the publisher's NTP time, if the layer it gets had a sender
    /// report: what its own reports must say (on Salon's clock).
    pub fn clocks(&self) -> impl Iterator<Item = (&S, Option<MediaClock>)> + '_ {
        self.downs.iter().map(|d| {
            let clock = d
                .rewriter
                .timing()
                .and_then(|(ssrc, ts_offset)| Some(self.layers.clock(ssrc)?.shifted(0, ts_offset)));
            (&d.sink, clock)
        })
    }

    /// Fits the layer of every subscriber to what its link carries:
    /// `budget` gives a sink's share of its subscriber's bandwidth
    /// estimate, or `None` for no limit. `paused` hears of every sink whose
    /// stream the budget pauses (`true`) or resumes (`false`); `short`, of
    /// every sink the budget holds below a layer it asked for, with the
    /// extra bits per second the next layer up needs (what a probe must
    /// find room for).
    pub fn fit(
        &mut self,
        now: Instant,
        mut budget: impl FnMut(&S) -> Option<Budget>,
        mut paused: impl FnMut(&S, bool),
        mut short: impl FnMut(&S, u64),
    ) {
        for d in &mut self.downs {
            // Paused by its subscriber: nothing is sent, so the link has
            // nothing to decide (and its share of the estimate is none).
            if d.rewriter.demand() == Demand::Paused {
                continue;
            }
            let was_paused = d.rewriter.budget().is_none();
            let limit = budget(&d.sink);
            let fits = match limit {
                Some(b) => self.layers.fitting(now, b, was_paused),
                None => Some(Rank::HIGH),
            }
            .filter(|_| !was_paused || d.pause.may_resume(now));
            d.rewriter.set_budget(fits);
            if let (Some(_), Demand::UpTo(asked)) = (limit, d.rewriter.demand())
                && let Some(extra) = self.layers.step_up(now, fits, asked)
            {
                short(&d.sink, extra);
            }
            match (was_paused, fits.is_none()) {
                (false, true) => d.pause.paused(now),
                (true, false) => d.pause.resumed(now),
                _ => continue,
            }
            paused(&d.sink, fits.is_none());
        }
    }

    /// Every subscriber's sink, with the bitrate of the layer it asks for
    /// (if measured): what it would take of its link's estimate. A
    /// subscriber that paused the track wants nothing.
    pub fn wants(&self, now: Instant) -> impl Iterator<Item = (&S, Option<u64>)> + '_ {
        self.downs.iter().map(move |d| {
            let want = match d.rewriter.demand() {
                Demand::UpTo(asked) => self.layers.wanted_rate(now, asked),
                Demand::Paused => Some(0),
            };
            (&d.sink, want)
        })
    }

    /// The sinks the last packet goes to, with its numbers for each.
    pub fn routes(&self) -> impl Iterator<Item = (&S, Route)> + '_ {
        self.routes.iter().map(|r| (&self.downs[r.index].sink, *r))
    }

    /// A layer whose keyframe some subscriber waits for, at most once per
    /// `KEYFRAME_REQUEST_INTERVAL` per layer; call until `None`.
    pub fn poll_keyframe_request(&mut self, now: Instant) -> Option<u32> {
        let mut wanted = [None; 4];
        for (rank, ssrc) in self
            .downs
            .iter()
            .filter_map(|d| d.rewriter.wanted_keyframe())
        {
            wanted[rank.index()] = Some((rank, ssrc));
        }
        wanted
            .into_iter()
            .flatten()
            .find(|&(rank, _)| self.throttle(now, rank))
            .map(|(_, ssrc)| ssrc)
    }

    /// A subscriber lost the picture (it sent a PLI or FIR): the layer it
    /// gets, if a request for it is not throttled.
    pub fn keyframe_lost(&mut self, now: Instant, subscriber: &ParticipantSid) -> Option<u32> {
        let (rank, ssrc) = self
            .downs
            .iter()
            .find(|d| &d.subscriber == subscriber)?
            .rewriter
            .current_layer()?;
        self.throttle(now, rank).then_some(ssrc)
    }

    /// Whether a keyframe request for layer `rank` may go now; notes it if so.
    fn throttle(&mut self, now: Instant, rank: Rank) -> bool {
        let slot = &mut self.last_request[rank.index()];
        if slot.is_some_and(|t| now.saturating_duration_since(t) < KEYFRAME_REQUEST_INTERVAL) {
            return false;
        }
        *slot = Some(now);
        true
    }
}

#[cfg(test)]
#[path = "fanout_tests.rs"]
mod tests;
