// A second network namespace joined to the test's own by a veth pair, for a browser
// whose link is shaped with tc (e.g. a download cap). Addresses from 198.18.0.0/15
// (benchmarking range) only. The e2e runner already runs in an unshared namespace as
// root, so `ip netns add` makes a namespace that nothing outside the test can see.
//
//   test namespace  veth A 198.18.X.1/30  <—>  veth B 198.18.X.2/30  namespace NS
//
// A browser is put into NS by a wrapper script used as executablePath
// (`exec ip netns exec NS /usr/bin/chromium "$@"`).

import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync, rmSync, chmodSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const ip = (...args) => execFileSync('ip', args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
const tc = (...args) => execFileSync('tc', args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();

/**
 * Creates the namespace and the veth pair. `downKbit` caps what the test namespace sends
 * into NS (the browser's download) with a token bucket filter on veth A; `upKbit` caps
 * the other way (on veth B, inside NS). `env`: environment of the browser the wrapper
 * starts.
 */
export function makeShapedNamespace({ index = 0, downKbit, upKbit, env = {} } = {}) {
  const tag = `${process.pid % 10000}${index}`;
  const ns = `e2e-cap-${tag}`;
  const a = `vca${tag}`;
  const b = `vcb${tag}`;
  const hostIp = `198.18.${index}.1`;
  const nsIp = `198.18.${index}.2`;
  ip('netns', 'add', ns);
  try {
    ip('link', 'add', a, 'type', 'veth', 'peer', 'name', b);
    ip('link', 'set', b, 'netns', ns);
    // IPv4 only. With IPv6 a link coming up gets a link-local address that turns from
    // tentative to valid a second or two later (DAD): Chromium sees an address change
    // and fails every request in flight with ERR_NETWORK_CHANGED, a page's module
    // scripts among them (then the page never wires its form and Join submits it).
    // (A kernel without IPv6 has no such file and nothing to do.)
    if (existsSync(`/proc/sys/net/ipv6/conf/${a}`)) {
      writeFileSync(`/proc/sys/net/ipv6/conf/${a}/disable_ipv6`, '1');
      ip('netns', 'exec', ns, 'sh', '-c', `echo 1 > /proc/sys/net/ipv6/conf/${b}/disable_ipv6`);
    }
    ip('addr', 'add', `${hostIp}/30`, 'dev', a);
    ip('link', 'set', a, 'up');
    ip('netns', 'exec', ns, 'ip', 'addr', 'add', `${nsIp}/30`, 'dev', b);
    ip('netns', 'exec', ns, 'ip', 'link', 'set', b, 'up');
    ip('netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up');
    // tbf: rate, a bucket of a few packets, and packets that would wait longer than
    // `latency` are dropped (what a slow access link does).
    if (downKbit) tc('qdisc', 'add', 'dev', a, 'root', 'tbf', 'rate', `${downKbit}kbit`, 'burst', '16kbit', 'latency', '150ms');
    if (upKbit) ip('netns', 'exec', ns, 'tc', 'qdisc', 'add', 'dev', b, 'root', 'tbf', 'rate', `${upKbit}kbit`, 'burst', '16kbit', 'latency', '150ms');
  } catch (e) {
    try {
      ip('netns', 'del', ns);
    } catch {
      // already gone
    }
    throw e;
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tsunagi-e2e-ns-'));
  const wrapper = path.join(dir, 'chromium-in-ns');
  const chromium = process.env.CHROMIUM || '/usr/bin/chromium';
  // `env`: variables for the browser (e.g. HOME, whose .pki/nssdb Chromium trusts).
  const vars = Object.entries(env).map(([k, v]) => `${k}='${v}'`).join(' ');
  writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${ns} ${vars ? `env ${vars} ` : ''}${chromium} "$@"\n`);
  chmodSync(wrapper, 0o755);
  return {
    ns,
    hostIp,
    nsIp,
    wrapper,
    /** tc's counters of the cap (bytes sent, dropped, overlimits). */
    qdiscStats() {
      return tc('-s', 'qdisc', 'show', 'dev', a);
    },
    destroy() {
      try {
        ip('netns', 'del', ns); // takes veth B with it, and so veth A
      } catch {
        // already gone
      }
      try {
        ip('link', 'del', a);
      } catch {
        // went with the namespace
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Chromium flags for pages served from a non-loopback address: its origin counts as
 * secure (getUserMedia needs one), and the host resolver rules let it through.
 */
export function flagsForOrigin(origin, hostIp) {
  return [
    `--unsafely-treat-insecure-origin-as-secure=${origin}`,
    `--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE ${hostIp}`,
  ];
}
