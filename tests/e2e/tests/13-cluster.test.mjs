// A cluster of tsunagi nodes on one Redis (docs/configuration.md, "Cluster") with real
// Chromium participants of one room connected to different nodes: each page is loaded
// from the node it should use (its WebSocket goes there), or through HAProxy in front of
// the nodes (lib/haproxy.mjs) when it must find another node by itself. The room runs on
// one node (its owner: hub and SFU); the others relay their clients' signaling to it
// through Redis. Media goes browser to browser (mesh) or through the owner's SFU.
//
// 1. two participants on n1 and n2 (mesh), then six over three nodes (SFU on the owner);
// 2. the owner killed with SIGKILL: everyone back in the room, media within 10 s;
// 3. the owner drained (POST /api/drain): everyone back, the node exits by itself (0);
// 4. Redis killed mid-call and started again: media never stops, the call goes on.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { openParticipant, expectMediaFlowing, selectedPair, waitFor, LIGHT_CAMERA } from '../lib/browser.mjs';
import { startHaproxy } from '../lib/haproxy.mjs';
import { requireSfu } from '../lib/server.mjs';
import {
  startCluster, getJson, nodeStats, ownerOf, sessionOf, waitRejoined, waitMediaEverywhere, framesKeepAdvancing, waitForLiveNodes,
} from '../lib/cluster.mjs';

const people = [];
const stops = [];

after(async () => {
  await closeAll();
  while (stops.length) await stops.pop()();
});

async function closeAll() {
  while (people.length) await people.pop().close();
}

/** A participant whose page (and so WebSocket) comes from `base` (a node or HAProxy). */
async function join(base, name, room) {
  const p = await openParticipant(base.url, { name, room, camera: LIGHT_CAMERA });
  p.via = base.nodeName || 'haproxy';
  people.push(p);
  return p;
}

async function cluster(tag) {
  const c = await startCluster({ tag });
  stops.push(() => c.stop());
  return c;
}

async function haproxy(order, tag) {
  const lb = await startHaproxy(order.map((n) => ({ name: n.nodeName, httpPort: n.httpPort })), { name: `haproxy-${tag}` });
  stops.push(() => lb.stop());
  return lb;
}

const ids = (list) => Object.fromEntries(list.map((p) => [p.name, p.id]));
const log = (p) => p.page.evaluate(() => window.tsunagi.signalLog());

/** A page's session events since `t0` (ms after it), for assertions and their messages. */
async function sessionEvents(p, t0) {
  const kinds = ['join', 'resume', 'welcome', 'resumed', 'rejoin', 'error', 'peer-left'];
  return (await log(p)).filter((m) => m.at >= t0 && kinds.includes(m.type)).map((m) => `+${m.at - t0} ${m.dir} ${m.type}${m.reason ? ` ${m.reason}` : ''}${m.code ? ` ${m.code}` : ''}`);
}

/**
 * A room of three on n1: Ann's page from n2 and Ben's from n3 (those nodes relay their
 * signaling to n1), Cat's through HAProxy, which sends it to n1 while n1 is up. Returns
 * {owner, survivors, lb, list}.
 */
async function roomAcrossNodes(c, tag, room) {
  const [n1, n2, n3] = c.nodes;
  // Every node empty: the room goes to the smallest id, n1, whichever node is asked.
  const ann = await join(n2, 'Ann', room);
  const owner = await ownerOf(c.nodes);
  assert.equal(owner, n1, `the first room of an empty cluster runs on n1 (ran on ${owner.nodeName})`);
  const ben = await join(n3, 'Ben', room);
  const lb = await haproxy([n1, n2, n3], tag);
  const cat = await join(lb, 'Cat', room);
  const list = [ann, ben, cat];
  await expectMediaFlowing(list);
  // Who holds which WebSocket: Cat's on the owner (through HAProxy), Ann's and Ben's
  // relayed to it by n2 and n3.
  const [s1, s2, s3] = await Promise.all(c.nodes.map(nodeStats));
  assert.equal(s1.cluster.remoteSessions, 2, `n1 runs two relayed sessions: ${JSON.stringify(s1.cluster)}`);
  assert.equal(s2.cluster.relayedConnections, 1, 'n2 relays Ann');
  assert.equal(s3.cluster.relayedConnections, 1, 'n3 relays Ben');
  assert.equal(s1.peers, 3, 'the owner has the three peers');
  return { owner, survivors: [n2, n3], lb, list };
}

