// Starts a real `salon dev` on a free loopback port and stops it afterwards.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

export function salonBinary() {
  if (process.env.SALON_BIN) return process.env.SALON_BIN;
  const target = process.env.CARGO_TARGET_DIR ?? path.join(root, 'target');
  return path.join(target, 'debug', 'salon');
}

export async function startSalon(extraArgs = []) {
  const proc = spawn(
    salonBinary(),
    ['dev', '--port', '0', '--web-dir', path.join(root, 'web/dist'), ...extraArgs],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'info' } },
  );
  let log = '';
  proc.stderr.on('data', (d) => {
    log += d;
  });
  const httpUrl = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`salon did not start:\n${log}`)), 20000);
    let out = '';
    proc.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/Open (http:\/\/[^ ]+\/) in your browser/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1].replace(/\/$/, ''));
      }
    });
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`salon exited with ${code}:\n${log}`));
    });
  });
  return {
    httpUrl,
    wsUrl: httpUrl.replace(/^http/, 'ws'),
    apiKey: 'devkey',
    apiSecret: 'secret',
    log: () => log,
    alive: () => proc.exitCode === null,
    /// Local UDP ports of sockets the salon process holds open.
    udpPorts() {
      const inodes = new Set();
      for (const fd of fs.readdirSync(`/proc/${proc.pid}/fd`)) {
        try {
          const m = fs.readlinkSync(`/proc/${proc.pid}/fd/${fd}`).match(/^socket:\[(\d+)\]$/);
          if (m) inodes.add(m[1]);
        } catch {
          // closed meanwhile
        }
      }
      const ports = new Set();
      for (const table of ['/proc/net/udp', '/proc/net/udp6']) {
        if (!fs.existsSync(table)) continue;
        for (const line of fs.readFileSync(table, 'utf8').split('\n').slice(1)) {
          const cols = line.trim().split(/\s+/);
          if (cols.length > 9 && inodes.has(cols[9])) ports.add(parseInt(cols[1].split(':')[1], 16));
        }
      }
      return ports;
    },
    async stop() {
      if (proc.exitCode !== null) return;
      const exited = new Promise((r) => proc.on('exit', r));
      proc.kill('SIGINT');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}
