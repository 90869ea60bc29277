// The "tsunagi" data channel: text to everyone in the call (through the SFU, or on each
// mesh connection), what arrives on it, and the raised-hand message it carries.

import { t } from './i18n.js';
import { notify } from './notices.js';
import { updateTile } from './tiles.js';
import { call, logData, setPeerHand } from './state.js';

/** The message that says whether our hand is up. */
export function handMessage() {
  return JSON.stringify({ tsunagi: 'hand', up: call.handUp });
}

/**
 * Sends text on the "tsunagi" data channel: through the SFU, or to every mesh peer.
 * False when no channel is open.
 * @param {unknown} text
 */
export function sendData(text) {
  const str = String(text);
  const sfu = call.sfu;
  const viaSfu = () => !!(sfu && sfu.sendData(str));
  const viaMesh = () => {
    let sent = false;
    for (const e of call.peers.values()) if (e.peer && e.peer.sendData(str)) sent = true;
    return sent;
  };
  return call.mode === 'sfu' ? viaSfu() || viaMesh() : viaMesh() || viaSfu();
}

/**
 * A message from a peer on the data channel (mesh or relayed by the SFU).
 * @param {{from: string, data: string}} m
 */
export function onData({ from, data }) {
  logData({ from, data });
  let msg = null;
  try {
    msg = JSON.parse(data);
  } catch {
    return;
  }
  const e = call.peers.get(from);
  if (e && msg && msg.tsunagi === 'hand') {
    setPeerHand(e, !!msg.up);
    updateTile(e);
    if (e.hand) notify(t('notice.hand', { name: e.name }), { kind: 'info', code: 'hand', timeout: 3000 });
  }
}
