//! The fan-out on a simulated clock and network: a simulcast publisher whose
//! top layer stops and comes back, a lossy and reordering uplink, and
//! subscribers that change what they want.

use super::*;

const VP8_KEY: &[u8] = &[0x10, 0x00, 0x9d, 0x01, 0x2a];
const VP8_DELTA: &[u8] = &[0x10, 0x01];
const FRAME: Duration = Duration::from_micros(33_333);
const TICKS_PER_FRAME: u32 = 3000;

/// A tiny deterministic generator, so that every run sees the same network.
struct Rng(u64);

impl Rng {
    fn chance(&mut self, percent: u64) -> bool {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % 100 < percent
    }
}

/// One simulcast layer of the simulated publisher.
struct SimLayer {
    rid: &'static str,
    ssrc: u32,
    packets_per_frame: u16,
    seq: u16,
    ts: u32,
    keyframe_due: bool,
    frames_since_key: u32,
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    at: Instant,
    ssrc: u32,
    seq: u16,
    ts: u32,
    keyframe: bool,
}

#[derive(Debug, Clone, Copy)]
struct Out {
    at: Instant,
    sent: Sent,
    sequence: u16,
    timestamp: u32,
}

fn sid(s: &str) -> ParticipantSid {
    ParticipantSid::new(s.to_owned())
}

struct Sim {
    t0: Instant,
    layers: Vec<SimLayer>,
    fanout: Fanout<&'static str>,
    out: HashMap<&'static str, Vec<Out>>,
    requests: Vec<(Instant, u32)>,
    rng: Rng,
}

impl Sim {
    fn new() -> Self {
        let layer = |rid, ssrc, packets_per_frame, base: u32| SimLayer {
            rid,
            ssrc,
            packets_per_frame,
            seq: (base * 7) as u16,
            ts: base * 1_000_003,
            keyframe_due: true,
            frames_since_key: 0,
        };
        Self {
            t0: Instant::now(),
            layers: vec![
                layer("q", 11, 1, 1),
                layer("h", 22, 2, 2),
                layer("f", 33, 4, 3),
            ],
            fanout: Fanout::new(90_000, Some(KeyframeCodec::Vp8)),
            out: HashMap::new(),
            requests: Vec::new(),
            rng: Rng(0x5eed),
        }
    }

    fn subscribe(&mut self, name: &'static str) {
        self.fanout.add(sid(name), name);
        self.out.insert(name, Vec::new());
    }

    /// Runs frames `from..to` (at 30 fps); `sending(frame, rid)` says whether
    /// the publisher sends that layer then.
    fn run(&mut self, frames: std::ops::Range<u32>, sending: impl Fn(u32, &str) -> bool) {
        for frame in frames {
            let now = self.t0 + FRAME * frame;
            let mut wire = Vec::new();
            for l in &mut self.layers {
                if !sending(frame, l.rid) {
                    // A layer that restarts begins with a keyframe; its
                    // timestamps ran on with the capture clock.
                    l.keyframe_due = true;
                    l.ts = l.ts.wrapping_add(TICKS_PER_FRAME);
                    continue;
                }
                // Encoders send a keyframe every 3 s, or when asked.
                let keyframe = l.keyframe_due || l.frames_since_key >= 90;
                l.keyframe_due = false;
                l.frames_since_key = if keyframe { 0 } else { l.frames_since_key + 1 };
                for i in 0..l.packets_per_frame {
                    wire.push(Sent {
                        at: now,
                        ssrc: l.ssrc,
                        seq: l.seq,
                        ts: l.ts,
                        keyframe: keyframe && i == 0,
                    });
                    l.seq = l.seq.wrapping_add(1);
                }
                l.ts = l.ts.wrapping_add(TICKS_PER_FRAME);
            }
            // The uplink loses 2 % of packets and swaps 5 % with the next.
            wire.retain(|_| !self.rng.chance(2));
            for i in 0..wire.len().saturating_sub(1) {
                if self.rng.chance(5) {
                    wire.swap(i, i + 1);
                }
            }
            for p in wire {
                self.deliver(p);
            }
        }
    }

