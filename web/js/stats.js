// Turns RTCPeerConnection.getStats() into what the connection panel shows: the selected
// candidate pair, the path it means (direct, through a NAT, relayed by TURN), bitrates,
// loss, codecs and decoded frames.

/**
 * The fields of an a=candidate line.
 * @typedef {object} Candidate
 * @property {string} foundation
 * @property {number} component
 * @property {string} protocol
 * @property {number} priority
 * @property {string} address
 * @property {number} port
 * @property {string} type  host | srflx | prflx | relay
 * @property {string} [relatedAddress]
 * @property {number} [relatedPort]
 * @property {string} [tcpType]
 */
/**
 * A candidate as getStats() reports it.
 * @typedef {{id: string, type: string, address: string, port: number, protocol: string, relayProtocol?: string, url?: string}} CandidateInfo
 */
/**
 * The path media takes: direct, through a NAT (a reflexive candidate), or relayed by TURN
 * (on our side, theirs or both).
 * @typedef {{kind: 'none'} | {kind: 'direct'} | {kind: 'nat', type: string} | {kind: 'relay', proto: string, side: 'local'|'remote'|'both'}} PathInfo
 */
/**
 * @typedef {object} Pair  the selected candidate pair
 * @property {string} id
 * @property {string} state
 * @property {boolean} nominated
 * @property {number|null} rttMs
 * @property {number|null} availableOutgoingKbps
 * @property {CandidateInfo|null} local
 * @property {CandidateInfo|null} remote
 */
/**
 * @typedef {object} Inbound
 * @property {string|null} codec
 * @property {number} bytesReceived
 * @property {number} packetsReceived
 * @property {number} packetsLost
 * @property {number} lossPct
 * @property {number|null} jitterMs
 * @property {number} [framesDecoded]
 * @property {number} [width]
 * @property {number} [height]
 * @property {number} [fps]
 */
/** @typedef {{codec: string|null, bytesSent: number, width?: number, height?: number, fps?: number}} Outbound */
/**
 * What the connection panel shows of one connection (plain, JSON-serializable data).
 * @typedef {object} Summary
 * @property {number} at  the stats' timestamp
 * @property {number} bytesSent
 * @property {number} bytesReceived
 * @property {number|null} sendKbps
 * @property {number|null} recvKbps
 * @property {Pair|null} pair
 * @property {PathInfo} path
 * @property {{in: Inbound|null, out: Outbound|null}} audio
 * @property {{in: Inbound|null, out: Outbound|null}} video
 * @property {{local: CandidateInfo[], remote: CandidateInfo[]}} candidates
 */

/**
 * Parses an a=candidate line ("candidate:... typ host ...") into its fields.
 * @param {string|null|undefined} line
 */
export function parseCandidate(line) {
  const s = String(line || '').replace(/^a=/, '').replace(/^candidate:/, '');
  const f = s.split(/\s+/);
  /** @type {Candidate} */
  const c = {
    foundation: f[0],
    component: Number(f[1]),
    protocol: (f[2] || '').toLowerCase(),
    priority: Number(f[3]),
    address: f[4] || '',
    port: Number(f[5]),
    type: '',
  };
  for (let i = 6; i + 1 < f.length; i += 2) {
    const k = f[i];
    const v = f[i + 1];
    if (k === 'typ') c.type = v;
    else if (k === 'raddr') c.relatedAddress = v;
    else if (k === 'rport') c.relatedPort = Number(v);
    else if (k === 'tcptype') c.tcpType = v;
  }
  return c;
}

/**
 * @param {any} s  a local-candidate or remote-candidate stats entry, if any
 * @returns {CandidateInfo|null}
 */
function candidateInfo(s) {
  return s ? info(s) : null;
}

/**
 * @param {any} s  a local-candidate or remote-candidate stats entry
 * @returns {CandidateInfo}
 */
function info(s) {
  return {
    id: s.id,
    type: s.candidateType,
    address: s.address ?? s.ip ?? '',
    port: s.port,
    protocol: s.protocol,
    relayProtocol: s.relayProtocol,
    url: s.url,
  };
}

/**
 * Classifies the path of a selected pair. A remote peer-reflexive candidate that has the
 * address of a candidate signaled later is that candidate (it was only learned first
 * from a connectivity check), so it is classified by the signaled type.
 */
/**
 * @param {CandidateInfo|null} local
 * @param {CandidateInfo|null} remote
 * @param {CandidateInfo[]} [remoteList]
 * @returns {PathInfo}
 */
