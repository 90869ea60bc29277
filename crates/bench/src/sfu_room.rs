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
use super::sfu_common::{exit_with, printed_json, ratio, Core, Driver, Tail};
use super::{err, loadavg, BenchError};

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

/// What one subscriber received of one publisher's in-window frames.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PairResult {
    pub publisher: usize,
    pub subscriber: usize,
    pub audio_expected: u64,
    pub audio_received: u64,
    pub video_expected: u64,
    pub video_received: u64,
}

/// What `tsunagi bench sfu --participants N` measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RoomReport {
    pub bench: &'static str,
    pub http: String,
    pub room: String,
    pub participants: usize,
    /// N x (N-1): forwarded (publisher, subscriber) pairs.
    pub pairs: usize,
    /// Video bits/s per participant.
    pub bitrate: u64,
    pub duration_s: f64,
    pub warmup_s: f64,
    /// From the first WebSocket connect until every pair carried media.
    pub setup_s: f64,
    /// WebSocket connect to `welcome`, per participant.
    pub join_ms: Spread,
    /// `join` sent to DTLS connected, per participant.
    pub connect_ms: Spread,
    /// SFU offers answered (renegotiations), whole run.
    pub sfu_offers: u64,
    pub sent_audio_frames: u64,
    pub sent_video_frames: u64,
    pub sent_keyframes: u64,
    pub keyframe_requests: u64,
    /// Over all pairs: frames of the publisher sent in the window.
    pub expected_frames: u64,
    pub received_frames: u64,
    pub lost_frames: u64,
    pub loss_ratio: f64,
    /// The lowest received/expected of any pair.
    pub worst_pair_audio_ratio: f64,
    pub worst_pair_video_ratio: f64,
    pub keyframe_flag_mismatches: u64,
    pub untagged_frames: u64,
    /// Frames whose tag names another publisher than the current `a=msid` of the
    /// m-line they came on.
    pub msid_mismatches: u64,
    /// RTP packets of the received in-window frames, all participants.
    pub forwarded_packets: u64,
    pub forwarded_packets_per_sec: f64,
    pub received_datagrams_per_sec: f64,
    pub received_mbit_per_sec: f64,
    pub frame_latency_ms: FrameLatency,
    pub server_cpu_s: Option<f64>,
    pub server_cpu_util: Option<f64>,
    pub server_cpu_us_per_forwarded_packet: Option<f64>,
    /// server_cpu_util / N, percent of one core.
    pub server_cpu_percent_per_participant: Option<f64>,
    pub server_rss_start_kib: Option<u64>,
    pub server_rss_connected_kib: Option<u64>,
    pub server_rss_end_kib: Option<u64>,
    pub server_peak_rss_kib: Option<u64>,
    /// (RSS with everyone after the warm-up − RSS before any client) / N.
    pub server_rss_per_participant_kib: Option<f64>,
    pub server_packets_out_per_sec: Option<f64>,
    pub generator_cpu_util: Option<f64>,
    pub per_pair: Vec<PairResult>,
    /// Failed participants and signaling errors.
    pub errors: Vec<String>,
    pub loadavg: String,
}

