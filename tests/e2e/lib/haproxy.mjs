// A real HAProxy (Debian package haproxy; scripts/test installs it) in front of the
// HTTP ports of a cluster's nodes, as a deployment puts a TCP load balancer in front of
// them: TCP mode (pages and WebSockets pass through untouched), a health check of
// /healthz every 250 ms (a draining node answers 503, a dead one nothing: one failed
// check takes it out), and a connection that fails is sent to another node.
//
// `balance first`: every connection goes to the first node that is up, in the order
// given. A test lists the node it wants a page on first, and the others after it: where
// that node fails or drains, the page's reconnections reach the next one.

import { spawn, execFileSync } from 'node:child_process';
import { createWriteStream, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { artifactsDir } from './paths.mjs';
import { freePort } from './server.mjs';

function bound(port) {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(true));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(false)));
  });
}

/** `servers`: [{name, httpPort}] in order of preference. */
export async function startHaproxy(servers, { name = 'haproxy' } = {}) {
  const port = await freePort();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tsunagi-e2e-haproxy-'));
  const cfg = path.join(dir, 'haproxy.cfg');
  writeFileSync(
    cfg,
    `global
    maxconn 500
defaults
    mode tcp
    timeout connect 1s
    timeout check 1s
    # WebSockets live as long as the call; both ends ping every 15 s.
    timeout client 5m
    timeout server 5m
    retries 2
    option redispatch
frontend web
    bind 127.0.0.1:${port}
    default_backend nodes
backend nodes
    balance first
    option httpchk GET /healthz
    http-check expect status 200
    default-server check inter 250 fall 1 rise 2
${servers.map((s) => `    server ${s.name} 127.0.0.1:${s.httpPort}`).join('\n')}
`,
  );
  execFileSync('haproxy', ['-c', '-q', '-f', cfg], { stdio: 'pipe' });
  mkdirSync(artifactsDir, { recursive: true });
  const log = createWriteStream(path.join(artifactsDir, `${name}.log`));
  const child = spawn('haproxy', ['-db', '-f', cfg], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.pipe(log, { end: false });
  child.stderr.pipe(log, { end: false });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  // Listening once its port cannot be bound (a probe connection would reach a node).
  const deadline = Date.now() + 10000;
  while (!(await bound(port))) {
    if (child.exitCode !== null) throw new Error(`haproxy exited at start (${child.exitCode}); see ${name}.log`);
    if (Date.now() > deadline) throw new Error('haproxy is not listening after 10 s');
    await sleep(50);
  }
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    pid: child.pid,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        process.kill(child.pid, 'SIGTERM');
        const timer = setTimeout(() => child.exitCode === null && child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(timer);
      }
      log.end();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