    fn deliver(&mut self, p: Sent) {
        let rid = self
            .layers
            .iter()
            .find(|l| l.ssrc == p.ssrc)
            .expect("a simulated layer")
            .rid;
        let payload = if p.keyframe { VP8_KEY } else { VP8_DELTA };
        self.fanout
            .on_packet(p.at, Rank::of_rid(rid), p.ssrc, p.seq, p.ts, payload);
        let routed: Vec<_> = self.fanout.routes().map(|(s, r)| (*s, r)).collect();
        for (name, r) in routed {
            self.out.get_mut(name).expect("a subscriber").push(Out {
                at: p.at,
                sent: p,
                sequence: r.sequence,
                timestamp: r.timestamp,
            });
        }
        while let Some(ssrc) = self.fanout.poll_keyframe_request(p.at) {
            self.requests.push((p.at, ssrc));
            if let Some(l) = self.layers.iter_mut().find(|l| l.ssrc == ssrc) {
                l.keyframe_due = true;
            }
        }
    }

    fn at(&self, frame: u32) -> Instant {
        self.t0 + FRAME * frame
    }
}

/// What a decoder needs of one subscriber's stream: each stretch of one
/// layer starts on a keyframe and keeps the layer's own spacing; every
/// switch continues one sequence number after the highest sent so far and
/// later in time. So the only holes in the numbering are packets the uplink
/// really lost.
fn assert_continuous(name: &str, out: &[Out]) {
    assert!(!out.is_empty(), "{name} got nothing");
    let mut max_seq = out[0].sequence;
    let mut max_at = out[0].at;
    let mut max_ts = out[0].timestamp;
    let mut seen = std::collections::HashSet::new();
    for (i, o) in out.iter().enumerate() {
        assert!(
            seen.insert(o.sequence),
            "{name}: sequence {} sent twice",
            o.sequence
        );
        let seq_offset = o.sequence.wrapping_sub(o.sent.seq);
        let ts_offset = o.timestamp.wrapping_sub(o.sent.ts);
        let switch = i == 0 || out[i - 1].sent.ssrc != o.sent.ssrc;
        if switch {
            assert!(
                o.sent.keyframe,
                "{name}: a switch at {i} did not start on a keyframe"
            );
            if i > 0 {
                assert_eq!(
                    o.sequence,
                    max_seq.wrapping_add(1),
                    "{name}: gap at switch {i}"
                );
                let advance = o.timestamp.wrapping_sub(max_ts);
                assert!(
                    (1..0x8000_0000).contains(&advance),
                    "{name}: timestamps went back at switch {i}"
                );
                let wall = ((o.at - max_at).as_micros() * 9 / 100) as u32;
                // Switches by sender reports go by capture time, which the
                // simulation's 33 333 µs frames trail by 1 in 100 000.
                assert!(
                    advance <= wall + 1 + wall / 50_000,
                    "{name}: timestamp jump {advance} > wall {wall}"
                );
            }
        } else {
            let prev = &out[i - 1];
            assert_eq!(
                seq_offset,
                prev.sequence.wrapping_sub(prev.sent.seq),
                "{name}: {i}"
            );
            assert_eq!(
                ts_offset,
                prev.timestamp.wrapping_sub(prev.sent.ts),
                "{name}: {i}"
            );
        }
        if (o.sequence.wrapping_sub(max_seq) as i16) > 0 {
            max_seq = o.sequence;
            max_at = o.at;
        }
        if (o.timestamp.wrapping_sub(max_ts) as i32) > 0 {
            max_ts = o.timestamp;
        }
    }
}

/// The layers (by ssrc) a subscriber received from `from` to `to`.
fn layers_between(out: &[Out], from: Instant, to: Instant) -> Vec<u32> {
    let mut layers: Vec<u32> = out
        .iter()
        .filter(|o| o.at >= from && o.at < to)
        .map(|o| o.sent.ssrc)
        .collect();
    layers.dedup();
    layers
}

/// The longest time without a packet between `from` and `to`.
fn longest_silence(out: &[Out], from: Instant, to: Instant) -> Duration {
    let times: Vec<Instant> = out
        .iter()
        .map(|o| o.at)
        .filter(|&t| t >= from && t <= to)
        .collect();
    times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(to - from)
}

