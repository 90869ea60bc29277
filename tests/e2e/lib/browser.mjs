// Chromium through playwright-core with exactly the flags the project uses, a fresh
// profile per browser, and helpers that read the client's state through its read-only
// test hook `window.tsunagi` (loaded into every page by testhook.mjs).

import { chromium } from 'playwright-core';
import { addTestHook } from './testhook.mjs';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export const CHROMIUM_FLAGS = [
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
  '--allow-loopback-in-peer-connection',
  '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1',
];

/**
 * The fake camera and the window of the tests of many people (06's six, 07's five, 13's
 * cluster): 10 fps (see launchBrowser), captured at 320x180 instead of the client's
 * 640x360 (see openParticipant), in a 640x360 window instead of 1280x720. Six Chromiums
 * on two cores each encode the camera three times (simulcast) and, while a room switches
 * from mesh to SFU, once more per mesh connection, and decode and composite (in software)
 * everyone else on both paths: with a 640x360 camera a loaded Chromium took 13 s to apply one SFU
 * offer and 9 s more to answer it (fresh runs at 14:46 on 2026-12-03: SFU connection
 * timelines in 06's failure output), and pages stopped running for up to 5.3 s. A quarter
 * of the pixels lowers the cost of each person. The smaller window makes the tiles small,
 * so the SFU sends the small layers and each browser decodes and composites fewer pixels:
 * 07 on 2026-12-04, CPU of the whole test (its cgroup) 91 s in 58 s with 1280x720 (one
 * run) against 60-78 s in 46-51 s with 640x360 (four runs); mesh -> SFU done everywhere
 * after 14 s against 6-9 s; the longest page stall in the switch 2.2-3.4 s (three runs)
 * against 0.4-1.3 s (three runs); a fresh CI run with 1280x720 had seen 5.3 s. The number
 * of people and every direction checked stay the same.
 */
export const LIGHT_CAMERA = { fps: 10, width: 320, height: 180, viewport: { width: 640, height: 360 } };

/**
 * Launches one Chromium with CHROMIUM_FLAGS and a fresh --user-data-dir. Playwright's own
 * default flags are all turned off (ignoreDefaultArgs); only the pipe it drives the
 * browser through is added. `executablePath` (e.g. a wrapper that runs Chromium in
 * another network namespace) and `extraArgs` are for tests that need them.
 *
 * `cameraFps`: the fake camera's frame rate (Chromium's default is about 20). The tests
 * with five and six people use LIGHT_CAMERA.fps: six Chromiums that encode three simulcast
 * layers each and decode five streams saturate two cores at the default rate, and a
 * saturated page stops running for seconds (5.3 s seen in a fresh CI run), which no
 * product change can hide. Measured with five in an SFU room for 20 s: 1.86 CPUs (both
 * cores, pages stalling) at the default rate, 1.51 at 10 fps. The number of people and
 * every direction checked stay the same. Tests whose subject is bitrate (08's bandwidth
 * cap) keep the default: their thresholds are sized for it.
 *
 * `testHook` (default true): every page gets the client's test hook (testhook.mjs).
 */
export async function launchBrowser({ executablePath, extraArgs = [], cameraFps, testHook = true } = {}) {
  const userDataDir = mkdtempSync(path.join(os.tmpdir(), 'tsunagi-e2e-profile-'));
  const flags = cameraFps ? CHROMIUM_FLAGS.map((f) => (f === '--use-fake-device-for-media-stream' ? `${f}=fps=${cameraFps}` : f)) : CHROMIUM_FLAGS;
  const browser = await chromium.launch({
    executablePath: executablePath || process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    ignoreDefaultArgs: true,
    args: [...flags, ...extraArgs, `--user-data-dir=${userDataDir}`, '--remote-debugging-pipe', '--no-startup-window'],
    timeout: 30000,
  });
  const close = browser.close.bind(browser);
  browser.close = async () => {
    await close().catch(() => {});
    rmSync(userDataDir, { recursive: true, force: true });
  };
  // Every context (and so every page) of this browser gets the client's test hook
  // (`testHook: false`: the pages as users get them).
  if (!testHook) return browser;
  const newContext = browser.newContext.bind(browser);
  browser.newContext = async (options) => {
    const context = await newContext(options);
    await addTestHook(context);
    return context;
  };
  return browser;
}

/**
 * A participant: its own browser and page. `join` opens /r/<room>, types the name on the
 * landing page and presses Join, then waits for the server's welcome.
 */