impl RoomReport {
    pub fn print(&self, json: bool) {
        if printed_json(self, json) {
            return;
        }
        println!(
            "bench sfu room {} against {} ({} participants at {} kbit/s video, {} forwarded pairs)",
            self.room,
            self.http,
            self.participants,
            self.bitrate / 1000,
            self.pairs
        );
        println!(
            "  setup {:.2} s; join ms p50/max {:.0}/{:.0}; connect ms p50/max {:.0}/{:.0}; {} SFU offers answered",
            self.setup_s,
            self.join_ms.p50,
            self.join_ms.max,
            self.connect_ms.p50,
            self.connect_ms.max,
            self.sfu_offers
        );
        println!(
            "  window {:.1} s: sent {} audio + {} video frames ({} keyframes, {} requested)",
            self.duration_s,
            self.sent_audio_frames,
            self.sent_video_frames,
            self.sent_keyframes,
            self.keyframe_requests
        );
        println!(
            "  pairs received {} of {} frames (lost {}, {:.3} %); worst pair: audio {:.1} %, video {:.1} %",
            self.received_frames,
            self.expected_frames,
            self.lost_frames,
            self.loss_ratio * 100.0,
            self.worst_pair_audio_ratio * 100.0,
            self.worst_pair_video_ratio * 100.0
        );
        println!(
            "  forwarded {:.0} RTP packets/s ({:.0} datagrams/s, {:.2} Mbit/s received)",
            self.forwarded_packets_per_sec,
            self.received_datagrams_per_sec,
            self.received_mbit_per_sec
        );
        if self.msid_mismatches > 0 {
            println!(
                "  frames on an m-line whose a=msid names another publisher: {}",
                self.msid_mismatches
            );
        }
        Tail {
            frame_latency_ms: &self.frame_latency_ms,
            keyframe_flag_mismatches: self.keyframe_flag_mismatches,
            untagged_frames: self.untagged_frames,
            server_cpu_s: self.server_cpu_s,
            server_cpu_util: self.server_cpu_util,
            server_cpu_us_per_forwarded_packet: self.server_cpu_us_per_forwarded_packet,
            per: "participant",
            server_cpu_percent_per: self.server_cpu_percent_per_participant,
            rss: &[
                ("start", self.server_rss_start_kib),
                ("connected", self.server_rss_connected_kib),
                ("end", self.server_rss_end_kib),
                ("peak", self.server_peak_rss_kib),
            ],
            server_rss_per_kib: self.server_rss_per_participant_kib,
            server_packets_out_per_sec: self.server_packets_out_per_sec,
            generator_cpu_util: self.generator_cpu_util,
            errors: &self.errors,
            loadavg: &self.loadavg,
        }
        .print();
    }
}

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

/// One participant's signaling.
struct Signal {
    ws: WebSocket<TcpStream>,
    /// Our offer to the SFU, sent when `welcome` arrives.
    offer: Option<String>,
    /// Our offer to the SFU, until its answer.
    pending: Option<SdpPendingOffer>,
    /// When the WebSocket connect started.
    start: Instant,
    welcomed: bool,
    join_ms: f64,
    sfu_offers: u64,
    /// SFU offers ignored because our own offer was out.
    ignored_offers: u64,
    closed: bool,
}

