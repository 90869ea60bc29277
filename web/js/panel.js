// The connection panel of one remote peer: the path the media takes, the selected
// candidate pair, live statistics, all ICE candidates, and a timeline of the signaling
// messages and state changes of that connection.

import { h, iconEl } from './dom.js';
import { t, formatTime } from './i18n.js';

/** @typedef {import('./stats.js').PathInfo} PathInfo */
/** @typedef {import('./stats.js').Summary} Summary */
/** @typedef {import('./stats.js').CandidateInfo} CandidateInfo */
/** @typedef {import('./stats.js').Candidate} Candidate */
/** @typedef {import('./peer.js').TimelineEntry} TimelineEntry */
/**
 * What the panel needs of a connection: a mesh Peer or the SfuPeer.
 * @typedef {object} Conn
 * @property {string} id
 * @property {RTCPeerConnection} pc
 * @property {boolean} polite
 * @property {RTCConfiguration} config
 * @property {TimelineEntry[]} timeline
 * @property {Summary|null} summary  its last stats summary
 * @property {Map<string, Set<(arg: any) => void>>} listeners
 * @property {(type: 'timeline', fn: (e: TimelineEntry) => void) => void} on
 */

/**
 * The path in a few words ("Direct", "Relayed (TURN, udp)", ...).
 * @param {PathInfo|null|undefined} path
 */
export function pathLabel(path) {
  if (!path || path.kind === 'none') return t('path.none');
  if (path.kind === 'relay') return t('path.relay', { proto: path.proto || 'udp' });
  if (path.kind === 'nat') return t('path.nat', { type: path.type });
  return t('path.direct');
}

/**
 * Seconds from the start of the current connection (its last `newConnection`, else its
 * first timeline entry) to ICE's first `connected` after it; null if not connected.
 */
/** @param {TimelineEntry[]} timeline */
function secondsToConnect(timeline) {
  let start = null;
  let end = null;
  for (const e of timeline) {
    if (start === null || e.kind === 'newConnection') {
      start = e.t;
      end = null;
    }
    if (end === null && e.kind === 'iceConnectionState' && (e.value === 'connected' || e.value === 'completed')) end = e.t;
  }
  return start !== null && end !== null ? Math.max(0, (end - start) / 1000) : null;
}

/**
 * One line on why ICE chose this path (see docs/nat-lab.md for the NAT kinds behind it).
 * @param {PathInfo|null|undefined} path
 * @param {{timeline?: TimelineEntry[], config?: RTCConfiguration}} peer
 */
export function pathWhy(path, peer) {
  if (!path || path.kind === 'none') return '';
  const secs = secondsToConnect(peer.timeline || []);
  const s = secs === null ? null : secs.toFixed(1);
  if (path.kind === 'relay') {
    if (peer.config && peer.config.iceTransportPolicy === 'relay') return t('path.why.relayOnly');
    return s === null ? t('path.why.relayNoTime') : t('path.why.relay', { s });
  }
  if (path.kind === 'nat') return t('path.why.nat', { s: s === null ? '?' : s });
  return t('path.why.direct');
}

/** @param {number|null|undefined} kbps */
function rate(kbps) {
  if (kbps === null || kbps === undefined) return t('unit.none');
  if (kbps >= 1000) return t('unit.mbps', { v: (kbps / 1000).toFixed(2) });
  return t('unit.kbps', { v: kbps });
}

/** @param {CandidateInfo|Candidate|null|undefined} c */
function endpoint(c) {
  if (!c) return t('unit.none');
  const host = c.address && c.address.includes(':') ? `[${c.address}]` : c.address;
  return `${host}:${c.port}`;
}

/** @param {string|undefined} type */
function typeChip(type) {
  return h('span', { class: `chip cand-${type || 'unknown'}` }, type || '?');
}

/** @param {CandidateInfo|null|undefined} c */
function candidateProto(c) {
  if (!c) return '';
  if (c.type === 'relay' && c.relayProtocol) return `${c.protocol} · TURN/${c.relayProtocol}`;
  return c.protocol || '';
}

