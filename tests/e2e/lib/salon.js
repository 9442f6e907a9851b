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

/// Starts `salon <args>` and waits until its standard output matches
/// `ready`; returns the process, the match, and ways to stop it.
export async function spawnSalon(args, ready, env = {}) {
  const proc = spawn(salonBinary(), args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'info', ...env },
  });
  let log = '';
  let out = '';
  proc.stderr.on('data', (d) => {
    log += d;
  });
  const match = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`salon ${args[0]} did not start:\n${log}`)), 20000);
    proc.stdout.on('data', (d) => {
      out += d;
      const m = out.match(ready);
      if (m) {
        clearTimeout(timer);
        resolve(m);
      }
    });
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`salon ${args[0]} exited with ${code}:\n${log}`));
    });
  });
  const exited = new Promise((r) => proc.on('exit', (code, signal) => r({ code, signal })));
  return {
    proc,
    match,
    exited,
    log: () => log,
    /// What it printed on its standard output (where to open it, where
    /// its metrics are).
    output: () => out,
    alive: () => proc.exitCode === null && proc.signalCode === null,
    async stop(signal = 'SIGINT') {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill(signal);
      const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/// `env` adds to (or overrides) the environment salon runs with, such as
/// a RUST_LOG that shows more.
export async function startSalon(extraArgs = [], env = {}) {
  const salon = await spawnSalon(
    ['dev', '--port', '0', '--web-dir', path.join(root, 'web/dist'), ...extraArgs],
    /Open (http:\/\/[^ ]+\/) in your browser/,
    env,
  );
  const { proc } = salon;
  const httpUrl = salon.match[1].replace(/\/$/, '');
  return {
    httpUrl,
    wsUrl: httpUrl.replace(/^http/, 'ws'),
    apiKey: 'devkey',
    apiSecret: 'secret',
    log: salon.log,
    output: salon.output,
    alive: salon.alive,
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
    stop: () => salon.stop(),
  };
}