impl Signal {
    fn send(&mut self, v: &Value) -> Result<(), String> {
        match self.ws.send(Message::text(v.to_string())) {
            Ok(()) => Ok(()),
            // Queued; flushed on a later turn.
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(format!("signaling: {e}")),
        }
    }
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

/// The counters of participants, summed as they leave and at the end.
#[derive(Debug, Default)]
struct Totals {
    join_ms: Vec<f64>,
    connect_ms: Vec<f64>,
    sfu_offers: u64,
    ignored_offers: u64,
    sent_audio: u64,
    sent_video: u64,
    sent_keyframes: u64,
    keyframe_requests: u64,
    keyframe_mismatches: u64,
    untagged: u64,
    msid_mismatches: u64,
    msid_changes: u64,
    packets: u64,
    datagrams: u64,
    bytes: u64,
    errors: Vec<String>,
}

impl Totals {
    fn add(&mut self, c: &Client, sig: &Signal) {
        if sig.welcomed {
            self.join_ms.push(sig.join_ms);
        }
        if let Some(d) = c.connected {
            self.connect_ms.push(d.as_secs_f64() * 1000.0);
        }
        self.sfu_offers += sig.sfu_offers;
        self.ignored_offers += sig.ignored_offers;
        self.sent_audio += c.send.window_audio;
        self.sent_video += c.send.window_video;
        self.sent_keyframes += c.send.window_keyframes;
        self.keyframe_requests += c.send.keyframe_requests;
        let rc = &c.recv;
        self.keyframe_mismatches += rc.keyframe_mismatches;
        self.untagged += rc.untagged;
        self.msid_mismatches += rc.msid_mismatches;
        self.msid_changes += rc.msid_changes;
        self.packets += rc.packets;
        self.datagrams += rc.datagrams;
        self.bytes += rc.bytes;
        if let Some(e) = &c.error {
            self.errors.push(e.clone());
        }
    }
}

/// What a churn run keeps besides the participants in the room.
struct Churn {
    every: Duration,
    /// The next leave + join (set when the window starts).
    next: Option<Instant>,
    rng: StdRng,
    leaves: u64,
    /// WebSockets of those who left, read until the server closes them (or a deadline).
    closing: Vec<(WebSocket<TcpStream>, Instant)>,
    /// Participants who left.
    gone: Totals,
    /// The SFU's state of directions seen starving while the run went on.
    snapshots: HashMap<(u16, u16), Value>,
    last_check: Instant,
    /// The longest the loop was busy in one turn with signaling, leaves and joins.
    longest_turn: Duration,
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

/// Runs the room benchmark with churn (`--churn-every`) and returns its report.
pub fn run_churn(args: &SfuArgs) -> Result<ChurnReport, BenchError> {
    args.validate()?;
    let (Some(n), Some(every)) = (args.participants, args.churn_every) else {
        return err("--churn-every needs --participants");
    };
    let mut r = Room::new(args, n)?;
    r.churn = Some(Churn {
        every: Duration::from_secs_f64(every),
        next: None,
        rng: StdRng::seed_from_u64(args.seed),
        leaves: 0,
        closing: Vec::new(),
        gone: Totals::default(),
        snapshots: HashMap::new(),
        last_check: Instant::now(),
        longest_turn: Duration::ZERO,
    });
    let result = r.measure_churn(n);
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
        if let (Some(a), Some(b)) = (rss_start, rss_connected) {
            r.server_rss_per_participant_kib = Some((b as f64 - a as f64) / n as f64);
        }
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

impl Room<'_> {
    /// The churn run: N participants join, then every `--churn-every` in the window one
    /// of them leaves and a new one takes its place; every direction that existed is
    /// judged at the end.
    fn measure_churn(&mut self, n: usize) -> Result<ChurnReport, BenchError> {
        let args = self.args;
        let rss_start = self.core.rss();
        let setup_start = Instant::now();
        for i in 0..n {
            self.join(i)?;
            self.turn(Duration::ZERO)?;
        }
        self.wait_for("connect (ICE + DTLS)", CONNECT_TIMEOUT, |c, _| {
            c.connected.is_some()
        })?;
        let setup_s = setup_start.elapsed().as_secs_f64();
        self.pump_for(Duration::from_secs_f64(args.warmup))?;
        let rss_connected = self.core.rss();
        let w = self.measure_window(args.duration)?;
        let now = Instant::now();
        // The directions end with the window (the publishers stop there).
        let (window_start, window_end) = self.core.sh.window.unwrap_or((now, now));

        let Some(ch) = &mut self.churn else {
            return err("not a churn run");
        };
        let mut totals = std::mem::take(&mut ch.gone);
        for (c, sig) in self.core.clients.iter().zip(&self.sigs) {
            totals.add(c, sig);
            if let Some(m) = self.members.get_mut(c.index) {
                m.heard.clone_from(&c.recv.heard);
                m.error.clone_from(&c.error);
            }
        }

        let mut r = ChurnReport {
            bench: "sfu-room-churn",
            http: args.http.clone(),
            room: args.room.clone(),
            participants: n,
            bitrate: args.bitrate,
            churn_every_s: ch.every.as_secs_f64(),
            seed: args.seed,
            starved_after_s: args.starved_after,
            duration_s: w.elapsed,
            warmup_s: args.warmup,
            setup_s,
            joins: self.members.len(),
            leaves: ch.leaves,
            join_ms: Spread::of(std::mem::take(&mut totals.join_ms)),
            connect_ms: Spread::of(std::mem::take(&mut totals.connect_ms)),
            sfu_offers: totals.sfu_offers,
            ignored_sfu_offers: totals.ignored_offers,
            sent_audio_frames: totals.sent_audio,
            sent_video_frames: totals.sent_video,
            sent_keyframes: totals.sent_keyframes,
            keyframe_requests: totals.keyframe_requests,
            keyframe_flag_mismatches: totals.keyframe_mismatches,
            untagged_frames: totals.untagged,
            msid_mismatches: totals.msid_mismatches,
            reused_mlines: totals.msid_changes,
            forwarded_packets: totals.packets,
            generator_longest_turn_ms: ch.longest_turn.as_secs_f64() * 1000.0,
            ..ChurnReport::default()
        };

        let bound = Duration::from_secs_f64(args.starved_after);
        let secs = |a: Instant, b: Instant| {
            if b >= a {
                b.duration_since(a).as_secs_f64()
            } else {
                -a.duration_since(b).as_secs_f64()
            }
        };
        let (mut first_ms, mut churn_first_ms) = (Vec::new(), Vec::new());
        let (mut gaps_ms, mut latency_ms) = (Vec::new(), Vec::new());
        let mut worst = 1.0f64;
        for (si, s) in self.members.iter().enumerate() {
            let Some(s_in) = s.joined else { continue };
            let s_out = s.left.unwrap_or(window_end).min(window_end);
            for (pi, p) in self.members.iter().enumerate().filter(|(pi, _)| *pi != si) {
                let Some(p_in) = p.joined else { continue };
                let from = s_in.max(p_in);
                let to = s_out.min(p.left.unwrap_or(window_end));
                if to <= from {
                    continue;
                }
                let together = to.duration_since(from);
                let h = s.heard.get(&(pi as u16)).copied().unwrap_or_default();
                r.directions += 1;
                let mut d = DirectionResult {
                    publisher: pi,
                    subscriber: si,
                    from_s: secs(window_start, from),
                    together_s: together.as_secs_f64(),
                    audio_frames: h.audio,
                    video_frames: h.video,
                    ..DirectionResult::default()
                };
                if let Some(first) = h.first_video {
                    let ms = first.saturating_duration_since(from).as_secs_f64() * 1000.0;
                    let gap = h.longest_video_gap.as_secs_f64() * 1000.0;
                    r.directions_served += 1;
                    first_ms.push(ms);
                    if from >= window_start {
                        churn_first_ms.push(ms);
                    }
                    gaps_ms.push(gap);
                    if h.longest_video_gap > STALL {
                        r.directions_with_video_gap_over_1s += 1;
                    }
                    let latency = h.max_video_latency.as_secs_f64() * 1000.0;
                    latency_ms.push(latency);
                    if h.max_video_latency > STALL {
                        r.directions_with_video_latency_over_1s += 1;
                    }
                    d.max_video_latency_ms = Some(latency);
                    d.max_video_latency_at_s =
                        h.max_video_latency_at.map(|t| secs(window_start, t));
                    let span = h.video_span();
                    d.video_frames_spanned = span;
                    r.video_frames_spanned += span;
                    r.video_frames_missing += span.saturating_sub(h.video);
                    worst = worst.min(ratio(h.video.min(span), span));
                    if !h.first_video_keyframe {
                        r.first_frame_not_keyframe += 1;
                    }
                    d.first_video_ms = Some(ms);
                    d.first_video_keyframe = Some(h.first_video_keyframe);
                    d.longest_video_gap_ms = Some(gap);
                } else if together > bound {
                    r.directions_starved += 1;
                    r.starved.push(StarvedDirection {
                        publisher: pi,
                        subscriber: si,
                        publisher_peer: p.peer.clone(),
                        subscriber_peer: s.peer.clone(),
                        from_s: d.from_s,
                        together_s: d.together_s,
                        audio_frames: h.audio,
                        publisher_error: p.error.clone(),
                        subscriber_error: s.error.clone(),
                        sfu_state: ch.snapshots.get(&(pi as u16, si as u16)).cloned(),
                    });
                } else {
                    r.directions_unserved_short += 1;
                }
                r.per_direction.push(d);
            }
        }
        r.peer_ids = self.members.iter().map(|m| m.peer.clone()).collect();
        r.first_video_ms = Quantiles::of(first_ms);
        r.first_video_ms_joined_in_window = Quantiles::of(churn_first_ms);
        r.longest_video_gap_ms = Quantiles::of(gaps_ms);
        r.max_video_latency_ms = Quantiles::of(latency_ms);
        r.worst_direction_video_ratio = if r.directions_served > 0 { worst } else { 0.0 };

        let rates = w.rates(r.forwarded_packets);
        r.forwarded_packets_per_sec = r.forwarded_packets as f64 / rates.secs;
        r.received_datagrams_per_sec = totals.datagrams as f64 / rates.secs;
        r.received_mbit_per_sec = totals.bytes as f64 * 8.0 / rates.secs / 1e6;
        r.frame_latency_ms = self.core.frame_latency();
        r.server_cpu_s = rates.server_cpu_s;
        r.server_cpu_util = rates.server_cpu_util;
        r.server_cpu_us_per_forwarded_packet = rates.server_cpu_us_per_forwarded_packet;
        r.server_cpu_percent_per_participant = rates.server_cpu_util.map(|u| u * 100.0 / n as f64);
        r.server_rss_start_kib = rss_start;
        r.server_rss_connected_kib = rss_connected;
        r.server_rss_end_kib = w.rss_end;
        r.server_peak_rss_kib = self.core.peak_rss;
        if let (Some(a), Some(b)) = (rss_start, rss_connected) {
            r.server_rss_per_participant_kib = Some((b as f64 - a as f64) / n as f64);
        }
        r.server_packets_out_per_sec = rates.server_packets_out_per_sec;
        r.generator_cpu_util = rates.generator_cpu_util;
        r.errors = totals.errors;
        r.errors.extend(self.notes.iter().cloned());
        Ok(r)
    }
}

/// Reads the WebSockets of participants who left until the server closes them (or
/// their deadline passes), so that the `leave` is not lost to a reset.
fn read_closing(closing: &mut Vec<(WebSocket<TcpStream>, Instant)>) {
    let now = Instant::now();
    closing.retain_mut(|(ws, deadline)| {
        if now >= *deadline {
            return false;
        }
        loop {
            match ws.read() {
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return false,
            }
        }
        match ws.flush() {
            Ok(()) => true,
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => true,
            Err(_) => false,
        }
    });
}

/// From the SFU's `GET /api/rooms/{room}/sfu`: the subscriber's connection and its
/// subscriptions to the publisher.
fn sfu_state(room: Option<&Value>, publisher: Option<String>, subscriber: Option<String>) -> Value {
    let Some(room) = room else {
        return Value::Null;
    };
    if room.get("error").is_some() {
        return room.clone();
    }
    let Some(sub) = room["peers"].as_array().and_then(|peers| {
        peers
            .iter()
            .find(|p| p["peer"].as_str() == subscriber.as_deref())
    }) else {
        return json!({"error": "the subscriber is not in the SFU's room"});
    };
    let mut state = serde_json::Map::new();
    for k in [
        "connection",
        "connected",
        "consentLost",
        "freeMlines",
        "bitrate",
        "negotiation",
    ] {
        state.insert(k.to_owned(), sub[k].clone());
    }
    let subs: Vec<Value> = sub["subscriptions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|s| s["publisher"].as_str() == publisher.as_deref())
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    state.insert("subscriptions".to_owned(), Value::Array(subs));
    let publishing = room["peers"].as_array().is_some_and(|peers| {
        peers
            .iter()
            .any(|p| p["peer"].as_str() == publisher.as_deref())
    });
    state.insert("publisherInRoom".to_owned(), Value::Bool(publishing));
    Value::Object(state)
}

/// Milliseconds: median, 99th percentile (nearest rank) and maximum.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Quantiles {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Quantiles {
    fn of(mut v: Vec<f64>) -> Self {
        if v.is_empty() {
            return Quantiles::default();
        }
        v.sort_by(f64::total_cmp);
        let rank = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Quantiles {
            p50: rank(0.5),
            p99: rank(0.99),
            max: v[v.len() - 1],
        }
    }
}

/// One direction (publisher → subscriber) of a churn run: two participants in the room
/// together.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DirectionResult {
    pub publisher: usize,
    pub subscriber: usize,
    /// When both were in the room (the later `welcome`), seconds from the start of the
    /// window (negative: before it).
    pub from_s: f64,
    /// Until the first of them left, or the end of the window.
    pub together_s: f64,
    /// From `from_s` to the subscriber's first video frame of that publisher.
    pub first_video_ms: Option<f64>,
    pub first_video_keyframe: Option<bool>,
    /// Frames of that publisher the subscriber received, whole run.
    pub audio_frames: u64,
    pub video_frames: u64,
    /// Longest time between two video frames of that publisher.
    pub longest_video_gap_ms: Option<f64>,
    /// Longest time from the publisher's write to a complete video frame, and when that
    /// frame arrived (seconds from the start of the window).
    pub max_video_latency_ms: Option<f64>,
    pub max_video_latency_at_s: Option<f64>,
    /// Video frames the publisher sent from the first one received to the last one
    /// (by their sequence numbers): `video_frames` of them arrived.
    pub video_frames_spanned: u64,
}

/// A direction in the room together for longer than `--starved-after` that got no video
/// frame.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StarvedDirection {
    pub publisher: usize,
    pub subscriber: usize,
    pub publisher_peer: Option<String>,
    pub subscriber_peer: Option<String>,
    pub from_s: f64,
    pub together_s: f64,
    /// Audio frames of the publisher the subscriber did receive.
    pub audio_frames: u64,
    pub publisher_error: Option<String>,
    pub subscriber_error: Option<String>,
    /// The SFU's view (GET /api/rooms/{room}/sfu) when the tool first saw the direction
    /// starving: the subscriber's connection and negotiation, its subscriptions to the
    /// publisher. Null when it was not asked (the direction ended first, or 20 were
    /// asked already).
    pub sfu_state: Option<Value>,
}

