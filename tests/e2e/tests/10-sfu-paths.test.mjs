// The other ways to the SFU (docs/sfu.md, "runtime"), over real paths:
//
// 1. ICE-TCP: UDP to the SFU's port is dropped by a packet filter rule in the test's
//    namespace (which also stops TURN from relaying to it: the relay speaks UDP). Three
//    participants of an SFU room still decode each other: each one's selected pair to
//    the SFU is TCP, host to the SFU's passive TCP candidate on the same port number,
//    and /api/stats counts the SFU's TCP connections.
// 2. Through tsunagi's own TURN: a server without --allow-loopback-peers (the default:
//    TURN relays to no loopback address but the SFU's own). Two participants of an SFU
//    room in "relay only" mode (one from the start, one switching it on during the call):
//    their selected pair becomes relay → the SFU's UDP host candidate, video decodes, and
//    the TURN relayed bytes grow both ways; the pages' own frame monitor sees no freeze
//    while the path changes.
// 3. This server's own relays as peers: on a server of the same options, two browsers
//    in a *mesh* room in relay-only mode need TURN to relay to a loopback address, the
//    other browser's relayed address on this very server. Exactly those addresses are
//    allowed: the call connects relay to relay and the relayed bytes grow both ways
//    (every other loopback port stays refused: crates/tsunagi/tests/turn_own_relays.rs).
//
// The packet filter rule needs root in the runner's network namespace (tests/e2e/run
// gives it) and iptables or nft (scripts/test installs iptables).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { startTsunagi, requireSfu, sfuArgs } from '../lib/server.mjs';
import { openParticipant, expectMediaFlowing, selectedPair, waitFor, inbound } from '../lib/browser.mjs';
import { dropUdpTo } from '../lib/firewall.mjs';

const servers = [];
const people = [];
const rules = [];

before(() => {
  requireSfu();
});

after(async () => {
  for (const r of rules) r.remove();
  for (const p of people) await p.close();
  for (const s of servers) await s.stop();
});

async function closeAll() {
  while (people.length) await people.pop().close();
}

const portOf = (addr) => Number(addr.slice(addr.lastIndexOf(':') + 1));

function relayed(stats) {
  const t = stats.turn || {};
  return { toPeers: t.bytesToPeers || 0, fromPeers: t.bytesFromPeers || 0, denied: t.peersDenied || 0, allocations: t.allocations || 0 };
}

/** Waits until `p`'s selected pair to the SFU satisfies `ok`; returns it. */
async function sfuPairOf(p, ok, what, timeout = 20000) {
  let last = null;
  try {
    return await waitFor(async () => {
      last = await selectedPair(p.page, 'sfu');
      return last && last.state === 'succeeded' && ok(last) ? last : false;
    }, { timeout, what: `${p.name}: ${what}` });
  } catch (e) {
    e.message += `; last pair: ${JSON.stringify(last)}`;
    throw e;
  }
}

test('ICE-TCP: with UDP to the SFU dropped, three participants decode each other over TCP', { timeout: 90000 }, async () => {
  const t0 = Date.now();
  const server = await startTsunagi({ name: 'tsunagi-sfu-tcp', extraArgs: sfuArgs({ roomMode: 'sfu' }) });
  servers.push(server);
  const addrs = await server.sfuAddrs();
  console.log('SFU listening:', JSON.stringify(addrs));
  assert.ok(addrs.udp.length >= 1 && addrs.tcp.length >= 1, 'the SFU listens on UDP and TCP');
  const port = portOf(addrs.udp[0]);
  assert.equal(portOf(addrs.tcp[0]), port, 'ICE-TCP on the UDP port number');
  const rule = dropUdpTo(port);
  rules.push(rule);
  try {
    await tcpCase(server, addrs, rule);
  } finally {
    await closeAll();
    rule.remove();
  }
  console.log(`ICE-TCP case: ${Date.now() - t0} ms`);
});

