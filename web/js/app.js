// tsunagi web client: landing page, call view, mesh of peer connections, chat,
// connection panels, and the read-only debug hook `window.tsunagi` for tests.

import { t, setLang, getLang, applyI18n, onLangChange, LANGUAGES, formatTime } from './i18n.js';
import { Signaling } from './signaling.js';
import { Peer } from './peer.js';
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
  peers: new Map(), // id -> entry {id, name, media, peer, tile, panel, summary}
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
  notify(errorText(err), { kind: 'error', code: err.code, timeout: 9000 });
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
    welcome = await sig.join({ room, name, token: state.token });
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
  for (const p of welcome.peers || []) addPeer(p, { initiator: true });
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
      break;
    }
    case 'peer-left': {
      const e = state.peers.get(msg.id);
      if (!e) return;
      removePeer(msg.id);
      const key = msg.reason === 'timeout' ? 'notice.timeout' : msg.reason === 'kicked' ? 'notice.kicked' : 'notice.left';
      notify(t(key, { name: e.name }), { kind: 'info', code: 'peer-left', timeout: 3000 });
      break;
    }
    case 'offer':
    case 'answer': {
      let e = state.peers.get(msg.from);
      if (!e) e = addPeer({ id: msg.from, name: msg.from }, { initiator: false });
      e.peer.handleDescription(msg.type, msg.sdp);
      break;
    }
    case 'candidate': {
      const e = state.peers.get(msg.from);
      if (e) e.peer.handleCandidate(msg.candidate);
      break;
    }
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

function addPeer(p, { initiator }) {
  const peer = new Peer({
    id: p.id,
    selfId: state.id,
    initiator,
    config: rtcConfig(),
    send: (m) => state.sig && state.sig.send(m),
    // A token without publish rights (canPublish: false) receives only.
    localTracks: () =>
      canPublish()
        ? { audio: state.media.audio, video: state.media.outgoingVideo(), stream: state.media.stream }
        : { audio: null, video: null, stream: state.media.stream },
  });
  const entry = {
    id: p.id,
    name: p.name || p.id,
    media: p.media ? { audio: p.media.audio !== false, video: p.media.video !== false, screen: !!p.media.screen } : { audio: true, video: true, screen: false },
    peer,
    tile: null,
    panel: null,
    summary: null,
    selectedPairKey: null,
    joinedAt: Date.now(),
  };
  state.peers.set(p.id, entry);
  entry.tile = buildRemoteTile(entry);
  $('#grid').append(entry.tile.el);
  peer.on('track', ({ stream }) => {
    const v = entry.tile.video;
    if (v.srcObject !== stream) v.srcObject = stream;
    playVideo(v);
  });
  peer.on('state', () => updateTile(entry));
  updateTile(entry);
  layoutGrid();
  return entry;
}

function removePeer(id) {
  const e = state.peers.get(id);
  if (!e) return;
  state.peers.delete(id);
  if (state.openPanel === id) closePanel();
  e.peer.close();
  e.tile.video.srcObject = null;
  e.tile.el.remove();
  layoutGrid();
}

async function playVideo(v) {
  try {
    await v.play();
  } catch (e) {
    if (e && e.name === 'NotAllowedError' && !v.muted) {
      // Autoplay with sound needs a user gesture: play muted and offer to unmute.
      v.muted = true;
      v.play().catch(() => {});
      $('#unmute-all').hidden = false;
    }
  }
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
      ),
    );
    $('#grid').prepend(tile);
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
}

function initials(name) {
  const s = String(name || '?').trim();
  return s ? [...s][0].toUpperCase() : '?';
}

function buildRemoteTile(entry) {
  const video = h('video', { autoplay: true, playsinline: true, 'aria-label': t('tile.videoOf', { name: entry.name }) });
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
  const el = h(
    'article',
    { class: 'tile tile-remote', testid: `tile-${entry.id}`, dataset: { peerId: entry.id } },
    h(
      'div',
      { class: 'tile-media' },
      video,
      h('div', { class: 'tile-placeholder' }, h('span', { class: 'avatar', testid: 'avatar' }, initials(entry.name))),
      h('div', { class: 'tile-status', testid: 'tile-status' }),
      h(
        'div',
        { class: 'tile-bar' },
        h('span', { class: 'tile-name', testid: 'tile-name' }, entry.name),
        h('span', { class: 'badge badge-mic', testid: 'badge-mic-off', hidden: true }, iconEl('micOff')),
        h('span', { class: 'badge badge-cam', testid: 'badge-cam-off', hidden: true }, iconEl('camOff')),
        h('span', { class: 'badge badge-screen', testid: 'badge-screen', hidden: true }, iconEl('screen')),
        chip,
      ),
      toggle,
    ),
  );
  return { el, video, toggle, chip };
}

