// The connection panel inside a remote tile (one open at a time; the panel itself is
// panel.js): opening and closing it, following the connection that carries the peer
// after a mode switch, and its section about the room's mode and the SFU's view.

import { t } from './i18n.js';
import { h } from './dom.js';
import { ConnPanel } from './panel.js';
import { modeWhy } from './header.js';
import { layoutGrid, updateTile } from './tiles.js';
import { call, connOf, setOpenPanel, setPeerPanel, setSfuState } from './state.js';

/** @typedef {import('./state.js').PeerView} PeerView */

/** @type {Record<string, string>} the words for each layer `sfu-stats` names */
const LAYER_KEYS = { h: 'layer.h', m: 'layer.m', l: 'layer.l', paused: 'layer.paused', single: 'layer.single' };

/** Opens or closes the panel of a peer. */
export function togglePanel(/** @type {string} */ id) {
  if (call.openPanel === id) closePanel();
  else openPanel(id);
}

/**
 * Opens the panel of a peer (closing any other): the connection that carries its media.
 * @param {string} id
 * @param {{focus?: boolean}} [o]
 */
export function openPanel(id, { focus = true } = {}) {
  if (call.openPanel) closePanel();
  const e = call.peers.get(id);
  if (!e) return;
  const conn = connOf(e);
  if (!conn) return;
  setOpenPanel(id);
  const viaSfu = conn === call.sfu;
  const panel = new ConnPanel({
    peer: conn,
    domId: `panel-${e.id}`,
    name: () => (viaSfu ? t('panel.sfuName') : e.name),
    extra: () => modeSection(e, viaSfu),
    onClose: () => closePanel(true),
  });
  setPeerPanel(e, panel);
  if (!viaSfu) conn.summary = e.summary;
  panel.update(conn.summary);
  e.tile.el.classList.add('expanded');
  e.tile.el.append(panel.el);
  updateTile(e);
  layoutGrid();
  if (focus) panel.closeBtn.focus();
}

/** The open panel follows the connection that carries the peer now (after a switch). */
export function reopenPanel(/** @type {string} */ id) {
  const e = call.peers.get(id);
  if (!e || call.openPanel !== id) return;
  if (e.panel && e.panel.peer === connOf(e)) return;
  closePanel();
  openPanel(id, { focus: false });
}

/** Re-renders the open panel from its connection's latest stats. */
export function refreshOpenPanel() {
  const e = call.openPanel ? call.peers.get(call.openPanel) : null;
  if (e && e.panel) e.panel.update(e.panel.peer.summary);
}

/** Closes the open panel; `focusToggle`: focus the tile's panel button (closed by keyboard). */
export function closePanel(focusToggle = false) {
  const id = call.openPanel;
  setOpenPanel(null);
  const e = id ? call.peers.get(id) : null;
  if (e) {
    if (e.panel) e.panel.destroy();
    setPeerPanel(e, null);
    e.tile.el.classList.remove('expanded');
    updateTile(e);
    if (focusToggle) e.tile.toggle.focus();
  }
  layoutGrid();
}

/**
 * The part of the panel about the room's mode: mesh or SFU, why, and in SFU mode the
 * server's view (bandwidth estimate, RTT) and per remote peer the simulcast layer
 * received and the size decoded.
 * @param {PeerView} e
 * @param {boolean} viaSfu
 */
