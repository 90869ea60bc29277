// SFU mode (docs/sfu.md): a room pinned to `--room-mode sfu` starts in SFU mode; six
// participants in a room of the default policy (auto, mesh up to 4) end up in SFU mode:
// each decodes video from the five others through its one connection to the SFU, the
// UI says SFU, `sfu-stats` arrives with a bandwidth estimate, an active speaker is
// highlighted, and a data-channel message from one reaches the five others.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startTsunagi, requireSfu, sfuArgs } from '../lib/server.mjs';
import { openParticipant, expectMediaFlowing, waitFor, LIGHT_CAMERA_FPS } from '../lib/browser.mjs';
import { artifactsDir } from '../lib/paths.mjs';

const servers = [];
const people = [];

before(() => {
  requireSfu();
});

after(async () => {
  for (const p of people) await p.close();
  for (const s of servers) await s.stop();
});

async function closeAll() {
  while (people.length) await people.pop().close();
}

const hook = (p, expr) => p.page.evaluate(expr);

test('a room pinned to SFU mode: welcome says sfu, no mesh connection, media through the SFU', { timeout: 90000 }, async () => {
  const server = await startTsunagi({ name: 'tsunagi-sfu-pinned', extraArgs: sfuArgs({ roomMode: 'sfu' }) });
  servers.push(server);
  for (const name of ['Ann', 'Ben']) people.push(await openParticipant(server.url, { name, room: 'pinned' }));
  for (const p of people) {
    assert.equal(await hook(p, () => window.tsunagi.mode), 'sfu', `${p.name} is in SFU mode from the start`);
    const welcome = (await hook(p, () => window.tsunagi.signalLog())).find((m) => m.type === 'welcome');
    assert.ok(welcome, 'a welcome');
  }
  await expectMediaFlowing(people, { timeout: 30000 });
  for (const p of people) {
    const sfu = await hook(p, () => window.tsunagi.sfu);
    assert.equal(sfu.connectionState, 'connected', `${p.name}'s SFU connection`);
    const peers = await hook(p, () => window.tsunagi.peers());
    assert.ok(peers.every((x) => !x.mesh && x.source === 'sfu'), `${p.name}: no mesh connection, tiles fed by the SFU: ${JSON.stringify(peers)}`);
    // The offer went to the pseudo-peer "sfu".
    const log = await hook(p, () => window.tsunagi.signalLog());
    assert.ok(log.some((m) => m.dir === 'out' && m.type === 'offer' && m.to === 'sfu'), 'an offer to "sfu"');
    assert.ok(log.some((m) => m.dir === 'in' && m.type === 'answer' && m.from === 'sfu'), 'an answer from "sfu"');
    assert.ok(!log.some((m) => m.dir === 'out' && m.type === 'offer' && m.to !== 'sfu'), 'no mesh offer');
    // Simulcast: the camera goes out as three encodings (rids l, m, h).
    const rids = await p.page.evaluate(async () => (await window.tsunagi.rawStats('sfu')).filter((s) => s.type === 'outbound-rtp' && s.kind === 'video').map((s) => s.rid).sort());
    console.log(`${p.name} sends video encodings:`, JSON.stringify(rids));
    assert.deepEqual(rids, ['h', 'l', 'm'], 'three simulcast encodings');
    // view: the remote tile's size went to the server.
    const view = await hook(p, () => window.tsunagi.lastView);
    assert.ok(view.tiles && view.tiles.length === 1 && view.tiles[0].width > 0 && view.tiles[0].height > 0, `a view message: ${JSON.stringify(view)}`);
  }
  await closeAll();
});

test('people come and go in an SFU room: the m-lines of those who left carry the newcomers, the SDP stays bounded', { timeout: 120000 }, async () => {
  const server = await startTsunagi({ name: 'tsunagi-sfu-churn', extraArgs: sfuArgs({ roomMode: 'sfu' }) });
  servers.push(server);
  const room = [];
  const join = async (name) => {
    const p = await openParticipant(server.url, { name, room: 'churn' });
    people.push(p);
    room.push(p);
    return p;
  };
  // Leaving with the Leave button: the server removes the peer at once (a closed tab
  // would keep its place for the resume grace period).
  const leave = async (p) => {
    await p.page.getByTestId('leave').click();
    room.splice(room.indexOf(p), 1);
    people.splice(people.indexOf(p), 1);
    await p.close();
  };
  try {
    const ann = await join('Ann');
    await join('Ben');
    await join('Cat');
    await expectMediaFlowing(room, { timeout: 30000 });
    // At most three people at once: Ann's session has her own 3 m-lines (audio, video,
    // data) and 2 per other publisher present: 7, however many come and go.
    const most = await hook(ann, () => window.tsunagi.sfu.mlines);
    assert.equal(most, 7, 'three of her own and two per other person');
    for (const name of ['Dan', 'Eve']) {
      await leave(room[room.length - 1]);
      // The departed publisher's m-lines go inactive at Ann's (free for the next one).
      await waitFor(async () => (await hook(ann, () => window.tsunagi.peers())).length === 1, { what: 'Ann: the departed tile gone' });
      await join(name);
      await expectMediaFlowing(room, { timeout: 30000 });
      const sfu = await hook(ann, () => window.tsunagi.sfu);
      console.log(`after ${name} took the place of the last one: Ann's SFU session has ${sfu.mlines} m-lines (${most} at first)`);
      assert.equal(sfu.mlines, most, `m-lines reused: ${JSON.stringify(sfu)}`);
    }
    for (const p of room) assert.deepEqual(await hook(p, () => window.tsunagi.errors()), [], `${p.name}: error messages from the server`);
  } finally {
    await closeAll();
  }
});