async function tcpCase(server, addrs, rule) {
  for (const name of ['Ann', 'Ben', 'Cat']) people.push(await openParticipant(server.url, { name, room: 'tcp-room' }));
  const flows = await expectMediaFlowing(people, { timeout: 30000, windowMs: 1500 });
  console.log('video over ICE-TCP:', JSON.stringify(flows.map((f) => `${f.dir}:${f.frames}`)));
  for (const p of people) {
    const pair = await sfuPairOf(p, (s) => s.localProtocol === 'tcp', 'a TCP pair to the SFU');
    console.log(`${p.name}'s pair to the SFU:`, JSON.stringify(pair));
    // Chromium's active TCP candidate shows as host, or as prflx once the SFU has seen
    // its real (ephemeral) source port; never a relay.
    assert.ok(['host', 'prflx'].includes(pair.local), `${p.name}: the browser's own TCP candidate, not a relay: ${pair.local}`);
    assert.equal(pair.remote, 'host', `${p.name}: to the SFU's host candidate`);
    assert.equal(pair.remoteProtocol, 'tcp');
    assert.equal(pair.remoteTcpType, 'passive', 'the SFU\'s TCP candidate is passive');
    assert.equal(pair.remoteAddress, addrs.tcp[0], 'the SFU\'s TCP address');
    // Nothing of the SFU connection went over UDP.
    const udpUsed = await p.page.evaluate(async () => {
      const r = await window.tsunagi.rawStats('sfu');
      const byId = new Map(r.map((s) => [s.id, s]));
      return r
        .filter((s) => s.type === 'candidate-pair' && (s.bytesReceived || 0) > 0)
        .map((s) => byId.get(s.localCandidateId))
        .filter((c) => c && c.protocol !== 'tcp')
        .map((c) => `${c.candidateType} ${c.protocol} ${c.address}:${c.port}`);
    });
    assert.deepEqual(udpUsed, [], `${p.name}: no pair received anything over UDP`);
  }
  const stats = await server.stats();
  console.log('sfu stats:', JSON.stringify({ tcpConnections: stats.sfu.tcpConnections, peers: stats.sfu.peers, bytesIn: stats.sfu.bytesIn, bytesOut: stats.sfu.bytesOut }), `UDP datagrams dropped by ${rule.tool}: ${rule.dropped()}`);
  assert.ok(stats.sfu.tcpConnections > 0, `/api/stats sfu.tcpConnections > 0: ${stats.sfu.tcpConnections}`);
  assert.ok(stats.sfu.tcpConnections >= people.length, 'one TCP connection per participant at least');
  assert.ok(rule.dropped() > 0, 'the browsers did try UDP (and it was dropped)');
}

test('through tsunagi\'s TURN: relay-only participants reach the SFU via a relay candidate', { timeout: 90000 }, async () => {
  const t0 = Date.now();
  // No --allow-loopback-peers: TURN relays to the SFU's own addresses and no other loopback one.
  const server = await startTsunagi({ name: 'tsunagi-sfu-turn', allowLoopbackPeers: false, extraArgs: sfuArgs({}) });
  servers.push(server);
  const addrs = await server.sfuAddrs();
  console.log('SFU listening:', JSON.stringify(addrs));
  try {
    await turnCase(server, addrs);
  } finally {
    await closeAll();
  }
  console.log(`TURN case: ${Date.now() - t0} ms`);
});

async function turnCase(server, addrs) {
  // Dan joins with a direct path and switches relay-only on during the call; Eva starts
  // in relay-only mode (the landing page's switch, here ?relay=1).
  const dan = await openParticipant(server.url, { name: 'Dan', room: 'sfu-via-turn', query: { mode: 'sfu' } });
  people.push(dan);
  const eva = await openParticipant(server.url, { name: 'Eva', room: 'sfu-via-turn', query: { mode: 'sfu', relay: '1' } });
  people.push(eva);
  for (const p of people) assert.equal(await p.page.evaluate(() => window.tsunagi.mode), 'sfu', `${p.name} in SFU mode`);
  assert.equal(await eva.page.evaluate(() => window.tsunagi.relayOnly), true, 'Eva starts relay-only');
  await expectMediaFlowing(people, { timeout: 25000, windowMs: 1000 });
  const direct = await sfuPairOf(dan, () => true, 'a pair to the SFU');
  assert.notEqual(direct.local, 'relay', 'Dan: direct before relay-only');

  // The pages measure their presented frames across the switch (web/js/test/frame-gaps.js).
  for (const p of people) await p.page.evaluate(() => window.tsunagi.frameGaps({ reset: true }));
  const t1 = Date.now();
  await dan.page.getByTestId('relay-only').check();
  assert.equal(await dan.page.evaluate(() => window.tsunagi.relayOnly), true);
  for (const p of people) {
    const pair = await sfuPairOf(p, (s) => s.local === 'relay', 'a relay pair to the SFU');
    console.log(`${p.name}'s pair to the SFU:`, JSON.stringify(pair));
    assert.equal(pair.remote, 'host', 'to the SFU\'s host candidate');
    assert.equal(pair.remoteProtocol, 'udp');
    assert.ok(addrs.udp.includes(pair.remoteAddress), `the SFU's UDP address (${pair.remoteAddress} in ${addrs.udp})`);
    if (p === dan) console.log(`Dan: a relay pair to the SFU ${Date.now() - t1} ms after switching relay-only on`);
  }
  await expectMediaFlowing(people, { timeout: 15000, windowMs: 1000 });
  for (const [a, b] of [[dan, eva], [eva, dan]]) {
    const g = (await a.page.evaluate(() => window.tsunagi.frameGaps())).peers[b.id];
    console.log(`${b.name}→${a.name} across the switch: largest gap between presented frames ${g.maxGap} ms (${g.frames} frames)`);
    assert.ok(g.maxGap <= 2500, `${b.name}→${a.name}: the video froze for ${g.maxGap} ms while the path changed`);
  }

  // Both directions go through the relay: browser → SFU ("to peers") and back.
  const s1 = relayed(await server.stats());
  const f1 = await Promise.all(people.map((p) => inbound(p.page, people.find((o) => o !== p).id)));
  await sleep(2000);
  const s2 = relayed(await server.stats());
  const f2 = await Promise.all(people.map((p) => inbound(p.page, people.find((o) => o !== p).id)));
  console.log('TURN relayed bytes:', JSON.stringify({ s1, s2 }), 'frames decoded in 2 s:', f2.map((x, i) => x.framesDecoded - f1[i].framesDecoded));
  assert.ok(s2.toPeers - s1.toPeers > 20000, `bytes to peers (browsers → SFU) grow: ${s1.toPeers} → ${s2.toPeers}`);
  assert.ok(s2.fromPeers - s1.fromPeers > 20000, `bytes from peers (SFU → browsers) grow: ${s1.fromPeers} → ${s2.fromPeers}`);
  assert.ok(s2.allocations >= people.length, 'an allocation per browser');
  f2.forEach((x, i) => assert.ok(x.framesDecoded > f1[i].framesDecoded, `${people[i].name} keeps decoding`));
  for (const p of people) assert.deepEqual(p.consoleErrors.filter((e) => !/favicon/.test(e)), [], `${p.name} console errors`);
}