export async function openParticipant(baseUrl, { name, room, token, query, locale = 'en-US', viewport, join = true, launch = {}, camera } = {}) {
  viewport = viewport || (camera && camera.viewport) || { width: 1280, height: 720 };
  const browser = await launchBrowser(camera ? { ...launch, cameraFps: camera.fps } : launch);
  return closingOnFailure(browser, async () => {
    const context = await browser.newContext({ viewport, locale });
    if (camera && camera.width) {
      // The capture size: the page's camera request asks for this size instead of its own.
      await context.addInitScript(({ width, height }) => {
        const md = navigator.mediaDevices;
        if (!md || !md.getUserMedia) return;
        const gum = md.getUserMedia.bind(md);
        md.getUserMedia = (c) => gum(c && c.video ? { ...c, video: { ...(c.video === true ? {} : c.video), width: { exact: width }, height: { exact: height } } } : c);
      }, { width: camera.width, height: camera.height });
    }
    const page = await context.newPage();
    const p = { name, browser, context, page, ...watchPage(page), id: null, close: () => browser.close() };
    if (join) await joinRoom(p, baseUrl, { room, token, query });
    return p;
  });
}

/**
 * Runs `open` (what sets up a page of `browser`); if it fails, closes the browser before
 * the error goes on: a browser left open keeps the test file's process alive after its
 * tests have ended.
 */
async function closingOnFailure(browser, open) {
  try {
    return await open();
  } catch (e) {
    await browser.close();
    throw e;
  }
}

/**
 * What went wrong in `page`: `consoleErrors` (console errors and uncaught exceptions, which
 * tests assert on) and `network` (requests that failed and responses with an error
 * status, for error messages only: a request aborted by a closing page is no defect) and
 * `navigations` (each document the main frame loaded, with the time).
 */
function watchPage(page) {
  const consoleErrors = [];
  const network = [];
  page.on('pageerror', (e) => consoleErrors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') consoleErrors.push(m.text());
  });
  const navigations = [];
  page.on('framenavigated', (f) => {
    if (f === page.mainFrame()) navigations.push(`${new Date().toISOString().slice(11, 23)} ${f.url()}`);
  });
  page.on('requestfailed', (r) => network.push(`${r.method()} ${r.url()}: ${r.failure()?.errorText}`));
  page.on('response', (r) => {
    if (r.status() >= 400) network.push(`${r.request().method()} ${r.url()}: ${r.status()}`);
  });
  return { consoleErrors, network, navigations };
}

/**
 * `query`: more URL parameters of the room page, e.g. {mode: 'sfu'} (the policy of a room
 * this join creates) or {relay: '1'} (start in relay-only mode).
 */
export async function joinRoom(p, baseUrl, { room, token, query }) {
  const params = new URLSearchParams(query || {});
  if (token) params.set('token', token);
  const q = params.size ? `?${params}` : '';
  await p.page.goto(`${baseUrl}/r/${encodeURIComponent(room)}${q}`);
  // goto returns on the page's load event, which the test hook's script delays (see
  // testhook.mjs): a page without it failed to load something.
  if (!(await p.page.evaluate(() => typeof window.tsunagi === 'object'))) {
    throw new Error(`${p.name}: the page loaded without its test hook; console errors ${JSON.stringify(p.consoleErrors)}, failed requests ${JSON.stringify(p.network)}`);
  }
  await p.page.getByTestId('name-input').fill(p.name);
  const before = p.page.url();
  await p.page.getByTestId('join-button').click();
  try {
    await p.page.waitForFunction(() => window.tsunagi.id !== null, null, { timeout: 15000 });
  } catch (e) {
    // E.g. `window.tsunagi` undefined: the click left the document (the form submitted
    // without the page's handler). Say what the page went through.
    throw new Error(`${p.name}: joining failed (${e.message.split('\n')[0]}); page ${before} -> ${p.page.url()}; console errors ${JSON.stringify(p.consoleErrors)}; failed requests ${JSON.stringify(p.network)}; navigations ${JSON.stringify(p.navigations)}`);
  }
  p.id = await p.page.evaluate(() => window.tsunagi.id);
  return p.id;
}