export class ConnPanel {
  // The parts, made by build():
  /** @type {HTMLButtonElement} */
  closeBtn;
  /** @type {HTMLElement} */
  extraBox;
  /** @type {HTMLElement} */
  banner;
  /** @type {HTMLElement} */
  pairBox;
  /** @type {HTMLElement} */
  statsGrid;
  /** @type {HTMLElement} */
  statesBox;
  /** @type {HTMLElement} */
  localList;
  /** @type {HTMLElement} */
  remoteList;
  /** @type {HTMLElement} */
  timelineList;

  /**
   * @param {{peer: Conn, name: () => string, onClose: () => void,
   *          domId?: string, extra?: () => Node|null}} o
   * `extra` renders a section above the path (the room's mode, the SFU's view), refreshed with the stats.
   */
  constructor({ peer, name, onClose, domId, extra }) {
    this.peer = peer;
    this.name = name;
    this.extra = extra || null;
    this.rendered = 0;
    /** @type {number|null} the time of the first timeline entry */
    this.firstT = null;
    this.el = h('section', {
      class: 'conn-panel',
      id: domId || `panel-${peer.id}`,
      testid: `conn-panel-${peer.id}`,
      role: 'region',
    });
    this.build();
    this.unsub = (/** @type {TimelineEntry} */ e) => this.appendEntry(e);
    peer.on('timeline', this.unsub);
    this.onClose = onClose;
  }

  build() {
    const name = this.name();
    this.el.replaceChildren();
    this.el.setAttribute('aria-label', t('panel.title', { name }));
    this.closeBtn = h(
      'button',
      { class: 'icon-btn panel-close', type: 'button', testid: 'panel-close', 'aria-label': t('panel.close'), title: t('panel.close'), onclick: () => this.onClose() },
      iconEl('close'),
    );
    this.extraBox = h('div', { class: 'panel-extra' });
    this.banner = h('div', { class: 'path-banner', testid: 'path-label', 'aria-live': 'polite' });
    this.pairBox = h('div', { class: 'pair', testid: 'selected-pair' });
    this.statsGrid = h('dl', { class: 'stats-grid', testid: 'stats-grid' });
    this.statesBox = h('dl', { class: 'states-grid', testid: 'states' });
    this.localList = h('ul', { class: 'cand-list', testid: 'local-candidates' });
    this.remoteList = h('ul', { class: 'cand-list', testid: 'remote-candidates' });
    this.timelineList = h('ol', { class: 'timeline', testid: 'timeline', 'aria-label': t('panel.timeline') });
    this.rendered = 0;
    this.el.append(
      h('header', { class: 'panel-head' }, h('h3', null, t('panel.title', { name })), this.closeBtn),
      h(
        'div',
        { class: 'panel-cols' },
        h('div', { class: 'panel-col' }, this.extraBox, this.banner, this.pairBox, h('h4', null, t('panel.stats')), this.statsGrid, this.statesBox),
        h(
          'div',
          { class: 'panel-col' },
          h('h4', null, t('panel.candidates')),
          h(
            'div',
            { class: 'cand-cols' },
            h('div', null, h('h5', null, t('panel.localCandidates')), this.localList),
            h('div', null, h('h5', null, t('panel.remoteCandidates')), this.remoteList),
          ),
          h('p', { class: 'legend' }, t('panel.legend')),
          h('h4', null, t('panel.timeline')),
          h('p', { class: 'legend' }, t('panel.timelineHint')),
          this.timelineList,
        ),
      ),
    );
    for (const e of this.peer.timeline) this.appendEntry(e);
    this.update(this.peer.summary);
  }

