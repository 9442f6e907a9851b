//! Datagrams the kernel dropped, from /proc/net: what a load test must rule
//! out before it blames the server for a loss. On loopback a datagram can
//! be lost without any UDP counter moving: when the per-CPU backlog that
//! loopback hands packets to is full (`netdev_max_backlog`), as when a
//! busy VM leaves softirq work to `ksoftirqd`, the packet is dropped there
//! and only /proc/net/softnet_stat says so.
//!
//! The counts are the network namespace's (softnet_stat: the machine's),
//! not one process's: anything else running adds to them.

use crate::procstat::ProcError;

/// Drop counters, since boot (or since the namespace was made).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct KernelDrops {
    /// Packets dropped because a CPU's input backlog was full.
    pub backlog: u64,
    /// UDP datagrams dropped because a socket's receive buffer was full.
    pub udp_rcvbuf: u64,
    /// UDP sends refused because a socket's send buffer was full.
    pub udp_sndbuf: u64,
}

impl KernelDrops {
    /// What grew from `earlier` to `self`.
    pub fn since(&self, earlier: &KernelDrops) -> KernelDrops {
        KernelDrops {
            backlog: self.backlog.saturating_sub(earlier.backlog),
            udp_rcvbuf: self.udp_rcvbuf.saturating_sub(earlier.udp_rcvbuf),
            udp_sndbuf: self.udp_sndbuf.saturating_sub(earlier.udp_sndbuf),
        }
    }

    pub fn any(&self) -> bool {
        self.backlog + self.udp_rcvbuf + self.udp_sndbuf > 0
    }
}

/// Reads the counters now.
pub fn kernel_drops() -> Result<KernelDrops, ProcError> {
    let read = |file: &str| {
        std::fs::read_to_string(format!("/proc/net/{file}"))
            .map_err(|e| ProcError::Read(format!("net/{file}"), e))
    };
    let softnet = read("softnet_stat")?;
    let snmp = read("snmp")?;
    let backlog = parse_softnet_dropped(&softnet)
        .ok_or_else(|| ProcError::Parse("net/softnet_stat".into()))?;
    let udp =
        |name| parse_snmp(&snmp, "Udp", name).ok_or_else(|| ProcError::Parse("net/snmp".into()));
    Ok(KernelDrops {
        backlog,
        udp_rcvbuf: udp("RcvbufErrors")?,
        udp_sndbuf: udp("SndbufErrors")?,
    })
}

/// The second column of every CPU's line, in hex: packets dropped because
/// the backlog was full.
fn parse_softnet_dropped(text: &str) -> Option<u64> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| u64::from_str_radix(line.split_whitespace().nth(1)?, 16).ok())
        .sum()
}

/// A counter of /proc/net/snmp, which gives each protocol a line of names
/// and a line of values.
fn parse_snmp(text: &str, protocol: &str, name: &str) -> Option<u64> {
    let prefix = format!("{protocol}:");
    let mut lines = text.lines().filter(|line| line.starts_with(&prefix));
    let names = lines.next()?;
    let values = lines.next()?;
    let index = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(index)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_every_cpus_backlog_drops_in_hex() {
        let text = "004d083c 00000000 00000000 00000000\n004f7629 0000001a 00000002 00000000\n";
        assert_eq!(parse_softnet_dropped(text), Some(0x1a));
        assert_eq!(parse_softnet_dropped("004d083c\n"), None);
    }

    #[test]
    fn finds_a_udp_counter_by_name() {
        let text = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                    Udp: 10030990 2376 24030 10004932 24031 139\n\
                    UdpLite: InDatagrams RcvbufErrors\nUdpLite: 0 7\n";
        assert_eq!(parse_snmp(text, "Udp", "RcvbufErrors"), Some(24031));
        assert_eq!(parse_snmp(text, "Udp", "SndbufErrors"), Some(139));
        assert_eq!(parse_snmp(text, "UdpLite", "RcvbufErrors"), Some(7));
        assert_eq!(parse_snmp(text, "Udp", "Nothing"), None);
    }

    /// Datagrams sent to a socket that never reads, past its receive
    /// buffer, show as receive-buffer drops.
    #[test]
    fn a_full_receive_buffer_counts() {
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let before = kernel_drops().expect("counters");
        let to = receiver.local_addr().expect("address");
        // 12 MB: far more than a default receive buffer (some 200 kB).
        for _ in 0..10_000 {
            let _ = sender.send_to(&[0u8; 1200], to);
        }
        let grown = kernel_drops().expect("counters").since(&before);
        assert!(grown.udp_rcvbuf > 0, "{grown:?}");
        assert!(grown.any());
    }
}