test('two participants on two nodes (mesh), then six on three nodes through the owner\'s SFU', { timeout: 300000 }, async () => {
  requireSfu();
  const c = await cluster('grow');
  const [n1, n2, n3] = c.nodes;
  const room = 'cluster-grow';
  const aoi = await join(n1, 'Aoi', room);
  const ren = await join(n2, 'Ren', room);
  const owner = await ownerOf(c.nodes);
  for (const p of [aoi, ren]) assert.equal(await p.page.evaluate(() => window.tsunagi.mode), 'mesh');
  const flows = await expectMediaFlowing([aoi, ren]);
  console.log(`2 participants on n1 and n2, room on ${owner.nodeName}:`, JSON.stringify(flows));

  const six = [aoi, ren];
  for (const [name, node] of [['Mio', n3], ['Sou', n1], ['Yui', n2], ['Kai', n3]]) six.push(await join(node, name, room));
  await waitFor(async () => (await Promise.all(six.map((p) => p.page.evaluate(() => window.tsunagi.mode)))).every((m) => m === 'sfu'), {
    timeout: 30000,
    what: 'every participant in SFU mode (auto policy, more than 4 people)',
  });
  const sixFlows = await expectMediaFlowing(six, { timeout: 90000, windowMs: 2500 });
  console.log('6 participants on 3 nodes via the SFU:', JSON.stringify(sixFlows.map((f) => `${f.dir}:${f.frames}`)));
  for (const p of six) {
    await waitFor(async () => {
      const peers = await p.page.evaluate(() => window.tsunagi.peers());
      return peers.length === 5 && peers.every((x) => !x.mesh && x.source === 'sfu') && (await p.page.evaluate(() => window.tsunagi.transition)) === null;
    }, { timeout: 30000, what: `${p.name} (on ${p.via}): five tiles fed by the SFU, no mesh connection left` });
  }
  // The SFU is the owner's: its room has six live SFU peers, the other nodes have none,
  // and every page's SFU connection goes to the owner's SFU address.
  const sfuRoom = await getJson(`${owner.url}/api/rooms/${room}/sfu`);
  assert.equal(sfuRoom.status, 200);
  assert.equal(sfuRoom.body.peers.filter((x) => x.connection === 'live').length, 6, JSON.stringify(sfuRoom.body.peers.map((x) => [x.peer, x.connection])));
  for (const n of c.nodes.filter((n) => n !== owner)) assert.equal((await fetch(`${n.url}/api/rooms/${room}/sfu`)).status, 404, `no SFU room on ${n.nodeName}`);
  const addrs = await owner.sfuAddrs();
  for (const p of six) {
    const pair = await selectedPair(p.page, 'sfu');
    assert.ok(pair && [...addrs.udp, ...addrs.tcp].includes(pair.remoteAddress), `${p.name}'s SFU connection goes to ${owner.nodeName}'s SFU ${JSON.stringify(addrs)}: ${JSON.stringify(pair)}`);
  }
  // Two WebSockets on each node; the owner runs the four others' sessions relayed.
  const stats = await Promise.all(c.nodes.map(nodeStats));
  c.nodes.forEach((n, i) => {
    const relayed = n === owner ? 0 : 2;
    assert.equal(stats[i].cluster.relayedConnections, relayed, `${n.nodeName} relays ${relayed}: ${JSON.stringify(stats[i].cluster)}`);
  });
  assert.equal(stats[c.nodes.indexOf(owner)].cluster.remoteSessions, 4);
  assert.equal(stats[c.nodes.indexOf(owner)].peers, 6);
  for (const p of six) assert.deepEqual(await p.page.evaluate(() => window.tsunagi.errors()), [], `${p.name}: error messages from the server`);
  await closeAll();
});

