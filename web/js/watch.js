// The watch page (/watch/{room}): plays a room through WHEP (docs/sfu.md, "WHIP and
// WHEP"). One POST with a receive-only SDP offer to /whep/{room}; the 201 answer is the
// SDP answer and its Location the session's resource. Candidates gathered after the
// POST go to the resource as PATCH application/trickle-ice-sdpfrag; leaving the page
// DELETEs it. 404 means nobody publishes in the room yet: the page says so and retries.
//
// Optional ?token=… is sent as Authorization: Bearer. The page's state is read by the
// browser tests through `watching` (their hook, web/js/test/watch-hook.js, is not loaded
// by the page).

import { t, setLang, getLang, applyI18n, onLangChange, LANGUAGES } from './i18n.js';
import { $ } from './dom.js';

const GATHER_WAIT_MS = 1500;
const RETRY_404_MS = 3000;
const RETRY_ERROR_MS = [1000, 2000, 4000, 8000];
const RETRY_AUTH_MS = 15000;
const STALL_MS = 8000;
const DISCONNECTED_MS = 5000;

/** @typedef {'connecting'|'waiting'|'playing'|'failed'|'ended'|'unauthorized'|'forbidden'} Status */
/** @typedef {{at: number, what: 'patch'|'connect', message: string}} WatchError */
/**
 * What the stats line shows.
 * @typedef {object} WatchSummary
 * @property {number} framesDecoded
 * @property {number} frameWidth
 * @property {number} frameHeight
 * @property {number|null} fps
 * @property {number|null} kbps
 * @property {{local: string|undefined, remote: string|undefined, protocol: string|undefined}|null} pair
 * @property {RTCPeerConnectionState} connectionState
 */

const params = new URLSearchParams(location.search);
const state = {
  room: roomFromPath(),
  token: params.get('token') || null,
  /** @type {Status} */
  status: 'connecting',
  /** @type {Record<string, unknown>|null} */
  statusVars: null,
  /** @type {RTCPeerConnection|null} the WHEP connection */
  pc: null,
  /** @type {string|null} the session's resource (the Location of the 201) */
  resource: null,
  attempts: 0,
  failures: 0,
  /** @type {ReturnType<typeof setTimeout>|undefined} */
  retryTimer: undefined,
  /** @type {ReturnType<typeof setInterval>|undefined} */
  statsTimer: undefined,
  /** @type {{at: number, bytes: number}|null} */
  lastStats: null,
  /** @type {WatchSummary|null} */
  summary: null,
  framesDecoded: 0,
  framesAt: 0,
  disconnectedAt: 0,
  session: 0,
  /** @type {WatchError[]} */
  errors: [],
};

function roomFromPath() {
  const m = /^\/watch\/([^/]+)\/?$/.exec(location.pathname);
  if (!m) return null;
  try {
    return decodeURIComponent(m[1]);
  } catch {
    return null;
  }
}

/** @param {Record<string, string>} [extra] */
function authHeaders(extra = {}) {
  return state.token ? { ...extra, Authorization: `Bearer ${state.token}` } : extra;
}

/**
 * @param {Status} status
 * @param {Record<string, unknown>|null} [vars]
 */
function setStatus(status, vars) {
  state.status = status;
  state.statusVars = vars || null;
  const el = $('#watch-status');
  el.dataset.state = status;
  el.textContent = t(`watch.${status}`, vars);
}

// ---------------------------------------------------------------- the WHEP session

/**
 * @param {RTCPeerConnection} pc
 * @param {number} ms
 * @returns {Promise<void>}
 */
function waitForGathering(pc, ms) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === 'complete') done();
    };
    const timer = setTimeout(done, ms);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

/**
 * An application/trickle-ice-sdpfrag body (RFC 8840) for candidates of our offer.
 * @param {RTCPeerConnection} pc
 * @param {RTCIceCandidateInit[]} candidates
 * @param {boolean} end
 */
function sdpFrag(pc, candidates, end) {
  const sdp = pc.localDescription ? pc.localDescription.sdp : '';
  const ufrag = /a=ice-ufrag:(\S+)/.exec(sdp);
  const pwd = /a=ice-pwd:(\S+)/.exec(sdp);
  const mline = /^m=\S+ \S+ \S+ \S+/m.exec(sdp);
  const mid = (candidates[0] && candidates[0].sdpMid) || (/a=mid:(\S+)/.exec(sdp) || [])[1] || '0';
  const lines = [];
  if (ufrag) lines.push(`a=ice-ufrag:${ufrag[1]}`);
  if (pwd) lines.push(`a=ice-pwd:${pwd[1]}`);
  lines.push(mline ? mline[0].replace(/^(m=\S+) \S+/, '$1 9') : 'm=audio 9 UDP/TLS/RTP/SAVPF 0');
  lines.push(`a=mid:${mid}`);
  for (const c of candidates) lines.push(`a=${c.candidate}`);
  if (end) lines.push('a=end-of-candidates');
  return `${lines.join('\r\n')}\r\n`;
}

