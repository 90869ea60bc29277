// One RTCPeerConnection to one remote peer, negotiated with the "perfect negotiation"
// pattern (W3C WebRTC §10.7) exactly as docs/signaling.md assigns the roles:
//   - the newcomer starts: it adds its transceivers at once, which fires
//     `negotiationneeded` and so sends the first offer;
//   - the peer already in the room waits: it adds its tracks only when that first offer
//     arrives, so both never offer at the same time on the first round;
//   - after that either side may offer (ICE restart); on a collision the polite side
//     (the lower id, byte-wise) rolls back its offer, the impolite side ignores the
//     incoming one.
//
// Switching "relay only" replaces the RTCPeerConnection: Chromium does not apply a new
// iceTransportPolicy to an ICE restart of a connected session (it keeps the host pair),
// so the switching side opens a fresh connection with the new policy and offers. The
// other side sees an offer from a new session (another o= session id) and replaces its
// connection too. No message beyond the protocol's is needed.
//
// Incoming signaling is handled strictly in order (one promise chain), so a candidate
// is never applied before the description it belongs to. Every message exchanged and
// every state change is written to a timeline that the connection panel shows.

import { parseCandidate } from './stats.js';

/** @typedef {import('./stats.js').Candidate} Candidate */
/** @typedef {import('./stats.js').Summary} Summary */
/** @typedef {import('./signaling.js').Message} Message */
/** @typedef {ReturnType<typeof summarizeSdp>} SdpSummary */
/**
 * An entry of a connection's timeline (what the connection panel lists): a message sent
 * or received, or a change of state.
 * @typedef {object} LogEntry
 * @property {'in'|'out'|'state'} dir
 * @property {string} kind
 * @property {string} [value]
 * @property {SdpSummary} [sdp]
 * @property {Candidate} [cand]
 * @property {boolean} [stale]
 * @property {string} [label]
 * @property {string} [local]
 * @property {string} [remote]
 */
/** @typedef {LogEntry & {t: number}} TimelineEntry */
/** @typedef {{audio: MediaStreamTrack|null, video: MediaStreamTrack|null, stream: MediaStream}} LocalTracks */
/**
 * @typedef {object} PeerEvents  the events of a Peer and what their listeners get
 * @property {{track: MediaStreamTrack, stream: MediaStream}} track
 * @property {{what: string, value: string}} state
 * @property {{from: string, data: string}} data
 * @property {undefined} data-open
 * @property {TimelineEntry} timeline
 * @property {RTCPeerConnection} pc
 */

const TIMELINE_MAX = 400;

export class Peer {
  // Set for each RTCPeerConnection by startPc:
  /** @type {RTCPeerConnection} */
  pc;
  /** @type {boolean} we send the first offer */
  initiator;
  /** @type {boolean} */
  makingOffer;
  /** @type {boolean} */
  ignoreOffer;
  /** @type {boolean} */
  isSettingRemoteAnswerPending;
  /** @type {boolean} */
  tracksAdded;
  /** @type {{audio: RTCRtpTransceiver|null|undefined, video: RTCRtpTransceiver|null|undefined}} */
  transceivers;
  /** @type {MediaStream} */
  remoteStream;
  /** @type {Candidate[]} */
  localCandidates;
  /** @type {Candidate[]} */
  remoteCandidates;
  /** @type {RTCDataChannel|undefined} */
  dc;

  /**
   * @param {object} o
   * @param {string} o.id        remote peer id
   * @param {string} o.selfId    our id
   * @param {boolean} o.initiator we are the newcomer: we send the first offer
   * @param {RTCConfiguration} o.config
   * @param {(msg: Message) => boolean} o.send  sends a signaling message
   * @param {() => LocalTracks} o.localTracks
   */
  constructor({ id, selfId, initiator, config, send, localTracks }) {
    this.id = id;
    this.selfId = selfId;
    this.polite = selfId < id;
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
    this.generation = 0;
    /** @type {string|null} */
    this.remoteSessionId = null;
    /** @type {string|null} the remote session of a connection we replaced */
    this.staleSession = null;
    this.lastFailRestart = 0;
    this.watchdogs = 0;
    /** @type {WeakMap<RTCPeerConnection, Promise<never>>} rejects once that connection is replaced or closed */
    this.deadOf = new WeakMap();
    /** @type {WeakMap<RTCPeerConnection, () => void>} */
    this.killOf = new WeakMap();
    /** @type {Summary|null} the last stats summary (poll.js), for the connection panel */
    this.summary = null;
    this.startPc(initiator);
  }

