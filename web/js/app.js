// tsunagi web client: landing page, call view, mesh of peer connections or one
// connection to the SFU (docs/sfu.md) and the live switch between the two, chat,
// connection panels, and the debug hook `window.tsunagi` for tests.

import { t, setLang, getLang, applyI18n, onLangChange, LANGUAGES, formatTime } from './i18n.js';
import { Signaling } from './signaling.js';
import { Peer } from './peer.js';
import { SfuPeer } from './sfu.js';
import { summarize } from './stats.js';
import { LocalMedia } from './media.js';
import { ConnPanel, pathLabel } from './panel.js';
import { h, iconEl, icons } from './dom.js';

const NAME_KEY = 'tsunagi.name';
const ROOM_RE = /^[A-Za-z0-9_-]{1,64}$/;
const STATS_INTERVAL_MS = 1000;
const TRAFFIC_LOG_MAX = 2000;
// After a session is lost: how long to keep trying to join again, and how often.
const REJOIN_TIMEOUT_MS = 60000;
const REJOIN_BACKOFF_MS = [500, 1000, 2000, 3000, 5000];
// A mode switch keeps each old connection until the new path carries that peer's video.
// After SWITCH_TIMEOUT_MS an old path that carries nothing either goes; after
// SWITCH_MAX_MS every old path goes (the repairs below have had their turn).
const SWITCH_TIMEOUT_MS = 10000;
const SWITCH_MAX_MS = 45000;
// A publisher whose video through the SFU stalled this long (while the SFU connection is
// up and the server does not pause it for us) gets repaired, one step at a time
// (docs/sfu.md, "Repairs"): view again, a new offer, an ICE restart, a new connection.
const SFU_REPAIR_STEPS = [
  { after: 4000, step: 'view' },
  { after: 8000, step: 'offer' },
  { after: 14000, step: 'iceRestart' },
  { after: 20000, step: 'newConnection' },
];
// After the last step, a new round starts no sooner than this.
const SFU_REPAIR_ROUND_MS = 30000;
// A path's video counts as live while its framesDecoded grew within this time.
const LIVE_MS = 2500;
// `view` messages: at most 4 per second.
const VIEW_MIN_INTERVAL_MS = 250;
const DATA_LOG_MAX = 500;

const $ = (sel) => document.querySelector(sel);

const state = {
  view: 'landing',
  room: null,
  name: null,
  token: null,
  id: null,
  session: null,
  iceServers: [],
  relayOnly: false,
  peers: new Map(), // id -> entry {id, name, media, peer (mesh, or null), tile, panel, summary, source, video}
  mode: 'mesh', // the room's mode: mesh | sfu
  modeChange: null, // {from, to, at, peers}: the last switch, for the explanation
  sfu: null, // SfuPeer: the connection to the SFU, in SFU mode and during a switch
  sfuSummary: null,
  sfuStats: null, // the last `sfu-stats` message
  sfuState: null, // the server's subscription state of this room: {at, me, subs}
  transition: null, // {to, since}: a mode switch waiting for video on the new path
  speaker: null,
  dataLog: [], // data-channel messages received: {from, data, at}
  handUp: false,
  tileView: { sizes: new Map(), visible: new Map(), lastSent: null, lastAt: 0, timer: null, sent: 0 },
  chat: [],
  errors: [],
  traffic: [],
  media: null,
  sig: null,
  statsTimer: null,
  openPanel: null,
  chatOpen: true,
  unread: 0,
  screenSharing: false,
};

// ---------------------------------------------------------------- small helpers

function loadName() {
  try {
    return localStorage.getItem(NAME_KEY) || '';
  } catch {
    return '';
  }
}

function saveName(name) {
  try {
    localStorage.setItem(NAME_KEY, name);
  } catch {
    // Not remembered; nothing else depends on it.
  }
}

const ADJECTIVES = ['amber', 'brave', 'calm', 'clever', 'cosmic', 'gentle', 'golden', 'happy', 'quiet', 'rapid', 'silver', 'sunny', 'swift', 'misty', 'bright', 'lucky'];
const NOUNS = ['river', 'maple', 'harbor', 'lantern', 'meadow', 'comet', 'falcon', 'garden', 'island', 'pebble', 'otter', 'cedar', 'bamboo', 'summit', 'breeze', 'koi'];

function suggestRoom() {
  const pick = (a) => a[Math.floor(Math.random() * a.length)];
  return `${pick(ADJECTIVES)}-${pick(NOUNS)}-${10 + Math.floor(Math.random() * 90)}`;
}

function wsUrl() {
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
}

