// The call's state, held here and nowhere else: other modules read it through `call` (a
// read-only view) and change it only through the functions this module exports, so
// every change of the call can be found here.

/** @typedef {import('./peer.js').Peer} Peer */
/** @typedef {import('./sfu.js').SfuPeer} SfuPeer */
/** @typedef {import('./signaling.js').Signaling} Signaling */
/** @typedef {import('./media.js').LocalMedia} LocalMedia */
/** @typedef {import('./panel.js').ConnPanel} ConnPanel */
/** @typedef {import('./tiles.js').Tile} Tile */
/** @typedef {import('./stats.js').Summary} Summary */
/** @typedef {import('./signaling.js').Message} Message */
/** @typedef {'mesh' | 'sfu'} Path  the way a peer's media comes: its mesh connection or the SFU */
/** @typedef {{audio: boolean, video: boolean, screen: boolean}} MediaFlags */
/**
 * Inbound video of one path, from getStats(); `liveAt` is when framesDecoded last grew.
 * @typedef {{framesDecoded: number, frameWidth: number, frameHeight: number, fps: number|null, liveAt: number, at: number}} VideoInfo
 */
/**
 * A remote participant, or a WHIP publisher (`external`: media through the SFU only).
 * @typedef {object} PeerEntry
 * @property {string} id
 * @property {string} name
 * @property {Readonly<MediaFlags>} media  what it says it sends (its `media` messages)
 * @property {boolean} external
 * @property {Peer|null} peer  the mesh connection, when the room is (or becomes) a mesh
 * @property {Tile} tile
 * @property {ConnPanel|null} panel  its connection panel, while open
 * @property {Summary|null} summary  the mesh connection's last stats summary
 * @property {Readonly<Record<Path, MediaStream|null>>} streams  received per path
 * @property {Readonly<Record<Path, Readonly<VideoInfo>|null>>} video  inbound video per path
 * @property {Path} source  the path its tile shows
 * @property {boolean} hand  a raised hand
 */
/** @typedef {Readonly<PeerEntry>} PeerView */
/** @typedef {{from: 'mesh'|'sfu', to: 'mesh'|'sfu', at: number, peers: number}} ModeChange */
/** @typedef {{to: 'mesh'|'sfu', since: number}} Transition */
/** @typedef {{bitrate: number|null, layers: Record<string, string>, rtt: number|null, at: number}} SfuStats */
/**
 * The server's state of our SFU session (GET /api/rooms/{room}/sfu): our entry and our
 * subscriptions by "publisher/kind".
 * @typedef {{at: number, me: Record<string, any>|null, subs: Map<string, Record<string, any>>}} SfuState
 */
/** @typedef {{from: string, name: string, text: string, ts: number, self: boolean}} ChatMessage */
/** @typedef {{code: string, message?: string, ref?: string, at: number}} ErrorEntry */
/** @typedef {{dir: 'in'|'out', type: string, at: number, to?: string, from?: string, id?: unknown, code?: string, reason?: string}} TrafficEntry */
/** @typedef {{from: string, data: string, at: number}} DataEntry */
/** @typedef {{peer: string, width: number, height: number}} ViewTile */

const TRAFFIC_LOG_MAX = 2000;
const DATA_LOG_MAX = 500;
const ERRORS_MAX = 200;
const CHAT_MAX = 500;
/** A path's video counts as live while its framesDecoded grew within this time. */
const LIVE_MS = 2500;

