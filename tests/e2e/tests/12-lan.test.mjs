// A phone on the LAN (docs/deploy.md, "A call on your own network"): tsunagi started with
// no TLS option serves HTTPS with the self-signed certificate it keeps in its data
// directory. A browser in a second network namespace (the phone, 198.18.12.2) opens the
// http:// address the start log lists, gets the page that explains the certificate and
// shows its fingerprint, is refused over https until it trusts the certificate (imported
// into its NSS database, what accepting the warning does), then follows the page's link and
// calls a browser on the server's host (http://127.0.0.1) with camera and microphone.
//
// The second test puts HTTPS and TURN over TLS on one port (tls-listening-port =
// http-port): the phone, in relay-only mode and with every other TURN port of the server
// blocked, relays its media through turns: on the port that served its page.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startTsunagi } from '../lib/server.mjs';
import { launchBrowser, openParticipant, expectMediaFlowing, selectedPair, waitFor } from '../lib/browser.mjs';
import { makeShapedNamespace } from '../lib/netns.mjs';

const INDEX = 12;
const servers = [];
const people = [];
let phoneNs = null;
let phoneHome = null;

/** The phone's HOME: Chromium on Linux trusts what $HOME/.pki/nssdb trusts. */
function makePhoneHome() {
  const home = mkdtempSync(path.join(os.tmpdir(), 'tsunagi-e2e-phone-'));
  const db = path.join(home, '.pki', 'nssdb');
  mkdirSync(db, { recursive: true });
  execFileSync('certutil', ['-N', '-d', `sql:${db}`, '--empty-password'], { stdio: 'pipe' });
  return { home, db };
}

/** Trusts `certPem` in the phone's NSS database, as accepting the warning would. */
function trust(db, certPem) {
  const file = path.join(db, 'tsunagi.pem');
  writeFileSync(file, certPem);
  // P: a trusted peer (this very certificate, not a CA).
  execFileSync('certutil', ['-A', '-d', `sql:${db}`, '-n', 'tsunagi', '-t', 'P,,', '-i', file], { stdio: 'pipe' });
}

/** The certificate (not the key) of the file tsunagi keeps in its data directory. */
function keptCertificate(server) {
  const text = readFileSync(path.join(server.dataDir, 'self-signed.pem'), 'utf8');
  const m = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----\n/.exec(text);
  assert.ok(m, 'self-signed.pem holds a certificate');
  return m[0];
}

/** The fingerprint tsunagi logged for its certificate. */
function loggedFingerprint(server) {
  const m = /certificate[^\n]*sha256=([0-9A-F:]{95})/.exec(readFileSync(server.logPath, 'utf8'));
  assert.ok(m, `a certificate line with sha256= in ${server.logPath}`);
  return m[1];
}

function phoneLaunch() {
  return {
    executablePath: phoneNs.wrapper,
    // Only the server's LAN address resolves; nothing else leaves the namespace.
    extraArgs: [`--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE ${phoneNs.hostIp}`],
  };
}

before(() => {
  phoneHome = makePhoneHome();
  // Made before the servers start, so that their certificates cover the LAN address.
  phoneNs = makeShapedNamespace({ index: INDEX, env: { HOME: phoneHome.home } });
});

after(async () => {
  for (const p of people) await p.close();
  for (const s of servers) await s.stop();
  if (phoneNs) phoneNs.destroy();
  if (phoneHome) rmSync(phoneHome.home, { recursive: true, force: true });
});

async function closeAll() {
  while (people.length) await people.pop().close();
}

