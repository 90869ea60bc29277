//! `tsunagi bench sfu`: synthetic WHIP publishers and WHEP subscribers against an SFU.
//!
//! Every client is a [`str0m::Rtc`] with its own UDP socket on `--local-ip`; one thread
//! drives them all under a `mio` poll (the single-mutation contract of str0m: every
//! input, timeout or write is followed by draining `poll_output` to a timeout).
//!
//! * A **publisher** POSTs an offer (sendonly Opus + VP8) to `/whip/{room}` and, once ICE
//!   and DTLS are up, writes 50 Opus packets/s (a 20 ms CELT silence frame) and 30 VP8
//!   frames/s: a keyframe every 2 s (and at once when the SFU asks with PLI/FIR),
//!   interframes otherwise, sized so that video averages `--bitrate`. The VP8 frames
//!   have a real frame tag (the P bit marks keyframes, keyframes carry the start code
//!   and a 640x360 size), so an SFU that reads the keyframe flag sees the right one.
//! * A **subscriber** POSTs a recvonly audio + video offer to `/whep/{room}`; the SFU
//!   plays it one publisher (the room's WHIP publisher, or its first).
//!
//! Every frame carries a 14-byte tag after its codec header: publisher, kind, sequence,
//! keyframe flag and send time. A frame counts when it was *sent* inside the measurement
//! window (after `--warmup`, for `--duration`); after the window publishers stop and
//! the tool waits for stragglers, so per subscriber
//! loss = frames its publisher sent in the window − those it received.
//! "Forwarded packets" are the RTP packets of those frames as the subscribers received
//! them; datagrams and bytes are everything that arrived on the subscribers' sockets in
//! the window (RTP, RTCP, STUN).
//!
//! With `--server-pid`, the server's CPU seconds over the window and its resident
//! memory (before any client, with the publishers, with everyone, sampled peak) come
//! from `/proc`. Bounded: at most [`MAX_CLIENTS`] clients, 600 s, 10 Mbit/s; it never
//! panics on what the server does, and it DELETEs every session it created.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use mio::net::UdpSocket;
use mio::{Interest, Token};
use serde::Serialize;
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

use super::sfu_common::{exit_with, printed_json, ratio, Core, Driver, Tail};
use super::{err, loadavg, BenchError, Histogram, MAX_DURATION_SECS};

mod client;
mod http;
mod media;

pub(crate) use client::*;
pub(crate) use http::*;
pub(crate) use media::*;

/// Most publishers + subscribers in one run.
pub const MAX_CLIENTS: usize = 200;

/// Highest video bitrate per publisher.
pub(super) const MAX_BITRATE: u64 = 10_000_000;

/// How long ICE + DTLS may take for all the clients of one phase.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a WHEP POST is retried while the server answers 404 (the publisher's
/// session may not count as publishing before its first media).
const WHEP_RETRY: Duration = Duration::from_secs(5);

/// HTTP connect/read/write timeout.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest HTTP response read.
const MAX_HTTP_RESPONSE: usize = 1 << 20;

/// Waiting for frames sent at the end of the window.
pub(super) const STRAGGLERS: Duration = Duration::from_millis(600);

pub(super) const AUDIO_INTERVAL: Duration = Duration::from_millis(20);

pub(super) const VIDEO_FPS: u32 = 30;

/// A keyframe every this many video frames (2 s).
pub(super) const KEYFRAME_EVERY: u32 = 60;

/// A keyframe is this many times the size of an interframe.
pub(super) const KEYFRAME_FACTOR: usize = 3;

/// The frame tag: magic, kind, flags, publisher, sequence, send time (µs since start).
pub(super) const TAG_LEN: usize = 14;

const TAG_MAGIC: [u8; 2] = *b"TB";

/// Opus TOC 0xF8 (config 31: CELT fullband 20 ms, mono, one frame) and the two bytes
/// of the usual silence frame.
const OPUS_SILENCE: [u8; 3] = [0xF8, 0xFF, 0xFE];

pub(super) const VP8_KEY_HEADER: usize = 10;

