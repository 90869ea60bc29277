// The video tiles: our own, one per remote peer (two video elements each, one per path),
// their badges and path chip, the grid's layout, and the active speaker's highlight.

import { t } from './i18n.js';
import { $, h, iconEl } from './dom.js';
import { pathLabel } from './panel.js';
import { call, connOf, setSoundBlocked, setSpeakerId } from './state.js';

/** @typedef {import('./state.js').PeerView} PeerView */
/** @typedef {import('./state.js').Path} Path */
/**
 * The elements of a remote tile.
 * @typedef {object} Tile
 * @property {HTMLElement} el  the tile
 * @property {HTMLElement} media  the part that holds the videos (observed for `view`)
 * @property {Record<Path, HTMLVideoElement>} videos  one element per path
 * @property {HTMLButtonElement} toggle  opens the connection panel
 * @property {HTMLElement} chip  the path chip
 */

/** The first letter of a name, for the placeholder of a tile without video. */
function initials(/** @type {string|null} */ name) {
  const s = String(name || '?').trim();
  return s ? [...s][0].toUpperCase() : '?';
}

/** Our own tile: built once per call, refreshed from the local media. */
export function renderSelfTile() {
  let tile = /** @type {HTMLElement|null} */ (document.querySelector('#tile-self'));
  if (!tile) {
    const video = h('video', { autoplay: true, playsinline: true, muted: true, class: 'mirror' });
    video.muted = true;
    tile = h(
      'article',
      { class: 'tile tile-self', id: 'tile-self', testid: 'tile-self' },
      video,
      h('div', { class: 'tile-placeholder' }, h('span', { class: 'avatar', testid: 'avatar' })),
      h(
        'div',
        { class: 'tile-bar' },
        h('span', { class: 'tile-name', testid: 'tile-name' }),
        h('span', { class: 'badge badge-mic', testid: 'badge-mic-off', hidden: true, title: t('tile.micOff') }, iconEl('micOff')),
        h('span', { class: 'badge badge-cam', testid: 'badge-cam-off', hidden: true, title: t('tile.camOff') }, iconEl('camOff')),
        h('span', { class: 'badge badge-screen', testid: 'badge-screen', hidden: true, title: t('tile.screen') }, iconEl('screen')),
        h('span', { class: 'badge badge-hand', testid: 'badge-hand', hidden: true }, iconEl('hand')),
      ),
    );
    $('#grid').prepend(tile);
    if (call.speaker && call.speaker === call.id) {
      tile.classList.add('speaking');
      tile.dataset.speaking = 'true';
    }
  }
  const m = call.media;
  if (!m) return;
  const video = /** @type {HTMLVideoElement} */ (tile.querySelector('video'));
  if (video.srcObject !== m.stream) video.srcObject = m.stream;
  video.classList.toggle('mirror', !m.screen);
  video.play().catch(() => {});
  const nameEl = $in(tile, '.tile-name');
  nameEl.dataset.i18n = 'tile.you';
  nameEl.dataset.i18nVars = JSON.stringify({ name: call.name });
  nameEl.textContent = t('tile.you', { name: call.name });
  $in(tile, '.avatar').textContent = initials(call.name);
  const camOn = !!m.outgoingVideo() && (m.videoEnabled || !!m.screen);
  tile.classList.toggle('no-video', !camOn);
  $in(tile, '.badge-mic').hidden = !!m.audio && m.audioEnabled;
  $in(tile, '.badge-cam').hidden = camOn;
  $in(tile, '.badge-screen').hidden = !m.screen;
  const hand = $in(tile, '.badge-hand');
  hand.hidden = !call.handUp;
  hand.title = t('tile.hand');
  hand.setAttribute('aria-label', t('tile.hand'));
}

/** An element inside a tile (the tile always has it). */
function $in(/** @type {Element} */ root, /** @type {string} */ sel) {
  return /** @type {HTMLElement} */ (root.querySelector(sel));
}

/**
 * A remote peer's tile. Two video elements: one per path (mesh, sfu). During a mode
 * switch the tile shows whichever has live video, so it never goes dark; the other one
 * is muted.
 * @param {{id: string, name: string, external: boolean, source: Path}} p
 * @param {() => void} onTogglePanel
 * @returns {Tile}
 */
export function buildRemoteTile({ id, name, external, source }, onTogglePanel) {
  const videos = {
    mesh: h('video', { autoplay: true, playsinline: true, class: 'video-mesh', testid: 'video-mesh' }),
    sfu: h('video', { autoplay: true, playsinline: true, class: 'video-sfu', testid: 'video-sfu' }),
  };
  for (const v of Object.values(videos)) {
    // Unmuting an element the page started muted can be refused (autoplay policy):
    // the browser pauses it. Keep the picture: play muted and offer "Unmute".
    v.addEventListener('pause', () => {
      if (!v.srcObject || !v.classList.contains('active') || v.muted) return;
      playMuted(v);
    });
  }
  const toggle = h(
    'button',
    {
      class: 'icon-btn tile-info',
      type: 'button',
      testid: 'panel-toggle',
      'aria-expanded': 'false',
      'aria-controls': `panel-${id}`,
      onclick: onTogglePanel,
    },
    iconEl('info'),
  );
  const chip = h('span', { class: 'path-chip', testid: 'path-chip', dataset: { path: 'none' } });
  const media = h(
    'div',
    { class: 'tile-media' },
    videos.mesh,
    videos.sfu,
    h('div', { class: 'tile-placeholder' }, h('span', { class: 'avatar', testid: 'avatar' }, initials(name))),
    h('div', { class: 'tile-status', testid: 'tile-status' }),
    h(
      'div',
      { class: 'tile-bar' },
      h('span', { class: 'tile-name', testid: 'tile-name' }, name),
      h('span', { class: 'badge badge-mic', testid: 'badge-mic-off', hidden: true }, iconEl('micOff')),
      h('span', { class: 'badge badge-cam', testid: 'badge-cam-off', hidden: true }, iconEl('camOff')),
      h('span', { class: 'badge badge-screen', testid: 'badge-screen', hidden: true }, iconEl('screen')),
      h('span', { class: 'badge badge-hand', testid: 'badge-hand', hidden: true }, iconEl('hand')),
      chip,
    ),
    toggle,
  );
  const el = h('article', { class: `tile tile-remote${external ? ' tile-external' : ''}`, testid: `tile-${id}`, dataset: { peerId: id, source } }, media);
  return { el, media, videos, toggle, chip };
}

