// A mesh call: two, then three participants; media on every direction; chat; the
// screenshots of a 3-person call and of an open connection panel; a closed tab.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { mkdirSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { startTsunagi } from '../lib/server.mjs';
import { openParticipant, expectMediaFlowing, waitFor } from '../lib/browser.mjs';
import { artifactsDir } from '../lib/paths.mjs';

const ROOM = 'mesh-room';
let server;
const people = {};

before(async () => {
  server = await startTsunagi({ name: 'tsunagi-mesh' });
});

after(async () => {
  for (const p of Object.values(people)) await p.close();
  if (server) await server.stop();
});

function tileCount(page) {
  return page.locator('[data-testid^="tile-p"], [data-testid="tile-self"]').count();
}

test('two participants join and exchange audio and video', { timeout: 60000 }, async () => {
  people.alice = await openParticipant(server.url, { name: 'Alice', room: ROOM });
  people.bob = await openParticipant(server.url, { name: 'Bob', room: ROOM });
  const { alice, bob } = people;
  assert.notEqual(alice.id, bob.id);
  // Bob is the newcomer: he sent the offer; the polite side is the lower id.
  const bobSeesAlice = await bob.page.evaluate(() => window.tsunagi.peers());
  assert.equal(bobSeesAlice.length, 1);
  assert.equal(bobSeesAlice[0].id, alice.id);
  assert.equal(bobSeesAlice[0].initiator, true);
  assert.equal(bobSeesAlice[0].polite, bob.id < alice.id);
  const flows = await expectMediaFlowing([alice, bob]);
  console.log('2 participants:', JSON.stringify(flows));
  await waitFor(async () => (await tileCount(alice.page)) === 2, { what: 'two tiles at Alice' });
});

test('a third participant joins: every one decodes every other', { timeout: 60000 }, async () => {
  people.carol = await openParticipant(server.url, { name: 'Carol', room: ROOM });
  const { alice, bob, carol } = people;
  const flows = await expectMediaFlowing([alice, bob, carol]);
  console.log('3 participants:', JSON.stringify(flows));
  for (const p of [alice, bob, carol]) {
    await waitFor(async () => (await tileCount(p.page)) === 3, { what: `three tiles at ${p.name}` });
    // Names come from the server's welcome / peer-joined.
    const names = (await p.page.evaluate(() => window.tsunagi.peers())).map((x) => x.name).sort();
    assert.deepEqual(names, ['Alice', 'Bob', 'Carol'].filter((n) => n !== p.name));
  }
  // The timeline shows the negotiation: offer, answer, candidates both ways.
  const tl = await carol.page.evaluate((id) => window.tsunagi.timeline(id), alice.id);
  const kinds = new Set(tl.map((e) => `${e.dir}:${e.kind}`));
  for (const k of ['out:offer', 'in:answer', 'out:candidate', 'in:candidate', 'out:endOfCandidates']) {
    assert.ok(kinds.has(k), `Carol's timeline with Alice has ${k}: ${[...kinds].join(', ')}`);
  }
});

test('chat messages reach every other participant', { timeout: 30000 }, async () => {
  const all = Object.values(people);
  for (const sender of all) {
    const text = `Hello from ${sender.name}!`;
    await sender.page.getByTestId('chat-input').fill(text);
    await sender.page.getByTestId('chat-input').press('Enter');
    for (const other of all.filter((p) => p !== sender)) {
      await waitFor(
        async () => (await other.page.evaluate(() => window.tsunagi.chatLog())).some((m) => m.text === text && m.from === sender.id && m.name === sender.name),
        { timeout: 5000, what: `${other.name} receives "${text}"` },
      );
      await other.page.getByTestId('chat-list').getByText(text).waitFor({ timeout: 2000 });
    }
  }
});

test('mute and camera toggles show as badges on the others\' tiles', { timeout: 30000 }, async () => {
  const { alice, bob } = people;
  await bob.page.getByTestId('toggle-mic').click();
  const tile = alice.page.getByTestId(`tile-${bob.id}`);
  await tile.getByTestId('badge-mic-off').waitFor({ state: 'visible', timeout: 5000 });
  assert.equal(await bob.page.getByTestId('toggle-mic').getAttribute('aria-pressed'), 'true');
  await bob.page.getByTestId('toggle-mic').click();
  await tile.getByTestId('badge-mic-off').waitFor({ state: 'hidden', timeout: 5000 });
  await bob.page.getByTestId('toggle-camera').click();
  await tile.getByTestId('badge-cam-off').waitFor({ state: 'visible', timeout: 5000 });
  await bob.page.getByTestId('toggle-camera').click();
  await tile.getByTestId('badge-cam-off').waitFor({ state: 'hidden', timeout: 5000 });
});

