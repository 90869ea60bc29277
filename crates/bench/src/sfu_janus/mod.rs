//! `tsunagi bench sfu --target janus`: the same publishers, subscribers, tagged frames
//! and loss accounting as `tsunagi bench sfu`, against Janus's VideoRoom plugin, so that
//! the two SFUs are measured under the same load in the same run
//! (scripts/bench-vs-janus).
//!
//! The run opens one Janus session (HTTP API, long poll for events, keepalives; see
//! [`api`]) and creates a room with a random numeric id (Opus + VP8, no bitrate cap, no
//! periodic PLI), destroyed at the end:
//!
//! * a **publisher** attaches a handle, sends `joinandconfigure` as a publisher with its
//!   str0m offer (sendonly Opus + VP8, the candidates taken out of the SDP and trickled
//!   after it, then `completed`), and applies the answer from Janus's event;
//! * a **subscriber** attaches a handle and sends `join` as a subscriber to one feed
//!   (`--publishers`/`--subscribers`: publisher 0's, as WHEP plays the room's first) or,
//!   with `--participants N`, to the feeds of every other participant (N publishers
//!   and N subscribers, participant i's subscriber receiving the N−1 others: the room
//!   of `tsunagi bench sfu --participants N`, with the two directions on two
//!   PeerConnections as Janus has them); Janus offers, str0m answers with `start`,
//!   candidates trickled likewise.
//!
//! A subscriber's loss is counted against the feeds it subscribed to, over the same
//! window as the tsunagi run (frames sent in the window, stragglers waited for).

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use mio::{Interest, Token};
use rand::Rng;
use serde_json::{json, Value};
use str0m::change::SdpAnswer;

use crate::sfu::{parse_base, Client, Role, Setup, SfuArgs, SfuReport};
use crate::sfu_common::{exit_with, Core, Driver};
use crate::{err, loadavg, BenchError};

mod api;

use api::{JanusApi, Reply};

/// How long Janus may take to answer a request with its event.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `tsunagi bench sfu --target janus` and prints the report.
pub fn main(args: &SfuArgs) -> ExitCode {
    exit_with(run(args), |r| r.print(args.json))
}

struct JanusBench<'a> {
    args: &'a SfuArgs,
    core: Core,
    api: JanusApi,
    /// The handle that created the room.
    control: u64,
    room: Option<u64>,
    /// Each client's handle, parallel to `core.clients`.
    handles: Vec<u64>,
    /// Feed id → publisher index.
    feeds: HashMap<u64, u16>,
}

/// Runs the benchmark against Janus and returns its report.
pub fn run(args: &SfuArgs) -> Result<SfuReport, BenchError> {
    args.validate()?;
    let base = parse_base(&args.http)?;
    let mut api = JanusApi::connect(&base)
        .map_err(|e| BenchError(format!("{e} (is Janus's HTTP transport at {}?)", args.http)))?;
    let control = match api.attach() {
        Ok(h) => h,
        Err(e) => {
            let _ = api.close();
            return err(format!("{e} (is the VideoRoom plugin loaded?)"));
        }
    };
    let mut b = JanusBench {
        args,
        core: Core::new(args)?,
        api,
        control,
        room: None,
        handles: Vec::new(),
        feeds: HashMap::new(),
    };
    let result = b.measure();
    // Whatever happened: hang up every handle, destroy the room and the session.
    let end_errors = b.end();
    let mut report = result?;
    report.errors.extend(end_errors);
    report.loadavg = loadavg();
    Ok(report)
}

impl Driver for JanusBench<'_> {
    fn core(&mut self) -> &mut Core {
        &mut self.core
    }

    fn turn(&mut self, max_wait: Duration) -> Result<(), BenchError> {
        self.core.poll_and_read(max_wait)?;
        self.core.tick();
        self.api.pump();
        self.notices();
        if let Some(e) = &self.api.poll_error {
            return err(e.clone());
        }
        self.api.keepalive_if_due().map_err(BenchError)
    }
}