test('relay-only browsers in a mesh room on the same server reach each other through its own relays, with default peer rules', { timeout: 60000 }, async () => {
  const t0 = Date.now();
  // A server of its own with the same options as the previous test's: the SFU sessions
  // of that test's closed browsers go on sending to their TURN allocations until their
  // ICE consent expires (~15 s), which would show in these counters.
  const server = await startTsunagi({ name: 'tsunagi-mesh-turn', allowLoopbackPeers: false, extraArgs: sfuArgs({}) });
  servers.push(server);
  try {
    await meshCase(server);
  } finally {
    await closeAll();
  }
  console.log(`mesh relay-to-relay case: ${Date.now() - t0} ms`);
});

/**
 * No --allow-loopback-peers, relay-ip 127.0.0.1: each browser's peer is the other's
 * relayed address, a loopback address of this very server. Those exact addresses are
 * allowed (this server's own live relays are no foreign peers); every other loopback
 * address stays refused, which the browsers' permissions for the other's host candidates
 * show (crates/tsunagi/tests/turn_own_relays.rs checks the refusals port by port).
 */
async function meshCase(server) {
  const before = relayed(await server.stats());
  for (const name of ['Fay', 'Gus']) people.push(await openParticipant(server.url, { name, room: 'mesh-via-turn', query: { mode: 'mesh', relay: '1' } }));
  const [a, b] = people;
  for (const p of people) {
    assert.equal(await p.page.evaluate(() => window.tsunagi.mode), 'mesh');
    assert.equal(await p.page.evaluate(() => window.tsunagi.relayOnly), true, `${p.name} starts relay-only`);
  }
  await expectMediaFlowing(people, { timeout: 30000, windowMs: 1500 });
  for (const [x, y] of [[a, b], [b, a]]) {
    const pair = await waitFor(async () => {
      const pr = await selectedPair(x.page, y.id);
      return pr && pr.state === 'succeeded' ? pr : false;
    }, { timeout: 15000, what: `${x.name}: a succeeded pair` });
    assert.equal(pair.local, 'relay', `${x.name}: local relay candidate: ${JSON.stringify(pair)}`);
    assert.equal(pair.remote, 'relay', `${x.name}: the remote end is the other's relay: ${JSON.stringify(pair)}`);
  }
  const after = relayed(await server.stats());
  console.log('TURN:', JSON.stringify({ before, after }));
  assert.ok(after.toPeers - before.toPeers > 20000, `relayed to peers: ${before.toPeers} → ${after.toPeers}`);
  assert.ok(after.fromPeers - before.fromPeers > 20000, `relayed from peers: ${before.fromPeers} → ${after.fromPeers}`);
  for (const p of people) assert.deepEqual(p.consoleErrors.filter((e) => !/favicon/.test(e)), [], `${p.name} console errors`);
}
