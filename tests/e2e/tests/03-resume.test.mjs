// Session resume: Bob's WebSocket is cut for real (a TCP proxy resets both connections,
// no close frame, and refuses new ones for a while). His client reconnects with backoff
// and sends `resume` within the grace period: same peer id, the others never see
// peer-left, and the media, which never went through the WebSocket, keeps flowing.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { startTsunagi } from '../lib/server.mjs';
import { startProxy } from '../lib/proxy.mjs';
import { openParticipant, expectMediaFlowing, inbound, waitFor } from '../lib/browser.mjs';

const ROOM = 'resume-room';
let server;
let proxy;
const people = [];

before(async () => {
  server = await startTsunagi({ name: 'tsunagi-resume' });
  proxy = await startProxy(server.httpPort);
});

after(async () => {
  for (const p of people) await p.close();
  if (proxy) await proxy.close();
  if (server) await server.stop();
});

test('a cut WebSocket is resumed: same id, no peer-left, video keeps decoding', { timeout: 90000 }, async () => {
  const alice = await openParticipant(server.url, { name: 'Alice', room: ROOM });
  people.push(alice);
  const bob = await openParticipant(`http://127.0.0.1:${proxy.port}`, { name: 'Bob', room: ROOM });
  people.push(bob);
  const carol = await openParticipant(server.url, { name: 'Carol', room: ROOM });
  people.push(carol);
  await expectMediaFlowing([alice, bob, carol]);
  const bobId = bob.id;
  const before = await inbound(alice.page, bobId);

  // Cut, and keep refusing for 3 s so that the client has to back off and retry.
  proxy.cut({ refuse: true });
  const cutAt = Date.now();
  await waitFor(async () => (await bob.page.evaluate(() => window.tsunagi.signaling)) === 'reconnecting', { timeout: 5000, what: 'Bob to notice the cut' });
  await bob.page.getByTestId('signaling-status').and(bob.page.locator('[data-state="reconnecting"]')).waitFor({ timeout: 2000 });
  // Media is peer to peer: it does not care about the signaling socket.
  await sleep(1500);
  const during = await inbound(alice.page, bobId);
  assert.ok(during.framesDecoded > before.framesDecoded, 'Alice decodes Bob\'s video while his signaling is down');
  await sleep(Math.max(0, 3000 - (Date.now() - cutAt)));
  proxy.restore();

  await waitFor(async () => (await bob.page.evaluate(() => window.tsunagi.signaling)) === 'open', { timeout: 12000, what: 'Bob to resume' });
  const resumedAfter = Date.now() - cutAt;
  const state = await bob.page.evaluate(() => ({ id: window.tsunagi.id, reconnects: window.tsunagi.reconnects, log: window.tsunagi.signalLog() }));
  console.log(`resumed ${resumedAfter} ms after the cut, after ${state.reconnects} attempts`);
  assert.equal(state.id, bobId, 'same peer id after resume');
  assert.ok(state.reconnects >= 2, 'the refused attempts were retried');
  assert.ok(state.log.some((m) => m.dir === 'in' && m.type === 'resumed'), 'the server answered resume with resumed');
  assert.ok(!state.log.some((m) => m.dir === 'in' && m.type === 'welcome' && m.at > cutAt), 'no new welcome: the session was not rejoined');

  // The signaling path works again: a chat from Bob reaches the others.
  await bob.page.getByTestId('chat-input').fill('back again');
  await bob.page.getByTestId('chat-input').press('Enter');
  for (const p of [alice, carol]) {
    await waitFor(async () => (await p.page.evaluate(() => window.tsunagi.chatLog())).some((m) => m.text === 'back again' && m.from === bobId), { timeout: 5000, what: `${p.name} gets Bob's chat` });
  }
  // Nobody saw Bob leave, and his tile never went away.
  for (const p of [alice, carol]) {
    const log = await p.page.evaluate(() => window.tsunagi.signalLog());
    assert.ok(!log.some((m) => m.type === 'peer-left'), `${p.name} saw no peer-left`);
    assert.equal(await p.page.getByTestId(`tile-${bobId}`).count(), 1);
    assert.equal((await p.page.evaluate(() => window.tsunagi.peers())).length, 2);
  }
  await expectMediaFlowing([alice, bob, carol], { timeout: 10000 });
});

test('past the grace period the client joins again as a new participant', { timeout: 90000 }, async () => {
  const short = await startTsunagi({ name: 'tsunagi-resume-grace2', extraArgs: ['--resume-grace', '2'] });
  const shortProxy = await startProxy(short.httpPort);
  const local = [];
  try {
    const alice = await openParticipant(short.url, { name: 'Alice', room: ROOM });
    local.push(alice);
    const bob = await openParticipant(`http://127.0.0.1:${shortProxy.port}`, { name: 'Bob', room: ROOM });
    local.push(bob);
    await expectMediaFlowing([alice, bob]);
    const oldId = bob.id;
    shortProxy.cut({ refuse: true });
    // Alice sees Bob time out after the 2 s grace period.
    await waitFor(async () => (await alice.page.evaluate(() => window.tsunagi.signalLog())).some((m) => m.type === 'peer-left' && m.id === oldId && m.reason === 'timeout'), { timeout: 10000, what: 'peer-left (timeout) at Alice' });
    await alice.page.getByTestId(`tile-${oldId}`).waitFor({ state: 'detached', timeout: 2000 });
    shortProxy.restore();
    bob.id = await waitFor(
      async () => {
        const s = await bob.page.evaluate(() => ({ id: window.tsunagi.id, sig: window.tsunagi.signaling }));
        return s.sig === 'open' && s.id && s.id !== oldId ? s.id : false;
      },
      { timeout: 20000, what: 'Bob to join again with a new id' },
    );
    await bob.page.locator('[data-testid="toast"][data-code="session-lost"]').waitFor({ state: 'attached', timeout: 2000 }).catch(() => {});
    await expectMediaFlowing([alice, bob]);
    assert.equal(await alice.page.getByTestId(`tile-${bob.id}`).count(), 1);
  } finally {
    for (const p of local) await p.close();
    await shortProxy.close();
    await short.stop();
  }
});