const s = {
  /** @type {'landing'|'call'} */
  view: 'landing',
  /** @type {string|null} */
  room: null,
  /** @type {string|null} */
  name: null,
  /** @type {string|null} */
  token: null,
  /** @type {'auto'|'mesh'|'sfu'|undefined} the policy asked for a room this join creates (?mode=) */
  joinMode: undefined,
  /** @type {string|null} our peer id */
  id: null,
  /** @type {Message|null} the last welcome/resumed */
  session: null,
  /** @type {RTCIceServer[]} */
  iceServers: [],
  relayOnly: false,
  /** @type {Map<string, PeerEntry>} */
  peers: new Map(),
  /** @type {'mesh'|'sfu'} the room's mode */
  mode: 'mesh',
  /** @type {ModeChange|null} the last switch, for the explanation */
  modeChange: null,
  /** @type {SfuPeer|null} the connection to the SFU, in SFU mode and during a switch */
  sfu: null,
  /** @type {Summary|null} */
  sfuSummary: null,
  /** @type {SfuStats|null} the last `sfu-stats` message */
  sfuStats: null,
  /** @type {SfuState|null} */
  sfuState: null,
  /** @type {Transition|null} a mode switch waiting for video on the new path */
  transition: null,
  /** @type {string|null} the active speaker */
  speaker: null,
  /** @type {DataEntry[]} data-channel messages received */
  dataLog: [],
  handUp: false,
  /** @type {{tiles: ViewTile[]|null, sent: number}} the last `view` sent, and how many were */
  lastView: { tiles: null, sent: 0 },
  /** @type {ChatMessage[]} */
  chat: [],
  /** @type {ErrorEntry[]} */
  errors: [],
  /** @type {TrafficEntry[]} every signaling frame sent or received */
  traffic: [],
  /** @type {LocalMedia|null} */
  media: null,
  /** @type {Signaling|null} */
  sig: null,
  /** @type {string|null} the peer whose connection panel is open */
  openPanel: null,
  chatOpen: true,
  unread: 0,
  /** Autoplay with sound was refused: remote videos play muted until "Unmute". */
  soundBlocked: false,
};

/** The call's state, read-only. */
export const call = Object.freeze({
  get view() { return s.view; },
  get room() { return s.room; },
  get name() { return s.name; },
  get token() { return s.token; },
  get joinMode() { return s.joinMode; },
  get id() { return s.id; },
  get session() { return s.session; },
  /** @returns {readonly RTCIceServer[]} */
  get iceServers() { return s.iceServers; },
  get relayOnly() { return s.relayOnly; },
  /** @returns {ReadonlyMap<string, PeerView>} */
  get peers() { return s.peers; },
  get mode() { return s.mode; },
  /** @returns {Readonly<ModeChange>|null} */
  get modeChange() { return s.modeChange; },
  get sfu() { return s.sfu; },
  get sfuSummary() { return s.sfuSummary; },
  /** @returns {Readonly<SfuStats>|null} */
  get sfuStats() { return s.sfuStats; },
  /** @returns {Readonly<SfuState>|null} */
  get sfuState() { return s.sfuState; },
  /** @returns {Readonly<Transition>|null} */
  get transition() { return s.transition; },
  get speaker() { return s.speaker; },
  /** @returns {readonly Readonly<DataEntry>[]} */
  get dataLog() { return s.dataLog; },
  get handUp() { return s.handUp; },
  /** @returns {Readonly<{tiles: readonly ViewTile[]|null, sent: number}>} */
  get lastView() { return s.lastView; },
  /** @returns {readonly Readonly<ChatMessage>[]} */
  get chat() { return s.chat; },
  /** @returns {readonly Readonly<ErrorEntry>[]} */
  get errors() { return s.errors; },
  /** @returns {readonly Readonly<TrafficEntry>[]} */
  get traffic() { return s.traffic; },
  get media() { return s.media; },
  get sig() { return s.sig; },
  get openPanel() { return s.openPanel; },
  get chatOpen() { return s.chatOpen; },
  get unread() { return s.unread; },
  get soundBlocked() { return s.soundBlocked; },
});

// ---------------------------------------------------------------- the session

/** @param {'landing'|'call'} view */
export function setView(view) {
  s.view = view;
}

/**
 * A join begins: the room, our name, the token (if any).
 * @param {{room: string, name: string, token: string|null}} o
 */
export function setJoin({ room, name, token }) {
  s.room = room;
  s.name = name;
  s.token = token || null;
}

/** @param {string|null} token */
export function setToken(token) {
  s.token = token;
}

/** @param {'auto'|'mesh'|'sfu'} mode */
export function setJoinMode(mode) {
  s.joinMode = mode;
}

/**
 * The server welcomed us: the call view, our id, the ICE servers.
 * @param {Message} welcome
 */
export function startSession(welcome) {
  s.view = 'call';
  s.id = welcome.id;
  s.session = welcome;
  s.name = welcome.name || s.name;
  s.iceServers = welcome.iceServers || [];
}