  /**
   * @template {keyof PeerEvents} K
   * @param {K} type
   * @param {(arg: PeerEvents[K]) => void} fn
   */
  on(type, fn) {
    let set = this.listeners.get(type);
    if (!set) this.listeners.set(type, (set = new Set()));
    set.add(fn);
  }

  /**
   * @template {keyof PeerEvents} K
   * @param {K} type
   * @param {PeerEvents[K]} [arg]
   */
  emit(type, arg) {
    for (const fn of this.listeners.get(type) ?? []) fn(arg);
  }

  /** @param {LogEntry} entry */
  log(entry) {
    const e = { t: Date.now(), ...entry };
    this.timeline.push(e);
    if (this.timeline.length > TIMELINE_MAX) this.timeline.splice(0, this.timeline.length - TIMELINE_MAX);
    this.emit('timeline', e);
  }

  /**
   * Waits for an operation of `pc`, or throws Replaced as soon as `pc` is replaced or
   * closed: the operations of a closed RTCPeerConnection never settle, and the inbound
   * queue must not wait for them forever.
   * @template T
   * @param {RTCPeerConnection} pc
   * @param {Promise<T>} promise
   * @returns {Promise<T>}
   */
  guard(pc, promise) {
    const dead = this.deadOf.get(pc);
    return dead ? Promise.race([promise, dead]) : promise;
  }

  /**
   * Creates a new RTCPeerConnection (and drops the old one, if any).
   * @param {boolean} initiator
   */
  startPc(initiator) {
    const old = this.pc;
    if (old) this.killOf.get(old)?.();
    this.generation++;
    this.initiator = initiator;
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.isSettingRemoteAnswerPending = false;
    this.tracksAdded = false;
    this.transceivers = { audio: null, video: null };
    this.remoteStream = new MediaStream();
    this.localCandidates = [];
    this.remoteCandidates = [];
    this.pc = this.createPc();
    this.openDataChannel(this.pc);
    /** @type {Promise<never>} */
    const dead = new Promise((_, reject) => this.killOf.set(this.pc, () => reject(new Replaced())));
    dead.catch(() => {});
    this.deadOf.set(this.pc, dead);
    if (old) old.close();
    if (initiator) this.addLocalTracks();
    this.emit('pc', this.pc);
    this.armWatchdog(this.pc);
  }

  /**
   * A connection that has not come up some seconds after it was made is replaced by a
   * fresh one with a fresh offer (the remote follows it). This ends any leftover of
   * offer races, e.g. when both sides switch relay-only at the same time. The two sides
   * wait different times so that they do not replace at once, and give up after a few.
   * @param {RTCPeerConnection} pc
   */
  armWatchdog(pc) {
    const delay = this.polite ? 16000 : 11000;
    setTimeout(() => {
      if (pc !== this.pc || this.closed || pc.connectionState === 'connected') return;
      // Still waiting for the newcomer's very first offer: nothing to replace yet.
      if (!this.initiator && !pc.remoteDescription) return;
      if (this.watchdogs >= 3) return;
      this.watchdogs++;
      this.log({ dir: 'state', kind: 'watchdog', value: pc.connectionState });
      this.startPc(true);
    }, delay);
  }

  createPc() {
    const pc = new RTCPeerConnection(this.config);
    const current = () => pc === this.pc && !this.closed;
    wireConnection(this, pc, current, this.id);
    pc.ontrack = ({ track, streams }) => {
      if (!current()) return;
      const stream = streams && streams[0];
      if (stream) {
        this.remoteStream = stream;
      } else if (!this.remoteStream.getTracks().includes(track)) {
        this.remoteStream.addTrack(track);
      }
      this.emit('track', { track, stream: this.remoteStream });
    };
    return pc;
  }

  /**
   * The "tsunagi" data channel of this connection: negotiated out of band (id 0 on both
   * sides), so neither side waits for the other to announce it and no extra offer is
   * needed. Messages arrive as 'data' events {from, data}, the same shape as the SFU
   * relays them.
   * @param {RTCPeerConnection} pc
   */
  openDataChannel(pc) {
    let dc;
    try {
      dc = pc.createDataChannel('tsunagi', { ordered: true, negotiated: true, id: 0 });
    } catch {
      return;
    }
    this.dc = dc;
    dc.onopen = () => {
      if (pc === this.pc && !this.closed) this.emit('data-open');
    };
    dc.onmessage = (ev) => {
      if (pc !== this.pc || this.closed || typeof ev.data !== 'string') return;
      this.emit('data', { from: this.id, data: ev.data });
    };
  }