/** Polls `fn` until it returns a truthy value; throws with the last value after `timeout` ms. */
export async function waitFor(fn, { timeout = 15000, interval = 250, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}; last value: ${JSON.stringify(last)}`);
    await sleep(interval);
  }
}

/** Inbound media counters of `page` from the peer `peerId`, read from getStats(). */
export async function inbound(page, peerId) {
  return page.evaluate(async (id) => {
    const r = await window.tsunagi.rawStats(id);
    if (!r) return null;
    const sum = (kind, field) => r.filter((s) => s.type === 'inbound-rtp' && s.kind === kind).reduce((n, s) => n + (s[field] || 0), 0);
    return {
      framesDecoded: sum('video', 'framesDecoded'),
      videoBytes: sum('video', 'bytesReceived'),
      audioBytes: sum('audio', 'bytesReceived'),
      videoStreams: r.filter((s) => s.type === 'inbound-rtp' && s.kind === 'video').length,
    };
  }, peerId);
}

/**
 * The selected candidate pair of `page` towards `peerId` ("sfu": the SFU connection):
 * local and remote candidate types, and their transport protocols and addresses.
 */
export async function selectedPair(page, peerId) {
  return page.evaluate(async (id) => {
    const r = await window.tsunagi.rawStats(id);
    if (!r) return null;
    const byId = new Map(r.map((s) => [s.id, s]));
    const t = r.find((s) => s.type === 'transport' && s.selectedCandidatePairId);
    const pair = t && byId.get(t.selectedCandidatePairId);
    if (!pair) return null;
    const l = byId.get(pair.localCandidateId);
    const rc = byId.get(pair.remoteCandidateId);
    return {
      state: pair.state,
      local: l && l.candidateType,
      remote: rc && rc.candidateType,
      localRelayProtocol: l && l.relayProtocol,
      localAddress: l && `${l.address}:${l.port}`,
      localProtocol: l && l.protocol,
      localTcpType: l && l.tcpType,
      remoteProtocol: rc && rc.protocol,
      remoteTcpType: rc && rc.tcpType,
      remoteAddress: rc && `${rc.address}:${rc.port}`,
      bytesSent: pair.bytesSent,
      bytesReceived: pair.bytesReceived,
    };
  }, peerId);
}

/**
 * Asserts that every participant decodes video from every other one and receives
 * audio, both growing over `windowMs`. Returns the per-direction deltas.
 */
export async function expectMediaFlowing(participants, { timeout = 25000, windowMs = 1500 } = {}) {
  const pairs = [];
  for (const a of participants) for (const b of participants) if (a !== b) pairs.push([a, b]);
  // First: something has arrived on every direction.
  let missing = [];
  try {
    await waitFor(
      async () => {
        missing = [];
        for (const [a, b] of pairs) {
          const s = await inbound(a.page, b.id);
          if (!s || s.framesDecoded <= 0 || s.audioBytes <= 0) missing.push({ dir: `${b.name}→${a.name}`, ...s });
        }
        return missing.length === 0;
      },
      { timeout, what: 'video decoded and audio received on every direction' },
    );
  } catch (e) {
    const states = await Promise.all(participants.map((p) => p.page.evaluate(() => window.tsunagi.peers()).catch(() => null)));
    e.message += `; missing: ${JSON.stringify(missing)}; peers: ${JSON.stringify(states)}`;
    throw e;
  }
  // Then: it keeps growing.
  const before = await Promise.all(pairs.map(([a, b]) => inbound(a.page, b.id)));
  await sleep(windowMs);
  const after = await Promise.all(pairs.map(([a, b]) => inbound(a.page, b.id)));
  const out = [];
  pairs.forEach(([a, b], i) => {
    const d = {
      dir: `${b.name}→${a.name}`,
      frames: after[i].framesDecoded - before[i].framesDecoded,
      audioBytes: after[i].audioBytes - before[i].audioBytes,
    };
    if (d.frames <= 0) throw new Error(`video from ${b.name} to ${a.name} stopped decoding: ${JSON.stringify({ before: before[i], after: after[i] })}`);
    if (d.audioBytes <= 0) throw new Error(`audio from ${b.name} to ${a.name} stopped: ${JSON.stringify({ before: before[i], after: after[i] })}`);
    out.push(d);
  });
  return out;
}

/**
 * Inbound video per remote peer right now, read from getStats() through the client's
 * hook: {peerId: {path: "mesh"|"sfu", mesh: {framesDecoded, frameWidth, frameHeight}|null, sfu: ...}}.
 */
export async function videoNow(page) {
  return page.evaluate(() => window.tsunagi.videoNow());
}

/** Opens a WHEP viewer: its own browser on /watch/<room>. */
export async function openWatcher(baseUrl, { name = 'viewer', room, token, viewport = { width: 960, height: 600 }, launch = {} } = {}) {
  const browser = await launchBrowser(launch);
  return closingOnFailure(browser, async () => {
    const context = await browser.newContext({ viewport, locale: 'en-US' });
    const page = await context.newPage();
    const problems = watchPage(page);
    const q = token ? `?token=${encodeURIComponent(token)}` : '';
    await page.goto(`${baseUrl}/watch/${encodeURIComponent(room)}${q}`);
    return { name, browser, context, page, ...problems, close: () => browser.close() };
  });
}
