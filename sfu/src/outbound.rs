//! What a subscriber connection sends outside webrtc-rs's pipeline: each
//! forwarded packet is written once, into a pooled buffer, with the
//! subscriber's header and SRTP (`srtp.rs`). Because those packets bypass
//! webrtc-rs's interceptors, this is also where their history for NACKs,
//! the counts for sender reports and the transport-wide sequence numbers
//! the bandwidth estimate comes from live. Sans-IO.

use crate::clock::{MediaClock, Ntp};
use crate::probe::{ProbeVerdict, Prober};
use crate::rewriter::Budget;
use crate::srtp::{Rollover, SrtpError, SrtpSender};
use crate::trendline::Trendline;
use crate::twcc::SendLog;
use bytes::{Bytes, BytesMut};
use rtc::interceptor::{BandwidthEstimator, Gcc, convert_twcc};
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::rtp_transceiver::RTCRtpSenderId;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::time::{Duration, Instant, SystemTime};

/// Packets kept per stream for retransmission: about half a second of
/// 720p video, longer than a NACK takes to come back on a sane link.
const HISTORY: usize = 512;
/// A stream idle this long (paused, or unsubscribed) lets go of its
/// history, which holds its publisher's buffers.
const IDLE: Duration = Duration::from_secs(5);
/// How often each stream's sender report goes out, as webrtc-rs and
/// browsers do.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Room for the RTP header, the largest payload a datagram carries and the tag.
const BUFFER_CAPACITY: usize = 2048;
/// Free buffers kept; a burst beyond it allocates, and the surplus is dropped.
const POOL_SIZE: usize = 4096;
const RTP_HEADER_LEN: usize = 12;
/// Most packets resent to one connection per second. A subscriber NACKing
/// everything over and over costs the worker this much and no more; a sane
/// one on a lossy link asks for a fraction of it.
const MAX_RESENDS_PER_SECOND: u32 = 1000;
/// With the transport-wide sequence number: a one-byte-header extension
/// block (RFC 8285) of one word holding it.
const RTP_HEADER_WITH_TWCC_LEN: usize = 20;
/// Sent packets whose feedback has not come by then count as lost and are
/// forgotten.
const FEEDBACK_WAIT: Duration = Duration::from_secs(2);
/// The estimate's ceiling, where it also starts. At the ceiling it limits
/// nothing (`Outbound::estimate` is `None`): a link is taken to carry what
/// the subscriber asks for until congestion (queueing delay, loss) says
/// otherwise. Starting lower would hold every new subscriber, and a
/// meeting's many tracks sharing one estimate, below what a sound link
/// carries; GCC only learns a link's size by overloading it. The ceiling
/// is not far above what a screen of video tiles needs, so that loss,
/// which lowers the estimate by steps, brings it down within seconds.
const MAX_ESTIMATE: f64 = 30_000_000.0;
const MIN_ESTIMATE: f64 = 50_000.0;
/// An overused link's estimate becomes this share of what it delivered
/// (libwebrtc's beta), ...
const CUT_FACTOR: f64 = 0.85;
/// ... at most this often: the feedback on packets sent after a cut takes
/// about this long to show whether it was enough.
const CUT_INTERVAL: Duration = Duration::from_millis(300);
/// The estimate is held under the rate a queue was found at until a probe
/// carries more, or this long without a queue seen.
const CAPACITY_HOLD: Duration = Duration::from_secs(30);
/// The hold goes no lower than this (bits per second).
const MIN_CAPACITY: u64 = 300_000;
/// Loss over the last two seconds past which video pauses even with no
/// queue building: with two packets in five lost, and their
/// retransmissions with them, there is little picture left to save.
/// LiveKit counts a link congested from a quarter. Measured over seconds,
/// not from GCC's average of each report (a few packets each on a small
/// layer), so that 25 % random loss never reads as 40 %.
const HEAVY_LOSS_PERCENT: u32 = 40;
/// Loss under which a heavy verdict clears. With the video paused, the
/// audio alone (some 50 packets a second) is the sample, and 60 % random
/// loss over it read under 40 % now and then: the video came back for a
/// second in the middle of the loss (streamstate.test.js, 1 run in ~20).
/// Under 30 % it reads some six deviations off, never.
const HEAVY_LOSS_CLEARED_PERCENT: u32 = 30;
/// Loss under which a link counts as clean: probes go out only then (a
/// lossy link shows loss on a probe whatever its room).
const CLEAN_LOSS_PERCENT: u32 = 2;
/// Fewer packets than this over the two seconds tell nothing about loss.
const MIN_LOSS_SAMPLE: u32 = 20;
/// Seconds without enough packets to tell after which a heavy-loss
/// verdict lapses (see `Congestion::heavy`).
const HEAVY_VERDICT_LAPSE: u32 = 10;
/// Video's RTP clock: what tells a probe which streams are video.
const VIDEO_CLOCK_RATE: u32 = 90_000;
/// A padding packet's payload: the most one padding count byte allows.
const PADDING_LEN: usize = 255;
/// All padding, its last byte saying how much (RFC 3550, 5.1).
static PADDING: [u8; PADDING_LEN] = {
    let mut padding = [0u8; PADDING_LEN];
    padding[PADDING_LEN - 1] = PADDING_LEN as u8;
    padding
};
/// Most bytes a probe sends at once (in its 10 ms pacing steps).
const MAX_PROBE_BURST: u64 = 32 * 1200;
/// A probe resends media at least this large (payload bytes); smaller
/// packets would make a probe of many packets again.
const MIN_PROBE_PAYLOAD: usize = 500;
/// How far back a probe looks for media to resend, in packets.
const PROBE_REACH: u16 = 128;

