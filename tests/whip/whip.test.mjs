// WHIP and WHEP without the web client's publisher (docs/sfu.md, "WHIP and WHEP"):
//
// * the HTTP surface: 415 on a wrong content type, 404 on unknown resources and on WHEP
//   to an empty room, OPTIONS with the allowed methods;
// * a non-browser publisher (aiortc, tests/whip/publish.py) POSTs to /whip/{room}; a
//   Chromium on /watch/{room} plays it through WHEP: video decodes at a real size and
//   audio arrives and is decoded;
// * the publisher's DELETE ends the stream: sfu.whipSessions drops to 0, the viewer
//   stops decoding and leaves the playing state, the resource is gone (404).
//
// Run by tests/whip/run, inside a network namespace with only loopback.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createWriteStream, mkdirSync } from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { startTsunagi, requireSfu, sfuArgs } from '../e2e/lib/server.mjs';
import { openWatcher, waitFor } from '../e2e/lib/browser.mjs';
import { artifactsDir } from '../e2e/lib/paths.mjs';

const here = import.meta.dirname;
const PYTHON = process.env.WHIP_PYTHON || path.resolve(here, '../../target/whip-venv/bin/python');
const PUBLISH = path.join(here, 'publish.py');
const ROOM = 'whip-aiortc';
// A syntactically plausible offer: the server checks the content type and "v=" first.
const OFFER = 'v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n';

let server;
let publisher;
let viewer;

before(async () => {
  requireSfu();
  server = await startTsunagi({ name: 'tsunagi-whip', extraArgs: sfuArgs({}) });
});

after(async () => {
  if (viewer) await viewer.close();
  if (publisher && publisher.exitCode === null) publisher.child.kill('SIGKILL');
  if (server) await server.stop();
});

/** Starts publish.py; its JSON-line events are collected, its output logged. */
function startPublisher(room, seconds) {
  mkdirSync(artifactsDir, { recursive: true });
  const log = createWriteStream(path.join(artifactsDir, 'whip-publisher.log'));
  const child = spawn(PYTHON, [PUBLISH, '--url', server.url, '--room', room, '--duration', String(seconds)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const p = { child, events: [], exitCode: null };
  p.exited = new Promise((resolve) => child.once('exit', (code) => {
    p.exitCode = code;
    resolve(code);
  }));
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    log.write(`${line}\n`);
    try {
      p.events.push(JSON.parse(line));
    } catch {
      // not an event
    }
  });
  child.stderr.on('data', (d) => log.write(d));
  p.event = (name, timeout = 30000) =>
    waitFor(async () => {
      const err = p.events.find((e) => e.event === 'error');
      if (err) throw new Error(`publisher: ${err.message}`);
      if (p.exitCode !== null && !p.events.some((e) => e.event === name)) throw new Error(`publisher exited (${p.exitCode}) before "${name}": ${JSON.stringify(p.events)}`);
      return p.events.find((e) => e.event === name);
    }, { timeout, what: `the publisher's "${name}"` });
  return p;
}

async function sfuStats() {
  const s = await server.stats();
  assert.ok(s.sfu, `/api/stats has no sfu section: ${JSON.stringify(s)}`);
  return s.sfu;
}

/** Inbound media of the watch page, from getStats(). */
async function media(page) {
  return page.evaluate(async () => {
    const r = (await window.tsunagi.rawStats()) || [];
    const v = r.find((s) => s.type === 'inbound-rtp' && s.kind === 'video') || {};
    const a = r.find((s) => s.type === 'inbound-rtp' && s.kind === 'audio') || {};
    return {
      framesDecoded: v.framesDecoded || 0,
      frameWidth: v.frameWidth || 0,
      frameHeight: v.frameHeight || 0,
      videoBytes: v.bytesReceived || 0,
      audioPackets: a.packetsReceived || 0,
      audioSamples: a.totalSamplesReceived || 0,
      audioBytes: a.bytesReceived || 0,
    };
  });
}

async function req(method, p, { body, type } = {}) {
  const headers = type ? { 'Content-Type': type } : {};
  return fetch(`${server.url}${p}`, { method, headers, body });
}

