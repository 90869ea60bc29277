// SFU mode (docs/sfu.md): a room pinned to `--room-mode sfu` starts in SFU mode; people
// who come and go reuse m-lines; an SFU offer lost on the way is repaired by the page; six
// participants in a room of the default policy (auto, mesh up to 4) end up in SFU mode:
// each decodes video from the five others through its one connection to the SFU, the
// UI says SFU, `sfu-stats` arrives with a bandwidth estimate, an active speaker is
// highlighted, and a data-channel message from one reaches the five others.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startTsunagi, requireSfu, sfuArgs } from '../lib/server.mjs';
import { openParticipant, joinRoom, expectMediaFlowing, waitFor, LIGHT_CAMERA } from '../lib/browser.mjs';
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

/**
 * Each page's SFU negotiation as it saw it (its SFU connection's timeline: offers and
 * answers with their ICE ufrag and m-line count, ignored offers, repairs, new
 * connections, states), and the errors the server sent it: printed when a test of many
 * people fails, so that the failure explains itself next to the server's log.
 */
async function printSfuTraces(list) {
  for (const p of list) {
    const [timeline, errors] = await Promise.all([
      hook(p, () => window.tsunagi.timeline('sfu')).catch(() => null),
      hook(p, () => window.tsunagi.errors()).catch(() => null),
    ]);
    const t0 = timeline && timeline.length ? timeline[0].t : 0;
    const rows = (timeline || [])
      .filter((e) => e.kind !== 'candidate' && e.kind !== 'endOfCandidates' && !(e.dir === 'state' && /Gathering/.test(e.kind)))
      .map((e) => `+${e.t - t0} ${e.dir} ${e.kind}${e.sdp ? ` ufrag=${e.sdp.ufrag} m=${e.sdp.media.length}` : ''}${e.value !== undefined ? ` ${e.value}` : ''}`);
    console.log(`${p.name} (${p.id}) SFU timeline from ${t0 ? new Date(t0).toISOString() : '-'}:\n  ${rows.join('\n  ')}\n  errors: ${JSON.stringify(errors)}`);
  }
}

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

test('a lost SFU offer: the page notices the missing video and repairs it with an offer of its own', { timeout: 120000 }, async () => {
  const server = await startTsunagi({ name: 'tsunagi-sfu-repair', extraArgs: sfuArgs({ roomMode: 'sfu' }) });
  servers.push(server);
  const room = [];
  // Between Ann's page and the server every message passes, except one SFU offer once
  // armed: the one that brings Cat's tracks to Ann is lost on the way (a dropped message,
  // a client that missed it). The SFU waits for its answer; Ann's page has no m-line for
  // Cat, so Cat's video never arrives until the page repairs it (docs/sfu.md, "Repairs":
  // its view again at 4 s, then an offer of its own at 8 s, which the polite SFU answers
  // before offering again).
  let armed = false;
  let lost = null;
  const ann = await openParticipant(server.url, { name: 'Ann', join: false });
  people.push(ann);
  room.push(ann);
  await ann.page.routeWebSocket(/\/ws$/, (page) => {
    const upstream = page.connectToServer();
    page.onMessage((m) => upstream.send(m));
    upstream.onMessage((m) => {
      if (armed && !lost && typeof m === 'string') {
        const msg = JSON.parse(m);
        if (msg.type === 'offer' && msg.from === 'sfu') {
          lost = { at: Date.now(), mlines: (msg.sdp.match(/\r\nm=/g) || []).length };
          return;
        }
      }
      page.send(m);
    });
  });
  await joinRoom(ann, server.url, { room: 'repair' });
  try {
    for (const name of ['Ben']) {
      const p = await openParticipant(server.url, { name, room: 'repair' });
      people.push(p);
      room.push(p);
    }
    await expectMediaFlowing(room, { timeout: 30000 });
    armed = true;
    const cat = await openParticipant(server.url, { name: 'Cat', room: 'repair' });
    people.push(cat);
    room.push(cat);
    await waitFor(() => lost, { what: 'the SFU offer that brings Cat to Ann' });
    console.log(`lost an SFU offer to Ann with ${lost.mlines} m-lines`);
    await expectMediaFlowing(room, { timeout: 45000 });
    console.log(`Cat's video at Ann ${Date.now() - lost.at} ms after the lost offer`);
    const sfu = await hook(ann, () => window.tsunagi.sfu);
    console.log(`Ann's repairs: ${JSON.stringify(sfu.repairs)}`);
    assert.ok(sfu.repairs.offer >= 1, `Ann's page offered to repair: ${JSON.stringify(sfu.repairs)}`);
    assert.equal(sfu.repairs.newConnection, 0, `the offer was enough: ${JSON.stringify(sfu.repairs)}`);
    const timeline = await hook(ann, () => window.tsunagi.timeline('sfu'));
    const repairs = timeline.filter((t) => t.kind === 'repair').map((t) => t.value);
    assert.ok(repairs.some((v) => v.startsWith('offer:') && v.includes(cat.id)), `the repair names Cat: ${JSON.stringify(repairs)}`);
    // The server saw it too: Ann's own offers answered, nothing refused, every
    // subscription of hers negotiated and fed.
    const mine = await hook(ann, () => window.tsunagi.subscriptions());
    console.log(`Ann's SFU negotiation: ${JSON.stringify(mine.negotiation)}`);
    assert.ok(mine.negotiation.peerOffers >= 2, `Ann's repair offer reached the SFU: ${JSON.stringify(mine.negotiation)}`);
    assert.equal(mine.negotiation.refusedAnswers, 0, JSON.stringify(mine.negotiation));
    const fromCat = mine.subscriptions.filter((s) => s.publisher === cat.id);
    assert.deepEqual(fromCat.map((s) => s.state).sort(), ['negotiated', 'negotiated'], JSON.stringify(fromCat));
    assert.ok(fromCat.every((s) => s.packets > 0), JSON.stringify(fromCat));
    for (const p of room) assert.deepEqual(await hook(p, () => window.tsunagi.errors()), [], `${p.name}: error messages from the server`);
  } finally {
    await closeAll();
  }
});

test('six participants (auto policy): SFU mode, everyone decodes the five others', { timeout: 240000 }, async () => {
  const server = await startTsunagi({ name: 'tsunagi-sfu-six', extraArgs: sfuArgs({}) });
  servers.push(server);
  for (const name of ['Aoi', 'Ren', 'Mio', 'Sou', 'Yui', 'Kai']) {
    people.push(await openParticipant(server.url, { name, room: 'six', camera: LIGHT_CAMERA }));
  }
  await waitFor(async () => (await Promise.all(people.map((p) => hook(p, () => window.tsunagi.mode)))).every((m) => m === 'sfu'), {
    timeout: 20000,
    what: 'every participant in SFU mode',
  });
  const flows = await expectMediaFlowing(people, { timeout: 90000, windowMs: 2500 }).catch(async (e) => {
    await printSfuTraces(people);
    throw e;
  });
  console.log('6 participants via the SFU:', JSON.stringify(flows.map((f) => `${f.dir}:${f.frames}`)));
  // Every tile is fed by the SFU once the switch is over, and the mesh connections are gone.
  for (const p of people) {
    await waitFor(async () => {
      const peers = await hook(p, () => window.tsunagi.peers());
      return peers.length === 5 && peers.every((x) => !x.mesh && x.source === 'sfu') && (await hook(p, () => window.tsunagi.transition)) === null;
    }, { timeout: 20000, what: `${p.name}: five tiles fed by the SFU, no mesh connection left` }).catch(async (e) => {
      await printSfuTraces(people);
      throw e;
    });
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