/// Datagram buffers, reused once the shell has sent them.
#[derive(Default)]
pub struct BufferPool {
    free: Vec<BytesMut>,
}

impl BufferPool {
    pub fn take(&mut self) -> BytesMut {
        match self.free.pop() {
            Some(mut buf) => {
                buf.clear();
                buf
            }
            None => BytesMut::with_capacity(BUFFER_CAPACITY),
        }
    }

    /// Takes back a datagram the shell is done with.
    pub fn give(&mut self, buf: BytesMut) {
        if buf.capacity() >= BUFFER_CAPACITY && self.free.len() < POOL_SIZE {
            self.free.push(buf);
        }
    }
}

/// One forwarded packet as it goes to a subscriber.
#[derive(Clone, Copy)]
pub struct OutPacket<'a> {
    pub ssrc: u32,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: &'a Bytes,
    /// VP8 frame numbers to write over the payload's.
    pub vp8: Option<(crate::vp8::Descriptor, crate::vp8::Numbering)>,
}

/// Which sender a stream belongs to, its clock, and its RTX stream if the
/// subscriber negotiated one.
#[derive(Clone, Copy)]
pub struct StreamInfo {
    pub sender: RTCRtpSenderId,
    pub clock_rate: u32,
    pub rtx: Option<Rtx>,
}

/// A retransmission stream (RFC 4588): its own SSRC and payload type,
/// announced in the offer (`a=ssrc-group:FID`) and accepted in the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rtx {
    pub ssrc: u32,
    pub payload_type: u8,
}

/// An RTX stream's own numbering and SRTP rollover.
struct RtxStream {
    rtx: Rtx,
    next: u16,
    rollover: Rollover,
}

impl RtxStream {
    fn new(rtx: Rtx) -> Self {
        Self {
            rtx,
            // Not from zero (RFC 3550 asks for an unpredictable start); the
            // SSRC is random already.
            next: (rtx.ssrc >> 16) as u16,
            rollover: Rollover::default(),
        }
    }

    /// The next sequence number and its rollover counter.
    fn take(&mut self) -> (u16, u32) {
        let sequence = self.next;
        self.next = self.next.wrapping_add(1);
        (sequence, self.rollover.send(sequence))
    }
}

/// What follows a packet's header.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Body {
    /// The payload as given.
    Media,
    /// Padding only (the header's P bit set).
    Padding,
    /// An RTX packet: the original sequence number, then the payload.
    Retransmission(u16),
}

#[derive(Clone)]
struct Sent {
    sequence: u16,
    timestamp: u32,
    marker: bool,
    payload_type: u8,
    payload: Bytes,
    vp8: Option<(crate::vp8::Descriptor, crate::vp8::Numbering)>,
}

struct OutStream {
    info: StreamInfo,
    rollover: Rollover,
    /// A ring by sequence number, allocated on the first packet.
    history: Vec<Option<Sent>>,
    packets: u32,
    octets: u32,
    /// The last timestamp sent and when: sender reports extrapolate from
    /// it while `clock` is not known.
    last: Option<(u32, Instant)>,
    /// The highest sequence number sent, and where a probe resending
    /// recent media goes on from (it walks back from the newest).
    last_sequence: Option<u16>,
    probe_cursor: Option<u16>,
    /// The publisher's line from RTP time to NTP time, in this stream's
    /// timestamps and on Salon's clock (`clock.rs`): what its sender
    /// reports say, so that the subscriber plays it in step with the
    /// publisher's other tracks.
    clock: Option<MediaClock>,
    /// The RTP time of the last sender report.
    reported: Option<u32>,
    rtx: Option<RtxStream>,
}

