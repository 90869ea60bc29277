//! `tsunagi bench sfu --participants N`: a real SFU room.
//!
//! N synthetic participants join one room over the signaling WebSocket (`/ws`,
//! `{"type":"join","room":R,"name":"bench-i","mode":"sfu"}`). Each is a [`str0m::Rtc`]
//! (the same clients as bench/sfu.rs, on the same single `mio` thread) that publishes
//! Opus + VP8 (sendonly, the same synthetic frames with their tags) and receives every
//! other participant on the m-lines the SFU offers: it offers to `"sfu"` after
//! `welcome`, accepts the answer, and answers every SFU `offer` (renegotiations as
//! others join). While its own offer is pending it ignores the SFU's (the SFU is the
//! polite side: it answers ours and offers again). No trickle: the client's host
//! candidate is in its SDP and the SFU is ICE-lite.
//!
//! Loss is counted per (publisher, subscriber) pair from the frame tags: frames the
//! publisher sent in the window minus those the subscriber received. The WebSockets are
//! sync `tungstenite` sockets, read without blocking on every turn of the loop (which
//! turns at least every 20 ms while audio is being sent); only the connect and the
//! WebSocket handshake of a join, and a churn run's question to the SFU about a starving
//! direction, block it.
//!
//! Each participant follows the m-lines' current `a=msid` from every SDP of the SFU
//! (which gives the m-lines of those who left to newcomers: same mid, new msid) and
//! counts frames whose tag names another publisher than their m-line's msid.
//!
//! **Churn** (`--churn-every T`): after the first N connect and the warm-up, every T
//! seconds of the window one participant, chosen with a seeded RNG (`--seed`), leaves
//! (its `Rtc` closes, `leave` goes out and its WebSocket is read until the server
//! closes it) and a new participant (the next index, so tags never repeat) joins in its
//! place. A *direction* is an ordered (publisher, subscriber) pair that was in the room
//! together: from the later `welcome` until the first of them left or the window ended.
//! Per direction the report has the time from its start to the subscriber's first video
//! frame of that publisher; a direction together for longer than `--starved-after`
//! without one is *starved* (exit status 3), and the tool asks the SFU for its state
//! (`GET /api/rooms/{room}/sfu`) when it first sees it starving.

use std::collections::HashMap;
use std::io;
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use mio::{Interest, Token};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Value};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use tungstenite::{Message, WebSocket};

use super::sfu::{Client, FrameLatency, Heard, Role, SfuArgs, Spread, CONNECT_TIMEOUT};
use super::sfu_common::{exit_with, per_kib, printed_json, ratio, Core, Driver, Tail};
use super::{err, loadavg, BenchError};

mod churn;
mod report;
mod signal;

pub use churn::*;
pub use report::*;
use signal::*;

/// Most participants in one room run (N x (N-1) streams on one generator thread).
pub const MAX_PARTICIPANTS: usize = 50;

/// WebSocket connect + handshake + `welcome`.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// From the last join until every participant receives every other one.
const MEDIA_TIMEOUT: Duration = Duration::from_secs(20);

/// After `leave`, how long a participant's WebSocket is read for the server's close.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// How often a churn run looks for directions starving at the moment (to ask the SFU).
const STARVED_CHECK: Duration = Duration::from_secs(1);

/// At most this many starved directions get the SFU's state in the report.
const MAX_SNAPSHOTS: usize = 20;

/// A direction whose video paused for longer than this counts in
/// `directions_with_video_gap_over_1s`, one with a frame later than this in
/// `directions_with_video_latency_over_1s`.
const STALL: Duration = Duration::from_secs(1);

/// Runs the room benchmark and prints the report: exit status 0 when it ran; with
/// `--churn-every`, 3 when it ran and a direction starved.
pub fn main(args: &SfuArgs) -> ExitCode {
    if args.churn_every.is_some() {
        let run = run_churn(args);
        let starved = run.as_ref().is_ok_and(|r| r.directions_starved > 0);
        let code = exit_with(run, |r| r.print(args.json));
        return if starved { ExitCode::from(3) } else { code };
    }
    exit_with(run(args), |r| r.print(args.json))
}