/**
 * @param {number} session
 * @param {RTCPeerConnection} pc
 * @param {RTCIceCandidateInit[]} candidates
 * @param {boolean} end
 */
async function patchCandidates(session, pc, candidates, end) {
  if (session !== state.session || !state.resource) return;
  try {
    await fetch(state.resource, {
      method: 'PATCH',
      headers: authHeaders({ 'Content-Type': 'application/trickle-ice-sdpfrag' }),
      body: sdpFrag(pc, candidates, end),
    });
  } catch (e) {
    state.errors.push({ at: Date.now(), what: 'patch', message: String(e) });
  }
}

function endSession() {
  const res = state.resource;
  state.resource = null;
  if (state.pc) {
    state.pc.close();
    state.pc = null;
  }
  if (res) {
    fetch(res, { method: 'DELETE', headers: authHeaders(), keepalive: true }).catch(() => {});
  }
}

async function connect() {
  clearTimeout(state.retryTimer);
  endSession();
  const session = ++state.session;
  state.attempts++;
  state.framesDecoded = 0;
  state.framesAt = 0;
  state.disconnectedAt = 0;
  state.lastStats = null;
  setStatus(state.status === 'waiting' ? 'waiting' : 'connecting');

  const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
  state.pc = pc;
  pc.addTransceiver('audio', { direction: 'recvonly' });
  pc.addTransceiver('video', { direction: 'recvonly' });
  const stream = new MediaStream();
  const video = /** @type {HTMLVideoElement} */ ($('#watch-video'));
  pc.ontrack = ({ track }) => {
    if (session !== state.session) return;
    stream.addTrack(track);
    if (video.srcObject !== stream) video.srcObject = stream;
    video.play().catch(() => {});
  };
  // Candidates found after the POST are trickled; before, they are in the offer.
  let posted = false;
  /** @type {RTCIceCandidateInit[]} */
  const late = [];
  pc.onicecandidate = ({ candidate }) => {
    if (session !== state.session || !posted) return;
    if (candidate && candidate.candidate) {
      if (state.resource) patchCandidates(session, pc, [candidate.toJSON()], false);
      else late.push(candidate.toJSON());
    } else if (!candidate && state.resource) {
      patchCandidates(session, pc, [], true);
    }
  };
  pc.onconnectionstatechange = () => {
    if (session !== state.session) return;
    const s = pc.connectionState;
    if (s === 'failed') {
      setStatus('ended');
      retry(RETRY_ERROR_MS[0]);
    } else if (s === 'disconnected') {
      state.disconnectedAt = Date.now();
    } else {
      state.disconnectedAt = 0;
    }
  };

  let resp;
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await waitForGathering(pc, GATHER_WAIT_MS);
    if (session !== state.session) return;
    posted = true;
    resp = await fetch(`/whep/${encodeURIComponent(state.room || '')}`, {
      method: 'POST',
      headers: authHeaders({ 'Content-Type': 'application/sdp', Accept: 'application/sdp' }),
      body: pc.localDescription ? pc.localDescription.sdp : '',
    });
  } catch (e) {
    if (session !== state.session) return;
    failed(errorMessage(e));
    return;
  }
  if (session !== state.session) return;
  if (resp.status === 404) {
    // Nobody publishes in this room (yet).
    pc.close();
    state.pc = null;
    setStatus('waiting');
    retry(RETRY_404_MS);
    return;
  }
  if (resp.status === 401 || resp.status === 403) {
    pc.close();
    state.pc = null;
    setStatus(resp.status === 401 ? 'unauthorized' : 'forbidden');
    retry(RETRY_AUTH_MS);
    return;
  }
  if (resp.status !== 201 && resp.status !== 200) {
    pc.close();
    state.pc = null;
    const body = await resp.text().catch(() => '');
    failed(`HTTP ${resp.status}${body ? `: ${body.trim().slice(0, 120)}` : ''}`);
    return;
  }
  const answer = await resp.text();
  const loc = resp.headers.get('Location');
  state.resource = loc ? new URL(loc, location.href).href : null;
  try {
    await pc.setRemoteDescription({ type: 'answer', sdp: answer });
  } catch (e) {
    failed(errorMessage(e));
    return;
  }
  state.failures = 0;
  if (late.length) patchCandidates(session, pc, late.splice(0), pc.iceGatheringState === 'complete');
  setStatus('connecting');
}

/** @param {unknown} e */
function errorMessage(e) {
  return String((e instanceof Error && e.message) || e);
}

/** @param {string} reason */
function failed(reason) {
  state.errors.push({ at: Date.now(), what: 'connect', message: reason });
  if (state.errors.length > 100) state.errors.shift();
  setStatus('failed', { reason });
  retry(RETRY_ERROR_MS[Math.min(state.failures++, RETRY_ERROR_MS.length - 1)]);
}

/** @param {number} ms */
function retry(ms) {
  clearTimeout(state.retryTimer);
  state.retryTimer = setTimeout(connect, ms);
}

// ---------------------------------------------------------------- stats line