/// What `tsunagi bench sfu --participants N --churn-every T` measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChurnReport {
    pub bench: &'static str,
    pub http: String,
    pub room: String,
    /// Room size, kept through the churn.
    pub participants: usize,
    pub bitrate: u64,
    pub churn_every_s: f64,
    pub seed: u64,
    pub starved_after_s: f64,
    pub duration_s: f64,
    pub warmup_s: f64,
    /// From the first WebSocket connect until the first N had ICE + DTLS up.
    pub setup_s: f64,
    /// Participants who joined over the run (N + the churn's newcomers).
    pub joins: usize,
    /// Participants who left during the window.
    pub leaves: u64,
    pub join_ms: Spread,
    pub connect_ms: Spread,
    /// SFU offers answered, and ignored because the participant's own offer was out.
    pub sfu_offers: u64,
    pub ignored_sfu_offers: u64,
    /// Ordered (publisher, subscriber) pairs that were in the room together.
    pub directions: usize,
    /// Directions whose subscriber received a video frame of the publisher.
    pub directions_served: usize,
    /// Together for longer than `starved_after_s`, no video frame.
    pub directions_starved: usize,
    /// No video frame, but together for at most `starved_after_s` (e.g. a join at the
    /// very end of the window): not judged.
    pub directions_unserved_short: usize,
    /// Time to the first video frame of the served directions, from the later join.
    pub first_video_ms: Quantiles,
    /// The same for the directions that began in the window (a newcomer on one side).
    pub first_video_ms_joined_in_window: Quantiles,
    /// Served directions whose first video frame was not a keyframe.
    pub first_frame_not_keyframe: usize,
    /// Per served direction, its longest time between two video frames.
    pub longest_video_gap_ms: Quantiles,
    pub directions_with_video_gap_over_1s: usize,
    /// Per served direction, its slowest video frame (publisher's write to complete
    /// frame at the subscriber), whole run.
    pub max_video_latency_ms: Quantiles,
    pub directions_with_video_latency_over_1s: usize,
    /// Over the served directions: video frames the publisher sent from the first one
    /// the subscriber received to the last, and how many of them did not arrive.
    pub video_frames_spanned: u64,
    pub video_frames_missing: u64,
    /// The lowest received / spanned of any served direction.
    pub worst_direction_video_ratio: f64,
    /// Frames whose tag names another publisher than the current `a=msid` of the
    /// m-line they came on.
    pub msid_mismatches: u64,
    /// Times a participant's m-line got another publisher's `a=msid` (the SFU gave the
    /// m-line of someone who left to a newcomer), all participants.
    pub reused_mlines: u64,
    pub sent_audio_frames: u64,
    pub sent_video_frames: u64,
    pub sent_keyframes: u64,
    pub keyframe_requests: u64,
    pub keyframe_flag_mismatches: u64,
    pub untagged_frames: u64,
    /// RTP packets of the in-window frames received, all participants.
    pub forwarded_packets: u64,
    pub forwarded_packets_per_sec: f64,
    pub received_datagrams_per_sec: f64,
    pub received_mbit_per_sec: f64,
    pub frame_latency_ms: FrameLatency,
    pub server_cpu_s: Option<f64>,
    pub server_cpu_util: Option<f64>,
    pub server_cpu_us_per_forwarded_packet: Option<f64>,
    pub server_cpu_percent_per_participant: Option<f64>,
    pub server_rss_start_kib: Option<u64>,
    pub server_rss_connected_kib: Option<u64>,
    pub server_rss_end_kib: Option<u64>,
    pub server_peak_rss_kib: Option<u64>,
    /// (RSS after the first N connected and the warm-up − RSS before any client) / N.
    pub server_rss_per_participant_kib: Option<f64>,
    pub server_packets_out_per_sec: Option<f64>,
    pub generator_cpu_util: Option<f64>,
    /// The longest the generator's loop was busy in one turn (signaling, a leave and
    /// a join, asking the SFU): media of everyone waits meanwhile.
    pub generator_longest_turn_ms: f64,
    pub starved: Vec<StarvedDirection>,
    pub per_direction: Vec<DirectionResult>,
    /// Each participant's peer id (from `welcome`) by index, to find it in the
    /// server's log and in `GET /api/rooms/{room}/sfu`.
    pub peer_ids: Vec<Option<String>>,
    pub errors: Vec<String>,
    pub loadavg: String,
}

