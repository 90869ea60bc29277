// Japanese: the header switch turns every string Japanese, the choice is remembered,
// and a browser whose language is Japanese starts in Japanese.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { startTsunagi } from '../lib/server.mjs';
import { launchBrowser, waitFor } from '../lib/browser.mjs';
import { artifactsDir } from '../lib/paths.mjs';

let server;
let browser;

before(async () => {
  server = await startTsunagi({ name: 'tsunagi-i18n' });
  browser = await launchBrowser();
});

after(async () => {
  if (browser) await browser.close();
  if (server) await server.stop();
});

test('the language switch shows Japanese strings and is remembered', { timeout: 60000 }, async () => {
  const ctx = await browser.newContext({ locale: 'en-US', viewport: { width: 1280, height: 720 } });
  const page = await ctx.newPage();
  await page.goto(`${server.url}/`);
  assert.equal(await page.getByTestId('join-button').innerText(), 'Join');
  await page.getByTestId('lang-select').selectOption('ja');
  assert.equal(await page.locator('html').getAttribute('lang'), 'ja');
  assert.equal(await page.getByTestId('join-button').innerText(), '参加');
  assert.equal(await page.locator('label[for="name-input"]').innerText(), 'あなたの名前');
  assert.equal(await page.getByTestId('name-input').getAttribute('placeholder'), '例: さくら');
  assert.match(await page.locator('#landing-title').innerText(), /通話を始める/);

  // Remembered across a reload.
  await page.reload();
  assert.equal(await page.getByTestId('lang-select').inputValue(), 'ja');
  assert.equal(await page.getByTestId('join-button').innerText(), '参加');

  // The call view too: controls, aria-labels, tiles.
  await page.getByTestId('name-input').fill('さくら');
  await page.getByTestId('join-button').click();
  await page.waitForFunction(() => window.tsunagi.id !== null);
  assert.equal(await page.getByTestId('leave').innerText(), '退出');
  assert.equal(await page.getByTestId('leave').getAttribute('aria-label'), '通話から退出');
  assert.equal(await page.getByTestId('toggle-mic').getAttribute('aria-label'), 'マイクをミュート');
  assert.equal(await page.getByTestId('relay-only').getAttribute('aria-label'), 'リレーのみ: すべてのメディアを TURN サーバー経由で送る');
  assert.equal(await page.getByTestId('tile-self').getByTestId('tile-name').innerText(), 'さくら(あなた)');
  await waitFor(async () => (await page.getByTestId('signaling-status').innerText()).includes('接続済み'), { what: 'Japanese signaling status' });
  await page.screenshot({ path: path.join(artifactsDir, 'japanese-ui.png') });

  // And back to English, live.
  await page.getByTestId('lang-select').selectOption('en');
  assert.equal(await page.getByTestId('leave').innerText(), 'Leave');
  assert.equal(await page.getByTestId('toggle-mic').getAttribute('aria-label'), 'Mute microphone');
  await page.getByTestId('leave').click();
  await page.getByTestId('landing').waitFor();
  await ctx.close();
});

test('a Japanese browser starts in Japanese', { timeout: 30000 }, async () => {
  const ctx = await browser.newContext({ locale: 'ja-JP' });
  const page = await ctx.newPage();
  await page.goto(`${server.url}/`);
  assert.equal(await page.getByTestId('lang-select').inputValue(), 'ja');
  assert.equal(await page.getByTestId('join-button').innerText(), '参加');
  // A server error in plain Japanese: an invalid room name from the URL.
  await page.goto(`${server.url}/r/${'x'.repeat(65)}`);
  await page.getByTestId('name-input').fill('太郎');
  await page.getByTestId('join-button').click();
  const err = page.getByTestId('landing-error');
  await err.waitFor({ state: 'visible' });
  assert.match(await err.innerText(), /ルーム名/);
  await ctx.close();
});
