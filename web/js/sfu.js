// The one RTCPeerConnection of SFU mode: to the pseudo-peer "sfu" (docs/sfu.md).
//
//   - We publish: the microphone as a sendonly transceiver, the camera as a sendonly
//     transceiver with three simulcast encodings (rids l, m, h), and the data channel
//     "tsunagi". Our offer goes out at once.
//   - The SFU forwards the others' tracks: it renegotiates (sends `offer` from "sfu")
//     whenever tracks come and go. Each forwarded track carries the publisher's peer id
//     as its MediaStream id, so `streams[0].id` says whose tile it belongs to.
//   - Either side may offer. The browser is *impolite* toward the SFU: on glare it
//     ignores the server's offer (the SFU, polite, drops its own, answers ours and
//     offers again afterwards).
//   - The SFU is ICE-lite: its candidates are in its SDP, it sends no `candidate`
//     messages. We trickle ours (and null at the end).
//   - Relay-only on/off makes a *new* RTCPeerConnection with the new policy (as a mesh
//     Peer does): Chromium would keep using the old direct pair after an ICE restart
//     until it times out. The SFU sees an offer with another DTLS fingerprint and
//     replaces our server-side connection, keeping the old one forwarding meanwhile. The
//     old connection stays until the new one carries every publisher's video (or
//     REPLACE_TIMEOUT_MS), then closes; the new one's tracks reach the app only once
//     their video flows, so the tiles never go dark.
//
// The object looks like a mesh Peer to the connection panel: id, pc, polite, config,
// timeline, on('timeline'), summary, getStats().

import { parseCandidate } from './stats.js';
import { errorMessage, stopped, summarizeSdp, wireConnection } from './peer.js';

/** @typedef {import('./peer.js').LogEntry} LogEntry */
/** @typedef {import('./peer.js').TimelineEntry} TimelineEntry */
/** @typedef {import('./peer.js').LocalTracks} LocalTracks */
/** @typedef {import('./stats.js').Candidate} Candidate */
/** @typedef {import('./stats.js').Summary} Summary */
/** @typedef {import('./signaling.js').Message} Message */
/** @typedef {'view'|'offer'|'iceRestart'|'newConnection'} RepairStep */
/** @typedef {{track: MediaStreamTrack, stream: MediaStream, owner: string, transceiver: RTCRtpTransceiver}} TrackEvent */
/**
 * @typedef {object} SfuEvents  the events of the SfuPeer and what their listeners get
 * @property {TrackEvent} track  a publisher's track, to show (during a replacement: once its video flows)
 * @property {{track: MediaStreamTrack, owner: string}} track-ended
 * @property {{what: string, value: string}} state
 * @property {{from: string, data: string}} data
 * @property {undefined} data-open
 * @property {TimelineEntry} timeline
 * @property {{ms: number}} replaced  a replacement finished after `ms`
 */
/**
 * The connection being replaced: it keeps forwarding until the new one carries `owners`.
 * @typedef {{pc: RTCPeerConnection, dc: RTCDataChannel|null, since: number, owners: Set<string>, timer: ReturnType<typeof setInterval>}} OldConnection
 */

const TIMELINE_MAX = 400;
/** The old connection of a replacement closes after this at the latest. */
const REPLACE_TIMEOUT_MS = 10000;

/** The simulcast encodings of the camera (docs/sfu.md, "Simulcast"). */
export const SIMULCAST = [
  { rid: 'l', scaleResolutionDownBy: 4, maxBitrate: 150000 },
  { rid: 'm', scaleResolutionDownBy: 2, maxBitrate: 500000 },
  { rid: 'h', scaleResolutionDownBy: 1, maxBitrate: 1500000 },
];

