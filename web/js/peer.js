// One RTCPeerConnection to one remote peer, negotiated with the "perfect negotiation"
// pattern (W3C WebRTC §10.7) exactly as docs/signaling.md assigns the roles:
//   - the newcomer starts: it adds its transceivers at once, which fires
//     `negotiationneeded` and so sends the first offer;
//   - the peer already in the room waits: it adds its tracks only when that first offer
//     arrives, so both never offer at the same time on the first round;
//   - after that either side may offer (ICE restart, relay-only switch); on a collision
//     the polite side (the lower id, byte-wise) rolls back, the impolite side ignores.
// Every message exchanged and every state change is written to a timeline the
// connection panel shows.

import { parseCandidate } from './stats.js';

const TIMELINE_MAX = 400;

export class Peer {
  /**
   * @param {object} o
   * @param {string} o.id        remote peer id
   * @param {string} o.selfId    our id
   * @param {boolean} o.initiator we are the newcomer: we send the first offer
   * @param {RTCConfiguration} o.config
   * @param {(msg: object) => boolean} o.send  sends a signaling message
   * @param {() => {audio: MediaStreamTrack|null, video: MediaStreamTrack|null, stream: MediaStream}} o.localTracks
   */
  constructor({ id, selfId, initiator, config, send, localTracks }) {
    this.id = id;
    this.selfId = selfId;
    this.polite = selfId < id;
    this.initiator = initiator;
    this.config = config;
    this.sendSignal = send;
    this.localTracks = localTracks;
    this.timeline = [];
    this.listeners = new Map();
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.isSettingRemoteAnswerPending = false;
    this.tracksAdded = false;
    this.transceivers = { audio: null, video: null };
    this.remoteStream = new MediaStream();
    this.closed = false;
    this.createdAt = Date.now();
    this.localCandidates = [];
    this.remoteCandidates = [];
    this.pc = this.createPc();
    if (initiator) this.addLocalTracks();
  }

  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
  }

  emit(type, arg) {
    for (const fn of this.listeners.get(type) ?? []) fn(arg);
  }

  log(entry) {
    const e = { t: Date.now(), ...entry };
    this.timeline.push(e);
    if (this.timeline.length > TIMELINE_MAX) this.timeline.splice(0, this.timeline.length - TIMELINE_MAX);
    this.emit('timeline', e);
  }

  createPc() {
    const pc = new RTCPeerConnection(this.config);
    pc.onnegotiationneeded = () => this.negotiate();
    pc.onicecandidate = ({ candidate }) => {
      // A null candidate means gathering is complete: send it on as end-of-candidates.
      // (An empty candidate string is the legacy form of the same marker; skip it.)
      if (candidate && !candidate.candidate) return;
      if (candidate) {
        const c = parseCandidate(candidate.candidate);
        this.localCandidates.push(c);
        this.log({ dir: 'out', kind: 'candidate', cand: c });
      } else {
        this.log({ dir: 'out', kind: 'endOfCandidates' });
      }
      this.sendSignal({ type: 'candidate', to: this.id, candidate: candidate ? candidate.toJSON() : null });
    };
    for (const what of ['signalingState', 'iceGatheringState', 'iceConnectionState', 'connectionState']) {
      const ev = what === 'signalingState' ? 'signalingstatechange' : `${what.toLowerCase()}change`;
      pc.addEventListener(ev, () => {
        this.log({ dir: 'state', kind: what, value: pc[what] });
        this.emit('state', { what, value: pc[what] });
        if (what === 'iceConnectionState' && pc.iceConnectionState === 'failed') {
          // A path that failed may work with new candidates (e.g. TURN came up). At most
          // one such restart every 10 s, so a path that cannot work does not spin.
          const now = Date.now();
          if (!this.lastFailRestart || now - this.lastFailRestart > 10000) {
            this.lastFailRestart = now;
            this.restartIce();
          }
        }
      });
    }
    pc.ontrack = ({ track, streams }) => {
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

  /** Adds our audio and video (or receive-only transceivers when we have none). */
  addLocalTracks() {
    if (this.tracksAdded) return;
    this.tracksAdded = true;
    const { audio, video, stream } = this.localTracks();
    const existing = this.pc.getTransceivers();
    for (const kind of ['audio', 'video']) {
      const track = kind === 'audio' ? audio : video;
      // On the answering side the remote offer already created a transceiver per m-line;
      // addTrack reuses it and turns it to sendrecv.
      const offered = existing.find((t) => t.receiver.track.kind === kind && !t.stopped);
      if (offered) {
        if (track) {
          const sender = this.pc.addTrack(track, stream);
          this.transceivers[kind] = this.pc.getTransceivers().find((t) => t.sender === sender) ?? offered;
        } else {
          this.transceivers[kind] = offered;
        }
      } else {
        this.transceivers[kind] = this.pc.addTransceiver(track || kind, {
          direction: track ? 'sendrecv' : 'recvonly',
          streams: track ? [stream] : [],
        });
      }
    }
  }

  async negotiate() {
    if (this.closed) return;
    // The peer that was in the room first waits for the newcomer's offer.
    if (!this.initiator && !this.pc.remoteDescription) return;
    try {
      this.makingOffer = true;
      await this.pc.setLocalDescription();
      const desc = this.pc.localDescription;
      this.log({ dir: 'out', kind: desc.type, sdp: summarizeSdp(desc.sdp) });
      this.sendSignal({ type: desc.type, to: this.id, sdp: desc.sdp });
    } catch (e) {
      this.log({ dir: 'state', kind: 'error', value: String(e.message || e) });
    } finally {
      this.makingOffer = false;
    }
  }

  /** Handles an offer or answer from the remote peer. */
  async handleDescription(type, sdp) {
    if (this.closed) return;
    const pc = this.pc;
    this.log({ dir: 'in', kind: type, sdp: summarizeSdp(sdp) });
    const readyForOffer = !this.makingOffer && (pc.signalingState === 'stable' || this.isSettingRemoteAnswerPending);
    const offerCollision = type === 'offer' && !readyForOffer;
    this.ignoreOffer = !this.polite && offerCollision;
    if (this.ignoreOffer) {
      this.log({ dir: 'state', kind: 'ignoredOffer' });
      return;
    }
    if (offerCollision) this.log({ dir: 'state', kind: 'rollback' });
    try {
      this.isSettingRemoteAnswerPending = type === 'answer';
      await pc.setRemoteDescription({ type, sdp }); // rolls back our offer if needed
      this.isSettingRemoteAnswerPending = false;
      if (type === 'offer') {
        if (!this.tracksAdded) this.addLocalTracks();
        await pc.setLocalDescription();
        const desc = pc.localDescription;
        this.log({ dir: 'out', kind: desc.type, sdp: summarizeSdp(desc.sdp) });
        this.sendSignal({ type: desc.type, to: this.id, sdp: desc.sdp });
      }
    } catch (e) {
      this.isSettingRemoteAnswerPending = false;
      this.log({ dir: 'state', kind: 'error', value: String(e.message || e) });
    }
  }

  async handleCandidate(candidate) {
    if (this.closed) return;
    if (candidate && candidate.candidate) {
      const c = parseCandidate(candidate.candidate);
      this.remoteCandidates.push(c);
      this.log({ dir: 'in', kind: 'candidate', cand: c });
    } else {
      this.log({ dir: 'in', kind: 'endOfCandidates' });
    }
    try {
      if (candidate && candidate.candidate) {
        await this.pc.addIceCandidate(candidate);
      } else {
        await this.pc.addIceCandidate();
      }
    } catch (e) {
      // Candidates of an offer we ignored fail to apply; that is expected.
      if (!this.ignoreOffer) this.log({ dir: 'state', kind: 'error', value: String(e.message || e) });
    }
  }

  /** Sets the ICE transport policy ('all' or 'relay') and restarts ICE to apply it. */
  setRelayOnly(relayOnly) {
    const policy = relayOnly ? 'relay' : 'all';
    this.config = { ...this.config, iceTransportPolicy: policy };
    try {
      this.pc.setConfiguration(this.config);
    } catch (e) {
      this.log({ dir: 'state', kind: 'error', value: String(e.message || e) });
    }
    this.log({ dir: 'state', kind: 'relayPolicy', value: policy });
    this.restartIce();
  }

  restartIce() {
    if (this.closed) return;
    this.localCandidates = [];
    this.remoteCandidates = [];
    this.log({ dir: 'state', kind: 'iceRestart' });
    // If we are still waiting for the newcomer's first offer there is nothing to restart.
    if (!this.initiator && !this.pc.remoteDescription) return;
    this.pc.restartIce();
  }

  /** Replaces the outgoing track of one kind (device switch, screen share). */
  async replaceTrack(kind, track) {
    const tx = this.transceivers[kind];
    if (!tx) return;
    await tx.sender.replaceTrack(track);
  }

  getStats() {
    return this.pc.getStats();
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.pc.close();
    this.log({ dir: 'state', kind: 'connectionState', value: 'closed' });
  }
}

/** What a learner wants from an SDP at a glance: the media sections and their codecs. */
export function summarizeSdp(sdp) {
  const media = [];
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