impl JanusBench<'_> {
    /// Janus's events without a transaction: a hangup or detach fails its client.
    fn notices(&mut self) {
        while let Some(ev) = self.api.notices.pop_front() {
            let kind = ev.get("janus").and_then(Value::as_str).unwrap_or("");
            if !matches!(kind, "hangup" | "detached") {
                continue;
            }
            let Some(sender) = ev.get("sender").and_then(Value::as_u64) else {
                continue;
            };
            if let Some(i) = self.handles.iter().position(|h| *h == sender) {
                let c = &mut self.core.clients[i];
                let why = ev.get("reason").and_then(Value::as_str).unwrap_or(kind);
                let msg = format!("{}: Janus hung up ({why})", c.name());
                c.fail(msg);
            }
        }
    }

    /// Runs the loop until Janus's event for transaction `t` comes.
    fn wait_event(&mut self, t: &str, what: &str) -> Result<(Value, Option<Value>), BenchError> {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            if let Some(r) = self.api.answer(t) {
                return r.map_err(|e| BenchError(format!("{what}: {e}")));
            }
            if Instant::now() >= deadline {
                return err(format!(
                    "{what}: Janus sent no answer within {} s",
                    EVENT_TIMEOUT.as_secs()
                ));
            }
            self.turn(Duration::from_millis(5))?;
        }
    }

    /// Sends a plugin request and waits for its answer (at once or as an event).
    fn request(
        &mut self,
        handle: u64,
        body: Value,
        jsep: Option<Value>,
        what: &str,
    ) -> Result<(Value, Option<Value>), BenchError> {
        match self.api.message(handle, body, jsep) {
            Ok(Reply::Done(d)) => Ok((d, None)),
            Ok(Reply::Later(t)) => self.wait_event(&t, what),
            Err(e) => err(format!("{what}: {e}")),
        }
    }

    fn create_room(&mut self, publishers: usize) -> Result<u64, BenchError> {
        // Janus keeps ids in JSON numbers: below 2^53.
        let id: u64 = rand::rng().random_range(1..(1u64 << 52));
        let body = json!({
            "request": "create", "room": id, "description": "tsunagi bench",
            "publishers": publishers, "audiocodec": "opus", "videocodec": "vp8",
            "bitrate": 0, "fir_freq": 0, "notify_joining": false,
        });
        let (d, _) = self.request(self.control, body, None, "creating the room")?;
        if d.get("videoroom").and_then(Value::as_str) != Some("created") {
            return err(format!("creating the room: VideoRoom answered {d}"));
        }
        self.room = Some(id);
        Ok(id)
    }

    /// Registers a client whose session is set up and drains its first output.
    fn register(&mut self, mut c: Client, handle: u64) -> Result<(), BenchError> {
        let token = Token(self.core.clients.len());
        let r = self
            .core
            .poll
            .registry()
            .register(&mut c.socket, token, Interest::READABLE);
        if let Err(e) = r {
            c.fail(format!("mio register: {e}"));
        } else {
            c.drain(&mut self.core.sh);
        }
        let failed = c.error.clone();
        self.core.clients.push(c);
        self.handles.push(handle);
        match failed {
            Some(e) => err(e),
            None => Ok(()),
        }
    }

    fn add_publisher(&mut self, room: u64, i: usize) -> Result<(), BenchError> {
        let what = format!("publisher {i}");
        let handle = self
            .api
            .attach()
            .map_err(|e| BenchError(format!("{what}: {e}")))?;
        let now = Instant::now();
        let (mut c, offer, pending) =
            Client::new(Role::Publisher, i, self.args.local_ip, now).map_err(BenchError)?;
        let (sdp, candidates) = split_candidates(&offer);
        let body = json!({"request": "joinandconfigure", "ptype": "publisher", "room": room,
            "display": format!("bench-pub-{i}"), "audio": true, "video": true});
        let jsep = json!({"type": "offer", "sdp": sdp});
        let t = match self.api.message(handle, body, Some(jsep)) {
            Ok(Reply::Later(t)) => t,
            Ok(Reply::Done(d)) => return err(format!("{what}: Janus answered at once: {d}")),
            Err(e) => return err(format!("{what}: {e}")),
        };
        self.api
            .trickle(handle, &candidates)
            .map_err(|e| BenchError(format!("{what}: trickle: {e}")))?;
        let (d, jsep) = self.wait_event(&t, &what)?;
        let feed = d
            .get("id")
            .and_then(Value::as_u64)
            .ok_or_else(|| BenchError(format!("{what}: joined without a feed id: {d}")))?;
        let answer = jsep
            .as_ref()
            .and_then(|j| j.get("sdp"))
            .and_then(Value::as_str)
            .ok_or_else(|| BenchError(format!("{what}: Janus sent no SDP answer: {d}")))?;
        SdpAnswer::from_sdp_string(answer)
            .map_err(|e| format!("the SDP answer does not parse: {e}"))
            .and_then(|a| {
                c.rtc
                    .sdp_api()
                    .accept_answer(pending, a)
                    .map_err(|e| format!("str0m refused Janus's answer: {e}"))
            })
            .map_err(|e| BenchError(format!("{what}: {e}")))?;
        self.feeds.insert(feed, i as u16);
        c.posted = now;
        self.register(c, handle)
    }

    fn add_subscriber(&mut self, room: u64, j: usize, feeds: &[u64]) -> Result<(), BenchError> {
        let what = format!("subscriber {j}");
        let handle = self
            .api
            .attach()
            .map_err(|e| BenchError(format!("{what}: {e}")))?;
        let now = Instant::now();
        let streams: Vec<Value> = feeds.iter().map(|f| json!({"feed": f})).collect();
        let body = json!({"request": "join", "ptype": "subscriber", "room": room,
            "streams": streams});
        let (d, jsep) = self.request(handle, body, None, &what)?;
        let offer = jsep
            .as_ref()
            .and_then(|j| j.get("sdp"))
            .and_then(Value::as_str)
            .ok_or_else(|| BenchError(format!("{what}: Janus sent no SDP offer: {d}")))?;
        let (mut c, answer) =
            Client::answering(Role::Subscriber, j, self.args.local_ip, now, offer)
                .map_err(|e| BenchError(format!("{what}: {e}")))?;
        c.recv.expect = Some(
            feeds
                .iter()
                .filter_map(|f| self.feeds.get(f))
                .copied()
                .collect(),
        );
        let (sdp, candidates) = split_candidates(&answer);
        let t = match self.api.message(
            handle,
            json!({"request": "start"}),
            Some(json!({"type": "answer", "sdp": sdp})),
        ) {
            Ok(Reply::Later(t)) => t,
            Ok(Reply::Done(d)) => return err(format!("{what}: Janus answered at once: {d}")),
            Err(e) => return err(format!("{what}: {e}")),
        };
        self.api
            .trickle(handle, &candidates)
            .map_err(|e| BenchError(format!("{what}: trickle: {e}")))?;
        c.posted = now;
        self.register(c, handle)?;
        let (d, _) = self.wait_event(&t, &what)?;
        if d.get("started").and_then(Value::as_str) != Some("ok") {
            return err(format!("{what}: start answered {d}"));
        }
        Ok(())
    }

    fn measure(&mut self) -> Result<SfuReport, BenchError> {
        let args = self.args;
        let (publishers, subscribers) = match args.participants {
            Some(n) => (n, n),
            None => (args.publishers, args.subscribers),
        };
        let room = self.create_room(publishers)?;
        let rss_start = self.core.rss();
        let anon_start = self.core.anon();
        let setup_start = Instant::now();

        for i in 0..publishers {
            self.add_publisher(room, i)?;
            self.turn(Duration::ZERO)?;
        }
        self.wait_connected(Role::Publisher)?;
        self.pump_for(Duration::from_millis(300))?;
        let rss_publishers = self.core.rss();
        let anon_publishers = self.core.anon();

        // Feeds in publisher order.
        let mut feeds: Vec<(u16, u64)> = self.feeds.iter().map(|(f, i)| (*i, *f)).collect();
        feeds.sort_unstable();
        for j in 0..subscribers {
            let wanted: Vec<u64> = match args.participants {
                Some(_) => feeds
                    .iter()
                    .filter(|(i, _)| usize::from(*i) != j)
                    .map(|(_, f)| *f)
                    .collect(),
                None => feeds.iter().take(1).map(|(_, f)| *f).collect(),
            };
            self.add_subscriber(room, j, &wanted)?;
            self.turn(Duration::ZERO)?;
        }
        self.wait_connected(Role::Subscriber)?;
        let setup_s = setup_start.elapsed().as_secs_f64();

        self.pump_for(Duration::from_secs_f64(args.warmup))?;
        let rss_connected = self.core.rss();
        let anon_connected = self.core.anon();

        let w = self.measure_window(args.duration)?;
        let mut r = SfuReport::from_run(
            args,
            &self.core,
            &w,
            Setup {
                setup_s,
                rss_start,
                rss_publishers,
                rss_connected,
                anon_start,
                anon_publishers,
                anon_connected,
            },
        );
        r.room = room.to_string();
        Ok(r)
    }

    /// Detaches every handle (subscribers first), destroys the room and the session;
    /// returns what failed.
    fn end(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        let mut order: Vec<usize> = (0..self.handles.len()).collect();
        order.sort_by_key(|&i| self.core.clients[i].role == Role::Publisher);
        for i in order {
            if let Err(e) = self.api.detach(self.handles[i]) {
                errors.push(format!("{}: detach: {e}", self.core.clients[i].name()));
            }
            self.core.clients[i].rtc.disconnect();
        }
        if let Some(room) = self.room.take() {
            let body = json!({"request": "destroy", "room": room});
            match self.api.message(self.control, body, None) {
                Ok(Reply::Done(_)) => {}
                Ok(Reply::Later(_)) => {}
                Err(e) => errors.push(format!("destroying the room: {e}")),
            }
        }
        if let Err(e) = self.api.detach(self.control) {
            errors.push(format!("detaching the control handle: {e}"));
        }
        if let Err(e) = self.api.close() {
            errors.push(format!("destroying the session: {e}"));
        }
        errors
    }
}

