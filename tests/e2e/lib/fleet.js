// A fleet on this machine: `salon sfu` nodes and `salon signaling` replicas
// as separate processes, sharing a Redis under a key prefix of their own.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { spawnSalon } from './salon.js';

const KEYS = 'devkey: secret';

export class Fleet {
  constructor({ redisPort = 6379 } = {}) {
    this.redisPort = redisPort;
    this.redisUrl = `redis://127.0.0.1:${redisPort}`;
    this.prefix = `salon-e2e-${process.pid}-${Date.now()}`;
    this.processes = [];
    this.apiKey = 'devkey';
    this.apiSecret = 'secret';
  }

  /// Starts a media node named `id`; resolves once it serves.
  async node(id, extra = []) {
    const node = await spawnSalon(
      ['sfu', '--listen', '127.0.0.1:0', '--node-id', id, '--media-workers', '1', ...this.#store(), ...extra],
      /internal endpoints at (http:\/\/\S+),/,
      { LIVEKIT_KEYS: KEYS },
    );
    node.id = id;
    node.internalUrl = node.match[1];
    this.processes.push(node);
    return node;
  }

  /// Starts a signaling replica; `wsUrl` and `httpUrl` are where clients go.
  async replica() {
    const replica = await spawnSalon(
      ['signaling', '--listen', '127.0.0.1:0', ...this.#store()],
      /replica at (http:\/\/[^ /]+)\//,
      { LIVEKIT_KEYS: KEYS },
    );
    replica.httpUrl = replica.match[1];
    replica.wsUrl = replica.httpUrl.replace(/^http/, 'ws');
    this.processes.push(replica);
    return replica;
  }

  #store() {
    return ['--redis', this.redisUrl, '--redis-prefix', this.prefix];
  }

  redis(...args) {
    return execFileSync('redis-cli', ['-p', String(this.redisPort), '--raw', ...args], { encoding: 'utf8' }).trim();
  }

  /// The node holding `room`'s placement, or '' if none.
  holder(room) {
    return this.redis('GET', `${this.prefix}:room:${room}`);
  }

  /// Ids of the nodes with a live registry entry.
  liveNodes() {
    const ids = this.redis('SMEMBERS', `${this.prefix}:nodes`).split('\n').filter(Boolean);
    return ids.filter((id) => this.redis('EXISTS', `${this.prefix}:node:${id}`) === '1').sort();
  }

  async waitFor(what, check, timeoutMs = 15000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      let value;
      try {
        value = await check();
      } catch {
        value = undefined;
      }
      if (value) return value;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  async stop() {
    await Promise.all(this.processes.map((p) => p.stop('SIGKILL')));
    try {
      const keys = this.redis('KEYS', `${this.prefix}:*`).split('\n').filter(Boolean);
      if (keys.length) this.redis('DEL', ...keys);
    } catch {
      // Redis may be the one a test stopped.
    }
  }
}

/// A redis-server of the test's own, on a free port, keeping nothing on disk.
export async function startRedis(port) {
  port ??= await freePort();
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  });
  const deadline = Date.now() + 10000;
  for (;;) {
    try {
      if (execFileSync('redis-cli', ['-p', String(port), 'PING'], { encoding: 'utf8' }).trim() === 'PONG') break;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error('redis-server did not start');
    await new Promise((r) => setTimeout(r, 100));
  }
  const exited = new Promise((r) => proc.on('exit', r));
  return {
    port,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGKILL');
      await exited;
    },
  };
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/// A Y4M video file for chromium's fake camera (`--use-file-for-fake-video-capture`):
/// a bright square moving over a dark field, so every frame differs.
/// Chromium's built-in fake camera, re-opened at once by livekit-client's
/// track restart on a full reconnect, sometimes delivers no frame at all;
/// a file source re-opens cleanly.
export function movingSquareY4m(file, { width = 320, height = 240, fps = 15, frames = 30 } = {}) {
  const fd = fs.openSync(file, 'w');
  try {
    fs.writeSync(fd, `YUV4MPEG2 W${width} H${height} F${fps}:1 Ip A1:1 C420jpeg\n`);
    const luma = width * height;
    const frame = Buffer.alloc(luma + 2 * (luma / 4));
    for (let n = 0; n < frames; n++) {
      frame.fill(40, 0, luma);
      frame.fill(128, luma);
      const size = 48;
      const x0 = Math.floor(((width - size) * n) / frames);
      const y0 = Math.floor((height - size) / 2);
      for (let y = y0; y < y0 + size; y++) frame.fill(220, y * width + x0, y * width + x0 + size);
      fs.writeSync(fd, 'FRAME\n');
      fs.writeSync(fd, frame);
    }
  } finally {
    fs.closeSync(fd);
  }
  return file;
}
