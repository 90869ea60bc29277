// The pages as users get them: neither the call page nor the watch page loads the
// client's test hook (web/js/test/), so `window.tsunagi` does not exist there. The hook
// is only what the tests add (lib/testhook.mjs).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startTsunagi } from '../lib/server.mjs';
import { launchBrowser, waitFor } from '../lib/browser.mjs';

let server;
let browser;

before(async () => {
  server = await startTsunagi({ name: 'tsunagi-no-hook' });
  browser = await launchBrowser({ testHook: false });
});

after(async () => {
  if (browser) await browser.close();
  if (server) await server.stop();
});

test('the call and watch pages run without the test hook, and never request it', { timeout: 60000 }, async () => {
  const ctx = await browser.newContext({ locale: 'en-US' });
  const page = await ctx.newPage();
  const requested = [];
  page.on('request', (r) => requested.push(new URL(r.url()).pathname));
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));

  await page.goto(`${server.url}/r/no-hook-room`);
  // The client ran: the landing page has the room of the address.
  assert.equal(await page.getByTestId('room-input').inputValue(), 'no-hook-room');
  assert.equal(await page.evaluate(() => typeof window.tsunagi), 'undefined');

  await page.goto(`${server.url}/watch/no-hook-room`);
  // Nobody publishes: the page says it waits (its WHEP request got a 404).
  await waitFor(async () => (await page.getByTestId('watch-status').getAttribute('data-state')) === 'waiting', { timeout: 15000, what: 'the watch page to wait for a publisher' });
  assert.equal(await page.evaluate(() => typeof window.tsunagi), 'undefined');

  assert.deepEqual(requested.filter((p) => p.startsWith('/js/test/')), [], 'no page requests the test hook');
  assert.ok(requested.includes('/js/app.js') && requested.includes('/js/watch.js'), `the pages' own modules load: ${requested.join(' ')}`);
  assert.deepEqual(errors, []);
  await ctx.close();
});