impl OutStream {
    fn new(info: StreamInfo) -> Self {
        Self {
            rtx: info.rtx.map(RtxStream::new),
            info,
            rollover: Rollover::default(),
            history: Vec::new(),
            packets: 0,
            octets: 0,
            last: None,
            last_sequence: None,
            probe_cursor: None,
            clock: None,
            reported: None,
        }
    }
}

/// Transport-wide congestion control (the TWCC header extension and its
/// feedback) on one connection: what was sent when, joined with when the
/// subscriber got it, into webrtc-rs's GCC estimator.
struct Congestion {
    /// The extension's id in the connection's negotiation.
    ext: u8,
    next: u16,
    log: SendLog,
    estimator: Gcc,
    prober: Prober,
    /// Packets the feedback reported (lost, all) in the current second and
    /// the one before.
    loss: [(u32, u32); 2],
    /// Whether the loss was heavy when last there were enough packets to
    /// tell: a paused video with a silent (DTX) or muted microphone leaves
    /// a connection with next to nothing to measure, and that is no sign
    /// the loss is over. It lapses after `HEAVY_VERDICT_LAPSE` seconds
    /// without a sample, so that a subscriber nobody probes (no RTX) does
    /// not wait for someone to speak.
    heavy: bool,
    /// Seconds since the loss could last be told.
    unmeasured: u32,
    /// The delay trend that finds a queue GCC's own check misses
    /// (`trendline.rs`), and when the estimate was last cut for it.
    trend: Trendline,
    last_cut: Option<Instant>,
    last_overuse: Option<Instant>,
    /// What the link delivered when a queue was last found: the estimate
    /// stays under it until a probe finds more room, or for
    /// `CAPACITY_HOLD` without a queue. GCC, started afresh under it,
    /// climbs some 8 % a second whatever the link, and would move the
    /// video up into the same queue every few seconds.
    capacity: Option<u64>,
}

impl Congestion {
    /// GCC's target, under what the link delivered when a queue was last
    /// found (see `capacity`).
    fn limit(&self) -> f64 {
        let target = self.estimator.target_bitrate();
        self.capacity.map_or(target, |c| target.min(c as f64))
    }

    /// Whether the loss is heavy now: over `HEAVY_LOSS_PERCENT` to become
    /// so, until under `HEAVY_LOSS_CLEARED_PERCENT`; the last verdict if
    /// too few packets tell.
    fn heavy_now(&self) -> bool {
        match self.recent_loss_percent() {
            Some(loss) if self.heavy => loss >= HEAVY_LOSS_CLEARED_PERCENT,
            Some(loss) => loss >= HEAVY_LOSS_PERCENT,
            None => self.heavy,
        }
    }

    /// Percent of the packets lost over the last two seconds, if enough
    /// were reported to tell.
    fn recent_loss_percent(&self) -> Option<u32> {
        let (lost, all) = self
            .loss
            .iter()
            .fold((0, 0), |(l, a), &(x, y)| (l + x, a + y));
        (all >= MIN_LOSS_SAMPLE).then(|| lost * 100 / all)
    }
}

/// The streams one subscriber connection sends, and their SRTP.
pub struct Outbound {
    srtp: SrtpSender,
    streams: HashMap<u32, OutStream>,
    /// How many of `streams` are video. Without one, audio goes without
    /// transport-wide numbers (see `numbered`).
    video_streams: usize,
    congestion: Option<Congestion>,
    /// Resends in the current second, and when it began.
    resends: (Option<Instant>, u32),
    /// Bytes sent since the start of the current second, and the rate of
    /// the last one in bits per second: what a probe adds to.
    sent: (Option<Instant>, u64),
    rate: u64,
}

impl Outbound {
    pub fn new(srtp: SrtpSender) -> Self {
        Self {
            srtp,
            streams: HashMap::new(),
            video_streams: 0,
            congestion: None,
            resends: (None, 0),
            sent: (None, 0),
            rate: 0,
        }
    }

