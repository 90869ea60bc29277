// The WebSocket side of the signaling protocol (docs/signaling.md): join, resume after a
// dropped socket, the application ping, and a queue for what is sent while reconnecting.
//
// Events (on(type, fn)):
//   'state'   (state)           idle | connecting | open | reconnecting | closed
//   'message' (msg)             every server message except welcome/resumed/pong
//   'resumed' (msg)             the session survived a dropped socket
//   'session-lost' ({url, reason}) the resume failed, the grace period ran out, or the
//                               server sent `rejoin` (a cluster moved the room: join
//                               again, at `url` when given)
//   'error'   (msg)             an `error` message that is not the answer to join/resume
//   'rtt'     (ms)              round trip of the last ping
//   'traffic' ({dir, msg})      every frame sent or received (for the debug hook)

const PING_INTERVAL_MS = 15000;
// Reconnect delays; the last one repeats until the grace period is over.
const BACKOFF_MS = [200, 500, 1000, 2000, 3000];
// Outgoing messages kept while the socket is down (the server queues 256 the other way).
const MAX_PENDING = 256;

/** @typedef {{type: string, [field: string]: any}} Message  a signaling message (docs/signaling.md) */
/** @typedef {'idle'|'connecting'|'open'|'reconnecting'|'closed'} State */
/** @typedef {{code: string, message?: string, ref?: string}} JoinError  why a join failed */
/**
 * @typedef {object} Events  the events and what their listeners get
 * @property {State} state
 * @property {Message} message
 * @property {Message} resumed
 * @property {{url?: string|null, reason?: string}|undefined} session-lost
 * @property {Message} error
 * @property {number} rtt
 * @property {{dir: 'in'|'out', msg: Message}} traffic
 */

export class Signaling {
  /** @param {string} url  the WebSocket's URL */
  constructor(url) {
    this.url = url;
    /** @type {WebSocket|null} */
    this.ws = null;
    /** @type {State} */
    this.state = 'idle';
    /** @type {Message|null} the welcome/resumed message */
    this.session = null;
    /** @type {Message[]} */
    this.pending = [];
    /** @type {Map<string, Set<(arg: any) => void>>} */
    this.handlers = new Map();
    /** @type {ReturnType<typeof setInterval>|undefined} */
    this.pingTimer = undefined;
    this.pingSeq = 0;
    /** @type {Map<number, number>} ping id -> when it was sent */
    this.pingsInFlight = new Map();
    /** @type {ReturnType<typeof setTimeout>|undefined} */
    this.reconnectTimer = undefined;
    this.attempt = 0;
    this.droppedAt = 0;
    this.leaving = false;
    /** @type {number|null} */
    this.rtt = null;
    this.reconnects = 0;
  }

  /**
   * @template {keyof Events} K
   * @param {K} type
   * @param {(arg: Events[K]) => void} fn
   */
  on(type, fn) {
    let set = this.handlers.get(type);
    if (!set) this.handlers.set(type, (set = new Set()));
    set.add(fn);
  }

  /**
   * @template {keyof Events} K
   * @param {K} type
   * @param {Events[K]} [arg]
   */
  emit(type, arg) {
    for (const fn of this.handlers.get(type) ?? []) {
      try {
        fn(arg);
      } catch (e) {
        console.error('signaling handler failed', type, e);
      }
    }
  }

  /** @param {State} s */
  setState(s) {
    if (this.state === s) return;
    this.state = s;
    this.emit('state', s);
  }

  /**
   * Opens the socket and joins. Resolves with `welcome`; rejects with the server's
   * `error` (an object with `code` and `message`) or with {code: 'connect'}.
   * @param {{room: string, name: string, token?: string|null, mode?: string}} o
   * @returns {Promise<Message>}
   */
  join({ room, name, token, mode }) {
    this.leaving = false;
    return new Promise((resolve, reject) => {
      /** @type {Message} */
      const msg = { type: 'join', room, name };
      if (token) msg.token = token;
      if (mode) msg.mode = mode;
      this.open(msg, resolve, reject);
    });
  }

