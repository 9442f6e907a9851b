//! The sans-IO core of a media worker: every peer connection of the rooms
//! pinned to the worker, the routing of its shared socket, and the tracks
//! forwarded between those connections. It reads no clock and owns no
//! socket: the shell feeds it datagrams, commands and timeouts with an
//! `Instant`, and sends the datagrams it queues.

use super::data::DataOut;
use super::demux::Demux;
use super::{ConnEvent, ConnId, ConnNotice, ConnRole, OpenConn, TrackKey, WorkerCommand};
use crate::clock::{ClockOffset, Ntp};
use crate::feedback::{FEEDBACK_SLOT, Feedback, RtcpTap};
use crate::forwarder::{DownTrack, Followup, Forwarder, ForwarderCommand, ForwarderHandle};
use crate::outbound::{BufferPool, OutPacket, Outbound, REPORT_INTERVAL, StreamInfo};
use crate::red::Delivery;
use crate::repair::{REPAIR_SLOT, RtxRepair};
use crate::rewriter::{Budget, Rank, Want};
use crate::srtp::KeyTap;
use bytes::{Bytes, BytesMut};
use rtc::ice::tcp_type::TcpType;
use rtc::interceptor::{NackGeneratorBuilder, ReceiverReportBuilder};
use rtc::interceptor::{Registry, Slot};
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_simulcast_extension_headers, configure_twcc_receiver_only,
};
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::event::{RTCDataChannelEvent, RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::RTCRtpReceiverId;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use salon_common::ParticipantSid;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

pub(crate) const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
pub(crate) const TRANSPORT_CC_URI: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// One peer connection and what the worker knows about it.
pub(crate) struct Connection {
    pub(crate) pc: RTCPeerConnection,
    /// The id the connection's last answer gave the audio level extension;
    /// the session sets it after answering a publisher's offer.
    pub(crate) audio_level_ext: Option<u8>,
    owner: ParticipantSid,
    notices: mpsc::UnboundedSender<ConnNotice>,
    levels: Option<crate::forwarder::LevelSink>,
    /// The channels the room's data packets go out on (subscriber connections).
    data_out: Option<DataOut>,
    /// The layer of every SSRC the connection receives, from its rid.
    ranks: HashMap<u32, Rank>,
    /// Tracks announced by the connection whose codec is not known yet.
    opening: HashMap<String, RTCRtpReceiverId>,
    /// Tracks the connection publishes, by the client's track id (cid).
    tracks: HashMap<String, TrackKey>,
    /// The timeout last handed to the timer heap.
    next_timeout: Option<Instant>,
    dirty: bool,
    /// Subscriber connections: where their SRTP keys show up.
    keys: Option<Arc<KeyTap>>,
    /// What the subscriber says of the packets it got.
    feedback: Option<std::sync::mpsc::Receiver<Feedback>>,
    /// The id the subscriber's answer gave transport-wide sequence numbers.
    transport_cc_ext: Option<u8>,
    /// Subscriber connections once connected: what they send outside
    /// webrtc-rs's pipeline.
    outbound: Option<Outbound>,
    /// Where webrtc-rs last sent DTLS or SRTP: the selected candidate pair.
    peer: Option<(TransportProtocol, SocketAddr)>,
    /// Publisher connections: how far Salon's clock is from the client's,
    /// by its sender reports (`clock.rs`).
    clock_offset: ClockOffset,
    /// When the peer's last datagram arrived (the kernel's time): what a
    /// sender report it carried is timed by, so that a worker waiting for
    /// a core does not make the client's clock look late.
    last_arrival: Option<Instant>,
    /// Publisher connections: packets sent and packets that arrived the
    /// first time, over the connection's life (`repair.rs`), for the
    /// connection quality.
    pub(crate) uplink: (u64, u64),
}

impl Connection {
    /// Sets the id the subscriber's answer gave the transport-wide
    /// sequence number extension (`None`: it gives no such feedback).
    pub(crate) fn set_transport_cc(&mut self, ext: Option<u8>) {
        self.transport_cc_ext = ext;
        if let Some(outbound) = self.outbound.as_mut() {
            outbound.set_transport_cc(ext);
        }
    }

    /// Sends a data packet (encoded) to the client of a subscriber connection.
    pub(crate) fn send_data(
        &mut self,
        now: Instant,
        kind: livekit_protocol::data_packet::Kind,
        payload: &[u8],
    ) {
        if let Some(data) = self.data_out.as_mut() {
            data.send(&mut self.pc, now, kind, payload);
        }
    }
}

/// A datagram for the shell to send: over UDP, or framed on the ICE-TCP
/// connection from `to`.
pub(crate) struct Transmit {
    pub(crate) protocol: TransportProtocol,
    pub(crate) to: SocketAddr,
    pub(crate) datagram: BytesMut,
}

pub(crate) struct WorkerCore {
    udp_addr: SocketAddr,
    /// Where the worker accepts ICE-TCP, if it does.
    tcp_addr: Option<SocketAddr>,
    /// For the handles this worker gives out; weak, so that the worker
    /// stops once the node and every session let go of it.
    handle: mpsc::WeakUnboundedSender<WorkerCommand>,
    conns: HashMap<ConnId, Connection>,
    tracks: HashMap<TrackKey, Forwarder>,
    demux: Demux,
    timers: BinaryHeap<Reverse<(Instant, ConnId)>>,
    dirty: Vec<ConnId>,
    /// Connections whose webrtc-rs code panicked, to close.
    broken: Vec<ConnId>,
    transmits: VecDeque<Transmit>,
    /// Buffers for forwarded packets, back from the shell once sent.
    pool: BufferPool,
    /// The wall clock at an instant, for sender reports.
    clock: (Instant, SystemTime),
    next_report: Instant,
    /// Subscriber connections whose probe is sending, and when it next
    /// sends (`None`: none is).
    probing: Vec<ConnId>,
    next_probe: Option<Instant>,
    /// Reused between flushes so that reading a connection allocates nothing.
    inbox: Vec<RTCMessage>,
    events: Vec<RTCPeerConnectionEvent>,
    /// Publishers' sender reports: SSRC, NTP time, RTP time.
    sender_reports: Vec<(u32, Ntp, u32)>,
    next_id: u64,
}

/// Most sender reports taken from one connection per flush.
const MAX_SENDER_REPORTS: usize = 64;
/// Most datagrams queued for sending; beyond it the oldest are dropped, as
/// a full socket buffer would.
const MAX_TRANSMITS: usize = 65_536;
/// How often a running probe sends what it is behind on: often enough
/// that its packets are spread over the probe, not bunched per second.
const PROBE_PACE: Duration = Duration::from_millis(10);

impl WorkerCore {
    /// `clock` is the wall clock at an instant: the core reads no clock
    /// but sender reports carry wall-clock time.
    pub(crate) fn new(
        udp_addr: SocketAddr,
        tcp_addr: Option<SocketAddr>,
        handle: mpsc::WeakUnboundedSender<WorkerCommand>,
        clock: (Instant, SystemTime),
    ) -> Self {
        Self {
            udp_addr,
            tcp_addr,
            handle,
            conns: HashMap::new(),
            tracks: HashMap::new(),
            demux: Demux::default(),
            timers: BinaryHeap::new(),
            dirty: Vec::new(),
            broken: Vec::new(),
            transmits: VecDeque::new(),
            pool: BufferPool::default(),
            clock,
            next_report: clock.0 + REPORT_INTERVAL,
            probing: Vec::new(),
            next_probe: None,
            inbox: Vec::new(),
            events: Vec::new(),
            sender_reports: Vec::new(),
            next_id: 1,
        }
    }

    /// A datagram that arrived on the worker's UDP socket at `arrived`
    /// (the kernel's time, at or before `now`), or a frame of an ICE-TCP
    /// connection. Returns false if it belongs to no connection.
    pub(crate) fn handle_datagram(
        &mut self,
        now: Instant,
        arrived: Instant,
        protocol: TransportProtocol,
        from: SocketAddr,
        datagram: &[u8],
    ) -> bool {
        let Some(id) = self.demux.route((protocol, from), datagram) else {
            tracing::trace!("datagram for no connection");
            return false;
        };
        let Some(conn) = self.conns.get_mut(&id) else {
            return false;
        };
        let local_addr = match protocol {
            TransportProtocol::TCP => self.tcp_addr.unwrap_or(self.udp_addr),
            _ => self.udp_addr,
        };
        // The connection's time for it: the transport-wide feedback to a
        // publisher reports it as the packet's arrival.
        let message = TaggedBytesMut {
            now: arrived,
            transport: TransportContext {
                local_addr,
                peer_addr: from,
                ecn: None,
                transport_protocol: protocol,
            },
            message: BytesMut::from(datagram),
        };
        conn.last_arrival = Some(arrived);
        match guarded(|| conn.pc.handle_read(message)) {
            Some(Ok(())) => {}
            // Whatever a peer sends, it only ever costs it its own packet.
            Some(Err(err)) => tracing::trace!(%err, "a peer's datagram was refused"),
            None => self.broken.push(id),
        }
        mark(&mut self.dirty, id, conn);
        self.flush(now);
        self.close_broken();
        true
    }

    pub(crate) fn handle_command(&mut self, now: Instant, command: WorkerCommand) {
        match command {
            WorkerCommand::Open { open, reply } => {
                let result = self.open(now, open);
                let _ = reply.send(result);
            }
            WorkerCommand::With { conn: id, f } => {
                if let Some(conn) = self.conns.get_mut(&id) {
                    if guarded(|| f(conn, now)).is_none() {
                        self.broken.push(id);
                    }
                    mark(&mut self.dirty, id, conn);
                }
                // A dropped `f` tells the caller the connection is gone.
            }
            WorkerCommand::Forward { track, command } => self.forward_command(now, track, command),
            WorkerCommand::Close(id) => self.close(id),
        }
        self.flush(now);
        self.close_broken();
    }

    /// The earliest instant a connection wants `handle_timeout`.
    pub(crate) fn poll_timeout(&mut self) -> Option<Instant> {
        // Entries superseded by a later timeout of the same connection are skipped.
        let next = self
            .next_probe
            .map_or(self.next_report, |p| p.min(self.next_report));
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if self.conns.get(&id).and_then(|c| c.next_timeout) == Some(at) {
                return Some(at.min(next));
            }
            self.timers.pop();
        }
        Some(next)
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            if conn.next_timeout != Some(at) {
                continue;
            }
            conn.next_timeout = None;
            match guarded(|| conn.pc.handle_timeout(now)) {
                Some(Ok(())) => {}
                Some(Err(err)) => tracing::debug!(%err, "peer connection timeout failed"),
                None => self.broken.push(id),
            }
            mark(&mut self.dirty, id, conn);
        }
        if now >= self.next_report {
            self.next_report = now + REPORT_INTERVAL;
            self.tick(now);
        }
        if self.next_probe.is_some_and(|at| now >= at) {
            self.pad(now);
        }
        self.flush(now);
        self.close_broken();
    }

    /// How many datagrams wait to be sent.
    pub(crate) fn queued(&self) -> usize {
        self.transmits.len()
    }

    /// The next datagram to send, and where.
    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Takes back a datagram's buffer once the shell has sent it.
    pub(crate) fn recycle(&mut self, datagram: BytesMut) {
        self.pool.give(datagram);
    }

    /// Once a second: sender reports for the streams subscribers get
    /// outside webrtc-rs's pipeline (which therefore cannot report them),
    /// and every subscriber's video layers fitted to its bandwidth estimate.
    fn tick(&mut self, now: Instant) {
        self.send_reports(now);
        self.fit_layers(now);
    }

    /// Sends what the running probes are behind on.
    fn pad(&mut self, now: Instant) {
        let (conns, pool, transmits) = (&mut self.conns, &mut self.pool, &mut self.transmits);
        self.probing.retain(|&id| {
            let Some(conn) = conns.get_mut(&id) else {
                return false;
            };
            let (Some(outbound), Some((protocol, to))) = (conn.outbound.as_mut(), conn.peer) else {
                return false;
            };
            if let Some((ssrc, bytes)) = outbound.padding_due(now) {
                outbound.pad(now, ssrc, bytes, pool, |datagram| {
                    push(
                        transmits,
                        Transmit {
                            protocol,
                            to,
                            datagram,
                        },
                    );
                });
            }
            outbound.is_probing(now)
        });
        self.next_probe = (!self.probing.is_empty()).then_some(now + PROBE_PACE);
    }

    /// Divides each subscriber's estimate among the video tracks it gets,
    /// by what each asks for (`Budget::divide`), and lets each track pick
    /// the best layer that fits its share;
    /// a subscriber held below a layer it asked for gets its link probed
    /// for the room that layer needs (`probe.rs`).
    fn fit_layers(&mut self, now: Instant) {
        for (id, conn) in &mut self.conns {
            if let Some(verdict) = conn.outbound.as_mut().and_then(|o| o.conclude_probe(now)) {
                tracing::debug!(conn = ?id, ?verdict, "bandwidth probe");
            }
        }
        // Each limited subscriber's estimate, and what each of its video
        // tracks asks for.
        type Wants = Vec<(TrackKey, Want)>;
        let mut wishes: HashMap<ConnId, (Budget, Wants)> = HashMap::new();
        for (&key, forwarder) in self.tracks.iter().filter(|(_, f)| f.video) {
            for (down, want) in forwarder.fanout.wants(now) {
                let estimate = self
                    .conns
                    .get(&down.conn)
                    .and_then(|c| c.outbound.as_ref())
                    .and_then(Outbound::estimate);
                if let Some(estimate) = estimate {
                    let entry = wishes
                        .entry(down.conn)
                        .or_insert_with(|| (estimate, Vec::new()));
                    entry.1.push((
                        key,
                        Want {
                            rate: want,
                            first: down.first,
                        },
                    ));
                }
            }
        }
        let mut shares: HashMap<(ConnId, TrackKey), Budget> = HashMap::new();
        for (&conn, (estimate, tracks)) in &wishes {
            let wants: Vec<Want> = tracks.iter().map(|&(_, want)| want).collect();
            tracing::debug!(
                ?conn,
                estimate = estimate.layers,
                pause = estimate.pause,
                tracks = tracks.len(),
                ?wants,
                "a subscriber's bandwidth estimate"
            );
            for (&(key, _), share) in tracks.iter().zip(estimate.divide(&wants)) {
                shares.insert((conn, key), share);
            }
        }
        let conns = &self.conns;
        // Per subscriber: the most the next layer up of a track held below
        // it needs, and how many tracks are held so.
        let mut shortfalls: HashMap<ConnId, (u64, u64)> = HashMap::new();
        for (&key, forwarder) in self.tracks.iter_mut().filter(|(_, f)| f.video) {
            forwarder.fanout.fit(
                now,
                |down| shares.get(&(down.conn, key)).copied(),
                // The subscriber's client hears of it (StreamStateUpdate).
                |down, paused| {
                    if let Some(conn) = conns.get(&down.conn) {
                        let _ = conn.notices.send(ConnNotice {
                            conn: down.conn,
                            event: ConnEvent::StreamState {
                                ssrc: down.ssrc,
                                active: !paused,
                            },
                        });
                    }
                },
                |down, extra| {
                    let (most, held) = shortfalls.entry(down.conn).or_default();
                    *most = (*most).max(extra);
                    *held += 1;
                },
            );
        }
        for (id, (extra, held)) in shortfalls {
            let Some(outbound) = self.conns.get_mut(&id).and_then(|c| c.outbound.as_mut()) else {
                continue;
            };
            // Tracks held below what they asked for share what is left
            // after the others equally: for one to get `extra` more, each
            // of them must.
            if outbound.start_probe(now, extra.saturating_mul(held)) {
                tracing::debug!(conn = ?id, extra, held, "bandwidth probe started");
                if !self.probing.contains(&id) {
                    self.probing.push(id);
                }
                self.next_probe = Some(now);
            }
        }
    }

    /// The wall clock at `now`.
    fn wall(&self, now: Instant) -> SystemTime {
        self.clock.1 + now.saturating_duration_since(self.clock.0)
    }

    fn send_reports(&mut self, now: Instant) {
        let wall = self.wall(now);
        // What each stream's reports say: its publisher's, translated.
        for forwarder in self.tracks.values() {
            let offset = self
                .conns
                .get(&forwarder.publisher)
                .and_then(|c| c.clock_offset.units());
            for (down, clock) in forwarder.fanout.clocks() {
                if let Some(outbound) = self
                    .conns
                    .get_mut(&down.conn)
                    .and_then(|c| c.outbound.as_mut())
                {
                    let clock = clock.zip(offset).map(|(c, offset)| c.shifted(offset, 0));
                    outbound.set_clock(down.ssrc, clock);
                }
            }
        }
        for (&id, conn) in &mut self.conns {
            let Some(outbound) = conn.outbound.as_mut() else {
                continue;
            };
            for (sender, report) in outbound.tick(now, wall) {
                let Some(mut sender) = conn.pc.rtp_sender(sender) else {
                    continue;
                };
                match guarded(|| sender.write_rtcp(now, vec![Box::new(report)])) {
                    Some(Ok(())) => {}
                    Some(Err(err)) => tracing::trace!(%err, "sender report"),
                    None => self.broken.push(id),
                }
            }
            mark(&mut self.dirty, id, conn);
        }
    }

    fn open(&mut self, now: Instant, open: OpenConn) -> Result<ConnId, String> {
        let id = ConnId(self.next_id);
        self.next_id += 1;
        let ufrag = random_token(16);
        let (mut pc, keys, feedback) =
            build_pc(now, &open, ufrag.clone()).map_err(|e| e.to_string())?;
        let data_out = match open.role {
            ConnRole::Subscriber { .. } => Some(DataOut::open(&mut pc).map_err(|e| e.to_string())?),
            ConnRole::Publisher { .. } => None,
        };
        let mut conn = Connection {
            pc,
            data_out,
            audio_level_ext: None,
            owner: open.owner,
            notices: open.notices,
            levels: match open.role {
                ConnRole::Publisher { levels } => Some(levels),
                ConnRole::Subscriber { .. } => None,
            },
            ranks: HashMap::new(),
            opening: HashMap::new(),
            tracks: HashMap::new(),
            next_timeout: None,
            dirty: false,
            keys,
            feedback,
            transport_cc_ext: None,
            outbound: None,
            peer: None,
            clock_offset: ClockOffset::default(),
            last_arrival: None,
            uplink: (0, 0),
        };
        let mut candidates = vec![host_candidate(self.udp_addr, TcpType::Unspecified)?];
        if let Some(tcp) = self.tcp_addr {
            // For clients whose network lets no UDP through.
            candidates.push(host_candidate(tcp, TcpType::Passive)?);
        }
        for init in candidates {
            conn.pc
                .add_local_candidate(init)
                .map_err(|e| e.to_string())?;
        }
        // Those are all the candidates: they go in every description, with
        // end-of-candidates, so there is nothing to trickle.
        conn.pc
            .add_local_candidate(RTCIceCandidateInit::default())
            .map_err(|e| e.to_string())?;
        self.demux.register(ufrag, id);
        mark(&mut self.dirty, id, &mut conn);
        self.conns.insert(id, conn);
        Ok(id)
    }

    fn close(&mut self, id: ConnId) {
        let Some(mut conn) = self.conns.remove(&id) else {
            return;
        };
        let transmits = &mut self.transmits;
        let closed = guarded(|| {
            if let Err(err) = conn.pc.close() {
                tracing::trace!(%err, "closing a peer connection");
            }
            // The close alerts go out; nothing else will.
            while let Some(out) = conn.pc.poll_write() {
                queue(transmits, out);
            }
        });
        if closed.is_none() {
            tracing::debug!("a peer connection panicked while closing");
        }
        self.demux.remove(id);
        for key in conn.tracks.values() {
            self.drop_track(*key);
        }
        for forwarder in self.tracks.values_mut() {
            forwarder.fanout.remove(&conn.owner);
        }
    }

    fn forward_command(&mut self, now: Instant, track: TrackKey, command: ForwarderCommand) {
        let Some(forwarder) = self.tracks.get_mut(&track) else {
            return;
        };
        match forwarder.command(now, command) {
            Followup::Done => {}
            Followup::Keyframe(ssrc) => {
                request_keyframe(&mut self.conns, &mut self.dirty, forwarder, now, ssrc);
            }
            Followup::Unsubscribed(down) => self.forget_down(&down),
        }
    }

    /// Lets a subscriber's connection go of its stream of a track.
    fn forget_down(&mut self, down: &DownTrack) {
        if let Some(outbound) = self
            .conns
            .get_mut(&down.conn)
            .and_then(|c| c.outbound.as_mut())
        {
            outbound.forget_stream(down.ssrc);
        }
    }

    /// Stops forwarding a track, and lets its subscribers' connections go
    /// of their streams of it: the room unsubscribes them later, when the
    /// forwarder is already gone. A connection left holding a video stream
    /// would go on numbering its audio for feedback (`outbound.rs`).
    fn drop_track(&mut self, key: TrackKey) {
        let Some(forwarder) = self.tracks.remove(&key) else {
            return;
        };
        for down in forwarder.fanout.sinks() {
            self.forget_down(down);
        }
    }

    /// Closes the connections whose webrtc-rs code panicked, and tells
    /// their sessions, which end.
    fn close_broken(&mut self) {
        while let Some(id) = self.broken.pop() {
            let Some(conn) = self.conns.get(&id) else {
                continue;
            };
            tracing::warn!(participant = %conn.owner, "a peer connection failed inside webrtc-rs; closing it");
            let _ = conn.notices.send(ConnNotice {
                conn: id,
                event: ConnEvent::Broken,
            });
            self.close(id);
        }
    }

    /// Drains every connection touched since the last flush: its datagrams
    /// to send, its events, and the media it received, which may touch
    /// other connections in turn.
    fn flush(&mut self, now: Instant) {
        while let Some(id) = self.dirty.pop() {
            let mut inbox = std::mem::take(&mut self.inbox);
            let mut events = std::mem::take(&mut self.events);
            let mut reports = std::mem::take(&mut self.sender_reports);
            // Sender reports come only in datagrams, each flushed as it
            // is read: the connection's last arrival is theirs.
            let mut reported_at = now;
            if let Some(conn) = self.conns.get_mut(&id) {
                conn.dirty = false;
                reported_at = conn.last_arrival.unwrap_or(now);
                let transmits = &mut self.transmits;
                let polled = guarded(|| {
                    while let Some(event) = conn.pc.poll_event() {
                        events.push(event);
                    }
                    while let Some(message) = conn.pc.poll_read() {
                        inbox.push(message.message);
                    }
                    while let Some(out) = conn.pc.poll_write() {
                        // STUN may probe other pairs; DTLS and SRTP(C) go
                        // to the selected one.
                        if out.message.first().is_some_and(|&b| b >= 20) {
                            conn.peer =
                                Some((out.transport.transport_protocol, out.transport.peer_addr));
                        }
                        queue(transmits, out);
                    }
                    conn.pc.poll_timeout()
                });
                take_feedback(conn, now, &mut self.pool, transmits, &mut reports);
                match polled {
                    Some(next) if next != conn.next_timeout => {
                        conn.next_timeout = next;
                        if let Some(at) = next {
                            self.timers.push(Reverse((at, id)));
                        }
                    }
                    Some(_) => {}
                    None => self.broken.push(id),
                }
            }
            for event in events.drain(..) {
                self.on_event(now, id, event);
            }
            for message in inbox.drain(..) {
                self.on_message(now, id, message);
            }
            for (ssrc, ntp, rtp) in reports.drain(..) {
                self.on_sender_report(reported_at, id, ssrc, ntp, rtp);
            }
            self.inbox = inbox;
            self.events = events;
            self.sender_reports = reports;
        }
    }

    fn on_event(&mut self, now: Instant, id: ConnId, event: RTCPeerConnectionEvent) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let notice = match event {
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                if state == RTCPeerConnectionState::Connected {
                    start_outbound(conn);
                }
                ConnEvent::State(state)
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                let rank = init.rid.as_deref().map_or(Rank::SINGLE, Rank::of_rid);
                conn.ranks.insert(init.ssrc, rank);
                // A layer of a track already forwarded adds only its rank;
                // the same track id on another receiver is a republish.
                let forwarded_on = conn
                    .tracks
                    .get(&init.track_id)
                    .and_then(|key| self.tracks.get(key))
                    .map(|f| f.receiver);
                if forwarded_on != Some(init.receiver_id) {
                    conn.opening.insert(init.track_id.clone(), init.receiver_id);
                }
                self.try_open_track(id, &init.track_id, init.ssrc);
                return;
            }
            RTCPeerConnectionEvent::OnDataChannel(RTCDataChannelEvent::OnOpen(_)) => {
                if let Some(data) = conn.data_out.as_mut() {
                    data.opened(&mut conn.pc, now);
                    mark(&mut self.dirty, id, conn);
                }
                return;
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnClose(track_id)) => {
                conn.opening.remove(&track_id);
                if let Some(key) = conn.tracks.remove(&track_id) {
                    self.drop_track(key);
                }
                return;
            }
            _ => return,
        };
        let _ = conn.notices.send(ConnNotice {
            conn: id,
            event: notice,
        });
    }

    /// Starts forwarding a track once its codec is known, and tells the
    /// session, which tells the room.
    fn try_open_track(&mut self, id: ConnId, track_id: &str, ssrc: u32) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let Some(&receiver_id) = conn.opening.get(track_id) else {
            return;
        };
        let Some(receiver) = conn.pc.rtp_receiver(receiver_id) else {
            return;
        };
        let track = receiver.track();
        let kind = track.kind();
        let Some(codec) = track.codec(ssrc).cloned() else {
            return;
        };
        conn.opening.remove(track_id);
        let key = TrackKey(self.next_id);
        self.next_id += 1;
        let levels = conn.levels.clone().zip(conn.audio_level_ext);
        let forwarder = Forwarder::new(id, receiver_id, &codec, kind, levels);
        let replaced = conn.tracks.insert(track_id.to_owned(), key);
        let notices = conn.notices.clone();
        self.tracks.insert(key, forwarder);
        if let Some(old) = replaced {
            // The client published the same track again on a new transceiver.
            self.drop_track(old);
        }
        tracing::debug!(ssrc, mime = %codec.mime_type, "forwarding a new track");
        let Some(tx) = self.handle.upgrade() else {
            return;
        };
        let handle = ForwarderHandle {
            worker: super::WorkerHandle { tx },
            track: key,
            codec,
            kind,
        };
        let _ = notices.send(ConnNotice {
            conn: id,
            event: ConnEvent::Track {
                cid: track_id.to_owned(),
                forwarder: handle,
            },
        });
    }

    fn on_message(&mut self, now: Instant, id: ConnId, message: RTCMessage) {
        match message {
            RTCMessage::RtpPacket(track_id, packet) => self.on_rtp(now, id, track_id, packet),
            RTCMessage::DataChannelMessage(channel, message) => {
                let Some(conn) = self.conns.get_mut(&id) else {
                    return;
                };
                // Clients send on their publisher connection only.
                if conn.data_out.is_some() {
                    return;
                }
                let Some(kind) = super::data::kind_of(&mut conn.pc, channel) else {
                    return;
                };
                let _ = conn.notices.send(ConnNotice {
                    conn: id,
                    event: ConnEvent::Data {
                        kind,
                        payload: message.data,
                    },
                });
            }
            _ => {}
        }
    }

    /// A publisher's sender report, which arrived at `at`: RTP time `rtp`
    /// of stream `ssrc` was `ntp` on its clock. For the reports of the
    /// stream's copies (lip sync); it finds its track by its SSRC.
    fn on_sender_report(&mut self, at: Instant, id: ConnId, ssrc: u32, ntp: Ntp, rtp: u32) {
        let arrived = Ntp::from_wall(self.wall(at));
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let known = conn.tracks.values().any(|key| {
            self.tracks
                .get_mut(key)
                .is_some_and(|f| f.fanout.sender_report(ssrc, ntp, rtp))
        });
        tracing::trace!(ssrc, ntp = ntp.0, rtp, known, "a publisher's sender report");
        if known {
            conn.clock_offset.observe(ntp, arrived);
        }
    }

    fn on_rtp(&mut self, now: Instant, id: ConnId, track_id: String, mut packet: rtc::rtp::Packet) {
        let ssrc = packet.header.ssrc;
        let Some(conn) = self.conns.get(&id) else {
            return;
        };
        let key = match conn.tracks.get(&track_id) {
            // A forwarded track, not republished on a receiver still opening.
            Some(&key) if !conn.opening.contains_key(&track_id) => key,
            _ => {
                self.try_open_track(id, &track_id, ssrc);
                match self.conns.get(&id).and_then(|c| c.tracks.get(&track_id)) {
                    Some(&key) => key,
                    None => return,
                }
            }
        };
        let Some(conn) = self.conns.get(&id) else {
            return;
        };
        let rank = conn.ranks.get(&ssrc).copied().unwrap_or(Rank::SINGLE);
        let Some(forwarder) = self.tracks.get_mut(&key) else {
            return;
        };
        forwarder.on_packet(now, rank, &mut packet);
        let clock_rate = forwarder.clock_rate;
        // RED's primary encoding, found once for all the subscribers that
        // did not accept RED, if any.
        let mut primary: Option<Option<Bytes>> = None;
        for (down, route) in forwarder.fanout.routes() {
            let Some(sub) = self.conns.get_mut(&down.conn) else {
                continue;
            };
            let payload = match down.delivery {
                Delivery::Whole => &packet.payload,
                Delivery::Primary => {
                    match primary.get_or_insert_with(|| forwarder.red_primary(&packet.payload)) {
                        Some(p) => &*p,
                        // Unreadable: a decoder could not use it either.
                        None => continue,
                    }
                }
            };
            if let (Some(outbound), Some((protocol, to))) = (sub.outbound.as_mut(), sub.peer) {
                let info = StreamInfo {
                    sender: down.sender,
                    clock_rate,
                    rtx: down.rtx,
                };
                let out = OutPacket {
                    ssrc: down.ssrc,
                    payload_type: down.payload_type,
                    sequence: route.sequence,
                    timestamp: route.timestamp,
                    marker: packet.header.marker,
                    payload,
                    vp8: route.vp8,
                };
                match outbound.send(now, info, out, &mut self.pool) {
                    Ok(datagram) => push(
                        &mut self.transmits,
                        Transmit {
                            protocol,
                            to,
                            datagram,
                        },
                    ),
                    Err(err) => tracing::trace!(%err, "protecting a forwarded packet"),
                }
                continue;
            }
            // Until the connection is up (or if its keys were not found),
            // through webrtc-rs's pipeline.
            let Some(mut sender) = sub.pc.rtp_sender(down.sender) else {
                continue;
            };
            let mut out = packet.clone();
            out.payload = payload.clone();
            out.header.sequence_number = route.sequence;
            out.header.timestamp = route.timestamp;
            out.header.ssrc = down.ssrc;
            out.header.payload_type = down.payload_type;
            if let Some((descriptor, numbering)) = route.vp8 {
                let mut payload = BytesMut::from(&packet.payload[..]);
                descriptor.write(&mut payload, numbering);
                out.payload = payload.freeze();
            }
            match guarded(|| sender.write_rtp(now, out)) {
                Some(Ok(())) => {}
                Some(Err(err)) => tracing::trace!(%err, "down track write failed"),
                None => self.broken.push(down.conn),
            }
            mark(&mut self.dirty, down.conn, sub);
        }
        while let Some(ssrc) = forwarder.fanout.poll_keyframe_request(now) {
            request_keyframe(&mut self.conns, &mut self.dirty, forwarder, now, ssrc);
        }
    }
}