    /// Numbers every packet for transport-wide feedback from now on, with
    /// extension id `ext`, or stops if `None` (the subscriber did not
    /// accept the extension).
    pub fn set_transport_cc(&mut self, ext: Option<u8>) {
        match (ext, self.congestion.as_mut()) {
            (None, _) => self.congestion = None,
            (Some(ext), Some(cc)) => cc.ext = ext,
            (Some(ext), None) => {
                self.congestion = Some(Congestion {
                    ext,
                    next: 0,
                    log: SendLog::default(),
                    estimator: Gcc::new(MAX_ESTIMATE, MIN_ESTIMATE, MAX_ESTIMATE),
                    prober: Prober::default(),
                    loss: [(0, 0); 2],
                    heavy: false,
                    unmeasured: 0,
                    trend: Trendline::default(),
                    last_cut: None,
                    last_overuse: None,
                    capacity: None,
                });
            }
        }
    }

    /// Takes the subscriber's transport-wide feedback.
    pub fn on_transport_feedback(&mut self, now: Instant, feedback: &TransportLayerCc) {
        let Some(cc) = self.congestion.as_mut() else {
            return;
        };
        for ack in convert_twcc(feedback) {
            cc.log.acknowledge(ack);
        }
        let reports = cc.log.take_reports();
        let lost = reports.iter().filter(|r| !r.arrived).count() as u32;
        cc.loss[0].0 += lost;
        cc.loss[0].1 += reports.len() as u32;
        cc.prober.observe(reports);
        cc.estimator.on_reports(now, reports);
        // A queue building up: the estimate drops to a little under what
        // the link delivered, as libwebrtc's does, so that the queue
        // drains; GCC climbs again from there (it has no setter: it is
        // started afresh, as after a probe), and stays under what was
        // delivered until a probe finds room.
        let overuse = cc.trend.observe(reports);
        if overuse {
            cc.prober.stop_sending();
            cc.last_overuse = Some(now);
        }
        if overuse
            && cc
                .last_cut
                .is_none_or(|at| now.saturating_duration_since(at) >= CUT_INTERVAL)
            && let Some(delivered) = cc.trend.delivered_rate()
        {
            let cut = (delivered as f64 * CUT_FACTOR).max(MIN_ESTIMATE);
            if cut < cc.limit() {
                cc.estimator = Gcc::new(cut, MIN_ESTIMATE, MAX_ESTIMATE);
                cc.last_cut = Some(now);
                // A queue found while sending little (a static screen,
                // jitter taken for a queue) says little of the link's
                // size: the hold goes no lower than a small video's.
                cc.capacity = Some(delivered.max(MIN_CAPACITY));
            }
        }
        // The hold lapses when no queue was seen for a while; GCC goes on
        // from it, not from wherever it climbed meanwhile.
        if let Some(capacity) = cc.capacity
            && cc
                .last_overuse
                .is_none_or(|at| now.saturating_duration_since(at) >= CAPACITY_HOLD)
        {
            let from = cc.estimator.target_bitrate().min(capacity as f64);
            cc.estimator = Gcc::new(from, MIN_ESTIMATE, MAX_ESTIMATE);
            cc.capacity = None;
        }
    }

    /// Probes the link for `extra` bits per second more than it carries
    /// now (the estimate, or what the connection sends if that is more),
    /// which the next layer up of some track would need, but for no more
    /// than twice that, as libwebrtc caps its probes: a link far smaller
    /// than the goal is overloaded less, and a larger goal takes a few
    /// probes. False if a probe cannot start now (one runs or failed
    /// lately, nothing limits, no video track has an RTX stream to pad, or
    /// the link is losing packets anyway).
    pub fn start_probe(&mut self, now: Instant, extra: u64) -> bool {
        let Some(budget) = self.estimate() else {
            return false;
        };
        // Padding goes only on a video track's RTX stream (`padding_due`).
        let can_pad = self
            .streams
            .values()
            .any(|s| s.info.clock_rate == VIDEO_CLOCK_RATE && s.rtx.is_some());
        if !can_pad {
            return false;
        }
        let media = self.rate;
        let base = budget.layers.max(media);
        let goal = base.saturating_add(extra).min(base.saturating_mul(2));
        let Some(cc) = self.congestion.as_mut() else {
            return false;
        };
        // A link whose queue was found at some rate is probed a quarter
        // above it at most: a probe that overloads it by more fills its
        // queue before the feedback stops it. A layer further up takes a
        // probe per step.
        let goal = cc
            .capacity
            .map_or(goal, |c| goal.min(c.saturating_mul(5) / 4));
        if goal <= base {
            return false;
        }
        if cc
            .recent_loss_percent()
            .is_some_and(|loss| loss >= CLEAN_LOSS_PERCENT)
        {
            return false;
        }
        cc.prober.start(now, media, goal)
    }

