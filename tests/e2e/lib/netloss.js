// Real packet loss on loopback, with nftables: a table of the test's own
// that drops a share of the UDP datagrams going from one local port to
// another, chosen at random per packet. (netem is not at hand everywhere:
// it needs the sch_netem kernel module; nftables needs only nf_tables.)
// The drop is on the input hook: a datagram dropped on output fails the
// sender's sendto() with EPERM, and Chromium then sends it again, so most
// of the "loss" would never reach the network.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';

export const nftPath = () => ['/usr/sbin/nft', '/sbin/nft'].find((p) => fs.existsSync(p));

function nft(script) {
  const bin = nftPath();
  if (!bin) throw new Error('nftables is needed: apt-get install nftables');
  return execFileSync(bin, ['-f', '-'], { input: script, encoding: 'utf8' });
}

/// A table named `name` (its own, created empty; remove() takes it away).
export function lossTable(name = `salon_e2e_${process.pid}`) {
  nft(`table inet ${name} {}\ndelete table inet ${name}\ntable inet ${name} {\n  chain in {\n    type filter hook input priority 0; policy accept;\n  }\n}\n`);
  return {
    name,
    /// Drops `percent` % of UDP datagrams from local port `from` to port `to`.
    drop(from, to, percent) {
      nft(`add rule inet ${name} in udp sport ${from} udp dport ${to} numgen random mod 100 < ${percent} counter drop\n`);
    },
    /// Like `drop`, but only for the RTP packets of stream `ssrc`, which
    /// then escape the rules added after it, and counted apart (see
    /// `dropped`). SRTP leaves the RTP header in the clear, so the SSRC is
    /// at bytes 8-11 of the UDP payload, bit 128 of the transport header.
    dropStream(from, to, percent, ssrc) {
      const match = `udp sport ${from} udp dport ${to} @th,128,32 ${ssrc}`;
      nft(
        `add rule inet ${name} in ${match} numgen random mod 100 < ${percent} counter drop comment "ssrc ${ssrc}"\n` +
          `add rule inet ${name} in ${match} accept\n`,
      );
    },
    /// Drops nothing any more.
    clear() {
      nft(`flush chain inet ${name} in\n`);
    },
    /// Packets the rules dropped so far; with `ssrc`, only those of
    /// `dropStream(…, ssrc)`.
    dropped(ssrc) {
      const out = execFileSync(nftPath(), ['list', 'chain', 'inet', name, 'in'], { encoding: 'utf8' });
      return out
        .split('\n')
        .filter((line) => ssrc === undefined || line.includes(`comment "ssrc ${ssrc}"`))
        .flatMap((line) => [...line.matchAll(/counter packets (\d+)/g)])
        .reduce((n, m) => n + Number(m[1]), 0);
    },
    remove() {
      // `table … {}` first, so that deleting never fails on a missing table.
      nft(`table inet ${name} {}\ndelete table inet ${name}\n`);
    },
  };
}

/// The local (browser) and remote (Salon) UDP ports of one of the
/// connections of the livekit-client room on `page`: `which` is
/// 'publisher' or 'subscriber'. Loss rules aim at these.
export async function connectionPorts(page, which) {
  return page.evaluate(async (which) => {
    const stats = await window.salonRoom.engine.pcManager[which].getStats();
    let out;
    stats.forEach((s) => {
      if (s.type === 'candidate-pair' && s.state === 'succeeded' && s.nominated) {
        const local = stats.get(s.localCandidateId);
        const remote = stats.get(s.remoteCandidateId);
        out = { protocol: local.protocol, local: local.port, remote: remote.port };
      }
    });
    return out;
  }, which);
}
