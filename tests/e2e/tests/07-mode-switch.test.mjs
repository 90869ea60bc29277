// The live switch between mesh and SFU (docs/sfu.md, "Modes and switching"), with the
// default policy (auto, mesh up to 4 peers, back to mesh at 3): a room grows 3 → 5 and
// switches to SFU, then shrinks back to 3 and switches to mesh. Throughout, every page
// measures its own presented video frames (window.tsunagi.frameGaps(): an in-page
// monitor on both video elements of each remote tile, requestVideoFrameCallback, with a
// 100 ms page-timer fallback): for every pair the largest interval between consecutive
// frames, on either element, must stay under MAX_GAP_MS once the time the subscriber's
// own page did not run at all (its timer stalled: five Chromiums with three encoders
// each starve on two cores) is taken out; the raw gap must stay under MAX_RAW_GAP_MS.
// Measured in the page, it does not depend on how often this process can sample five
// busy browsers.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { startTsunagi, requireSfu, sfuArgs } from '../lib/server.mjs';
import { openParticipant, expectMediaFlowing, waitFor, LIGHT_CAMERA } from '../lib/browser.mjs';

const ROOM = 'switch-room';
// "At most a brief gap": ~2 s, and some slack for a loaded 2-core machine.
const MAX_GAP_MS = 2500;
// The same gap including the time the page itself was frozen by the machine's load.
const MAX_RAW_GAP_MS = 5000;

let server;
const people = [];
let monitor;

before(async () => {
  requireSfu();
  server = await startTsunagi({ name: 'tsunagi-mode-switch', extraArgs: sfuArgs({ meshMaxPeers: 4 }) });
});

after(async () => {
  for (const p of people) await p.close();
  if (server) await server.stop();
});

/**
 * The pages' own frame-gap monitors (see web/js/test/frame-gaps.js). `watch(p)` starts
 * the monitor of a participant that just joined (its page then watches every remote
 * tile, including later ones); `reset()` starts a new measurement on every page;
 * `check()` reads each page's record and checks every pair whose two participants are
 * both still here. A pair's gaps count from its first presented frame on.
 */
function startMonitor() {
  const watching = new Set();
  const gapsOf = (p) => p.page.evaluate(() => window.tsunagi.frameGaps());
  return {
    async watch(p) {
      await p.page.evaluate(() => window.tsunagi.frameGaps({ reset: true }));
      watching.add(p);
    },
    async reset() {
      for (const p of watching) if (!p.gone) await p.page.evaluate(() => window.tsunagi.frameGaps({ reset: true }));
    },
    async check(what) {
      const here = [...watching].filter((p) => !p.gone);
      const rows = [];
      const stalls = {};
      for (const a of here) {
        const g = await gapsOf(a);
        stalls[a.name] = g.pageStall;
        for (const b of here) {
          if (b === a) continue;
          rows.push({ dir: `${b.name}→${a.name}`, r: g.peers[b.id], rvfc: g.rvfc });
        }
      }
      console.log(`${what}: largest gap per direction (ms, in-page):`, JSON.stringify(Object.fromEntries(rows.map(({ dir, r }) => [dir, r ? r.maxGap : null]))));
      console.log(`${what}: gaps over 1 s (start, element that ended it, ms of it the subscriber's page itself did not run):`, JSON.stringify(Object.fromEntries(rows.filter(({ r }) => r && r.maxGap > 1000).map(({ dir, r }) => [dir, `${r.gapFrom && r.gapFrom.slice(11, 23)} ${r.gapPath} stalled ${r.gapPageStalled}`]))));
      console.log(`${what}: each page's own longest timer stall (ms; of it in long tasks; the longest task since the reset):`, JSON.stringify(Object.fromEntries(Object.entries(stalls).map(([n, s]) => [n, `${s.max} at ${s.from && s.from.slice(11, 23)}, busy ${s.busy}, longest task ${s.longestTask}${s.scripts && s.scripts.length ? `; scripts in it: ${s.scripts.join(', ')}` : ''}`]))));
      console.log(`${what}: frames seen per direction (mesh rvfc/poll, sfu rvfc/poll):`, JSON.stringify(Object.fromEntries(rows.map(({ dir, r }) => [dir, r ? `${r.paths.mesh.rvfc}/${r.paths.mesh.poll} ${r.paths.sfu.rvfc}/${r.paths.sfu.poll}` : null]))));
      for (const { dir, r } of rows) {
        assert.ok(r && r.frames > 0, `${dir}: presented frames: ${JSON.stringify(r)}`);
        assert.ok(r.sinceLast < MAX_GAP_MS + 1000, `${dir}: still presenting frames (last one ${r.sinceLast} ms ago)`);
        assert.ok(r.maxGap - (r.gapPageStalled || 0) <= MAX_GAP_MS && r.maxGap <= MAX_RAW_GAP_MS, `${dir}: a gap of ${r.maxGap} ms between presented frames (from ${r.gapFrom}, ended on the ${r.gapPath} element; the page's own timer did not run for ${r.gapPageStalled} ms of it)`);
      }
      return rows;
    },
  };
}