export class SfuPeer {
  /**
   * @param {object} o
   * @param {string} o.selfId
   * @param {RTCConfiguration} o.config
   * @param {(msg: Message) => boolean} o.send
   * @param {() => LocalTracks} o.localTracks
   */
  constructor({ selfId, config, send, localTracks }) {
    this.id = 'sfu';
    this.selfId = selfId;
    this.polite = false;
    this.initiator = true;
    this.config = config;
    this.sendSignal = send;
    this.localTracks = localTracks;
    /** @type {TimelineEntry[]} */
    this.timeline = [];
    /** @type {Map<string, Set<(arg: any) => void>>} */
    this.listeners = new Map();
    /** @type {Promise<void>} the queue of incoming signaling */
    this.inbound = Promise.resolve();
    this.closed = false;
    this.createdAt = Date.now();
    this.makingOffer = false;
    this.restartPending = false; // an ICE restart waits for the negotiation under way
    this.applying = 0; // descriptions from the SFU received and not applied yet
    /** @type {Candidate[]} */
    this.localCandidates = [];
    /** @type {Candidate[]} */
    this.remoteCandidates = [];
    /** @type {Record<'audio'|'video'|'screen', RTCRtpTransceiver|null>} */
    this.transceivers = { audio: null, video: null, screen: null };
    /** @type {Map<string, string>} remote track id -> publisher id */
    this.trackOwner = new Map();
    /** @type {Map<string, string>} mid of a receiving transceiver -> publisher id */
    this.midOwner = new Map();
    this.lastFailRestart = 0;
    /** @type {Summary|null} the last stats summary (poll.js), for the connection panel */
    this.summary = null;
    /** @type {OldConnection|null} */
    this.old = null;
    /** @type {TrackEvent[]} track events of the new connection held until its video flows */
    this.deferred = [];
    /** @type {Record<RepairStep, number>} */
    this.repairs = { view: 0, offer: 0, iceRestart: 0, newConnection: 0 };
    this.lastNewConnection = 0;
    /** @type {RTCDataChannel|null} the "tsunagi" data channel */
    this.dc = null;
    this.pc = this.createPc();
    this.publish();
  }

  /**
   * @template {keyof SfuEvents} K
   * @param {K} type
   * @param {(arg: SfuEvents[K]) => void} fn
   */
  on(type, fn) {
    let set = this.listeners.get(type);
    if (!set) this.listeners.set(type, (set = new Set()));
    set.add(fn);
  }

  /**
   * @template {keyof SfuEvents} K
   * @param {K} type
   * @param {SfuEvents[K]} [arg]
   */
  emit(type, arg) {
    for (const fn of this.listeners.get(type) ?? []) {
      try {
        fn(arg);
      } catch (e) {
        console.error('sfu listener failed', type, e);
      }
    }
  }

  /** @param {LogEntry} entry */
  log(entry) {
    const e = { t: Date.now(), ...entry };
    this.timeline.push(e);
    if (this.timeline.length > TIMELINE_MAX) this.timeline.splice(0, this.timeline.length - TIMELINE_MAX);
    this.emit('timeline', e);
  }

  createPc() {
    const pc = new RTCPeerConnection(this.config);
    this.log({ dir: 'state', kind: 'newConnection', value: 'sfu' });
    // Every handler ignores a connection that was replaced meanwhile.
    const current = () => !this.closed && pc === this.pc;
    wireConnection(this, pc, current, 'sfu');
    pc.ontrack = (ev) => {
      if (!current()) return;
      const { track, streams, transceiver } = ev;
      const stream = streams && streams[0];
      // The publisher's peer id is the stream id (a=msid); without one we cannot place it.
      const owner = stream ? stream.id : null;
      if (!owner) {
        this.log({ dir: 'state', kind: 'error', value: `track ${track.kind} without a stream id` });
        return;
      }
      this.trackOwner.set(track.id, owner);
      if (transceiver && transceiver.mid !== null) this.midOwner.set(transceiver.mid, owner);
      this.log({ dir: 'in', kind: 'sfuTrack', value: `${track.kind} ← ${owner}` });
      const gone = () => {
        // The tracks of a replaced connection end with it: the new one took over.
        if (!current()) return;
        this.emit('track-ended', { track, owner });
      };
      track.addEventListener('ended', gone);
      stream.addEventListener('removetrack', (e) => {
        if (e.track === track) gone();
      });
      const event = { track, stream, owner, transceiver };
      if (!this.old) {
        this.emit('track', event);
        return;
      }
      // During a replacement: hand the stream over once its video flows (unmute).
      this.deferred.push(event);
      const video = stream.getVideoTracks()[0];
      if (video && !video.muted) this.flushDeferred(stream);
      if (track.kind === 'video') track.addEventListener('unmute', () => this.flushDeferred(stream), { once: true });
    };
    pc.ondatachannel = ({ channel }) => {
      // The SFU may open the channel itself; use it if ours is not the one negotiated.
      if (current() && channel.label === 'tsunagi') this.wireChannel(channel);
    };
    return pc;
  }

