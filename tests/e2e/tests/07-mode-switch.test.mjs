// The live switch between mesh and SFU (docs/sfu.md, "Modes and switching"), with the
// default policy (auto, mesh up to 4 peers, back to mesh at 3): a room grows 3 → 5 and
// switches to SFU, then shrinks back to 3 and switches to mesh. Throughout, a monitor
// reads every participant's inbound video (both paths) every ~300 ms: for every pair
// the decoded frame count must keep growing, with no gap longer than MAX_GAP_MS.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { startTsunagi, requireSfu, sfuArgs } from '../lib/server.mjs';
import { openParticipant, expectMediaFlowing, waitFor, videoNow } from '../lib/browser.mjs';

const ROOM = 'switch-room';
// "At most a brief gap": ~2 s, plus what one round of sampling five busy browsers costs.
const MAX_GAP_MS = 2500;

let server;
const people = [];
let monitor;

before(async () => {
  requireSfu();
  server = await startTsunagi({ name: 'tsunagi-mode-switch', extraArgs: sfuArgs({ meshMaxPeers: 4 }) });
});

after(async () => {
  if (monitor) await monitor.stop();
  for (const p of people) await p.close();
  if (server) await server.stop();
});

/**
 * Samples every participant's inbound video per remote peer and path. A pair makes
 * progress when the frame count of either path changed (a new connection starts at 0
 * again, which counts as progress once it decodes). Gaps are measured from the first
 * decoded frame of the pair on.
 */
function startMonitor(getPeople) {
  const rec = new Map();
  let running = true;
  const loop = (async () => {
    while (running) {
      const ps = getPeople().filter((p) => p.id && !p.gone);
      await Promise.all(
        ps.map(async (a) => {
          const v = await videoNow(a.page).catch(() => null);
          if (!v) return;
          const now = Date.now();
          for (const b of ps) {
            if (b === a || !v[b.id]) continue;
            const key = `${b.name}→${a.name}`;
            let r = rec.get(key);
            if (!r) rec.set(key, (r = { a, b, last: {}, lastProgress: 0, maxGap: 0, gapAt: null, samples: 0 }));
            r.samples++;
            let progressed = false;
            for (const path of ['mesh', 'sfu']) {
              const cur = v[b.id][path] ? v[b.id][path].framesDecoded : null;
              const prev = r.last[path];
              if (cur !== null && cur > 0 && cur !== prev) progressed = true;
              r.last[path] = cur;
            }
            if (progressed) {
              if (r.lastProgress && now - r.lastProgress > r.maxGap) {
                r.maxGap = now - r.lastProgress;
                r.gapAt = new Date(r.lastProgress).toISOString();
              }
              r.lastProgress = now;
            }
          }
        }),
      );
      await sleep(300);
    }
  })();
  return {
    rec,
    /** Forgets the gaps measured so far (the pairs keep their last values). */
    reset() {
      for (const r of rec.values()) {
        r.maxGap = 0;
        r.gapAt = null;
      }
    },
    /** Checks every pair whose two participants are both still here. */
    check(what) {
      const rows = [...rec.entries()].filter(([, r]) => !r.a.gone && !r.b.gone);
      console.log(`${what}: largest gap per direction (ms):`, JSON.stringify(Object.fromEntries(rows.map(([k, r]) => [k, r.maxGap]))));
      for (const [k, r] of rows) {
        assert.ok(r.lastProgress > 0, `${k}: decoded something`);
        assert.ok(Date.now() - r.lastProgress < MAX_GAP_MS + 1000, `${k}: still decoding (last progress ${Date.now() - r.lastProgress} ms ago)`);
        assert.ok(r.maxGap <= MAX_GAP_MS, `${k}: a gap of ${r.maxGap} ms in the decoded video (from ${r.gapAt})`);
      }
    },
    async stop() {
      running = false;
      await loop;
    },
  };
}

const modes = () => Promise.all(people.filter((p) => !p.gone).map((p) => p.page.evaluate(() => window.tsunagi.mode)));

test('three participants: a mesh', { timeout: 60000 }, async () => {
  for (const name of ['Ada', 'Bo', 'Cy']) people.push(await openParticipant(server.url, { name, room: ROOM }));
  assert.deepEqual(await modes(), ['mesh', 'mesh', 'mesh']);
  await expectMediaFlowing(people);
  for (const p of people) {
    const peers = await p.page.evaluate(() => window.tsunagi.peers());
    assert.ok(peers.every((x) => x.mesh && x.source === 'mesh'), `${p.name}: mesh connections`);
    assert.equal(await p.page.getByTestId('room-mode').getAttribute('data-mode'), 'mesh');
  }
  monitor = startMonitor(() => people);
  await sleep(2000);
});

test('the room grows to five: it switches to SFU without the video stopping', { timeout: 150000 }, async () => {
  people.push(await openParticipant(server.url, { name: 'Di', room: ROOM }));
  await expectMediaFlowing(people, { timeout: 30000 });
  assert.deepEqual(await modes(), ['mesh', 'mesh', 'mesh', 'mesh'], 'four peers: still a mesh');
  const t0 = Date.now();
  people.push(await openParticipant(server.url, { name: 'Eve', room: ROOM }));
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
  monitor.check('mesh → SFU');
});

test('the room shrinks to three: back to a mesh, the video goes on', { timeout: 150000 }, async () => {
  monitor.reset();
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
  monitor.check('SFU → mesh');
  for (const p of stay) assert.deepEqual(p.consoleErrors.filter((e) => !/favicon/.test(e)), [], `${p.name} console errors`);
});