test('the owner killed (SIGKILL): everyone back in the room, media again within 10 s', { timeout: 180000 }, async () => {
  const c = await cluster('kill');
  const { owner, survivors, list } = await roomAcrossNodes(c, 'kill', 'cluster-kill');
  const before = ids(list);
  const killedAt = Date.now();
  const exit = await owner.kill();
  assert.equal(exit.signal, 'SIGKILL');
  // No action in any page: the relayed ones are told to join again (rejoin, node-failed)
  // or find that their session died with its node (resume-failed); Cat's WebSocket died
  // with the node, and HAProxy takes its reconnection to a node that is up.
  const rejoined = await waitRejoined(list, before, { timeout: 20000 });
  const back = await waitMediaEverywhere(list, { timeout: 20000 });
  console.log(`killed ${owner.nodeName}: everyone in the room again after ${rejoined - killedAt} ms, media on every direction after ${back - killedAt} ms`);
  assert.ok(back - killedAt < 10000, `media back ${back - killedAt} ms after the kill (at most 10 s)`);
  await expectMediaFlowing(list, { timeout: 5000, windowMs: 1500 });
  for (const p of list) {
    const after = (await log(p)).filter((m) => m.at >= killedAt && m.dir === 'in');
    const how = after.find((m) => (m.type === 'rejoin' && m.reason === 'node-failed') || (m.type === 'error' && m.code === 'resume-failed'));
    assert.ok(how, `${p.name} (on ${p.via}) was told its session ended: ${JSON.stringify(after.filter((m) => !['candidate', 'offer', 'answer'].includes(m.type)))}`);
    console.log(`${p.name} (on ${p.via}): ${how.type} ${how.reason || how.code}`);
  }
  const owners = await Promise.all(survivors.map(async (n) => (await nodeStats(n)).rooms));
  assert.deepEqual(owners.slice().sort(), [0, 1], `the room runs on one surviving node: ${JSON.stringify(owners)}`);
  await waitForLiveNodes(survivors, 2);
  await closeAll();
});

test('the owner drained (POST /api/drain): everyone back in the room, the node exits by itself', { timeout: 180000 }, async () => {
  const c = await cluster('drain');
  const { owner, survivors, list } = await roomAcrossNodes(c, 'drain', 'cluster-drain');
  const before = ids(list);
  // Taken before the request: the node may act on it before the answer is read.
  const drainedAt = Date.now();
  const res = await fetch(`${owner.url}/api/drain`, { method: 'POST' });
  assert.equal(res.status, 202);
  const exited = owner.waitExit({ timeout: 30000 }).then((r) => ({ ...r, after: Date.now() - drainedAt }));
  // It stops taking anyone new, and says so to the load balancer, until it exits.
  const health = await waitFor(async () => {
    const h = await getJson(`${owner.url}/healthz`);
    return h.status === 503 ? h.body : false;
  }, { timeout: 3000, interval: 20, what: '/healthz 503 on the draining node' });
  assert.equal(health.cluster.draining, true);
  const rejoined = await waitRejoined(list, before, { timeout: 30000 });
  const back = await waitMediaEverywhere(list, { timeout: 30000 });
  console.log(`drained ${owner.nodeName}: everyone in the room again after ${rejoined - drainedAt} ms, media after ${back - drainedAt} ms`);
  await expectMediaFlowing(list, { timeout: 5000, windowMs: 1500 });
  for (const p of list) {
    const events = await sessionEvents(p, drainedAt);
    const rejoins = events.filter((e) => / in rejoin /.test(`${e} `));
    assert.deepEqual(rejoins.map((e) => e.split(' ').pop()), ['drain'], `${p.name} (on ${p.via}) was sent to join again once, because of the drain: ${JSON.stringify(events)}`);
  }
  // Nobody left out: the room runs on one of the others, with the three of them.
  const stats = await Promise.all(survivors.map(nodeStats));
  assert.deepEqual(stats.map((s) => s.rooms).sort(), [0, 1], JSON.stringify(stats));
  assert.equal(stats.find((s) => s.rooms === 1).peers, 3);
  const { after, ...exit } = await exited;
  assert.deepEqual(exit, { code: 0, signal: null }, `${owner.nodeName} exits by itself, cleanly`);
  assert.match(readFileSync(owner.logPath, 'utf8'), /drained: no client left/, 'it exited because nobody was left, not at the drain timeout');
  console.log(`${owner.nodeName} exited ${after} ms after the drain began`);
  await closeAll();
});

