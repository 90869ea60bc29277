// Judges the NAT lab results written by scripts/nat-lab --json (see tests/nat/run).
//
//   node tests/nat/check.mjs classify FILE.jsonl
//   node tests/nat/check.mjs calls FILE.jsonl [--table OUT.md]
//
// Exits 1, after printing every problem, if anything is not as expected.

import { readFileSync, writeFileSync } from 'node:fs';

const [mode, file, ...rest] = process.argv.slice(2);
const lines = readFileSync(file, 'utf8').split('\n').filter((l) => l.trim());
const rows = lines.map((l) => JSON.parse(l));
const problems = [];

// RFC 4787 behaviours of each lab kind, as `tsunagi nat --json` names them.
const EI = 'endpoint-independent';
const AD = 'address-dependent';
const APD = 'address-and-port-dependent';
const EXPECTED = {
  none: { nat: false, mapping: EI, filtering: EI, type: 'open' },
  'full-cone': { nat: true, mapping: EI, filtering: EI, type: 'full-cone' },
  'restricted-cone': { nat: true, mapping: EI, filtering: AD, type: 'restricted-cone' },
  'port-restricted-cone': { nat: true, mapping: EI, filtering: APD, type: 'port-restricted-cone' },
  symmetric: { nat: true, mapping: APD, filtering: APD, type: 'symmetric' },
};
// turnutils_natdiscovery's words for the same.
const COTURN = {
  [EI]: 'Endpoint Independent',
  [AD]: 'Address Dependent',
  [APD]: 'Address and Port Dependent',
};

/** Direct where the NATs allow it; TURN for symmetric with symmetric or port-restricted. */
export function expectedPath(a, b) {
  const s = [a, b].sort().join(' ');
  return s === 'symmetric symmetric' || s === 'port-restricted-cone symmetric' ? 'relay' : 'direct';
}

function classify() {
  const seen = new Set();
  for (const r of rows) {
    seen.add(r.kind);
    const want = EXPECTED[r.kind];
    const got = r.tsunagi_nat;
    if (!got) {
      problems.push(`${r.kind}: tsunagi nat printed no JSON`);
      continue;
    }
    const line = `${r.kind.padEnd(21)} tsunagi nat: ${got.type} (mapping ${got.mapping}, filtering ${got.filtering}, hairpinning ${got.hairpinning}, ${got.elapsed_ms} ms)`;
    console.log(`   ${line}`);
    console.log(`   ${''.padEnd(21)} natdiscovery: ${r.natdiscovery.mapping || '?'} / ${r.natdiscovery.filtering || '?'}`);
    for (const k of ['nat', 'mapping', 'filtering', 'type']) {
      if (got[k] !== want[k]) problems.push(`${r.kind}: tsunagi nat says ${k} = ${got[k]}, expected ${want[k]}`);
    }
    if (got.server_support !== 'two-ips') problems.push(`${r.kind}: server support ${got.server_support}`);
    const m = r.natdiscovery.mapping;
    if (m !== `${COTURN[want.mapping]} Mapping` && !(want.mapping === EI && m === 'No NAT!')) {
      problems.push(`${r.kind}: turnutils_natdiscovery mapping '${m}', expected ${COTURN[want.mapping]}`);
    }
    if (r.natdiscovery.filtering !== `${COTURN[want.filtering]} Filtering`) {
      problems.push(`${r.kind}: turnutils_natdiscovery filtering '${r.natdiscovery.filtering}', expected ${COTURN[want.filtering]} Filtering`);
    }
  }
  for (const k of Object.keys(EXPECTED)) if (!seen.has(k)) problems.push(`${k}: not classified`);
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)] : null;
};

function pairTypes(side) {
  return side && side.local ? `${side.local.type}→${side.remote.type}` : '?';
}

function calls(tableFile) {
  const byPair = new Map();
  for (const r of rows) {
    const key = `${r.a}|${r.b}`;
    if (!byPair.has(key)) byPair.set(key, []);
    byPair.get(key).push(r);
    const want = expectedPath(r.a, r.b);
    if (!r.ok) problems.push(`${r.a} <-> ${r.b}: no call (${r.error})`);
    else if (r.path !== want) problems.push(`${r.a} <-> ${r.b}: ${r.path} path, expected ${want}`);
    if (r.ok) {
      for (const side of ['a', 'b']) {
        const s = r.sides[side];
        if (!(s.framesDecoded > 0)) problems.push(`${r.a} <-> ${r.b}: ${side} decoded no video`);
        const relay = s.local.type === 'relay' || s.remote.type === 'relay';
        if (want === 'direct' && relay) problems.push(`${r.a} <-> ${r.b}: ${side} selected ${pairTypes(s)}`);
        if (want === 'direct' && !['host', 'srflx', 'prflx'].includes(s.local.type)) problems.push(`${r.a} <-> ${r.b}: ${side} local ${s.local.type}`);
        // The connection panel says why, in line with the path.
        const why = s.why || '';
        if (!why.startsWith('Why:')) problems.push(`${r.a} <-> ${r.b}: ${side}'s connection panel gives no reason (${s.whyError || why})`);
        else if ((r.path === 'relay') !== /TURN relay/.test(why)) problems.push(`${r.a} <-> ${r.b}: ${side}'s panel says '${why}' for a ${r.path} path`);
      }
    }
  }
  const table = [
    '| host A | host B | path | selected pair (A: local→remote) | connection time (median) | runs |',
    '|---|---|---|---|---|---|',
  ];
  for (const [key, rs] of byPair) {
    const [a, b] = key.split('|');
    const ok = rs.filter((r) => r.ok);
    const paths = [...new Set(ok.map((r) => r.path))].join(', ') || 'failed';
    const types = [...new Set(ok.map((r) => pairTypes(r.sides.a)))].join(', ');
    const ms = median(ok.map((r) => r.connectMs));
    table.push(`| ${a} | ${b} | ${paths} | ${types} | ${ms === null ? '—' : `${ms} ms`} | ${ok.length}/${rs.length} |`);
  }
  console.log(table.map((l) => `   ${l}`).join('\n'));
  // The same as a kind x kind grid: path and median connection time in each cell.
  const kinds = Object.keys(EXPECTED).filter((k) => rows.some((r) => r.a === k || r.b === k));
  const cell = (a, b) => {
    const rs = (byPair.get(`${a}|${b}`) || byPair.get(`${b}|${a}`) || []).filter((r) => r.ok);
    if (!rs.length) return '—';
    const paths = [...new Set(rs.map((r) => r.path))].join('/');
    return `${paths}, ${median(rs.map((r) => r.connectMs))} ms`;
  };
  const grid = [`| A \\ B | ${kinds.join(' | ')} |`, `|---|${kinds.map(() => '---').join('|')}|`];
  for (const a of kinds) grid.push(`| **${a}** | ${kinds.map((b) => cell(a, b)).join(' | ')} |`);
  if (tableFile) writeFileSync(tableFile, grid.join('\n') + '\n\n' + table.join('\n') + '\n');
}

if (mode === 'classify') classify();
else if (mode === 'calls') {
  const i = rest.indexOf('--table');
  calls(i >= 0 ? rest[i + 1] : null);
} else {
  console.error('usage: check.mjs classify|calls FILE.jsonl [--table OUT.md]');
  process.exit(2);
}
if (problems.length) {
  console.log('\nFAILED:');
  for (const p of problems) console.log(`   ${p}`);
  process.exitCode = 1;
} else {
  console.log(`   ok: ${rows.length} ${mode === 'classify' ? 'hosts' : 'calls'} as expected`);
}