fn queue(transmits: &mut VecDeque<Transmit>, out: TaggedBytesMut) {
    push(
        transmits,
        Transmit {
            protocol: out.transport.transport_protocol,
            to: out.transport.peer_addr,
            datagram: out.message,
        },
    );
}

fn push(transmits: &mut VecDeque<Transmit>, transmit: Transmit) {
    if transmits.len() >= MAX_TRANSMITS {
        transmits.pop_front();
    }
    transmits.push_back(transmit);
}

/// Once a subscriber connection is up, its keys are known and forwarded
/// packets bypass webrtc-rs's pipeline.
fn start_outbound(conn: &mut Connection) {
    // Connected again (after a network change): same keys, and the streams'
    // rollover counters, histories and estimate must go on.
    if conn.outbound.is_some() {
        return;
    }
    let Some(keys) = conn.keys.as_ref() else {
        return;
    };
    match keys.sender() {
        Some(srtp) => {
            tracing::debug!(profile = ?srtp.profile(), "forwarding outside webrtc-rs's pipeline");
            let mut outbound = Outbound::new(srtp);
            outbound.set_transport_cc(conn.transport_cc_ext);
            conn.outbound = Some(outbound);
        }
        None => tracing::warn!(
            participant = %conn.owner,
            "no SRTP keys seen for a subscriber connection; forwarding through webrtc-rs"
        ),
    }
}