test('a phone on the LAN calls the server\'s host from the default start', { timeout: 120000 }, async () => {
  // No TLS option: HTTPS with the kept self-signed certificate on every address.
  const server = await startTsunagi({ name: 'tsunagi-lan', ip: phoneNs.hostIp, httpIp: '0.0.0.0' });
  servers.push(server);
  const log = readFileSync(server.logPath, 'utf8');
  const lanUrl = `https://${phoneNs.hostIp}:${server.httpPort}/`;
  assert.ok(log.includes(lanUrl), `the start log lists ${lanUrl}`);
  const fingerprint = loggedFingerprint(server);
  const certPem = keptCertificate(server);

  // Plain http:// from the phone: the page that explains the certificate.
  const room = 'lan-room';
  const httpUrl = `http://${phoneNs.hostIp}:${server.httpPort}/r/${room}`;
  const untrusting = await launchBrowser(phoneLaunch());
  try {
    const page = await (await untrusting.newContext({ locale: 'en-US' })).newPage();
    const resp = await page.goto(httpUrl);
    assert.equal(resp.status(), 200);
    assert.equal((await page.locator('#sha256').textContent()).trim(), fingerprint);
    const href = await page.locator('#https-link').getAttribute('href');
    assert.equal(href, `https://${phoneNs.hostIp}:${server.httpPort}/r/${room}`);
    assert.match(await page.locator('section[lang=ja]').textContent(), /証明書/);
    // Until the certificate is trusted, the browser refuses the https page.
    await assert.rejects(page.goto(href), /ERR_CERT_AUTHORITY_INVALID|ERR_CERT_/);
  } finally {
    await untrusting.close();
  }

  // The user accepts it (for the test: imports it, no --ignore-certificate-errors).
  trust(phoneHome.db, certPem);
  const host = await openParticipant(server.url, { name: 'Host', room });
  people.push(host);
  assert.match(server.url, /^http:\/\/127\.0\.0\.1:/, 'the host browser uses plain http on loopback');
  const phone = await openParticipant(server.url, { name: 'Phone', room, join: false, launch: phoneLaunch() });
  people.push(phone);
  await phone.page.goto(httpUrl);
  await phone.page.locator('#https-link').click();
  await phone.page.waitForURL(/^https:/);
  assert.equal(new URL(phone.page.url()).protocol, 'https:');
  await phone.page.getByTestId('name-input').fill('Phone');
  await phone.page.getByTestId('join-button').click();
  await phone.page.waitForFunction(() => window.tsunagi.id !== null, null, { timeout: 15000 });
  phone.id = await phone.page.evaluate(() => window.tsunagi.id);
  // Camera and microphone on the phone: getUserMedia over https.
  assert.equal(await phone.page.evaluate(() => window.isSecureContext), true);
  await expectMediaFlowing([host, phone]);
  const pair = await selectedPair(phone.page, host.id);
  console.log('phone → host:', JSON.stringify(pair));
  assert.equal(pair.localAddress.split(':')[0], phoneNs.nsIp, 'the phone sends from its own address');

  const health = await (await fetch(`${server.url}/healthz`)).json();
  assert.equal(health.certificate.source, 'self-signed');
  assert.equal(health.certificate.sha256, fingerprint);
  await closeAll();
});

test('relay only through turns: on the port that served the page', { timeout: 120000 }, async () => {
  // One port: HTTPS, the WebSocket and TURN over TLS on the HTTP port.
  const server = await startTsunagi({
    name: 'tsunagi-one-port',
    ip: phoneNs.hostIp,
    httpIp: '0.0.0.0',
    extraArgs: ['--tls-self-signed', '--tls-listening-port', '{httpPort}'],
  });
  servers.push(server);
  trust(phoneHome.db, keptCertificate(server));
  // Every TURN port but the HTTP port is closed to the phone: UDP and TCP to the TURN
  // listening port.
  const nsx = (...a) => execFileSync('ip', ['netns', 'exec', phoneNs.ns, ...a], { stdio: 'pipe' });
  for (const proto of ['udp', 'tcp']) {
    nsx('iptables', '-A', 'OUTPUT', '-d', phoneNs.hostIp, '-p', proto, '--dport', String(server.turnPort), '-j', 'REJECT');
  }
  const room = 'one-port-room';
  const base = `https://${phoneNs.hostIp}:${server.httpPort}`;
  const phone = await openParticipant(base, { name: 'Phone', room, query: { relay: '1' }, launch: phoneLaunch() });
  people.push(phone);
  const urls = await phone.page.evaluate(() => window.tsunagi.iceServerUrls());
  const turns = `turns:${phoneNs.hostIp}:${server.httpPort}?transport=tcp`;
  assert.ok(urls.includes(turns), `welcome offers ${turns}: ${urls.join(' ')}`);
  const host = await openParticipant(server.url, { name: 'Host', room });
  people.push(host);
  await expectMediaFlowing([host, phone], { timeout: 40000 });
  const pair = await waitFor(
    async () => {
      const s = await selectedPair(phone.page, host.id);
      return s && s.state === 'succeeded' && s.local === 'relay' ? s : false;
    },
    { timeout: 20000, what: 'the phone\'s selected pair to be relayed' },
  );
  console.log('phone → host (relay only):', JSON.stringify(pair));
  assert.equal(pair.localRelayProtocol, 'tls', 'the relay is reached over TLS');
  const stats = await server.stats();
  assert.ok(stats.http.turnStreams >= 1, `TURN over TLS came in on the HTTP port: ${JSON.stringify(stats.http)}`);
  assert.ok(stats.turn.bytesToPeers > 0, 'TURN relayed the phone\'s media');
  await closeAll();
});
