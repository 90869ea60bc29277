// Packet filter rules for one test, in the runner's own network namespace (tests/e2e/run
// runs everything as root in a fresh namespace, so a rule here is seen by nothing outside
// the test run). Every rule is removed again by the test that added it: the files of one
// run share the namespace.
//
// iptables (nft backend or legacy) when present, else nftables (both come with
// scripts/test's system packages).

import { execFileSync } from 'node:child_process';

const run = (cmd, args) => execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();

function has(cmd) {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * Drops every UDP datagram to local port `port` (INPUT: on loopback that is everything
 * sent to the port, from the browsers and from the TURN relay alike). Returns
 * {dropped(): packets dropped so far, remove()}.
 */
export function dropUdpTo(port) {
  port = String(Number(port));
  if (has('iptables')) {
    const rule = ['INPUT', '-p', 'udp', '--dport', port, '-j', 'DROP'];
    run('iptables', ['-I', ...rule]);
    return {
      tool: 'iptables',
      dropped() {
        const out = run('iptables', ['-vnxL', 'INPUT']);
        const line = out.split('\n').find((l) => /DROP/.test(l) && l.includes(`dpt:${port}`));
        return line ? Number(line.trim().split(/\s+/)[0]) : 0;
      },
      remove() {
        try {
          run('iptables', ['-D', ...rule]);
        } catch {
          // already gone
        }
      },
    };
  }
  if (has('nft')) {
    const table = `e2e_drop_udp_${port}`;
    run('nft', ['add', 'table', 'inet', table]);
    run('nft', ['add', 'chain', 'inet', table, 'input', '{ type filter hook input priority 0 ; policy accept ; }']);
    run('nft', ['add', 'rule', 'inet', table, 'input', 'udp', 'dport', port, 'counter', 'drop']);
    return {
      tool: 'nft',
      dropped() {
        const m = /counter packets (\d+)/.exec(run('nft', ['list', 'table', 'inet', table]));
        return m ? Number(m[1]) : 0;
      },
      remove() {
        try {
          run('nft', ['delete', 'table', 'inet', table]);
        } catch {
          // already gone
        }
      },
    };
  }
  throw new Error('neither iptables nor nft is installed (scripts/test installs iptables)');
}