function roomFromPath() {
  const m = /^\/r\/([^/]+)\/?$/.exec(location.pathname);
  if (!m) return null;
  try {
    return decodeURIComponent(m[1]);
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------- notices & errors

/** Shows a notice. kind: info | ok | warn | error. `code` goes to data-code for tests. */
function notify(text, { kind = 'info', code, timeout = 5000 } = {}) {
  const box = $('#toasts');
  const item = h(
    'div',
    { class: `toast toast-${kind}`, testid: 'toast', dataset: { code: code || '', kind }, role: kind === 'error' ? 'alert' : 'status' },
    h('span', { class: 'toast-text' }, text),
    h('button', { class: 'icon-btn toast-close', type: 'button', 'aria-label': t('notice.dismiss'), onclick: () => item.remove() }, iconEl('close')),
  );
  box.append(item);
  while (box.childElementCount > 5) box.firstElementChild.remove();
  if (timeout) setTimeout(() => item.remove(), timeout);
}

/** Plain words for a server `error` message (or a local {code, message}). */
function errorText(err) {
  const key = `err.${err.code}`;
  const txt = t(key);
  return txt !== key ? txt : t('err.other', { message: err.message || err.code });
}

function showError(err) {
  state.errors.push({ code: err.code, message: err.message, ref: err.ref, at: Date.now() });
  if (state.errors.length > 200) state.errors.shift();
  if (handledQuietly(err)) return;
  notify(errorText(err), { kind: 'error', code: err.code, timeout: 9000 });
}

/**
 * Errors that belong to a mode switch or to a full SFU queue, handled here without a
 * notice: a message to "sfu" crossing a switch to mesh (`unknown-peer`), a mesh message
 * to a peer that left, and a message to the SFU dropped because its queue was full
 * (`server-busy` with a `ref`: sent again).
 */
function handledQuietly(err) {
  if (err.code === 'sfu-error' && state.sfu && state.mode === 'sfu') {
    // The SFU dropped or refused our session: a new connection is the documented remedy
    // (docs/sfu.md, "Errors and repairs"). Shown only when no repair could start.
    return state.sfu.repair('newConnection', err.message || 'sfu-error');
  }
  const signalRef = ['offer', 'answer', 'candidate', 'view'].includes(err.ref);
  if (err.code === 'unknown-peer' && signalRef) {
    const recent = state.modeChange && Date.now() - state.modeChange.at < 20000;
    return !!(state.transition || recent || state.mode === 'sfu');
  }
  if (err.code === 'server-busy' && err.ref) {
    if (err.ref === 'view') {
      state.tileView.lastSent = null;
      setTimeout(() => scheduleView(true), 500);
    } else if (err.ref === 'offer' || err.ref === 'answer') {
      const sfu = state.sfu;
      setTimeout(() => {
        if (sfu && state.sfu === sfu) sfu.resendLocalDescription();
      }, 500);
    }
    return true;
  }
  return false;
}

// ---------------------------------------------------------------- header

function buildHeader() {
  const sel = $('#lang-select');
  sel.replaceChildren(...LANGUAGES.map((l) => h('option', { value: l.code }, l.label)));
  sel.value = getLang();
  sel.addEventListener('change', () => setLang(sel.value));
  $('#copy-link').addEventListener('click', async () => {
    const url = `${location.origin}/r/${encodeURIComponent(state.room)}`;
    try {
      await navigator.clipboard.writeText(url);
      notify(t('header.linkCopied'), { kind: 'ok', timeout: 2500 });
    } catch {
      notify(url, { timeout: 8000 });
    }
  });
}

function setSigState(s) {
  const el = $('#sig-status');
  el.dataset.state = s;
  el.querySelector('.sig-text').dataset.i18n = `sig.${s}`;
  el.querySelector('.sig-text').textContent = t(`sig.${s}`);
}

// ---------------------------------------------------------------- landing

function showLanding({ room, message } = {}) {
  state.view = 'landing';
  document.body.dataset.view = 'landing';
  $('#landing').hidden = false;
  $('#call').hidden = true;
  $('#room-badge').hidden = true;
  const nameInput = $('#name-input');
  const roomInput = $('#room-input');
  nameInput.value = nameInput.value || loadName();
  roomInput.value = room || roomInput.value || suggestRoom();
  const title = $('#landing-title');
  if (room) {
    title.dataset.i18n = 'landing.joinTitle';
    title.dataset.i18nVars = JSON.stringify({ room });
  } else {
    title.dataset.i18n = 'landing.title';
    delete title.dataset.i18nVars;
  }
  applyI18n($('#landing'));
  setJoinBusy(false);
  const msg = $('#landing-error');
  msg.textContent = message || '';
  msg.hidden = !message;
  (nameInput.value ? $('#join-btn') : nameInput).focus();
}

function setJoinBusy(busy) {
  const btn = $('#join-btn');
  btn.disabled = busy;
  btn.dataset.i18n = busy ? 'landing.joining' : 'landing.join';
  btn.textContent = t(btn.dataset.i18n);
}

function onLandingSubmit(ev) {
  ev.preventDefault();
  const name = $('#name-input').value.trim();
  const room = $('#room-input').value.trim();
  const token = $('#token-input').value.trim();
  const msg = $('#landing-error');
  if (!name) {
    msg.textContent = t('landing.nameRequired');
    msg.hidden = false;
    $('#name-input').focus();
    return;
  }
  if (!ROOM_RE.test(room)) {
    msg.textContent = t('landing.roomInvalid');
    msg.hidden = false;
    $('#room-input').focus();
    return;
  }
  saveName(name);
  state.relayOnly = $('#relay-start').checked;
  joinRoom({ room, name, token: token || state.token });
}

// ---------------------------------------------------------------- call

async function joinRoom({ room, name, token }) {
  setJoinBusy(true);
  state.room = room;
  state.name = name;
  state.token = token || null;
  if (!state.media) {
    state.media = new LocalMedia();
    await state.media.start();
    if (state.media.error) notify(t('notice.noMedia', { reason: state.media.error }), { kind: 'warn', code: 'no-media', timeout: 8000 });
  }
  const sig = new Signaling(wsUrl());
  state.sig = sig;
  wireSignaling(sig);
  let welcome;
  try {
    welcome = await sig.join({ room, name, token: state.token, mode: state.joinMode });
  } catch (err) {
    state.sig = null;
    if (state.media) state.media.stop();
    state.media = null;
    const e = err && err.code ? err : { code: 'connect', message: String(err) };
    if (e.code !== 'connect') state.errors.push({ code: e.code, message: e.message, ref: e.ref, at: Date.now() });
    showLanding({ room, message: errorText(e) });
    const msgEl = $('#landing-error');
    msgEl.dataset.code = e.code;
    return;
  }
  $('#landing-error').dataset.code = '';
  if (roomFromPath() !== room) {
    const q = state.token ? `?token=${encodeURIComponent(state.token)}` : '';
    history.pushState({ room }, '', `/r/${encodeURIComponent(room)}${q}`);
  }
  startCall(welcome);
}

function startCall(welcome) {
  state.view = 'call';
  document.body.dataset.view = 'call';
  state.id = welcome.id;
  state.session = welcome;
  state.name = welcome.name || state.name;
  state.iceServers = welcome.iceServers || [];
  $('#landing').hidden = true;
  $('#call').hidden = false;
  $('#room-badge').hidden = false;
  $('#room-name').textContent = welcome.room || state.room;
  document.title = `${welcome.room || state.room} · tsunagi`;
  renderSelfTile();
  updateControls();
  if (state.sfu) closeSfu();
  state.transition = null;
  state.mode = welcome.mode === 'sfu' ? 'sfu' : 'mesh';
  state.modeChange = null;
  state.speaker = null;
  state.sfuStats = null;
  // In a mesh we are the newcomer and offer to everyone; in SFU mode the media comes
  // through our one connection to the SFU.
  for (const p of welcome.peers || []) addPeer(p, { initiator: true });
  if (state.mode === 'sfu') openSfu();
  renderMode();
  sendMediaState();
  clearInterval(state.statsTimer);
  state.statsTimer = setInterval(pollStats, STATS_INTERVAL_MS);
  layoutGrid();
  if (state.relayOnly && !hasTurn()) notify(t('notice.noTurn'), { kind: 'warn', code: 'no-turn' });
}

function rtcConfig() {
  return { iceServers: state.iceServers, iceTransportPolicy: state.relayOnly ? 'relay' : 'all', bundlePolicy: 'max-bundle' };
}

function canPublish() {
  return !state.session || state.session.canPublish !== false;
}

function hasTurn() {
  return state.iceServers.some((s) => [].concat(s.urls || s.url || []).some((u) => /^turns?:/.test(u)));
}

function wireSignaling(sig) {
  sig.on('state', (s) => {
    setSigState(s);
    if (s === 'reconnecting' && state.view === 'call' && !state.reconnectNotified) {
      state.reconnectNotified = true;
      notify(t('notice.reconnecting'), { kind: 'warn', code: 'reconnecting' });
    }
  });
  sig.on('rtt', (ms) => {
    const el = $('#sig-rtt');
    el.textContent = t('sig.rtt', { ms });
    el.dataset.i18n = 'sig.rtt';
    el.dataset.i18nVars = JSON.stringify({ ms });
  });
  sig.on('traffic', ({ dir, msg }) => {
    const entry = { dir, type: msg.type, at: Date.now() };
    if (msg.to) entry.to = msg.to;
    if (msg.from) entry.from = msg.from;
    if (msg.id !== undefined) entry.id = msg.id;
    if (msg.code) entry.code = msg.code;
    if (msg.reason) entry.reason = msg.reason;
    state.traffic.push(entry);
    if (state.traffic.length > TRAFFIC_LOG_MAX) state.traffic.splice(0, state.traffic.length - TRAFFIC_LOG_MAX);
  });
  sig.on('message', onSignal);
  sig.on('error', showError);
  sig.on('resumed', onResumed);
  sig.on('session-lost', onSessionLost);
}

function onSignal(msg) {
  switch (msg.type) {
    case 'peer-joined': {
      if (msg.id === state.id || state.peers.has(msg.id)) return;
      addPeer({ id: msg.id, name: msg.name }, { initiator: false });
      notify(t('notice.joined', { name: msg.name }), { kind: 'info', code: 'peer-joined', timeout: 3000 });
      // The newcomer learns our mute/camera state from us.
      sendMediaState();
      renderMode();
      break;
    }
    case 'peer-left': {
      const e = state.peers.get(msg.id);
      if (!e) return;
      removePeer(msg.id);
      const key = msg.reason === 'timeout' ? 'notice.timeout' : msg.reason === 'kicked' ? 'notice.kicked' : 'notice.left';
      notify(t(key, { name: e.name }), { kind: 'info', code: 'peer-left', timeout: 3000 });
      if (state.speaker === msg.id) setSpeaker(null);
      renderMode();
      break;
    }
    case 'offer':
    case 'answer': {
      if (msg.from === 'sfu') {
        // After `mode: mesh` the SFU connection only waits to be closed: an SFU message
        // crossing the switch is ignored (docs/sfu.md).
        if (state.sfu && state.mode === 'sfu') state.sfu.handleDescription(msg.type, msg.sdp);
        break;
      }
      let e = state.peers.get(msg.from);
      if (!e) {
        // An offer from a peer we have not heard of yet: it is the newcomer.
        if (msg.type !== 'offer' || !meshWanted()) break;
        e = addPeer({ id: msg.from, name: msg.from }, { initiator: false });
      }
      if (!e.peer) {
        // SFU mode without a switch to mesh under way: a stale mesh offer; ignore it.
        if (msg.type !== 'offer' || !meshWanted() || e.external) break;
        createMeshPeer(e, false);
      }
      e.peer.handleDescription(msg.type, msg.sdp);
      break;
    }
    case 'candidate': {
      if (msg.from === 'sfu') {
        if (state.sfu && state.mode === 'sfu') state.sfu.handleCandidate(msg.candidate);
        break;
      }
      const e = state.peers.get(msg.from);
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
      state.sfuStats = { bitrate: msg.bitrate ?? null, layers: msg.layers && typeof msg.layers === 'object' ? { ...msg.layers } : {}, rtt: msg.rtt ?? null, at: Date.now() };
      refreshOpenPanel();
      break;
    case 'chat':
      addChat({ from: msg.from, name: msg.name, text: msg.text, ts: msg.ts || Date.now(), self: false });
      break;
    case 'media': {
      const e = state.peers.get(msg.from);
      if (e) {
        e.media = { audio: msg.audio !== false, video: msg.video !== false, screen: !!msg.screen };
        updateTile(e);
      }
      break;
    }
    default:
      break;
  }
}

function onResumed(msg) {
  state.reconnectNotified = false;
  state.session = msg;
  state.iceServers = msg.iceServers || state.iceServers;
  if (msg.mode) setMode(msg.mode);
  const present = new Set((msg.peers || []).map((p) => p.id));
  for (const id of [...state.peers.keys()]) if (!present.has(id)) removePeer(id);
  for (const p of msg.peers || []) {
    const e = state.peers.get(p.id);
    if (e) {
      if (p.media) {
        e.media = { ...e.media, ...p.media };
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

async function onSessionLost() {
  if (state.view !== 'call') return;
  notify(t('notice.sessionLost'), { kind: 'warn', code: 'session-lost', timeout: 6000 });
  // The others have dropped us (peer-left, timeout): start over with a new id, retrying
  // while the server is unreachable.
  for (const id of [...state.peers.keys()]) removePeer(id);
  if (state.sfu) closeSfu();
  state.transition = null;
  const deadline = Date.now() + REJOIN_TIMEOUT_MS;
  for (let attempt = 0; state.view === 'call'; attempt++) {
    const sig = new Signaling(wsUrl());
    state.sig = sig;
    wireSignaling(sig);
    setSigState('reconnecting');
    try {
      const welcome = await sig.join({ room: state.room, name: state.name, token: state.token });
      if (state.view !== 'call' || state.sig !== sig) {
        sig.leave();
        return;
      }
      startCall(welcome);
      return;
    } catch (err) {
      const e = err && err.code ? err : { code: 'connect' };
      if (e.code !== 'connect' || Date.now() > deadline) {
        if (state.view !== 'call') return;
        leaveCall({ silent: true });
        showLanding({ room: state.room, message: errorText(e) });
        $('#landing-error').dataset.code = e.code;
        return;
      }
      await new Promise((r) => setTimeout(r, REJOIN_BACKOFF_MS[Math.min(attempt, REJOIN_BACKOFF_MS.length - 1)]));
    }
  }
}

function localTracks() {
  // A token without publish rights (canPublish: false) receives only.
  return canPublish()
    ? { audio: state.media.audio, video: state.media.outgoingVideo(), stream: state.media.stream }
    : { audio: null, video: null, stream: state.media.stream };
}

/** A tile for a remote participant (or a WHIP publisher: `external`), with a mesh connection when the room is a mesh. */
function addPeer(p, { initiator, external = false }) {
  const entry = {
    id: p.id,
    name: p.name || p.id,
    media: p.media ? { audio: p.media.audio !== false, video: p.media.video !== false, screen: !!p.media.screen } : { audio: true, video: true, screen: false },
    external,
    peer: null,
    tile: null,
    panel: null,
    summary: null,
    selectedPairKey: null,
    joinedAt: Date.now(),
    streams: { mesh: null, sfu: null },
    // Inbound video per path: {framesDecoded, frameWidth, frameHeight, fps, liveAt}.
    video: { mesh: null, sfu: null },
    source: state.mode,
    hand: false,
  };
  state.peers.set(p.id, entry);
  entry.tile = buildRemoteTile(entry);
  $('#grid').append(entry.tile.el);
  observeTile(entry);
  if (!external && meshWanted()) createMeshPeer(entry, initiator);
  applySource(entry);
  updateTile(entry);
  layoutGrid();
  return entry;
}

function meshWanted() {
  return state.mode === 'mesh';
}

/** The mesh RTCPeerConnection to one peer (see peer.js for who offers). */
function createMeshPeer(entry, initiator) {
  const peer = new Peer({
    id: entry.id,
    selfId: state.id,
    initiator,
    config: rtcConfig(),
    send: (m) => state.sig && state.sig.send(m),
    localTracks,
  });
  entry.peer = peer;
  entry.summary = null;
  entry.selectedPairKey = null;
  peer.on('track', ({ stream }) => {
    if (entry.peer !== peer) return;
    entry.streams.mesh = stream;
    setVideoStream(entry, 'mesh', stream);
  });
  peer.on('state', () => {
    if (entry.peer === peer) updateTile(entry);
  });
  peer.on('data', onData);
  peer.on('data-open', () => {
    if (state.handUp && entry.peer === peer) peer.sendData(handMessage());
  });
  return peer;
}

/** Closes the mesh connection of one peer; its tile stays (it shows the SFU's video). */
function closeMesh(e) {
  if (!e.peer) return;
  e.peer.close();
  e.peer = null;
  e.summary = null;
  e.streams.mesh = null;
  e.video.mesh = null;
  setVideoStream(e, 'mesh', null);
  applySource(e);
  if (state.openPanel === e.id) reopenPanel(e.id);
  updateTile(e);
}

function removePeer(id) {
  const e = state.peers.get(id);
  if (!e) return;
  state.peers.delete(id);
  if (state.openPanel === id) closePanel();
  if (e.peer) e.peer.close();
  unobserveTile(e);
  for (const v of Object.values(e.tile.videos)) v.srcObject = null;
  e.tile.el.remove();
  layoutGrid();
  scheduleView();
}

/** Puts `stream` into the tile's video element of one path (mesh or sfu). */
function setVideoStream(e, path, stream) {
  const v = e.tile.videos[path];
  if (v.srcObject !== stream) v.srcObject = stream;
  if (stream) playVideo(v);
  applySource(e);
}

async function playVideo(v) {
  try {
    await v.play();
  } catch (e) {
    if (e && e.name === 'NotAllowedError' && !v.muted) {
      // Autoplay with sound needs a user gesture: play muted and offer to unmute.
      state.soundBlocked = true;
      v.muted = true;
      v.play().catch(() => {});
      $('#unmute-all').hidden = false;
    }
  }
}

// ---------------------------------------------------------------- SFU mode and switching

/** The connection to the SFU, opened at once when the room is (or becomes) an SFU room. */
function openSfu() {
  if (state.sfu) return state.sfu;
  const sfu = new SfuPeer({
    selfId: state.id,
    config: rtcConfig(),
    // After `mode: mesh` the room has no "sfu" peer: nothing more goes to it, not even the
    // answer to an SFU offer this page was still applying when the switch came
    // (docs/sfu.md, rule 6); the connection only carries media until it is closed.
    send: (m) => state.mode === 'sfu' && state.sfu === sfu && !!state.sig && state.sig.send(m),
    localTracks,
  });
  state.sfu = sfu;
  state.sfuSummary = null;
  sfu.on('track', ({ track, stream, owner }) => {
    if (state.sfu !== sfu || owner === state.id) return;
    let e = state.peers.get(owner);
    // A publisher that is not a signaling peer: a WHIP publisher (ids "whip-…").
    if (!e) e = addPeer({ id: owner, name: owner.startsWith('whip-') ? t('tile.whip') : owner }, { initiator: false, external: true });
    e.streams.sfu = stream;
    setVideoStream(e, 'sfu', stream);
    track.addEventListener('unmute', () => applySource(e));
  });
  sfu.on('track-ended', ({ owner }) => {
    if (state.sfu !== sfu) return;
    const e = state.peers.get(owner);
    if (!e) return;
    const live = e.streams.sfu && e.streams.sfu.getTracks().some((tr) => tr.readyState === 'live');
    if (live) return;
    if (e.external) {
      removePeer(owner);
      return;
    }
    e.streams.sfu = null;
    e.video.sfu = null;
    setVideoStream(e, 'sfu', null);
  });
  sfu.on('state', () => {
    if (state.sfu !== sfu) return;
    for (const e of state.peers.values()) updateTile(e);
  });
  sfu.on('data', onData);
  sfu.on('data-open', () => {
    if (state.handUp && state.sfu === sfu) sfu.sendData(handMessage());
  });
  scheduleView(true);
  return sfu;
}

function closeSfu() {
  const sfu = state.sfu;
  if (!sfu) return;
  state.sfu = null;
  sfu.close();
  state.sfuSummary = null;
  for (const e of [...state.peers.values()]) {
    if (e.external) {
      removePeer(e.id);
      continue;
    }
    e.streams.sfu = null;
    e.video.sfu = null;
    setVideoStream(e, 'sfu', null);
    if (state.openPanel === e.id) reopenPanel(e.id);
    updateTile(e);
  }
}

/**
 * The room switched mode (a `mode` message, or `resumed`). The old connections stay up
 * until the new path carries video (or SWITCH_TIMEOUT_MS), so the tiles never go dark.
 */
function setMode(mode) {
  mode = mode === 'sfu' ? 'sfu' : 'mesh';
  if (mode === state.mode) return;
  const from = state.mode;
  state.mode = mode;
  state.modeChange = { from, to: mode, at: Date.now(), peers: countPeople() };
  if (mode === 'sfu') {
    openSfu();
    // The mesh connections only bridge now: lighter, so that encoding for both paths at
    // once does not stall a slow machine.
    for (const e of state.peers.values()) if (e.peer) e.peer.lighten();
    const meshUp = [...state.peers.values()].some((e) => e.peer);
    state.transition = meshUp ? { to: 'sfu', since: Date.now() } : null;
    notify(t('mode.switched.sfu', { n: countPeople() }), { kind: 'info', code: 'mode-sfu', timeout: 6000 });
  } else {
    // For each pair the peer whose id sorts lower offers: no newcomer to wait for.
    for (const e of state.peers.values()) {
      if (!e.peer && !e.external) createMeshPeer(e, state.id < e.id);
    }
    state.transition = state.sfu ? { to: 'mesh', since: Date.now() } : null;
    notify(t('mode.switched.mesh', { n: countPeople() }), { kind: 'info', code: 'mode-mesh', timeout: 6000 });
  }
  for (const e of state.peers.values()) {
    applySource(e);
    updateTile(e);
  }
  if (state.openPanel) reopenPanel(state.openPanel);
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
function checkTransition() {
  const tr = state.transition;
  if (!tr) return;
  const now = Date.now();
  const timedOut = now - tr.since >= SWITCH_TIMEOUT_MS;
  const overdue = now - tr.since >= SWITCH_MAX_MS;
  const sends = (e) => !e.external && (e.media.video || e.media.screen);
  if (tr.to === 'sfu') {
    const sfuUp = !!state.sfu && state.sfu.pc.connectionState === 'connected';
    for (const e of state.peers.values()) {
      if (!e.peer) continue;
      const moved = sends(e) ? isLive(e, 'sfu') : sfuUp;
      if (moved || overdue || (timedOut && !isLive(e, 'mesh'))) closeMesh(e);
    }
    if ([...state.peers.values()].some((e) => e.peer)) return;
  } else {
    const people = [...state.peers.values()].filter((e) => !e.external);
    const moved = people.every((e) => (sends(e) ? isLive(e, 'mesh') : e.peer && e.peer.pc.connectionState === 'connected'));
    const sfuCarries = people.some((e) => isLive(e, 'sfu'));
    if (!(moved || overdue || (timedOut && !sfuCarries))) return;
    closeSfu();
  }
  state.transition = null;
  for (const e of state.peers.values()) applySource(e);
  renderMode();
}

/**
 * Watches every publisher whose video should come through the SFU and repairs a stall
 * step by step (SFU_REPAIR_STEPS). A publisher the server pauses for us (`sfu-stats`
 * says "paused": not in view, or no bandwidth) is not stalled.
 */
function checkSfuHealth() {
  const sfu = state.sfu;
  if (!sfu || sfu.closed || state.mode !== 'sfu') return;
  const now = Date.now();
  const up = sfu.pc.connectionState === 'connected';
  // While the page makes an offer or applies one from the SFU, the connection cannot
  // carry what it negotiates yet; a loaded browser can take many seconds over one. The
  // clock of a stall starts when that is done, not before, or the repairs would all be
  // due at once the moment the page gets the CPU back.
  const negotiating = sfu.negotiating();
  const layers = (state.sfuStats && state.sfuStats.layers) || {};
  // A step repairs the whole connection: taken once per tick, for every stalled publisher
  // that is due for it, and the next step is due only its own interval after this one.
  let taken = null;
  for (const e of state.peers.values()) {
    const wants = (e.external || e.media.video || e.media.screen) && layers[e.id] !== 'paused';
    const h = e.sfuHealth || (e.sfuHealth = { since: now, step: 0, roundAt: 0, stepAt: 0 });
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
    if (taken && taken !== next.step) continue;
    h.step++;
    h.roundAt = now;
    h.stepAt = now;
    if (taken) continue;
    taken = next.step;
    sfu.repair(next.step, `${e.id}: no video for ${now - h.since} ms`);
    if (next.step === 'view') scheduleView(true);
  }
}

function isLive(e, path) {
  const v = e.video[path];
  return !!(v && v.liveAt && Date.now() - v.liveAt < LIVE_MS);
}

/** A tile shows the path of the room's mode when its video is live, else whichever path is. */
function pickSource(e) {
  const pref = e.external ? 'sfu' : state.mode;
  const other = pref === 'sfu' ? 'mesh' : 'sfu';
  if (isLive(e, pref)) return pref;
  if (isLive(e, other)) return other;
  if (e.streams[pref]) return pref;
  if (e.streams[other]) return other;
  return pref;
}

function applySource(e) {
  if (!e.tile) return;
  const src = pickSource(e);
  const changed = e.source !== src;
  e.source = src;
  const { videos, el } = e.tile;
  el.dataset.source = src;
  for (const [path, v] of Object.entries(videos)) {
    const active = path === src;
    v.classList.toggle('active', active);
    // Only the shown element plays sound (both carry the peer's audio during a switch).
    v.muted = !active || !!state.soundBlocked;
  }
  e.tile.video = videos[src];
  if (changed) {
    if (state.openPanel === e.id) reopenPanel(e.id);
    updateTile(e);
  }
}

/** The connection that carries a peer's media now: its mesh Peer or the SFU. */
function connOf(e) {
  if (!e) return null;
  if (e.source === 'sfu' && state.sfu) return state.sfu;
  return e.peer || state.sfu || null;
}

function countPeople() {
  let n = 1;
  for (const e of state.peers.values()) if (!e.external) n++;
  return n;
}

function renderMode() {
  const badge = $('#room-mode');
  if (!badge) return;
  badge.hidden = state.view !== 'call';
  badge.dataset.mode = state.mode;
  badge.dataset.switching = state.transition ? 'true' : 'false';
  const label = badge.querySelector('.mode-label');
  label.textContent = t(`mode.${state.mode}`);
  const why = $('#mode-why');
  why.textContent = modeWhy();
  badge.title = modeWhy();
}

/** One line for learners: what the mode means and why the room is in it. */
function modeWhy() {
  const n = countPeople();
  const c = state.modeChange;
  if (c && c.to === state.mode && Date.now() - c.at < 120000) return t(`mode.why.switched.${state.mode}`, { n: c.peers });
  return t(`mode.why.${state.mode}`, { n });
}

function setSpeaker(id) {
  state.speaker = id;
  for (const el of document.querySelectorAll('.tile.speaking')) {
    el.classList.remove('speaking');
    delete el.dataset.speaking;
  }
  if (!id) return;
  const el = id === state.id ? $('#tile-self') : state.peers.get(id)?.tile.el;
  if (el) {
    el.classList.add('speaking');
    el.dataset.speaking = 'true';
  }
}

// ---------------------------------------------------------------- data channel

function handMessage() {
  return JSON.stringify({ tsunagi: 'hand', up: state.handUp });
}

/** Sends text on the "tsunagi" data channel: through the SFU, or to every mesh peer. */
function sendData(text) {
  text = String(text);
  const viaSfu = () => !!(state.sfu && state.sfu.sendData(text));
  const viaMesh = () => {
    let sent = false;
    for (const e of state.peers.values()) if (e.peer && e.peer.sendData(text)) sent = true;
    return sent;
  };
  return state.mode === 'sfu' ? viaSfu() || viaMesh() : viaMesh() || viaSfu();
}

function onData({ from, data }) {
  state.dataLog.push({ from, data, at: Date.now() });
  if (state.dataLog.length > DATA_LOG_MAX) state.dataLog.shift();
  let msg = null;
  try {
    msg = JSON.parse(data);
  } catch {
    return;
  }
  const e = state.peers.get(from);
  if (e && msg && msg.tsunagi === 'hand') {
    e.hand = !!msg.up;
    updateTile(e);
    if (e.hand) notify(t('notice.hand', { name: e.name }), { kind: 'info', code: 'hand', timeout: 3000 });
  }
}

function toggleHand() {
  state.handUp = !state.handUp;
  sendData(handMessage());
  updateControls();
}

// ---------------------------------------------------------------- view messages (SFU)

const tileOf = new WeakMap(); // observed element -> peer id
const resizeObs = typeof ResizeObserver === 'function'
  ? new ResizeObserver((entries) => {
    for (const en of entries) {
      const id = tileOf.get(en.target);
      if (id) state.tileView.sizes.set(id, { w: en.contentRect.width, h: en.contentRect.height });
    }
    scheduleView();
  })
  : null;
const intersectObs = typeof IntersectionObserver === 'function'
  ? new IntersectionObserver((entries) => {
    for (const en of entries) {
      const id = tileOf.get(en.target);
      if (id) state.tileView.visible.set(id, en.isIntersecting);
    }
    scheduleView();
  }, { threshold: [0, 0.01] })
  : null;

function observeTile(e) {
  const el = e.tile.media;
  tileOf.set(el, e.id);
  const r = el.getBoundingClientRect();
  state.tileView.sizes.set(e.id, { w: r.width, h: r.height });
  if (resizeObs) resizeObs.observe(el);
  if (intersectObs) intersectObs.observe(el);
}

function unobserveTile(e) {
  const el = e.tile.media;
  if (resizeObs) resizeObs.unobserve(el);
  if (intersectObs) intersectObs.unobserve(el);
  state.tileView.sizes.delete(e.id);
  state.tileView.visible.delete(e.id);
}

/** Sends `view` (SFU mode only) when the tiles changed, at most 4 times a second. */
function scheduleView(force = false) {
  const v = state.tileView;
  if (force) v.lastSent = null;
  if (state.mode !== 'sfu' || !state.sig || v.timer) return;
  const wait = Math.max(0, v.lastAt + VIEW_MIN_INTERVAL_MS - Date.now());
  v.timer = setTimeout(() => {
    v.timer = null;
    sendView();
  }, wait);
}

function currentView() {
  const dpr = window.devicePixelRatio || 1;
  const tiles = [];
  if (document.visibilityState === 'hidden') return tiles;
  for (const e of state.peers.values()) {
    const size = state.tileView.sizes.get(e.id);
    if (!size || state.tileView.visible.get(e.id) === false) continue;
    const width = Math.round(size.w * dpr);
    const height = Math.round(size.h * dpr);
    if (width > 0 && height > 0) tiles.push({ peer: e.id, width, height });
  }
  return tiles;
}

function sendView() {
  const v = state.tileView;
  if (state.mode !== 'sfu' || !state.sig) return;
  const tiles = currentView();
  const key = JSON.stringify(tiles);
  if (key === v.lastSent) return;
  v.lastSent = key;
  v.lastAt = Date.now();
  v.sent++;
  v.last = tiles;
  state.sig.send({ type: 'view', tiles });
}

// ---------------------------------------------------------------- tiles

function renderSelfTile() {
  let tile = $('#tile-self');
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
    if (state.speaker && state.speaker === state.id) {
      tile.classList.add('speaking');
      tile.dataset.speaking = 'true';
    }
  }
  const video = tile.querySelector('video');
  if (video.srcObject !== state.media.stream) video.srcObject = state.media.stream;
  video.classList.toggle('mirror', !state.media.screen);
  video.play().catch(() => {});
  const nameEl = tile.querySelector('.tile-name');
  nameEl.dataset.i18n = 'tile.you';
  nameEl.dataset.i18nVars = JSON.stringify({ name: state.name });
  nameEl.textContent = t('tile.you', { name: state.name });
  tile.querySelector('.avatar').textContent = initials(state.name);
  const m = state.media;
  const camOn = !!m.outgoingVideo() && (m.videoEnabled || !!m.screen);
  tile.classList.toggle('no-video', !camOn);
  tile.querySelector('.badge-mic').hidden = !!m.audio && m.audioEnabled;
  tile.querySelector('.badge-cam').hidden = camOn;
  tile.querySelector('.badge-screen').hidden = !m.screen;
  const hand = tile.querySelector('.badge-hand');
  hand.hidden = !state.handUp;
  hand.title = t('tile.hand');
  hand.setAttribute('aria-label', t('tile.hand'));
}

function initials(name) {
  const s = String(name || '?').trim();
  return s ? [...s][0].toUpperCase() : '?';
}

function buildRemoteTile(entry) {
  // Two video elements: one per path (mesh, sfu). During a mode switch the tile shows
  // whichever has live video, so it never goes dark; the other one is muted.
  const videos = {
    mesh: h('video', { autoplay: true, playsinline: true, class: 'video-mesh', testid: 'video-mesh' }),
    sfu: h('video', { autoplay: true, playsinline: true, class: 'video-sfu', testid: 'video-sfu' }),
  };
  const video = videos[entry.source] || videos.mesh;
  for (const v of Object.values(videos)) {
    // Unmuting an element the page started muted can be refused (autoplay policy):
    // the browser pauses it. Keep the picture: play muted and offer "Unmute".
    v.addEventListener('pause', () => {
      if (!v.srcObject || !v.classList.contains('active') || v.muted) return;
      state.soundBlocked = true;
      v.muted = true;
      v.play().catch(() => {});
      $('#unmute-all').hidden = false;
    });
  }
  const toggle = h(
    'button',
    {
      class: 'icon-btn tile-info',
      type: 'button',
      testid: 'panel-toggle',
      'aria-expanded': 'false',
      'aria-controls': `panel-${entry.id}`,
      onclick: () => togglePanel(entry.id),
    },
    iconEl('info'),
  );
  const chip = h('span', { class: 'path-chip', testid: 'path-chip', dataset: { path: 'none' } });
  const media = h(
    'div',
    { class: 'tile-media' },
    videos.mesh,
    videos.sfu,
    h('div', { class: 'tile-placeholder' }, h('span', { class: 'avatar', testid: 'avatar' }, initials(entry.name))),
    h('div', { class: 'tile-status', testid: 'tile-status' }),
    h(
      'div',
      { class: 'tile-bar' },
      h('span', { class: 'tile-name', testid: 'tile-name' }, entry.name),
      h('span', { class: 'badge badge-mic', testid: 'badge-mic-off', hidden: true }, iconEl('micOff')),
      h('span', { class: 'badge badge-cam', testid: 'badge-cam-off', hidden: true }, iconEl('camOff')),
      h('span', { class: 'badge badge-screen', testid: 'badge-screen', hidden: true }, iconEl('screen')),
      h('span', { class: 'badge badge-hand', testid: 'badge-hand', hidden: true }, iconEl('hand')),
      chip,
    ),
    toggle,
  );
  const el = h(
    'article',
    { class: `tile tile-remote${entry.external ? ' tile-external' : ''}`, testid: `tile-${entry.id}`, dataset: { peerId: entry.id, source: entry.source } },
    media,
  );
  return { el, media, video, videos, toggle, chip };
}

function updateTile(e) {
  const { el, toggle, chip } = e.tile;
  const conn = connOf(e);
  const pc = conn ? conn.pc : null;
  const connState = pc ? pc.connectionState : 'new';
  el.dataset.connection = connState;
  el.dataset.source = e.source;
  el.classList.toggle('no-video', !e.external && !e.media.video && !e.media.screen);
  const mic = el.querySelector('.badge-mic');
  mic.hidden = e.media.audio;
  mic.title = t('tile.micOff');
  mic.setAttribute('aria-label', t('tile.micOff'));
  const cam = el.querySelector('.badge-cam');
  cam.hidden = e.external || e.media.video || e.media.screen;
  cam.title = t('tile.camOff');
  cam.setAttribute('aria-label', t('tile.camOff'));
  const scr = el.querySelector('.badge-screen');
  scr.hidden = !e.media.screen;
  scr.title = t('tile.screen');
  scr.setAttribute('aria-label', t('tile.screen'));
  const hand = el.querySelector('.badge-hand');
  hand.hidden = !e.hand;
  hand.title = t('tile.hand');
  hand.setAttribute('aria-label', t('tile.hand'));
  const open = state.openPanel === e.id;
  toggle.setAttribute('aria-expanded', String(open));
  const label = t(open ? 'tile.hidePanel' : 'tile.showPanel', { name: e.name });
  toggle.setAttribute('aria-label', label);
  toggle.title = label;
  for (const v of Object.values(e.tile.videos)) v.removeAttribute('aria-label');
  e.tile.video.setAttribute('aria-label', t('tile.videoOf', { name: e.name }));
  const viaSfu = conn && conn === state.sfu;
  const summary = viaSfu ? state.sfuSummary : e.summary;
  const path = summary ? summary.path : { kind: 'none' };
  chip.dataset.path = path.kind;
  chip.dataset.via = viaSfu ? 'sfu' : 'mesh';
  chip.textContent = viaSfu ? t('path.viaSfu', { path: pathLabel(path) }) : pathLabel(path);
  const status = el.querySelector('.tile-status');
  const connected = connState === 'connected';
  status.hidden = connected;
  status.textContent = connected ? '' : `${t('tile.connecting')} (${connState})`;
}

function layoutGrid() {
  const grid = $('#grid');
  const n = grid.querySelectorAll('.tile').length;
  grid.dataset.count = String(n);
  grid.dataset.cols = String(n <= 1 ? 1 : n <= 4 ? 2 : n <= 9 ? 3 : n <= 16 ? 4 : 5);
  grid.style.setProperty('--count-others', String(Math.max(1, Math.min(n - 1, 6))));
  grid.classList.toggle('has-expanded', !!state.openPanel);
}

// ---------------------------------------------------------------- connection panel

function togglePanel(id) {
  if (state.openPanel === id) closePanel();
  else openPanel(id);
}

function openPanel(id, { focus = true } = {}) {
  if (state.openPanel) closePanel();
  const e = state.peers.get(id);
  if (!e) return;
  const conn = connOf(e);
  if (!conn) return;
  state.openPanel = id;
  const viaSfu = conn === state.sfu;
  e.panel = new ConnPanel({
    peer: conn,
    domId: `panel-${e.id}`,
    name: () => (viaSfu ? t('panel.sfuName') : e.name),
    extra: () => modeSection(e, viaSfu),
    onClose: () => closePanel(true),
  });
  if (!viaSfu) conn.summary = e.summary;
  e.panel.update(conn.summary);
  e.tile.el.classList.add('expanded');
  e.tile.el.append(e.panel.el);
  updateTile(e);
  layoutGrid();
  if (focus) e.panel.closeBtn.focus();
}

/** The open panel follows the connection that carries the peer now (after a switch). */
function reopenPanel(id) {
  const e = state.peers.get(id);
  if (!e || state.openPanel !== id) return;
  if (e.panel && e.panel.peer === connOf(e)) return;
  closePanel();
  openPanel(id, { focus: false });
}

function refreshOpenPanel() {
  const e = state.openPanel && state.peers.get(state.openPanel);
  if (e && e.panel) e.panel.update(e.panel.peer.summary);
}

const LAYER_KEYS = { h: 'layer.h', m: 'layer.m', l: 'layer.l', paused: 'layer.paused', single: 'layer.single' };

/**
 * The part of the panel about the room's mode: mesh or SFU, why, and in SFU mode the
 * server's view (bandwidth estimate, RTT) and per remote peer the simulcast layer
 * received and the size decoded.
 */
function modeSection(e, viaSfu) {
  const box = h(
    'div',
    { class: 'mode-box', testid: 'panel-mode', dataset: { mode: state.mode, via: viaSfu ? 'sfu' : 'mesh' } },
    h('strong', { class: 'mode-title', testid: 'panel-mode-title' }, t('panel.modeTitle', { mode: t(`mode.${state.mode}`) })),
    h('span', { class: 'mode-explain' }, modeWhy()),
  );
  if (state.transition) box.append(h('span', { class: 'mode-explain', testid: 'panel-switching' }, t(`mode.switching.${state.transition.to}`)));
  if (!viaSfu) return box;
  const st = state.sfuStats;
  const rows = [
    ['sfu-bitrate', 'panel.sfuEstimate', st && st.bitrate !== null && st.bitrate !== undefined ? rateBits(st.bitrate) : t('unit.none')],
    ['sfu-rtt', 'panel.sfuRtt', st && typeof st.rtt === 'number' ? t('unit.ms', { v: Math.round(st.rtt * 10) / 10 }) : t('unit.none')],
  ];
  box.append(
    h('p', { class: 'legend' }, t('panel.sfuExplain')),
    h('dl', { class: 'stats-grid' }, ...rows.map(([id, key, value]) => h('div', { class: 'stat', testid: `stat-${id}` }, h('dt', null, t(key)), h('dd', null, value)))),
  );
  const others = [...state.peers.values()];
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
 */
function subscriptionCell(publisher) {
  const sub = state.sfuState && state.sfuState.subs.get(`${publisher}/video`);
  if (!sub) return h('td', { testid: 'sub-state', dataset: { state: 'unknown' } }, t('unit.none'));
  const parts = [t(`sub.${sub.state}`)];
  if (sub.paused) parts.push(t(`sub.paused.${sub.paused}`));
  if (sub.starved) parts.push(t('sub.starved', { s: Math.round((sub.starvedMs || 0) / 100) / 10 }));
  parts.push(t('sub.packets', { n: sub.packets }));
  if (sub.lastMediaMsAgo !== null) parts.push(t('sub.last', { ms: sub.lastMediaMsAgo }));
  if (sub.keyframeRequests) parts.push(t('sub.keyframes', { n: sub.keyframeRequests }));
  return h('td', { testid: 'sub-state', dataset: { state: sub.state, paused: sub.paused || '', packets: String(sub.packets) } }, parts.join(' · '));
}

/** Fetches the server's subscription state of this room (while the SFU panel is open, and on demand). */
async function fetchSfuState() {
  if (!state.room || state.mode !== 'sfu') return null;
  let body;
  try {
    const r = await fetch(`/api/rooms/${encodeURIComponent(state.room)}/sfu`, { cache: 'no-store' });
    if (!r.ok) return null;
    body = await r.json();
  } catch {
    return null;
  }
  const me = (body.peers || []).find((p) => p.peer === state.id && p.connection === 'live');
  const subs = new Map();
  for (const sub of (me && me.subscriptions) || []) subs.set(`${sub.publisher}/${sub.kind}`, sub);
  state.sfuState = { at: Date.now(), me: me || null, subs };
  return state.sfuState;
}

function rateBits(bps) {
  if (bps >= 1e6) return t('unit.mbps', { v: (bps / 1e6).toFixed(2) });
  return t('unit.kbps', { v: Math.round(bps / 1000) });
}

function closePanel(focusToggle = false) {
  const id = state.openPanel;
  state.openPanel = null;
  const e = id && state.peers.get(id);
  if (e) {
    if (e.panel) e.panel.destroy();
    e.panel = null;
    e.tile.el.classList.remove('expanded');
    updateTile(e);
    if (focusToggle) e.tile.toggle.focus();
  }
  layoutGrid();
}

/** Writes "path chosen" into a connection's timeline when its selected pair changes. */
function noteSelectedPair(conn, holder, s) {
  const key = s.pair && s.pair.local && s.pair.remote ? `${s.pair.local.id}|${s.pair.remote.id}` : null;
  if (key && key !== holder.selectedPairKey && s.pair.state === 'succeeded') {
    holder.selectedPairKey = key;
    conn.log({
      dir: 'state',
      kind: 'selected',
      label: pathLabel(s.path),
      local: `${s.pair.local.type} ${s.pair.local.address}:${s.pair.local.port}`,
      remote: `${s.pair.remote.type} ${s.pair.remote.address}:${s.pair.remote.port}`,
    });
  }
}

/** Records inbound video of one path of a peer; `liveAt` is when framesDecoded last grew. */
function noteVideo(e, path, vin, now) {
  if (!vin || vin.framesDecoded === undefined) return;
  const prev = e.video[path];
  const grew = !prev || vin.framesDecoded < prev.framesDecoded ? vin.framesDecoded > 0 : vin.framesDecoded > prev.framesDecoded;
  e.video[path] = {
    framesDecoded: vin.framesDecoded,
    frameWidth: vin.width ?? 0,
    frameHeight: vin.height ?? 0,
    fps: vin.fps ?? null,
    liveAt: grew ? now : prev ? prev.liveAt : 0,
    at: now,
  };
}

/** Inbound video per publisher from the SFU connection's stats. */
function sfuVideoByPeer(sfu, report) {
  const per = new Map();
  for (const r of report.values()) {
    if (r.type !== 'inbound-rtp' || r.kind !== 'video') continue;
    const owner = sfu.ownerOfStat(r);
    if (!owner) continue;
    const cur = per.get(owner) || { framesDecoded: 0, width: 0, height: 0, fps: null };
    cur.framesDecoded += r.framesDecoded || 0;
    if ((r.frameWidth || 0) >= cur.width) {
      cur.width = r.frameWidth || 0;
      cur.height = r.frameHeight || 0;
      cur.fps = r.framesPerSecond ?? cur.fps;
    }
    per.set(owner, cur);
  }
  return per;
}

async function pollStats() {
  const now = Date.now();
  for (const e of [...state.peers.values()]) {
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
    e.summary = s;
    peer.summary = s;
    noteSelectedPair(peer, e, s);
    noteVideo(e, 'mesh', s.video.in, now);
  }
  const sfu = state.sfu;
  if (sfu && !sfu.closed) {
    let report = null;
    try {
      report = await sfu.getStats();
    } catch {
      report = null;
    }
    if (report && state.sfu === sfu) {
      const s = summarize(report, state.sfuSummary);
      state.sfuSummary = s;
      sfu.summary = s;
      noteSelectedPair(sfu, sfu, s);
      for (const [owner, v] of sfuVideoByPeer(sfu, report)) {
        const e = state.peers.get(owner);
        if (e) noteVideo(e, 'sfu', v, now);
      }
    }
  }
  for (const e of state.peers.values()) {
    applySource(e);
    updateTile(e);
  }
  checkTransition();
  checkSfuHealth();
  const open = state.openPanel && state.peers.get(state.openPanel);
  if (open && connOf(open) === state.sfu && state.sfu && (!state.sfuState || now - state.sfuState.at >= 2000)) await fetchSfuState();
  refreshOpenPanel();
  renderMode();
}

// ---------------------------------------------------------------- controls

function sendMediaState() {
  if (!state.sig || !state.media) return;
  const m = state.media;
  if (!canPublish()) {
    state.sig.send({ type: 'media', audio: false, video: false, screen: false });
    return;
  }
  state.sig.send({
    type: 'media',
    audio: !!m.audio && m.audioEnabled,
    video: (!!m.camera && m.videoEnabled) || !!m.screen,
    screen: !!m.screen,
  });
}

function setToggle(btn, pressed, labelKey, icon) {
  btn.setAttribute('aria-pressed', String(pressed));
  btn.setAttribute('aria-label', t(labelKey));
  btn.title = t(labelKey);
  btn.dataset.i18nAttr = `aria-label:${labelKey};title:${labelKey}`;
  btn.querySelector('.icon').innerHTML = icons[icon];
}

function updateControls() {
  const m = state.media;
  if (!m) return;
  const micOn = !!m.audio && m.audioEnabled;
  const camOn = !!m.camera && m.videoEnabled;
  const mic = $('#btn-mic');
  setToggle(mic, !micOn, micOn ? 'ctl.mute' : 'ctl.unmute', micOn ? 'mic' : 'micOff');
  mic.disabled = !m.audio || !canPublish();
  mic.classList.toggle('off', !micOn);
  const cam = $('#btn-cam');
  setToggle(cam, !camOn, camOn ? 'ctl.camOff' : 'ctl.camOn', camOn ? 'cam' : 'camOff');
  cam.disabled = !m.camera || !canPublish();
  cam.classList.toggle('off', !camOn);
  const scr = $('#btn-screen');
  setToggle(scr, !!m.screen, m.screen ? 'ctl.stopShare' : 'ctl.share', 'screen');
  scr.disabled = !(navigator.mediaDevices && navigator.mediaDevices.getDisplayMedia) || !canPublish();
  scr.classList.toggle('active', !!m.screen);
  const relay = $('#relay-switch');
  relay.checked = state.relayOnly;
  $('#btn-chat').setAttribute('aria-pressed', String(state.chatOpen));
  $('#btn-chat').setAttribute('aria-expanded', String(state.chatOpen));
  const hand = $('#btn-hand');
  hand.setAttribute('aria-pressed', String(state.handUp));
  hand.classList.toggle('active', state.handUp);
  const handKey = state.handUp ? 'ctl.handDown' : 'ctl.handUp';
  hand.setAttribute('aria-label', t(handKey));
  hand.title = t(handKey);
  hand.dataset.i18nAttr = `aria-label:${handKey};title:${handKey}`;
  renderSelfTile();
}

function toggleMic() {
  const m = state.media;
  if (!m.audio) return;
  m.setAudioEnabled(!m.audioEnabled);
  updateControls();
  sendMediaState();
}

function toggleCam() {
  const m = state.media;
  if (!m.camera) return;
  m.setVideoEnabled(!m.videoEnabled);
  updateControls();
  sendMediaState();
}

/** Swaps an outgoing track on every connection: the mesh peers and the SFU (no renegotiation). */
function replaceEverywhere(kind, track) {
  const conns = [...state.peers.values()].map((e) => e.peer).filter(Boolean);
  if (state.sfu) conns.push(state.sfu);
  return Promise.all(conns.map((c) => c.replaceTrack(kind, track)));
}

async function toggleScreen() {
  const m = state.media;
  if (m.screen) {
    stopScreen();
    return;
  }
  try {
    const track = await m.startScreen(() => stopScreen());
    // The screen is captured from here on: the button says so at once, not only once
    // every connection sends it (replaceTrack can take a while on a busy machine).
    updateControls();
    await replaceEverywhere('video', track);
  } catch (e) {
    notify(t('notice.screenFailed', { reason: e.name || String(e) }), { kind: 'warn', code: 'screen-failed' });
    return;
  }
  updateControls();
  sendMediaState();
}

async function stopScreen() {
  const m = state.media;
  m.stopScreen();
  updateControls();
  await replaceEverywhere('video', m.camera);
  updateControls();
  sendMediaState();
}

function setRelayOnly(on) {
  if (state.relayOnly === on) return;
  state.relayOnly = on;
  for (const e of state.peers.values()) if (e.peer) e.peer.setRelayOnly(on);
  if (state.sfu) state.sfu.setRelayOnly(on);
  notify(t(on ? 'notice.relayOn' : 'notice.relayOff'), { kind: 'info', code: on ? 'relay-on' : 'relay-off', timeout: 3500 });
  if (on && !hasTurn()) notify(t('notice.noTurn'), { kind: 'warn', code: 'no-turn' });
  updateControls();
}

async function openDevices() {
  const dlg = $('#devices-dialog');
  const m = state.media;
  const list = await m.devices();
  const fill = (sel, kind, devKind, current) => {
    const devs = list.filter((d) => d.kind === devKind);
    sel.replaceChildren(
      ...(devs.length
        ? devs.map((d, i) => h('option', { value: d.deviceId }, d.label || t('dev.unnamed', { kind: t(kind === 'audio' ? 'dev.mic' : 'dev.camera'), n: i + 1 })))
        : [h('option', { value: '' }, t('dev.none'))]),
    );
    sel.disabled = devs.length === 0;
    if (current) sel.value = current;
  };
  fill($('#camera-select'), 'video', 'videoinput', m.currentDeviceId('video'));
  fill($('#mic-select'), 'audio', 'audioinput', m.currentDeviceId('audio'));
  dlg.showModal();
}

async function switchDevice(kind, deviceId) {
  if (!deviceId) return;
  try {
    const track = await state.media.switchDevice(kind, deviceId);
    // While sharing the screen, the camera change shows when the share ends.
    if (kind === 'audio' || !state.media.screen) {
      await replaceEverywhere(kind, track);
    }
    renderSelfTile();
  } catch (e) {
    notify(t('notice.deviceFailed', { reason: e.name || String(e) }), { kind: 'warn', code: 'device-failed' });
  }
}

// ---------------------------------------------------------------- chat

function addChat(m) {
  state.chat.push(m);
  if (state.chat.length > 500) state.chat.shift();
  const list = $('#chat-list');
  $('#chat-empty').hidden = true;
  const item = h(
    'li',
    { class: `chat-msg${m.self ? ' self' : ''}`, testid: 'chat-message', dataset: { from: m.from || '' } },
    h('div', { class: 'chat-meta' }, h('span', { class: 'chat-name' }, m.self ? t('tile.you', { name: m.name }) : m.name), h('time', { datetime: new Date(m.ts).toISOString() }, formatTime(m.ts))),
    h('div', { class: 'chat-text' }, m.text),
  );
  list.append(item);
  list.scrollTop = list.scrollHeight;
  if (!state.chatOpen && !m.self) {
    state.unread++;
    const b = $('#chat-unread');
    b.hidden = false;
    b.textContent = String(state.unread);
    b.setAttribute('aria-label', t('chat.unread', { n: state.unread }));
  }
}

function onChatSubmit(ev) {
  ev.preventDefault();
  const input = $('#chat-input');
  const text = input.value.trim();
  if (!text || !state.sig) return;
  state.sig.send({ type: 'chat', text: text.slice(0, 2000) });
  addChat({ from: state.id, name: state.name, text, ts: Date.now(), self: true });
  input.value = '';
}

function setChatOpen(open) {
  state.chatOpen = open;
  $('#chat').hidden = !open;
  document.body.classList.toggle('chat-open', open);
  if (open) {
    state.unread = 0;
    $('#chat-unread').hidden = true;
  }
  updateControls();
}

// ---------------------------------------------------------------- leave

function leaveCall({ silent = false } = {}) {
  clearInterval(state.statsTimer);
  if (state.openPanel) closePanel();
  for (const id of [...state.peers.keys()]) removePeer(id);
  if (state.sfu) closeSfu();
  state.transition = null;
  state.mode = 'mesh';
  state.modeChange = null;
  state.speaker = null;
  state.sfuStats = null;
  state.handUp = false;
  clearTimeout(state.tileView.timer);
  state.tileView.timer = null;
  state.tileView.lastSent = null;
  if (state.sig) state.sig.leave();
  state.sig = null;
  if (state.media) state.media.stop();
  state.media = null;
  state.id = null;
  state.session = null;
  state.chat = [];
  $('#chat-list').replaceChildren();
  $('#chat-empty').hidden = false;
  const self = $('#tile-self');
  if (self) self.remove();
  setSigState('idle');
  $('#sig-rtt').textContent = '';
  document.title = 'tsunagi';
  renderMode();
  if (!silent) {
    history.pushState({}, '', '/');
    showLanding();
    notify(t('notice.left.self'), { kind: 'info', code: 'left' });
  }
}

// ---------------------------------------------------------------- frame-gap monitor (tests)

// Started by the first `window.tsunagi.frameGaps()` call and never before, so a normal
// session runs none of it. It watches both video elements of every remote tile (mesh and
// SFU) and keeps, per remote peer, the largest interval between consecutive presented
// frames on either element, measured in the page (requestVideoFrameCallback), so it does
// not depend on how often a test can read it. An element on which rVFC has not fired
// (no rVFC in this browser, or none for an element that is not composited) counts a frame
// when its decoded-frame counter moves, read by a 100 ms page timer.
const FRAME_POLL_MS = 100;
const FRAME_STALL_MS = 250;
const frameMon = { timer: null, resetAt: 0, peers: new Map(), watchers: [], watched: new WeakSet(), lastTick: null, maxTickGap: 0, tickGapFrom: null, stalls: [], longTasks: [] };

function frameMonPeer(id) {
  let r = frameMon.peers.get(id);
  if (!r) {
    r = { frames: 0, first: null, last: null, maxGap: 0, gapFrom: null, gapTo: null, gapPath: null, paths: { mesh: { frames: 0, rvfc: 0, poll: 0 }, sfu: { frames: 0, rvfc: 0, poll: 0 } } };
    frameMon.peers.set(id, r);
  }
  return r;
}

function noteFrame(id, path, at, via) {
  const r = frameMonPeer(id);
  r.frames++;
  r.paths[path].frames++;
  r.paths[path][via]++;
  if (r.last === null) {
    r.first = at;
    r.last = at;
    return;
  }
  if (at <= r.last) return;
  const from = Math.max(r.last, frameMon.resetAt);
  if (at - from > r.maxGap) {
    r.maxGap = at - from;
    r.gapFrom = from;
    r.gapTo = at;
    r.gapPath = path;
  }
  r.last = at;
}

function decodedCount(v) {
  try {
    const q = v.getVideoPlaybackQuality && v.getVideoPlaybackQuality();
    if (q && typeof q.totalVideoFrames === 'number') return q.totalVideoFrames - (q.droppedVideoFrames || 0);
  } catch {
    // fall through
  }
  return typeof v.webkitDecodedFrameCount === 'number' ? v.webkitDecodedFrameCount : 0;
}

function watchVideo(id, path, v) {
  frameMon.watched.add(v);
  const w = { id, path, v, count: decodedCount(v), rvfcSeen: false };
  frameMon.watchers.push(w);
  if (typeof v.requestVideoFrameCallback === 'function') {
    const onFrame = (now, meta) => {
      w.rvfcSeen = true;
      noteFrame(id, path, meta && typeof meta.presentationTime === 'number' ? meta.presentationTime : now, 'rvfc');
      if (v.isConnected) v.requestVideoFrameCallback(onFrame);
    };
    v.requestVideoFrameCallback(onFrame);
  }
}

function frameMonTick() {
  // How late the page's own timer runs: a page that did not run for a while could not
  // present frames either (CPU starvation of this renderer, not a gap in the media).
  const t = performance.now();
  if (frameMon.lastTick !== null) {
    const from = Math.max(frameMon.lastTick, frameMon.resetAt);
    if (t - from > frameMon.maxTickGap) {
      frameMon.maxTickGap = t - from;
      frameMon.tickGapFrom = from;
    }
    if (t - frameMon.lastTick > FRAME_STALL_MS) {
      frameMon.stalls.push([frameMon.lastTick, t]);
      if (frameMon.stalls.length > 200) frameMon.stalls.shift();
    }
  }
  frameMon.lastTick = t;
  for (const e of state.peers.values()) {
    for (const [path, v] of Object.entries(e.tile.videos)) if (!frameMon.watched.has(v)) watchVideo(e.id, path, v);
  }
  const now = performance.now();
  frameMon.watchers = frameMon.watchers.filter((w) => w.v.isConnected);
  for (const w of frameMon.watchers) {
    const c = decodedCount(w.v);
    if (c !== w.count) {
      w.count = c;
      if (c > 0 && !w.rvfcSeen) noteFrame(w.id, w.path, now, 'poll');
    }
  }
}

/** See frameMon. `reset`: forget the gaps so far (and start measuring now). */
function frameGaps({ reset = false } = {}) {
  if (!frameMon.timer) {
    frameMon.timer = setInterval(frameMonTick, FRAME_POLL_MS);
    frameMonTick();
    // Tasks of over 50 ms on the page's main thread (its own script, or a call into the
    // browser that blocked it): a stall they fill was the page busy, a stall they do not
    // fill was the page not getting the CPU at all.
    try {
      new PerformanceObserver((list) => {
        for (const e of list.getEntries()) frameMon.longTasks.push([e.startTime, e.startTime + e.duration]);
        if (frameMon.longTasks.length > 200) frameMon.longTasks.splice(0, frameMon.longTasks.length - 200);
      }).observe({ type: 'longtask', buffered: false });
    } catch {
      // no long-task timing in this browser
    }
  }
  const now = performance.now();
  if (reset) {
    frameMon.resetAt = now;
    frameMon.maxTickGap = 0;
    frameMon.tickGapFrom = null;
    frameMon.stalls = [];
    frameMon.longTasks = [];
    for (const r of frameMon.peers.values()) {
      r.maxGap = 0;
      r.gapFrom = null;
      r.gapTo = null;
      r.gapPath = null;
    }
  }
  const wall = (t) => (t === null ? null : new Date(performance.timeOrigin + t).toISOString());
  // How much of [a, b] the page's own timer did not run (stalls over FRAME_STALL_MS).
  const overlap = (spans, a, b) => (a === null ? 0 : spans.reduce((n, [x, y]) => n + Math.max(0, Math.min(b, y) - Math.max(a, x)), 0));
  const stalledIn = (a, b) => overlap(frameMon.stalls, a, b);
  const peers = {};
  for (const [id, r] of frameMon.peers) {
    const e = state.peers.get(id);
    peers[id] = {
      name: e ? e.name : null,
      present: !!e,
      frames: r.frames,
      maxGap: Math.round(r.maxGap),
      gapFrom: wall(r.gapFrom),
      gapPath: r.gapPath,
      // Of the largest gap, the time this page's own timer did not run either (CPU).
      gapPageStalled: Math.round(stalledIn(r.gapFrom, r.gapTo)),
      // Since the last frame (or the reset, if later): a gap still open.
      sinceLast: r.last === null ? null : Math.round(now - Math.max(r.last, frameMon.resetAt)),
      paths: { mesh: { ...r.paths.mesh }, sfu: { ...r.paths.sfu } },
    };
  }
  return {
    rvfc: typeof HTMLVideoElement.prototype.requestVideoFrameCallback === 'function',
    resetAt: wall(frameMon.resetAt || null),
    // The largest interval between two runs of the page's 100 ms timer since the reset.
    // `busy`: ms of it the page's main thread spent in long tasks (the rest it did not run).
    pageStall: {
      max: Math.round(frameMon.maxTickGap),
      from: wall(frameMon.tickGapFrom),
      busy: Math.round(overlap(frameMon.longTasks, frameMon.tickGapFrom, frameMon.tickGapFrom === null ? null : frameMon.tickGapFrom + frameMon.maxTickGap)),
      longestTask: Math.round(frameMon.longTasks.reduce((m, [x, y]) => Math.max(m, y - x), 0)),
    },
    peers,
  };
}

// ---------------------------------------------------------------- debug hook

function plain(x) {
  return x === undefined ? undefined : JSON.parse(JSON.stringify(x));
}

const debugHook = {
  get id() {
    return state.id;
  },
  get room() {
    return state.room;
  },
  get name() {
    return state.name;
  },
  get view() {
    return state.view;
  },
  get relayOnly() {
    return state.relayOnly;
  },
  get signaling() {
    return state.sig ? state.sig.state : 'idle';
  },
  get lang() {
    return getLang();
  },
  get reconnects() {
    return state.sig ? state.sig.reconnects : 0;
  },
  get signalingRtt() {
    return state.sig ? state.sig.rtt : null;
  },
  /** The local capture: {audio, video, screen} as {id, label, enabled} or null. */
  localTracks() {
    const m = state.media;
    const info = (tr) => (tr ? { id: tr.id, label: tr.label, enabled: tr.enabled } : null);
    return m ? { audio: info(m.audio), video: info(m.camera), screen: info(m.screen) } : null;
  },
  /** The ICE server URLs from welcome (credentials left out). */
  iceServerUrls() {
    return state.iceServers.flatMap((s) => [].concat(s.urls || s.url || []));
  },
  /** The room's mode: "mesh" or "sfu". */
  get mode() {
    return state.mode;
  },
  /** A mode switch waiting for video on the new path: {to, since}, else null. */
  get transition() {
    return state.transition ? { ...state.transition } : null;
  },
  /** The active speaker's peer id (from `speaker`), or null. */
  get speaker() {
    return state.speaker;
  },
  /** The last `sfu-stats` message: {bitrate, layers, rtt, at}, or null. */
  get sfuStats() {
    return state.sfuStats ? plain(state.sfuStats) : null;
  },
  /** The SFU connection: {connectionState, iceConnectionState, signalingState, dataChannel, path} or null. */
  get sfu() {
    const s = state.sfu;
    if (!s) return null;
    return {
      connectionState: s.pc.connectionState,
      iceConnectionState: s.pc.iceConnectionState,
      signalingState: s.pc.signalingState,
      dataChannel: s.dc ? s.dc.readyState : null,
      path: state.sfuSummary ? plain(state.sfuSummary.path) : { kind: 'none' },
      repairs: { ...s.repairs },
      // m-lines of the session (docs/sfu.md: reused for new publishers, so bounded by the
      // most people present at once).
      mlines: s.pc.remoteDescription ? (s.pc.remoteDescription.sdp.match(/\r\nm=/g) || []).length : 0,
    };
  },
  /**
   * The server's state of this participant's SFU session (GET /api/rooms/{room}/sfu),
   * fetched now: {negotiation, subscriptions: [...]} or null outside SFU mode.
   */
  async subscriptions() {
    const st = await fetchSfuState();
    return st && st.me ? plain({ negotiation: st.me.negotiation, subscriptions: [...st.subs.values()] }) : null;
  },
  /** The last `view` sent: [{peer, width, height}] (null before any), and how many were sent. */
  get lastView() {
    return { tiles: state.tileView.last ? plain(state.tileView.last) : null, sent: state.tileView.sent };
  },
  /** Data-channel messages received: [{from, data, at}]. */
  dataLog() {
    return state.dataLog.map((m) => ({ ...m }));
  },
  /** Sends text on the "tsunagi" data channel (SFU, or every mesh peer); false when no channel is open. */
  sendData(text) {
    return sendData(text);
  },
  /**
   * Inbound video per remote peer, refreshed every second: {peerId: {path, mesh, sfu}}
   * where `path` is what the tile shows ("mesh" | "sfu") and mesh/sfu are
   * {framesDecoded, frameWidth, frameHeight, fps, liveAt} or null.
   */
  inboundVideo() {
    const out = {};
    for (const e of state.peers.values()) out[e.id] = { path: e.source, mesh: plain(e.video.mesh) ?? null, sfu: plain(e.video.sfu) ?? null };
    return out;
  },
  /** The same, read from getStats() now (not the cached once-a-second values). */
  async videoNow() {
    const out = {};
    for (const e of state.peers.values()) out[e.id] = { path: e.source, mesh: null, sfu: null };
    await Promise.all(
      [...state.peers.values()].filter((e) => e.peer).map(async (e) => {
        const r = await e.peer.getStats().catch(() => null);
        if (!r) return;
        for (const s of r.values()) {
          if (s.type === 'inbound-rtp' && s.kind === 'video') out[e.id].mesh = { framesDecoded: s.framesDecoded || 0, frameWidth: s.frameWidth || 0, frameHeight: s.frameHeight || 0 };
        }
      }),
    );
    if (state.sfu) {
      const sfu = state.sfu;
      const r = await sfu.getStats().catch(() => null);
      if (r) {
        for (const [owner, v] of sfuVideoByPeer(sfu, r)) {
          if (out[owner]) out[owner].sfu = { framesDecoded: v.framesDecoded, frameWidth: v.width, frameHeight: v.height };
        }
      }
    }
    return out;
  },
  peers() {
    return [...state.peers.values()].map((e) => {
      const conn = connOf(e);
      const pc = conn ? conn.pc : null;
      return {
        id: e.id,
        name: e.name,
        media: { ...e.media },
        external: e.external,
        source: e.source,
        mesh: !!e.peer,
        hand: e.hand,
        polite: e.peer ? e.peer.polite : false,
        initiator: e.peer ? e.peer.initiator : false,
        connectionState: pc ? pc.connectionState : 'new',
        iceConnectionState: pc ? pc.iceConnectionState : 'new',
        signalingState: pc ? pc.signalingState : 'stable',
        path: conn === state.sfu ? (state.sfuSummary ? plain(state.sfuSummary.path) : { kind: 'none' }) : e.summary ? plain(e.summary.path) : { kind: 'none' },
      };
    });
  },
  /** The latest stats summary of one peer (see stats.js), refreshed every second. */
  stats(peerId) {
    if (peerId === 'sfu') return state.sfuSummary ? plain(state.sfuSummary) : null;
    const e = state.peers.get(peerId);
    if (e && connOf(e) === state.sfu && state.sfu) return state.sfuSummary ? plain(state.sfuSummary) : null;
    return e && e.summary ? plain(e.summary) : null;
  },
  /**
   * The raw getStats() report of the connection that carries one peer now, as an array
   * of plain objects. Through the SFU ("sfu" for the whole report), the inbound-rtp
   * entries of other publishers are left out.
   */
  async rawStats(peerId) {
    if (peerId === 'sfu') {
      if (!state.sfu) return null;
      const r = await state.sfu.getStats();
      return [...r.values()].map((s) => ({ ...s }));
    }
    const e = state.peers.get(peerId);
    if (!e) return null;
    const conn = connOf(e);
    if (!conn) return null;
    const r = await conn.getStats();
    const all = [...r.values()].map((s) => ({ ...s }));
    if (conn !== state.sfu) return all;
    return all.filter((s) => s.type !== 'inbound-rtp' || conn.ownerOfStat(s) === peerId);
  },
  timeline(peerId) {
    if (peerId === 'sfu') return state.sfu ? plain(state.sfu.timeline) : null;
    const e = state.peers.get(peerId);
    const conn = connOf(e);
    return conn ? plain(conn.timeline) : null;
  },
  chatLog() {
    return state.chat.map((m) => ({ ...m }));
  },
  errors() {
    return state.errors.map((m) => ({ ...m }));
  },
  /** Every signaling frame sent or received: {dir, type, from?, to?, code?, reason?, at}. */
  signalLog() {
    return state.traffic.map((m) => ({ ...m }));
  },
  /**
   * Presented-frame gaps per remote peer, measured in the page (see frameMon; started by
   * the first call): {rvfc, resetAt, pageStall: {max (ms), from, busy (ms of it in long
   * tasks), longestTask (ms)}, peers: {peerId: {name,
   * present, frames, maxGap (ms), gapFrom, gapPath, gapPageStalled (ms of the gap this
   * page's own timer did not run), sinceLast (ms), paths: {mesh, sfu}: {frames, rvfc, poll}}}}.
   * `{reset: true}` forgets the gaps so far.
   */
  frameGaps(opts) {
    return frameGaps(opts || {});
  },
};
Object.defineProperty(window, 'tsunagi', { value: Object.freeze(debugHook), writable: false, configurable: false });

// ---------------------------------------------------------------- start

function init() {
  buildHeader();
  applyI18n(document);
  onLangChange(() => {
    $('#lang-select').value = getLang();
    for (const e of state.peers.values()) {
      updateTile(e);
      if (e.panel) e.panel.build();
    }
    if (state.view === 'call') {
      renderSelfTile();
      updateControls();
      renderMode();
    }
    for (const li of document.querySelectorAll('#chat-list .chat-msg.self .chat-name')) {
      li.textContent = t('tile.you', { name: state.name });
    }
  });

  $('#landing-form').addEventListener('submit', onLandingSubmit);
  $('#suggest-room').addEventListener('click', () => {
    $('#room-input').value = suggestRoom();
    $('#room-input').focus();
  });
  $('#btn-mic').addEventListener('click', toggleMic);
  $('#btn-cam').addEventListener('click', toggleCam);
  $('#btn-screen').addEventListener('click', toggleScreen);
  $('#btn-devices').addEventListener('click', openDevices);
  $('#relay-switch').addEventListener('change', (ev) => setRelayOnly(ev.target.checked));
  $('#btn-chat').addEventListener('click', () => setChatOpen(!state.chatOpen));
  $('#chat-close').addEventListener('click', () => setChatOpen(false));
  $('#btn-leave').addEventListener('click', () => leaveCall());
  $('#chat-form').addEventListener('submit', onChatSubmit);
  $('#camera-select').addEventListener('change', (ev) => switchDevice('video', ev.target.value));
  $('#mic-select').addEventListener('change', (ev) => switchDevice('audio', ev.target.value));
  $('#devices-close').addEventListener('click', () => $('#devices-dialog').close());
  $('#unmute-all').addEventListener('click', () => {
    state.soundBlocked = false;
    for (const e of state.peers.values()) {
      applySource(e);
      e.tile.video.play().catch(() => {});
    }
    $('#unmute-all').hidden = true;
  });
  $('#btn-hand').addEventListener('click', toggleHand);
  document.addEventListener('visibilitychange', () => scheduleView());
  document.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape' && state.openPanel && !$('#devices-dialog').open) closePanel(true);
  });
  // Closing the tab: say goodbye so the others drop our tile at once.
  window.addEventListener('pagehide', () => {
    if (state.sig) state.sig.leave();
  });
  window.addEventListener('popstate', () => {
    const room = roomFromPath();
    if (state.view === 'call' && room !== state.room) {
      leaveCall({ silent: true });
      showLanding({ room });
    }
  });

  const params = new URLSearchParams(location.search);
  state.token = params.get('token') || null;
  if (state.token) $('#token-input').value = state.token;
  // ?mode=auto|mesh|sfu: the policy of the room if this join creates it (docs/signaling.md).
  const mode = params.get('mode');
  if (['auto', 'mesh', 'sfu'].includes(mode)) state.joinMode = mode;
  if (params.get('relay') === '1') {
    state.relayOnly = true;
    $('#relay-start').checked = true;
  }
  state.chatOpen = window.matchMedia('(min-width: 900px)').matches;
  setChatOpen(state.chatOpen);
  setSigState('idle');

  const room = roomFromPath();
  const name = params.get('name') || loadName();
  if (room && ROOM_RE.test(room) && name) {
    $('#name-input').value = name;
    joinRoom({ room, name, token: state.token });
  } else {
    showLanding({ room: room || undefined });
  }
}

init();