const VP8_INTER_HEADER: usize = 3;

/// `tsunagi bench sfu ...`
#[derive(Debug, Clone, Args)]
pub struct SfuArgs {
    /// The server's HTTP base URL (http:// only).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080")]
    pub http: String,
    /// Room to publish into and play.
    #[arg(long, value_name = "ROOM", default_value = "bench")]
    pub room: String,
    /// WHIP publishers (each: one Opus and one VP8 track).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub publishers: usize,
    /// WHEP subscribers (each: recvonly audio + video).
    #[arg(long, value_name = "M", default_value_t = 1)]
    pub subscribers: usize,
    /// Room mode: N participants join the room over the signaling WebSocket (`/ws`,
    /// `mode: "sfu"`), each publishing Opus + VP8 and receiving every other one
    /// (N x (N-1) forwarded streams). Instead of --publishers/--subscribers.
    #[arg(long, value_name = "N", conflicts_with_all = ["publishers", "subscribers"])]
    pub participants: Option<usize>,
    /// Measurement window: seconds, or with a unit (10s, 1500ms, 2m); at most 600 s.
    #[arg(long, value_name = "TIME", default_value = "10s", value_parser = parse_secs)]
    pub duration: f64,
    /// Load before the window (subscribers get their first keyframe): at most 60 s.
    #[arg(long, value_name = "TIME", default_value = "2s", value_parser = parse_secs)]
    pub warmup: f64,
    /// Video bitrate per publisher, bits/s (500k, 1.5M, 800000).
    #[arg(long, value_name = "BPS", default_value = "500k", value_parser = parse_bitrate)]
    pub bitrate: u64,
    /// Address the clients' UDP sockets bind to (their host candidates).
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    pub local_ip: IpAddr,
    /// Access token (`Authorization: Bearer`) when the server has a token secret.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// PID of the server, to report its CPU seconds and memory from /proc.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Room mode with churn: every TIME one participant (chosen at random, see --seed)
    /// sends `leave` and closes its WebSocket, and a new one joins in its place, for the
    /// whole --duration (the room stays at N). The report counts directions (publisher →
    /// subscriber, every pair that was in the room together): served, time to the first
    /// video frame (p50/p99/max) and starved ones (see --starved-after). Exit status 3
    /// when any direction starved (1 when the run itself failed). At least 0.5 s.
    #[arg(long, value_name = "TIME", value_parser = parse_secs, requires = "participants")]
    pub churn_every: Option<f64>,
    /// Seed of the churn's choice of who leaves (the same seed, the same choices).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,
    /// With --churn-every: a direction whose two participants were in the room together
    /// for longer than this, and that got no video frame, is starved.
    #[arg(long, value_name = "TIME", default_value = "10s", value_parser = parse_secs)]
    pub starved_after: f64,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `10`, `10s`, `1500ms`, `2m` → seconds.
fn parse_secs(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (e.g. 10, 10s, 500ms)"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("not a duration: {s:?}"));
    }
    Ok(v * scale)
}

/// `500k`, `1.5M`, `800000` → bits/s.
fn parse_bitrate(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, scale) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1e3),
        Some('m' | 'M') => (&s[..s.len() - 1], 1e6),
        _ => (s, 1.0),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("not a bitrate: {s:?} (e.g. 500k, 1.5M)"))?;
    if !v.is_finite() || v <= 0.0 {
        return Err(format!("not a bitrate: {s:?}"));
    }
    Ok((v * scale).round() as u64)
}