#[test]
fn subscribers_get_their_own_layer_through_loss_reorder_and_a_stopped_layer() {
    let mut sim = Sim::new();
    sim.subscribe("ana");
    sim.subscribe("bob");
    // f stops from frame 90 to 150 (3 s to 5 s), as when the uplink shrinks.
    let sending = |frame: u32, rid: &str| rid != "f" || !(90..150).contains(&frame);
    sim.run(0..60, sending);
    sim.fanout.set_demand(&sid("bob"), Demand::UpTo(Rank::LOW));
    sim.run(60..120, sending);
    sim.fanout.set_demand(&sid("bob"), Demand::Paused);
    sim.run(120..150, sending);
    sim.fanout
        .set_demand(&sid("bob"), Demand::UpTo(Rank::MEDIUM));
    sim.run(150..240, sending);

    let ana = &sim.out["ana"];
    let bob = &sim.out["bob"];
    assert_continuous("ana", ana);
    assert_continuous("bob", bob);

    // Ana wants the best: f, h while f is gone, f again once it is back.
    assert_eq!(layers_between(ana, sim.at(10), sim.at(90)), vec![33]);
    assert_eq!(layers_between(ana, sim.at(135), sim.at(150)), vec![22]);
    assert_eq!(layers_between(ana, sim.at(155), sim.at(240)), vec![33]);
    // Her picture never stopped longer than it takes to see that f
    // stopped while h went on (300 ms) and a keyframe.
    let freeze = longest_silence(ana, sim.at(5), sim.at(240));
    assert!(
        freeze < Duration::from_millis(500),
        "ana froze for {freeze:?}"
    );

    // Bob: f, then q within two keyframe requests of asking (one may be
    // lost), nothing while paused, h when he comes back.
    assert_eq!(layers_between(bob, sim.at(10), sim.at(60)), vec![33]);
    assert_eq!(layers_between(bob, sim.at(80), sim.at(120)), vec![11]);
    assert!(layers_between(bob, sim.at(120), sim.at(150)).is_empty());
    assert_eq!(layers_between(bob, sim.at(170), sim.at(240)), vec![22]);

    // Keyframe requests go out, at most one per layer per 500 ms.
    assert!(!sim.requests.is_empty());
    for ssrc in [11, 22, 33] {
        let times: Vec<Instant> = sim
            .requests
            .iter()
            .filter(|r| r.1 == ssrc)
            .map(|r| r.0)
            .collect();
        for w in times.windows(2) {
            assert!(
                w[1] - w[0] >= KEYFRAME_REQUEST_INTERVAL,
                "ssrc {ssrc} asked too often"
            );
        }
    }
}

#[test]
fn every_subscriber_gets_one_line_from_its_timestamps_to_capture_time_across_switches() {
    use crate::clock::{Ntp, ntp_units};
    let mut sim = Sim::new();
    sim.subscribe("ana");
    sim.subscribe("bob");
    // Each layer's timestamps start elsewhere; its report says its frame 0
    // was captured at `n0`, as the publisher's one clock has it.
    let n0 = Ntp(0xe000_0000_0000_0000);
    let starts: Vec<(u32, u32)> = sim.layers.iter().map(|l| (l.ssrc, l.ts)).collect();
    assert!(
        !sim.fanout.sender_report(11, n0, starts[0].1),
        "no layer is sent on it yet"
    );
    let sending = |frame: u32, rid: &str| rid != "f" || !(90..150).contains(&frame);
    sim.run(0..1, sending);
    for &(ssrc, ts) in &starts {
        assert!(sim.fanout.sender_report(ssrc, n0, ts));
    }
    sim.run(1..60, sending);
    // Bob pauses the track, and takes the middle layer when he comes back.
    sim.fanout.set_demand(&sid("bob"), Demand::Paused);
    sim.run(60..150, sending);
    sim.fanout
        .set_demand(&sid("bob"), Demand::UpTo(Rank::MEDIUM));
    sim.run(150..240, sending);

    // Ana went from f to h (f stopped) and back to f, Bob from f to a
    // pause to h: the line of each one's stream, from the layer it gets
    // now, still puts every packet it got, from any layer, at its capture
    // time.
    let clocks: HashMap<&str, _> = sim.fanout.clocks().map(|(s, c)| (*s, c)).collect();
    let ana = &sim.out["ana"];
    assert!(layers_between(ana, sim.at(135), sim.at(150)) == vec![22]);
    assert!(layers_between(&sim.out["bob"], sim.at(70), sim.at(150)).is_empty());
    let tick = ntp_units(Duration::from_secs(1)) / 90_000;
    for name in ["ana", "bob"] {
        let out = &sim.out[name];
        assert_continuous(name, out);
        let clock = clocks[name].expect("its layer had a report");
        for o in out {
            let start = starts
                .iter()
                .find(|s| s.0 == o.sent.ssrc)
                .expect("a layer")
                .1;
            let ticks = i64::from(o.sent.ts.wrapping_sub(start));
            let captured = n0.plus((ticks << 32) / 90_000);
            let error = clock.ntp_of(o.timestamp).since(captured).abs();
            // A tick per switch at most: one is added where two frames
            // were captured together.
            assert!(error <= 3 * tick, "{name}: {o:?} off by {error}");
        }
    }
}

