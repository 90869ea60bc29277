// The call's controls: microphone, camera, screen share, devices, "relay only", the
// raised hand, and the `media` message that tells the others what we send.

import { t } from './i18n.js';
import { $, h, icons } from './dom.js';
import { notify } from './notices.js';
import { handMessage, sendData } from './datachannel.js';
import { renderSelfTile } from './tiles.js';
import { call, canPublish, hasTurn, setHandUp, setRelayOnly } from './state.js';

/** @typedef {import('./media.js').LocalMedia} LocalMedia */

/** The local media of the call (the controls exist only in a call, which has it). */
const media = () => /** @type {LocalMedia} */ (call.media);

/** Tells the others what we send (`media`: audio, video, screen). */
export function sendMediaState() {
  const sig = call.sig;
  const m = call.media;
  if (!sig || !m) return;
  if (!canPublish()) {
    sig.send({ type: 'media', audio: false, video: false, screen: false });
    return;
  }
  sig.send({
    type: 'media',
    audio: !!m.audio && m.audioEnabled,
    video: (!!m.camera && m.videoEnabled) || !!m.screen,
    screen: !!m.screen,
  });
}

/**
 * @param {HTMLElement} btn
 * @param {boolean} pressed
 * @param {string} labelKey
 * @param {keyof typeof icons} icon
 */
function setToggle(btn, pressed, labelKey, icon) {
  btn.setAttribute('aria-pressed', String(pressed));
  btn.setAttribute('aria-label', t(labelKey));
  btn.title = t(labelKey);
  btn.dataset.i18nAttr = `aria-label:${labelKey};title:${labelKey}`;
  /** @type {HTMLElement} */ (btn.querySelector('.icon')).innerHTML = icons[icon];
}

/** Brings every control (and our tile) in line with the local media and the call. */
export function updateControls() {
  const m = call.media;
  if (!m) return;
  const micOn = !!m.audio && m.audioEnabled;
  const camOn = !!m.camera && m.videoEnabled;
  const mic = /** @type {HTMLButtonElement} */ ($('#btn-mic'));
  setToggle(mic, !micOn, micOn ? 'ctl.mute' : 'ctl.unmute', micOn ? 'mic' : 'micOff');
  mic.disabled = !m.audio || !canPublish();
  mic.classList.toggle('off', !micOn);
  const cam = /** @type {HTMLButtonElement} */ ($('#btn-cam'));
  setToggle(cam, !camOn, camOn ? 'ctl.camOff' : 'ctl.camOn', camOn ? 'cam' : 'camOff');
  cam.disabled = !m.camera || !canPublish();
  cam.classList.toggle('off', !camOn);
  const scr = /** @type {HTMLButtonElement} */ ($('#btn-screen'));
  setToggle(scr, !!m.screen, m.screen ? 'ctl.stopShare' : 'ctl.share', 'screen');
  scr.disabled = !(navigator.mediaDevices && 'getDisplayMedia' in navigator.mediaDevices) || !canPublish();
  scr.classList.toggle('active', !!m.screen);
  const relay = /** @type {HTMLInputElement} */ ($('#relay-switch'));
  relay.checked = call.relayOnly;
  $('#btn-chat').setAttribute('aria-pressed', String(call.chatOpen));
  $('#btn-chat').setAttribute('aria-expanded', String(call.chatOpen));
  const hand = $('#btn-hand');
  hand.setAttribute('aria-pressed', String(call.handUp));
  hand.classList.toggle('active', call.handUp);
  const handKey = call.handUp ? 'ctl.handDown' : 'ctl.handUp';
  hand.setAttribute('aria-label', t(handKey));
  hand.title = t(handKey);
  hand.dataset.i18nAttr = `aria-label:${handKey};title:${handKey}`;
  renderSelfTile();
}

export function toggleMic() {
  const m = media();
  if (!m.audio) return;
  m.setAudioEnabled(!m.audioEnabled);
  updateControls();
  sendMediaState();
}

export function toggleCam() {
  const m = media();
  if (!m.camera) return;
  m.setVideoEnabled(!m.videoEnabled);
  updateControls();
  sendMediaState();
}

export function toggleHand() {
  setHandUp(!call.handUp);
  sendData(handMessage());
  updateControls();
}

/**
 * Swaps an outgoing track on every connection: the mesh peers and the SFU (no renegotiation).
 * @param {'audio'|'video'} kind
 * @param {MediaStreamTrack|null} track
 */
function replaceEverywhere(kind, track) {
  /** @type {(import('./peer.js').Peer|import('./sfu.js').SfuPeer)[]} */
  const conns = [];
  for (const e of call.peers.values()) if (e.peer) conns.push(e.peer);
  if (call.sfu) conns.push(call.sfu);
  return Promise.all(conns.map((c) => c.replaceTrack(kind, track)));
}

export async function toggleScreen() {
  const m = media();
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
    notify(t('notice.screenFailed', { reason: errorName(e) }), { kind: 'warn', code: 'screen-failed' });
    return;
  }
  updateControls();
  sendMediaState();
}

async function stopScreen() {
  const m = media();
  m.stopScreen();
  updateControls();
  await replaceEverywhere('video', m.camera);
  updateControls();
  sendMediaState();
}

/** The name of a failure (a DOMException's, e.g. NotAllowedError), else its text. */
function errorName(/** @type {unknown} */ e) {
  return (e instanceof Error && e.name) || String(e);
}

/**
 * "Relay only" on or off: every connection (mesh and SFU) is replaced with the new policy.
 * @param {boolean} on
 */
export function switchRelayOnly(on) {
  if (call.relayOnly === on) return;
  setRelayOnly(on);
  for (const e of call.peers.values()) if (e.peer) e.peer.setRelayOnly(on);
  if (call.sfu) call.sfu.setRelayOnly(on);
  notify(t(on ? 'notice.relayOn' : 'notice.relayOff'), { kind: 'info', code: on ? 'relay-on' : 'relay-off', timeout: 3500 });
  if (on && !hasTurn()) notify(t('notice.noTurn'), { kind: 'warn', code: 'no-turn' });
  updateControls();
}

/** The devices dialog: a camera and a microphone to choose from. */
export async function openDevices() {
  const dlg = /** @type {HTMLDialogElement} */ ($('#devices-dialog'));
  const m = media();
  const list = await m.devices();
  /**
   * @param {HTMLSelectElement} sel
   * @param {'audio'|'video'} kind
   * @param {MediaDeviceKind} devKind
   * @param {string|undefined} current
   */
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
  fill(/** @type {HTMLSelectElement} */ ($('#camera-select')), 'video', 'videoinput', m.currentDeviceId('video'));
  fill(/** @type {HTMLSelectElement} */ ($('#mic-select')), 'audio', 'audioinput', m.currentDeviceId('audio'));
  dlg.showModal();
}

/**
 * Another camera or microphone, chosen in the devices dialog.
 * @param {'audio'|'video'} kind
 * @param {string} deviceId
 */
export async function switchDevice(kind, deviceId) {
  if (!deviceId) return;
  try {
    const track = await media().switchDevice(kind, deviceId);
    // While sharing the screen, the camera change shows when the share ends.
    if (kind === 'audio' || !media().screen) {
      await replaceEverywhere(kind, track);
    }
    renderSelfTile();
  } catch (e) {
    notify(t('notice.deviceFailed', { reason: errorName(e) }), { kind: 'warn', code: 'device-failed' });
  }
}
