// The room's mode, mesh or SFU (docs/sfu.md): the one connection to the SFU, the live
// switch between the two (the old connections stay until the new path carries video),
// and the repairs of a publisher's video that stalled through the SFU.

import { t } from './i18n.js';
import { SfuPeer } from './sfu.js';
import { notify } from './notices.js';
import { renderMode } from './header.js';
import { handMessage, onData } from './datachannel.js';
import { updateTile } from './tiles.js';
import { reopenPanel } from './tilepanel.js';
import { addPeer, applySource, closeMesh, createMeshPeer, removePeer, setVideoStream } from './peers.js';
import { scheduleView } from './view.js';
import {
  call,
  countPeople,
  isLive,
  localTracks,
  rtcConfig,
  setPeerStream,
  setPeerVideo,
  setRoomMode,
  setSfu,
  setTransition,
} from './state.js';

/** @typedef {import('./state.js').PeerView} PeerView */

// A mode switch keeps each old connection until the new path carries that peer's video.
// After SWITCH_TIMEOUT_MS an old path that carries nothing either goes; after
// SWITCH_MAX_MS every old path goes (the repairs below have had their turn).
const SWITCH_TIMEOUT_MS = 10000;
const SWITCH_MAX_MS = 45000;
// A publisher whose video through the SFU stalled this long (while the SFU connection is
// up and the server does not pause it for us) gets repaired, one step at a time
// (docs/sfu.md, "Repairs"): view again, a new offer, an ICE restart, a new connection.
/** @type {{after: number, step: 'view'|'offer'|'iceRestart'|'newConnection'}[]} */
const SFU_REPAIR_STEPS = [
  { after: 4000, step: 'view' },
  { after: 8000, step: 'offer' },
  { after: 14000, step: 'iceRestart' },
  { after: 20000, step: 'newConnection' },
];
// After the last step, a new round starts no sooner than this.
const SFU_REPAIR_ROUND_MS = 30000;

/**
 * Per publisher, how far its repairs got: since when its video is missing, the next
 * step, and when the last step and the round began.
 * @type {WeakMap<PeerView, {since: number, step: number, roundAt: number, stepAt: number}>}
 */
const health = new WeakMap();

/** The connection to the SFU, opened at once when the room is (or becomes) an SFU room. */
export function openSfu() {
  if (call.sfu) return call.sfu;
  const sfu = new SfuPeer({
    selfId: /** @type {string} */ (call.id),
    config: rtcConfig(),
    // After `mode: mesh` the room has no "sfu" peer: nothing more goes to it, not even the
    // answer to an SFU offer this page was still applying when the switch came
    // (docs/sfu.md, rule 6); the connection only carries media until it is closed.
    send: (m) => call.mode === 'sfu' && call.sfu === sfu && !!call.sig && call.sig.send(m),
    localTracks,
  });
  setSfu(sfu);
  sfu.on('track', ({ track, stream, owner }) => {
    if (call.sfu !== sfu || owner === call.id) return;
    // A publisher that is not a signaling peer: a WHIP publisher (ids "whip-…").
    const e = call.peers.get(owner) || addPeer({ id: owner, name: owner.startsWith('whip-') ? t('tile.whip') : owner }, { initiator: false, external: true });
    setPeerStream(e, 'sfu', stream);
    setVideoStream(e, 'sfu', stream);
    track.addEventListener('unmute', () => applySource(e));
  });
  sfu.on('track-ended', ({ owner }) => {
    if (call.sfu !== sfu) return;
    const e = call.peers.get(owner);
    if (!e) return;
    const live = e.streams.sfu && e.streams.sfu.getTracks().some((tr) => tr.readyState === 'live');
    if (live) return;
    if (e.external) {
      removePeer(owner);
      return;
    }
    setPeerStream(e, 'sfu', null);
    setPeerVideo(e, 'sfu', null);
    setVideoStream(e, 'sfu', null);
  });
  sfu.on('state', () => {
    if (call.sfu !== sfu) return;
    for (const e of call.peers.values()) updateTile(e);
  });
  sfu.on('data', onData);
  sfu.on('data-open', () => {
    if (call.handUp && call.sfu === sfu) sfu.sendData(handMessage());
  });
  scheduleView(true);
  return sfu;
}

/** Closes the connection to the SFU; the tiles of WHIP publishers go with it. */
export function closeSfu() {
  const sfu = call.sfu;
  if (!sfu) return;
  setSfu(null);
  sfu.close();
  for (const e of [...call.peers.values()]) {
    if (e.external) {
      removePeer(e.id);
      continue;
    }
    setPeerStream(e, 'sfu', null);
    setPeerVideo(e, 'sfu', null);
    setVideoStream(e, 'sfu', null);
    if (call.openPanel === e.id) reopenPanel(e.id);
    updateTile(e);
  }
}

/**
 * The room switched mode (a `mode` message, or `resumed`). The old connections stay up
 * until the new path carries video (or SWITCH_TIMEOUT_MS), so the tiles never go dark.
 * @param {string} to
 */
