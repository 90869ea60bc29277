// Starts and stops a real tsunagi for one test file: loopback only, random free ports
// for HTTP and TURN, a random relay port range, and loopback peers allowed (both
// browsers are on 127.0.0.1). Stopped by PID.

import { spawn, execFileSync } from 'node:child_process';
import { createWriteStream, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import dgram from 'node:dgram';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { artifactsDir } from './paths.mjs';

function tcpFree(port) {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

function udpFree(port) {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    s.once('error', () => resolve(false));
    s.bind(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

const taken = new Set();

/** A port free for TCP (and for UDP too when `udp`), not handed out before in this process. */
export async function freePort({ udp = false, min = 20000, max = 39999 } = {}) {
  for (let i = 0; i < 200; i++) {
    const p = min + Math.floor(Math.random() * (max - min));
    if (taken.has(p)) continue;
    if ((await tcpFree(p)) && (!udp || (await udpFree(p)))) {
      taken.add(p);
      return p;
    }
  }
  throw new Error('no free port found');
}

export const TSUNAGI_BIN = process.env.TSUNAGI_BIN || path.resolve(import.meta.dirname, '../../../target/release/tsunagi');

/** The test's environment less its own TSUNAGI_* variables (tsunagi warns about unknown ones). */
function serverEnv() {
  const env = { ...process.env };
  for (const k of ['TSUNAGI_BIN', 'TSUNAGI_E2E_IN_NETNS', 'TSUNAGI_ARTIFACTS']) delete env[k];
  return env;
}

let helpText = null;

/** `tsunagi --help`, read once: which options this build has. */
export function serverHelp() {
  if (helpText === null) {
    try {
      helpText = execFileSync(TSUNAGI_BIN, ['--help'], { encoding: 'utf8', env: serverEnv() });
    } catch (e) {
      helpText = String((e && e.stdout) || '');
    }
  }
  return helpText;
}

/** Whether this build of tsunagi has a command-line option, e.g. '--room-mode'. */
export function serverHas(option) {
  return new RegExp(`(^|\\s)${option.replace(/[-]/g, '\\-')}[\\s=,<]`, 'm').test(serverHelp());
}

/**
 * Throws a clear error when the server has no SFU options yet (the SFU tests are
 * written ahead of the server side of docs/sfu.md).
 */
export function requireSfu() {
  const missing = ['--room-mode', '--sfu-port'].filter((o) => !serverHas(o));
  if (missing.length) throw new Error(`${TSUNAGI_BIN} has no ${missing.join(', ')}: this build has no SFU (docs/sfu.md); rebuild with the SFU runtime`);
}

/**
 * The SFU's options for a test: the room policy and limits, an ephemeral UDP port, and
 * the address it listens on and announces when this build has such an option.
 */
export function sfuArgs({ roomMode, meshMaxPeers, maxRoomPeers, ip = '127.0.0.1' } = {}) {
  const args = [];
  if (roomMode) args.push('--room-mode', roomMode);
  if (meshMaxPeers !== undefined) args.push('--mesh-max-peers', String(meshMaxPeers));
  if (maxRoomPeers !== undefined) args.push('--max-room-peers', String(maxRoomPeers));
  if (serverHas('--sfu-port')) args.push('--sfu-port', '0');
  for (const o of ['--sfu-ip', '--sfu-listening-ip']) {
    if (serverHas(o)) {
      args.push(o, ip);
      break;
    }
  }
  return args;
}

/**
 * Starts tsunagi. Returns {url, httpPort, turnPort, pid, stop(), kill(), waitExit(), stats(), sfuAddrs(), log}.
 * `extraArgs` are appended (e.g. ['--token-secret', 's']). `ip`: the address of every
 * listener (default 127.0.0.1; a veth address for tests across network namespaces).
 * `allowLoopbackPeers: false` leaves out `--allow-loopback-peers`: the server's default,
 * where TURN relays to no loopback address but its own SFU's.
 */
export async function startTsunagi(options = {}) {
  // Ports are picked free before the server binds them, so another process may take one
  // in between (the kernel hands the same numbers out as outgoing connections' local
  // ports). A start that fails only because an address is in use is tried again on
  // other ports; any other failure is reported at once.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(options);
    } catch (e) {
      if (!(e.addressInUse && attempt < 3)) throw e;
      console.log(`tsunagi start ${attempt} found an address in use; trying other ports`);
    }
  }
}

/**
 * `ip`: the address of every listener; `httpIp`: the HTTP server's, when it differs
 * (`0.0.0.0`: every address, reached by the test at 127.0.0.1). Each server keeps its
 * state (the self-signed certificate) in a data directory of its own, `dataDir`.
 */
async function startOnce({ name = 'tsunagi', extraArgs = [], ip = '127.0.0.1', httpIp = ip, allowLoopbackPeers = true } = {}) {
  const httpPort = await freePort();
  const turnPort = await freePort({ udp: true });
  const minPort = 40000 + Math.floor(Math.random() * 20) * 1000;
  const maxPort = minPort + 999;
  const args = [
    '--http-ip', httpIp,
    '--http-port', String(httpPort),
    '--listening-ip', ip,
    '--listening-port', String(turnPort),
    '--relay-ip', ip,
    ...(allowLoopbackPeers ? ['--allow-loopback-peers'] : []),
    '--min-port', String(minPort),
    '--max-port', String(maxPort),
    // Servers of one file may run side by side: the SFU takes a free port unless the
    // test chose one (sfuArgs).
    ...(!extraArgs.includes('--sfu-port') && serverHas('--sfu-port') ? ['--sfu-port', '0'] : []),
    // `{httpPort}` in an argument stands for the HTTP port (e.g. one TLS port).
    ...extraArgs.map((a) => a.replaceAll('{httpPort}', String(httpPort))),
  ];
  mkdirSync(artifactsDir, { recursive: true });
  const logPath = path.join(artifactsDir, `${name}.log`);
  const log = createWriteStream(logPath);
  log.write(`$ ${TSUNAGI_BIN} ${args.join(' ')}\n`);
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'tsunagi-e2e-data-'));
  const child = spawn(TSUNAGI_BIN, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...serverEnv(), TSUNAGI_DATA_DIR: dataDir },
  });
  child.stdout.pipe(log, { end: false });
  child.stderr.pipe(log, { end: false });
  let stderrText = '';
  child.stderr.on('data', (d) => {
    if (stderrText.length < 65536) stderrText += d;
  });
  let exited = null;
  const exitPromise = new Promise((resolve) => child.once('exit', (code, signal) => {
    exited = { code, signal };
    resolve(exited);
  }));
  const url = `http://${httpIp === '0.0.0.0' ? '127.0.0.1' : httpIp}:${httpPort}`;
  const deadline = Date.now() + 15000;
  for (;;) {
    if (exited) {
      // Let stderr drain before reading it.
      await sleep(50);
      const e = new Error(`tsunagi exited at start (${JSON.stringify(exited)}): ${stderrText.trim().split('\n').pop() || ''}; see ${logPath}`);
      e.addressInUse = /address (already )?in use/i.test(stderrText);
      throw e;
    }
    try {
      const r = await fetch(`${url}/healthz`);
      if (r.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`tsunagi did not answer /healthz within 15 s; see ${logPath}`);
    }
    await sleep(100);
  }
  return {
    url,
    httpPort,
    turnPort,
    pid: child.pid,
    logPath,
    dataDir,
    async stats() {
      const r = await fetch(`${url}/api/stats`);
      if (!r.ok) throw new Error(`/api/stats answered ${r.status}`);
      return r.json();
    },
    /**
     * The SFU's listening addresses, from its start-up log line
     * `SFU listening (ICE-lite host candidates) udp=[…] tcp=[…]`: {udp: ['ip:port'], tcp: [...]}.
     */
    async sfuAddrs({ timeout = 5000 } = {}) {
      const until = Date.now() + timeout;
      for (;;) {
        const m = /SFU listening[^\n]*?udp=\[([^\]]*)\][^\n]*?tcp=\[([^\]]*)\]/.exec(readFileSync(logPath, 'utf8'));
        if (m) {
          const list = (x) => x.split(',').map((a) => a.trim()).filter(Boolean);
          return { udp: list(m[1]), tcp: list(m[2]) };
        }
        if (Date.now() > until) throw new Error(`no "SFU listening" line in ${logPath} within ${timeout} ms`);
        await sleep(100);
      }
    },
    /** SIGKILL (a node that fails); resolves with {code, signal} once it is gone. */
    async kill() {
      if (!exited) process.kill(child.pid, 'SIGKILL');
      return exitPromise;
    },
    /** Resolves with {code, signal} when the process ends by itself; null after `timeout` ms. */
    async waitExit({ timeout }) {
      let timer;
      const late = new Promise((resolve) => {
        timer = setTimeout(() => resolve(null), timeout);
      });
      const r = await Promise.race([exitPromise, late]);
      clearTimeout(timer);
      return r;
    },
    async stop() {
      if (!exited) {
        process.kill(child.pid, 'SIGTERM');
        const timer = setTimeout(() => {
          if (!exited) process.kill(child.pid, 'SIGKILL');
        }, 5000);
        await exitPromise;
        clearTimeout(timer);
      }
      log.end();
      rmSync(dataDir, { recursive: true, force: true });
      return exited;
    },
  };
}
