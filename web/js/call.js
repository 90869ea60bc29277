// The call: joining a room, the signaling events (peers coming and going, descriptions
// and candidates, mode, chat, errors), resuming or starting over after a lost session,
// and leaving.

import { t } from './i18n.js';
import { $ } from './dom.js';
import { Signaling } from './signaling.js';
import { LocalMedia } from './media.js';
import { notify, errorText } from './notices.js';
import { renderMode, setSigRtt, setSigState } from './header.js';
import { roomFromPath, setJoinBusy, setLandingErrorCode, showLanding } from './landing.js';
import { layoutGrid, renderSelfTile, setSpeaker, updateTile } from './tiles.js';
import { closePanel, refreshOpenPanel } from './tilepanel.js';
import { addPeer, createMeshPeer, removePeer } from './peers.js';
import { closeSfu, openSfu, setMode } from './mode.js';
import { forgetSentView, scheduleView, stopViews } from './view.js';
import { sendMediaState, updateControls } from './controls.js';
import { addChat, clearChatList } from './chat.js';
import { startPolling, stopPolling } from './poll.js';
import {
  call,
  endSession,
  hasTurn,
  logError,
  logTraffic,
  meshWanted,
  resumeSession,
  setJoin,
  setMedia,
  setPeerMedia,
  setRoomMode,
  setSfuStats,
  setSignaling,
  setSpeakerId,
  setTransition,
  startSession,
} from './state.js';

/** @typedef {import('./signaling.js').Message} Message */

// After a session is lost: how long to keep trying to join again, and how often.
const REJOIN_TIMEOUT_MS = 60000;
const REJOIN_BACKOFF_MS = [500, 1000, 2000, 3000, 5000];

/** "Reconnecting" was shown for the current drop of the socket. */
let reconnectNotified = false;

function wsUrl() {
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
}

/**
 * Joins a room: starts the camera and microphone (once), then the signaling session.
 * A refused join goes back to the landing page with the reason.
 * @param {{room: string, name: string, token: string|null}} o
 */
export async function joinRoom({ room, name, token }) {
  setJoinBusy(true);
  setJoin({ room, name, token });
  if (!call.media) {
    const media = new LocalMedia();
    setMedia(media);
    await media.start();
    if (media.error) notify(t('notice.noMedia', { reason: media.error }), { kind: 'warn', code: 'no-media', timeout: 8000 });
  }
  const sig = new Signaling(wsUrl());
  setSignaling(sig);
  wireSignaling(sig);
  let welcome;
  try {
    welcome = await sig.join({ room, name, token: call.token, mode: call.joinMode });
  } catch (err) {
    setSignaling(null);
    if (call.media) call.media.stop();
    setMedia(null);
    const e = errorOf(err);
    if (e.code !== 'connect') logError(e);
    showLanding({ room, message: errorText(e) });
    setLandingErrorCode(e.code);
    return;
  }
  setLandingErrorCode('');
  if (roomFromPath() !== room) {
    const q = call.token ? `?token=${encodeURIComponent(call.token)}` : '';
    history.pushState({ room }, '', `/r/${encodeURIComponent(room)}${q}`);
  }
  startCall(welcome);
}

/**
 * What a failed join rejected with: the server's error, or a failure to connect.
 * @param {unknown} err
 * @returns {{code: string, message?: string, ref?: string}}
 */
function errorOf(err) {
  if (err && typeof err === 'object' && 'code' in err && err.code) return /** @type {{code: string}} */ (err);
  return { code: 'connect', message: String(err) };
}

/**
 * The server welcomed us: the call view, a tile and (in a mesh) a connection per peer.
 * @param {Message} welcome
 */
function startCall(welcome) {
  startSession(welcome);
  document.body.dataset.view = 'call';
  $('#landing').hidden = true;
  $('#call').hidden = false;
  $('#room-badge').hidden = false;
  $('#room-name').textContent = welcome.room || call.room;
  document.title = `${welcome.room || call.room} · tsunagi`;
  renderSelfTile();
  updateControls();
  if (call.sfu) closeSfu();
  setTransition(null);
  setRoomMode(welcome.mode === 'sfu' ? 'sfu' : 'mesh', null);
  setSpeakerId(null);
  setSfuStats(null);
  // In a mesh we are the newcomer and offer to everyone; in SFU mode the media comes
  // through our one connection to the SFU.
  for (const p of welcome.peers || []) addPeer(p, { initiator: true });
  if (call.mode === 'sfu') openSfu();
  renderMode();
  sendMediaState();
  startPolling();
  layoutGrid();
  if (call.relayOnly && !hasTurn()) notify(t('notice.noTurn'), { kind: 'warn', code: 'no-turn' });
}