test('six participants (auto policy): SFU mode, everyone decodes the five others', { timeout: 240000 }, async () => {
  const server = await startTsunagi({ name: 'tsunagi-sfu-six', extraArgs: sfuArgs({}) });
  servers.push(server);
  for (const name of ['Aoi', 'Ren', 'Mio', 'Sou', 'Yui', 'Kai']) {
    people.push(await openParticipant(server.url, { name, room: 'six', launch: { cameraFps: LIGHT_CAMERA_FPS } }));
  }
  await waitFor(async () => (await Promise.all(people.map((p) => hook(p, () => window.tsunagi.mode)))).every((m) => m === 'sfu'), {
    timeout: 20000,
    what: 'every participant in SFU mode',
  });
  const flows = await expectMediaFlowing(people, { timeout: 90000, windowMs: 2500 });
  console.log('6 participants via the SFU:', JSON.stringify(flows.map((f) => `${f.dir}:${f.frames}`)));
  // Every tile is fed by the SFU once the switch is over, and the mesh connections are gone.
  for (const p of people) {
    await waitFor(async () => {
      const peers = await hook(p, () => window.tsunagi.peers());
      return peers.length === 5 && peers.every((x) => !x.mesh && x.source === 'sfu') && (await hook(p, () => window.tsunagi.transition)) === null;
    }, { timeout: 20000, what: `${p.name}: five tiles fed by the SFU, no mesh connection left` });
  }
  // The server's per-subscription state (docs/sfu.md, "Subscription state"): 30
  // directions × audio and video, every one negotiated and carrying packets, no answer
  // refused, nothing starved now.
  const res = await fetch(`${server.url}/api/rooms/six/sfu`);
  assert.equal(res.status, 200);
  const room = await res.json();
  const live = room.peers.filter((x) => x.connection === 'live');
  assert.equal(live.length, 6, `six live SFU peers: ${JSON.stringify(room.peers.map((x) => [x.peer, x.connection]))}`);
  const names = Object.fromEntries(people.map((p) => [p.id, p.name]));
  for (const peer of live) {
    assert.equal(peer.negotiation.refusedAnswers, 0, `${names[peer.peer]}: no answer refused: ${JSON.stringify(peer.negotiation)}`);
    const subs = peer.subscriptions.filter((x) => x.state !== 'stopping');
    assert.equal(subs.length, 10, `${names[peer.peer]} subscribes to 5 × (audio, video): ${JSON.stringify(subs)}`);
    for (const sub of subs) {
      const dir = `${names[sub.publisher]}→${names[peer.peer]} ${sub.kind}`;
      assert.ok(sub.negotiated && sub.packets > 0, `${dir}: negotiated and forwarding: ${JSON.stringify(sub)}`);
      assert.ok(!sub.starved, `${dir}: not starved: ${JSON.stringify(sub)}`);
    }
    console.log(`${names[peer.peer]}: negotiation ${JSON.stringify(peer.negotiation)}`);
  }
  const unknown = await fetch(`${server.url}/api/rooms/no-such-room/sfu`);
  assert.equal(unknown.status, 404);
  assert.match(await unknown.text(), /no room no-such-room/);
});