export function classifyPath(local, remote, remoteList = []) {
  if (!local || !remote) return { kind: 'none' };
  let remoteType = remote.type;
  if (remoteType === 'prflx') {
    const same = remoteList.find((c) => c.type !== 'prflx' && c.address === remote.address && c.port === remote.port);
    if (same) remoteType = same.type;
  }
  if (local.type === 'relay' || remoteType === 'relay') {
    const proto = local.type === 'relay' ? local.relayProtocol || 'udp' : remote.protocol || 'udp';
    return { kind: 'relay', proto, side: local.type === 'relay' ? (remoteType === 'relay' ? 'both' : 'local') : 'remote' };
  }
  for (const type of ['srflx', 'prflx']) {
    if (local.type === type || remoteType === type) return { kind: 'nat', type };
  }
  return { kind: 'direct' };
}

/**
 * @param {Map<string, any>} byId
 * @param {string|undefined} id
 */
function codecName(byId, id) {
  const c = id && byId.get(id);
  return c ? c.mimeType.replace(/^(audio|video)\//, '') : null;
}

/**
 * Summarizes a stats report. `prev` is the previous summary (for bitrates), or null.
 * The result is plain data (JSON-serializable).
 */
/**
 * @param {RTCStatsReport} report
 * @param {Summary|null} prev
 * @returns {Summary}
 */
export function summarize(report, prev) {
  /** @type {Map<string, any>} */
  const byId = new Map();
  report.forEach((s) => byId.set(s.id, s));
  const all = [...byId.values()];

  const transport = all.find((s) => s.type === 'transport' && s.selectedCandidatePairId) ?? all.find((s) => s.type === 'transport');
  let pairStats = transport && transport.selectedCandidatePairId ? byId.get(transport.selectedCandidatePairId) : null;
  if (!pairStats) {
    pairStats = all.find((s) => s.type === 'candidate-pair' && (s.selected || (s.nominated && s.state === 'succeeded')));
  }

  const locals = all.filter((s) => s.type === 'local-candidate').map(info);
  const remotes = all.filter((s) => s.type === 'remote-candidate').map(info);
  let pair = null;
  if (pairStats) {
    pair = {
      id: pairStats.id,
      state: pairStats.state,
      nominated: !!pairStats.nominated,
      rttMs: pairStats.currentRoundTripTime !== undefined ? Math.round(pairStats.currentRoundTripTime * 1000) : null,
      availableOutgoingKbps: pairStats.availableOutgoingBitrate ? Math.round(pairStats.availableOutgoingBitrate / 1000) : null,
      local: candidateInfo(byId.get(pairStats.localCandidateId)),
      remote: candidateInfo(byId.get(pairStats.remoteCandidateId)),
    };
  }
  /** @type {PathInfo} */
  const path = pair ? classifyPath(pair.local, pair.remote, remotes) : { kind: 'none' };

  /** @type {Record<string, Outbound|null>} */
  const out = { audio: null, video: null };
  /** @type {Record<string, Inbound|null>} */
  const inn = { audio: null, video: null };
  let rtpSent = 0;
  let rtpRecv = 0;
  for (const s of all) {
    if (s.type === 'inbound-rtp') {
      rtpRecv += s.bytesReceived ?? 0;
      const lost = Math.max(0, s.packetsLost ?? 0);
      const got = s.packetsReceived ?? 0;
      inn[s.kind] = {
        codec: codecName(byId, s.codecId),
        bytesReceived: s.bytesReceived ?? 0,
        packetsReceived: got,
        packetsLost: lost,
        lossPct: got + lost > 0 ? (100 * lost) / (got + lost) : 0,
        jitterMs: s.jitter !== undefined ? Math.round(s.jitter * 1000) : null,
        framesDecoded: s.framesDecoded,
        width: s.frameWidth,
        height: s.frameHeight,
        fps: s.framesPerSecond,
      };
    } else if (s.type === 'outbound-rtp') {
      rtpSent += s.bytesSent ?? 0;
      out[s.kind] = {
        codec: codecName(byId, s.codecId),
        bytesSent: s.bytesSent ?? 0,
        width: s.frameWidth,
        height: s.frameHeight,
        fps: s.framesPerSecond,
      };
    }
  }

  const at = transport ? transport.timestamp : performance.timeOrigin + performance.now();
  const bytesSent = transport && transport.bytesSent !== undefined ? transport.bytesSent : rtpSent;
  const bytesReceived = transport && transport.bytesReceived !== undefined ? transport.bytesReceived : rtpRecv;
  let sendKbps = null;
  let recvKbps = null;
  if (prev && at > prev.at) {
    const dt = (at - prev.at) / 1000;
    if (bytesSent >= prev.bytesSent) sendKbps = Math.round(((bytesSent - prev.bytesSent) * 8) / 1000 / dt);
    if (bytesReceived >= prev.bytesReceived) recvKbps = Math.round(((bytesReceived - prev.bytesReceived) * 8) / 1000 / dt);
  }

  return {
    at,
    bytesSent,
    bytesReceived,
    sendKbps,
    recvKbps,
    pair,
    path,
    audio: { in: inn.audio, out: out.audio },
    video: { in: inn.video, out: out.video },
    candidates: { local: locals, remote: remotes },
  };
}