test('Redis killed mid-call and started again: media never stops, the call goes on, a newcomer joins', { timeout: 180000 }, async () => {
  const c = await cluster('redis');
  const [n1, n2, n3] = c.nodes;
  const room = 'cluster-redis';
  const ann = await join(n1, 'Ann', room);
  const ben = await join(n2, 'Ben', room);
  const owner = await ownerOf(c.nodes);
  assert.equal(owner, n1, 'Ann placed the room on her own node (every node empty, smallest id)');
  const pair = [ann, ben];
  await expectMediaFlowing(pair);
  const before = ids(pair);
  const killedAt = Date.now();
  await c.redis.kill();
  // Every node says so (still 200: calls go on).
  for (const n of c.nodes) {
    await waitFor(async () => {
      const h = await getJson(`${n.url}/healthz`);
      return h.status === 200 && h.body.cluster.redis.connected === false;
    }, { timeout: 5000, what: `${n.nodeName}'s /healthz to say cluster.redis.connected false` });
  }
  // Media is browser to browser: it does not need Redis.
  const samples = await framesKeepAdvancing(pair, { seconds: 5 });
  console.log('frames decoded each second while Redis is down:', JSON.stringify(samples));
  await c.redis.start();
  const restartedAt = Date.now();
  // Ben's WebSocket was relayed to n1 through Redis: cut, resumed, same session.
  await waitFor(async () => {
    const s = await Promise.all(pair.map(sessionOf));
    return s.every((x, i) => x.signaling === 'open' && x.id === before[pair[i].name] && x.peers.length === 1);
  }, { timeout: 20000, what: 'Ann and Ben in their sessions, signaling open' });
  console.log(`Redis down ${restartedAt - killedAt} ms; signaling back ${Date.now() - restartedAt} ms after the restart`);
  for (const p of pair) {
    const entries = (await log(p)).filter((m) => m.dir === 'in' && m.at >= killedAt);
    assert.ok(!entries.some((m) => m.type === 'peer-left' || m.type === 'rejoin' || m.type === 'welcome'), `${p.name}: nobody left, no new session: ${JSON.stringify(entries)}`);
  }
  assert.ok((await log(ben)).some((m) => m.dir === 'in' && m.type === 'resumed' && m.at >= killedAt), 'Ben resumed his session');
  await expectMediaFlowing(pair, { timeout: 10000 });
  // The directory is whole again, and no node took the others for failed (they were
  // only missing from a Redis that restarted empty) or cut the relay once more after it
  // was back (one end of the subscription per node: the outage).
  await waitForLiveNodes(c.nodes, 3);
  for (const n of c.nodes) {
    assert.equal((await nodeStats(n)).cluster.nodesFailed, 0, `${n.nodeName} counted no failed node`);
    const ends = readFileSync(n.logPath, 'utf8').match(/Redis subscription ended/g) || [];
    assert.equal(ends.length, 1, `${n.nodeName}'s relay subscription ended once (when Redis went away)`);
  }
  // A newcomer through the third node joins the room.
  const cat = await join(n3, 'Cat', room);
  await expectMediaFlowing([ann, ben, cat]);
  assert.equal((await ownerOf(c.nodes)), n1, 'the room still runs on n1');
  await closeAll();
});