  /**
   * Re-renders the live parts from a stats summary (see stats.js).
   * @param {Summary|null} s
   */
  update(s) {
    const name = this.name();
    const extra = this.extra ? this.extra() : null;
    this.extraBox.replaceChildren(...(extra ? [extra] : []));
    /** @type {PathInfo} */
    const path = s ? s.path : { kind: 'none' };
    this.banner.dataset.path = path.kind;
    this.banner.replaceChildren(
      h('strong', { class: 'path-title', testid: 'path-title' }, pathLabel(path)),
      h('span', { class: 'path-explain' }, t(`path.explain.${path.kind}`)),
      h('span', { class: 'path-explain path-why', testid: 'path-why' }, pathWhy(path, this.peer)),
    );

    const pair = s && s.pair;
    const side = (/** @type {string} */ who, /** @type {CandidateInfo|null} */ c) =>
      h(
        'div',
        { class: 'endpoint' },
        h('span', { class: 'who' }, who),
        c ? typeChip(c.type) : null,
        h('code', null, endpoint(c)),
        h('span', { class: 'proto' }, candidateProto(c)),
      );
    if (pair) {
      const relayMid = path.kind === 'relay' ? h('span', { class: 'via' }, 'TURN') : h('span', { class: 'via-direct' }, '⇄');
      this.pairBox.replaceChildren(
        h('div', { class: 'pair-title' }, t('panel.pair')),
        h(
          'div',
          { class: 'pair-row', dataset: { path: path.kind } },
          side(t('panel.you'), pair.local),
          h(
            'div',
            { class: 'link', 'aria-hidden': 'true' },
            h('span', { class: 'line' }),
            relayMid,
            h('span', { class: 'line' }),
          ),
          side(name, pair.remote),
        ),
        h('div', { class: 'pair-meta' }, t('panel.pairState', { state: pair.state }), pair.nominated ? ` · ${t('panel.nominated')}` : ''),
      );
    } else {
      this.pairBox.replaceChildren(h('div', { class: 'pair-title' }, t('panel.pair')), h('div', { class: 'muted' }, t('path.explain.none')));
    }

    const vin = s && s.video.in;
    const ain = s && s.audio.in;
    const vout = s && s.video.out;
    const aout = s && s.audio.out;
    const lossParts = [];
    if (ain) lossParts.push(`${t('kind.audio')} ${ain.lossPct.toFixed(1)}%`);
    if (vin) lossParts.push(`${t('kind.video')} ${vin.lossPct.toFixed(1)}%`);
    const codec = (/** @type {{codec: string|null}|null} */ i, /** @type {{codec: string|null}|null} */ o) => {
      const a = i && i.codec;
      const b = o && o.codec;
      if (a && b && a !== b) return `↓ ${a} · ↑ ${b}`;
      return a || b || t('unit.none');
    };
    const items = [
      ['rtt', 'panel.rtt', pair && pair.rttMs !== null ? t('unit.ms', { v: pair.rttMs }) : t('unit.none')],
      ['send', 'panel.sendRate', rate(s && s.sendKbps)],
      ['recv', 'panel.recvRate', rate(s && s.recvKbps)],
      ['loss', 'panel.loss', lossParts.length ? lossParts.join(' · ') : t('unit.none')],
      ['audio-codec', 'panel.audioCodec', codec(ain, aout)],
      ['video-codec', 'panel.videoCodec', codec(vin, vout)],
      ['frames', 'panel.framesDecoded', vin && vin.framesDecoded !== undefined ? String(vin.framesDecoded) : t('unit.none')],
      [
        'resolution',
        'panel.resolution',
        vin && vin.width ? `${vin.width}×${vin.height}${vin.fps ? ` @ ${Math.round(vin.fps)} fps` : ''}` : t('unit.none'),
      ],
    ];
    this.statsGrid.replaceChildren(
      ...items.map(([id, key, value]) => h('div', { class: 'stat', testid: `stat-${id}` }, h('dt', null, t(key)), h('dd', null, value))),
    );

    const pc = this.peer.pc;
    const states = [
      ['signaling', 'panel.signaling', pc.signalingState],
      ['gathering', 'panel.gathering', pc.iceGatheringState],
      ['ice', 'panel.ice', pc.iceConnectionState],
      ['connection', 'panel.connection', pc.connectionState],
      ['role', 'panel.role', t(this.peer.polite ? 'panel.polite' : 'panel.impolite')],
    ];
    this.statesBox.replaceChildren(
      ...states.map(([id, key, value]) =>
        h('div', { class: 'state', testid: `state-${id}` }, h('dt', null, t(key)), h('dd', { dataset: { value } }, value)),
      ),
    );

    const list = (/** @type {HTMLElement} */ ul, /** @type {CandidateInfo[]|null} */ cands, /** @type {string|null} */ selectedId) => {
      if (!cands || cands.length === 0) {
        ul.replaceChildren(h('li', { class: 'muted' }, t('panel.noCandidates')));
        return;
      }
      const sorted = [...cands].sort((a, b) => order(a.type) - order(b.type));
      ul.replaceChildren(
        ...sorted.map((c) =>
          h(
            'li',
            { class: c.id === selectedId ? 'selected' : '', dataset: { type: c.type || '' } },
            typeChip(c.type),
            h('code', null, endpoint(c)),
            h('span', { class: 'proto' }, candidateProto(c)),
            c.id === selectedId ? h('span', { class: 'sel-mark' }, t('panel.selected')) : null,
          ),
        ),
      );
    };
    list(this.localList, s && s.candidates.local, pair && pair.local && pair.local.id);
    list(this.remoteList, s && s.candidates.remote, pair && pair.remote && pair.remote.id);
  }