/// Sends again what the subscriber NACKed, from the connection's history,
/// and feeds its transport-wide feedback to its bandwidth estimate.
fn take_feedback(
    conn: &mut Connection,
    now: Instant,
    pool: &mut BufferPool,
    transmits: &mut VecDeque<Transmit>,
    sender_reports: &mut Vec<(u32, Ntp, u32)>,
) {
    let Some(feedback) = conn.feedback.as_ref() else {
        return;
    };
    while let Ok(item) = feedback.try_recv() {
        if let Feedback::Uplink { expected, received } = item {
            conn.uplink = (expected, received);
            continue;
        }
        if let Feedback::SenderReport { ssrc, ntp, rtp } = item {
            // A bound, as with anything a peer sends: a second's worth
            // from a publisher is a handful.
            if sender_reports.len() < MAX_SENDER_REPORTS {
                sender_reports.push((ssrc, Ntp(ntp), rtp));
            }
            continue;
        }
        // Before the worker sends for the connection itself (or if it never
        // does), there is nothing to resend or estimate: dropped, so that
        // nothing piles up.
        let (Some(outbound), Some((protocol, to))) = (conn.outbound.as_mut(), conn.peer) else {
            continue;
        };
        match item {
            Feedback::Nack(ssrc, sequence) => {
                if let Some(datagram) = outbound.resend(now, ssrc, sequence, pool) {
                    push(
                        transmits,
                        Transmit {
                            protocol,
                            to,
                            datagram,
                        },
                    );
                }
            }
            // Taken above, before the connection needs to be sending.
            Feedback::SenderReport { .. } | Feedback::Uplink { .. } => {}
            Feedback::TransportCc(cc) => {
                // webrtc-rs's estimator reads what the peer wrote; whatever
                // that is, it may cost the connection its estimate, never
                // the worker.
                if guarded(|| outbound.on_transport_feedback(now, &cc)).is_none() {
                    tracing::warn!(
                        participant = %conn.owner,
                        "bandwidth estimation failed on a subscriber's feedback; it stops for this connection"
                    );
                    outbound.set_transport_cc(None);
                }
            }
        }
    }
}

