//! Janus's HTTP API (its REST transport) as the load generator speaks it: one session,
//! handles attached to the VideoRoom plugin, requests and their answers, and the long
//! poll for asynchronous events on a thread of its own, which also sends the session's
//! keepalives.
//!
//! Janus answers a `message` either at once (`success`, synchronous plugin requests
//! such as `create`) or with an `ack`, and the plugin's answer (with its JSEP) arrives
//! later as an `event` carrying the same `transaction`, on the session's long poll
//! (`GET {base}/{session}?maxev=N`, held open by Janus for up to 30 s).

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::sfu::{parse_response, HttpBase};

/// Janus ends a session after 60 s without a request (`session_timeout`).
const KEEPALIVE_EVERY: Duration = Duration::from_secs(20);

/// Events taken from one long poll.
const MAX_EVENTS_PER_POLL: usize = 64;

/// Events queued between the poller and the run's loop.
const EVENT_QUEUE: usize = 4096;

/// Events without a transaction kept for the run (hangups and the like).
const MAX_NOTICES: usize = 1024;

/// Connect/write timeout of every request; reads of the long poll wait longer than
/// Janus holds it.
const TIMEOUT: Duration = Duration::from_secs(10);
const LONG_POLL_READ: Duration = Duration::from_secs(65);

/// Largest answer read.
const MAX_ANSWER: u64 = 4 << 20;

/// A session on one Janus server, with its event poller.
pub(crate) struct JanusApi {
    base: HttpBase,
    session: u64,
    next_tx: u64,
    events: Receiver<Value>,
    poller: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    /// The long poll's connection, for [`JanusApi::close`] to end it.
    current: Arc<Mutex<Option<TcpStream>>>,
    last_keepalive: Instant,
    /// Transactions whose event has not come yet.
    waiting: HashSet<String>,
    /// Events that answered one of them.
    answered: HashMap<String, Value>,
    /// Events without a transaction of ours (hangup, webrtcup, media, slowlink, ...).
    pub(crate) notices: VecDeque<Value>,
    /// Why the poller stopped, when it did on its own.
    pub(crate) poll_error: Option<String>,
}

/// What a `message` answered at once.
pub(crate) enum Reply {
    /// A synchronous plugin answer: `plugindata.data`.
    Done(Value),
    /// `ack`: the event with this transaction carries the answer.
    Later(String),
}