impl SfuArgs {
    pub(super) fn validate(&self) -> Result<(), BenchError> {
        if !(self.duration > 0.0 && self.duration <= MAX_DURATION_SECS) {
            return err(format!(
                "--duration must be in (0, {MAX_DURATION_SECS}] seconds"
            ));
        }
        if !(0.0..=60.0).contains(&self.warmup) {
            return err("--warmup must be in [0, 60] seconds");
        }
        if let Some(n) = self.participants {
            if !(2..=super::sfu_room::MAX_PARTICIPANTS).contains(&n) {
                return err(format!(
                    "--participants must be in 2..={}",
                    super::sfu_room::MAX_PARTICIPANTS
                ));
            }
        }
        if let Some(every) = self.churn_every {
            if self.participants.is_none() {
                return err("--churn-every needs --participants");
            }
            if !(0.5..=MAX_DURATION_SECS).contains(&every) {
                return err(format!(
                    "--churn-every must be in [0.5, {MAX_DURATION_SECS}] seconds"
                ));
            }
        }
        if !(self.starved_after > 0.0 && self.starved_after <= MAX_DURATION_SECS) {
            return err(format!(
                "--starved-after must be in (0, {MAX_DURATION_SECS}] seconds"
            ));
        }
        if self.publishers == 0 {
            return err("--publishers must be at least 1");
        }
        if self.publishers + self.subscribers > MAX_CLIENTS {
            return err(format!(
                "--publishers + --subscribers must be at most {MAX_CLIENTS}"
            ));
        }
        if !(8_000..=MAX_BITRATE).contains(&self.bitrate) {
            return err(format!(
                "--bitrate must be in 8k..={}M",
                MAX_BITRATE / 1_000_000
            ));
        }
        if self.room.is_empty()
            || self.room.len() > 64
            || !self
                .room
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return err("--room must be 1-64 characters of A-Z a-z 0-9 - _ .");
        }
        if self.local_ip.is_unspecified() {
            return err("--local-ip must be a concrete address (it is the clients' candidate)");
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The report.

/// Milliseconds: median and maximum.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Spread {
    pub p50: f64,
    pub max: f64,
}

impl Spread {
    pub(super) fn of(mut v: Vec<f64>) -> Self {
        if v.is_empty() {
            return Spread::default();
        }
        v.sort_by(f64::total_cmp);
        Spread {
            p50: v[v.len() / 2],
            max: v[v.len() - 1],
        }
    }
}

/// Frame latency from the publisher's write to the subscriber's complete frame, ms.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct FrameLatency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// What one subscriber received of the frames its publisher sent in the window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SubscriberResult {
    /// The publisher it played (index), when it received anything.
    pub publisher: Option<usize>,
    pub audio_expected: u64,
    pub audio_received: u64,
    pub video_expected: u64,
    pub video_received: u64,
    pub keyframes_received: u64,
    /// Failure (ICE closed, DTLS error), if any.
    pub error: Option<String>,
}