    /// The probe's verdict once its feedback is in. A link that carried
    /// more than the estimate raises it to what it carried, with GCC
    /// started afresh from there (nothing else sets its target; LiveKit
    /// likewise resets its estimator after a probe).
    pub fn conclude_probe(&mut self, now: Instant) -> Option<ProbeVerdict> {
        let cc = self.congestion.as_mut()?;
        let verdict = cc.prober.conclude(now)?;
        if let ProbeVerdict::Carried(rate) = verdict
            && (rate as f64) > cc.limit()
        {
            cc.estimator = Gcc::new(rate as f64, MIN_ESTIMATE, MAX_ESTIMATE);
            // The link carried more than the queue's rate: room found.
            cc.capacity = cc.capacity.filter(|&c| c >= rate);
        }
        Some(verdict)
    }

    /// Whether a probe is sending: the shell should call `pad` every few
    /// milliseconds until it is not.
    pub fn is_probing(&self, now: Instant) -> bool {
        self.congestion
            .as_ref()
            .is_some_and(|cc| cc.prober.is_sending(now))
    }

    /// Whether a probe is behind, and if so on which video stream's RTX
    /// stream it should send how many bytes now (the stream that sent
    /// last). Only RTX carries probes: there they take no sequence numbers
    /// from the media, fit between any two packets, and a lost one leaves
    /// no gap a decoder waits on. A subscriber without RTX is not probed.
    pub fn padding_due(&self, now: Instant) -> Option<(u32, u64)> {
        let due = self.congestion.as_ref()?.prober.due(now);
        if due == 0 {
            return None;
        }
        let (&ssrc, _) = self
            .streams
            .iter()
            .filter(|(_, s)| s.info.clock_rate == VIDEO_CLOCK_RATE && s.rtx.is_some())
            .max_by_key(|(_, s)| s.last.map(|(_, at)| at))?;
        Some((ssrc, due.min(MAX_PROBE_BURST)))
    }

    /// About `bytes` of probe on the RTX stream of stream `ssrc`, each
    /// packet handed to `out`: the stream's recent media again, newest
    /// first, as libwebrtc probes (a packet of some 1000 bytes, where a
    /// padding-only packet carries 255 at most, so that a link whose queue
    /// counts packets fills a quarter as fast, and the kernel sends a
    /// quarter as many datagrams); padding-only packets, with the
    /// timestamp of the media's last packet, when no recent packet is
    /// large enough. They carry transport-wide numbers, so the feedback
    /// tells how the link took them; they are kept for neither NACKs nor
    /// reports. The receiver drops the copies as duplicates.
    pub fn pad(
        &mut self,
        now: Instant,
        ssrc: u32,
        bytes: u64,
        pool: &mut BufferPool,
        mut out: impl FnMut(BytesMut),
    ) {
        let mut left = bytes;
        while left > 0 {
            let datagram = match self.probe_packet(ssrc) {
                Some(sequence) => self.write_again(now, ssrc, sequence, pool),
                None => self.padding_packet(now, ssrc, pool),
            };
            let Some(datagram) = datagram else {
                return;
            };
            left = left.saturating_sub(datagram.len() as u64);
            if let Some(cc) = self.congestion.as_mut() {
                cc.prober.sent(datagram.len());
            }
            out(datagram);
        }
    }

    /// The next recent packet of stream `ssrc` worth resending as a probe,
    /// walking back from the newest, and from the newest again once
    /// `PROBE_REACH` packets back.
    fn probe_packet(&mut self, ssrc: u32) -> Option<u16> {
        let stream = self.streams.get_mut(&ssrc)?;
        // Without RTX a resend would go on the media stream: no probe.
        stream.rtx.as_ref()?;
        let newest = stream.last_sequence?;
        let mut sequence = stream
            .probe_cursor
            .filter(|&c| newest.wrapping_sub(c) < PROBE_REACH)
            .unwrap_or(newest);
        for _ in 0..PROBE_REACH {
            let candidate = sequence;
            sequence = sequence.wrapping_sub(1);
            let large = stream
                .history
                .get(candidate as usize % HISTORY)
                .and_then(Option::as_ref)
                .is_some_and(|s| s.sequence == candidate && s.payload.len() >= MIN_PROBE_PAYLOAD);
            if large {
                stream.probe_cursor = Some(sequence);
                return Some(candidate);
            }
            if newest.wrapping_sub(sequence) >= PROBE_REACH {
                break;
            }
        }
        stream.probe_cursor = None;
        None
    }