/// One participant of the run, by index (whether still in the room or not).
#[derive(Debug, Default)]
struct Member {
    /// Its peer id, from `welcome`.
    peer: Option<String>,
    /// When `welcome` arrived: in the room from then on.
    joined: Option<Instant>,
    /// When it sent `leave`.
    left: Option<Instant>,
    /// What it received of each publisher (taken when it leaves, or at the end).
    heard: HashMap<u16, Heard>,
    error: Option<String>,
}

struct Room<'a> {
    args: &'a SfuArgs,
    core: Core,
    /// The participants in the room, parallel to `core.clients` (the `mio` token of a
    /// client's socket is its position in both).
    sigs: Vec<Signal>,
    /// Every participant of the run, by index.
    members: Vec<Member>,
    /// Signaling errors that did not end a participant (e.g. `server-busy`).
    notes: Vec<String>,
    churn: Option<Churn>,
}

impl<'a> Room<'a> {
    fn new(args: &'a SfuArgs, n: usize) -> Result<Room<'a>, BenchError> {
        Ok(Room {
            args,
            core: Core::new(args)?,
            sigs: Vec::with_capacity(n),
            members: Vec::with_capacity(n),
            notes: Vec::new(),
            churn: None,
        })
    }
}

/// Runs the room benchmark and returns its report.
pub fn run(args: &SfuArgs) -> Result<RoomReport, BenchError> {
    args.validate()?;
    let Some(n) = args.participants else {
        return err("--participants is required for a room run");
    };
    let mut r = Room::new(args, n)?;
    let result = r.measure(n);
    r.leave_all();
    let mut report = result?;
    report.loadavg = loadavg();
    Ok(report)
}

impl Driver for Room<'_> {
    fn core(&mut self) -> &mut Core {
        &mut self.core
    }

    /// Waits at most `max_wait` (and 20 ms, so that signaling is read).
    fn turn(&mut self, max_wait: Duration) -> Result<(), BenchError> {
        self.core
            .poll_and_read(max_wait.min(Duration::from_millis(20)))?;
        let busy = Instant::now();
        for i in 0..self.core.clients.len() {
            self.signaling(i);
        }
        self.core.tick();
        if self.churn.is_some() {
            self.churn_turn()?;
        }
        if let Some(ch) = &mut self.churn {
            ch.longest_turn = ch.longest_turn.max(busy.elapsed());
        }
        Ok(())
    }
}

