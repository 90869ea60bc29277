// The landing page: the form to start or join a call (name, room, token, relay only),
// the name remembered from last time, and a suggested room name.

import { t, applyI18n } from './i18n.js';
import { $ } from './dom.js';
import { setView } from './state.js';

const NAME_KEY = 'tsunagi.name';
/** What the server accepts as a room name. */
export const ROOM_RE = /^[A-Za-z0-9_-]{1,64}$/;

const ADJECTIVES = ['amber', 'brave', 'calm', 'clever', 'cosmic', 'gentle', 'golden', 'happy', 'quiet', 'rapid', 'silver', 'sunny', 'swift', 'misty', 'bright', 'lucky'];
const NOUNS = ['river', 'maple', 'harbor', 'lantern', 'meadow', 'comet', 'falcon', 'garden', 'island', 'pebble', 'otter', 'cedar', 'bamboo', 'summit', 'breeze', 'koi'];

const nameInput = () => /** @type {HTMLInputElement} */ ($('#name-input'));
const roomInput = () => /** @type {HTMLInputElement} */ ($('#room-input'));

/** The name used last time on this browser, or ''. */
export function loadName() {
  try {
    return localStorage.getItem(NAME_KEY) || '';
  } catch {
    return '';
  }
}

function saveName(/** @type {string} */ name) {
  try {
    localStorage.setItem(NAME_KEY, name);
  } catch {
    // Not remembered; nothing else depends on it.
  }
}

/** A room name like "swift-otter-42". */
export function suggestRoom() {
  const pick = (/** @type {string[]} */ a) => a[Math.floor(Math.random() * a.length)];
  return `${pick(ADJECTIVES)}-${pick(NOUNS)}-${10 + Math.floor(Math.random() * 90)}`;
}

/** The room of a /r/{room} address, or null. */
export function roomFromPath() {
  const m = /^\/r\/([^/]+)\/?$/.exec(location.pathname);
  if (!m) return null;
  try {
    return decodeURIComponent(m[1]);
  } catch {
    return null;
  }
}

/**
 * Shows the landing page; `room` fills the room field, `message` says why we are here.
 * @param {{room?: string|null, message?: string}} [o]
 */
export function showLanding({ room, message } = {}) {
  setView('landing');
  document.body.dataset.view = 'landing';
  $('#landing').hidden = false;
  $('#call').hidden = true;
  $('#room-badge').hidden = true;
  const name = nameInput();
  name.value = name.value || loadName();
  roomInput().value = room || roomInput().value || suggestRoom();
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
  (name.value ? $('#join-btn') : name).focus();
}

/**
 * Says on the landing page why a join failed; `code` goes to data-code for tests.
 * @param {string} code
 */
export function setLandingErrorCode(code) {
  $('#landing-error').dataset.code = code;
}

/** @param {boolean} busy */
export function setJoinBusy(busy) {
  const btn = /** @type {HTMLButtonElement} */ ($('#join-btn'));
  btn.disabled = busy;
  btn.dataset.i18n = busy ? 'landing.joining' : 'landing.join';
  btn.textContent = t(btn.dataset.i18n);
}

/**
 * The form's values, or null (and the reason shown) when the name is missing or the
 * room name is not one the server accepts. Remembers the name.
 * @returns {{name: string, room: string, token: string, relayOnly: boolean}|null}
 */
export function readLandingForm() {
  const name = nameInput().value.trim();
  const room = roomInput().value.trim();
  const token = /** @type {HTMLInputElement} */ ($('#token-input')).value.trim();
  const msg = $('#landing-error');
  if (!name) {
    msg.textContent = t('landing.nameRequired');
    msg.hidden = false;
    nameInput().focus();
    return null;
  }
  if (!ROOM_RE.test(room)) {
    msg.textContent = t('landing.roomInvalid');
    msg.hidden = false;
    roomInput().focus();
    return null;
  }
  saveName(name);
  return { name, room, token, relayOnly: /** @type {HTMLInputElement} */ ($('#relay-start')).checked };
}
