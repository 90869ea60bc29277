// A TCP proxy on loopback in front of tsunagi's HTTP port. A participant that loads the
// page through it also opens its WebSocket through it, so the test can cut that
// WebSocket for real: both TCP connections are reset (no WebSocket close frame), the
// way a network drop looks to the server and to the browser.

import net from 'node:net';

export async function startProxy(targetPort) {
  const conns = new Set();
  let refusing = false;
  const server = net.createServer((client) => {
    if (refusing) {
      client.resetAndDestroy();
      return;
    }
    const upstream = net.connect(targetPort, '127.0.0.1');
    const pair = { client, upstream };
    conns.add(pair);
    const drop = () => {
      conns.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', drop);
    upstream.on('error', drop);
    client.on('close', drop);
    upstream.on('close', drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: server.address().port,
    get connections() {
      return conns.size;
    },
    /** Resets every open connection; new ones are refused (reset) while `refuse` is set. */
    cut({ refuse = false } = {}) {
      refusing = refuse;
      for (const { client, upstream } of conns) {
        client.resetAndDestroy();
        upstream.resetAndDestroy();
      }
      conns.clear();
    },
    restore() {
      refusing = false;
    },
    close() {
      for (const { client, upstream } of conns) {
        client.destroy();
        upstream.destroy();
      }
      return new Promise((resolve) => server.close(resolve));
    },
  };
}