  /** @param {TimelineEntry} e */
  appendEntry(e) {
    if (this.firstT === null) this.firstT = this.peer.timeline.length ? this.peer.timeline[0].t : e.t;
    const list = this.timelineList;
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    list.append(timelineItem(e, this.firstT));
    while (list.childElementCount > 400) list.firstElementChild?.remove();
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  destroy() {
    this.peer.listeners.get('timeline')?.delete(this.unsub);
    this.el.remove();
  }
}

/** @param {string|undefined} type */
function order(type) {
  return /** @type {Record<string, number>} */ ({ host: 0, srflx: 1, prflx: 2, relay: 3 })[type || ''] ?? 4;
}

/**
 * @param {TimelineEntry} e
 * @param {number} firstT
 */
function timelineItem(e, firstT) {
  const dirIcon = e.dir === 'out' ? '↑' : e.dir === 'in' ? '↓' : '•';
  const dirLabel = e.dir === 'out' ? t('tl.sent') : e.dir === 'in' ? t('tl.received') : '';
  let kind;
  /** @type {(Node|string|undefined)[]} */
  let detail = [];
  switch (e.kind) {
    case 'offer':
    case 'answer': {
      kind = t(`tl.${e.kind}`);
      if (e.sdp) {
        detail = [
          e.sdp.media.map((m) => `m=${m.kind}${m.codecs.length ? ` (${m.codecs.slice(0, 3).join(', ')})` : ''}${m.direction ? ` ${m.direction}` : ''}`).join(' · '),
          ` · ${(e.sdp.bytes / 1024).toFixed(1)} KB`,
          e.sdp.ufrag ? ` · ufrag ${e.sdp.ufrag}` : '',
        ];
      }
      break;
    }
    case 'candidate': {
      kind = t('tl.candidate');
      const c = /** @type {Candidate} */ (e.cand); // a candidate entry has one
      detail = [
        typeChip(c.type),
        ` ${c.protocol} ${endpoint(c)}`,
        c.relatedAddress && c.type !== 'host' ? ` (raddr ${c.relatedAddress}:${c.relatedPort})` : '',
        e.stale ? ` — ${t('tl.stale')}` : '',
      ];
      break;
    }
    case 'endOfCandidates':
      kind = t('tl.endOfCandidates');
      if (e.stale) detail = [t('tl.stale')];
      break;
    case 'selected':
      kind = t('tl.selected');
      detail = [h('strong', null, e.label), e.local ? ` · ${e.local} ↔ ${e.remote}` : ''];
      break;
    case 'relayPolicy':
      kind = t('tl.relayPolicy', { policy: e.value });
      break;
    case 'newConnection':
      kind = t(`tl.newConnection.${e.value}`);
      break;
    case 'watchdog':
      kind = t('tl.watchdog', { state: e.value });
      break;
    case 'staleDescription':
      kind = t('tl.staleDescription');
      break;
    case 'error':
      kind = t('tl.error');
      detail = [e.value];
      break;
    case 'ignoredOffer':
    case 'rollback':
    case 'iceRestart':
      kind = t(`tl.${e.kind}`);
      break;
    default:
      kind = t(`tl.${e.kind}`);
      detail = ['→ ', h('span', { class: `state-val s-${e.value}` }, e.value)];
  }
  const rel = ((e.t - firstT) / 1000).toFixed(3);
  return h(
    'li',
    { class: `tl tl-${e.dir} tl-k-${e.kind}`, dataset: { kind: e.kind, dir: e.dir } },
    h('time', { datetime: new Date(e.t).toISOString(), title: `+${rel} s` }, formatTime(e.t, true)),
    h('span', { class: 'tl-dir', title: dirLabel, 'aria-label': dirLabel }, dirIcon),
    h('span', { class: 'tl-body' }, h('span', { class: 'tl-kind' }, kind), ' ', h('span', { class: 'tl-detail' }, ...detail)),
  );
}