impl JanusApi {
    /// Creates a session on the server at `base` (its `/janus` path) and starts polling.
    pub(crate) fn connect(base: &HttpBase) -> Result<JanusApi, String> {
        let r = post(base, "", &json!({"janus": "create", "transaction": "t0"}))?;
        let session = r
            .pointer("/data/id")
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("Janus's create answered without a session id: {r}"))?;
        let (tx, rx) = sync_channel(EVENT_QUEUE);
        let stop = Arc::new(AtomicBool::new(false));
        let current = Arc::new(Mutex::new(None));
        let poller = {
            let (base, stop, current) = (base.clone(), stop.clone(), current.clone());
            std::thread::Builder::new()
                .name("janus-poll".into())
                .spawn(move || poll_loop(&base, session, &tx, &stop, &current))
                .map_err(|e| format!("cannot start the Janus event thread: {e}"))?
        };
        Ok(JanusApi {
            base: base.clone(),
            session,
            next_tx: 1,
            events: rx,
            poller: Some(poller),
            stop,
            current,
            last_keepalive: Instant::now(),
            waiting: HashSet::new(),
            answered: HashMap::new(),
            notices: VecDeque::new(),
            poll_error: None,
        })
    }

    fn transaction(&mut self) -> String {
        let t = format!("t{}", self.next_tx);
        self.next_tx += 1;
        t
    }

    /// Attaches a handle to the VideoRoom plugin.
    pub(crate) fn attach(&mut self) -> Result<u64, String> {
        let t = self.transaction();
        let body = json!({"janus": "attach", "plugin": "janus.plugin.videoroom", "transaction": t});
        let r = post(&self.base, &format!("/{}", self.session), &body)?;
        r.pointer("/data/id")
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("Janus's attach answered without a handle id: {r}"))
    }

    /// Sends a plugin request (and a JSEP) on `handle`.
    pub(crate) fn message(
        &mut self,
        handle: u64,
        body: Value,
        jsep: Option<Value>,
    ) -> Result<Reply, String> {
        let t = self.transaction();
        let mut m = json!({"janus": "message", "transaction": t, "body": body});
        if let Some(j) = jsep {
            m["jsep"] = j;
        }
        let r = post(&self.base, &format!("/{}/{handle}", self.session), &m)?;
        match r.get("janus").and_then(Value::as_str) {
            Some("ack") => {
                self.waiting.insert(t.clone());
                Ok(Reply::Later(t))
            }
            Some("success") => plugin_data(&r).map(Reply::Done),
            _ => Err(format!("Janus answered the message with {r}")),
        }
    }

    /// Trickles candidates (`candidate:...` lines with their m-line) and then their end.
    pub(crate) fn trickle(
        &mut self,
        handle: u64,
        candidates: &[(String, String)],
    ) -> Result<(), String> {
        let path = format!("/{}/{handle}", self.session);
        for (mid, c) in candidates {
            let t = self.transaction();
            let body = json!({"janus": "trickle", "transaction": t,
                "candidate": {"candidate": c, "sdpMid": mid, "sdpMLineIndex": 0}});
            expect_ack(&post(&self.base, &path, &body)?)?;
        }
        let t = self.transaction();
        let body = json!({"janus": "trickle", "transaction": t, "candidate": {"completed": true}});
        expect_ack(&post(&self.base, &path, &body)?)
    }

    /// Detaches a handle (its PeerConnection ends).
    pub(crate) fn detach(&mut self, handle: u64) -> Result<(), String> {
        let t = self.transaction();
        let body = json!({"janus": "detach", "transaction": t});
        post(&self.base, &format!("/{}/{handle}", self.session), &body).map(|_| ())
    }

    /// Takes what the poller brought: answers to waiting transactions and notices.
    pub(crate) fn pump(&mut self) {
        loop {
            match self.events.try_recv() {
                Ok(ev) => self.sort(ev),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    if self.poll_error.is_none() && !self.stop.load(Ordering::Relaxed) {
                        self.poll_error = Some("the Janus event poll stopped".into());
                    }
                    return;
                }
            }
        }
    }

    fn sort(&mut self, ev: Value) {
        if ev.get("janus").and_then(Value::as_str) == Some("poll-error") {
            let why = ev.get("reason").and_then(Value::as_str).unwrap_or("?");
            self.poll_error = Some(format!("the Janus event poll failed: {why}"));
            return;
        }
        if let Some(t) = ev.get("transaction").and_then(Value::as_str) {
            if self.waiting.remove(t) {
                self.answered.insert(t.to_owned(), ev);
                return;
            }
        }
        if self.notices.len() >= MAX_NOTICES {
            self.notices.pop_front();
        }
        self.notices.push_back(ev);
    }

    /// The event that answered transaction `t`, once it came: its `plugindata.data`
    /// and its JSEP.
    pub(crate) fn answer(&mut self, t: &str) -> Option<Result<(Value, Option<Value>), String>> {
        let ev = self.answered.remove(t)?;
        Some(plugin_data(&ev).map(|d| (d, ev.get("jsep").cloned())))
    }

    /// Sends a keepalive when one is due (the long poll alone does not keep a session).
    pub(crate) fn keepalive_if_due(&mut self) -> Result<(), String> {
        if self.last_keepalive.elapsed() < KEEPALIVE_EVERY {
            return Ok(());
        }
        self.last_keepalive = Instant::now();
        let t = self.transaction();
        let body = json!({"janus": "keepalive", "transaction": t});
        expect_ack(&post(&self.base, &format!("/{}", self.session), &body)?)
    }

    /// Destroys the session and stops the poller.
    pub(crate) fn close(&mut self) -> Result<(), String> {
        let t = self.transaction();
        let body = json!({"janus": "destroy", "transaction": t});
        let r = post(&self.base, &format!("/{}", self.session), &body).map(|_| ());
        self.stop_poller();
        r
    }

    fn stop_poller(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(mut g) = self.current.lock() {
            if let Some(s) = g.take() {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        if let Some(p) = self.poller.take() {
            let _ = p.join();
        }
    }
}

impl Drop for JanusApi {
    fn drop(&mut self) {
        self.stop_poller();
    }
}

/// `plugindata.data` of an answer or event, or the error it carries (Janus's own or the
/// plugin's).
fn plugin_data(v: &Value) -> Result<Value, String> {
    if let Some(e) = v.get("error") {
        return Err(format!(
            "Janus error {}: {}",
            e.get("code").unwrap_or(&Value::Null),
            e.get("reason").and_then(Value::as_str).unwrap_or("?")
        ));
    }
    let data = v
        .pointer("/plugindata/data")
        .cloned()
        .ok_or_else(|| format!("Janus answered without plugin data: {v}"))?;
    if let Some(e) = data.get("error") {
        return Err(format!(
            "VideoRoom error {}: {}",
            data.get("error_code").unwrap_or(&Value::Null),
            e.as_str().unwrap_or("?")
        ));
    }
    Ok(data)
}

fn expect_ack(r: &Value) -> Result<(), String> {
    match r.get("janus").and_then(Value::as_str) {
        Some("ack" | "success") => Ok(()),
        _ => Err(format!("Janus answered {r}")),
    }
}

/// POSTs a JSON request to `{base}{path}`; Janus's `error` answers are errors.
fn post(base: &HttpBase, path: &str, body: &Value) -> Result<Value, String> {
    let what = body
        .get("janus")
        .and_then(Value::as_str)
        .unwrap_or("request");
    let r = base
        .request(
            "POST",
            path,
            Some("application/json"),
            &body.to_string(),
            None,
        )
        .map_err(|e| format!("Janus {what}: {e}"))?;
    if r.status != 200 {
        return Err(format!(
            "Janus {what}: HTTP {}: {}",
            r.status,
            r.body.trim()
        ));
    }
    let v: Value = serde_json::from_str(&r.body)
        .map_err(|e| format!("Janus {what}: the answer is not JSON: {e}"))?;
    if v.get("janus").and_then(Value::as_str) == Some("error") {
        let e = &v["error"];
        return Err(format!(
            "Janus {what}: error {}: {}",
            e.get("code").unwrap_or(&Value::Null),
            e.get("reason").and_then(Value::as_str).unwrap_or("?")
        ));
    }
    Ok(v)
}

/// The long poll: one GET at a time, every event into `tx`, until `stop`. Gives up
/// after 20 failed polls in a row (the server is gone), saying why.
fn poll_loop(
    base: &HttpBase,
    session: u64,
    tx: &SyncSender<Value>,
    stop: &AtomicBool,
    current: &Mutex<Option<TcpStream>>,
) {
    let mut failures = 0u32;
    while !stop.load(Ordering::Relaxed) {
        match long_poll(base, session, stop, current) {
            Ok(events) => {
                failures = 0;
                for ev in events {
                    if ev.get("janus").and_then(Value::as_str) == Some("keepalive") {
                        continue;
                    }
                    if tx.send(ev).is_err() {
                        return;
                    }
                }
            }
            Err(_) if stop.load(Ordering::Relaxed) => return,
            Err(e) => {
                failures += 1;
                if failures >= 20 {
                    let _ = tx.send(json!({"janus": "poll-error", "reason": e}));
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn long_poll(
    base: &HttpBase,
    session: u64,
    stop: &AtomicBool,
    current: &Mutex<Option<TcpStream>>,
) -> Result<Vec<Value>, String> {
    let mut s = TcpStream::connect_timeout(&base.addr, TIMEOUT)
        .map_err(|e| format!("cannot connect to {}: {e}", base.addr))?;
    let _ = s.set_read_timeout(Some(LONG_POLL_READ));
    let _ = s.set_write_timeout(Some(TIMEOUT));
    if let Ok(mut g) = current.lock() {
        *g = s.try_clone().ok();
    }
    // A stop that came before the clone was stored would not have reached this socket.
    if stop.load(Ordering::Relaxed) {
        return Ok(Vec::new());
    }
    let req = format!(
        "GET {}/{session}?maxev={MAX_EVENTS_PER_POLL} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        base.prefix, base.host
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("long poll: sending: {e}"))?;
    let mut raw = Vec::new();
    (&mut s)
        .take(MAX_ANSWER)
        .read_to_end(&mut raw)
        .map_err(|e| format!("long poll: reading: {e}"))?;
    let r = parse_response(&raw).map_err(|e| format!("long poll: {e}"))?;
    if r.status != 200 {
        return Err(format!("long poll: HTTP {}: {}", r.status, r.body.trim()));
    }
    let v: Value =
        serde_json::from_str(&r.body).map_err(|e| format!("long poll: not JSON: {e}"))?;
    // The session is gone (timed out, destroyed): Janus answers at once with an error.
    if v.get("janus").and_then(Value::as_str) == Some("error") {
        return Err(format!("long poll: {}", v["error"]));
    }
    Ok(match v {
        Value::Array(a) => a,
        other => vec![other],
    })
}
