// A real bottleneck on loopback, with tc: an HTB class of its own at a
// fixed rate, behind a FIFO of a fixed size in bytes, for the UDP datagrams going
// from one local port to another. What exceeds the rate waits in the
// queue (delay), and once the queue is full is dropped (loss), as at a
// home router's uplink or a busy Wi-Fi. All other loopback traffic goes
// through an unlimited class. (htb needs the sch_htb module only; netem
// is not at hand everywhere.)
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';

export const tcPath = () => ['/usr/sbin/tc', '/sbin/tc'].find((p) => fs.existsSync(p));

function tc(...args) {
  const bin = tcPath();
  if (!bin) throw new Error('tc is needed: apt-get install iproute2');
  return execFileSync(bin, args, { encoding: 'utf8' });
}

/// Takes over loopback's root queueing discipline until `remove()`; none
/// may be there already (loopback has none by default), but this one's
/// own, left by a run that was killed.
export function loopbackShaper() {
  let shown = tc('qdisc', 'show', 'dev', 'lo');
  if (/^qdisc htb 1: root .*default 0x1 /m.test(shown)) {
    tc('qdisc', 'del', 'dev', 'lo', 'root');
    shown = tc('qdisc', 'show', 'dev', 'lo');
  }
  if (!/^qdisc noqueue /m.test(shown)) {
    throw new Error(`loopback already has a queueing discipline (another test's?): ${shown}`);
  }
  tc('qdisc', 'add', 'dev', 'lo', 'root', 'handle', '1:', 'htb', 'default', '1');
  try {
    tc('class', 'add', 'dev', 'lo', 'parent', '1:', 'classid', '1:1', 'htb', 'rate', '100gbit');
  } catch (err) {
    tc('qdisc', 'del', 'dev', 'lo', 'root');
    throw err;
  }
  let limited = false;
  return {
    /// Datagrams from port `from` to port `to` go at `kbps` kilobits a
    /// second at most, with up to `bytes` waiting.
    limit(from, to, kbps, bytes) {
      const verb = limited ? 'change' : 'add';
      tc('class', verb, 'dev', 'lo', 'parent', '1:', 'classid', '1:2', 'htb', 'rate', `${kbps}kbit`, 'ceil', `${kbps}kbit`);
      if (!limited) {
        tc('qdisc', 'add', 'dev', 'lo', 'parent', '1:2', 'handle', '2:', 'bfifo', 'limit', String(bytes));
        tc(
          'filter', 'add', 'dev', 'lo', 'parent', '1:', 'protocol', 'ip', 'prio', '1', 'u32',
          'match', 'ip', 'protocol', '17', '0xff',
          'match', 'ip', 'sport', String(from), '0xffff',
          'match', 'ip', 'dport', String(to), '0xffff',
          'flowid', '1:2',
        );
        limited = true;
      }
    },
    /// What the limited class sent and dropped so far, and its backlog.
    stats() {
      const out = tc('-s', 'class', 'show', 'dev', 'lo', 'classid', '1:2');
      const sent = out.match(/Sent (\d+) bytes (\d+) pkt \(dropped (\d+)/);
      const backlog = out.match(/backlog (\d+)b (\d+)p/);
      return {
        bytes: sent ? Number(sent[1]) : 0,
        packets: sent ? Number(sent[2]) : 0,
        dropped: sent ? Number(sent[3]) : 0,
        backlogBytes: backlog ? Number(backlog[1]) : 0,
        backlogPackets: backlog ? Number(backlog[2]) : 0,
      };
    },
    remove() {
      try {
        tc('qdisc', 'del', 'dev', 'lo', 'root');
      } catch {
        // Already gone.
      }
    },
  };
}