  /**
   * Sends text on the data channel; false when it is not open.
   * @param {string} text
   */
  sendData(text) {
    if (!this.dc || this.dc.readyState !== 'open') return false;
    this.dc.send(text);
    return true;
  }

  /** Adds our audio and video (or receive-only transceivers when we have none). */
  addLocalTracks() {
    if (this.tracksAdded) return;
    this.tracksAdded = true;
    const { audio, video, stream } = this.localTracks();
    const existing = this.pc.getTransceivers();
    for (const kind of /** @type {const} */ (['audio', 'video'])) {
      const track = kind === 'audio' ? audio : video;
      // On the answering side the remote offer already created a transceiver per m-line;
      // addTrack reuses it and turns it to sendrecv.
      const offered = existing.find((t) => t.receiver.track.kind === kind && !stopped(t));
      if (offered) {
        if (track) {
          const sender = this.pc.addTrack(track, stream);
          this.transceivers[kind] = this.pc.getTransceivers().find((t) => t.sender === sender) ?? offered;
        } else {
          this.transceivers[kind] = offered;
        }
      } else if (track) {
        // addTrack, not addTransceiver: if our offer is rolled back on a collision, a
        // transceiver made by addTrack is reused for the remote offer's m-line.
        const sender = this.pc.addTrack(track, stream);
        this.transceivers[kind] = this.pc.getTransceivers().find((t) => t.sender === sender);
      } else {
        this.transceivers[kind] = this.pc.addTransceiver(kind, { direction: 'recvonly' });
      }
    }
  }

  async negotiate() {
    const pc = this.pc;
    // The peer that was in the room first waits for the newcomer's offer.
    if (!this.initiator && !pc.remoteDescription) return;
    try {
      this.makingOffer = true;
      await this.guard(pc, pc.setLocalDescription());
      if (pc !== this.pc) return;
      const desc = /** @type {RTCSessionDescription} */ (pc.localDescription);
      this.log({ dir: 'out', kind: desc.type, sdp: summarizeSdp(desc.sdp) });
      this.sendSignal({ type: desc.type, to: this.id, sdp: desc.sdp });
    } catch (e) {
      if (pc === this.pc && !(e instanceof Replaced)) this.log({ dir: 'state', kind: 'error', value: errorMessage(e) });
    } finally {
      if (pc === this.pc) this.makingOffer = false;
    }
  }

  /**
   * Queues an offer or answer from the remote peer.
   * @param {RTCSdpType} type
   * @param {string} sdp
   */
  handleDescription(type, sdp) {
    return this.enqueue(() => this.applyDescription(type, sdp));
  }

  /**
   * Queues a candidate (or end-of-candidates, null) from the remote peer.
   * @param {RTCIceCandidateInit|null} candidate
   */
  handleCandidate(candidate) {
    return this.enqueue(() => this.applyCandidate(candidate));
  }

  /** @param {() => Promise<void>} fn */
  enqueue(fn) {
    this.inbound = this.inbound.then(() => (this.closed ? undefined : fn())).catch((e) => {
      if (!(e instanceof Replaced)) this.log({ dir: 'state', kind: 'error', value: errorMessage(e) });
    });
    return this.inbound;
  }

  /**
   * @param {RTCSdpType} type
   * @param {string} sdp
   */
  async applyDescription(type, sdp) {
    const session = sessionId(sdp);
    this.log({ dir: 'in', kind: type, sdp: summarizeSdp(sdp) });
    if (type === 'offer' && this.remoteSessionId && session !== this.remoteSessionId && this.pc.remoteDescription) {
      // The remote peer replaced its connection (relay-only switch): follow it.
      this.log({ dir: 'state', kind: 'newConnection', value: 'remote' });
      this.startPc(false);
    }
    if (type === 'offer' && this.staleSession && session === this.staleSession && !this.pc.remoteDescription) {
      // An offer of the session our replaced connection talked to: it was meant for
      // that connection, and the remote will follow our new offer with a new session.
      // (An answer from that session can be real: a remote connection that had not
      // been answered yet may roll back its offer and answer ours.)
      this.log({ dir: 'state', kind: 'staleDescription' });
      return;
    }
    const pc = this.pc;
    const readyForOffer = !this.makingOffer && (pc.signalingState === 'stable' || this.isSettingRemoteAnswerPending);
    const offerCollision = type === 'offer' && !readyForOffer;
    this.ignoreOffer = !this.polite && offerCollision;
    if (this.ignoreOffer) {
      this.log({ dir: 'state', kind: 'ignoredOffer' });
      return;
    }
    if (offerCollision) this.log({ dir: 'state', kind: 'rollback' });
    if (type === 'answer' && pc.signalingState !== 'have-local-offer') {
      // An answer to an offer of a connection we have replaced since.
      return;
    }
    try {
      this.isSettingRemoteAnswerPending = type === 'answer';
      await this.guard(pc, pc.setRemoteDescription({ type, sdp })); // rolls back our offer if needed
    } finally {
      this.isSettingRemoteAnswerPending = false;
    }
    this.remoteSessionId = session;
    if (type === 'offer') {
      if (!this.tracksAdded) this.addLocalTracks();
      await this.guard(pc, pc.setLocalDescription());
      if (pc !== this.pc) return;
      const desc = /** @type {RTCSessionDescription} */ (pc.localDescription);
      this.log({ dir: 'out', kind: desc.type, sdp: summarizeSdp(desc.sdp) });
      this.sendSignal({ type: desc.type, to: this.id, sdp: desc.sdp });
    }
  }