/** The video element a peer's tile shows now (the one of its `source` path). */
export function shownVideo(/** @type {PeerView} */ e) {
  return e.tile.videos[e.source];
}

/** Plays a video muted after autoplay with sound was refused, and offers "Unmute". */
function playMuted(/** @type {HTMLVideoElement} */ v) {
  setSoundBlocked(true);
  v.muted = true;
  v.play().catch(() => {});
  $('#unmute-all').hidden = false;
}

/** Starts a video element; autoplay with sound needs a user gesture, else it plays muted. */
export async function playVideo(/** @type {HTMLVideoElement} */ v) {
  try {
    await v.play();
  } catch (e) {
    if (e instanceof Error && e.name === 'NotAllowedError' && !v.muted) playMuted(v);
  }
}

/**
 * Shows the path `src` in a peer's tile; only the shown element plays sound (both carry
 * the peer's audio during a switch).
 * @param {PeerView} e
 * @param {Path} src
 */
export function showPath(e, src) {
  const { videos, el } = e.tile;
  el.dataset.source = src;
  for (const [path, v] of Object.entries(videos)) {
    const active = path === src;
    v.classList.toggle('active', active);
    v.muted = !active || call.soundBlocked;
  }
}

/** Refreshes a remote tile: connection state, badges, the panel toggle, the path chip. */
export function updateTile(/** @type {PeerView} */ e) {
  const { el, toggle, chip } = e.tile;
  const conn = connOf(e);
  const pc = conn ? conn.pc : null;
  const connState = pc ? pc.connectionState : 'new';
  el.dataset.connection = connState;
  el.dataset.source = e.source;
  el.classList.toggle('no-video', !e.external && !e.media.video && !e.media.screen);
  const mic = $in(el, '.badge-mic');
  mic.hidden = e.media.audio;
  mic.title = t('tile.micOff');
  mic.setAttribute('aria-label', t('tile.micOff'));
  const cam = $in(el, '.badge-cam');
  cam.hidden = e.external || e.media.video || e.media.screen;
  cam.title = t('tile.camOff');
  cam.setAttribute('aria-label', t('tile.camOff'));
  const scr = $in(el, '.badge-screen');
  scr.hidden = !e.media.screen;
  scr.title = t('tile.screen');
  scr.setAttribute('aria-label', t('tile.screen'));
  const hand = $in(el, '.badge-hand');
  hand.hidden = !e.hand;
  hand.title = t('tile.hand');
  hand.setAttribute('aria-label', t('tile.hand'));
  const open = call.openPanel === e.id;
  toggle.setAttribute('aria-expanded', String(open));
  const label = t(open ? 'tile.hidePanel' : 'tile.showPanel', { name: e.name });
  toggle.setAttribute('aria-label', label);
  toggle.title = label;
  for (const v of Object.values(e.tile.videos)) v.removeAttribute('aria-label');
  shownVideo(e).setAttribute('aria-label', t('tile.videoOf', { name: e.name }));
  const viaSfu = !!conn && conn === call.sfu;
  const summary = viaSfu ? call.sfuSummary : e.summary;
  /** @type {import('./stats.js').PathInfo} */
  const path = summary ? summary.path : { kind: 'none' };
  chip.dataset.path = path.kind;
  chip.dataset.via = viaSfu ? 'sfu' : 'mesh';
  chip.textContent = viaSfu ? t('path.viaSfu', { path: pathLabel(path) }) : pathLabel(path);
  const status = $in(el, '.tile-status');
  const connected = connState === 'connected';
  status.hidden = connected;
  status.textContent = connected ? '' : `${t('tile.connecting')} (${connState})`;
}

/** Columns and sizes of the grid for the number of tiles. */
export function layoutGrid() {
  const grid = $('#grid');
  const n = grid.querySelectorAll('.tile').length;
  grid.dataset.count = String(n);
  grid.dataset.cols = String(n <= 1 ? 1 : n <= 4 ? 2 : n <= 9 ? 3 : n <= 16 ? 4 : 5);
  grid.style.setProperty('--count-others', String(Math.max(1, Math.min(n - 1, 6))));
  grid.classList.toggle('has-expanded', !!call.openPanel);
}

/** Highlights the active speaker's tile (ours or a remote one); null: nobody. */
export function setSpeaker(/** @type {string|null} */ id) {
  setSpeakerId(id);
  for (const el of document.querySelectorAll('.tile.speaking')) {
    el.classList.remove('speaking');
    delete /** @type {HTMLElement} */ (el).dataset.speaking;
  }
  if (!id) return;
  const el = id === call.id ? /** @type {HTMLElement|null} */ (document.querySelector('#tile-self')) : call.peers.get(id)?.tile.el;
  if (el) {
    el.classList.add('speaking');
    el.dataset.speaking = 'true';
  }
}