/** @param {Signaling} sig */
function wireSignaling(sig) {
  sig.on('state', (s) => {
    setSigState(s);
    if (s === 'reconnecting' && call.view === 'call' && !reconnectNotified) {
      reconnectNotified = true;
      notify(t('notice.reconnecting'), { kind: 'warn', code: 'reconnecting' });
    }
  });
  sig.on('rtt', setSigRtt);
  sig.on('traffic', ({ dir, msg }) => {
    /** @type {import('./state.js').TrafficEntry} */
    const entry = { dir, type: msg.type, at: Date.now() };
    if (msg.to) entry.to = msg.to;
    if (msg.from) entry.from = msg.from;
    if (msg.id !== undefined) entry.id = msg.id;
    if (msg.code) entry.code = msg.code;
    if (msg.reason) entry.reason = msg.reason;
    logTraffic(entry);
  });
  sig.on('message', onSignal);
  sig.on('error', showError);
  sig.on('resumed', onResumed);
  sig.on('session-lost', onSessionLost);
}

/** @param {Message} msg */
function onSignal(msg) {
  switch (msg.type) {
    case 'peer-joined': {
      if (msg.id === call.id || call.peers.has(msg.id)) return;
      addPeer({ id: msg.id, name: msg.name }, { initiator: false });
      notify(t('notice.joined', { name: msg.name }), { kind: 'info', code: 'peer-joined', timeout: 3000 });
      // The newcomer learns our mute/camera state from us.
      sendMediaState();
      renderMode();
      break;
    }
    case 'peer-left': {
      const e = call.peers.get(msg.id);
      if (!e) return;
      removePeer(msg.id);
      const key = msg.reason === 'timeout' ? 'notice.timeout' : msg.reason === 'kicked' ? 'notice.kicked' : 'notice.left';
      notify(t(key, { name: e.name }), { kind: 'info', code: 'peer-left', timeout: 3000 });
      if (call.speaker === msg.id) setSpeaker(null);
      renderMode();
      break;
    }
    case 'offer':
    case 'answer': {
      if (msg.from === 'sfu') {
        // After `mode: mesh` the SFU connection only waits to be closed: an SFU message
        // crossing the switch is ignored (docs/sfu.md).
        if (call.sfu && call.mode === 'sfu') call.sfu.handleDescription(msg.type, msg.sdp);
        break;
      }
      let e = call.peers.get(msg.from);
      if (!e) {
        // An offer from a peer we have not heard of yet: it is the newcomer.
        if (msg.type !== 'offer' || !meshWanted()) break;
        e = addPeer({ id: msg.from, name: msg.from }, { initiator: false });
      }
      let peer = e.peer;
      if (!peer) {
        // SFU mode without a switch to mesh under way: a stale mesh offer; ignore it.
        if (msg.type !== 'offer' || !meshWanted() || e.external) break;
        peer = createMeshPeer(e, false);
      }
      peer.handleDescription(msg.type, msg.sdp);
      break;
    }
    case 'candidate': {
      if (msg.from === 'sfu') {
        if (call.sfu && call.mode === 'sfu') call.sfu.handleCandidate(msg.candidate);
        break;
      }
      const e = call.peers.get(msg.from);
      if (e && e.peer) e.peer.handleCandidate(msg.candidate);
      break;
    }
    case 'mode':
      setMode(msg.mode);
      break;
    case 'speaker':
      setSpeaker(typeof msg.id === 'string' ? msg.id : null);
      break;
    case 'sfu-stats':
      setSfuStats({ bitrate: msg.bitrate ?? null, layers: msg.layers && typeof msg.layers === 'object' ? { ...msg.layers } : {}, rtt: msg.rtt ?? null, at: Date.now() });
      refreshOpenPanel();
      break;
    case 'chat':
      addChat({ from: msg.from, name: msg.name, text: msg.text, ts: msg.ts || Date.now(), self: false });
      break;
    case 'media': {
      const e = call.peers.get(msg.from);
      if (e) {
        setPeerMedia(e, { audio: msg.audio !== false, video: msg.video !== false, screen: !!msg.screen });
        updateTile(e);
      }
      break;
    }
    default:
      break;
  }
}

/**
 * A server `error` message: logged, handled quietly when it belongs to a mode switch or
 * a full queue, else shown.
 * @param {Message} err
 */
function showError(err) {
  logError({ code: err.code, message: err.message, ref: err.ref });
  if (handledQuietly(err)) return;
  notify(errorText({ code: err.code, message: err.message }), { kind: 'error', code: err.code, timeout: 9000 });
}

/**
 * Errors that belong to a mode switch or to a full SFU queue, handled here without a
 * notice: a message to "sfu" crossing a switch to mesh (`unknown-peer`), a mesh message
 * to a peer that left, and a message to the SFU dropped because its queue was full
 * (`server-busy` with a `ref`: sent again).
 * @param {Message} err
 */