    /// A padding-only packet on the RTX stream of stream `ssrc`.
    fn padding_packet(
        &mut self,
        now: Instant,
        ssrc: u32,
        pool: &mut BufferPool,
    ) -> Option<BytesMut> {
        let stream = self.streams.get_mut(&ssrc)?;
        let timestamp = stream.last.map_or(0, |(ts, _)| ts);
        let rtx = stream.rtx.as_mut()?;
        let (sequence, roc) = rtx.take();
        let padding = Bytes::from_static(&PADDING);
        let packet = OutPacket {
            ssrc: rtx.rtx.ssrc,
            payload_type: rtx.rtx.payload_type,
            sequence,
            timestamp,
            marker: false,
            payload: &padding,
            vp8: None,
        };
        let datagram = write(
            now,
            &mut self.srtp,
            pool,
            packet,
            roc,
            self.congestion.as_mut(),
            Body::Padding,
        )
        .ok()?;
        self.sent.1 += datagram.len() as u64;
        Some(datagram)
    }

    /// What the subscriber's link carries, in bits per second, if it
    /// gives feedback and that feedback showed congestion (below the
    /// ceiling; at it, the link is not known to limit anything). Layers
    /// fit the whole estimate; pausing goes by its delay-based half alone
    /// unless the loss is heavy (`Budget::pause`).
    pub fn estimate(&self) -> Option<Budget> {
        let cc = self.congestion.as_ref()?;
        let estimator = &cc.estimator;
        let capacity = cc.capacity.map_or(f64::MAX, |c| c as f64);
        let target = cc.limit();
        if target >= MAX_ESTIMATE {
            return None;
        }
        let heavy = cc.heavy_now();
        let pause = if heavy {
            target
        } else {
            estimator.delay_based_bitrate().min(capacity)
        };
        Some(Budget {
            layers: target as u64,
            pause: pause as u64,
        })
    }