test('the UI shows SFU mode: header badge, the explanation, the panel of the SFU connection', { timeout: 60000 }, async () => {
  const [p, other] = people;
  const badge = p.page.getByTestId('room-mode');
  assert.equal(await badge.getAttribute('data-mode'), 'sfu');
  assert.match(await badge.innerText(), /SFU/);
  assert.match(await p.page.getByTestId('mode-why').innerText(), /SFU.*server forwards/);
  await p.page.getByTestId('toggle-chat').click();
  await p.page.setViewportSize({ width: 1440, height: 900 });
  await p.page.getByTestId(`tile-${other.id}`).getByTestId('panel-toggle').click();
  const panel = p.page.getByTestId('conn-panel-sfu');
  await panel.waitFor({ state: 'visible' });
  assert.equal(await panel.getByTestId('panel-mode').getAttribute('data-mode'), 'sfu');
  assert.match(await panel.getByTestId('panel-mode-title').innerText(), /SFU/);
  await waitFor(async () => /P2P|TURN/.test(await panel.getByTestId('path-title').innerText()), { what: 'the SFU connection\'s path' });
  // sfu-stats: the server's estimate and per remote peer the layer and the decoded size.
  await waitFor(async () => {
    const st = await hook(p, () => window.tsunagi.sfuStats);
    return st && typeof st.bitrate === 'number' && st.bitrate > 0 && Object.keys(st.layers).length >= 1 ? st : false;
  }, { timeout: 20000, what: 'sfu-stats with a bitrate' });
  await waitFor(async () => /\d/.test(await panel.getByTestId('stat-sfu-bitrate').locator('dd').innerText()), { what: 'the estimate in the panel' });
  const row = panel.getByTestId('sfu-layers').locator(`tr[data-peer="${other.id}"]`);
  await waitFor(async () => /\d+×\d+/.test(await row.getByTestId('decoded').innerText()), { what: 'the decoded size in the panel' });
  // The server's state of this subscription, in the same row.
  await waitFor(async () => (await row.getByTestId('sub-state').getAttribute('data-state')) === 'negotiated', { what: "the server's subscription state in the panel" });
  assert.match(await row.getByTestId('sub-state').innerText(), /negotiated.*\d+ packets/);
  const subs = await hook(p, () => window.tsunagi.subscriptions());
  assert.ok(subs.subscriptions.some((x) => x.publisher === other.id && x.kind === 'video' && x.packets > 0), JSON.stringify(subs));
  console.log('sfu-stats at', p.name, JSON.stringify(await hook(p, () => window.tsunagi.sfuStats)));
  await sleep(1200);
  await p.page.screenshot({ path: path.join(artifactsDir, 'sfu-six-panel.png') });
  await p.page.keyboard.press('Escape');
  await panel.waitFor({ state: 'detached' });
  await p.page.setViewportSize({ width: 1280, height: 720 });
});

test('the active speaker is highlighted', { timeout: 60000 }, async () => {
  // Chromium's fake microphone beeps: the SFU's audio-level detection names someone.
  // The speaker may change (up to twice a second) between reading it and looking at
  // the tile, so both are read together until they agree.
  const speaking = async (tile) => {
    try {
      return (await tile.getAttribute('data-speaking', { timeout: 1000 })) === 'true'
        && /speaking/.test((await tile.getAttribute('class', { timeout: 1000 })) || '');
    } catch {
      return false;
    }
  };
  const { p } = await waitFor(async () => {
    for (const p of people) {
      const id = await hook(p, () => window.tsunagi.speaker);
      if (!id || id === p.id) continue;
      if (await speaking(p.page.getByTestId(`tile-${id}`))) return { p, id };
    }
    return false;
  }, { timeout: 30000, what: "a speaker message naming someone else, and that person's tile highlighted" });
  const highlighted = await p.page.locator('[data-speaking="true"]').count();
  assert.ok(highlighted <= 1, `at most one tile highlighted, saw ${highlighted}`);
});

test('a data-channel message from one reaches the five others (relayed by the SFU)', { timeout: 60000 }, async () => {
  const [sender, ...others] = people;
  const text = `hello over the data channel ${Date.now()}`;
  await waitFor(async () => sender.page.evaluate((t) => window.tsunagi.sendData(t), text), { timeout: 15000, what: 'the data channel to open and send' });
  for (const o of others) {
    await waitFor(async () => (await hook(o, () => window.tsunagi.dataLog())).some((m) => m.from === sender.id && m.data === text), {
      timeout: 10000,
      what: `${o.name} receives the message from ${sender.name}`,
    });
  }
  // The raise-hand button uses the same channel and shows on the sender's tile.
  await sender.page.getByTestId('toggle-hand').click();
  for (const o of others) await o.page.getByTestId(`tile-${sender.id}`).getByTestId('badge-hand').waitFor({ state: 'visible', timeout: 10000 });
  await sender.page.getByTestId('toggle-hand').click();
  for (const o of others) await o.page.getByTestId(`tile-${sender.id}`).getByTestId('badge-hand').waitFor({ state: 'hidden', timeout: 10000 });
  for (const p of people) {
    assert.deepEqual(p.consoleErrors.filter((e) => !/favicon/.test(e)), [], `${p.name} console errors`);
    assert.deepEqual(await hook(p, () => window.tsunagi.errors()), [], `${p.name}: error messages from the server`);
  }
});