async function pollStats() {
  const pc = state.pc;
  if (!pc) {
    $('#watch-stats').textContent = '';
    return;
  }
  let report;
  try {
    report = await pc.getStats();
  } catch {
    return;
  }
  if (pc !== state.pc) return;
  const all = [...report.values()];
  const byId = new Map(all.map((s) => [s.id, s]));
  const v = all.find((s) => s.type === 'inbound-rtp' && s.kind === 'video');
  const bytes = all.filter((s) => s.type === 'inbound-rtp').reduce((n, s) => n + (s.bytesReceived || 0), 0);
  const now = performance.now();
  let kbps = null;
  if (state.lastStats && now > state.lastStats.at) kbps = Math.round(((bytes - state.lastStats.bytes) * 8) / (now - state.lastStats.at));
  state.lastStats = { at: now, bytes };
  const transport = all.find((s) => s.type === 'transport' && s.selectedCandidatePairId);
  const pair = transport && byId.get(transport.selectedCandidatePairId);
  const lc = pair && byId.get(pair.localCandidateId);
  const rc = pair && byId.get(pair.remoteCandidateId);
  const frames = v ? v.framesDecoded || 0 : 0;
  const wall = Date.now();
  if (frames > state.framesDecoded) {
    state.framesDecoded = frames;
    state.framesAt = wall;
  }
  state.summary = {
    framesDecoded: frames,
    frameWidth: v ? v.frameWidth || 0 : 0,
    frameHeight: v ? v.frameHeight || 0 : 0,
    fps: v && v.framesPerSecond !== undefined ? v.framesPerSecond : null,
    kbps,
    pair: pair ? { local: lc && `${lc.candidateType} ${lc.address}:${lc.port}`, remote: rc && `${rc.candidateType} ${rc.address}:${rc.port}`, protocol: lc && lc.protocol } : null,
    connectionState: pc.connectionState,
  };
  const s = state.summary;
  if (frames > 0 && pc.connectionState === 'connected') {
    if (state.status !== 'playing') setStatus('playing');
  }
  const rate = kbps === null ? '—' : kbps >= 1000 ? t('unit.mbps', { v: (kbps / 1000).toFixed(2) }) : t('unit.kbps', { v: kbps });
  const pairText = s.pair ? `${s.pair.local} ⇄ ${s.pair.remote} (${s.pair.protocol || '?'})` : '—';
  $('#watch-stats').textContent = t('watch.stats', {
    size: s.frameWidth ? `${s.frameWidth}×${s.frameHeight}` : '—',
    fps: s.fps !== null ? Math.round(s.fps) : '—',
    rate,
    pair: pairText,
  });
  // The publisher went away (frames stopped) or the path broke: start a new session.
  const stalled = state.status === 'playing' && wall - state.framesAt > STALL_MS;
  const lost = state.disconnectedAt && wall - state.disconnectedAt > DISCONNECTED_MS;
  if (stalled || lost) {
    setStatus('ended');
    retry(RETRY_ERROR_MS[0]);
  }
}

// ---------------------------------------------------------------- page

function init() {
  const sel = /** @type {HTMLSelectElement} */ ($('#lang-select'));
  sel.replaceChildren(...LANGUAGES.map((l) => Object.assign(document.createElement('option'), { value: l.code, textContent: l.label })));
  sel.value = getLang();
  sel.addEventListener('change', () => setLang(sel.value));
  const render = () => {
    sel.value = getLang();
    const room = state.room || '';
    $('#room-name').textContent = room;
    $('#watch-heading').textContent = state.room ? t('watch.heading', { room }) : t('watch.noRoom');
    document.title = state.room ? `${t('watch.title', { room })} · tsunagi` : 'tsunagi';
    setStatus(state.status, state.statusVars);
  };
  applyI18n(document);
  onLangChange(render);
  const q = state.token ? `?token=${encodeURIComponent(state.token)}` : '';
  if (state.room) /** @type {HTMLAnchorElement} */ ($('#open-call')).href = `/r/${encodeURIComponent(state.room)}${q}`;
  const video = /** @type {HTMLVideoElement} */ ($('#watch-video'));
  const unmute = $('#watch-unmute');
  unmute.addEventListener('click', () => {
    video.muted = false;
    video.play().catch(() => {});
    unmute.hidden = true;
  });
  render();
  window.addEventListener('pagehide', endSession);
  if (!state.room) {
    setStatus('failed', { reason: t('watch.noRoom') });
    return;
  }
  state.statsTimer = setInterval(pollStats, 1000);
  connect();
}

/** The page's state, read-only (for the browser tests' hook). */
export const watching = Object.freeze({
  get room() {
    return state.room;
  },
  /** connecting | waiting | playing | failed | ended | unauthorized | forbidden */
  get status() {
    return state.status;
  },
  get resource() {
    return state.resource;
  },
  get attempts() {
    return state.attempts;
  },
  /** @returns {readonly Readonly<WatchError>[]} */
  get errors() {
    return state.errors;
  },
  /** @returns {Readonly<WatchSummary>|null} the latest stats summary */
  get summary() {
    return state.summary;
  },
  /** The WHEP connection, or null between sessions. */
  get pc() {
    return state.pc;
  },
});

init();
