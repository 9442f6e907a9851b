//! The RTCP the worker needs from its peers: keyframe requests, NACKs and
//! transport-wide feedback from subscribers, sender reports from publishers.
//!
//! webrtc-rs ends every interceptor chain with a stage that drops inbound
//! RTCP the application did not ask for, and routes a compound RTCP packet
//! by its first report only, so a PLI behind a receiver report can land on
//! the wrong track or nowhere. This interceptor sits last in the chain and
//! hands the SSRC of every PLI and FIR straight to the session, which knows
//! which forwarder sends that SSRC; NACKs and transport-wide feedback to
//! the worker, which resends from its own history and estimates the
//! subscriber's bandwidth (webrtc-rs's NACK responder and congestion
//! control only know packets that went through its pipeline, and
//! forwarded ones do not); and a publisher's sender reports to the worker,
//! which translates them for the subscribers (`clock.rs`). The load
//! generator uses it on its publishing connections to hear keyframe
//! requests too.

use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use std::collections::VecDeque;
use std::time::Instant;
use tokio::sync::mpsc;

/// Just after every built-in slot of the default chain.
pub const FEEDBACK_SLOT: usize = 14_000;

/// What a peer says about the packets it got or sent, for the worker.
pub enum Feedback {
    /// A packet to send again: the SSRC we sent it on and its sequence number.
    Nack(u32, u16),
    /// When each packet arrived, by transport-wide sequence number.
    TransportCc(TransportLayerCc),
    /// A publisher's sender report: RTP time `rtp` of stream `ssrc` was
    /// NTP time `ntp` on its clock.
    SenderReport { ssrc: u32, ntp: u64, rtp: u32 },
    /// A publisher connection's packets, over its life: those its
    /// streams' sequence numbers say were sent, and those that arrived the
    /// first time (`repair.rs`).
    Uplink { expected: u64, received: u64 },
}

pub struct RtcpTap {
    requests: Option<mpsc::UnboundedSender<u32>>,
    feedback: Option<std::sync::mpsc::Sender<Feedback>>,
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

impl RtcpTap {
    /// Hands the SSRC of every keyframe request (PLI, FIR) to `requests`.
    pub fn new(requests: mpsc::UnboundedSender<u32>) -> Self {
        Self {
            requests: Some(requests),
            feedback: None,
            reads: VecDeque::new(),
            writes: VecDeque::new(),
        }
    }

    /// Hands a publisher's sender reports to `feedback`, and nothing else.
    pub fn sender_reports(feedback: std::sync::mpsc::Sender<Feedback>) -> Self {
        Self {
            requests: None,
            feedback: Some(feedback),
            reads: VecDeque::new(),
            writes: VecDeque::new(),
        }
    }

    /// Hands NACKs and transport-wide feedback to `feedback`.
    pub fn with_feedback(mut self, feedback: std::sync::mpsc::Sender<Feedback>) -> Self {
        self.feedback = Some(feedback);
        self
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RtcpTap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            for packet in packets {
                let any = packet.as_any();
                if let Some(pli) = any.downcast_ref::<PictureLossIndication>()
                    && let Some(requests) = &self.requests
                {
                    let _ = requests.send(pli.media_ssrc);
                } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>()
                    && let Some(requests) = &self.requests
                {
                    for entry in &fir.fir {
                        let _ = requests.send(entry.ssrc);
                    }
                } else if let Some(feedback) = &self.feedback {
                    if let Some(sr) = any.downcast_ref::<SenderReport>() {
                        let _ = feedback.send(Feedback::SenderReport {
                            ssrc: sr.ssrc,
                            ntp: sr.ntp_time,
                            rtp: sr.rtp_time,
                        });
                    } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                        for pair in &nack.nacks {
                            for sequence in *pair {
                                let _ = feedback.send(Feedback::Nack(nack.media_ssrc, sequence));
                            }
                        }
                    } else if let Some(cc) = any.downcast_ref::<TransportLayerCc>() {
                        let _ = feedback.send(Feedback::TransportCc(cc.clone()));
                    }
                }
            }
        }
        self.reads.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.reads.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        self.writes.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.writes.pop_front()
    }
}

impl Interceptor for RtcpTap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