const modes = () => Promise.all(people.filter((p) => !p.gone).map((p) => p.page.evaluate(() => window.tsunagi.mode)));

test('three participants: a mesh', { timeout: 60000 }, async () => {
  for (const name of ['Ada', 'Bo', 'Cy']) people.push(await openParticipant(server.url, { name, room: ROOM, camera: LIGHT_CAMERA }));
  assert.deepEqual(await modes(), ['mesh', 'mesh', 'mesh']);
  await expectMediaFlowing(people);
  for (const p of people) {
    const peers = await p.page.evaluate(() => window.tsunagi.peers());
    assert.ok(peers.every((x) => x.mesh && x.source === 'mesh'), `${p.name}: mesh connections`);
    assert.equal(await p.page.getByTestId('room-mode').getAttribute('data-mode'), 'mesh');
  }
  monitor = startMonitor();
  for (const p of people) await monitor.watch(p);
  await sleep(2000);
});

test('the room grows to five: it switches to SFU without the video stopping', { timeout: 150000 }, async () => {
  people.push(await openParticipant(server.url, { name: 'Di', room: ROOM, camera: LIGHT_CAMERA }));
  await monitor.watch(people[3]);
  await expectMediaFlowing(people, { timeout: 30000 });
  assert.deepEqual(await modes(), ['mesh', 'mesh', 'mesh', 'mesh'], 'four peers: still a mesh');
  const t0 = Date.now();
  console.log(`Eve joins at ${new Date(t0).toISOString().slice(11, 23)}`);
  people.push(await openParticipant(server.url, { name: 'Eve', room: ROOM, camera: LIGHT_CAMERA }));
  await monitor.watch(people[4]);
  await waitFor(async () => (await modes()).every((m) => m === 'sfu'), { timeout: 15000, what: 'every participant in SFU mode' });
  for (const p of people.slice(0, 4)) {
    const log = await p.page.evaluate(() => window.tsunagi.signalLog());
    assert.ok(log.some((m) => m.dir === 'in' && m.type === 'mode'), `${p.name} got a mode message`);
  }
  for (const p of people) {
    await waitFor(async () => (await p.page.evaluate(() => window.tsunagi.sfu))?.connectionState === 'connected', {
      timeout: 30000,
      what: `${p.name}'s SFU connection to connect`,
    });
  }
  // The switch ends: every tile fed by the SFU, the mesh connections closed.
  for (const p of people) {
    await waitFor(async () => {
      const peers = await p.page.evaluate(() => window.tsunagi.peers());
      return peers.length === 4 && peers.every((x) => x.source === 'sfu' && !x.mesh) && (await p.page.evaluate(() => window.tsunagi.transition)) === null;
    }, { timeout: 30000, what: `${p.name}: every tile via the SFU and no mesh connection left` });
  }
  console.log(`mesh → SFU done everywhere after ${Date.now() - t0} ms`);
  await expectMediaFlowing(people, { timeout: 30000, windowMs: 2000 });
  await sleep(2000);
  await monitor.check('mesh → SFU');
});

test('the room shrinks to three: back to a mesh, the video goes on', { timeout: 150000 }, async () => {
  await monitor.reset();
  for (const p of people.slice(3)) {
    p.gone = true;
    await p.close();
    await sleep(1000);
  }
  const stay = people.filter((p) => !p.gone);
  const t0 = Date.now();
  await waitFor(async () => (await modes()).every((m) => m === 'mesh'), { timeout: 30000, what: 'every participant back in mesh mode' });
  for (const p of stay) {
    await waitFor(async () => {
      const peers = await p.page.evaluate(() => window.tsunagi.peers());
      return peers.length === 2 && peers.every((x) => x.mesh && x.source === 'mesh' && x.connectionState === 'connected') && (await p.page.evaluate(() => window.tsunagi.sfu)) === null;
    }, { timeout: 30000, what: `${p.name}: mesh connections carry the video and the SFU connection is closed` });
    // For each pair the lower id offered.
    const peers = await p.page.evaluate(() => window.tsunagi.peers());
    for (const x of peers) assert.equal(x.initiator, p.id < x.id, `${p.name} → ${x.name}: the lower id offers`);
  }
  console.log(`SFU → mesh done everywhere after ${Date.now() - t0} ms`);
  await expectMediaFlowing(stay, { timeout: 20000, windowMs: 2000 });
  await sleep(2000);
  await monitor.check('SFU → mesh');
  for (const p of stay) assert.deepEqual(p.consoleErrors.filter((e) => !/favicon/.test(e)), [], `${p.name} console errors`);
  // The protocol through both switches (docs/sfu.md, "Rules for a client author"): not a
  // single `error` message from the server, handled quietly or not.
  for (const p of people) {
    if (p.gone) continue;
    assert.deepEqual(await p.page.evaluate(() => window.tsunagi.errors()), [], `${p.name}: error messages from the server`);
  }
});
