// Serves the test pages and livekit-client's browser bundle on loopback.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const files = {
  '/sdk.html': [path.join(here, '../pages/sdk.html'), 'text/html'],
  '/livekit-client.umd.js': [path.join(here, '../node_modules/livekit-client/dist/livekit-client.umd.js'), 'text/javascript'],
};

export async function servePages() {
  const server = http.createServer((req, res) => {
    const entry = files[new URL(req.url, 'http://x').pathname];
    if (!entry) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'Content-Type': entry[1] });
    fs.createReadStream(entry[0]).pipe(res);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  return { url: `http://127.0.0.1:${port}`, close: () => new Promise((r) => server.close(r)) };
}
