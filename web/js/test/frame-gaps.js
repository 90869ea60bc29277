// The frame-gap monitor of the browser tests (loaded only with the test hook, never by
// the pages themselves).
//
// Started by the first `frameGaps()` call and never before. It watches both video
// elements of every remote tile (mesh and SFU) and keeps, per remote peer, the largest
// interval between consecutive presented frames on either element, measured in the page
// (requestVideoFrameCallback), so it does not depend on how often a test can read it. An
// element on which rVFC has not fired (no rVFC in this browser, or none for an element
// that is not composited) counts a frame when its decoded-frame counter moves, read by a
// 100 ms page timer.

import { call } from '../state.js';

/** @typedef {'mesh'|'sfu'} Path */
/**
 * @typedef {object} PeerGaps
 * @property {number} frames
 * @property {number|null} first
 * @property {number|null} last
 * @property {number} maxGap
 * @property {number|null} gapFrom
 * @property {number|null} gapTo
 * @property {Path|null} gapPath
 * @property {Record<Path, {frames: number, rvfc: number, poll: number}>} paths
 */
/** @typedef {{id: string, path: Path, v: HTMLVideoElement, count: number, rvfcSeen: boolean}} Watcher */

const FRAME_POLL_MS = 100;
const FRAME_STALL_MS = 250;

const mon = {
  /** @type {ReturnType<typeof setInterval>|null} */
  timer: null,
  resetAt: 0,
  /** @type {Map<string, PeerGaps>} */
  peers: new Map(),
  /** @type {Watcher[]} */
  watchers: [],
  /** @type {WeakSet<HTMLVideoElement>} */
  watched: new WeakSet(),
  /** @type {number|null} */
  lastTick: null,
  maxTickGap: 0,
  /** @type {number|null} */
  tickGapFrom: null,
  /** @type {[number, number][]} */
  stalls: [],
  /** @type {[number, number][]} */
  longTasks: [],
  /**
   * Scripts that ran in long animation frames (the Long Animation Frames API): what the
   * page's main thread ran while it was busy.
   * @type {{start: number, end: number, what: string}[]}
   */
  scripts: [],
};

/** @param {string} id */
function peerGaps(id) {
  let r = mon.peers.get(id);
  if (!r) {
    r = { frames: 0, first: null, last: null, maxGap: 0, gapFrom: null, gapTo: null, gapPath: null, paths: { mesh: { frames: 0, rvfc: 0, poll: 0 }, sfu: { frames: 0, rvfc: 0, poll: 0 } } };
    mon.peers.set(id, r);
  }
  return r;
}

/**
 * @param {string} id
 * @param {Path} path
 * @param {number} at
 * @param {'rvfc'|'poll'} via
 */
function noteFrame(id, path, at, via) {
  const r = peerGaps(id);
  r.frames++;
  r.paths[path].frames++;
  r.paths[path][via]++;
  if (r.last === null) {
    r.first = at;
    r.last = at;
    return;
  }
  if (at <= r.last) return;
  const from = Math.max(r.last, mon.resetAt);
  if (at - from > r.maxGap) {
    r.maxGap = at - from;
    r.gapFrom = from;
    r.gapTo = at;
    r.gapPath = path;
  }
  r.last = at;
}

/** @param {HTMLVideoElement} v */
function decodedCount(v) {
  try {
    const q = v.getVideoPlaybackQuality && v.getVideoPlaybackQuality();
    if (q && typeof q.totalVideoFrames === 'number') return q.totalVideoFrames - (q.droppedVideoFrames || 0);
  } catch {
    // fall through
  }
  const legacy = /** @type {{webkitDecodedFrameCount?: number}} */ (v).webkitDecodedFrameCount;
  return typeof legacy === 'number' ? legacy : 0;
}

/**
 * @param {string} id
 * @param {Path} path
 * @param {HTMLVideoElement} v
 */
function watchVideo(id, path, v) {
  mon.watched.add(v);
  /** @type {Watcher} */
  const w = { id, path, v, count: decodedCount(v), rvfcSeen: false };
  mon.watchers.push(w);
  if (typeof v.requestVideoFrameCallback === 'function') {
    /** @type {VideoFrameRequestCallback} */
    const onFrame = (now, meta) => {
      w.rvfcSeen = true;
      noteFrame(id, path, meta && typeof meta.presentationTime === 'number' ? meta.presentationTime : now, 'rvfc');
      if (v.isConnected) v.requestVideoFrameCallback(onFrame);
    };
    v.requestVideoFrameCallback(onFrame);
  }
}

function tick() {
  // How late the page's own timer runs: a page that did not run for a while could not
  // present frames either (CPU starvation of this renderer, not a gap in the media).
  const t = performance.now();
  if (mon.lastTick !== null) {
    const from = Math.max(mon.lastTick, mon.resetAt);
    if (t - from > mon.maxTickGap) {
      mon.maxTickGap = t - from;
      mon.tickGapFrom = from;
    }
    if (t - mon.lastTick > FRAME_STALL_MS) {
      mon.stalls.push([mon.lastTick, t]);
      if (mon.stalls.length > 200) mon.stalls.shift();
    }
  }
  mon.lastTick = t;
  for (const e of call.peers.values()) {
    for (const [path, v] of /** @type {[Path, HTMLVideoElement][]} */ (Object.entries(e.tile.videos))) if (!mon.watched.has(v)) watchVideo(e.id, path, v);
  }
  const now = performance.now();
  mon.watchers = mon.watchers.filter((w) => w.v.isConnected);
  for (const w of mon.watchers) {
    const c = decodedCount(w.v);
    if (c !== w.count) {
      w.count = c;
      if (c > 0 && !w.rvfcSeen) noteFrame(w.id, w.path, now, 'poll');
    }
  }
}

