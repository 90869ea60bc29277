// A cluster of tsunagi nodes for one test (docs/configuration.md, "Cluster"): a
// redis-server of its own (redis.mjs) and nodes n1, n2, ... on it, each with its own
// ports (HTTP, TURN, SFU) and data directory; and what the tests read from the nodes
// and from the pages about who is where.

import { setTimeout as sleep } from 'node:timers/promises';
import { startRedis } from './redis.mjs';
import { startTsunagi, sfuArgs } from './server.mjs';
import { inbound, waitFor } from './browser.mjs';

export async function getJson(url) {
  const r = await fetch(url);
  return { status: r.status, body: await r.json() };
}

/**
 * Starts Redis and `count` nodes (the default policy: auto, mesh up to 4), and waits
 * until every node sees all of them. `drainTimeout`: how long a draining node waits
 * for its clients (the default, 60 s, is longer than a test should wait).
 */
export async function startCluster({ tag, count = 3, drainTimeout = 30 }) {
  const redis = await startRedis();
  const nodes = [];
  const cluster = {
    redis,
    nodes,
    /** Stops every node still running (SIGTERM: an empty node drains at once), then Redis. */
    async stop() {
      for (const n of nodes) await n.stop();
      await redis.kill();
    },
  };
  try {
    for (let i = 1; i <= count; i++) {
      const name = `n${i}`;
      const server = await startTsunagi({
        name: `tsunagi-cluster-${tag}-${name}`,
        extraArgs: ['--redis', redis.url, '--node-name', name, '--drain-timeout', String(drainTimeout), ...sfuArgs({})],
      });
      server.nodeName = name;
      nodes.push(server);
    }
    await waitForLiveNodes(nodes, count);
  } catch (e) {
    await cluster.stop();
    throw e;
  }
  return cluster;
}

/** Waits until every one of `nodes` lists `n` live nodes in /api/cluster. */
export async function waitForLiveNodes(nodes, n, { timeout = 10000 } = {}) {
  await waitFor(
    async () => {
      const seen = await Promise.all(nodes.map(async (s) => (await getJson(`${s.url}/api/cluster`)).body.nodes.length));
      return seen.every((x) => x === n) || false;
    },
    { timeout, what: `every node to see ${n} live nodes` },
  );
}

/** Rooms, peers and the cluster counters of a node (/api/stats). */
export async function nodeStats(node) {
  const s = await node.stats();
  return { rooms: s.signaling.rooms, peers: s.signaling.peers, connections: s.signaling.connections, cluster: s.cluster };
}

/** The one node among `nodes` that runs a room (`/api/stats` signaling.rooms), waited for. */
export async function ownerOf(nodes, { timeout = 10000 } = {}) {
  let rooms = [];
  return waitFor(
    async () => {
      rooms = await Promise.all(nodes.map(async (n) => (await nodeStats(n)).rooms));
      const owners = nodes.filter((_, i) => rooms[i] > 0);
      return owners.length === 1 && rooms.reduce((a, b) => a + b, 0) === 1 ? owners[0] : false;
    },
    { timeout, what: 'exactly one node running the room' },
  ).catch((e) => {
    e.message += `; rooms per node: ${JSON.stringify(rooms)}`;
    throw e;
  });
}

/** What the page says about its session: {id, signaling, peers: [ids]}. */
export async function sessionOf(p) {
  return p.page.evaluate(() => ({ id: window.tsunagi.id, signaling: window.tsunagi.signaling, peers: window.tsunagi.peers().map((x) => x.id) }));
}

/**
 * Waits until every participant is in the room again with a session other than the one
 * it had (`oldIds`: name -> id), its signaling open, and sees every other participant's
 * new id; updates each `p.id`. Returns when that was first seen.
 */
export async function waitRejoined(participants, oldIds, { timeout }) {
  let last = [];
  await waitFor(
    async () => {
      last = await Promise.all(participants.map(sessionOf));
      const ids = last.map((s) => s.id);
      const fresh = participants.every((p, i) => last[i].signaling === 'open' && ids[i] && ids[i] !== oldIds[p.name]);
      const complete = last.every((s, i) => ids.every((id, j) => j === i || s.peers.includes(id)));
      return fresh && complete;
    },
    { timeout, interval: 100, what: 'every participant back in the room with a new session, seeing every other' },
  ).catch((e) => {
    e.message += `; sessions: ${JSON.stringify(participants.map((p, i) => ({ name: p.name, was: oldIds[p.name], ...last[i] })))}`;
    throw e;
  });
  participants.forEach((p, i) => {
    p.id = last[i].id;
  });
  return Date.now();
}

/**
 * Waits until video is decoded and audio received on every direction between
 * `participants` (by their current ids); returns when that was first seen. Polls fast:
 * the caller measures how long media took to come back.
 */
export async function waitMediaEverywhere(participants, { timeout }) {
  let missing = [];
  await waitFor(
    async () => {
      missing = [];
      for (const a of participants) {
        for (const b of participants) {
          if (a === b) continue;
          const s = await inbound(a.page, b.id);
          if (!s || s.framesDecoded <= 0 || s.audioBytes <= 0) missing.push({ dir: `${b.name}→${a.name}`, ...s });
        }
      }
      return missing.length === 0;
    },
    { timeout, interval: 100, what: 'video decoded and audio received on every direction' },
  ).catch((e) => {
    e.message += `; missing: ${JSON.stringify(missing)}`;
    throw e;
  });
  return Date.now();
}

/**
 * Samples the frames decoded on every direction once a second for `seconds` and
 * asserts that each sample grew on each of them: media that never stopped.
 */
export async function framesKeepAdvancing(participants, { seconds }) {
  const dirs = [];
  for (const a of participants) for (const b of participants) if (a !== b) dirs.push([a, b]);
  const read = () => Promise.all(dirs.map(([a, b]) => inbound(a.page, b.id).then((s) => (s ? s.framesDecoded : -1))));
  let prev = await read();
  const samples = [prev];
  for (let i = 0; i < seconds; i++) {
    await sleep(1000);
    const now = await read();
    samples.push(now);
    dirs.forEach(([a, b], k) => {
      if (!(now[k] > prev[k])) {
        throw new Error(`video from ${b.name} to ${a.name} stopped in second ${i + 1}: frames decoded ${JSON.stringify(samples.map((s) => s[k]))}`);
      }
    });
    prev = now;
  }
  return dirs.map(([a, b], k) => `${b.name}→${a.name}:${samples.map((s) => s[k]).join(',')}`);
}