/// The SDP without its candidate lines, and those candidates (`candidate:...`) with the
/// mid of the m-line they were on, each once: what a trickling client sends.
pub(crate) fn split_candidates(sdp: &str) -> (String, Vec<(String, String)>) {
    let mut out = String::with_capacity(sdp.len());
    let mut candidates: Vec<(String, String)> = Vec::new();
    let mut mid = String::new();
    let mut pending: Vec<String> = Vec::new();
    let flush = |mid: &str, pending: &mut Vec<String>, candidates: &mut Vec<(String, String)>| {
        for c in pending.drain(..) {
            if !candidates.iter().any(|(_, x)| *x == c) {
                candidates.push((mid.to_owned(), c));
            }
        }
    };
    for line in sdp.split_inclusive('\n') {
        let bare = line.trim_end();
        if bare.starts_with("m=") {
            flush(&mid, &mut pending, &mut candidates);
            mid.clear();
        }
        if let Some(m) = bare.strip_prefix("a=mid:") {
            m.trim().clone_into(&mut mid);
        }
        if let Some(c) = bare.strip_prefix("a=") {
            if c.starts_with("candidate:") {
                pending.push(c.to_owned());
                continue;
            }
            if c == "end-of-candidates" {
                continue;
            }
        }
        out.push_str(line);
    }
    flush(&mid, &mut pending, &mut candidates);
    (out, candidates)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn candidates_leave_the_sdp_once_with_their_mid() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
            a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\na=end-of-candidates\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n\
            a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n";
        let (out, c) = split_candidates(sdp);
        assert!(!out.contains("candidate"));
        assert!(out.contains("a=mid:1\r\n"));
        assert_eq!(
            c,
            vec![(
                "0".to_owned(),
                "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host".to_owned()
            )]
        );
    }
}