function updateTile(e) {
  const { el, toggle, chip } = e.tile;
  const pc = e.peer.pc;
  el.dataset.connection = pc.connectionState;
  el.classList.toggle('no-video', !e.media.video && !e.media.screen);
  const mic = el.querySelector('.badge-mic');
  mic.hidden = e.media.audio;
  mic.title = t('tile.micOff');
  mic.setAttribute('aria-label', t('tile.micOff'));
  const cam = el.querySelector('.badge-cam');
  cam.hidden = e.media.video || e.media.screen;
  cam.title = t('tile.camOff');
  cam.setAttribute('aria-label', t('tile.camOff'));
  const scr = el.querySelector('.badge-screen');
  scr.hidden = !e.media.screen;
  scr.title = t('tile.screen');
  scr.setAttribute('aria-label', t('tile.screen'));
  const open = state.openPanel === e.id;
  toggle.setAttribute('aria-expanded', String(open));
  const label = t(open ? 'tile.hidePanel' : 'tile.showPanel', { name: e.name });
  toggle.setAttribute('aria-label', label);
  toggle.title = label;
  e.tile.video.setAttribute('aria-label', t('tile.videoOf', { name: e.name }));
  const path = e.summary ? e.summary.path : { kind: 'none' };
  chip.dataset.path = path.kind;
  chip.textContent = pathLabel(path);
  const status = el.querySelector('.tile-status');
  const connected = pc.connectionState === 'connected';
  status.hidden = connected;
  status.textContent = connected ? '' : `${t('tile.connecting')} (${pc.connectionState})`;
}

function layoutGrid() {
  const grid = $('#grid');
  const n = grid.querySelectorAll('.tile').length;
  grid.dataset.count = String(n);
  grid.classList.toggle('has-expanded', !!state.openPanel);
}

// ---------------------------------------------------------------- connection panel

function togglePanel(id) {
  if (state.openPanel === id) closePanel();
  else openPanel(id);
}

function openPanel(id) {
  if (state.openPanel) closePanel();
  const e = state.peers.get(id);
  if (!e) return;
  state.openPanel = id;
  e.panel = new ConnPanel({ peer: e.peer, name: () => e.name, onClose: () => closePanel(true) });
  e.peer.summary = e.summary;
  e.panel.update(e.summary);
  e.tile.el.classList.add('expanded');
  e.tile.el.append(e.panel.el);
  updateTile(e);
  layoutGrid();
  e.panel.closeBtn.focus();
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

async function pollStats() {
  for (const e of state.peers.values()) {
    if (e.peer.closed) continue;
    let report;
    try {
      report = await e.peer.getStats();
    } catch {
      continue;
    }
    const s = summarize(report, e.summary);
    e.summary = s;
    e.peer.summary = s;
    const key = s.pair && s.pair.local && s.pair.remote ? `${s.pair.local.id}|${s.pair.remote.id}` : null;
    if (key && key !== e.selectedPairKey && s.pair.state === 'succeeded') {
      e.selectedPairKey = key;
      e.peer.log({
        dir: 'state',
        kind: 'selected',
        label: pathLabel(s.path),
        local: `${s.pair.local.type} ${s.pair.local.address}:${s.pair.local.port}`,
        remote: `${s.pair.remote.type} ${s.pair.remote.address}:${s.pair.remote.port}`,
      });
    }
    updateTile(e);
    if (e.panel) e.panel.update(s);
  }
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

async function toggleScreen() {
  const m = state.media;
  if (m.screen) {
    stopScreen();
    return;
  }
  try {
    const track = await m.startScreen(() => stopScreen());
    await Promise.all([...state.peers.values()].map((e) => e.peer.replaceTrack('video', track)));
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
  await Promise.all([...state.peers.values()].map((e) => e.peer.replaceTrack('video', m.camera)));
  updateControls();
  sendMediaState();
}

function setRelayOnly(on) {
  if (state.relayOnly === on) return;
  state.relayOnly = on;
  for (const e of state.peers.values()) e.peer.setRelayOnly(on);
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
      await Promise.all([...state.peers.values()].map((e) => e.peer.replaceTrack(kind, track)));
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
  if (!silent) {
    history.pushState({}, '', '/');
    showLanding();
    notify(t('notice.left.self'), { kind: 'info', code: 'left' });
  }
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
  peers() {
    return [...state.peers.values()].map((e) => ({
      id: e.id,
      name: e.name,
      media: { ...e.media },
      polite: e.peer.polite,
      initiator: e.peer.initiator,
      connectionState: e.peer.pc.connectionState,
      iceConnectionState: e.peer.pc.iceConnectionState,
      signalingState: e.peer.pc.signalingState,
      path: e.summary ? plain(e.summary.path) : { kind: 'none' },
    }));
  },
  /** The latest stats summary of one peer (see stats.js), refreshed every second. */
  stats(peerId) {
    const e = state.peers.get(peerId);
    return e && e.summary ? plain(e.summary) : null;
  },
  /** The raw getStats() report of one peer, as an array of plain objects. */
  async rawStats(peerId) {
    const e = state.peers.get(peerId);
    if (!e) return null;
    const r = await e.peer.getStats();
    return [...r.values()].map((s) => ({ ...s }));
  },
  timeline(peerId) {
    const e = state.peers.get(peerId);
    return e ? plain(e.peer.timeline) : null;
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
    for (const v of document.querySelectorAll('.tile-remote video')) {
      v.muted = false;
      v.play().catch(() => {});
    }
    $('#unmute-all').hidden = true;
  });
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
