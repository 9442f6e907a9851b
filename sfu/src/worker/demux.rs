//! Which connection a datagram on a worker's shared socket belongs to.
//!
//! Every connection of a worker listens on one UDP port, so the socket alone
//! does not say whose a packet is. ICE does: a client's connectivity check
//! carries `USERNAME = <our ufrag>:<its ufrag>`, and the ufrag is ours, one
//! per connection. The first check from an address ties that address to the
//! connection; DTLS, SRTP and later checks then go by address. ICE-TCP
//! connections are told apart the same way, by their remote address.

use super::ConnId;
use rtc::shared::TransportProtocol;
use std::collections::HashMap;
use std::net::SocketAddr;

/// Where a datagram came from: a UDP address, or the remote end of an
/// ICE-TCP connection.
pub(crate) type Peer = (TransportProtocol, SocketAddr);

/// STUN's fixed cookie (RFC 5389 §6), which tells STUN from DTLS and RTP.
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const HEADER_LEN: usize = 20;
const ATTR_USERNAME: u16 = 0x0006;

/// Most remote addresses one connection may be reached from; ICE tries a
/// handful of pairs, and a bound keeps a peer from growing the table.
const MAX_ADDRS_PER_CONN: usize = 8;

/// The local ufrag a STUN request was sent to, if `datagram` is STUN with a
/// USERNAME attribute.
pub(crate) fn stun_local_ufrag(datagram: &[u8]) -> Option<&str> {
    if datagram.len() < HEADER_LEN || datagram[0] & 0xc0 != 0 || datagram[4..8] != MAGIC_COOKIE {
        return None;
    }
    let body_len = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    let body = datagram.get(HEADER_LEN..HEADER_LEN + body_len)?;
    let mut rest = body;
    while rest.len() >= 4 {
        let kind = u16::from_be_bytes([rest[0], rest[1]]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let value = rest.get(4..4 + len)?;
        if kind == ATTR_USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next();
        }
        // Attributes are padded to four bytes.
        let padded = 4 + len.div_ceil(4) * 4;
        rest = rest.get(padded..)?;
    }
    None
}

/// The routing table of one worker's socket.
#[derive(Default)]
pub(crate) struct Demux {
    by_ufrag: HashMap<String, ConnId>,
    by_addr: HashMap<Peer, ConnId>,
    addrs: HashMap<ConnId, Vec<Peer>>,
}

impl Demux {
    pub(crate) fn register(&mut self, ufrag: String, conn: ConnId) {
        self.by_ufrag.insert(ufrag, conn);
    }

    /// The connection a datagram from `from` is for. A STUN request naming
    /// a known ufrag (re)binds its address to that connection.
    pub(crate) fn route(&mut self, from: Peer, datagram: &[u8]) -> Option<ConnId> {
        if let Some(ufrag) = stun_local_ufrag(datagram)
            && let Some(&conn) = self.by_ufrag.get(ufrag)
        {
            if self.by_addr.get(&from) != Some(&conn) {
                self.bind(from, conn);
            }
            return Some(conn);
        }
        self.by_addr.get(&from).copied()
    }

    fn bind(&mut self, from: Peer, conn: ConnId) {
        if let Some(old) = self.by_addr.insert(from, conn)
            && let Some(list) = self.addrs.get_mut(&old)
        {
            list.retain(|a| *a != from);
        }
        let list = self.addrs.entry(conn).or_default();
        if list.len() >= MAX_ADDRS_PER_CONN {
            let oldest = list.remove(0);
            self.by_addr.remove(&oldest);
        }
        list.push(from);
    }