/**
 * The session survived a dropped socket (`resumed`).
 * @param {Message} msg
 */
export function resumeSession(msg) {
  s.session = msg;
  s.iceServers = msg.iceServers || s.iceServers;
}

/** We left: no id, no session, no raised hand, no chat. */
export function endSession() {
  s.id = null;
  s.session = null;
  s.handUp = false;
  s.chat = [];
}

/** @param {boolean} on */
export function setRelayOnly(on) {
  s.relayOnly = on;
}

/** @param {LocalMedia|null} media */
export function setMedia(media) {
  s.media = media;
}

/** @param {Signaling|null} sig */
export function setSignaling(sig) {
  s.sig = sig;
}

// ---------------------------------------------------------------- the room's mode and the SFU

/**
 * @param {'mesh'|'sfu'} mode
 * @param {ModeChange|null} change  the switch that led here, or null (joined so, or left)
 */
export function setRoomMode(mode, change) {
  s.mode = mode;
  s.modeChange = change;
}

/** @param {Transition|null} tr */
export function setTransition(tr) {
  s.transition = tr;
}

/**
 * The connection to the SFU (null: none); a new one has no stats summary yet.
 * @param {SfuPeer|null} sfu
 */
export function setSfu(sfu) {
  s.sfu = sfu;
  s.sfuSummary = null;
}

/** @param {Summary|null} summary */
export function setSfuSummary(summary) {
  s.sfuSummary = summary;
}

/** @param {SfuStats|null} stats */
export function setSfuStats(stats) {
  s.sfuStats = stats;
}

/** @param {SfuState} st */
export function setSfuState(st) {
  s.sfuState = st;
}

/** @param {string|null} id */
export function setSpeakerId(id) {
  s.speaker = id;
}

/**
 * A `view` message went out.
 * @param {ViewTile[]} tiles
 */
export function noteViewSent(tiles) {
  s.lastView = { tiles, sent: s.lastView.sent + 1 };
}

// ---------------------------------------------------------------- remote peers

/**
 * A new remote peer, with its tile already built.
 * @param {{id: string, name: string, media: MediaFlags, external: boolean, tile: Tile, source: Path}} p
 * @returns {PeerView}
 */
export function addEntry({ id, name, media, external, tile, source }) {
  /** @type {PeerEntry} */
  const e = {
    id,
    name,
    media,
    external,
    peer: null,
    tile,
    panel: null,
    summary: null,
    streams: { mesh: null, sfu: null },
    video: { mesh: null, sfu: null },
    source,
    hand: false,
  };
  s.peers.set(id, e);
  return e;
}

/** @param {string} id */
export function deleteEntry(id) {
  s.peers.delete(id);
}

/** The entry itself (this module's own, so changeable here). */
const own = (/** @type {PeerView} */ e) => /** @type {PeerEntry} */ (e);

/**
 * A peer's mesh connection (null: closed); a new one has no stats summary yet.
 * @param {PeerView} e
 * @param {Peer|null} peer
 */
export function setPeerConnection(e, peer) {
  own(e).peer = peer;
  own(e).summary = null;
}

/**
 * @param {PeerView} e
 * @param {Summary} summary
 */
export function setPeerSummary(e, summary) {
  own(e).summary = summary;
}

/**
 * @param {PeerView} e
 * @param {Path} path
 * @param {MediaStream|null} stream
 */
export function setPeerStream(e, path, stream) {
  own(e).streams = { ...e.streams, [path]: stream };
}

/**
 * @param {PeerView} e
 * @param {Path} path
 * @param {VideoInfo|null} info
 */
export function setPeerVideo(e, path, info) {
  own(e).video = { ...e.video, [path]: info };
}

/**
 * @param {PeerView} e
 * @param {MediaFlags} media
 */
export function setPeerMedia(e, media) {
  own(e).media = media;
}

/**
 * @param {PeerView} e
 * @param {boolean} up
 */
export function setPeerHand(e, up) {
  own(e).hand = up;
}

/**
 * @param {PeerView} e
 * @param {Path} path
 */
export function setPeerSource(e, path) {
  own(e).source = path;
}

/**
 * @param {PeerView} e
 * @param {ConnPanel|null} panel
 */
export function setPeerPanel(e, panel) {
  own(e).panel = panel;
}