  /** Adds our tracks (mic sendonly, camera sendonly with simulcast) and the data channel. */
  publish() {
    const { audio, video, stream } = this.localTracks();
    const pc = this.pc;
    if (audio) {
      this.transceivers.audio = pc.addTransceiver(audio, { direction: 'sendonly', streams: [stream] });
    }
    if (video) {
      /** @type {RTCRtpTransceiverInit} */
      const init = { direction: 'sendonly', streams: [stream], sendEncodings: SIMULCAST.map((e) => ({ ...e })) };
      try {
        this.transceivers.video = pc.addTransceiver(video, init);
      } catch (e) {
        // A browser without simulcast support: one encoding.
        this.log({ dir: 'state', kind: 'error', value: `simulcast refused (${errorMessage(e)}); one encoding` });
        this.transceivers.video = pc.addTransceiver(video, { direction: 'sendonly', streams: [stream] });
      }
    }
    this.wireChannel(pc.createDataChannel('tsunagi', { ordered: true }));
  }

  /** @param {RTCDataChannel} dc */
  wireChannel(dc) {
    if (this.dc && this.dc.readyState === 'open' && dc !== this.dc) return;
    this.dc = dc;
    dc.onopen = () => {
      this.log({ dir: 'state', kind: 'dataChannel', value: 'open' });
      this.emit('data-open');
    };
    dc.onclose = () => this.log({ dir: 'state', kind: 'dataChannel', value: 'closed' });
    dc.onmessage = (ev) => {
      if (this.closed || typeof ev.data !== 'string') return;
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (msg && typeof msg.from === 'string' && typeof msg.data === 'string') this.emit('data', { from: msg.from, data: msg.data });
    };
  }

  /**
   * Sends text on the data channel (the SFU relays it to everyone else).
   * @param {string} text
   */
  sendData(text) {
    for (const dc of [this.dc, this.old && this.old.dc]) {
      if (dc && dc.readyState === 'open') {
        dc.send(text);
        return true;
      }
    }
    return false;
  }

  /**
   * Offers on this connection; `iceRestart`: with new ICE credentials. An ICE restart is
   * always an offer of ours, never pc.restartIce(): that flag also puts new credentials
   * into our next *answer*, and an SFU offer answered before our restart offer went out
   * would carry a restart only an offer may make (the SFU refuses such an answer). A
   * restart asked for while a negotiation is under way waits until it is done.
   * @param {{iceRestart?: boolean}} [o]
   */
  async negotiate({ iceRestart = false } = {}) {
    const pc = this.pc;
    if (this.makingOffer || pc.signalingState !== 'stable') {
      if (iceRestart) this.restartPending = true;
      return;
    }
    try {
      this.makingOffer = true;
      if (iceRestart) {
        this.restartPending = false;
        this.log({ dir: 'state', kind: 'iceRestart' });
        const offer = await pc.createOffer({ iceRestart: true });
        if (pc !== this.pc || this.closed) return;
        await pc.setLocalDescription(offer);
      } else {
        await pc.setLocalDescription();
      }
      if (this.closed) return;
      const desc = /** @type {RTCSessionDescription} */ (pc.localDescription);
      this.log({ dir: 'out', kind: desc.type, sdp: summarizeSdp(desc.sdp) });
      this.sendSignal({ type: desc.type, to: 'sfu', sdp: desc.sdp });
    } catch (e) {
      if (!this.closed) this.log({ dir: 'state', kind: 'error', value: errorMessage(e) });
    } finally {
      this.makingOffer = false;
    }
  }