    /// The protected datagram of `packet`, noted for retransmission and
    /// reports. In steady state it allocates nothing.
    pub fn send(
        &mut self,
        now: Instant,
        info: StreamInfo,
        packet: OutPacket<'_>,
        pool: &mut BufferPool,
    ) -> Result<BytesMut, SrtpError> {
        let stream = match self.streams.entry(packet.ssrc) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                self.video_streams += usize::from(info.clock_rate == VIDEO_CLOCK_RATE);
                entry.insert(OutStream::new(info))
            }
        };
        // A new RTX stream only for a new SSRC: the same SSRC numbered from
        // the start again would reuse SRTP's (SSRC, index) pairs.
        match (stream.rtx.as_mut(), info.rtx) {
            (Some(current), Some(rtx)) if current.rtx.ssrc == rtx.ssrc => current.rtx = rtx,
            (_, rtx) => stream.rtx = rtx.map(RtxStream::new),
        }
        stream.info = info;
        let roc = stream.rollover.send(packet.sequence);
        if stream.history.is_empty() {
            stream.history.resize(HISTORY, None);
        }
        stream.history[packet.sequence as usize % HISTORY] = Some(Sent {
            sequence: packet.sequence,
            timestamp: packet.timestamp,
            marker: packet.marker,
            payload_type: packet.payload_type,
            payload: packet.payload.clone(),
            vp8: packet.vp8,
        });
        stream.packets = stream.packets.wrapping_add(1);
        stream.octets = stream.octets.wrapping_add(packet.payload.len() as u32);
        stream.last = Some((packet.timestamp, now));
        if stream
            .last_sequence
            .is_none_or(|last| (packet.sequence.wrapping_sub(last) as i16) > 0)
        {
            stream.last_sequence = Some(packet.sequence);
        }
        let congestion = numbered(&mut self.congestion, self.video_streams, info);
        let datagram = write(
            now,
            &mut self.srtp,
            pool,
            packet,
            roc,
            congestion,
            Body::Media,
        )?;
        self.sent.1 += datagram.len() as u64;
        Ok(datagram)
    }

    /// The datagram that sends packet `sequence` of stream `ssrc` again, if
    /// it is still in the history.
    pub fn resend(
        &mut self,
        now: Instant,
        ssrc: u32,
        sequence: u16,
        pool: &mut BufferPool,
    ) -> Option<BytesMut> {
        let (start, count) = &mut self.resends;
        if start.is_none_or(|s| now.saturating_duration_since(s) >= Duration::from_secs(1)) {
            *start = Some(now);
            *count = 0;
        }
        if *count >= MAX_RESENDS_PER_SECOND {
            return None;
        }
        *count += 1;
        self.write_again(now, ssrc, sequence, pool)
    }

    /// Packet `sequence` of stream `ssrc` written again from the history:
    /// on the stream's RTX stream if it has one, else as it was (counted in
    /// the stream's sender reports then, as a packet sent).
    fn write_again(
        &mut self,
        now: Instant,
        ssrc: u32,
        sequence: u16,
        pool: &mut BufferPool,
    ) -> Option<BytesMut> {
        let stream = self.streams.get_mut(&ssrc)?;
        let sent = stream
            .history
            .get(sequence as usize % HISTORY)?
            .as_ref()
            .filter(|s| s.sequence == sequence)?;
        let mut packet = OutPacket {
            ssrc,
            payload_type: sent.payload_type,
            sequence,
            timestamp: sent.timestamp,
            marker: sent.marker,
            payload: &sent.payload,
            vp8: sent.vp8,
        };
        let (roc, body) = match stream.rtx.as_mut() {
            Some(rtx) => {
                let (rtx_sequence, roc) = rtx.take();
                packet.ssrc = rtx.rtx.ssrc;
                packet.payload_type = rtx.rtx.payload_type;
                packet.sequence = rtx_sequence;
                (roc, Body::Retransmission(sequence))
            }
            None => {
                stream.packets = stream.packets.wrapping_add(1);
                stream.octets = stream.octets.wrapping_add(sent.payload.len() as u32);
                (stream.rollover.of(sequence), Body::Media)
            }
        };
        let congestion = numbered(&mut self.congestion, self.video_streams, stream.info);
        let datagram = write(now, &mut self.srtp, pool, packet, roc, congestion, body).ok()?;
        self.sent.1 += datagram.len() as u64;
        Some(datagram)
    }

    /// Lets go of stream `ssrc` (its history, counters and RTX stream):
    /// the subscriber unsubscribed from its track. NACKs for it find
    /// nothing from then on.
    pub fn forget_stream(&mut self, ssrc: u32) {
        if let Some(stream) = self.streams.remove(&ssrc)
            && stream.info.clock_rate == VIDEO_CLOCK_RATE
        {
            self.video_streams = self.video_streams.saturating_sub(1);
        }
    }

    /// What stream `ssrc`'s sender reports are to say from now on: the
    /// publisher's line from its RTP time to NTP time, moved into the
    /// stream's timestamps and onto Salon's clock (`clock.rs`); `None`
    /// while that is not known, which leaves the last one known: a
    /// receiver fits a line to many reports, and two lines in turn would
    /// throw it off (the one from sending times is off by the encoder's
    /// delay). A stream not sent on yet is left alone.
    pub fn set_clock(&mut self, ssrc: u32, clock: Option<MediaClock>) {
        if let Some(stream) = self.streams.get_mut(&ssrc)
            && clock.is_some()
        {
            stream.clock = clock;
        }
    }

    /// The once-a-second upkeep: a sender report for every stream that
    /// sent lately (returned; `wall` is the wall clock at `now`), the
    /// rate sent over the last second, the loss window's turn, stale
    /// packets out of the send log, and idle streams' histories let go.
    pub fn tick(&mut self, now: Instant, wall: SystemTime) -> Vec<(RTCRtpSenderId, SenderReport)> {
        let ntp = Ntp::from_wall(wall);
        let (start, bytes) = &mut self.sent;
        if let Some(elapsed) = start.map(|s| now.saturating_duration_since(s).as_micros() as u64)
            && elapsed > 0
        {
            self.rate = *bytes * 8 * 1_000_000 / elapsed;
        }
        *start = Some(now);
        *bytes = 0;
        if let Some(cc) = self.congestion.as_mut() {
            match cc.recent_loss_percent() {
                Some(_) => {
                    cc.heavy = cc.heavy_now();
                    cc.unmeasured = 0;
                }
                None => {
                    cc.unmeasured += 1;
                    if cc.unmeasured >= HEAVY_VERDICT_LAPSE {
                        cc.heavy = false;
                    }
                }
            }
            cc.loss = [(0, 0), cc.loss[0]];
            if let Some(cutoff) = now.checked_sub(FEEDBACK_WAIT) {
                cc.log.prune_before(cutoff);
            }
        }
        let mut reports = Vec::new();
        for (&ssrc, stream) in &mut self.streams {
            let Some((timestamp, at)) = stream.last else {
                continue;
            };
            let idle = now.saturating_duration_since(at);
            if idle >= IDLE {
                stream.history = Vec::new();
                continue;
            }
            let rtp_time = match &stream.clock {
                Some(clock) => clock.rtp_at(ntp),
                // Until the publisher's reports are known: the RTP clock
                // ran on since the last packet.
                None => timestamp.wrapping_add(
                    (idle.as_micros() * u128::from(stream.info.clock_rate) / 1_000_000) as u32,
                ),
            };
            // RTP time that went back since the last report (the line
            // moved: the first report of the publisher's, a layer with a
            // later one) is left unsaid, as LiveKit does, until time
            // catches up: a receiver would take it for a clock gone wrong.
            if stream
                .reported
                .is_some_and(|last| (rtp_time.wrapping_sub(last) as i32) < 0)
            {
                continue;
            }
            stream.reported = Some(rtp_time);
            reports.push((
                stream.info.sender,
                SenderReport {
                    ssrc,
                    ntp_time: ntp.0,
                    rtp_time,
                    packet_count: stream.packets,
                    octet_count: stream.octets,
                    ..Default::default()
                },
            ));
        }
        reports
    }
}