function handledQuietly(err) {
  if (err.code === 'sfu-error' && call.sfu && call.mode === 'sfu') {
    // The SFU dropped or refused our session: a new connection is the documented remedy
    // (docs/sfu.md, "Errors and repairs"). Shown only when no repair could start.
    return call.sfu.repair('newConnection', err.message || 'sfu-error');
  }
  const signalRef = ['offer', 'answer', 'candidate', 'view'].includes(err.ref);
  if (err.code === 'unknown-peer' && signalRef) {
    const recent = call.modeChange && Date.now() - call.modeChange.at < 20000;
    return !!(call.transition || recent || call.mode === 'sfu');
  }
  if (err.code === 'server-busy' && err.ref) {
    if (err.ref === 'view') {
      forgetSentView();
      setTimeout(() => scheduleView(true), 500);
    } else if (err.ref === 'offer' || err.ref === 'answer') {
      const sfu = call.sfu;
      setTimeout(() => {
        if (sfu && call.sfu === sfu) sfu.resendLocalDescription();
      }, 500);
    }
    return true;
  }
  return false;
}

/** @param {Message} msg */
function onResumed(msg) {
  reconnectNotified = false;
  resumeSession(msg);
  if (msg.mode) setMode(msg.mode);
  /** @type {{id: string, name?: string, media?: {audio?: boolean, video?: boolean, screen?: boolean}}[]} */
  const peers = msg.peers || [];
  const present = new Set(peers.map((p) => p.id));
  for (const id of [...call.peers.keys()]) if (!present.has(id)) removePeer(id);
  for (const p of peers) {
    const e = call.peers.get(p.id);
    if (e) {
      if (p.media) {
        setPeerMedia(e, { ...e.media, ...p.media });
        updateTile(e);
      }
    } else {
      // Joined while we were away: it is the newcomer, its offer is among the queued messages.
      addPeer(p, { initiator: false });
    }
  }
  sendMediaState();
  notify(t('notice.resumed'), { kind: 'ok', code: 'resumed', timeout: 3000 });
}

/** @param {{url?: string|null, reason?: string}} [why] */
async function onSessionLost(why) {
  if (call.view !== 'call') return;
  const moved = !!why?.reason;
  notify(t(moved ? 'notice.moved' : 'notice.sessionLost'), { kind: 'warn', code: moved ? 'rejoin' : 'session-lost', timeout: 6000 });
  // A cluster node that moved the room may name where to join again; if that node
  // cannot be reached, the usual URL is tried next.
  let url = why?.url || null;
  // The others have dropped us (peer-left, timeout): start over with a new id, retrying
  // while the server is unreachable.
  for (const id of [...call.peers.keys()]) removePeer(id);
  if (call.sfu) closeSfu();
  setTransition(null);
  const deadline = Date.now() + REJOIN_TIMEOUT_MS;
  for (let attempt = 0; call.view === 'call'; attempt++) {
    const sig = new Signaling(url || wsUrl());
    url = null;
    setSignaling(sig);
    wireSignaling(sig);
    setSigState('reconnecting');
    try {
      const welcome = await sig.join({ room: /** @type {string} */ (call.room), name: /** @type {string} */ (call.name), token: call.token });
      if (call.view !== 'call' || call.sig !== sig) {
        sig.leave();
        return;
      }
      startCall(welcome);
      return;
    } catch (err) {
      const e = errorOf(err);
      // `unavailable`: a cluster's directory is away or being rebuilt; try again.
      const retry = e.code === 'connect' || e.code === 'unavailable';
      if (!retry || Date.now() > deadline) {
        if (call.view !== 'call') return;
        leaveCall({ silent: true });
        showLanding({ room: call.room, message: errorText(e) });
        setLandingErrorCode(e.code);
        return;
      }
      await new Promise((r) => setTimeout(r, REJOIN_BACKOFF_MS[Math.min(attempt, REJOIN_BACKOFF_MS.length - 1)]));
    }
  }
}

/**
 * Leaves the call: every connection closes, the media stops. `silent`: no landing page
 * and no notice (the caller shows what comes next).
 * @param {{silent?: boolean}} [o]
 */
export function leaveCall({ silent = false } = {}) {
  stopPolling();
  if (call.openPanel) closePanel();
  for (const id of [...call.peers.keys()]) removePeer(id);
  if (call.sfu) closeSfu();
  setTransition(null);
  setRoomMode('mesh', null);
  setSpeakerId(null);
  setSfuStats(null);
  stopViews();
  if (call.sig) call.sig.leave();
  setSignaling(null);
  if (call.media) call.media.stop();
  setMedia(null);
  endSession();
  clearChatList();
  const self = document.querySelector('#tile-self');
  if (self) self.remove();
  setSigState('idle');
  setSigRtt(null);
  document.title = 'tsunagi';
  renderMode();
  if (!silent) {
    history.pushState({}, '', '/');
    showLanding();
    notify(t('notice.left.self'), { kind: 'info', code: 'left' });
  }
}
