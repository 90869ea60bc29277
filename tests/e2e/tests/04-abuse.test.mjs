// Bad traffic while a call goes on: tsunagi runs with --token-secret; Alice and Bob join
// with valid tokens; a raw WebSocket client then tries an invalid token, an oversized
// message and a flood, and gets the right error for each; a page that joins with a bad
// token sees it in plain words. The call between Alice and Bob goes on throughout.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { startTsunagi } from '../lib/server.mjs';
import { openParticipant, expectMediaFlowing, waitFor } from '../lib/browser.mjs';
import { mintToken } from '../lib/jwt.mjs';

const SECRET = 'e2e-token-secret-0123456789';
const ROOM = 'guarded-room';
let server;
const people = [];

before(async () => {
  server = await startTsunagi({ name: 'tsunagi-abuse', extraArgs: ['--token-secret', SECRET] });
});

after(async () => {
  for (const p of people) await p.close();
  if (server) await server.stop();
});

/** A raw signaling client: collects every message; `next(pred)` waits for one. */
async function rawClient() {
  const ws = new WebSocket(`${server.url.replace('http', 'ws')}/ws`, { maxPayload: 1 << 20 });
  const inbox = [];
  const waiters = new Set();
  ws.on('message', (data) => {
    const m = JSON.parse(String(data));
    inbox.push(m);
    for (const w of waiters) w();
  });
  let closed = null;
  ws.on('close', (code) => {
    closed = code;
    for (const w of waiters) w();
  });
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  return {
    ws,
    inbox,
    get closed() {
      return closed;
    },
    send: (m) => ws.send(typeof m === 'string' ? m : JSON.stringify(m)),
    next(pred, timeout = 5000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const m = inbox.find(pred);
          if (m) {
            waiters.delete(check);
            clearTimeout(timer);
            resolve(m);
          } else if (closed !== null) {
            waiters.delete(check);
            clearTimeout(timer);
            reject(new Error(`socket closed (${closed}) before the expected message; got ${JSON.stringify(inbox.slice(-5))}`));
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`no expected message within ${timeout} ms; got ${JSON.stringify(inbox.slice(-5))}`));
        }, timeout);
        waiters.add(check);
        check();
      });
    },
    close: () => ws.close(),
  };
}

test('a call with valid tokens', { timeout: 60000 }, async () => {
  for (const name of ['Alice', 'Bob']) {
    const token = mintToken(SECRET, { room: ROOM, sub: name.toLowerCase() });
    people.push(await openParticipant(server.url, { name, room: ROOM, token }));
  }
  await expectMediaFlowing(people);
});

test('an invalid token is refused with invalid-token', { timeout: 30000 }, async () => {
  const cases = {
    'bad signature': mintToken('not-the-secret', { room: ROOM, sub: 'mallory' }),
    expired: mintToken(SECRET, { room: ROOM, sub: 'mallory', ttl: -60 }),
    'other room': mintToken(SECRET, { room: 'another-room', sub: 'mallory' }),
    garbage: 'not.a.jwt',
    missing: undefined,
  };
  for (const [what, token] of Object.entries(cases)) {
    const c = await rawClient();
    c.send({ type: 'join', room: ROOM, name: 'Mallory', ...(token ? { token } : {}) });
    const e = await c.next((m) => m.type === 'error' || m.type === 'welcome');
    assert.equal(e.type, 'error', `${what}: refused`);
    assert.equal(e.code, 'invalid-token', `${what}: ${JSON.stringify(e)}`);
    c.close();
  }
  await expectMediaFlowing(people, { timeout: 10000 });
});

test('the page shows a refused token in plain words', { timeout: 30000 }, async () => {
  const page = await people[0].browser.newContext().then((ctx) => ctx.newPage());
  const bad = mintToken('not-the-secret', { room: ROOM, sub: 'mallory' });
  await page.goto(`${server.url}/r/${ROOM}?token=${encodeURIComponent(bad)}`);
  await page.getByTestId('name-input').fill('Mallory');
  await page.getByTestId('join-button').click();
  const err = page.getByTestId('landing-error');
  await err.waitFor({ state: 'visible', timeout: 10000 });
  assert.equal(await err.getAttribute('data-code'), 'invalid-token');
  assert.match(await err.innerText(), /Access denied/);
  await page.context().close();
  await expectMediaFlowing(people, { timeout: 10000 });
});

test('an oversized message is answered with too-large', { timeout: 30000 }, async () => {
  const c = await rawClient();
  c.send({ type: 'join', room: 'other-room', name: 'Big', token: mintToken(SECRET, { room: 'other-room', sub: 'big' }) });
  const w = await c.next((m) => m.type === 'welcome' || m.type === 'error');
  assert.equal(w.type, 'welcome', JSON.stringify(w));
  const limit = (w.limits && w.limits.maxMessageBytes) || 65536;
  c.send({ type: 'chat', text: 'x'.repeat(limit + 1024) });
  const e = await c.next((m) => m.type === 'error');
  assert.equal(e.code, 'too-large', JSON.stringify(e));
  // The session survives: a ping is still answered.
  c.send({ type: 'ping', id: 'after-too-large' });
  await c.next((m) => m.type === 'pong' && m.id === 'after-too-large');
  c.close();
  await expectMediaFlowing(people, { timeout: 10000 });
});

test('a flood is answered with rate-limited', { timeout: 30000 }, async () => {
  const c = await rawClient();
  c.send({ type: 'join', room: 'flood-room', name: 'Flood', token: mintToken(SECRET, { room: 'flood-room', sub: 'flood' }) });
  const w = await c.next((m) => m.type === 'welcome' || m.type === 'error');
  assert.equal(w.type, 'welcome', JSON.stringify(w));
  const perSecond = (w.limits && w.limits.messagesPerSecond) || 50;
  const n = perSecond * 4 + 50;
  for (let i = 0; i < n; i++) c.send({ type: 'ping', id: i });
  const e = await c.next((m) => m.type === 'error' && m.code === 'rate-limited');
  const pongs = c.inbox.filter((m) => m.type === 'pong').length;
  const limited = c.inbox.filter((m) => m.code === 'rate-limited').length;
  console.log(`flood of ${n} pings: ${pongs} pongs, ${limited} rate-limited errors so far`, JSON.stringify(e));
  assert.ok(pongs < n, 'not every flooded message was served');
  c.close();
  // Alice and Bob did not notice.
  await expectMediaFlowing(people, { timeout: 10000 });
  const text = `still here ${Date.now()}`;
  await people[0].page.getByTestId('chat-input').fill(text);
  await people[0].page.getByTestId('chat-input').press('Enter');
  await waitFor(async () => (await people[1].page.evaluate(() => window.tsunagi.chatLog())).some((m) => m.text === text), { timeout: 5000, what: 'chat after the flood' });
  for (const p of people) assert.deepEqual(await p.page.evaluate(() => window.tsunagi.errors()), [], `${p.name} got no error`);
});