test('the device picker switches the microphone live (replaceTrack, no renegotiation)', { timeout: 30000 }, async () => {
  const { alice, bob } = people;
  const before = await alice.page.evaluate(() => window.tsunagi.localTracks());
  const offersBefore = (await alice.page.evaluate((id) => window.tsunagi.timeline(id), bob.id)).filter((e) => e.kind === 'offer').length;
  await alice.page.getByTestId('open-devices').click();
  const dialog = alice.page.getByTestId('devices-dialog');
  await dialog.waitFor({ state: 'visible' });
  const options = await dialog.getByTestId('mic-select').locator('option').allInnerTexts();
  assert.ok(options.length >= 2, `fake devices: ${options.join(', ')}`);
  const other = options.find((o) => o !== before.audio.label);
  await dialog.getByTestId('mic-select').selectOption({ label: other });
  await waitFor(async () => (await alice.page.evaluate(() => window.tsunagi.localTracks())).audio.label === other, { timeout: 5000, what: `the microphone to become ${other}` });
  await dialog.getByTestId('devices-close').click();
  await dialog.waitFor({ state: 'hidden' });
  const after = await alice.page.evaluate(() => window.tsunagi.localTracks());
  // Every connection now sends the new track.
  for (const peer of [bob]) {
    const sources = await alice.page.evaluate(async (id) => (await window.tsunagi.rawStats(id)).filter((s) => s.type === 'media-source' && s.kind === 'audio').map((s) => s.trackIdentifier), peer.id);
    await waitFor(async () => {
      const ids = await alice.page.evaluate(async (id) => (await window.tsunagi.rawStats(id)).filter((s) => s.type === 'media-source' && s.kind === 'audio').map((s) => s.trackIdentifier), peer.id);
      return ids.includes(after.audio.id);
    }, { timeout: 5000, what: `the audio sender towards ${peer.name} to carry the new track (was ${sources})` });
  }
  const offersAfter = (await alice.page.evaluate((id) => window.tsunagi.timeline(id), bob.id)).filter((e) => e.kind === 'offer').length;
  assert.equal(offersAfter, offersBefore, 'no renegotiation');
  await expectMediaFlowing(Object.values(people), { timeout: 10000 });
});

test('screen sharing replaces the video track and shows as a badge', { timeout: 30000 }, async () => {
  const { alice, bob, carol } = people;
  await bob.page.getByTestId('toggle-screen').click();
  await waitFor(async () => (await bob.page.evaluate(() => window.tsunagi.localTracks())).screen !== null, { timeout: 5000, what: 'a screen track' });
  assert.equal(await bob.page.getByTestId('toggle-screen').getAttribute('aria-pressed'), 'true');
  for (const p of [alice, carol]) {
    await p.page.getByTestId(`tile-${bob.id}`).getByTestId('badge-screen').waitFor({ state: 'visible', timeout: 5000 });
  }
  const screenId = (await bob.page.evaluate(() => window.tsunagi.localTracks())).screen.id;
  const sent = await bob.page.evaluate(async (id) => (await window.tsunagi.rawStats(id)).filter((s) => s.type === 'media-source' && s.kind === 'video').map((s) => s.trackIdentifier), alice.id);
  assert.ok(sent.includes(screenId), `Bob sends the screen track to Alice: ${sent}`);
  await expectMediaFlowing([alice, bob, carol], { timeout: 10000 });
  await bob.page.getByTestId('toggle-screen').click();
  for (const p of [alice, carol]) {
    await p.page.getByTestId(`tile-${bob.id}`).getByTestId('badge-screen').waitFor({ state: 'hidden', timeout: 5000 });
  }
  assert.equal((await bob.page.evaluate(() => window.tsunagi.localTracks())).screen, null);
});