  /** Sends our pending offer (or last answer) again: the server dropped it (`server-busy`). */
  resendLocalDescription() {
    const desc = this.pc.localDescription;
    if (this.closed || !desc) return;
    if (desc.type === 'offer' && this.pc.signalingState !== 'have-local-offer') return;
    this.log({ dir: 'out', kind: desc.type, sdp: summarizeSdp(desc.sdp) });
    this.sendSignal({ type: desc.type, to: 'sfu', sdp: desc.sdp });
  }

  /**
   * Queues an offer or answer from the SFU. Once it is applied (or ignored, or failed),
   * an ICE restart that waited for the negotiation goes out.
   * @param {RTCSdpType} type
   * @param {string} sdp
   */
  handleDescription(type, sdp) {
    this.applying++;
    return this.enqueue(() => this.applyDescription(type, sdp)).finally(() => {
      this.applying--;
      this.afterNegotiation();
    });
  }

  /** @param {RTCIceCandidateInit|null} candidate */
  handleCandidate(candidate) {
    // The SFU is ICE-lite and sends none; accept them anyway if one ever comes.
    return this.enqueue(async () => {
      if (!candidate || !candidate.candidate || !this.pc.remoteDescription) return;
      const c = parseCandidate(candidate.candidate);
      this.remoteCandidates.push(c);
      this.log({ dir: 'in', kind: 'candidate', cand: c });
      try {
        await this.pc.addIceCandidate(candidate);
      } catch (e) {
        this.log({ dir: 'state', kind: 'error', value: errorMessage(e) });
      }
    });
  }

  /** @param {() => Promise<void>} fn */
  enqueue(fn) {
    this.inbound = this.inbound.then(() => (this.closed ? undefined : fn())).catch((e) => {
      if (!this.closed) this.log({ dir: 'state', kind: 'error', value: errorMessage(e) });
    });
    return this.inbound;
  }

  /**
   * @param {RTCSdpType} type
   * @param {string} sdp
   */
  async applyDescription(type, sdp) {
    const pc = this.pc;
    this.log({ dir: 'in', kind: type, sdp: summarizeSdp(sdp) });
    if (type === 'offer') {
      // Impolite: an offer that collides with ours is ignored; the SFU offers again.
      if (this.makingOffer || pc.signalingState !== 'stable') {
        this.log({ dir: 'state', kind: 'ignoredOffer' });
        return;
      }
      try {
        await pc.setRemoteDescription({ type, sdp });
      } catch (e) {
        // The two sides no longer agree on the session (e.g. the m-lines of the offer do
        // not fit what this connection negotiated): no offer or answer can fix that.
        if (pc === this.pc && !this.closed) this.repair('newConnection', `the SFU offer could not be applied: ${errorMessage(e)}`);
        return;
      }
      this.noteRemoteCandidates(sdp);
      await pc.setLocalDescription();
      if (this.closed) return;
      const desc = /** @type {RTCSessionDescription} */ (pc.localDescription);
      this.log({ dir: 'out', kind: desc.type, sdp: summarizeSdp(desc.sdp) });
      this.sendSignal({ type: desc.type, to: 'sfu', sdp: desc.sdp });
      return;
    }
    if (pc.signalingState !== 'have-local-offer') return; // an answer to nothing we have pending
    await pc.setRemoteDescription({ type, sdp });
    this.noteRemoteCandidates(sdp);
  }