impl ChurnReport {
    pub fn print(&self, json: bool) {
        if printed_json(self, json) {
            return;
        }
        println!(
            "bench sfu room {} against {} ({} participants at {} kbit/s video; churn every {} s, seed {})",
            self.room,
            self.http,
            self.participants,
            self.bitrate / 1000,
            self.churn_every_s,
            self.seed
        );
        println!(
            "  setup {:.2} s; join ms p50/max {:.0}/{:.0}; connect ms p50/max {:.0}/{:.0}; {} SFU offers answered ({} ignored while the participant's own was out)",
            self.setup_s,
            self.join_ms.p50,
            self.join_ms.max,
            self.connect_ms.p50,
            self.connect_ms.max,
            self.sfu_offers,
            self.ignored_sfu_offers
        );
        println!(
            "  window {:.1} s: {} left and were replaced ({} participants in all); sent {} audio + {} video frames ({} keyframes, {} requested)",
            self.duration_s,
            self.leaves,
            self.joins,
            self.sent_audio_frames,
            self.sent_video_frames,
            self.sent_keyframes,
            self.keyframe_requests
        );
        println!(
            "  directions: {} in the room together, {} served, {} STARVED (no video for > {} s together), {} without video but together for <= {} s",
            self.directions,
            self.directions_served,
            self.directions_starved,
            self.starved_after_s,
            self.directions_unserved_short,
            self.starved_after_s
        );
        let q = |q: &Quantiles| format!("p50 {:.0}  p99 {:.0}  max {:.0}", q.p50, q.p99, q.max);
        println!(
            "  time to first video frame ms: {}; of directions begun in the window: {}",
            q(&self.first_video_ms),
            q(&self.first_video_ms_joined_in_window)
        );
        println!(
            "  longest video gap per direction ms: {}; {} directions with a gap over 1 s",
            q(&self.longest_video_gap_ms),
            self.directions_with_video_gap_over_1s
        );
        println!(
            "  slowest video frame per direction ms: {}; {} directions with a frame later than 1 s",
            q(&self.max_video_latency_ms),
            self.directions_with_video_latency_over_1s
        );
        println!(
            "  video frames from each direction's first to its last: {} missing of {} ({:.3} %); worst direction {:.1} %",
            self.video_frames_missing,
            self.video_frames_spanned,
            ratio(self.video_frames_missing, self.video_frames_spanned) * 100.0,
            self.worst_direction_video_ratio * 100.0
        );
        println!(
            "  first frame not a keyframe: {}; m-lines given to another publisher: {}; frames on an m-line whose a=msid names another publisher: {}",
            self.first_frame_not_keyframe, self.reused_mlines, self.msid_mismatches
        );
        println!(
            "  forwarded {:.0} RTP packets/s ({:.0} datagrams/s, {:.2} Mbit/s received); generator's longest busy turn {:.0} ms",
            self.forwarded_packets_per_sec,
            self.received_datagrams_per_sec,
            self.received_mbit_per_sec,
            self.generator_longest_turn_ms
        );
        for s in &self.starved {
            println!(
                "  starved: {} -> {} ({} -> {}), together {:.1} s from {:.1} s, {} audio frames{}{}; SFU: {}",
                s.publisher,
                s.subscriber,
                s.publisher_peer.as_deref().unwrap_or("?"),
                s.subscriber_peer.as_deref().unwrap_or("?"),
                s.together_s,
                s.from_s,
                s.audio_frames,
                s.publisher_error
                    .as_deref()
                    .map(|e| format!("; publisher failed: {e}"))
                    .unwrap_or_default(),
                s.subscriber_error
                    .as_deref()
                    .map(|e| format!("; subscriber failed: {e}"))
                    .unwrap_or_default(),
                s.sfu_state
                    .as_ref()
                    .map_or_else(|| "not asked".to_owned(), Value::to_string)
            );
        }
        Tail {
            frame_latency_ms: &self.frame_latency_ms,
            keyframe_flag_mismatches: self.keyframe_flag_mismatches,
            untagged_frames: self.untagged_frames,
            server_cpu_s: self.server_cpu_s,
            server_cpu_util: self.server_cpu_util,
            server_cpu_us_per_forwarded_packet: self.server_cpu_us_per_forwarded_packet,
            per: "participant",
            server_cpu_percent_per: self.server_cpu_percent_per_participant,
            rss: &[
                ("start", self.server_rss_start_kib),
                ("connected", self.server_rss_connected_kib),
                ("end", self.server_rss_end_kib),
                ("peak", self.server_peak_rss_kib),
            ],
            server_rss_per_kib: self.server_rss_per_participant_kib,
            server_packets_out_per_sec: self.server_packets_out_per_sec,
            generator_cpu_util: self.generator_cpu_util,
            errors: &self.errors,
            loadavg: &self.loadavg,
        }
        .print();
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
