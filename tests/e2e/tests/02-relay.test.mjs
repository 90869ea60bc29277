// "Relay only": both participants switch it on; the selected candidate pair becomes
// relay on both sides, media keeps flowing, and tsunagi's TURN counters grow.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startTsunagi } from '../lib/server.mjs';
import { openParticipant, expectMediaFlowing, selectedPair, waitFor } from '../lib/browser.mjs';
import { artifactsDir } from '../lib/paths.mjs';

let server;
const people = [];

before(async () => {
  server = await startTsunagi({ name: 'tsunagi-relay' });
});

after(async () => {
  for (const p of people) await p.close();
  if (server) await server.stop();
});

function relayedBytes(stats) {
  const t = stats.turn || {};
  return (t.bytesToPeers || 0) + (t.bytesFromPeers || 0);
}

test('relay only: the selected pair is relay on both sides and TURN relays the media', { timeout: 90000 }, async () => {
  const alice = await openParticipant(server.url, { name: 'Alice', room: 'relay-room' });
  people.push(alice);
  const bob = await openParticipant(server.url, { name: 'Bob', room: 'relay-room' });
  people.push(bob);
  await expectMediaFlowing([alice, bob]);
  const direct = await selectedPair(alice.page, bob.id);
  console.log('before relay-only:', JSON.stringify(direct));
  assert.notEqual(direct.local, 'relay');

  const urls = await alice.page.evaluate(() => window.tsunagi.iceServerUrls());
  assert.ok(urls.some((u) => /^turns?:/.test(u)), `welcome offers a TURN server: ${urls.join(' ')}`);
  const statsBefore = await server.stats();

  for (const p of [alice, bob]) {
    await p.page.getByTestId('relay-only').check();
    assert.equal(await p.page.evaluate(() => window.tsunagi.relayOnly), true);
  }
  const t0 = Date.now();
  for (const [a, b] of [[alice, bob], [bob, alice]]) {
    await waitFor(
      async () => {
        const s = await selectedPair(a.page, b.id);
        return s && s.state === 'succeeded' && s.local === 'relay' && s.remote === 'relay' ? s : false;
      },
      { timeout: 30000, what: `${a.name}'s selected pair to ${b.name} to be relay/relay` },
    );
  }
  console.log(`relay/relay on both sides after ${Date.now() - t0} ms:`, JSON.stringify(await selectedPair(alice.page, bob.id)));
  await expectMediaFlowing([alice, bob], { timeout: 15000 });

  // The UI says so too.
  const chip = alice.page.getByTestId(`tile-${bob.id}`).getByTestId('path-chip');
  await waitFor(async () => (await chip.getAttribute('data-path')) === 'relay', { timeout: 5000, what: 'the relay path chip' });
  assert.match(await chip.innerText(), /Relayed through TURN \((udp|tcp|tls)\)/);
  // The connection panel shows the relay pair and the new connection in the timeline.
  await alice.page.getByTestId('toggle-chat').click();
  await alice.page.setViewportSize({ width: 1440, height: 900 });
  await alice.page.getByTestId(`tile-${bob.id}`).getByTestId('panel-toggle').click();
  const panel = alice.page.getByTestId(`conn-panel-${bob.id}`);
  await waitFor(async () => (await panel.getByTestId('path-label').getAttribute('data-path')) === 'relay', { timeout: 5000, what: 'the panel to show the relay path' });
  await panel.getByTestId('timeline').locator('[data-kind="newConnection"]').first().waitFor();
  await sleep(1200);
  await alice.page.screenshot({ path: path.join(artifactsDir, 'connection-panel-relay.png') });

  // tsunagi's counters: relayed bytes grow while the call goes on.
  const s1 = await server.stats();
  await sleep(2000);
  const s2 = await server.stats();
  console.log('relayed bytes:', relayedBytes(statsBefore), '→', relayedBytes(s1), '→', relayedBytes(s2), 'allocations:', s2.turn && s2.turn.allocations);
  assert.ok(relayedBytes(s1) > relayedBytes(statsBefore), 'relayed bytes grew after relay-only');
  assert.ok(relayedBytes(s2) > relayedBytes(s1) + 20000, `relayed bytes keep growing (${relayedBytes(s1)} → ${relayedBytes(s2)})`);
  assert.ok(s2.turn.allocations >= 2, 'one allocation per browser at least');

  // Switching it off goes back to a direct path.
  for (const p of [alice, bob]) await p.page.getByTestId('relay-only').uncheck();
  await waitFor(
    async () => {
      const s = await selectedPair(alice.page, bob.id);
      return s && s.state === 'succeeded' && s.local !== 'relay' && s.remote !== 'relay';
    },
    { timeout: 30000, what: 'a direct pair again' },
  );
  await expectMediaFlowing([alice, bob], { timeout: 15000 });
});
