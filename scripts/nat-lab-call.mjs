// One call across the NAT lab (scripts/nat-lab --call): two Chromium instances, each
// started in its host's network namespace through a wrapper executable
// (`ip netns exec HOST /usr/bin/chromium "$@"`), join one room through tsunagi's
// signaling. Prints the candidate pair ICE selected on each side, the path (direct or
// relayed through tsunagi's TURN), the time to connect, and checks that video is
// decoded both ways. Writes the result as one JSON object to --out.
//
//   node scripts/nat-lab-call.mjs --url http://203.0.113.1:8080 \
//     --chromium-a WRAPPER_A --chromium-b WRAPPER_B [--kind-a K --kind-b K] \
//     [--timeout 60] [--out FILE] [--profiles DIR]
//
// playwright-core comes from tests/e2e/node_modules (scripts/nat-lab runs npm ci there).

import { createRequire } from 'node:module';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { addTestHook } from '../tests/e2e/lib/testhook.mjs';

const require = createRequire(new URL('../tests/e2e/package.json', import.meta.url));
const { chromium } = require('playwright-core');

function parseArgs(argv) {
  const o = { timeout: 60, kindA: '?', kindB: '?', profiles: os.tmpdir() };
  for (let i = 0; i < argv.length; i += 2) {
    const [k, v] = [argv[i], argv[i + 1]];
    if (v === undefined) throw new Error(`${k} needs a value`);
    const key = k.replace(/^--/, '').replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    o[key] = key === 'timeout' ? Number(v) : v;
  }
  for (const need of ['url', 'chromiumA', 'chromiumB']) if (!o[need]) throw new Error(`--${need.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())} is required`);
  return o;
}

// The flags of tests/e2e/lib/browser.mjs, and: the lab's web client is on plain HTTP at
// a non-localhost address, which Chromium would not treat as a secure context (no
// camera); and real host addresses instead of mDNS names, so that the connection panel
// shows what ICE really tried.
function flags(url, userDataDir) {
  return [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--use-fake-device-for-media-stream',
    '--use-fake-ui-for-media-stream',
    // No name resolves (no DNS in the lab); the server's address literal must be
    // excluded too, or Chromium maps it to ~NOTFOUND as well.
    `--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE ${new URL(url).hostname}`,
    `--unsafely-treat-insecure-origin-as-secure=${new URL(url).origin}`,
    '--disable-features=WebRtcHideLocalIpsWithMdns',
    `--user-data-dir=${userDataDir}`,
    '--remote-debugging-pipe',
    '--no-startup-window',
  ];
}

