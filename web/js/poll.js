// Once a second during a call: the stats of every connection (for the tiles and the
// open panel), inbound video per peer and path (what a mode switch and the repairs
// wait for), then the checks of a switch under way and of the SFU's health.

import { summarize } from './stats.js';
import { pathLabel } from './panel.js';
import { renderMode } from './header.js';
import { updateTile } from './tiles.js';
import { fetchSfuState, refreshOpenPanel } from './tilepanel.js';
import { applySource } from './peers.js';
import { checkSfuHealth, checkTransition } from './mode.js';
import { call, connOf, setPeerSummary, setPeerVideo, setSfuSummary } from './state.js';

/** @typedef {import('./state.js').PeerView} PeerView */
/** @typedef {import('./state.js').Path} Path */
/** @typedef {import('./stats.js').Summary} Summary */
/** @typedef {import('./peer.js').Peer | import('./sfu.js').SfuPeer} Conn */

const STATS_INTERVAL_MS = 1000;

/** @type {ReturnType<typeof setInterval>|undefined} */
let timer;
/**
 * The selected pair last written into each connection's timeline.
 * @type {WeakMap<Conn, string>}
 */
const selectedPair = new WeakMap();

/** Starts (or restarts) the once-a-second poll. */
export function startPolling() {
  clearInterval(timer);
  timer = setInterval(pollStats, STATS_INTERVAL_MS);
}

export function stopPolling() {
  clearInterval(timer);
}

/**
 * Writes "path chosen" into a connection's timeline when its selected pair changes.
 * @param {Conn} conn
 * @param {Summary} s
 */
function noteSelectedPair(conn, s) {
  const pair = s.pair;
  if (!pair || !pair.local || !pair.remote) return;
  const key = `${pair.local.id}|${pair.remote.id}`;
  if (key === selectedPair.get(conn) || pair.state !== 'succeeded') return;
  selectedPair.set(conn, key);
  conn.log({
    dir: 'state',
    kind: 'selected',
    label: pathLabel(s.path),
    local: `${pair.local.type} ${pair.local.address}:${pair.local.port}`,
    remote: `${pair.remote.type} ${pair.remote.address}:${pair.remote.port}`,
  });
}

/**
 * Records inbound video of one path of a peer; `liveAt` is when framesDecoded last grew.
 * @param {PeerView} e
 * @param {Path} path
 * @param {{framesDecoded?: number, width?: number, height?: number, fps?: number|null}|null} vin
 * @param {number} now
 */
function noteVideo(e, path, vin, now) {
  if (!vin || vin.framesDecoded === undefined) return;
  const prev = e.video[path];
  const grew = !prev || vin.framesDecoded < prev.framesDecoded ? vin.framesDecoded > 0 : vin.framesDecoded > prev.framesDecoded;
  setPeerVideo(e, path, {
    framesDecoded: vin.framesDecoded,
    frameWidth: vin.width ?? 0,
    frameHeight: vin.height ?? 0,
    fps: vin.fps ?? null,
    liveAt: grew ? now : prev ? prev.liveAt : 0,
    at: now,
  });
}

async function pollStats() {
  const now = Date.now();
  for (const e of [...call.peers.values()]) {
    const peer = e.peer;
    if (!peer || peer.closed) continue;
    let report;
    try {
      report = await peer.getStats();
    } catch {
      continue;
    }
    if (e.peer !== peer) continue;
    const s = summarize(report, e.summary);
    setPeerSummary(e, s);
    peer.summary = s;
    noteSelectedPair(peer, s);
    noteVideo(e, 'mesh', s.video.in, now);
  }
  const sfu = call.sfu;
  if (sfu && !sfu.closed) {
    let report = null;
    try {
      report = await sfu.getStats();
    } catch {
      report = null;
    }
    if (report && call.sfu === sfu) {
      const s = summarize(report, call.sfuSummary);
      setSfuSummary(s);
      sfu.summary = s;
      noteSelectedPair(sfu, s);
      for (const [owner, v] of sfu.videoByPublisher(report)) {
        const e = call.peers.get(owner);
        if (e) noteVideo(e, 'sfu', v, now);
      }
    }
  }
  for (const e of call.peers.values()) {
    applySource(e);
    updateTile(e);
  }
  checkTransition();
  checkSfuHealth();
  const open = call.openPanel ? call.peers.get(call.openPanel) : null;
  if (open && connOf(open) === call.sfu && call.sfu && (!call.sfuState || now - call.sfuState.at >= 2000)) await fetchSfuState();
  refreshOpenPanel();
  renderMode();
}