function modeSection(e, viaSfu) {
  const box = h(
    'div',
    { class: 'mode-box', testid: 'panel-mode', dataset: { mode: call.mode, via: viaSfu ? 'sfu' : 'mesh' } },
    h('strong', { class: 'mode-title', testid: 'panel-mode-title' }, t('panel.modeTitle', { mode: t(`mode.${call.mode}`) })),
    h('span', { class: 'mode-explain' }, modeWhy()),
  );
  if (call.transition) box.append(h('span', { class: 'mode-explain', testid: 'panel-switching' }, t(`mode.switching.${call.transition.to}`)));
  if (!viaSfu) return box;
  const st = call.sfuStats;
  const rows = [
    ['sfu-bitrate', 'panel.sfuEstimate', st && st.bitrate !== null && st.bitrate !== undefined ? rateBits(st.bitrate) : t('unit.none')],
    ['sfu-rtt', 'panel.sfuRtt', st && typeof st.rtt === 'number' ? t('unit.ms', { v: Math.round(st.rtt * 10) / 10 }) : t('unit.none')],
  ];
  box.append(
    h('p', { class: 'legend' }, t('panel.sfuExplain')),
    h('dl', { class: 'stats-grid' }, ...rows.map(([id, key, value]) => h('div', { class: 'stat', testid: `stat-${id}` }, h('dt', null, t(key)), h('dd', null, value)))),
  );
  const others = [...call.peers.values()];
  if (others.length) {
    box.append(
      h(
        'table',
        { class: 'layer-table', testid: 'sfu-layers' },
        h('thead', null, h('tr', null, h('th', null, t('panel.layerPeer')), h('th', null, t('panel.layer')), h('th', null, t('panel.decoded')), h('th', null, t('panel.subState')))),
        h(
          'tbody',
          null,
          ...others.map((o) => {
            const layer = st && st.layers ? st.layers[o.id] : undefined;
            const v = o.video.sfu;
            return h(
              'tr',
              { dataset: { peer: o.id, layer: layer || '' }, class: o === e ? 'current' : '' },
              h('td', null, o.name),
              h('td', { testid: 'layer' }, layer ? t(LAYER_KEYS[layer] || 'layer.other', { layer }) : t('unit.none')),
              h('td', { testid: 'decoded' }, v && v.frameWidth ? `${v.frameWidth}×${v.frameHeight}` : t('unit.none')),
              subscriptionCell(o.id),
            );
          }),
        ),
      ),
    );
  }
  return box;
}

/**
 * The server's view of our video subscription to one publisher (GET /api/rooms/{room}/sfu,
 * docs/sfu.md "Subscription state"): negotiated or not, paused and why, packets, the last
 * media, starved and keyframe requests.
 * @param {string} publisher
 */
function subscriptionCell(publisher) {
  const sub = call.sfuState && call.sfuState.subs.get(`${publisher}/video`);
  if (!sub) return h('td', { testid: 'sub-state', dataset: { state: 'unknown' } }, t('unit.none'));
  const parts = [t(`sub.${sub.state}`)];
  if (sub.paused) parts.push(t(`sub.paused.${sub.paused}`));
  if (sub.starved) parts.push(t('sub.starved', { s: Math.round((sub.starvedMs || 0) / 100) / 10 }));
  parts.push(t('sub.packets', { n: sub.packets }));
  if (sub.lastMediaMsAgo !== null) parts.push(t('sub.last', { ms: sub.lastMediaMsAgo }));
  if (sub.keyframeRequests) parts.push(t('sub.keyframes', { n: sub.keyframeRequests }));
  return h('td', { testid: 'sub-state', dataset: { state: sub.state, paused: sub.paused || '', packets: String(sub.packets) } }, parts.join(' · '));
}

/**
 * Fetches the server's subscription state of this room (while the SFU panel is open, and
 * on demand); null outside SFU mode or when the server does not answer.
 */
export async function fetchSfuState() {
  if (!call.room || call.mode !== 'sfu') return null;
  let body;
  try {
    const r = await fetch(`/api/rooms/${encodeURIComponent(call.room)}/sfu`, { cache: 'no-store' });
    if (!r.ok) return null;
    body = await r.json();
  } catch {
    return null;
  }
  /** @type {Record<string, any>[]} */
  const peers = body.peers || [];
  const me = peers.find((p) => p.peer === call.id && p.connection === 'live');
  const subs = new Map();
  for (const sub of (me && me.subscriptions) || []) subs.set(`${sub.publisher}/${sub.kind}`, sub);
  const st = { at: Date.now(), me: me || null, subs };
  setSfuState(st);
  return st;
}

function rateBits(/** @type {number} */ bps) {
  if (bps >= 1e6) return t('unit.mbps', { v: (bps / 1e6).toFixed(2) });
  return t('unit.kbps', { v: Math.round(bps / 1000) });
}