  /**
   * The SFU's candidates come inside its SDP: list them for the panel.
   * @param {string} sdp
   */
  noteRemoteCandidates(sdp) {
    const seen = new Set(this.remoteCandidates.map((c) => `${c.protocol} ${c.address} ${c.port}`));
    for (const line of sdp.split(/\r?\n/)) {
      if (!line.startsWith('a=candidate:')) continue;
      const c = parseCandidate(line);
      const key = `${c.protocol} ${c.address} ${c.port}`;
      if (seen.has(key)) continue;
      seen.add(key);
      this.remoteCandidates.push(c);
      this.log({ dir: 'in', kind: 'candidate', cand: c });
    }
  }

  /**
   * The publisher id of a received track (from its stream id).
   * @param {string} trackId
   */
  ownerOf(trackId) {
    return this.trackOwner.get(trackId) ?? null;
  }

  /**
   * The publisher id behind an inbound-rtp stats entry (by track, else by mid).
   * @param {{trackIdentifier?: string, mid?: string}} r
   * @returns {string|null}
   */
  ownerOfStat(r) {
    return (r.trackIdentifier && this.trackOwner.get(r.trackIdentifier)) || (r.mid !== undefined && this.midOwner.get(r.mid)) || null;
  }

  /**
   * Inbound video per publisher in a stats report of this connection: frames decoded
   * (all its layers and m-lines together) and the largest frame size with its frame rate.
   * @param {RTCStatsReport} report
   * @returns {Map<string, {framesDecoded: number, width: number, height: number, fps: number|null}>}
   */
  videoByPublisher(report) {
    const per = new Map();
    for (const r of report.values()) {
      if (r.type !== 'inbound-rtp' || r.kind !== 'video') continue;
      const owner = this.ownerOfStat(r);
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

  /**
   * One repair step (docs/sfu.md, "Repairs"), logged in the timeline and counted:
   * `view` (the app sends its view again), `offer` (a new offer on this connection, or
   * our unanswered one again), `iceRestart`, `newConnection` (replacePc: the old
   * connection keeps the media until the new one carries it; at most one per 15 s).
   * @param {RepairStep} step
   * @param {string} why
   * @returns {boolean} whether the step started
   */
  repair(step, why) {
    if (this.closed || !(step in this.repairs)) return false;
    if (step === 'newConnection') {
      const now = Date.now();
      if (this.old || now - this.lastNewConnection < 15000) return false;
      this.lastNewConnection = now;
    }
    this.repairs[step]++;
    this.log({ dir: 'state', kind: 'repair', value: `${step}: ${why}` });
    if (step === 'offer') {
      if (this.pc.signalingState === 'have-local-offer') this.resendLocalDescription();
      else this.negotiate();
    } else if (step === 'iceRestart') {
      this.restartIce();
    } else if (step === 'newConnection') {
      this.replacePc();
    }
    return true;
  }

  restartIce() {
    if (this.closed) return;
    this.negotiate({ iceRestart: true });
  }

  /**
   * Whether this page is busy with a description: making our offer, or applying one from
   * the SFU (queued ones included) up to our answer. (`have-remote-offer` lies inside
   * that: an SFU offer is counted in `applying` from its arrival to our answer.) An offer
   * of ours that waits for its answer does not count: it may have been lost, and the
   * repairs send it again.
   */
  negotiating() {
    return this.makingOffer || this.applying > 0;
  }

  /** A restart that waited for a negotiation to finish goes out now. */
  afterNegotiation() {
    if (this.restartPending && !this.closed && this.pc.signalingState === 'stable') this.negotiate({ iceRestart: true });
  }

  /**
   * Relay-only on the SFU connection: a new connection with the new policy.
   * @param {boolean} relayOnly
   */
  setRelayOnly(relayOnly) {
    /** @type {RTCIceTransportPolicy} */
    const policy = relayOnly ? 'relay' : 'all';
    this.config = { ...this.config, iceTransportPolicy: policy };
    this.log({ dir: 'state', kind: 'relayPolicy', value: policy });
    this.replacePc();
  }

  /**
   * A fresh RTCPeerConnection (the current config) with our tracks and data channel,
   * offered at once. The old one keeps carrying media until the new one carries every
   * publisher's video it carried, then closes (see the header).
   */
  replacePc() {
    if (this.closed) return;
    if (this.old) this.finishReplacement(); // a second switch before the first finished
    const pc = this.pc;
    const owners = new Set();
    for (const r of pc.getReceivers()) {
      const tr = r.track;
      if (tr && tr.kind === 'video' && tr.readyState === 'live' && !tr.muted && this.trackOwner.has(tr.id)) owners.add(this.trackOwner.get(tr.id));
    }
    this.old = { pc, dc: this.dc, since: Date.now(), owners, timer: setInterval(() => this.checkReplacement(), 200) };
    this.dc = null;
    this.deferred = [];
    this.makingOffer = false;
    this.restartPending = false; // the new connection has new credentials anyway
    this.midOwner = new Map();
    this.transceivers = { audio: null, video: null, screen: null };
    this.localCandidates = [];
    this.remoteCandidates = [];
    this.summary = null;
    this.log({ dir: 'state', kind: 'newConnection', value: 'replaces the SFU connection' });
    this.pc = this.createPc();
    this.publish();
    // Offer now rather than on negotiationneeded: an SFU offer still in flight for the
    // old connection then meets have-local-offer and is ignored.
    this.negotiate();
  }

  /**
   * Hands the new connection's tracks of one stream (all when null) to the app.
   * @param {MediaStream|null} stream
   */
  flushDeferred(stream) {
    if (this.closed) return;
    const now = this.deferred.filter((e) => !stream || e.stream === stream);
    this.deferred = this.deferred.filter((e) => !now.includes(e));
    for (const e of now) this.emit('track', e);
    this.checkReplacement();
  }

  /** Ends a replacement once the new connection carries what the old one did. */
  checkReplacement() {
    const old = this.old;
    if (!old || this.closed) return;
    const timedOut = Date.now() - old.since >= REPLACE_TIMEOUT_MS;
    const flowing = new Set();
    for (const r of this.pc.getReceivers()) {
      const tr = r.track;
      if (!tr || tr.kind !== 'video' || tr.muted || tr.readyState !== 'live') continue;
      const owner = this.trackOwner.get(tr.id);
      if (owner && !this.deferred.some((e) => e.track === tr)) flowing.add(owner);
    }
    const carried = [...old.owners].every((o) => flowing.has(o));
    const up = this.pc.connectionState === 'connected';
    if ((up && carried) || timedOut) this.finishReplacement();
  }

  finishReplacement() {
    const old = this.old;
    if (!old) return;
    this.old = null;
    clearInterval(old.timer);
    this.flushDeferred(null);
    this.log({ dir: 'state', kind: 'oldConnection', value: `closed after ${Date.now() - old.since} ms` });
    try {
      if (old.dc) old.dc.close();
    } catch {
      // closing anyway
    }
    old.pc.close();
    this.emit('replaced', { ms: Date.now() - old.since });
  }

  /**
   * Replaces the outgoing track of one kind (device switch, screen share).
   * @param {'audio'|'video'} kind
   * @param {MediaStreamTrack|null} track
   */
  async replaceTrack(kind, track) {
    const tx = this.transceivers[kind];
    if (!tx || stopped(tx)) return;
    await tx.sender.replaceTrack(track);
  }

  getStats() {
    return this.pc.getStats();
  }

  close() {
    if (this.closed) return;
    if (this.old) {
      clearInterval(this.old.timer);
      this.old.pc.close();
      this.old = null;
    }
    this.closed = true;
    try {
      if (this.dc) this.dc.close();
    } catch {
      // closing anyway
    }
    this.pc.close();
    this.log({ dir: 'state', kind: 'connectionState', value: 'closed' });
  }
}
