// Turns RTCPeerConnection.getStats() into what the connection panel shows: the selected
// candidate pair, the path it means (direct, through a NAT, relayed by TURN), bitrates,
// loss, codecs and decoded frames.

/** Parses an a=candidate line ("candidate:... typ host ...") into its fields. */
export function parseCandidate(line) {
  const s = String(line || '').replace(/^a=/, '').replace(/^candidate:/, '');
  const f = s.split(/\s+/);
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

function candidateInfo(s) {
  if (!s) return null;
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

function codecName(byId, id) {
  const c = id && byId.get(id);
  return c ? c.mimeType.replace(/^(audio|video)\//, '') : null;
}

/**
 * Summarizes a stats report. `prev` is the previous summary (for bitrates), or null.
 * The result is plain data (JSON-serializable).
 */
export function summarize(report, prev) {
  const byId = new Map();
  report.forEach((s) => byId.set(s.id, s));
  const all = [...byId.values()];

  const transport = all.find((s) => s.type === 'transport' && s.selectedCandidatePairId) ?? all.find((s) => s.type === 'transport');
  let pairStats = transport && transport.selectedCandidatePairId ? byId.get(transport.selectedCandidatePairId) : null;
  if (!pairStats) {
    pairStats = all.find((s) => s.type === 'candidate-pair' && (s.selected || (s.nominated && s.state === 'succeeded')));
  }

  const locals = all.filter((s) => s.type === 'local-candidate').map(candidateInfo);
  const remotes = all.filter((s) => s.type === 'remote-candidate').map(candidateInfo);
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
  const path = pair ? classifyPath(pair.local, pair.remote, remotes) : { kind: 'none' };

  const out = { audio: null, video: null };
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