test('screenshots: a 3-person call and an open connection panel', { timeout: 40000 }, async () => {
  const { alice, bob } = people;
  mkdirSync(artifactsDir, { recursive: true });
  await alice.page.getByTestId('chat-input').fill('Does everyone see the path chip on the tiles?');
  await alice.page.getByTestId('chat-input').press('Enter');
  await sleep(1500);
  const callShot = path.join(artifactsDir, 'call-3-people.png');
  await alice.page.screenshot({ path: callShot });
  const darkShot = path.join(artifactsDir, 'call-3-people-dark.png');
  await alice.page.emulateMedia({ colorScheme: 'dark' });
  await alice.page.screenshot({ path: darkShot });
  await alice.page.emulateMedia({ colorScheme: 'light' });

  // The panel gets the room it needs: chat closed, a taller window.
  await alice.page.getByTestId('toggle-chat').click();
  await alice.page.getByTestId('chat-panel').waitFor({ state: 'hidden' });
  await alice.page.setViewportSize({ width: 1440, height: 900 });

  const toggle = alice.page.getByTestId(`tile-${bob.id}`).getByTestId('panel-toggle');
  await toggle.click();
  const panel = alice.page.getByTestId(`conn-panel-${bob.id}`);
  await panel.waitFor({ state: 'visible' });
  assert.equal(await toggle.getAttribute('aria-expanded'), 'true');
  // Live stats fill in within a couple of seconds.
  await waitFor(async () => /P2P|TURN/.test(await panel.getByTestId('path-title').innerText()), { what: 'a path label' });
  await waitFor(async () => Number(await panel.getByTestId('stat-frames').locator('dd').innerText()) > 0, { what: 'frames decoded in the panel' });
  await panel.getByTestId('timeline').locator('[data-kind="offer"]').first().waitFor();
  await panel.getByTestId('timeline').locator('[data-kind="selected"]').first().waitFor({ timeout: 5000 });
  await sleep(1200);
  const panelShot = path.join(artifactsDir, 'connection-panel.png');
  await alice.page.screenshot({ path: panelShot });
  // Keyboard: Escape closes the panel and gives focus back to its toggle.
  await alice.page.keyboard.press('Escape');
  await panel.waitFor({ state: 'detached' });
  assert.equal(await alice.page.evaluate(() => document.activeElement.dataset.testid), 'panel-toggle');
  await alice.page.setViewportSize({ width: 1280, height: 720 });
  console.log('screenshots:', callShot, darkShot, panelShot);
});

test('a participant closes its tab: the others drop its tile within 5 s', { timeout: 30000 }, async () => {
  const { alice, bob, carol } = people;
  const carolId = carol.id;
  const t0 = Date.now();
  await carol.page.close();
  await Promise.all(
    [alice, bob].map((p) => p.page.getByTestId(`tile-${carolId}`).waitFor({ state: 'detached', timeout: 5000 })),
  );
  const took = Date.now() - t0;
  console.log(`tile removed after ${took} ms`);
  assert.ok(took < 5000);
  for (const p of [alice, bob]) {
    const ids = (await p.page.evaluate(() => window.tsunagi.peers())).map((x) => x.id);
    assert.ok(!ids.includes(carolId));
  }
  // The two that stay still have their call.
  await expectMediaFlowing([alice, bob], { timeout: 10000 });
  for (const p of [alice, bob]) assert.deepEqual(p.consoleErrors.filter((e) => !/favicon/.test(e)), [], `${p.name} console errors`);
});

test('the client pings the server every 15 s and gets pongs', { timeout: 30000 }, async () => {
  const { alice } = people;
  const log = await waitFor(
    async () => {
      const l = await alice.page.evaluate(() => window.tsunagi.signalLog());
      return l.some((m) => m.dir === 'in' && m.type === 'pong') ? l : false;
    },
    { timeout: 20000, interval: 500, what: 'a ping answered with a pong' },
  );
  const ping = log.find((m) => m.dir === 'out' && m.type === 'ping');
  const pong = log.find((m) => m.dir === 'in' && m.type === 'pong');
  const join = log.find((m) => m.dir === 'out' && m.type === 'join');
  assert.equal(pong.id, ping.id);
  const after = ping.at - join.at;
  assert.ok(after >= 14000 && after < 17000, `first ping ${after} ms after join`);
  assert.match(await alice.page.getByTestId('signaling-rtt').innerText(), /\d+ ms/);
});