#[test]
fn a_subscriber_that_joins_late_starts_on_a_keyframe_at_once() {
    let mut sim = Sim::new();
    sim.subscribe("ana");
    sim.run(0..40, |_, _| true);
    sim.subscribe("cyd");
    let before = sim.requests.len();
    sim.run(40..50, |_, _| true);
    // Its request was not throttled by ana's, and the answer came a frame later.
    assert!(sim.requests.len() > before);
    let cyd = &sim.out["cyd"];
    assert!(cyd[0].sent.keyframe);
    assert!(
        cyd[0].at <= sim.at(42),
        "first packet at {:?}",
        cyd[0].at - sim.t0
    );
    assert_continuous("cyd", cyd);
}

#[test]
fn a_demand_set_before_the_sink_arrives_applies_to_it() {
    let mut sim = Sim::new();
    sim.fanout.set_demand(&sid("dee"), Demand::UpTo(Rank::LOW));
    sim.subscribe("dee");
    sim.run(0..30, |_, _| true);
    assert_eq!(
        layers_between(&sim.out["dee"], sim.at(5), sim.at(30)),
        vec![11]
    );
    // Unsubscribing forgets it: a new subscription starts at the default.
    assert_eq!(
        sim.fanout.forget(&sid("dee")),
        Some("dee"),
        "its sink comes back"
    );
    assert_eq!(sim.fanout.forget(&sid("dee")), None);
    sim.subscribe("dee");
    sim.run(30..60, |_, _| true);
    assert_eq!(
        layers_between(&sim.out["dee"], sim.at(35), sim.at(60)),
        vec![33]
    );
}

#[test]
fn a_subscriber_that_lost_its_picture_gets_a_throttled_keyframe_of_its_layer() {
    let mut sim = Sim::new();
    sim.subscribe("ana");
    sim.run(0..20, |_, _| true);
    let now = sim.at(20);
    assert_eq!(sim.fanout.keyframe_lost(now, &sid("ana")), Some(33));
    assert_eq!(sim.fanout.keyframe_lost(now, &sid("ana")), None);
    assert_eq!(
        sim.fanout
            .keyframe_lost(now + KEYFRAME_REQUEST_INTERVAL, &sid("ana")),
        Some(33)
    );
    assert_eq!(sim.fanout.keyframe_lost(now, &sid("nobody")), None);
}