/// A host candidate for one of the worker's sockets.
fn host_candidate(addr: SocketAddr, tcp_type: TcpType) -> Result<RTCIceCandidateInit, String> {
    let network = if tcp_type == TcpType::Unspecified {
        "udp"
    } else {
        "tcp"
    };
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: network.to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        tcp_type,
    }
    .new_candidate_host()
    .map_err(|e| e.to_string())?;
    RTCIceCandidate::from(&candidate)
        .to_json()
        .map_err(|e| e.to_string())
}

/// Runs webrtc-rs code for one connection. A panic in it (a bug some peer's
/// input set off) must cost that connection, not the worker thread and
/// every room on it: `None` means the connection is to be closed.
fn guarded<R>(f: impl FnOnce() -> R) -> Option<R> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok()
}

/// Queues a connection for the next flush, once.
fn mark(dirty: &mut Vec<ConnId>, id: ConnId, conn: &mut Connection) {
    if !conn.dirty {
        conn.dirty = true;
        dirty.push(id);
    }
}

/// Asks the publisher of `forwarder` for a keyframe of layer `media_ssrc`.
fn request_keyframe(
    conns: &mut HashMap<ConnId, Connection>,
    dirty: &mut Vec<ConnId>,
    forwarder: &Forwarder,
    now: Instant,
    media_ssrc: u32,
) {
    let Some(conn) = conns.get_mut(&forwarder.publisher) else {
        return;
    };
    let Some(mut receiver) = conn.pc.rtp_receiver(forwarder.receiver) else {
        return;
    };
    let pli = PictureLossIndication {
        sender_ssrc: 0,
        media_ssrc,
    };
    tracing::trace!(media_ssrc, "asking the publisher for a keyframe");
    match guarded(|| receiver.write_rtcp(now, vec![Box::new(pli)])) {
        Some(Ok(())) => {}
        Some(Err(err)) => tracing::trace!(%err, "keyframe request failed"),
        // The next poll of the connection finds out whether it is broken.
        None => tracing::debug!("a keyframe request panicked in webrtc-rs"),
    }
    mark(dirty, forwarder.publisher, conn);
}

