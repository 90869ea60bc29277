// The browser tests' view into the call page: `window.tsunagi`, read-only, built on the
// state module's read-only `call`. The page never loads this module; the tests inject it
// (tests/e2e/lib/testhook.mjs), so users are not shipped a debug surface.

import { getLang } from '../i18n.js';
import { call, connOf, iceServerUrls } from '../state.js';
import { fetchSfuState } from '../tilepanel.js';
import { sendData } from '../datachannel.js';
import { frameGaps } from './frame-gaps.js';

/**
 * A plain-data copy (what a test can carry out of the page).
 * @template T
 * @param {T} x
 * @returns {T}
 */
function plain(x) {
  return x === undefined ? x : JSON.parse(JSON.stringify(x));
}

const hook = {
  get id() {
    return call.id;
  },
  get room() {
    return call.room;
  },
  get name() {
    return call.name;
  },
  get view() {
    return call.view;
  },
  get relayOnly() {
    return call.relayOnly;
  },
  get signaling() {
    return call.sig ? call.sig.state : 'idle';
  },
  get lang() {
    return getLang();
  },
  get reconnects() {
    return call.sig ? call.sig.reconnects : 0;
  },
  get signalingRtt() {
    return call.sig ? call.sig.rtt : null;
  },
  /** The local capture: {audio, video, screen} as {id, label, enabled} or null. */
  localTracks() {
    const m = call.media;
    const info = (/** @type {MediaStreamTrack|null} */ tr) => (tr ? { id: tr.id, label: tr.label, enabled: tr.enabled } : null);
    return m ? { audio: info(m.audio), video: info(m.camera), screen: info(m.screen) } : null;
  },
  /** The ICE server URLs from welcome (credentials left out). */
  iceServerUrls() {
    return call.iceServers.flatMap(iceServerUrls);
  },
  /** The room's mode: "mesh" or "sfu". */
  get mode() {
    return call.mode;
  },
  /** A mode switch waiting for video on the new path: {to, since}, else null. */
  get transition() {
    return call.transition ? { ...call.transition } : null;
  },
  /** The active speaker's peer id (from `speaker`), or null. */
  get speaker() {
    return call.speaker;
  },
  /** The last `sfu-stats` message: {bitrate, layers, rtt, at}, or null. */
  get sfuStats() {
    return call.sfuStats ? plain(call.sfuStats) : null;
  },
  /** The SFU connection: {connectionState, iceConnectionState, signalingState, dataChannel, path} or null. */
  get sfu() {
    const s = call.sfu;
    if (!s) return null;
    return {
      connectionState: s.pc.connectionState,
      iceConnectionState: s.pc.iceConnectionState,
      signalingState: s.pc.signalingState,
      dataChannel: s.dc ? s.dc.readyState : null,
      path: call.sfuSummary ? plain(call.sfuSummary.path) : { kind: 'none' },
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
    return { tiles: call.lastView.tiles ? plain(call.lastView.tiles) : null, sent: call.lastView.sent };
  },
  /** Data-channel messages received: [{from, data, at}]. */
  dataLog() {
    return call.dataLog.map((m) => ({ ...m }));
  },
  /**
   * Sends text on the "tsunagi" data channel (SFU, or every mesh peer); false when no channel is open.
   * @param {string} text
   */
  sendData(text) {
    return sendData(text);
  },
  /**
   * Inbound video per remote peer, refreshed every second: {peerId: {path, mesh, sfu}}
   * where `path` is what the tile shows ("mesh" | "sfu") and mesh/sfu are
   * {framesDecoded, frameWidth, frameHeight, fps, liveAt} or null.
   */
  inboundVideo() {
    /** @type {Record<string, object>} */
    const out = {};
    for (const e of call.peers.values()) out[e.id] = { path: e.source, mesh: plain(e.video.mesh) ?? null, sfu: plain(e.video.sfu) ?? null };
    return out;
  },
  /** The same, read from getStats() now (not the cached once-a-second values). */
  async videoNow() {
    /** @typedef {{framesDecoded: number, frameWidth: number, frameHeight: number}|null} Frames */
    /** @type {Record<string, {path: string, mesh: Frames, sfu: Frames}>} */
    const out = {};
    for (const e of call.peers.values()) out[e.id] = { path: e.source, mesh: null, sfu: null };
    await Promise.all(
      [...call.peers.values()].map(async (e) => {
        if (!e.peer) return;
        const r = await e.peer.getStats().catch(() => null);
        if (!r) return;
        for (const s of r.values()) {
          if (s.type === 'inbound-rtp' && s.kind === 'video') out[e.id].mesh = { framesDecoded: s.framesDecoded || 0, frameWidth: s.frameWidth || 0, frameHeight: s.frameHeight || 0 };
        }
      }),
    );
    const sfu = call.sfu;
    if (sfu) {
      const r = await sfu.getStats().catch(() => null);
      if (r) {
        for (const [owner, v] of sfu.videoByPublisher(r)) {
          if (out[owner]) out[owner].sfu = { framesDecoded: v.framesDecoded, frameWidth: v.width, frameHeight: v.height };
        }
      }
    }
    return out;
  },
  peers() {
    return [...call.peers.values()].map((e) => {
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
        path: conn === call.sfu ? (call.sfuSummary ? plain(call.sfuSummary.path) : { kind: 'none' }) : e.summary ? plain(e.summary.path) : { kind: 'none' },
      };
    });
  },
  /**
   * The latest stats summary of one peer (see stats.js), refreshed every second.
   * @param {string} peerId  a peer id, or "sfu"
   */
  stats(peerId) {
    if (peerId === 'sfu') return call.sfuSummary ? plain(call.sfuSummary) : null;
    const e = call.peers.get(peerId);
    if (e && connOf(e) === call.sfu && call.sfu) return call.sfuSummary ? plain(call.sfuSummary) : null;
    return e && e.summary ? plain(e.summary) : null;
  },
  /**
   * The raw getStats() report of the connection that carries one peer now, as an array
   * of plain objects. Through the SFU ("sfu" for the whole report), the inbound-rtp
   * entries of other publishers are left out.
   * @param {string} peerId  a peer id, or "sfu"
   */
  async rawStats(peerId) {
    if (peerId === 'sfu') {
      if (!call.sfu) return null;
      const r = await call.sfu.getStats();
      return [...r.values()].map((s) => ({ ...s }));
    }
    const e = call.peers.get(peerId);
    if (!e) return null;
    const conn = connOf(e);
    if (!conn) return null;
    const r = await conn.getStats();
    const all = [...r.values()].map((s) => ({ ...s }));
    if (conn !== call.sfu) return all;
    const sfu = conn;
    return all.filter((s) => s.type !== 'inbound-rtp' || sfu.ownerOfStat(s) === peerId);
  },
  /**
   * The timeline of the connection that carries one peer now ("sfu": the SFU connection).
   * @param {string} peerId
   */
  timeline(peerId) {
    if (peerId === 'sfu') return call.sfu ? plain(call.sfu.timeline) : null;
    const conn = connOf(call.peers.get(peerId));
    return conn ? plain(conn.timeline) : null;
  },
  chatLog() {
    return call.chat.map((m) => ({ ...m }));
  },
  errors() {
    return call.errors.map((m) => ({ ...m }));
  },
  /** Every signaling frame sent or received: {dir, type, from?, to?, code?, reason?, at}. */
  signalLog() {
    return call.traffic.map((m) => ({ ...m }));
  },
  /**
   * Presented-frame gaps per remote peer, measured in the page (see frame-gaps.js; started
   * by the first call): {rvfc, resetAt, pageStall: {max (ms), from, busy (ms of it in long
   * tasks), longestTask (ms), scripts (the longest scripts run in that stall)}, peers: {peerId: {name, present, frames, maxGap (ms),
   * gapFrom, gapPath, gapPageStalled (ms of the gap this page's own timer did not run),
   * sinceLast (ms), paths: {mesh, sfu}: {frames, rvfc, poll}}}}.
   * `{reset: true}` forgets the gaps so far.
   * @param {{reset?: boolean}} [opts]
   */
  frameGaps(opts) {
    return frameGaps(opts || {});
  },
};

Object.defineProperty(window, 'tsunagi', { value: Object.freeze(hook), writable: false, configurable: false });
