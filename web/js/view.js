// What we want from the SFU: the size and visibility of every remote tile, sent as a
// `view` message (SFU mode only, at most 4 per second) so that the SFU picks each
// publisher's simulcast layer for the tile it fills (docs/sfu.md, "Simulcast").

import { call, noteViewSent } from './state.js';

/** @typedef {import('./state.js').PeerView} PeerView */

const VIEW_MIN_INTERVAL_MS = 250;

/** @type {Map<string, {w: number, h: number}>} tile sizes by peer id, kept by the observers below */
const sizes = new Map();
/** @type {Map<string, boolean>} */
const visible = new Map();
/** @type {WeakMap<Element, string>} observed element -> peer id */
const tileOf = new WeakMap();
/** @type {string|null} the tiles of the last `view` sent, as JSON */
let lastSent = null;
let lastAt = 0;
/** @type {ReturnType<typeof setTimeout>|null} */
let timer = null;

const resizeObs = typeof ResizeObserver === 'function'
  ? new ResizeObserver((entries) => {
    for (const en of entries) {
      const id = tileOf.get(en.target);
      if (id) sizes.set(id, { w: en.contentRect.width, h: en.contentRect.height });
    }
    scheduleView();
  })
  : null;
const intersectObs = typeof IntersectionObserver === 'function'
  ? new IntersectionObserver((entries) => {
    for (const en of entries) {
      const id = tileOf.get(en.target);
      if (id) visible.set(id, en.isIntersecting);
    }
    scheduleView();
  }, { threshold: [0, 0.01] })
  : null;

/** Starts watching a peer's tile. */
export function observeTile(/** @type {PeerView} */ e) {
  const el = e.tile.media;
  tileOf.set(el, e.id);
  const r = el.getBoundingClientRect();
  sizes.set(e.id, { w: r.width, h: r.height });
  if (resizeObs) resizeObs.observe(el);
  if (intersectObs) intersectObs.observe(el);
}

/** Stops watching a peer's tile. */
export function unobserveTile(/** @type {PeerView} */ e) {
  const el = e.tile.media;
  if (resizeObs) resizeObs.unobserve(el);
  if (intersectObs) intersectObs.unobserve(el);
  sizes.delete(e.id);
  visible.delete(e.id);
}

/**
 * Sends `view` (SFU mode only) when the tiles changed, at most 4 times a second.
 * `force`: send even if the tiles look the same as last time.
 */
export function scheduleView(force = false) {
  if (force) lastSent = null;
  if (call.mode !== 'sfu' || !call.sig || timer) return;
  const wait = Math.max(0, lastAt + VIEW_MIN_INTERVAL_MS - Date.now());
  timer = setTimeout(() => {
    timer = null;
    sendView();
  }, wait);
}

/** Forgets the last `view` sent (the server dropped it), so the next one goes out. */
export function forgetSentView() {
  lastSent = null;
}

/** No more `view` messages of this call (we left). */
export function stopViews() {
  if (timer) clearTimeout(timer);
  timer = null;
  lastSent = null;
}

/** @returns {import('./state.js').ViewTile[]} */
function currentView() {
  const dpr = window.devicePixelRatio || 1;
  /** @type {import('./state.js').ViewTile[]} */
  const tiles = [];
  if (document.visibilityState === 'hidden') return tiles;
  for (const e of call.peers.values()) {
    const size = sizes.get(e.id);
    if (!size || visible.get(e.id) === false) continue;
    const width = Math.round(size.w * dpr);
    const height = Math.round(size.h * dpr);
    if (width > 0 && height > 0) tiles.push({ peer: e.id, width, height });
  }
  return tiles;
}

function sendView() {
  const sig = call.sig;
  if (call.mode !== 'sfu' || !sig) return;
  const tiles = currentView();
  const key = JSON.stringify(tiles);
  if (key === lastSent) return;
  lastSent = key;
  lastAt = Date.now();
  noteViewSent(tiles);
  sig.send({ type: 'view', tiles });
}