async function launch(executablePath, url, profiles) {
  const userDataDir = mkdtempSync(path.join(profiles, 'chromium-profile-'));
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    ignoreDefaultArgs: true,
    args: flags(url, userDataDir),
    timeout: 60000,
  });
  return {
    browser,
    async close() {
      await browser.close().catch(() => {});
      rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}

async function join(b, url, room, name) {
  const context = await b.browser.newContext({ viewport: { width: 1280, height: 720 }, locale: 'en-US' });
  await addTestHook(context);
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${url}/r/${room}`);
  await page.getByTestId('name-input').fill(name);
  await page.getByTestId('join-button').click();
  await page.waitForFunction(() => window.tsunagi.id !== null, null, { timeout: 20000 });
  return { page, name, errors };
}

/** What one side sees of its only peer: ICE state, selected pair, decoded frames, timeline times. */
async function look(page) {
  return page.evaluate(async () => {
    const peers = window.tsunagi.peers();
    if (peers.length === 0) return null;
    const p = peers[0];
    const raw = (await window.tsunagi.rawStats(p.id)) || [];
    const byId = new Map(raw.map((s) => [s.id, s]));
    const t = raw.find((s) => s.type === 'transport' && s.selectedCandidatePairId);
    const pair = t && byId.get(t.selectedCandidatePairId);
    const cand = (c) => c && { type: c.candidateType, address: `${c.address}:${c.port}`, relayProtocol: c.relayProtocol };
    const video = raw.find((s) => s.type === 'inbound-rtp' && s.kind === 'video');
    const timeline = window.tsunagi.timeline(p.id) || [];
    const start = timeline.find((e) => e.kind === 'newConnection') || timeline[0];
    const connected = timeline.find((e) => e.kind === 'iceConnectionState' && (e.value === 'connected' || e.value === 'completed'));
    const summary = window.tsunagi.stats(p.id);
    const candidates = raw
      .filter((s) => s.type === 'local-candidate' || s.type === 'remote-candidate')
      .map((s) => `${s.type === 'local-candidate' ? 'local' : 'remote'} ${s.candidateType} ${s.address}:${s.port}`);
    return {
      peer: p.id,
      ice: p.iceConnectionState,
      state: pair && pair.state,
      local: pair && cand(byId.get(pair.localCandidateId)),
      remote: pair && cand(byId.get(pair.remoteCandidateId)),
      path: summary ? summary.path : null,
      framesDecoded: video ? video.framesDecoded || 0 : 0,
      connectMs: start && connected ? connected.t - start.t : null,
      candidates,
    };
  });
}

const isRelay = (s) => s && s.local && s.remote && (s.local.type === 'relay' || s.remote.type === 'relay');

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const room = `lab-${Date.now().toString(36)}`;
  const result = { a: o.kindA, b: o.kindB, ok: false, path: null, connectMs: null, sides: {}, error: null };
  const started = Date.now();
  let A, B;
  try {
    [A, B] = await Promise.all([launch(o.chromiumA, o.url, o.profiles), launch(o.chromiumB, o.url, o.profiles)]);
    const pa = await join(A, o.url, room, 'A');
    const pb = await join(B, o.url, room, 'B');
    const deadline = started + o.timeout * 1000;
    let sa, sb;
    // Connected on both sides, a selected pair that succeeded, and video decoded both ways.
    for (;;) {
      [sa, sb] = await Promise.all([look(pa.page), look(pb.page)]);
      const done = (s) => s && s.state === 'succeeded' && s.framesDecoded > 0 && (s.ice === 'connected' || s.ice === 'completed');
      if (done(sa) && done(sb)) break;
      if (Date.now() > deadline) {
        result.sides = { a: sa, b: sb };
        throw new Error(`no connection with decoded video within ${o.timeout} s (a: ${sa && sa.ice}, b: ${sb && sb.ice})`);
      }
      await sleep(250);
    }
    // Let a second of video go by, then read again: frames keep coming.
    const f0 = [sa.framesDecoded, sb.framesDecoded];
    await sleep(1000);
    [sa, sb] = await Promise.all([look(pa.page), look(pb.page)]);
    if (!(sa.framesDecoded > f0[0] && sb.framesDecoded > f0[1])) throw new Error(`video stopped: ${f0} -> ${sa.framesDecoded},${sb.framesDecoded}`);
    result.sides = { a: sa, b: sb };
    // What the connection panel of each side says about the path and why.
    for (const [side, p, s] of [['a', pa, sa], ['b', pb, sb]]) {
      try {
        await p.page.getByTestId(`tile-${s.peer}`).getByTestId('panel-toggle').click({ timeout: 5000 });
        const why = p.page.getByTestId(`conn-panel-${s.peer}`).getByTestId('path-why');
        await why.filter({ hasText: /\S/ }).waitFor({ timeout: 5000 });
        s.panelTitle = await p.page.getByTestId(`conn-panel-${s.peer}`).getByTestId('path-title').innerText();
        s.why = await why.innerText();
      } catch (e) {
        s.why = null;
        s.whyError = String((e && e.message) || e).split('\n')[0];
      }
    }
    result.path = isRelay(sa) || isRelay(sb) ? 'relay' : 'direct';
    result.connectMs = Math.max(sa.connectMs ?? 0, sb.connectMs ?? 0);
    result.ok = true;
    for (const p of [pa, pb]) if (p.errors.length) result.pageErrors = (result.pageErrors || []).concat(p.errors);
  } catch (e) {
    result.error = String((e && e.message) || e);
  } finally {
    await Promise.all([A && A.close(), B && B.close()]);
    result.totalMs = Date.now() - started;
  }
  const pairText = (s) => (s && s.local ? `${s.local.type} ${s.local.address} -> ${s.remote.type} ${s.remote.address}` : 'none');
  if (result.ok) {
    console.log(`call ${o.kindA} <-> ${o.kindB}: ${result.path.toUpperCase()} path, connected in ${result.connectMs} ms`);
  } else {
    console.log(`call ${o.kindA} <-> ${o.kindB}: FAILED: ${result.error}`);
  }
  console.log(`  a selected ${pairText(result.sides.a)}`);
  console.log(`  b selected ${pairText(result.sides.b)}`);
  if (result.ok) {
    console.log(`  video frames decoded: a ${result.sides.a.framesDecoded}, b ${result.sides.b.framesDecoded}`);
    for (const side of ['a', 'b']) {
      const s = result.sides[side];
      console.log(`  ${side}'s connection panel: ${s.panelTitle || '?'}. ${s.why || `(no explanation: ${s.whyError})`}`);
    }
  }
  else for (const side of ['a', 'b']) for (const c of (result.sides[side] && result.sides[side].candidates) || []) console.log(`  ${side} ${c}`);
  if (o.out) writeFileSync(o.out, JSON.stringify(result));
  process.exitCode = result.ok ? 0 : 1;
}

main().catch((e) => {
  console.error(`nat-lab-call: ${(e && e.stack) || e}`);
  process.exitCode = 2;
});