/// What `tsunagi bench sfu` measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SfuReport {
    pub bench: &'static str,
    pub http: String,
    pub room: String,
    pub publishers: usize,
    pub subscribers: usize,
    /// Video bits/s per publisher (the audio adds about 35 kbit/s with headers).
    pub bitrate: u64,
    pub duration_s: f64,
    pub warmup_s: f64,
    /// From the first POST until every client had ICE + DTLS up.
    pub setup_s: f64,
    /// POST to DTLS connected, per client.
    pub publisher_connect_ms: Spread,
    pub subscriber_connect_ms: Spread,
    /// Frames each publisher wrote in the window (all publishers together).
    pub sent_audio_frames: u64,
    pub sent_video_frames: u64,
    pub sent_keyframes: u64,
    /// PLI/FIR from the SFU to the publishers, whole run.
    pub keyframe_requests: u64,
    /// Over all subscribers: frames of their publisher sent in the window.
    pub expected_frames: u64,
    pub received_frames: u64,
    pub received_audio_frames: u64,
    pub received_video_frames: u64,
    pub received_keyframes: u64,
    pub lost_frames: u64,
    pub loss_ratio: f64,
    /// The lowest received/expected of any subscriber (audio and video separately).
    pub worst_audio_ratio: f64,
    pub worst_video_ratio: f64,
    /// Frames whose keyframe flag (as str0m's depacketizer read it) differs from the
    /// one the publisher wrote.
    pub keyframe_flag_mismatches: u64,
    /// Frames without our tag (not from a bench publisher, or altered).
    pub untagged_frames: u64,
    /// RTP packets of the received in-window frames.
    pub forwarded_packets: u64,
    pub forwarded_packets_per_sec: f64,
    /// Everything that reached the subscribers' sockets in the window.
    pub subscriber_datagrams_per_sec: f64,
    pub subscriber_mbit_per_sec: f64,
    pub frame_latency_ms: FrameLatency,
    pub server_cpu_s: Option<f64>,
    /// Server CPU seconds per second of the window (1.0 = one core busy).
    pub server_cpu_util: Option<f64>,
    pub server_cpu_us_per_forwarded_packet: Option<f64>,
    /// server_cpu_util / subscribers, in percent of one core (publishers' ingest
    /// included).
    pub server_cpu_percent_per_subscriber: Option<f64>,
    /// RSS before any client, with the publishers connected, with everyone connected,
    /// at the end of the window; peak sampled every 250 ms during the run.
    pub server_rss_start_kib: Option<u64>,
    pub server_rss_publishers_kib: Option<u64>,
    pub server_rss_connected_kib: Option<u64>,
    pub server_rss_end_kib: Option<u64>,
    pub server_peak_rss_kib: Option<u64>,
    /// (RSS with everyone − RSS with the publishers) / subscribers.
    pub server_rss_per_subscriber_kib: Option<f64>,
    /// The server's own `/api/stats` `sfu.packetsOut` growth over the window.
    pub server_packets_out_per_sec: Option<f64>,
    /// This tool's CPU over the window (is the generator the bottleneck?).
    pub generator_cpu_util: Option<f64>,
    pub per_subscriber: Vec<SubscriberResult>,
    /// Clients that failed during the run, and DELETEs that did not answer 200.
    pub errors: Vec<String>,
    pub loadavg: String,
}

impl SfuReport {
    pub fn print(&self, json: bool) {
        if printed_json(self, json) {
            return;
        }
        println!(
            "bench sfu against {} room {} ({} publisher(s) at {} kbit/s video, {} subscriber(s))",
            self.http,
            self.room,
            self.publishers,
            self.bitrate / 1000,
            self.subscribers
        );
        println!(
            "  setup {:.2} s; connect ms p50/max: publishers {:.0}/{:.0}, subscribers {:.0}/{:.0}",
            self.setup_s,
            self.publisher_connect_ms.p50,
            self.publisher_connect_ms.max,
            self.subscriber_connect_ms.p50,
            self.subscriber_connect_ms.max
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
            "  subscribers received {} of {} frames (lost {}, {:.3} %); worst subscriber: audio {:.1} %, video {:.1} %",
            self.received_frames,
            self.expected_frames,
            self.lost_frames,
            self.loss_ratio * 100.0,
            self.worst_audio_ratio * 100.0,
            self.worst_video_ratio * 100.0
        );
        println!(
            "  forwarded {:.0} RTP packets/s ({:.0} datagrams/s, {:.2} Mbit/s) to subscribers",
            self.forwarded_packets_per_sec,
            self.subscriber_datagrams_per_sec,
            self.subscriber_mbit_per_sec
        );
        Tail {
            frame_latency_ms: &self.frame_latency_ms,
            keyframe_flag_mismatches: self.keyframe_flag_mismatches,
            untagged_frames: self.untagged_frames,
            server_cpu_s: self.server_cpu_s,
            server_cpu_util: self.server_cpu_util,
            server_cpu_us_per_forwarded_packet: self.server_cpu_us_per_forwarded_packet,
            per: "subscriber",
            server_cpu_percent_per: self.server_cpu_percent_per_subscriber,
            rss: &[
                ("start", self.server_rss_start_kib),
                ("publishers", self.server_rss_publishers_kib),
                ("connected", self.server_rss_connected_kib),
                ("end", self.server_rss_end_kib),
                ("peak", self.server_peak_rss_kib),
            ],
            server_rss_per_kib: self.server_rss_per_subscriber_kib,
            server_packets_out_per_sec: self.server_packets_out_per_sec,
            generator_cpu_util: self.generator_cpu_util,
            errors: &self.errors,
            loadavg: &self.loadavg,
        }
        .print();
    }
}

