// WHEP (docs/sfu.md, "WHIP and WHEP"): the watch page /watch/{room} plays a room through
// POST /whep/{room}. Before anyone publishes it says so (404) and keeps retrying; then
// one browser publishes in the room and several viewers decode its video (one
// publisher, many subscribers); a viewer that leaves DELETEs its session.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startTsunagi, requireSfu, sfuArgs } from '../lib/server.mjs';
import { openParticipant, openWatcher, waitFor, inbound } from '../lib/browser.mjs';
import { artifactsDir } from '../lib/paths.mjs';

const ROOM = 'whep-room';
const VIEWERS = 3;
let server;
const people = [];
const viewers = [];

before(async () => {
  requireSfu();
  server = await startTsunagi({ name: 'tsunagi-whep', extraArgs: sfuArgs({}) });
});

after(async () => {
  for (const v of viewers) await v.close();
  for (const p of people) await p.close();
  if (server) await server.stop();
});

test('the watch page is served with a CSP and no inline script', async () => {
  const r = await fetch(`${server.url}/watch/${ROOM}`);
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /text\/html/);
  assert.match(r.headers.get('content-security-policy') || '', /script-src 'self'/);
  const html = await r.text();
  assert.match(html, /<script type="module" src="\/js\/watch\.js"><\/script>/);
  assert.ok(!/<script(?![^>]*\bsrc=)[^>]*>/.test(html), 'no inline script');
});

test('WHEP answers 404 while nobody publishes; the page says so and retries', { timeout: 60000 }, async () => {
  const v = await openWatcher(server.url, { name: 'early viewer', room: ROOM });
  viewers.push(v);
  await waitFor(async () => (await v.page.evaluate(() => window.tsunagi.status)) === 'waiting', { timeout: 15000, what: 'the waiting status' });
  assert.match(await v.page.getByTestId('watch-status').innerText(), /nobody is publishing/i);
  const a0 = await v.page.evaluate(() => window.tsunagi.attempts);
  await waitFor(async () => (await v.page.evaluate(() => window.tsunagi.attempts)) > a0, { timeout: 10000, what: 'another attempt' });
});

test('one browser publishes; several WHEP viewers decode its video', { timeout: 120000 }, async () => {
  const pub = await openParticipant(server.url, { name: 'Publisher', room: ROOM });
  people.push(pub);
  for (let i = viewers.length; i < VIEWERS; i++) viewers.push(await openWatcher(server.url, { name: `viewer ${i + 1}`, room: ROOM }));
  for (const v of viewers) {
    await waitFor(async () => {
      const s = await inbound(v.page, null);
      return s && s.framesDecoded > 0 ? s : false;
    }, { timeout: 45000, what: `${v.name} to decode video through WHEP` });
  }
  // Still decoding a moment later, and the page shows it.
  const before = await Promise.all(viewers.map((v) => inbound(v.page, null)));
  await sleep(2000);
  const after = await Promise.all(viewers.map((v) => inbound(v.page, null)));
  viewers.forEach((v, i) => {
    assert.ok(after[i].framesDecoded > before[i].framesDecoded, `${v.name} keeps decoding: ${JSON.stringify({ before: before[i], after: after[i] })}`);
  });
  for (const v of viewers) {
    await waitFor(async () => (await v.page.evaluate(() => window.tsunagi.status)) === 'playing', { timeout: 5000, what: `${v.name} playing` });
    const resource = await v.page.evaluate(() => window.tsunagi.resource);
    assert.match(resource, new RegExp(`/whep/${ROOM}/`), 'the Location of the session');
    await waitFor(async () => /\d+×\d+ · .*fps/.test(await v.page.getByTestId('watch-stats').innerText()), { timeout: 5000, what: 'the stats line' });
    // The viewer only receives.
    const sent = await v.page.evaluate(async () => (await window.tsunagi.rawStats()).filter((s) => s.type === 'outbound-rtp').length);
    assert.equal(sent, 0, 'a WHEP viewer sends no media');
  }
  const s = await viewers[0].page.evaluate(() => window.tsunagi.stats());
  console.log('viewer 1:', JSON.stringify(s));
  await viewers[0].page.screenshot({ path: path.join(artifactsDir, 'whep-watch.png') });
  for (const v of viewers) assert.deepEqual(v.consoleErrors.filter((e) => !/favicon|404/.test(e)), [], `${v.name} console errors`);
});

test('a viewer that leaves ends its session (DELETE): the resource is gone', { timeout: 30000 }, async () => {
  const v = viewers.pop();
  const resource = await v.page.evaluate(() => window.tsunagi.resource);
  await v.page.goto('about:blank');
  await sleep(500);
  await v.close();
  const r = await fetch(resource, { method: 'DELETE' });
  assert.equal(r.status, 404, 'the session was deleted when the page went away');
});
