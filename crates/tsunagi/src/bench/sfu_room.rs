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
//! turns at least every 20 ms while audio is being sent).

use std::collections::HashMap;
use std::io;
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use mio::{Interest, Token};
use serde::Serialize;
use serde_json::{json, Value};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use tungstenite::{Message, WebSocket};

use super::sfu::{Client, FrameLatency, Role, SfuArgs, Spread, CONNECT_TIMEOUT};
use super::sfu_common::{exit_with, printed_json, ratio, Core, Driver, Tail};
use super::{err, loadavg, BenchError};

/// Most participants in one room run (N x (N-1) streams on one generator thread).
pub const MAX_PARTICIPANTS: usize = 50;
/// WebSocket connect + handshake + `welcome`.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// From the last join until every participant receives every other one.
const MEDIA_TIMEOUT: Duration = Duration::from_secs(20);

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

/// Runs the room benchmark and prints the report: exit status 0 when it ran.
pub fn main(args: &SfuArgs) -> ExitCode {
    exit_with(run(args), |r| r.print(args.json))
}

/// One participant's signaling.
struct Signal {
    ws: WebSocket<TcpStream>,
    /// Our offer to the SFU, until its answer.
    pending: Option<SdpPendingOffer>,
    join_ms: f64,
    sfu_offers: u64,
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

struct Room<'a> {
    args: &'a SfuArgs,
    core: Core,
    sigs: Vec<Signal>,
    /// Signaling errors that did not end a participant (e.g. `server-busy`).
    notes: Vec<String>,
}

/// Runs the room benchmark and returns its report.
pub fn run(args: &SfuArgs) -> Result<RoomReport, BenchError> {
    args.validate()?;
    let Some(n) = args.participants else {
        return err("--participants is required for a room run");
    };
    let mut r = Room {
        args,
        core: Core::new(args)?,
        sigs: Vec::with_capacity(n),
        notes: Vec::new(),
    };
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
        for i in 0..self.core.clients.len() {
            self.signaling(i);
        }
        self.core.tick();
        Ok(())
    }
}

impl Room<'_> {
    /// Connects participant `i`'s WebSocket, joins, waits for `welcome`, and sends its
    /// offer to the SFU.
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
        let joined = Instant::now();
        let welcome = loop {
            if start.elapsed() > JOIN_TIMEOUT {
                return err(format!(
                    "participant {i}: no welcome within {JOIN_TIMEOUT:?}"
                ));
            }
            let m = ws
                .read()
                .map_err(|e| BenchError(format!("participant {i}: waiting for welcome: {e}")))?;
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(t.as_str()).unwrap_or_default();
            match v["type"].as_str() {
                Some("welcome") => break v,
                Some("error") => {
                    return err(format!(
                        "participant {i}: join refused: {} ({})",
                        v["code"].as_str().unwrap_or("?"),
                        v["message"].as_str().unwrap_or("")
                    ))
                }
                _ => {}
            }
        };
        let join_ms = start.elapsed().as_secs_f64() * 1000.0;
        if welcome["mode"] != "sfu" {
            return err(format!(
                "participant {i}: the room is in {} mode, not sfu (a room's policy is fixed when it is created: use a fresh --room, or a server with an SFU)",
                welcome["mode"]
            ));
        }
        ws.get_mut()
            .set_nonblocking(true)
            .map_err(|e| BenchError(format!("participant {i}: {e}")))?;
        let now = Instant::now();
        let (mut c, offer, pending) =
            Client::new(Role::Participant, i, self.args.local_ip, now).map_err(BenchError)?;
        c.posted = joined;
        let mut sig = Signal {
            ws,
            pending: Some(pending),
            join_ms,
            sfu_offers: 0,
            closed: false,
        };
        sig.send(&json!({"type": "offer", "to": "sfu", "sdp": offer}))
            .map_err(|e| BenchError(format!("participant {i}: {e}")))?;
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
        self.sigs.push(sig);
        Ok(())
    }

    /// Reads every signaling message waiting for participant `i`.
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
                Some("answer") if from_sfu => {
                    let Some(pending) = sig.pending.take() else {
                        continue;
                    };
                    let r = SdpAnswer::from_sdp_string(v["sdp"].as_str().unwrap_or(""))
                        .map_err(|e| format!("the SFU's answer does not parse: {e}"))
                        .and_then(|a| {
                            c.rtc
                                .sdp_api()
                                .accept_answer(pending, a)
                                .map_err(|e| format!("str0m refused the SFU's answer: {e}"))
                        });
                    if let Err(e) = r {
                        c.fail(format!("{}: {e}", c.name()));
                    }
                    c.drain(&mut self.core.sh);
                }
                // Impolite toward the SFU: while our offer is pending, its offer is
                // dropped (it answers ours and offers again).
                Some("offer") if from_sfu && sig.pending.is_none() => {
                    let r = SdpOffer::from_sdp_string(v["sdp"].as_str().unwrap_or(""))
                        .map_err(|e| format!("the SFU's offer does not parse: {e}"))
                        .and_then(|o| {
                            c.rtc
                                .sdp_api()
                                .accept_offer(o)
                                .map_err(|e| format!("str0m refused the SFU's offer: {e}"))
                        });
                    match r {
                        Ok(answer) => {
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
    }
}