export function setMode(to) {
  const mode = to === 'sfu' ? 'sfu' : 'mesh';
  if (mode === call.mode) return;
  const from = call.mode;
  setRoomMode(mode, { from, to: mode, at: Date.now(), peers: countPeople() });
  if (mode === 'sfu') {
    openSfu();
    // The mesh connections only bridge now: lighter, so that encoding for both paths at
    // once does not stall a slow machine.
    for (const e of call.peers.values()) if (e.peer) e.peer.lighten();
    const meshUp = [...call.peers.values()].some((e) => e.peer);
    setTransition(meshUp ? { to: 'sfu', since: Date.now() } : null);
    notify(t('mode.switched.sfu', { n: countPeople() }), { kind: 'info', code: 'mode-sfu', timeout: 6000 });
  } else {
    // For each pair the peer whose id sorts lower offers: no newcomer to wait for.
    for (const e of call.peers.values()) {
      if (!e.peer && !e.external) createMeshPeer(e, /** @type {string} */ (call.id) < e.id);
    }
    setTransition(call.sfu ? { to: 'mesh', since: Date.now() } : null);
    notify(t('mode.switched.mesh', { n: countPeople() }), { kind: 'info', code: 'mode-mesh', timeout: 6000 });
  }
  for (const e of call.peers.values()) {
    applySource(e);
    updateTile(e);
  }
  if (call.openPanel) reopenPanel(call.openPanel);
  renderMode();
  scheduleView(true);
}

/**
 * Ends a switch. To SFU: each peer's mesh connection closes once that peer's video comes
 * through the SFU (a peer without video: once the SFU connection is up); after
 * SWITCH_TIMEOUT_MS also a mesh connection that carries no video either, and after
 * SWITCH_MAX_MS every one. To mesh: the SFU connection closes once every peer's video
 * comes over its mesh connection, or after SWITCH_TIMEOUT_MS when the SFU carries nothing,
 * or after SWITCH_MAX_MS. So a slow peer delays its own switch, never stops its video.
 */
export function checkTransition() {
  const tr = call.transition;
  if (!tr) return;
  const now = Date.now();
  const timedOut = now - tr.since >= SWITCH_TIMEOUT_MS;
  const overdue = now - tr.since >= SWITCH_MAX_MS;
  const sends = (/** @type {PeerView} */ e) => !e.external && (e.media.video || e.media.screen);
  if (tr.to === 'sfu') {
    const sfuUp = !!call.sfu && call.sfu.pc.connectionState === 'connected';
    for (const e of call.peers.values()) {
      if (!e.peer) continue;
      const moved = sends(e) ? isLive(e, 'sfu') : sfuUp;
      if (moved || overdue || (timedOut && !isLive(e, 'mesh'))) closeMesh(e);
    }
    if ([...call.peers.values()].some((e) => e.peer)) return;
  } else {
    const people = [...call.peers.values()].filter((e) => !e.external);
    const moved = people.every((e) => (sends(e) ? isLive(e, 'mesh') : e.peer && e.peer.pc.connectionState === 'connected'));
    const sfuCarries = people.some((e) => isLive(e, 'sfu'));
    if (!(moved || overdue || (timedOut && !sfuCarries))) return;
    closeSfu();
  }
  setTransition(null);
  for (const e of call.peers.values()) applySource(e);
  renderMode();
}

/**
 * Watches every publisher whose video should come through the SFU and repairs a stall
 * step by step (SFU_REPAIR_STEPS). A publisher the server pauses for us (`sfu-stats`
 * says "paused": not in view, or no bandwidth) is not stalled.
 */
export function checkSfuHealth() {
  const sfu = call.sfu;
  if (!sfu || sfu.closed || call.mode !== 'sfu') return;
  const now = Date.now();
  const up = sfu.pc.connectionState === 'connected';
  // While the page makes an offer or applies one from the SFU, the connection cannot
  // carry what it negotiates yet; a loaded browser can take many seconds over one. The
  // clock of a stall starts when that is done, not before, or the repairs would all be
  // due at once the moment the page gets the CPU back.
  const negotiating = sfu.negotiating();
  const layers = (call.sfuStats && call.sfuStats.layers) || {};
  // Each step repairs the whole SFU connection, not one publisher, so at most one step
  // runs per check. Several stalled publishers can be due for that same step at once:
  // the one step counts for all of them, and each one's next step comes its own
  // interval later. A publisher due for a different step waits for a later check.
  /** @type {string|null} the step run in this check */
  let stepRun = null;
  for (const e of call.peers.values()) {
    const wants = (e.external || e.media.video || e.media.screen) && layers[e.id] !== 'paused';
    let h = health.get(e);
    if (!h) {
      h = { since: now, step: 0, roundAt: 0, stepAt: 0 };
      health.set(e, h);
    }
    if (!up || negotiating || !wants || isLive(e, 'sfu')) {
      h.since = now;
      h.step = 0;
      continue;
    }
    const next = SFU_REPAIR_STEPS[h.step];
    if (!next) {
      if (now - h.roundAt >= SFU_REPAIR_ROUND_MS) {
        h.since = now;
        h.step = 0;
      }
      continue;
    }
    const prev = h.step > 0 ? SFU_REPAIR_STEPS[h.step - 1].after : 0;
    if (now - h.since < next.after || (h.step > 0 && now - h.stepAt < next.after - prev)) continue;
    if (stepRun && stepRun !== next.step) continue;
    h.step++;
    h.roundAt = now;
    h.stepAt = now;
    if (stepRun) continue;
    stepRun = next.step;
    sfu.repair(next.step, `${e.id}: no video for ${now - h.since} ms`);
    if (next.step === 'view') scheduleView(true);
  }
}