// ---------------------------------------------------------------- logs

/** @param {{code: string, message?: string, ref?: string}} err */
export function logError(err) {
  s.errors.push({ code: err.code, message: err.message, ref: err.ref, at: Date.now() });
  if (s.errors.length > ERRORS_MAX) s.errors.shift();
}

/** @param {TrafficEntry} entry */
export function logTraffic(entry) {
  s.traffic.push(entry);
  if (s.traffic.length > TRAFFIC_LOG_MAX) s.traffic.splice(0, s.traffic.length - TRAFFIC_LOG_MAX);
}

/** @param {{from: string, data: string}} m */
export function logData({ from, data }) {
  s.dataLog.push({ from, data, at: Date.now() });
  if (s.dataLog.length > DATA_LOG_MAX) s.dataLog.shift();
}

/** @param {ChatMessage} m */
export function addChatMessage(m) {
  s.chat.push(m);
  if (s.chat.length > CHAT_MAX) s.chat.shift();
}

// ---------------------------------------------------------------- the page around the call

/** @param {string|null} id */
export function setOpenPanel(id) {
  s.openPanel = id;
}

/** @param {boolean} open */
export function setChatOpen(open) {
  s.chatOpen = open;
}

/** @param {number} n */
export function setUnread(n) {
  s.unread = n;
}

/** @param {boolean} up */
export function setHandUp(up) {
  s.handUp = up;
}

/** @param {boolean} blocked */
export function setSoundBlocked(blocked) {
  s.soundBlocked = blocked;
}

// ---------------------------------------------------------------- questions asked of the state

/**
 * Whether a path of a peer carries live video (its frames grew within LIVE_MS).
 * @param {PeerView} e
 * @param {Path} path
 */
export function isLive(e, path) {
  const v = e.video[path];
  return !!(v && v.liveAt && Date.now() - v.liveAt < LIVE_MS);
}

/**
 * The path a tile shows: the room mode's when its video is live, else whichever path is.
 * @param {PeerView} e
 * @returns {Path}
 */
export function pickSource(e) {
  /** @type {Path} */
  const pref = e.external ? 'sfu' : s.mode;
  /** @type {Path} */
  const other = pref === 'sfu' ? 'mesh' : 'sfu';
  if (isLive(e, pref)) return pref;
  if (isLive(e, other)) return other;
  if (e.streams[pref]) return pref;
  if (e.streams[other]) return other;
  return pref;
}

/**
 * The connection that carries a peer's media now: its mesh Peer or the SFU.
 * @param {PeerView|null|undefined} e
 * @returns {Peer|SfuPeer|null}
 */
export function connOf(e) {
  if (!e) return null;
  if (e.source === 'sfu' && s.sfu) return s.sfu;
  return e.peer || s.sfu || null;
}

/** The people in the call, us included (WHIP publishers are not people). */
export function countPeople() {
  let n = 1;
  for (const e of s.peers.values()) if (!e.external) n++;
  return n;
}

/** Whether the room wants mesh connections. */
export function meshWanted() {
  return s.mode === 'mesh';
}

/** A token without publish rights (canPublish: false) receives only. */
export function canPublish() {
  return !s.session || s.session.canPublish !== false;
}

/**
 * The URLs of an ICE server (`urls`, or the older `url`).
 * @param {RTCIceServer} server
 * @returns {string[]}
 */
export function iceServerUrls(server) {
  return /** @type {string[]} */ ([]).concat(server.urls || /** @type {{url?: string}} */ (server).url || []);
}

/** Whether the server gave us a TURN server. */
export function hasTurn() {
  return s.iceServers.some((i) => iceServerUrls(i).some((u) => /^turns?:/.test(u)));
}

/** @returns {RTCConfiguration} */
export function rtcConfig() {
  return { iceServers: s.iceServers, iceTransportPolicy: s.relayOnly ? 'relay' : 'all', bundlePolicy: 'max-bundle' };
}

/** What a new connection sends: our microphone and camera (or screen), unless we may not publish. */
export function localTracks() {
  const m = /** @type {LocalMedia} */ (s.media);
  return canPublish()
    ? { audio: m.audio, video: m.outgoingVideo(), stream: m.stream }
    : { audio: null, video: null, stream: m.stream };
}