/**
 * The five longest scripts of long animation frames within [a, b].
 * @param {number|null} a
 * @param {number|null} b
 */
function stallScripts(a, b) {
  if (a === null || b === null) return [];
  return mon.scripts
    .filter((x) => x.end > a && x.start < b)
    .sort((x, y) => y.end - y.start - (x.end - x.start))
    .slice(0, 5)
    .map((x) => `${x.what} ${Math.round(x.end - x.start)}`);
}

/**
 * Presented-frame gaps per remote peer, measured in the page (started by the first call).
 * `reset`: forget the gaps so far (and start measuring now).
 * @param {{reset?: boolean}} [o]
 */
export function frameGaps({ reset = false } = {}) {
  if (!mon.timer) {
    mon.timer = setInterval(tick, FRAME_POLL_MS);
    tick();
    // Tasks of over 50 ms on the page's main thread (its own script, or a call into the
    // browser that blocked it): a stall they fill was the page busy, a stall they do not
    // fill was the page not getting the CPU at all.
    try {
      new PerformanceObserver((list) => {
        for (const e of list.getEntries()) mon.longTasks.push([e.startTime, e.startTime + e.duration]);
        if (mon.longTasks.length > 200) mon.longTasks.splice(0, mon.longTasks.length - 200);
      }).observe({ type: 'longtask', buffered: false });
    } catch {
      // no long-task timing in this browser
    }
    try {
      new PerformanceObserver((list) => {
        for (const f of list.getEntries()) {
          const lf = /** @type {any} */ (f);
          const scriptMs = (lf.scripts || []).reduce((/** @type {number} */ n, /** @type {any} */ x) => n + x.duration, 0);
          const render = lf.renderStart ? f.startTime + f.duration - lf.renderStart : 0;
          const layout = lf.styleAndLayoutStart ? f.startTime + f.duration - lf.styleAndLayoutStart : 0;
          mon.scripts.push({ start: f.startTime, end: f.startTime + f.duration, what: `frame (scripts ${Math.round(scriptMs)}, rendering ${Math.round(render)} of it style+layout ${Math.round(layout)})` });
          for (const sc of lf.scripts || []) {
            if (sc.duration < 20) continue;
            const file = (sc.sourceURL || '').replace(/^.*\//, '');
            const fn = sc.sourceFunctionName || '?';
            mon.scripts.push({ start: sc.startTime, end: sc.startTime + sc.duration, what: `${sc.invoker || sc.invokerType} ${fn}@${file}:${sc.sourceCharPosition}` });
          }
        }
        if (mon.scripts.length > 200) mon.scripts.splice(0, mon.scripts.length - 200);
      }).observe({ type: 'long-animation-frame', buffered: false });
    } catch {
      // no long-animation-frame timing in this browser
    }
  }
  const now = performance.now();
  if (reset) {
    mon.resetAt = now;
    mon.maxTickGap = 0;
    mon.tickGapFrom = null;
    mon.stalls = [];
    mon.longTasks = [];
    mon.scripts = [];
    for (const r of mon.peers.values()) {
      r.maxGap = 0;
      r.gapFrom = null;
      r.gapTo = null;
      r.gapPath = null;
    }
  }
  const wall = (/** @type {number|null} */ t) => (t === null ? null : new Date(performance.timeOrigin + t).toISOString());
  // How much of [a, b] the spans cover (e.g. the page's own timer not running: stalls over FRAME_STALL_MS).
  const overlap = (/** @type {[number, number][]} */ spans, /** @type {number|null} */ a, /** @type {number|null} */ b) =>
    a === null || b === null ? 0 : spans.reduce((n, [x, y]) => n + Math.max(0, Math.min(b, y) - Math.max(a, x)), 0);
  const stalledIn = (/** @type {number|null} */ a, /** @type {number|null} */ b) => overlap(mon.stalls, a, b);
  /** @type {Record<string, object>} */
  const peers = {};
  for (const [id, r] of mon.peers) {
    const e = call.peers.get(id);
    peers[id] = {
      name: e ? e.name : null,
      present: !!e,
      frames: r.frames,
      maxGap: Math.round(r.maxGap),
      gapFrom: wall(r.gapFrom),
      gapPath: r.gapPath,
      // Of the largest gap, the time this page's own timer did not run either (CPU).
      gapPageStalled: Math.round(stalledIn(r.gapFrom, r.gapTo)),
      // Since the last frame (or the reset, if later): a gap still open.
      sinceLast: r.last === null ? null : Math.round(now - Math.max(r.last, mon.resetAt)),
      paths: { mesh: { ...r.paths.mesh }, sfu: { ...r.paths.sfu } },
    };
  }
  return {
    rvfc: typeof HTMLVideoElement.prototype.requestVideoFrameCallback === 'function',
    resetAt: wall(mon.resetAt || null),
    // The largest interval between two runs of the page's 100 ms timer since the reset.
    // `busy`: ms of it the page's main thread spent in long tasks (the rest it did not run).
    pageStall: {
      max: Math.round(mon.maxTickGap),
      from: wall(mon.tickGapFrom),
      busy: Math.round(overlap(mon.longTasks, mon.tickGapFrom, mon.tickGapFrom === null ? null : mon.tickGapFrom + mon.maxTickGap)),
      longestTask: Math.round(mon.longTasks.reduce((m, [x, y]) => Math.max(m, y - x), 0)),
      // The longest scripts that ran in that stall: "invoker function@file:offset ms".
      scripts: stallScripts(mon.tickGapFrom, mon.tickGapFrom === null ? null : mon.tickGapFrom + mon.maxTickGap),
    },
    peers,
  };
}