  /** @param {RTCIceCandidateInit|null} candidate */
  async applyCandidate(candidate) {
    const pc = this.pc;
    const c = candidate && candidate.candidate ? parseCandidate(candidate.candidate) : null;
    const remote = pc.remoteDescription;
    // Candidates of an offer we ignored, or of a connection replaced since, do not
    // belong to the current session: leave them out (they would fail to apply).
    const stale = !remote || (candidate && candidate.usernameFragment && !remote.sdp.includes(`a=ice-ufrag:${candidate.usernameFragment}`));
    if (c) {
      if (!stale) this.remoteCandidates.push(c);
      this.log({ dir: 'in', kind: 'candidate', cand: c, stale: stale || undefined });
    } else {
      this.log({ dir: 'in', kind: 'endOfCandidates', stale: stale || undefined });
    }
    if (stale) return;
    try {
      if (c) await this.guard(pc, pc.addIceCandidate(candidate));
      else await this.guard(pc, pc.addIceCandidate());
    } catch (e) {
      if (!this.ignoreOffer && pc === this.pc && !(e instanceof Replaced)) this.log({ dir: 'state', kind: 'error', value: errorMessage(e) });
    }
  }

  /**
   * Switches the ICE transport policy ('relay' or 'all') with a new connection.
   * @param {boolean} relayOnly
   */
  setRelayOnly(relayOnly) {
    /** @type {RTCIceTransportPolicy} */
    const policy = relayOnly ? 'relay' : 'all';
    this.config = { ...this.config, iceTransportPolicy: policy };
    this.log({ dir: 'state', kind: 'relayPolicy', value: policy });
    this.log({ dir: 'state', kind: 'newConnection', value: 'local' });
    this.watchdogs = 0;
    this.staleSession = this.remoteSessionId;
    this.startPc(true);
  }

  restartIce() {
    if (this.closed) return;
    // If we are still waiting for the newcomer's first offer there is nothing to restart.
    if (!this.initiator && !this.pc.remoteDescription) return;
    this.log({ dir: 'state', kind: 'iceRestart' });
    this.pc.restartIce();
  }

  /**
   * The room moved to the SFU and this connection only bridges until the SFU carries
   * this peer's video: send that bridge at half the resolution and at most 10 fps, so a
   * slow machine, which encodes for the mesh and the SFU at once during a switch, keeps
   * up (docs/sfu.md, "Modes and switching").
   */
  async lighten() {
    const tx = this.transceivers.video;
    if (!tx || stopped(tx) || !tx.sender.track) return;
    try {
      const params = tx.sender.getParameters();
      if (!params.encodings || !params.encodings.length) return;
      for (const enc of params.encodings) {
        enc.scaleResolutionDownBy = Math.max(enc.scaleResolutionDownBy || 1, 2);
        enc.maxFramerate = Math.min(enc.maxFramerate || 10, 10);
      }
      await tx.sender.setParameters(params);
      this.log({ dir: 'state', kind: 'bridge', value: 'half resolution, 10 fps until the SFU carries the video' });
    } catch (e) {
      this.log({ dir: 'state', kind: 'error', value: `lighten: ${errorMessage(e)}` });
    }
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
    this.closed = true;
    this.killOf.get(this.pc)?.();
    this.pc.close();
    this.log({ dir: 'state', kind: 'connectionState', value: 'closed' });
  }
}