/// ICE credentials: letters and digits, as RFC 8839 allows.
fn random_token(len: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

type Built = (
    RTCPeerConnection,
    Option<Arc<KeyTap>>,
    Option<std::sync::mpsc::Receiver<Feedback>>,
);

fn build_pc(
    now: Instant,
    open: &OpenConn,
    ufrag: String,
) -> Result<Built, rtc::shared::error::Error> {
    let mut media = MediaEngine::default();
    media.register_default_codecs()?;
    // Opus in RED, as LiveKit registers it: publishers send it when the
    // answer lists it first, subscribers that accept it get it as sent.
    media.register_codec(crate::red::red_codec(), RtpCodecKind::Audio)?;
    // Microphones' levels tell who is speaking.
    media.register_header_extension(
        RTCRtpHeaderExtensionCapability {
            uri: AUDIO_LEVEL_URI.to_owned(),
        },
        RtpCodecKind::Audio,
        None,
    )?;
    // Browsers send NACKs and PLIs only where the description offers them.
    for parameter in ["", "pli"] {
        media.register_feedback(
            RTCPFeedback {
                typ: "nack".to_owned(),
                parameter: parameter.to_owned(),
            },
            RtpCodecKind::Video,
        );
    }
    configure_simulcast_extension_headers(&mut media)?;
    // Each interceptor handles every packet of the connection, so each
    // side gets only those that do something for its direction.
    let mut settings =
        crate::participant::setting_engine_builder().with_ice_credentials(ufrag, random_token(32));
    let mut keys = None;
    // The tap at the end of the chain brings the worker what it needs of
    // the peer's RTCP.
    let (tx, rx) = std::sync::mpsc::channel();
    let registry = match &open.role {
        ConnRole::Publisher { .. } => {
            // Transport-wide feedback drives the browser's own uplink
            // estimate; the tap brings the worker its sender reports.
            // Retransmissions of simulcast layers go back into their
            // streams before the NACK generator sees them (repair.rs).
            configure_twcc_receiver_only(Registry::new(), &mut media)?
                .with(Slot::from(REPAIR_SLOT), RtxRepair::new(tx.clone()))
                .with(Slot::NackGenerator, NackGeneratorBuilder::new().build())
                .with(Slot::ReceiverReport, ReceiverReportBuilder::new().build())
                .with(Slot::from(FEEDBACK_SLOT), RtcpTap::sender_reports(tx))
        }
        ConnRole::Subscriber { keyframe_requests } => {
            // Forwarded packets skip webrtc-rs's pipeline (outbound.rs),
            // so its NACK responder, sender reports and congestion control
            // would know nothing of them: the worker does all three, and
            // the tap brings it the NACKs and transport-wide feedback.
            for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
                media.register_feedback(
                    RTCPFeedback {
                        typ: "transport-cc".to_owned(),
                        parameter: String::new(),
                    },
                    kind,
                );
                media.register_header_extension(
                    RTCRtpHeaderExtensionCapability {
                        uri: TRANSPORT_CC_URI.to_owned(),
                    },
                    kind,
                    None,
                )?;
            }
            let crypto = rtc::crypto::default_provider()
                .map_err(|e| rtc::shared::error::Error::Crypto(e.to_string()))?;
            let tap = Arc::new(KeyTap::new(crypto));
            settings = settings
                .with_crypto_provider(tap.clone())
                .with_srtp_protection_profiles(crate::srtp::offered_profiles());
            keys = Some(tap);
            Registry::new().with(
                Slot::from(FEEDBACK_SLOT),
                RtcpTap::new(keyframe_requests.clone()).with_feedback(tx),
            )
        }
    };
    let pc = RTCPeerConnectionBuilder::new()
        .with_setting_engine(settings.build())
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .build(now)?;
    Ok((pc, keys, Some(rx)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::ConnRole;
    use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;

    fn core() -> (WorkerCore, mpsc::UnboundedSender<WorkerCommand>) {
        let (tx, _rx) = mpsc::unbounded_channel();
        let udp = SocketAddr::from(([127, 0, 0, 1], 40000));
        let tcp = SocketAddr::from(([127, 0, 0, 1], 40000));
        (
            WorkerCore::new(
                udp,
                Some(tcp),
                tx.downgrade(),
                (Instant::now(), SystemTime::now()),
            ),
            tx,
        )
    }

    fn open(core: &mut WorkerCore, notices: &mpsc::UnboundedSender<ConnNotice>) -> ConnId {
        let (reply, mut rx) = tokio::sync::oneshot::channel();
        let (keyframes, _) = mpsc::unbounded_channel();
        core.handle_command(
            Instant::now(),
            WorkerCommand::Open {
                open: OpenConn {
                    owner: ParticipantSid::new("PA_test".to_owned()),
                    notices: notices.clone(),
                    role: ConnRole::Subscriber {
                        keyframe_requests: keyframes,
                    },
                },
                reply,
            },
        );
        rx.try_recv().expect("replied").expect("opened")
    }

    /// Runs `f` on a connection and returns what it returned, if it ran.
    fn with<R: Send + 'static>(
        core: &mut WorkerCore,
        conn: ConnId,
        f: impl FnOnce(&mut Connection) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        core.handle_command(
            Instant::now(),
            WorkerCommand::With {
                conn,
                f: Box::new(move |c, _| {
                    let _ = tx.send(f(c));
                }),
            },
        );
        rx.try_recv().ok()
    }

    #[test]
    fn an_offer_carries_both_candidates_and_end_of_candidates() {
        let (mut core, _tx) = core();
        let (notices, _rx) = mpsc::unbounded_channel();
        let id = open(&mut core, &notices);
        let sdp = with(&mut core, id, |c| {
            c.pc.add_transceiver_from_kind(RtpCodecKind::Audio, None)
                .expect("transceiver");
            let offer = c.pc.create_offer(None).expect("offer");
            offer.sdp
        })
        .expect("ran");
        assert!(
            sdp.contains("udp") && sdp.contains("127.0.0.1 40000 typ host"),
            "{sdp}"
        );
        assert!(sdp.contains("tcptype passive"), "{sdp}");
        assert!(sdp.contains("a=end-of-candidates"), "{sdp}");
    }

    #[test]
    fn a_panic_inside_a_connection_closes_only_that_connection() {
        let (mut core, _tx) = core();
        let (notices, mut notices_rx) = mpsc::unbounded_channel();
        let a = open(&mut core, &notices);
        let b = open(&mut core, &notices);
        let ran: Option<()> = with(&mut core, a, |_| panic!("a bug a peer set off"));
        assert!(ran.is_none());
        let mut broken = Vec::new();
        while let Ok(notice) = notices_rx.try_recv() {
            if matches!(notice.event, ConnEvent::Broken) {
                broken.push(notice.conn);
            }
        }
        assert_eq!(broken, vec![a]);
        assert!(with(&mut core, a, |_| ()).is_none(), "a is closed");
        assert_eq!(with(&mut core, b, |_| 7), Some(7), "b still works");
    }

    /// The datagram of a packet on `ssrc`, of a stream whose clock runs at
    /// `clock_rate` (video's or audio's), that `outbound` sends now.
    fn send_one(outbound: &mut Outbound, clock_rate: u32, ssrc: u32) -> BytesMut {
        let info = StreamInfo {
            sender: Default::default(),
            clock_rate,
            rtx: None,
        };
        let payload = Bytes::from_static(b"media");
        let packet = OutPacket {
            ssrc,
            payload_type: 96,
            sequence: 1,
            timestamp: 0,
            marker: true,
            payload: &payload,
            vp8: None,
        };
        outbound
            .send(Instant::now(), info, packet, &mut BufferPool::default())
            .expect("protected")
    }

    /// Whether an audio packet that connection `id` sends now carries a
    /// transport-wide number (the extension bit).
    fn audio_numbered(core: &mut WorkerCore, id: ConnId) -> bool {
        with(core, id, |c| {
            let outbound = c.outbound.as_mut().expect("sending");
            send_one(outbound, 48_000, 7)[0] & 0x10 != 0
        })
        .expect("open")
    }

    /// A connection standing for a publisher's (opened with the test's
    /// subscriber role, which the forwarding here does not look at), with
    /// a video track `camera` forwarded to a subscriber's connection,
    /// which gets it (SSRC 9) and an audio, with transport-wide feedback:
    /// (publisher, subscriber, track).
    fn a_video_and_its_subscriber(
        core: &mut WorkerCore,
        notices: &mpsc::UnboundedSender<ConnNotice>,
    ) -> (ConnId, ConnId, TrackKey) {
        let publisher = open(core, notices);
        let subscriber = open(core, notices);
        with(core, subscriber, |c| {
            let provider = rtc::crypto::providers::RingProvider::new();
            let srtp = crate::srtp::SrtpSender::new(
                crate::srtp::Profile::AeadAes128Gcm,
                &[1; 16],
                &[2; 12],
                rtc::crypto::RTCCryptoProvider::crypto(&provider),
            )
            .expect("keys");
            let mut outbound = Outbound::new(srtp);
            outbound.set_transport_cc(Some(3));
            send_one(&mut outbound, 90_000, 9);
            c.outbound = Some(outbound);
        });
        let codec = RTCRtpCodec {
            mime_type: "video/VP8".to_owned(),
            clock_rate: 90_000,
            ..Default::default()
        };
        let mut forwarder = Forwarder::new(
            publisher,
            RTCRtpReceiverId::default(),
            &codec,
            RtpCodecKind::Video,
            None,
        );
        let sid = ParticipantSid::new("PA_sub".to_owned());
        forwarder.fanout.add(
            sid.clone(),
            DownTrack {
                subscriber: sid,
                conn: subscriber,
                sender: Default::default(),
                ssrc: 9,
                payload_type: 96,
                delivery: Delivery::Whole,
                rtx: None,
                first: false,
            },
        );
        let key = TrackKey(99);
        core.tracks.insert(key, forwarder);
        with(core, publisher, move |c| {
            c.tracks.insert("camera".to_owned(), key);
        });
        assert!(audio_numbered(core, subscriber), "beside a video");
        (publisher, subscriber, key)
    }

    #[test]
    fn subscribers_let_go_of_the_streams_of_a_publisher_that_leaves() {
        let (mut core, _tx) = core();
        let (notices, _rx) = mpsc::unbounded_channel();
        let (publisher, subscriber, key) = a_video_and_its_subscriber(&mut core, &notices);
        // The publisher's connection closes before the room unsubscribes
        // anyone: its video is gone from the subscriber's connection all
        // the same, and the audio no longer asks for feedback.
        core.handle_command(Instant::now(), WorkerCommand::Close(publisher));
        assert!(!core.tracks.contains_key(&key));
        assert!(!audio_numbered(&mut core, subscriber), "no video left");
    }

    #[test]
    fn subscribers_let_go_of_the_streams_of_a_track_that_ends() {
        let (mut core, _tx) = core();
        let (notices, _rx) = mpsc::unbounded_channel();
        let (publisher, subscriber, key) = a_video_and_its_subscriber(&mut core, &notices);
        // The publisher's camera track ends and its connection stays, as
        // webrtc-rs reports it with `OnClose`. rtc 0.21.1 never sends
        // that event yet (only `OnOpen`): this keeps the arm right for
        // when it does.
        let ended = RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnClose("camera".to_owned()));
        core.on_event(Instant::now(), publisher, ended);
        assert!(!core.tracks.contains_key(&key));
        assert!(!audio_numbered(&mut core, subscriber), "no video left");
        assert_eq!(with(&mut core, publisher, |_| 7), Some(7), "still open");
    }

    #[test]
    fn datagrams_for_no_connection_are_refused() {
        let (mut core, _tx) = core();
        let from = SocketAddr::from(([127, 0, 0, 1], 5000));
        let now = Instant::now();
        assert!(!core.handle_datagram(now, now, TransportProtocol::UDP, from, b"\x80junk"));
        assert!(core.poll_transmit().is_none());
    }
}