  /**
   * @param {Message} first  join or resume
   * @param {(welcome: Message) => void} resolve
   * @param {(err: JoinError) => void} reject
   */
  open(first, resolve, reject) {
    this.setState(this.session ? 'reconnecting' : 'connecting');
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (e) {
      reject({ code: 'connect', message: String(e) });
      return;
    }
    this.ws = ws;
    let settled = false;
    /**
     * @template T
     * @param {(arg: T) => void} fn
     * @param {T} arg
     */
    const settle = (fn, arg) => {
      if (settled) return;
      settled = true;
      fn(arg);
    };
    ws.onopen = () => this.rawSend(first);
    ws.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (!msg || typeof msg.type !== 'string') return;
      this.emit('traffic', { dir: 'in', msg });
      if (msg.type === 'welcome' || msg.type === 'resumed') {
        const resumed = msg.type === 'resumed';
        this.session = msg;
        this.attempt = 0;
        this.droppedAt = 0;
        this.setState('open');
        this.startPing();
        if (resumed) this.emit('resumed', msg);
        this.flush();
        settle(resolve, msg);
        return;
      }
      if (msg.type === 'pong') {
        const sent = this.pingsInFlight.get(msg.id);
        if (sent !== undefined) {
          this.pingsInFlight.clear();
          this.rtt = Math.round(performance.now() - sent);
          this.emit('rtt', this.rtt);
        }
        return;
      }
      if (msg.type === 'rejoin') {
        // A cluster moved the room (its node failed or drains): the session is over
        // here; join the room again, at the URL offered if there is one.
        this.leaving = true;
        ws.close(1000);
        settle(reject, { code: 'rejoin', message: msg.reason });
        this.loseSession({ url: msg.url ?? null, reason: msg.reason });
        return;
      }
      if (msg.type === 'error' && !settled && first.type === 'resume' && msg.code === 'unavailable') {
        // The cluster cannot route the resume right now: try again, within the grace.
        ws.onclose = null;
        ws.close(1000);
        this.ws = null;
        this.stopPing();
        settle(reject, msg);
        this.scheduleReconnect();
        return;
      }
      if (msg.type === 'error' && !settled && (msg.ref === first.type || msg.ref === undefined || msg.ref === null)) {
        // The answer to our join/resume: the session was not established.
        if (first.type === 'resume' && msg.code === 'resume-failed') {
          this.loseSession();
        }
        this.leaving = true;
        ws.close(1000);
        settle(reject, msg);
        return;
      }
      if (msg.type === 'error') {
        this.emit('error', msg);
        return;
      }
      this.emit('message', msg);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.stopPing();
      this.ws = null;
      if (!settled && !this.session) {
        this.setState('closed');
        settle(reject, { code: 'connect', message: `WebSocket closed (${ev.code})` });
        return;
      }
      settle(reject, { code: 'connect', message: `WebSocket closed (${ev.code})` });
      if (this.leaving) {
        this.setState('closed');
        return;
      }
      this.scheduleReconnect();
    };
  }

  scheduleReconnect() {
    if (!this.session) return;
    if (!this.droppedAt) this.droppedAt = Date.now();
    const grace = this.session.resumeGraceMs ?? 15000;
    const delay = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    this.attempt++;
    if (Date.now() + delay - this.droppedAt > grace) {
      this.loseSession();
      return;
    }
    this.setState('reconnecting');
    clearTimeout(this.reconnectTimer);
    const token = this.session.resumeToken;
    this.reconnectTimer = setTimeout(() => {
      this.reconnects++;
      this.open(
        { type: 'resume', token },
        () => {},
        (err) => {
          if (err && err.code === 'resume-failed') return; // loseSession already ran
        },
      );
    }, delay);
  }

  /** @param {{url?: string|null, reason?: string}} [why] */
  loseSession(why) {
    clearTimeout(this.reconnectTimer);
    this.session = null;
    this.pending = [];
    this.droppedAt = 0;
    this.attempt = 0;
    this.setState('closed');
    this.emit('session-lost', why);
  }

  /** @param {Message} msg */
  rawSend(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(msg));
    this.emit('traffic', { dir: 'out', msg });
    return true;
  }

  /**
   * Sends now, or after the session is resumed if the socket is down.
   * @param {Message} msg
   */
  send(msg) {
    if (this.state === 'open' && this.rawSend(msg)) return true;
    if (this.session && !this.leaving) {
      if (this.pending.length >= MAX_PENDING) this.pending.shift();
      this.pending.push(msg);
    }
    return false;
  }

  flush() {
    const queued = this.pending;
    this.pending = [];
    for (const m of queued) this.rawSend(m);
  }

  startPing() {
    this.stopPing();
    this.pingTimer = setInterval(() => {
      // Two pings unanswered: the socket is dead even if TCP has not noticed yet.
      if (this.pingsInFlight.size >= 2) {
        this.pingsInFlight.clear();
        if (this.ws) this.ws.close(4000, 'ping timeout');
        return;
      }
      const id = ++this.pingSeq;
      this.pingsInFlight.set(id, performance.now());
      this.rawSend({ type: 'ping', id });
    }, PING_INTERVAL_MS);
  }

  stopPing() {
    clearInterval(this.pingTimer);
    this.pingTimer = undefined;
    this.pingsInFlight.clear();
  }

  /** Sends `leave` and closes for good (no resume). */
  leave() {
    this.leaving = true;
    clearTimeout(this.reconnectTimer);
    this.stopPing();
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.rawSend({ type: 'leave' });
      this.ws.close(1000);
    } else if (this.ws) {
      this.ws.close();
    }
    this.ws = null;
    this.session = null;
    this.pending = [];
    this.setState('closed');
  }
}