    /// Forgets a closed connection's ufrag and addresses.
    pub(crate) fn remove(&mut self, conn: ConnId) {
        self.by_ufrag.retain(|_, c| *c != conn);
        for addr in self.addrs.remove(&conn).unwrap_or_default() {
            if self.by_addr.get(&addr) == Some(&conn) {
                self.by_addr.remove(&addr);
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> (usize, usize) {
        (self.by_ufrag.len(), self.by_addr.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A binding request with a USERNAME and one attribute after it.
    fn binding_request(username: &str) -> Vec<u8> {
        let mut attrs = Vec::new();
        attrs.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username.as_bytes());
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        // PRIORITY, to check that parsing stops at USERNAME wherever it is.
        attrs.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
        let mut out = vec![0x00, 0x01];
        out.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        out.extend_from_slice(&MAGIC_COOKIE);
        out.extend_from_slice(&[7; 12]);
        out.extend_from_slice(&attrs);
        out
    }

    fn addr(port: u16) -> Peer {
        (
            TransportProtocol::UDP,
            SocketAddr::from(([127, 0, 0, 1], port)),
        )
    }

    #[test]
    fn reads_the_local_ufrag_of_a_binding_request() {
        assert_eq!(stun_local_ufrag(&binding_request("abc:xyz1")), Some("abc"));
        assert_eq!(stun_local_ufrag(&binding_request("odd")), Some("odd"));
    }

    #[test]
    fn ignores_what_is_not_stun_or_is_cut_short() {
        assert_eq!(stun_local_ufrag(&[0x80; 40]), None, "RTP");
        assert_eq!(stun_local_ufrag(&[22; 40]), None, "DTLS");
        let whole = binding_request("abc:xyz1");
        for cut in 0..whole.len() {
            assert_eq!(stun_local_ufrag(&whole[..cut]), None, "cut at {cut}");
        }
        // A length that points past the end.
        let mut lying = whole.clone();
        lying[23] = 200;
        assert_eq!(stun_local_ufrag(&lying), None);
    }

    #[test]
    fn a_check_binds_its_address_and_later_packets_follow_it() {
        let mut demux = Demux::default();
        let (a, b) = (ConnId(1), ConnId(2));
        demux.register("ua".into(), a);
        demux.register("ub".into(), b);
        assert_eq!(demux.route(addr(1000), b"\x80 rtp before any check"), None);
        assert_eq!(demux.route(addr(1000), &binding_request("ua:x")), Some(a));
        assert_eq!(demux.route(addr(2000), &binding_request("ub:y")), Some(b));
        assert_eq!(demux.route(addr(1000), b"\x80 rtp"), Some(a));
        assert_eq!(demux.route(addr(2000), b"\x80 rtp"), Some(b));
        // An unknown ufrag changes nothing.
        assert_eq!(demux.route(addr(1000), &binding_request("uz:x")), Some(a));
        // The address moves to another connection when a check says so.
        assert_eq!(demux.route(addr(1000), &binding_request("ub:y")), Some(b));
        assert_eq!(demux.route(addr(1000), b"\x80 rtp"), Some(b));
        demux.remove(b);
        assert_eq!(demux.route(addr(1000), b"\x80 rtp"), None);
        assert_eq!(demux.route(addr(2000), b"\x80 rtp"), None);
        assert_eq!(demux.len(), (1, 0));
    }

    #[test]
    fn tcp_and_udp_from_one_address_are_two_peers() {
        let mut demux = Demux::default();
        let (a, b) = (ConnId(1), ConnId(2));
        demux.register("ua".into(), a);
        demux.register("ub".into(), b);
        let udp = addr(1000);
        let tcp = (TransportProtocol::TCP, udp.1);
        assert_eq!(demux.route(udp, &binding_request("ua:x")), Some(a));
        assert_eq!(demux.route(tcp, &binding_request("ub:x")), Some(b));
        assert_eq!(demux.route(udp, b"\x80"), Some(a));
        assert_eq!(demux.route(tcp, b"\x80"), Some(b));
    }

    #[test]
    fn addresses_per_connection_are_bounded() {
        let mut demux = Demux::default();
        demux.register("ua".into(), ConnId(1));
        for port in 0..100 {
            demux.route(addr(3000 + port), &binding_request("ua:x"));
        }
        assert_eq!(demux.len(), (1, MAX_ADDRS_PER_CONN));
        assert_eq!(demux.route(addr(3099), b"\x80"), Some(ConnId(1)));
        assert_eq!(demux.route(addr(3000), b"\x80"), None);
    }
}
