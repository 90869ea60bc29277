// The entry point of the call page (index.html): wires the page's controls to the
// modules of the client and starts on the landing page or, for /r/{room} with a known
// name, straight in the call.
//
//   state.js    the call's state (read-only `call`, changed only through its functions)
//   call.js     joining, signaling events, resuming, leaving
//   peers.js    remote peers: entries, tiles, mesh connections, the path each tile shows
//   mode.js     mesh or SFU: the SFU connection, the switch, repairs through the SFU
//   tiles.js    the video tiles and the grid;  tilepanel.js  a tile's connection panel
//   view.js     `view` messages (tile sizes) to the SFU
//   poll.js     the once-a-second stats and checks
//   controls.js mic, camera, screen, devices, relay only, hand;  chat.js  the chat
//   header.js, landing.js, notices.js, datachannel.js: what their names say

import { getLang, applyI18n, onLangChange } from './i18n.js';
import { $ } from './dom.js';
import { buildHeader, renderMode, setSigState } from './header.js';
import { ROOM_RE, loadName, readLandingForm, roomFromPath, showLanding, suggestRoom } from './landing.js';
import { joinRoom, leaveCall } from './call.js';
import { applySource } from './peers.js';
import { renderSelfTile, shownVideo, updateTile } from './tiles.js';
import { closePanel } from './tilepanel.js';
import { scheduleView } from './view.js';
import { openDevices, switchDevice, switchRelayOnly, toggleCam, toggleHand, toggleMic, toggleScreen, updateControls } from './controls.js';
import { onChatSubmit, setChatOpen, translateOwnNames } from './chat.js';
import { call, setJoinMode, setRelayOnly, setSoundBlocked, setToken } from './state.js';

/** @param {string} sel */
const input = (sel) => /** @type {HTMLInputElement} */ ($(sel));

function init() {
  buildHeader();
  applyI18n(document);
  onLangChange(() => {
    /** @type {HTMLSelectElement} */ ($('#lang-select')).value = getLang();
    for (const e of call.peers.values()) {
      updateTile(e);
      if (e.panel) e.panel.build();
    }
    if (call.view === 'call') {
      renderSelfTile();
      updateControls();
      renderMode();
    }
    translateOwnNames();
  });

  $('#landing-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const form = readLandingForm();
    if (!form) return;
    setRelayOnly(form.relayOnly);
    joinRoom({ room: form.room, name: form.name, token: form.token || call.token });
  });
  $('#suggest-room').addEventListener('click', () => {
    input('#room-input').value = suggestRoom();
    $('#room-input').focus();
  });
  $('#btn-mic').addEventListener('click', toggleMic);
  $('#btn-cam').addEventListener('click', toggleCam);
  $('#btn-screen').addEventListener('click', toggleScreen);
  $('#btn-devices').addEventListener('click', openDevices);
  $('#relay-switch').addEventListener('change', () => switchRelayOnly(input('#relay-switch').checked));
  $('#btn-chat').addEventListener('click', () => setChatOpen(!call.chatOpen));
  $('#chat-close').addEventListener('click', () => setChatOpen(false));
  $('#btn-leave').addEventListener('click', () => leaveCall());
  $('#chat-form').addEventListener('submit', onChatSubmit);
  $('#camera-select').addEventListener('change', () => switchDevice('video', input('#camera-select').value));
  $('#mic-select').addEventListener('change', () => switchDevice('audio', input('#mic-select').value));
  $('#devices-close').addEventListener('click', () => /** @type {HTMLDialogElement} */ ($('#devices-dialog')).close());
  $('#unmute-all').addEventListener('click', () => {
    setSoundBlocked(false);
    for (const e of call.peers.values()) {
      applySource(e);
      shownVideo(e).play().catch(() => {});
    }
    $('#unmute-all').hidden = true;
  });
  $('#btn-hand').addEventListener('click', toggleHand);
  document.addEventListener('visibilitychange', () => scheduleView());
  document.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape' && call.openPanel && !/** @type {HTMLDialogElement} */ ($('#devices-dialog')).open) closePanel(true);
  });
  // Closing the tab: say goodbye so the others drop our tile at once.
  window.addEventListener('pagehide', () => {
    if (call.sig) call.sig.leave();
  });
  window.addEventListener('popstate', () => {
    const room = roomFromPath();
    if (call.view === 'call' && room !== call.room) {
      leaveCall({ silent: true });
      showLanding({ room });
    }
  });

  const params = new URLSearchParams(location.search);
  setToken(params.get('token') || null);
  if (call.token) input('#token-input').value = call.token;
  // ?mode=auto|mesh|sfu: the policy of the room if this join creates it (docs/signaling.md).
  const mode = params.get('mode');
  if (mode === 'auto' || mode === 'mesh' || mode === 'sfu') setJoinMode(mode);
  if (params.get('relay') === '1') {
    setRelayOnly(true);
    input('#relay-start').checked = true;
  }
  setChatOpen(window.matchMedia('(min-width: 900px)').matches);
  setSigState('idle');

  const room = roomFromPath();
  const name = params.get('name') || loadName();
  if (room && ROOM_RE.test(room) && name) {
    input('#name-input').value = name;
    joinRoom({ room, name, token: call.token });
  } else {
    showLanding({ room: room || undefined });
  }
}

init();