#[test]
fn a_subscriber_whose_link_shrinks_gets_the_layer_that_fits_pauses_and_climbs_back() {
    let mut sim = Sim::new();
    sim.subscribe("ana");
    sim.subscribe("bob");
    let all = |_: u32, _: &str| true;
    // Two seconds, so that every layer's bitrate is measured: here about
    // 0.5 kb/s for q, 1 kb/s for h and 2 kb/s for f (tiny simulated frames).
    sim.run(0..60, all);
    let mut pauses = Vec::new();
    let mut fit = |sim: &mut Sim, frame: u32, budget: u64| {
        let at = sim.at(frame);
        sim.fanout.fit(
            at,
            |name| (*name == "bob").then_some(Budget::uniform(budget)),
            |name, paused| pauses.push((*name, paused)),
            |_, _| {},
        );
    };
    // Bob's estimate drops: h fits, f does not. Ana has no estimate.
    fit(&mut sim, 60, 1_400);
    sim.run(60..120, all);
    // Nothing fits, but q nearly does: a small picture beats none.
    fit(&mut sim, 120, 420);
    sim.run(120..180, all);
    // Far below q: the video pauses.
    fit(&mut sim, 180, 100);
    sim.run(180..240, all);
    // The link recovers.
    fit(&mut sim, 240, 1_000_000);
    sim.run(240..300, all);

    let ana = &sim.out["ana"];
    let bob = &sim.out["bob"];
    assert_continuous("ana", ana);
    assert_continuous("bob", bob);
    assert_eq!(layers_between(ana, sim.at(10), sim.at(300)), vec![33]);
    assert_eq!(layers_between(bob, sim.at(10), sim.at(60)), vec![33]);
    assert_eq!(layers_between(bob, sim.at(80), sim.at(120)), vec![22]);
    assert_eq!(layers_between(bob, sim.at(140), sim.at(180)), vec![11]);
    assert!(layers_between(bob, sim.at(180), sim.at(240)).is_empty());
    assert_eq!(layers_between(bob, sim.at(260), sim.at(300)), vec![33]);
    assert_eq!(pauses, vec![("bob", true), ("bob", false)]);
}

#[test]
fn a_paused_stream_resumes_only_once_the_lowest_layer_fits() {
    let mut sim = Sim::new();
    sim.subscribe("bob");
    sim.run(0..60, |_, _| true);
    let fit = |sim: &mut Sim, frame: u32, budget: u64| {
        let at = sim.at(frame);
        sim.fanout
            .fit(at, |_| Some(Budget::uniform(budget)), |_, _| {}, |_, _| {})
    };
    fit(&mut sim, 60, 100);
    // Near q but under it: not enough to resume (it was enough to stay).
    fit(&mut sim, 61, 420);
    sim.run(61..120, |_, _| true);
    assert!(layers_between(&sim.out["bob"], sim.at(61), sim.at(120)).is_empty());
}

/// Random loss drags the whole estimate down but leaves its delay-based
/// half high: the subscriber gets the lowest layer, not a paused video,
/// until the pause budget itself is far below that layer.
#[test]
fn loss_without_a_queue_lowers_the_layer_without_pausing() {
    let mut sim = Sim::new();
    sim.subscribe("bob");
    sim.run(0..60, |_, _| true);
    let mut pauses = Vec::new();
    let lossy = Budget {
        layers: 100,
        pause: 1_000_000,
    };
    sim.fanout.fit(
        sim.at(60),
        |_| Some(lossy),
        |_, p| pauses.push(p),
        |_, _| {},
    );
    sim.run(60..120, |_, _| true);
    assert_eq!(
        layers_between(&sim.out["bob"], sim.at(70), sim.at(120)),
        vec![11]
    );
    sim.fanout.fit(
        sim.at(120),
        |_| Some(Budget::uniform(100)),
        |_, p| pauses.push(p),
        |_, _| {},
    );
    sim.run(120..180, |_, _| true);
    assert!(layers_between(&sim.out["bob"], sim.at(121), sim.at(180)).is_empty());
    assert_eq!(pauses, vec![true]);
}