impl Room<'_> {
    /// Connects participant `i`'s WebSocket and sends `join`; its offer to the SFU goes
    /// out when `welcome` arrives (read on the loop's turns, like every other message).
    fn join(&mut self, i: usize) -> Result<(), BenchError> {
        let start = Instant::now();
        let tcp = TcpStream::connect_timeout(&self.core.base.addr, JOIN_TIMEOUT)
            .map_err(|e| BenchError(format!("cannot connect to {}: {e}", self.core.base.addr)))?;
        let _ = tcp.set_nodelay(true);
        let _ = tcp.set_read_timeout(Some(JOIN_TIMEOUT));
        let _ = tcp.set_write_timeout(Some(JOIN_TIMEOUT));
        let url = format!("ws://{}{}/ws", self.core.base.host, self.core.base.prefix);
        let (mut ws, _) = tungstenite::client(url.as_str(), tcp)
            .map_err(|e| BenchError(format!("WebSocket {url}: {e}")))?;
        let mut join = json!({"type": "join", "room": self.args.room, "name": format!("bench-{i}"), "mode": "sfu"});
        if let Some(t) = &self.args.token {
            join["token"] = json!(t);
        }
        ws.send(Message::text(join.to_string()))
            .map_err(|e| BenchError(format!("participant {i}: sending join: {e}")))?;
        ws.get_mut()
            .set_nonblocking(true)
            .map_err(|e| BenchError(format!("participant {i}: {e}")))?;
        let now = Instant::now();
        let (mut c, offer, pending) =
            Client::new(Role::Participant, i, self.args.local_ip, now).map_err(BenchError)?;
        c.posted = now;
        self.core
            .poll
            .registry()
            .register(
                &mut c.socket,
                Token(self.core.clients.len()),
                Interest::READABLE,
            )
            .map_err(|e| BenchError(format!("mio register: {e}")))?;
        c.drain(&mut self.core.sh);
        self.core.clients.push(c);
        self.sigs.push(Signal {
            ws,
            offer: Some(offer),
            pending: Some(pending),
            start,
            welcomed: false,
            join_ms: 0.0,
            sfu_offers: 0,
            ignored_offers: 0,
            closed: false,
        });
        if self.members.len() <= i {
            self.members.resize_with(i + 1, Member::default);
        }
        Ok(())
    }

    /// Reads every signaling message waiting for participant `i` (a position).
    fn signaling(&mut self, i: usize) {
        let (c, sig) = (&mut self.core.clients[i], &mut self.sigs[i]);
        if sig.closed {
            return;
        }
        loop {
            let m = match sig.ws.read() {
                Ok(m) => m,
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    sig.closed = true;
                    c.fail(format!("{}: signaling closed: {e}", c.name()));
                    return;
                }
            };
            let Message::Text(t) = m else { continue };
            let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                continue;
            };
            let from_sfu = v["from"] == "sfu";
            match v["type"].as_str() {
                Some("welcome") if !sig.welcomed => {
                    sig.welcomed = true;
                    sig.join_ms = sig.start.elapsed().as_secs_f64() * 1000.0;
                    if v["mode"] != "sfu" {
                        c.fail(format!(
                            "{}: the room is in {} mode, not sfu (a room's policy is fixed when it is created: use a fresh --room, or a server with an SFU)",
                            c.name(),
                            v["mode"]
                        ));
                        continue;
                    }
                    let peer = v["id"].as_str().unwrap_or_default().to_owned();
                    self.core.sh.peer_index.insert(peer.clone(), c.index as u16);
                    if let Some(m) = self.members.get_mut(c.index) {
                        m.peer = Some(peer);
                        m.joined = Some(Instant::now());
                    }
                    if let Some(offer) = sig.offer.take() {
                        if let Err(e) =
                            sig.send(&json!({"type": "offer", "to": "sfu", "sdp": offer}))
                        {
                            c.fail(format!("{}: {e}", c.name()));
                        }
                    }
                }
                Some("error") if !sig.welcomed => {
                    c.fail(format!(
                        "{}: join refused: {} ({})",
                        c.name(),
                        v["code"].as_str().unwrap_or("?"),
                        v["message"].as_str().unwrap_or("")
                    ));
                }
                Some("answer") if from_sfu => {
                    let Some(pending) = sig.pending.take() else {
                        continue;
                    };
                    let sdp = v["sdp"].as_str().unwrap_or("");
                    let r = SdpAnswer::from_sdp_string(sdp)
                        .map_err(|e| format!("the SFU's answer does not parse: {e}"))
                        .and_then(|a| {
                            c.rtc
                                .sdp_api()
                                .accept_answer(pending, a)
                                .map_err(|e| format!("str0m refused the SFU's answer: {e}"))
                        });
                    match r {
                        Ok(()) => c.recv.follow_sdp(sdp),
                        Err(e) => c.fail(format!("{}: {e}", c.name())),
                    }
                    c.drain(&mut self.core.sh);
                }
                // Impolite toward the SFU: while our offer is pending, its offer is
                // dropped (it answers ours and offers again).
                Some("offer") if from_sfu && sig.pending.is_some() => {
                    sig.ignored_offers += 1;
                }
                Some("offer") if from_sfu => {
                    let sdp = v["sdp"].as_str().unwrap_or("");
                    let r = SdpOffer::from_sdp_string(sdp)
                        .map_err(|e| format!("the SFU's offer does not parse: {e}"))
                        .and_then(|o| {
                            c.rtc
                                .sdp_api()
                                .accept_offer(o)
                                .map_err(|e| format!("str0m refused the SFU's offer: {e}"))
                        });
                    match r {
                        Ok(answer) => {
                            // Whose media each m-line carries from now on.
                            c.recv.follow_sdp(sdp);
                            sig.sfu_offers += 1;
                            let msg = json!({"type": "answer", "to": "sfu", "sdp": answer.to_sdp_string()});
                            if let Err(e) = sig.send(&msg) {
                                c.fail(format!("{}: {e}", c.name()));
                            }
                        }
                        Err(e) => c.fail(format!("{}: {e}", c.name())),
                    }
                    c.drain(&mut self.core.sh);
                }
                Some("error") => {
                    let e = format!(
                        "{}: server error {} ({}) for {}",
                        c.name(),
                        v["code"].as_str().unwrap_or("?"),
                        v["message"].as_str().unwrap_or(""),
                        v["ref"].as_str().unwrap_or("-")
                    );
                    if v["code"] == "sfu-error" {
                        c.fail(e);
                    } else if self.notes.len() < 100 {
                        self.notes.push(e);
                    }
                }
                _ => {}
            }
        }
        match sig.ws.flush() {
            Ok(()) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                sig.closed = true;
                c.fail(format!("{}: signaling: {e}", c.name()));
            }
        }
        if !sig.welcomed && sig.start.elapsed() > JOIN_TIMEOUT {
            c.fail(format!("{}: no welcome within {JOIN_TIMEOUT:?}", c.name()));
        }
    }

    /// The churn's part of a turn: closes the WebSockets of those who left and, in the
    /// window, replaces one participant when it is time and looks for starving
    /// directions.
    fn churn_turn(&mut self) -> Result<(), BenchError> {
        let Some(ch) = &mut self.churn else {
            return Ok(());
        };
        read_closing(&mut ch.closing);
        let now = Instant::now();
        let Some((start, end)) = self.core.sh.window else {
            return Ok(());
        };
        if !self.core.sh.sending || now < start || now >= end {
            return Ok(());
        }
        let next = *ch.next.get_or_insert(start + ch.every);
        if now >= next {
            // Behind (a slow turn): the next one a full period from now, no burst.
            let after = next + ch.every;
            ch.next = Some(if after <= now { now + ch.every } else { after });
            let present: Vec<usize> = (0..self.sigs.len())
                .filter(|&p| self.sigs[p].welcomed)
                .collect();
            if !present.is_empty() {
                let pos = present[ch.rng.random_range(0..present.len())];
                self.leave(pos, now);
                self.join(self.members.len())?;
            }
        }
        self.watch_starved(now);
        Ok(())
    }

    /// Participant at position `pos` leaves: its media connection closes, `leave` goes
    /// out on its WebSocket (read on until the server closes it), and what it received
    /// is kept for the report.
    fn leave(&mut self, pos: usize, now: Instant) {
        let mut c = self.core.clients.swap_remove(pos);
        let mut sig = self.sigs.swap_remove(pos);
        let registry = self.core.poll.registry();
        let _ = registry.deregister(&mut c.socket);
        // The last participant took `pos`: its socket's token follows.
        if let Some(moved) = self.core.clients.get_mut(pos) {
            if let Err(e) = registry.reregister(&mut moved.socket, Token(pos), Interest::READABLE) {
                moved.fail(format!("mio reregister: {e}"));
            }
        }
        c.rtc.disconnect();
        if let Some(m) = self.members.get_mut(c.index) {
            m.left = Some(now);
            m.heard = std::mem::take(&mut c.recv.heard);
            m.error.clone_from(&c.error);
        }
        let Some(ch) = &mut self.churn else {
            return;
        };
        ch.gone.add(&c, &sig);
        ch.leaves += 1;
        if !sig.closed && sig.send(&json!({"type": "leave"})).is_ok() {
            let _ = sig.ws.flush();
            ch.closing.push((sig.ws, now + CLOSE_WAIT));
        }
    }

    /// Once a second in the window: directions in the room together for longer than
    /// `--starved-after` without a video frame get the SFU's state of the subscriber and
    /// of its subscriptions to that publisher (GET /api/rooms/{room}/sfu), once each, for
    /// at most MAX_SNAPSHOTS directions.
    fn watch_starved(&mut self, now: Instant) {
        let Some(ch) = &self.churn else {
            return;
        };
        if now.duration_since(ch.last_check) < STARVED_CHECK || ch.snapshots.len() >= MAX_SNAPSHOTS
        {
            return;
        }
        let bound = Duration::from_secs_f64(self.args.starved_after);
        let mut starving = Vec::new();
        for s in &self.core.clients {
            let Some(s_in) = self.members.get(s.index).and_then(|m| m.joined) else {
                continue;
            };
            for p in self.core.clients.iter().filter(|p| p.index != s.index) {
                let Some(p_in) = self.members.get(p.index).and_then(|m| m.joined) else {
                    continue;
                };
                let key = (p.index as u16, s.index as u16);
                if now.saturating_duration_since(s_in.max(p_in)) > bound
                    && s.recv.heard.get(&key.0).is_none_or(|h| h.video == 0)
                    && !ch.snapshots.contains_key(&key)
                {
                    starving.push(key);
                }
            }
        }
        let room: Option<Value> = if starving.is_empty() {
            None
        } else {
            let path = format!("/api/rooms/{}/sfu", self.args.room);
            match self.core.base.request("GET", &path, None, "", None) {
                Ok(r) if r.status == 200 => serde_json::from_str(&r.body).ok(),
                Ok(r) => {
                    Some(json!({"error": format!("GET {path}: {} {}", r.status, r.body.trim())}))
                }
                Err(e) => Some(json!({"error": e})),
            }
        };
        let Some(ch) = &mut self.churn else {
            return;
        };
        ch.last_check = now;
        for key in starving {
            if ch.snapshots.len() >= MAX_SNAPSHOTS {
                break;
            }
            let peer = |i: u16| {
                self.members
                    .get(usize::from(i))
                    .and_then(|m| m.peer.clone())
            };
            let state = sfu_state(room.as_ref(), peer(key.0), peer(key.1));
            ch.snapshots.insert(key, state);
        }
    }

    fn first_failure(&self) -> Result<(), BenchError> {
        match self.core.clients.iter().find(|c| !c.alive()) {
            Some(c) => err(c.error.clone().unwrap_or_default()),
            None => Ok(()),
        }
    }

    /// Runs until `done` holds for every participant, or errors after `timeout`.
    fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Client, usize) -> bool,
    ) -> Result<(), BenchError> {
        let deadline = Instant::now() + timeout;
        let n = self.core.clients.len();
        loop {
            self.first_failure()?;
            let waiting: Vec<String> = self
                .core
                .clients
                .iter()
                .filter(|c| !done(c, n))
                .map(Client::name)
                .collect();
            if waiting.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let mut notes = self.notes.clone();
                notes.truncate(5);
                return err(format!(
                    "{} of {n} participants did not {what} within {} s: {}{}",
                    waiting.len(),
                    timeout.as_secs(),
                    waiting.join(", "),
                    if notes.is_empty() {
                        String::new()
                    } else {
                        format!(" (server said: {})", notes.join("; "))
                    }
                ));
            }
            self.turn(Duration::from_millis(20))?;
        }
    }

    fn measure(&mut self, n: usize) -> Result<RoomReport, BenchError> {
        let args = self.args;
        let rss_start = self.core.rss();
        let anon_start = self.core.anon();
        let setup_start = Instant::now();
        for i in 0..n {
            self.join(i)?;
            self.turn(Duration::ZERO)?;
        }
        self.wait_for("connect (ICE + DTLS)", CONNECT_TIMEOUT, |c, _| {
            c.connected.is_some()
        })?;
        // Every participant receives every other one (the SFU's renegotiations done).
        self.wait_for("receive every other participant", MEDIA_TIMEOUT, |c, n| {
            (0..n)
                .filter(|&j| j != c.index)
                .all(|j| c.recv.seen.contains_key(&(j as u16)))
        })?;
        let setup_s = setup_start.elapsed().as_secs_f64();
        self.pump_for(Duration::from_secs_f64(args.warmup))?;
        let rss_connected = self.core.rss();
        let anon_connected = self.core.anon();
        let w = self.measure_window(args.duration)?;
        let elapsed = w.elapsed;

        let mut r = RoomReport {
            bench: "sfu-room",
            http: args.http.clone(),
            room: args.room.clone(),
            participants: n,
            pairs: n * (n - 1),
            bitrate: args.bitrate,
            duration_s: elapsed,
            warmup_s: args.warmup,
            setup_s,
            ..RoomReport::default()
        };
        r.join_ms = Spread::of(self.sigs.iter().map(|s| s.join_ms).collect());
        r.connect_ms = Spread::of(
            self.core
                .clients
                .iter()
                .filter_map(|c| c.connected)
                .map(|d| d.as_secs_f64() * 1000.0)
                .collect(),
        );
        r.sfu_offers = self.sigs.iter().map(|s| s.sfu_offers).sum();
        let mut sent: HashMap<usize, [u64; 2]> = HashMap::new();
        for c in &self.core.clients {
            r.sent_audio_frames += c.send.window_audio;
            r.sent_video_frames += c.send.window_video;
            r.sent_keyframes += c.send.window_keyframes;
            r.keyframe_requests += c.send.keyframe_requests;
            sent.insert(c.index, [c.send.window_audio, c.send.window_video]);
        }
        let mut worst = [1.0f64, 1.0f64];
        let (mut datagrams, mut bytes, mut received) = (0u64, 0u64, 0u64);
        for c in &self.core.clients {
            let rc = &c.recv;
            for p in (0..n).filter(|&p| p != c.index) {
                let s = sent.get(&p).copied().unwrap_or_default();
                let g = rc.frames.get(&(p as u16)).copied().unwrap_or_default();
                let got = [g[0].min(s[0]), g[1].min(s[1])];
                for k in 0..2 {
                    worst[k] = worst[k].min(ratio(got[k], s[k]));
                }
                r.expected_frames += s[0] + s[1];
                received += got[0] + got[1];
                r.per_pair.push(PairResult {
                    publisher: p,
                    subscriber: c.index,
                    audio_expected: s[0],
                    audio_received: got[0],
                    video_expected: s[1],
                    video_received: got[1],
                });
            }
            r.keyframe_flag_mismatches += rc.keyframe_mismatches;
            r.untagged_frames += rc.untagged;
            r.forwarded_packets += rc.packets;
            r.msid_mismatches += rc.msid_mismatches;
            datagrams += rc.datagrams;
            bytes += rc.bytes;
        }
        r.worst_pair_audio_ratio = worst[0];
        r.worst_pair_video_ratio = worst[1];
        r.received_frames = received;
        r.lost_frames = r.expected_frames.saturating_sub(received);
        r.loss_ratio = ratio(r.lost_frames, r.expected_frames);
        let rates = w.rates(r.forwarded_packets);
        let secs = rates.secs;
        r.forwarded_packets_per_sec = r.forwarded_packets as f64 / secs;
        r.received_datagrams_per_sec = datagrams as f64 / secs;
        r.received_mbit_per_sec = bytes as f64 * 8.0 / secs / 1e6;
        r.frame_latency_ms = self.core.frame_latency();
        r.server_cpu_s = rates.server_cpu_s;
        r.server_cpu_util = rates.server_cpu_util;
        r.server_cpu_us_per_forwarded_packet = rates.server_cpu_us_per_forwarded_packet;
        r.server_cpu_percent_per_participant = rates.server_cpu_util.map(|u| u * 100.0 / n as f64);
        r.server_rss_start_kib = rss_start;
        r.server_rss_connected_kib = rss_connected;
        r.server_rss_end_kib = w.rss_end;
        r.server_peak_rss_kib = self.core.peak_rss;
        r.server_rss_per_participant_kib = per_kib(rss_start, rss_connected, n);
        r.server_anon_start_kib = anon_start;
        r.server_anon_connected_kib = anon_connected;
        r.server_anon_per_participant_kib = per_kib(anon_start, anon_connected, n);
        r.server_packets_out_per_sec = rates.server_packets_out_per_sec;
        r.generator_cpu_util = rates.generator_cpu_util;
        r.errors.extend(self.core.client_errors());
        r.errors.extend(self.notes.iter().cloned());
        Ok(r)
    }

    /// Sends `leave` on every WebSocket and reads until the server closes it (closing
    /// with unread messages would reset the connection and could lose the `leave`).
    fn leave_all(&mut self) {
        for sig in self.sigs.iter_mut().filter(|s| !s.closed) {
            let tcp = sig.ws.get_mut();
            let _ = tcp.set_nonblocking(false);
            let _ = tcp.set_read_timeout(Some(Duration::from_millis(200)));
            if sig.ws.send(Message::text(r#"{"type":"leave"}"#)).is_err() {
                sig.closed = true;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        for sig in self.sigs.iter_mut().filter(|s| !s.closed) {
            while Instant::now() < deadline {
                match sig.ws.read() {
                    Ok(_) => {}
                    Err(tungstenite::Error::Io(e))
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
            }
            sig.closed = true;
        }
        for c in &mut self.core.clients {
            c.rtc.disconnect();
        }
        if let Some(ch) = &mut self.churn {
            while !ch.closing.is_empty() && Instant::now() < deadline {
                read_closing(&mut ch.closing);
                std::thread::sleep(Duration::from_millis(10));
            }
            ch.closing.clear();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let q = Quantiles::of((1..=100).map(f64::from).collect());
        assert_eq!((q.p50, q.p99, q.max), (50.0, 99.0, 100.0));
        let q = Quantiles::of(vec![7.0]);
        assert_eq!((q.p50, q.p99, q.max), (7.0, 7.0, 7.0));
        assert_eq!(Quantiles::of(Vec::new()).max, 0.0);
    }

    #[test]
    fn the_sfu_state_of_one_direction() {
        let room = json!({"room": "r", "peers": [
            {"peer": "p_a", "connection": "live", "connected": true, "consentLost": false,
             "negotiation": {"offers": 2}, "subscriptions": []},
            {"peer": "p_b", "connection": "live", "connected": true, "consentLost": false,
             "negotiation": {"offers": 3},
             "subscriptions": [
                {"publisher": "p_a", "kind": "video", "state": "offered"},
                {"publisher": "p_c", "kind": "video", "state": "negotiated"}]}]});
        let s = sfu_state(Some(&room), Some("p_a".into()), Some("p_b".into()));
        assert_eq!(s["negotiation"]["offers"], 3);
        assert_eq!(s["subscriptions"].as_array().unwrap().len(), 1);
        assert_eq!(s["subscriptions"][0]["state"], "offered");
        assert_eq!(s["publisherInRoom"], true);
        let gone = sfu_state(Some(&room), Some("p_a".into()), Some("p_x".into()));
        assert!(gone["error"].is_string());
        assert_eq!(sfu_state(None, None, None), Value::Null);
    }
}