test('WHIP/WHEP over HTTP: 415, 404, OPTIONS', async () => {
  for (const ep of ['whip', 'whep']) {
    let r = await req('POST', `/${ep}/${ROOM}`, { body: OFFER, type: 'text/plain' });
    assert.equal(r.status, 415, `${ep} with text/plain`);
    r = await req('PATCH', `/${ep}/${ROOM}/no-such-session`, { body: 'a=end-of-candidates\r\n', type: 'application/trickle-ice-sdpfrag' });
    assert.equal(r.status, 404, `PATCH on an unknown ${ep} resource`);
    r = await req('DELETE', `/${ep}/${ROOM}/no-such-session`);
    assert.equal(r.status, 404, `DELETE on an unknown ${ep} resource`);
    r = await req('OPTIONS', `/${ep}/${ROOM}`);
    assert.ok([200, 204].includes(r.status), `OPTIONS /${ep}: ${r.status}`);
    const allow = (r.headers.get('allow') || '').toUpperCase();
    assert.ok(allow.includes('POST') && allow.includes('OPTIONS'), `Allow of /${ep}/{room}: ${allow}`);
    assert.match(r.headers.get('accept-post') || '', /application\/sdp/);
    r = await req('OPTIONS', `/${ep}/${ROOM}/some-id`);
    assert.ok([200, 204].includes(r.status), `OPTIONS on a resource: ${r.status}`);
    const allowR = (r.headers.get('allow') || '').toUpperCase();
    assert.ok(allowR.includes('PATCH') && allowR.includes('DELETE'), `Allow of a resource: ${allowR}`);
  }
  const r = await req('POST', `/whep/${ROOM}-empty`, { body: OFFER, type: 'application/sdp' });
  assert.equal(r.status, 404, 'WHEP to a room where nobody publishes');
  assert.match(await r.text(), /nobody is publishing/i);
});

test('an aiortc WHIP publisher, played by Chromium on /watch', { timeout: 120000 }, async () => {
  publisher = startPublisher(ROOM, 90);
  const created = await publisher.event('created');
  assert.match(created.resource, new RegExp(`/whip/${ROOM}/`));
  await publisher.event('connected');
  await waitFor(async () => (await sfuStats()).whipSessions === 1, { timeout: 5000, what: 'sfu.whipSessions = 1' });

  const page = await fetch(`${server.url}/watch/${ROOM}`);
  assert.equal(page.status, 200, '/watch/{room} is served');
  viewer = await openWatcher(server.url, { name: 'whep viewer', room: ROOM });
  const first = await waitFor(async () => {
    const m = await media(viewer.page);
    return m.framesDecoded > 0 && m.frameWidth > 0 && m.audioPackets > 0 ? m : false;
  }, { timeout: 45000, what: 'decoded video and received audio on /watch' });
  await sleep(2000);
  const later = await media(viewer.page);
  console.log('viewer:', JSON.stringify({ first, later }));
  assert.ok(later.framesDecoded > first.framesDecoded, `video keeps decoding: ${JSON.stringify({ first, later })}`);
  assert.ok(later.audioPackets > first.audioPackets, `audio keeps arriving: ${JSON.stringify({ first, later })}`);
  assert.ok(later.audioSamples > 0, 'audio is decoded (totalSamplesReceived)');
  // aiortc sends 320x240; the encoder may scale down, never to nothing.
  assert.ok(later.frameWidth > 0 && later.frameHeight > 0, 'a real frame size');
  await waitFor(async () => (await viewer.page.evaluate(() => window.tsunagi.status)) === 'playing', { timeout: 5000, what: 'the page to say playing' });
  assert.equal((await sfuStats()).whepSessions, 1);
  await viewer.page.screenshot({ path: path.join(artifactsDir, 'whip-aiortc-watch.png') });
});

test("the publisher's DELETE ends the viewer's stream", { timeout: 60000 }, async () => {
  assert.ok(publisher && viewer, 'the previous test set up a publisher and a viewer');
  const resource = publisher.events.find((e) => e.event === 'created').resource;
  publisher.child.kill('SIGINT'); // publish.py DELETEs its resource on SIGINT
  const deleted = await publisher.event('deleted', 15000);
  assert.equal(deleted.status, 200, `DELETE answered ${deleted.status}: ${deleted.body}`);
  assert.equal(await publisher.exited, 0, `publisher exit status: ${JSON.stringify(publisher.events)}`);
  await waitFor(async () => (await sfuStats()).whipSessions === 0, { timeout: 5000, what: 'sfu.whipSessions = 0' });
  // No more video: after a moment for what was in flight, the frame count stands still.
  await sleep(1000);
  const a = await media(viewer.page);
  await sleep(2000);
  const b = await media(viewer.page);
  assert.equal(b.framesDecoded, a.framesDecoded, `video still decoding after DELETE: ${JSON.stringify({ a, b })}`);
  // The page notices (stall or closed connection) and leaves "playing".
  await waitFor(async () => (await viewer.page.evaluate(() => window.tsunagi.status)) !== 'playing', { timeout: 20000, what: 'the watch page to leave "playing"' });
  const r = await fetch(resource, { method: 'DELETE' });
  assert.equal(r.status, 404, 'the WHIP resource is gone');
});