/// A subscriber the budget holds below what it asked for is reported with
/// what the next layer up needs: the room a probe must find.
#[test]
fn a_subscriber_held_below_its_layer_is_short_of_the_next_one() {
    let mut sim = Sim::new();
    sim.subscribe("bob");
    sim.run(0..60, |_, _| true);
    let short = |sim: &mut Sim, budget: u64| {
        let mut found = Vec::new();
        sim.fanout.fit(
            sim.at(60),
            |_| Some(Budget::uniform(budget)),
            |_, _| {},
            |_, extra| found.push(extra),
        );
        found
    };
    // On h (about 1 kb/s here), f (about 2 kb/s) needs about 1 kb/s more.
    let extra = short(&mut sim, 1_400);
    assert_eq!(extra.len(), 1, "{extra:?}");
    assert!((500..1_500).contains(&extra[0]), "{extra:?}");
    // Paused: the lowest layer is what is missing.
    let extra = short(&mut sim, 100);
    assert!((250..750).contains(&extra[0]), "{extra:?}");
    // Everything fits: nothing to probe for.
    assert_eq!(short(&mut sim, 1_000_000), Vec::<u64>::new());
    // Asked for h and got it: nothing either.
    sim.fanout
        .set_demand(&sid("bob"), Demand::UpTo(Rank::MEDIUM));
    assert_eq!(short(&mut sim, 1_400), Vec::<u64>::new());
}

#[test]
fn a_budget_never_raises_a_subscriber_above_what_it_asked_for() {
    let mut sim = Sim::new();
    sim.subscribe("bob");
    sim.fanout
        .set_demand(&sid("bob"), Demand::UpTo(Rank::MEDIUM));
    sim.run(0..60, |_, _| true);
    sim.fanout.fit(
        sim.at(60),
        |_| Some(Budget::uniform(1_000_000)),
        |_, _| {},
        |_, _| {},
    );
    sim.run(60..120, |_, _| true);
    assert_eq!(
        layers_between(&sim.out["bob"], sim.at(10), sim.at(120)),
        vec![22]
    );
}

/// A subscriber that paused the track itself gets no share of its link
/// for it, and must not hear that the link paused it.
#[test]
fn a_track_the_subscriber_paused_is_not_paused_for_bandwidth() {
    let mut sim = Sim::new();
    sim.subscribe("bob");
    sim.run(0..60, |_, _| true);
    sim.fanout.set_demand(&sid("bob"), Demand::Paused);
    let mut events = Vec::new();
    sim.fanout.fit(
        sim.at(60),
        |_| Some(Budget::uniform(0)),
        |_, paused| events.push(paused),
        |_, _| {},
    );
    sim.fanout.set_demand(&sid("bob"), Demand::UpTo(Rank::HIGH));
    sim.fanout.fit(
        sim.at(61),
        |_| Some(Budget::uniform(1_000_000)),
        |_, paused| events.push(paused),
        |_, _| {},
    );
    assert!(events.is_empty(), "{events:?}");
}

/// What each subscriber would take of its link: the measured rate of the
/// layer it asks for, nothing once it paused the track.
#[test]
fn each_subscriber_wants_the_rate_of_the_layer_it_asks_for() {
    let mut sim = Sim::new();
    sim.subscribe("ana");
    sim.subscribe("bob");
    sim.subscribe("cy");
    sim.fanout.set_demand(&sid("bob"), Demand::UpTo(Rank::LOW));
    sim.fanout.set_demand(&sid("cy"), Demand::Paused);
    // Nothing live yet: nothing to share out.
    assert!(sim.fanout.wants(sim.at(0)).all(|(_, want)| want == Some(0)));
    // Live, not measured yet (a window is a second): as much as it can get.
    sim.run(0..10, |_, _| true);
    let early: HashMap<&str, Option<u64>> = sim
        .fanout
        .wants(sim.at(10))
        .map(|(name, want)| (*name, want))
        .collect();
    assert_eq!(early["ana"], None, "{early:?}");
    assert_eq!(early["cy"], Some(0), "{early:?}");
    // Two seconds: every layer measured (about 2 kb/s for f, 0.5 for q).
    sim.run(10..60, |_, _| true);
    let wants: HashMap<&str, Option<u64>> = sim
        .fanout
        .wants(sim.at(60))
        .map(|(name, want)| (*name, want))
        .collect();
    let ana = wants["ana"].expect("f measured");
    let bob = wants["bob"].expect("q measured");
    assert!(ana > 3 * bob, "f against q: {wants:?}");
    assert!((250..750).contains(&bob), "{wants:?}");
    assert_eq!(wants["cy"], Some(0));
}

