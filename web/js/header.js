// The bar at the top of the page: the language, the room's link, the signaling status,
// and the room's mode (the badge, and the line under the grid that says why).

import { t, setLang, getLang, LANGUAGES } from './i18n.js';
import { $, h } from './dom.js';
import { notify } from './notices.js';
import { call, countPeople } from './state.js';

/** Fills the language menu and wires it and the "copy link" button. */
export function buildHeader() {
  const sel = /** @type {HTMLSelectElement} */ ($('#lang-select'));
  sel.replaceChildren(...LANGUAGES.map((l) => h('option', { value: l.code }, l.label)));
  sel.value = getLang();
  sel.addEventListener('change', () => setLang(sel.value));
  $('#copy-link').addEventListener('click', async () => {
    const url = `${location.origin}/r/${encodeURIComponent(call.room || '')}`;
    try {
      await navigator.clipboard.writeText(url);
      notify(t('header.linkCopied'), { kind: 'ok', timeout: 2500 });
    } catch {
      notify(url, { timeout: 8000 });
    }
  });
}

/**
 * Shows the signaling state.
 * @param {import('./signaling.js').State} s
 */
export function setSigState(s) {
  const el = $('#sig-status');
  el.dataset.state = s;
  const text = /** @type {HTMLElement} */ (el.querySelector('.sig-text'));
  text.dataset.i18n = `sig.${s}`;
  text.textContent = t(`sig.${s}`);
}

/**
 * Shows the round trip of the last signaling ping; null: none (not connected).
 * @param {number|null} ms
 */
export function setSigRtt(ms) {
  const el = $('#sig-rtt');
  if (ms === null) {
    el.textContent = '';
    return;
  }
  el.textContent = t('sig.rtt', { ms });
  el.dataset.i18n = 'sig.rtt';
  el.dataset.i18nVars = JSON.stringify({ ms });
}

/** The room's mode badge: mesh or SFU, switching or not, and why. */
export function renderMode() {
  const badge = $('#room-mode');
  badge.hidden = call.view !== 'call';
  badge.dataset.mode = call.mode;
  badge.dataset.switching = call.transition ? 'true' : 'false';
  const label = /** @type {HTMLElement} */ (badge.querySelector('.mode-label'));
  label.textContent = t(`mode.${call.mode}`);
  const why = $('#mode-why');
  why.textContent = modeWhy();
  badge.title = modeWhy();
}

/** One line for learners: what the mode means and why the room is in it. */
export function modeWhy() {
  const n = countPeople();
  const c = call.modeChange;
  if (c && c.to === call.mode && Date.now() - c.at < 120000) return t(`mode.why.switched.${call.mode}`, { n: c.peers });
  return t(`mode.why.${call.mode}`, { n });
}
