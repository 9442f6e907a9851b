//! The send side of transport-wide congestion control: what each packet
//! with a transport-wide sequence number was (size, departure), joined with
//! what the subscriber's feedback says of it, as the `PacketReport`s that
//! rtc-interceptor's GCC estimator reads. Sans-IO.
//!
//! rtc-interceptor's own `History` does this with three hash maps, each
//! written and erased once per packet; perf put them at 4-6 % of the
//! media worker's time (BENCHMARKS.md). Here the transport-wide numbers go
//! up by one per packet, so the packets in flight are a queue in send
//! order and a number finds its packet by subtraction.

use rtc::interceptor::{Acknowledgement, PacketReport};
use rtc::rtcp::transport_feedbacks::cc_feedback_report::Ecn;
use std::collections::VecDeque;
use std::time::Instant;

/// Packets sent and not yet reported, oldest first.
#[derive(Debug, Default)]
pub struct SendLog {
    /// In send order: ids and transport-wide numbers go up by one per
    /// packet.
    in_flight: VecDeque<PacketReport>,
    next_id: u64,
    /// The latest packet the feedback said arrived: reports go up to it.
    highest_arrived: Option<u64>,
    /// Reused by `take_reports`, so that feedback allocates nothing once
    /// the connection has run a while.
    reports: Vec<PacketReport>,
}

impl SendLog {
    /// Notes a packet leaving now with transport-wide number `twcc`, which
    /// must be one more than the previous packet's (wrapping).
    pub fn sent(&mut self, ssrc: u32, sequence: u16, twcc: u16, size: usize, departure: Instant) {
        self.in_flight.push_back(PacketReport {
            ssrc,
            id: self.next_id,
            rtp_sequence_number: sequence,
            is_twcc: true,
            twcc_sequence_number: twcc,
            size,
            arrived: false,
            departure,
            arrival: None,
            ecn: Ecn::NotEct,
        });
        self.next_id += 1;
    }

    /// Applies what the feedback says of one packet; feedback for a packet
    /// not in flight (too old, already reported, never sent) is ignored.
    pub fn acknowledge(&mut self, ack: Acknowledgement) {
        let Some(last) = self.in_flight.back() else {
            return;
        };
        // How far back from the latest packet sent, on the 16-bit circle.
        let back = u64::from(last.twcc_sequence_number.wrapping_sub(ack.sequence_number));
        let Some(index) = (self.in_flight.len() as u64)
            .checked_sub(1 + back)
            .map(|i| i as usize)
        else {
            return;
        };
        let Some(packet) = self.in_flight.get_mut(index) else {
            return;
        };
        if packet.twcc_sequence_number != ack.sequence_number {
            return;
        }
        packet.arrived = ack.arrived;
        packet.arrival = ack.arrival;
        packet.ecn = ack.ecn;
        if ack.arrived {
            let id = packet.id;
            self.highest_arrived = Some(self.highest_arrived.map_or(id, |h| h.max(id)));
        }
    }

    /// Every packet up to the latest one that arrived, in send order, with
    /// what the feedback said (those it did not mention count as lost);
    /// they leave the log.
    pub fn take_reports(&mut self) -> &[PacketReport] {
        self.reports.clear();
        if let Some(highest) = self.highest_arrived {
            while self.in_flight.front().is_some_and(|p| p.id <= highest) {
                if let Some(packet) = self.in_flight.pop_front() {
                    self.reports.push(packet);
                }
            }
        }
        &self.reports
    }

    /// Forgets packets sent before `cutoff` that no feedback mentioned
    /// (their feedback was lost with them, or never comes).
    pub fn prune_before(&mut self, cutoff: Instant) {
        while self
            .in_flight
            .front()
            .is_some_and(|p| p.departure < cutoff && !p.arrived)
        {
            self.in_flight.pop_front();
        }
    }

    /// Packets in flight.
    pub fn len(&self) -> usize {
        self.in_flight.len()
    }

    pub fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }
}

#[cfg(test)]
#[path = "twcc_tests.rs"]
mod tests;