/// Two VP8 layers number their frames on their own (pictures 100.. and
/// 7000..); a subscriber moved from one to the other sees one numbering,
/// one more per frame, in the frames it gets.
#[test]
fn vp8_frame_numbers_continue_when_a_subscriber_changes_layer() {
    let t0 = Instant::now();
    let mut fanout: Fanout<&str> = Fanout::new(90_000, Some(KeyframeCodec::Vp8));
    fanout.add(sid("bob"), "bob");
    let packet = |picture: u16, tl0: u8, key: bool| {
        vec![
            0x90,
            0xf0,
            0x80 | (picture >> 8) as u8,
            picture as u8,
            tl0,
            0x20,
            if key { 0x10 } else { 0x11 },
            0,
            0,
        ]
    };
    let mut pictures = Vec::new();
    let mut tl0s = Vec::new();
    for n in 0..30u16 {
        if n == 10 {
            fanout.set_demand(&sid("bob"), Demand::UpTo(Rank::LOW));
        }
        let at = t0 + FRAME * u32::from(n);
        let key = n == 0 || n == 15;
        let ts = u32::from(n) * TICKS_PER_FRAME;
        for (rank, ssrc, first) in [(Rank::LOW, 11, 100u16), (Rank::HIGH, 33, 7000)] {
            let payload = packet(first + n, (first / 100) as u8 + n as u8, key);
            fanout.on_packet(at, rank, ssrc, n, ts, &payload);
            for (_, route) in fanout.routes() {
                let (descriptor, numbering) = route.vp8.expect("VP8 numbering");
                let mut copy = payload.clone();
                descriptor.write(&mut copy, numbering);
                let written = crate::vp8::parse(&copy).expect("a descriptor");
                pictures.push(written.picture_id.expect("a picture id").0);
                tl0s.push(written.tl0picidx.expect("a TL0PICIDX").0);
            }
        }
    }
    // q's first picture (f was not live yet), f's from its first keyframe
    // on, q's again from its keyframe at frame 15: one numbering
    // throughout, following the first picture sent.
    let expected: Vec<u16> = (100..131).collect();
    assert_eq!(pictures, expected);
    let expected_tl0: Vec<u8> = (1..32).collect();
    assert_eq!(tl0s, expected_tl0);
}

/// On a link too small for even the lowest layer the estimate still grows
/// back while the video is paused; each resume the link cannot carry makes
/// the next one wait longer, so the video does not come and go every few
/// seconds.
#[test]
fn resumes_that_fail_back_off() {
    let mut sim = Sim::new();
    sim.subscribe("bob");
    sim.run(0..60, |_, _| true);
    let mut events = Vec::new();
    let mut ran = 60;
    // Frames go on until `frame`, whose fit gives `budget`.
    let mut fit = |sim: &mut Sim, frame: u32, budget: u64| {
        sim.run(ran..frame, |_, _| true);
        ran = frame;
        let at = sim.at(frame);
        sim.fanout.fit(
            at,
            |_| Some(Budget::uniform(budget)),
            |_, paused| events.push((frame, paused)),
            |_, _| {},
        );
    };
    // Paused, then the estimate regrows: the first resume is at once.
    fit(&mut sim, 60, 100);
    fit(&mut sim, 90, 1_000_000);
    // Congested again 2 s later: the resume failed.
    fit(&mut sim, 150, 100);
    // The estimate regrows within a second, but the resume waits 4 s (the
    // first fit after them: a frame is a hair under 1/30 s here).
    for second in 1..=5 {
        fit(&mut sim, 150 + 30 * second, 1_000_000);
    }
    // Failed again: now 8 s.
    fit(&mut sim, 330, 100);
    for second in 1..=9 {
        fit(&mut sim, 330 + 30 * second, 1_000_000);
    }
    // Holding for 10 s counts as success: the next pause resumes at once.
    fit(&mut sim, 910, 100);
    fit(&mut sim, 940, 1_000_000);
    assert_eq!(
        events,
        vec![
            (60, true),
            (90, false),
            (150, true),
            (300, false),
            (330, true),
            (600, false),
            (910, true),
            (940, false),
        ]
    );
}