/** Thrown into a pending operation of a connection that was replaced or closed. */
class Replaced extends Error {
  constructor() {
    super('connection replaced');
  }
}

/**
 * The `stopped` flag of a transceiver in browsers that have it (the standard now says
 * `currentDirection === 'stopped'`); undefined, so false, where it is gone.
 * @param {RTCRtpTransceiver} tx
 */
export function stopped(tx) {
  return !!(/** @type {{stopped?: boolean}} */ (/** @type {unknown} */ (tx)).stopped);
}

/**
 * The message of a failure, for the timeline.
 * @param {unknown} e
 */
export function errorMessage(e) {
  return String((e instanceof Error && e.message) || e);
}

/**
 * The handlers a mesh Peer and the SfuPeer share: renegotiation, trickle ICE to `to`
 * (a null candidate is sent on as end-of-candidates), state logging, and an ICE restart
 * after a failure. `current()` is false once `pc` was replaced.
 * @param {{negotiate: () => unknown, restartIce: () => void, log: (e: LogEntry) => void,
 *   emit: (type: 'state', arg: {what: string, value: string}) => void, sendSignal: (m: Message) => boolean,
 *   localCandidates: Candidate[], lastFailRestart: number}} conn
 * @param {RTCPeerConnection} pc
 * @param {() => boolean} current
 * @param {string} to  the peer id the candidates go to
 */
export function wireConnection(conn, pc, current, to) {
  pc.onnegotiationneeded = () => {
    if (current()) conn.negotiate();
  };
  pc.onicecandidate = ({ candidate }) => {
    if (!current()) return;
    // A null candidate means gathering is complete: send it on as end-of-candidates.
    // (An empty candidate string is the legacy form of the same marker; skip it.)
    if (candidate && !candidate.candidate) return;
    if (candidate) {
      const c = parseCandidate(candidate.candidate);
      conn.localCandidates.push(c);
      conn.log({ dir: 'out', kind: 'candidate', cand: c });
    } else {
      conn.log({ dir: 'out', kind: 'endOfCandidates' });
    }
    conn.sendSignal({ type: 'candidate', to, candidate: candidate ? candidate.toJSON() : null });
  };
  for (const what of /** @type {const} */ (['signalingState', 'iceGatheringState', 'iceConnectionState', 'connectionState'])) {
    const ev = what === 'signalingState' ? 'signalingstatechange' : `${what.toLowerCase()}change`;
    pc.addEventListener(ev, () => {
      if (!current()) return;
      conn.log({ dir: 'state', kind: what, value: pc[what] });
      conn.emit('state', { what, value: pc[what] });
      if (what === 'iceConnectionState' && pc.iceConnectionState === 'failed') {
        // A path that failed may work with new candidates (e.g. TURN came up). At most
        // one such restart every 10 s, so a path that cannot work does not spin.
        const now = Date.now();
        if (now - conn.lastFailRestart > 10000) {
          conn.lastFailRestart = now;
          conn.restartIce();
        }
      }
    });
  }
}

/**
 * The session id of an SDP's o= line: a new RTCPeerConnection has a new one.
 * @param {string} sdp
 */
export function sessionId(sdp) {
  const m = /^o=\S+ (\S+) /m.exec(sdp || '');
  return m ? m[1] : null;
}

/**
 * What a learner wants from an SDP at a glance: the media sections and their codecs.
 * @param {string} sdp
 */
export function summarizeSdp(sdp) {
  /** @type {{kind: string, codecs: string[], direction: string}[]} */
  const media = [];
  /** @type {{kind: string, codecs: string[], direction: string}|null} */
  let cur = null;
  for (const line of sdp.split(/\r?\n/)) {
    if (line.startsWith('m=')) {
      cur = { kind: line.slice(2).split(' ')[0], codecs: [], direction: '' };
      media.push(cur);
    } else if (cur && line.startsWith('a=rtpmap:')) {
      const name = line.split(' ')[1]?.split('/')[0];
      if (name && !['rtx', 'red', 'ulpfec', 'flexfec-03', 'CN', 'telephone-event'].includes(name) && !cur.codecs.includes(name)) {
        cur.codecs.push(name);
      }
    } else if (cur && /^a=(sendrecv|sendonly|recvonly|inactive)$/.test(line)) {
      cur.direction = line.slice(2);
    }
  }
  const ice = /a=ice-ufrag:(\S+)/.exec(sdp);
  return { bytes: sdp.length, media, ufrag: ice ? ice[1] : '' };
}