/// Runs `tsunagi bench sfu` and prints the report: exit status 0 when it ran.
pub fn main(args: &SfuArgs) -> ExitCode {
    if args.participants.is_some() {
        return super::sfu_room::main(args);
    }
    exit_with(run(args), |r| r.print(args.json))
}

// ---------------------------------------------------------------------------------------
// The run.

struct Bench<'a> {
    args: &'a SfuArgs,
    core: Core,
}

/// Runs the benchmark and returns its report.
pub fn run(args: &SfuArgs) -> Result<SfuReport, BenchError> {
    args.validate()?;
    let mut b = Bench {
        args,
        core: Core::new(args)?,
    };
    let result = b.measure();
    // Whatever happened: end every session this run created.
    let delete_errors = b.delete_all();
    let mut report = result?;
    report.errors.extend(delete_errors);
    report.loadavg = loadavg();
    Ok(report)
}

impl Driver for Bench<'_> {
    fn core(&mut self) -> &mut Core {
        &mut self.core
    }

    fn turn(&mut self, max_wait: Duration) -> Result<(), BenchError> {
        self.core.poll_and_read(max_wait)?;
        self.core.tick();
        Ok(())
    }
}

impl Bench<'_> {
    /// POSTs one client's offer; on 201 applies the answer and registers the socket.
    fn add_client(&mut self, role: Role, index: usize) -> Result<(), BenchError> {
        let deadline = Instant::now() + WHEP_RETRY;
        loop {
            let now = Instant::now();
            let (mut c, offer, pending) =
                Client::new(role, index, self.args.local_ip, now).map_err(BenchError)?;
            let path = format!("/{}/{}", role.endpoint(), self.args.room);
            let r = self
                .core
                .base
                .request(
                    "POST",
                    &path,
                    Some("application/sdp"),
                    &offer,
                    self.args.token.as_deref(),
                )
                .map_err(|e| {
                    BenchError(format!(
                        "{} {}: {e}",
                        role.endpoint().to_uppercase(),
                        self.args.http
                    ))
                })?;
            if r.status == 404 && role == Role::Subscriber && Instant::now() < deadline {
                // Let the publishers' media reach the server, then ask again.
                self.pump_for(Duration::from_millis(200))?;
                continue;
            }
            if r.status != 201 {
                let msg = r.body.trim();
                let hint = if matches!(r.status, 404 | 405) && role == Role::Publisher {
                    " (is the SFU on? does the server serve /whip?)"
                } else {
                    ""
                };
                return err(format!(
                    "{} returned {}: {}{hint}",
                    role.endpoint().to_uppercase(),
                    r.status,
                    if msg.is_empty() { "(no message)" } else { msg }
                ));
            }
            if let Some(loc) = r.header("location") {
                c.resource = Some(location_path(loc, &self.core.base.prefix));
            } else {
                // Without a Location there is no resource to end.
                return err(format!(
                    "{} answered 201 without a Location header",
                    role.endpoint().to_uppercase()
                ));
            }
            let applied = SdpAnswer::from_sdp_string(&r.body)
                .map_err(|e| format!("the SDP answer does not parse: {e}"))
                .and_then(|answer| {
                    c.rtc
                        .sdp_api()
                        .accept_answer(pending, answer)
                        .map_err(|e| format!("str0m refused the SFU's answer: {e}"))
                });
            if let Err(e) = applied {
                // Kept, so that its resource is DELETEd.
                let name = c.name();
                c.fail(format!("{name}: {e}"));
                self.core.clients.push(c);
                return err(format!("{}: {e}", role.endpoint().to_uppercase()));
            }
            c.posted = now;
            let token = Token(self.core.clients.len());
            if let Err(e) =
                self.core
                    .poll
                    .registry()
                    .register(&mut c.socket, token, Interest::READABLE)
            {
                c.fail(format!("mio register: {e}"));
                self.core.clients.push(c);
                return err(format!("mio register: {e}"));
            }
            c.drain(&mut self.core.sh);
            self.core.clients.push(c);
            return Ok(());
        }
    }

    /// Runs the loop until every client of `role` is connected; errors on a failure or
    /// after CONNECT_TIMEOUT.
    fn wait_connected(&mut self, role: Role) -> Result<(), BenchError> {
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        loop {
            if let Some(c) = self
                .core
                .clients
                .iter()
                .find(|c| c.role == role && !c.alive())
            {
                return err(format!(
                    "{} failed while connecting: {}",
                    c.name(),
                    c.error.clone().unwrap_or_default()
                ));
            }
            let waiting: Vec<String> = self
                .core
                .clients
                .iter()
                .filter(|c| c.role == role && c.connected.is_none())
                .map(Client::name)
                .collect();
            if waiting.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return err(format!(
                    "{} of the {}s did not connect (ICE + DTLS) within {} s: {}",
                    waiting.len(),
                    match role {
                        Role::Publisher => "publisher",
                        Role::Subscriber => "subscriber",
                        Role::Participant => "participant",
                    },
                    CONNECT_TIMEOUT.as_secs(),
                    waiting.join(", ")
                ));
            }
            self.turn(Duration::from_millis(50))?;
        }
    }

    fn measure(&mut self) -> Result<SfuReport, BenchError> {
        let args = self.args;
        let rss_start = self.core.rss();
        let setup_start = Instant::now();

        for i in 0..args.publishers {
            self.add_client(Role::Publisher, i)?;
            self.turn(Duration::ZERO)?;
        }
        self.wait_connected(Role::Publisher)?;
        // Media flows before the viewers come (and before RSS with publishers).
        self.pump_for(Duration::from_millis(300))?;
        let rss_publishers = self.core.rss();

        for j in 0..args.subscribers {
            self.add_client(Role::Subscriber, j)?;
            self.turn(Duration::ZERO)?;
        }
        self.wait_connected(Role::Subscriber)?;
        let setup_s = setup_start.elapsed().as_secs_f64();

        self.pump_for(Duration::from_secs_f64(args.warmup))?;
        let rss_connected = self.core.rss();

        let w = self.measure_window(args.duration)?;
        let elapsed = w.elapsed;

        let mut r = SfuReport {
            bench: "sfu",
            http: args.http.clone(),
            room: args.room.clone(),
            publishers: args.publishers,
            subscribers: args.subscribers,
            bitrate: args.bitrate,
            duration_s: elapsed,
            warmup_s: args.warmup,
            setup_s,
            ..SfuReport::default()
        };
        let connect = |role: Role| {
            Spread::of(
                self.core
                    .clients
                    .iter()
                    .filter(|c| c.role == role)
                    .filter_map(|c| c.connected)
                    .map(|d| d.as_secs_f64() * 1000.0)
                    .collect(),
            )
        };
        r.publisher_connect_ms = connect(Role::Publisher);
        r.subscriber_connect_ms = connect(Role::Subscriber);

        let mut sent: HashMap<u16, [u64; 2]> = HashMap::new();
        for c in self
            .core
            .clients
            .iter()
            .filter(|c| c.role == Role::Publisher)
        {
            r.sent_audio_frames += c.send.window_audio;
            r.sent_video_frames += c.send.window_video;
            r.sent_keyframes += c.send.window_keyframes;
            r.keyframe_requests += c.send.keyframe_requests;
            sent.insert(c.index as u16, [c.send.window_audio, c.send.window_video]);
        }
        let mut worst = [1.0f64, 1.0f64];
        let (mut datagrams, mut bytes) = (0u64, 0u64);
        for c in self
            .core
            .clients
            .iter()
            .filter(|c| c.role == Role::Subscriber)
        {
            let rc = &c.recv;
            // The publisher(s) it played; WHEP plays the room's first when in doubt.
            let mut played: Vec<u16> = rc.seen.keys().copied().collect();
            played.sort_unstable();
            if played.is_empty() {
                played.push(0);
            }
            let mut expected = [0u64; 2];
            let mut got = [0u64; 2];
            for p in &played {
                let s = sent.get(p).copied().unwrap_or_default();
                let g = rc.frames.get(p).copied().unwrap_or_default();
                for k in 0..2 {
                    expected[k] += s[k];
                    got[k] += g[k].min(s[k]);
                }
            }
            for k in 0..2 {
                worst[k] = worst[k].min(ratio(got[k], expected[k]));
            }
            r.expected_frames += expected[0] + expected[1];
            r.received_audio_frames += got[0];
            r.received_video_frames += got[1];
            r.received_keyframes += rc.keyframes;
            r.keyframe_flag_mismatches += rc.keyframe_mismatches;
            r.untagged_frames += rc.untagged;
            r.forwarded_packets += rc.packets;
            datagrams += rc.datagrams;
            bytes += rc.bytes;
            r.per_subscriber.push(SubscriberResult {
                publisher: (!rc.seen.is_empty()).then(|| usize::from(played[0])),
                audio_expected: expected[0],
                audio_received: got[0],
                video_expected: expected[1],
                video_received: got[1],
                keyframes_received: rc.keyframes,
                error: c.error.clone(),
            });
        }
        if args.subscribers > 0 {
            r.worst_audio_ratio = worst[0];
            r.worst_video_ratio = worst[1];
        }
        r.received_frames = r.received_audio_frames + r.received_video_frames;
        r.lost_frames = r.expected_frames.saturating_sub(r.received_frames);
        r.loss_ratio = ratio(r.lost_frames, r.expected_frames);
        let rates = w.rates(r.forwarded_packets);
        let secs = rates.secs;
        r.forwarded_packets_per_sec = r.forwarded_packets as f64 / secs;
        r.subscriber_datagrams_per_sec = datagrams as f64 / secs;
        r.subscriber_mbit_per_sec = bytes as f64 * 8.0 / secs / 1e6;
        r.frame_latency_ms = self.core.frame_latency();
        r.server_cpu_s = rates.server_cpu_s;
        r.server_cpu_util = rates.server_cpu_util;
        r.server_cpu_us_per_forwarded_packet = rates.server_cpu_us_per_forwarded_packet;
        if let (Some(util), true) = (rates.server_cpu_util, args.subscribers > 0) {
            r.server_cpu_percent_per_subscriber = Some(util * 100.0 / args.subscribers as f64);
        }
        r.server_rss_start_kib = rss_start;
        r.server_rss_publishers_kib = rss_publishers;
        r.server_rss_connected_kib = rss_connected;
        r.server_rss_end_kib = w.rss_end;
        r.server_peak_rss_kib = self.core.peak_rss;
        if let (Some(a), Some(b), true) = (rss_publishers, rss_connected, args.subscribers > 0) {
            r.server_rss_per_subscriber_kib = Some((b as f64 - a as f64) / args.subscribers as f64);
        }
        r.server_packets_out_per_sec = rates.server_packets_out_per_sec;
        r.generator_cpu_util = rates.generator_cpu_util;
        r.errors.extend(self.core.client_errors());
        Ok(r)
    }

    /// DELETEs every session (subscribers first); returns what did not answer 200.
    fn delete_all(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        let mut order: Vec<usize> = (0..self.core.clients.len()).collect();
        order.sort_by_key(|&i| self.core.clients[i].role == Role::Publisher);
        for i in order {
            let Some(path) = self.core.clients[i].resource.take() else {
                continue;
            };
            let name = self.core.clients[i].name();
            match self
                .core
                .base
                .request("DELETE", &path, None, "", self.args.token.as_deref())
            {
                Ok(r) if r.status == 200 => {}
                Ok(r) => errors.push(format!(
                    "{name}: DELETE {path} answered {}: {}",
                    r.status,
                    r.body.trim()
                )),
                Err(e) => errors.push(format!("{name}: {e}")),
            }
            self.core.clients[i].rtc.disconnect();
        }
        errors
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
