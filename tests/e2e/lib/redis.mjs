// A redis-server of one test file (the Debian package; scripts/test installs it) on a
// free loopback port, without persistence, stopped by PID. `kill()` and `start()` again
// on the same port: a Redis restarted empty, as after a crash.

import { spawn } from 'node:child_process';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from './server.mjs';

/** Whether a Redis answers PING on 127.0.0.1:port. */
function pong(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let got = '';
    const done = (ok) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(1000, () => done(false));
    s.once('error', () => done(false));
    s.once('connect', () => s.write('PING\r\n'));
    s.on('data', (d) => {
      got += d;
      if (got.includes('\r\n')) done(got.startsWith('+PONG'));
    });
  });
}

export async function startRedis() {
  // Below the kernel's ephemeral range (32768-), so no outgoing connection takes the
  // port while Redis is down between a kill and a start.
  const port = await freePort({ min: 20000, max: 32000 });
  let child = null;
  let exited = null;
  const redis = {
    port,
    url: `redis://127.0.0.1:${port}/0`,
    get pid() {
      return child && child.pid;
    },
    async start() {
      child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'no'], { stdio: 'ignore' });
      const me = child;
      exited = new Promise((resolve) => me.once('exit', resolve));
      const deadline = Date.now() + 10000;
      while (!(await pong(port))) {
        if (me.exitCode !== null) throw new Error(`redis-server on ${port} exited at start (${me.exitCode})`);
        if (Date.now() > deadline) throw new Error(`redis-server did not answer PING on ${port} within 10 s`);
        await sleep(50);
      }
    },
    /** SIGKILL, and wait until the process is gone (its port closed). */
    async kill() {
      if (!child || child.exitCode !== null || child.signalCode !== null) return;
      process.kill(child.pid, 'SIGKILL');
      await exited;
    },
  };
  await redis.start();
  return redis;
}