/// The connection's transport-wide numbering for a packet of a stream
/// like `info`, if it gets a number: video always, audio only while the
/// connection also gets video. The feedback is for the video's bandwidth
/// estimate, and the audio beside it is part of its loss sample (a paused
/// video leaves only the audio to tell when the loss is over). A listener
/// without video has nothing to estimate, and its browser would send a
/// feedback packet for every few audio packets it gets: 100 listeners sent
/// the worker some 1 000 feedback packets a second for 50 audio packets
/// (BENCHMARKS.md, session 15). LiveKit offers transport-cc on video only;
/// Salon negotiates it on audio too, for that loss sample.
fn numbered(
    congestion: &mut Option<Congestion>,
    video_streams: usize,
    info: StreamInfo,
) -> Option<&mut Congestion> {
    if info.clock_rate == VIDEO_CLOCK_RATE || video_streams > 0 {
        congestion.as_mut()
    } else {
        None
    }
}

/// Writes `packet` with a 12-byte header and, if the connection gives
/// transport-wide feedback, the next transport-wide sequence number as the
/// one extension (the publisher's extensions are not copied: their ids
/// were negotiated on another connection), and protects it; the send log
/// notes it as leaving at `now`. `body` says whether the payload is media,
/// padding (the P bit) or a retransmission (RTX: the original sequence
/// number first).
fn write(
    now: Instant,
    srtp: &mut SrtpSender,
    pool: &mut BufferPool,
    packet: OutPacket<'_>,
    roc: u32,
    congestion: Option<&mut Congestion>,
    body: Body,
) -> Result<BytesMut, SrtpError> {
    let mut buf = pool.take();
    let extension = if congestion.is_some() { 0x10 } else { 0 };
    let padded = if body == Body::Padding { 0x20 } else { 0 };
    buf.extend_from_slice(&[
        0x80 | padded | extension,
        (u8::from(packet.marker) << 7) | (packet.payload_type & 0x7f),
    ]);
    buf.extend_from_slice(&packet.sequence.to_be_bytes());
    buf.extend_from_slice(&packet.timestamp.to_be_bytes());
    buf.extend_from_slice(&packet.ssrc.to_be_bytes());
    let header_len = match &congestion {
        Some(cc) => {
            let [hi, lo] = cc.next.to_be_bytes();
            // 0xBEDE, one word: the element (id, length 2 - 1) and a pad byte.
            buf.extend_from_slice(&[0xbe, 0xde, 0x00, 0x01, (cc.ext << 4) | 1, hi, lo, 0]);
            RTP_HEADER_WITH_TWCC_LEN
        }
        None => RTP_HEADER_LEN,
    };
    let payload_at = match body {
        Body::Retransmission(original) => {
            buf.extend_from_slice(&original.to_be_bytes());
            header_len + 2
        }
        Body::Media | Body::Padding => header_len,
    };
    buf.extend_from_slice(packet.payload);
    if let Some((descriptor, numbering)) = packet.vp8 {
        descriptor.write(&mut buf[payload_at..], numbering);
    }
    srtp.protect(&mut buf, header_len, packet.ssrc, roc, packet.sequence)?;
    // Noted for the bandwidth estimate as it leaves, with the number it
    // carries; the next packet gets the next one.
    if let Some(cc) = congestion {
        cc.log
            .sent(packet.ssrc, packet.sequence, cc.next, buf.len(), now);
        cc.next = cc.next.wrapping_add(1);
    }
    Ok(buf)
}

#[cfg(test)]
#[path = "outbound_tests.rs"]
mod tests;
