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
// A minimal HTTP/1.1 client (Connection: close), enough for WHIP/WHEP.

#[derive(Debug, Clone)]
pub(super) struct HttpBase {
    pub(super) addr: SocketAddr,
    pub(super) host: String,
    /// Path prefix of the base URL, without a trailing '/'.
    pub(super) prefix: String,
}

#[derive(Debug)]
pub(super) struct HttpResponse {
    pub(super) status: u16,
    headers: Vec<(String, String)>,
    pub(super) body: String,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub(super) fn parse_base(url: &str) -> Result<HttpBase, BenchError> {
    let rest =
        match url.strip_prefix("http://") {
            Some(r) => r,
            None if url.starts_with("https://") => return err(
                "--http: only http:// is supported (run the server with plain HTTP on loopback)",
            ),
            None => return err(format!("--http must be an http:// URL, not {url:?}")),
        };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let with_port = if authority.starts_with('[') {
        if authority.contains("]:") {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        }
    } else if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| BenchError(format!("--http {url}: cannot resolve {authority}: {e}")))?
        .next()
        .ok_or_else(|| BenchError(format!("--http {url}: {authority} has no address")))?;
    Ok(HttpBase {
        addr,
        host: authority.to_owned(),
        prefix: path.trim_end_matches('/').to_owned(),
    })
}

impl HttpBase {
    pub(super) fn request(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &str,
        token: Option<&str>,
    ) -> Result<HttpResponse, String> {
        let mut s = TcpStream::connect_timeout(&self.addr, HTTP_TIMEOUT)
            .map_err(|e| format!("cannot connect to {}: {e}", self.addr))?;
        let _ = s.set_read_timeout(Some(HTTP_TIMEOUT));
        let _ = s.set_write_timeout(Some(HTTP_TIMEOUT));
        let _ = s.set_nodelay(true);
        let mut req = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.prefix,
            self.host,
            body.len()
        );
        if let Some(ct) = content_type {
            req.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        if let Some(t) = token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes())
            .map_err(|e| format!("{method} {path}: sending: {e}"))?;
        let mut raw = Vec::new();
        s.take(MAX_HTTP_RESPONSE as u64 + 1)
            .read_to_end(&mut raw)
            .map_err(|e| format!("{method} {path}: reading the answer: {e}"))?;
        if raw.len() > MAX_HTTP_RESPONSE {
            return Err(format!("{method} {path}: answer larger than 1 MiB"));
        }
        parse_response(&raw).map_err(|e| format!("{method} {path}: {e}"))
    }
}

fn parse_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the answer is not HTTP (no end of headers)")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    });
    if chunked {
        body = dechunk(&body).ok_or("bad chunked body")?;
    } else if let Some(len) = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body.truncate(len);
    }
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// A `Location` header as a path on the server (absolute URLs lose their origin).
fn location_path(loc: &str, prefix: &str) -> String {
    let path = if let Some(rest) = loc
        .strip_prefix("http://")
        .or_else(|| loc.strip_prefix("https://"))
    {
        rest.find('/').map_or("/", |i| &rest[i..])
    } else {
        loc
    };
    // Requests add the prefix again.
    path.strip_prefix(prefix)
        .filter(|p| p.starts_with('/'))
        .unwrap_or(path)
        .to_owned()
}

/// `/api/stats` `sfu.packetsOut`, when the server has one.
pub(super) fn server_packets_out(base: &HttpBase) -> Option<u64> {
    let r = base.request("GET", "/api/stats", None, "", None).ok()?;
    if r.status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&r.body).ok()?;
    v.get("sfu")?.get("packetsOut")?.as_u64()
}

// ---------------------------------------------------------------------------------------
// Frames.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tag {
    video: bool,
    keyframe: bool,
    publisher: u16,
    seq: u32,
    sent_us: u32,
}

impl Tag {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&TAG_MAGIC);
        out.push(u8::from(self.video));
        out.push(u8::from(self.keyframe));
        out.extend_from_slice(&self.publisher.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.sent_us.to_be_bytes());
    }

    fn read(b: &[u8]) -> Option<Tag> {
        let b = b.get(..TAG_LEN)?;
        if b[..2] != TAG_MAGIC || b[2] > 1 || b[3] > 1 {
            return None;
        }
        Some(Tag {
            video: b[2] == 1,
            keyframe: b[3] == 1,
            publisher: u16::from_be_bytes([b[4], b[5]]),
            seq: u32::from_be_bytes([b[6], b[7], b[8], b[9]]),
            sent_us: u32::from_be_bytes([b[10], b[11], b[12], b[13]]),
        })
    }

    /// The tag of a received frame: after the Opus silence bytes, or after the VP8
    /// frame header (10 bytes on keyframes, 3 otherwise; RFC 6386 section 9.1).
    fn find(video: bool, data: &[u8]) -> Option<Tag> {
        let at = if video {
            if data.first()? & 1 == 0 {
                VP8_KEY_HEADER
            } else {
                VP8_INTER_HEADER
            }
        } else {
            OPUS_SILENCE.len()
        };
        Tag::read(data.get(at..)?)
    }
}

fn opus_frame(tag: &Tag) -> Vec<u8> {
    let mut f = Vec::with_capacity(OPUS_SILENCE.len() + TAG_LEN);
    f.extend_from_slice(&OPUS_SILENCE);
    tag.write(&mut f);
    f
}

/// A VP8 frame of `size` bytes: the frame tag (RFC 6386 section 9.1: bit 0 is 0 on a
/// keyframe, version 0, show_frame 1, the first partition's size), on keyframes the
/// start code and 640x360, then our tag and filler.
fn vp8_frame(tag: &Tag, size: usize, filler: &[u8]) -> Vec<u8> {
    let header = if tag.keyframe {
        VP8_KEY_HEADER
    } else {
        VP8_INTER_HEADER
    };
    let size = size.max(header + TAG_LEN + 1);
    let first_partition = (size - header).min(0x7FFFF) as u32;
    let frame_tag = u32::from(!tag.keyframe) | (1 << 4) | (first_partition << 5);
    let mut f = Vec::with_capacity(size);
    f.extend_from_slice(&frame_tag.to_le_bytes()[..3]);
    if tag.keyframe {
        f.extend_from_slice(&[0x9d, 0x01, 0x2a]);
        f.extend_from_slice(&640u16.to_le_bytes());
        f.extend_from_slice(&360u16.to_le_bytes());
    }
    tag.write(&mut f);
    while f.len() < size {
        let n = (size - f.len()).min(filler.len());
        f.extend_from_slice(&filler[..n]);
    }
    f
}

// ---------------------------------------------------------------------------------------
// Clients.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Publisher,
    Subscriber,
    /// A room participant (bench/sfu_room.rs): publishes and receives over signaling.
    Participant,
}

impl Role {
    fn endpoint(self) -> &'static str {
        match self {
            Role::Publisher => "whip",
            Role::Subscriber => "whep",
            Role::Participant => "room",
        }
    }
}

/// A publisher's sending state.
#[derive(Debug, Default)]
pub(super) struct Sender {
    pub(super) audio_pt: Option<Pt>,
    pub(super) video_pt: Option<Pt>,
    pub(super) next_audio: Option<Instant>,
    pub(super) next_video: Option<Instant>,
    pub(super) audio_seq: u32,
    pub(super) video_seq: u32,
    pub(super) since_keyframe: u32,
    pub(super) force_keyframe: bool,
    pub(super) keyframe_requests: u64,
    pub(super) window_audio: u64,
    pub(super) window_video: u64,
    pub(super) window_keyframes: u64,
}

/// A subscriber's counts of in-window frames, per publisher index: [audio, video].
#[derive(Debug, Default)]
pub(super) struct Receiver {
    pub(super) frames: HashMap<u16, [u64; 2]>,
    /// Every tagged frame of the run, per publisher (which one it plays).
    pub(super) seen: HashMap<u16, u64>,
    pub(super) keyframes: u64,
    pub(super) packets: u64,
    pub(super) datagrams: u64,
    pub(super) bytes: u64,
    pub(super) keyframe_mismatches: u64,
    pub(super) untagged: u64,
    /// Room participants: what arrived of each publisher over the whole run.
    pub(super) heard: HashMap<u16, Heard>,
    /// Room participants: the publisher (`a=msid` stream id) of each m-line in the
    /// latest SDP from the SFU. str0m keeps the msid an m-line had when it was created,
    /// but the SFU gives the m-lines of those who left to newcomers (same mid, new msid).
    pub(super) msid: HashMap<Mid, String>,
    /// Frames whose tag names another publisher than the `a=msid` of their m-line.
    pub(super) msid_mismatches: u64,
    /// m-lines whose `a=msid` changed (given to another publisher).
    pub(super) msid_changes: u64,
}

/// What one room participant received of one publisher (frames of the whole run).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Heard {
    pub(super) audio: u64,
    pub(super) video: u64,
    pub(super) first_video: Option<Instant>,
    /// The first video frame was a keyframe (the SFU starts every stream at one).
    pub(super) first_video_keyframe: bool,
    pub(super) last_video: Option<Instant>,
    /// Longest time between two consecutive video frames.
    pub(super) longest_video_gap: Duration,
    /// Longest time from the publisher's write to a complete video frame here.
    pub(super) max_video_latency: Duration,
    /// When that frame arrived.
    pub(super) max_video_latency_at: Option<Instant>,
    /// Sequence numbers of the first and the highest video frame received: the
    /// publisher sent `last - first + 1` video frames in between.
    pub(super) first_video_seq: u32,
    pub(super) last_video_seq: u32,
}

impl Heard {
    /// Video frames the publisher sent from the first one received here to the last.
    pub(super) fn video_span(&self) -> u64 {
        if self.video == 0 {
            return 0;
        }
        u64::from(self.last_video_seq.wrapping_sub(self.first_video_seq)) + 1
    }
}

impl Receiver {
    /// Follows an SDP from the SFU: each m-line's mid and its current `a=msid` stream
    /// id (none when the m-line has no `a=msid`).
    pub(super) fn follow_sdp(&mut self, sdp: &str) {
        // (mid, msid stream id) of each m-line, in order.
        let mut lines: Vec<(Option<&str>, Option<&str>)> = Vec::new();
        for line in sdp.lines().map(str::trim_end) {
            if line.starts_with("m=") {
                lines.push((None, None));
            } else if let Some((mid, stream)) = lines.last_mut() {
                if let Some(m) = line.strip_prefix("a=mid:") {
                    *mid = Some(m.trim());
                } else if let Some(m) = line.strip_prefix("a=msid:") {
                    *stream = m.split_whitespace().next();
                }
            }
        }
        for (mid, stream) in lines {
            let Some(mid) = mid.map(Mid::from) else {
                continue;
            };
            match stream {
                Some(s) => {
                    if let Some(old) = self.msid.insert(mid, s.to_owned()) {
                        if old != s {
                            self.msid_changes += 1;
                        }
                    }
                }
                None => {
                    self.msid.remove(&mid);
                }
            }
        }
    }
}

pub(super) struct Client {
    pub(super) role: Role,
    pub(super) index: usize,
    pub(super) rtc: Rtc,
    pub(super) socket: UdpSocket,
    pub(super) local: SocketAddr,
    pub(super) timeout: Instant,
    pub(super) resource: Option<String>,
    pub(super) posted: Instant,
    pub(super) connected: Option<Duration>,
    pub(super) error: Option<String>,
    pub(super) audio_mid: Mid,
    pub(super) video_mid: Mid,
    pub(super) send: Sender,
    pub(super) recv: Receiver,
}

/// What every client's event handling needs.
pub(super) struct Shared {
    pub(super) t0: Instant,
    /// The window in µs since `t0` (frames sent in `[start, end)` count).
    pub(super) window_us: Option<(u32, u32)>,
    /// The window in time (datagrams arriving in it count).
    pub(super) window: Option<(Instant, Instant)>,
    /// Publishers stop writing at the end of the window.
    pub(super) sending: bool,
    pub(super) latency: Histogram,
    /// Room participants: peer id (from `welcome`) → participant index.
    pub(super) peer_index: HashMap<String, u16>,
    pub(super) inter_size: usize,
    pub(super) key_size: usize,
    pub(super) filler: Vec<u8>,
}

impl Shared {
    pub(super) fn us(&self, t: Instant) -> u32 {
        t.saturating_duration_since(self.t0).as_micros() as u32
    }

    pub(super) fn in_window(&self, sent_us: u32) -> bool {
        self.window_us
            .is_some_and(|(a, b)| sent_us >= a && sent_us < b)
    }
}

impl Client {
    pub(super) fn new(
        role: Role,
        index: usize,
        local_ip: IpAddr,
        now: Instant,
    ) -> Result<(Client, String, SdpPendingOffer), String> {
        let socket = UdpSocket::bind(SocketAddr::new(local_ip, 0))
            .map_err(|e| format!("cannot bind a UDP socket on {local_ip}: {e}"))?;
        let local = socket
            .local_addr()
            .map_err(|e| format!("UDP socket address: {e}"))?;
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .build(now);
        let candidate =
            Candidate::host(local, "udp").map_err(|e| format!("host candidate {local}: {e}"))?;
        rtc.add_local_candidate(candidate);
        let dir = match role {
            Role::Publisher | Role::Participant => Direction::SendOnly,
            Role::Subscriber => Direction::RecvOnly,
        };
        let mut api = rtc.sdp_api();
        let stream = format!("bench-{}-{index}", role.endpoint());
        let audio_mid = api.add_media(MediaKind::Audio, dir, Some(stream.clone()), None, None);
        let video_mid = api.add_media(MediaKind::Video, dir, Some(stream), None, None);
        let (offer, pending) = api.apply().ok_or("str0m made no offer")?;
        Ok((
            Client {
                role,
                index,
                rtc,
                socket,
                local,
                timeout: now,
                resource: None,
                posted: now,
                connected: None,
                error: None,
                audio_mid,
                video_mid,
                send: Sender::default(),
                recv: Receiver::default(),
            },
            offer.to_sdp_string(),
            pending,
        ))
    }

    pub(super) fn name(&self) -> String {
        match self.role {
            Role::Publisher => format!("publisher {}", self.index),
            Role::Subscriber => format!("subscriber {}", self.index),
            Role::Participant => format!("participant {}", self.index),
        }
    }

    pub(super) fn alive(&self) -> bool {
        self.error.is_none()
    }

    pub(super) fn fail(&mut self, why: String) {
        if self.error.is_none() {
            self.error = Some(why);
            self.rtc.disconnect();
        }
    }

    /// Drains `poll_output` to a timeout.
    pub(super) fn drain(&mut self, sh: &mut Shared) {
        while self.alive() {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    // A full socket buffer loses the datagram, as the network would.
                    let _ = self.socket.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(e)) => self.event(e, sh),
                Err(e) => self.fail(format!("{}: {e}", self.name())),
            }
        }
    }

    fn event(&mut self, e: Event, sh: &mut Shared) {
        match e {
            Event::Connected if self.connected.is_none() => {
                self.connected = Some(self.posted.elapsed());
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                let why = format!("{}: ICE disconnected", self.name());
                self.fail(why);
            }
            Event::Closed => {
                let why = format!("{}: the server closed the connection", self.name());
                self.fail(why);
            }
            Event::KeyframeRequest(r) if r.mid == self.video_mid => {
                self.send.force_keyframe = true;
                self.send.keyframe_requests += 1;
            }
            Event::MediaData(d) => {
                let now = Instant::now();
                // A participant receives the others on the SFU's m-lines.
                let video = match self.role {
                    Role::Participant => match self.rtc.media(d.mid).map(|m| m.kind()) {
                        Some(MediaKind::Video) => true,
                        Some(MediaKind::Audio) => false,
                        None => return,
                    },
                    _ => d.mid == self.video_mid,
                };
                if self.role != Role::Participant && !video && d.mid != self.audio_mid {
                    return;
                }
                let Some(tag) = Tag::find(video, &d.data) else {
                    self.recv.untagged += 1;
                    return;
                };
                *self.recv.seen.entry(tag.publisher).or_default() += 1;
                if tag.video != video {
                    self.recv.untagged += 1;
                    return;
                }
                if self.role == Role::Participant {
                    self.heard(&tag, d.mid, now, sh);
                }
                if !sh.in_window(tag.sent_us) {
                    return;
                }
                self.recv.frames.entry(tag.publisher).or_default()[usize::from(video)] += 1;
                if video {
                    if d.is_keyframe() != tag.keyframe {
                        self.recv.keyframe_mismatches += 1;
                    }
                    if tag.keyframe {
                        self.recv.keyframes += 1;
                    }
                }
                let packets = (**d.seq_range.end())
                    .saturating_sub(**d.seq_range.start())
                    .saturating_add(1);
                self.recv.packets += packets;
                let sent = sh.t0 + Duration::from_micros(u64::from(tag.sent_us));
                sh.latency
                    .record(now.saturating_duration_since(sent).as_nanos() as u64);
            }
            _ => {}
        }
    }

    /// A room participant's per-publisher counts, and the check of the m-line's msid.
    fn heard(&mut self, tag: &Tag, mid: Mid, now: Instant, sh: &Shared) {
        let named = self.recv.msid.get(&mid).and_then(|s| sh.peer_index.get(s));
        if named != Some(&tag.publisher) {
            self.recv.msid_mismatches += 1;
        }
        let h = self.recv.heard.entry(tag.publisher).or_default();
        if !tag.video {
            h.audio += 1;
            return;
        }
        h.video += 1;
        let sent = sh.t0 + Duration::from_micros(u64::from(tag.sent_us));
        let latency = now.saturating_duration_since(sent);
        if h.max_video_latency_at.is_none() || latency > h.max_video_latency {
            h.max_video_latency = latency;
            h.max_video_latency_at = Some(now);
        }
        match h.last_video {
            None => {
                h.first_video = Some(now);
                h.first_video_keyframe = tag.keyframe;
                h.first_video_seq = tag.seq;
                h.last_video_seq = tag.seq;
            }
            Some(last) => {
                if tag.seq.wrapping_sub(h.last_video_seq) < u32::MAX / 2 {
                    h.last_video_seq = tag.seq;
                }
                h.longest_video_gap = h.longest_video_gap.max(now.saturating_duration_since(last));
            }
        }
        h.last_video = Some(now);
    }

    pub(super) fn handle_timeout(&mut self, now: Instant, sh: &mut Shared) {
        if !self.alive() {
            return;
        }
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            self.fail(format!("{}: {e}", self.name()));
        }
        self.drain(sh);
    }

    /// Reads every datagram waiting on the socket.
    pub(super) fn read(&mut self, buf: &mut [u8], sh: &mut Shared) {
        loop {
            let (n, source) = match self.socket.recv_from(buf) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // ICMP port unreachable and the like: the server went away.
                Err(_) => return,
            };
            if !self.alive() {
                continue;
            }
            let now = Instant::now();
            if sh.window.is_some_and(|(a, b)| now >= a && now < b) {
                self.recv.datagrams += 1;
                self.recv.bytes += n as u64;
            }
            let Ok(contents) = buf[..n].try_into() else {
                continue;
            };
            let input = Input::Receive(
                now,
                Receive {
                    proto: Protocol::Udp,
                    source,
                    destination: self.local,
                    contents,
                },
            );
            if let Err(e) = self.rtc.handle_input(input) {
                self.fail(format!("{}: {e}", self.name()));
            }
            self.drain(sh);
        }
    }

    /// Starts sending once connected: finds the negotiated payload types.
    pub(super) fn start_sending(&mut self, now: Instant) -> Result<(), String> {
        let pt_of = |rtc: &mut Rtc, mid: Mid, codec: Codec| -> Option<Pt> {
            let w = rtc.writer(mid)?;
            let pt = w
                .payload_params()
                .find(|p| p.spec().codec == codec)
                .map(|p| p.pt());
            pt
        };
        self.send.audio_pt = pt_of(&mut self.rtc, self.audio_mid, Codec::Opus);
        self.send.video_pt = pt_of(&mut self.rtc, self.video_mid, Codec::Vp8);
        if self.send.audio_pt.is_none() || self.send.video_pt.is_none() {
            return Err(format!(
                "{}: the SFU's answer does not accept Opus audio and VP8 video",
                self.name()
            ));
        }
        self.send.next_audio = Some(now);
        self.send.next_video = Some(now);
        self.send.force_keyframe = true;
        Ok(())
    }

    /// Writes the frames that are due.
    pub(super) fn send_due(&mut self, now: Instant, sh: &mut Shared) {
        if !self.alive() || !sh.sending {
            return;
        }
        let video_interval = Duration::from_secs(1) / VIDEO_FPS;
        while let Some(at) = self.send.next_audio.filter(|t| *t <= now) {
            let tag = Tag {
                video: false,
                keyframe: false,
                publisher: self.index as u16,
                seq: self.send.audio_seq,
                sent_us: sh.us(now),
            };
            let rtp = u64::from(self.send.audio_seq) * 960;
            self.send.audio_seq = self.send.audio_seq.wrapping_add(1);
            if sh.in_window(tag.sent_us) {
                self.send.window_audio += 1;
            }
            self.write(
                self.audio_mid,
                self.send.audio_pt,
                now,
                MediaTime::new(rtp, Frequency::FORTY_EIGHT_KHZ),
                opus_frame(&tag),
                sh,
            );
            // After a stall (a slow POST) skip ahead rather than burst.
            let next = at + AUDIO_INTERVAL;
            self.send.next_audio = Some(if now.duration_since(next) > Duration::from_millis(200) {
                now + AUDIO_INTERVAL
            } else {
                next
            });
        }
        while let Some(at) = self.send.next_video.filter(|t| *t <= now) {
            let keyframe =
                self.send.force_keyframe || self.send.since_keyframe + 1 >= KEYFRAME_EVERY;
            if keyframe {
                self.send.force_keyframe = false;
                self.send.since_keyframe = 0;
            } else {
                self.send.since_keyframe += 1;
            }
            let tag = Tag {
                video: true,
                keyframe,
                publisher: self.index as u16,
                seq: self.send.video_seq,
                sent_us: sh.us(now),
            };
            let rtp = u64::from(self.send.video_seq) * u64::from(90_000 / VIDEO_FPS);
            self.send.video_seq = self.send.video_seq.wrapping_add(1);
            if sh.in_window(tag.sent_us) {
                self.send.window_video += 1;
                if keyframe {
                    self.send.window_keyframes += 1;
                }
            }
            let size = if keyframe { sh.key_size } else { sh.inter_size };
            let frame = vp8_frame(&tag, size, &sh.filler);
            self.write(
                self.video_mid,
                self.send.video_pt,
                now,
                MediaTime::new(rtp, Frequency::NINETY_KHZ),
                frame,
                sh,
            );
            let next = at + video_interval;
            self.send.next_video = Some(if now.duration_since(next) > Duration::from_millis(200) {
                now + video_interval
            } else {
                next
            });
        }
    }

    fn write(
        &mut self,
        mid: Mid,
        pt: Option<Pt>,
        now: Instant,
        time: MediaTime,
        data: Vec<u8>,
        sh: &mut Shared,
    ) {
        let (Some(pt), Some(w)) = (pt, self.rtc.writer(mid)) else {
            return;
        };
        if let Err(e) = w.write(pt, now, time, data) {
            self.fail(format!("{}: writing media: {e}", self.name()));
        }
        self.drain(sh);
    }

    pub(super) fn next_wakeup(&self) -> Option<Instant> {
        if !self.alive() {
            return None;
        }
        let mut t = self.timeout;
        for n in [self.send.next_audio, self.send.next_video]
            .into_iter()
            .flatten()
        {
            t = t.min(n);
        }
        Some(t)
    }
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
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn durations_and_bitrates() {
        assert_eq!(parse_secs("10s").unwrap(), 10.0);
        assert_eq!(parse_secs("10").unwrap(), 10.0);
        assert_eq!(parse_secs("1500ms").unwrap(), 1.5);
        assert_eq!(parse_secs("2m").unwrap(), 120.0);
        assert!(parse_secs("-1").is_err() && parse_secs("x").is_err());
        assert_eq!(parse_bitrate("500k").unwrap(), 500_000);
        assert_eq!(parse_bitrate("1.5M").unwrap(), 1_500_000);
        assert_eq!(parse_bitrate("800000").unwrap(), 800_000);
        assert!(parse_bitrate("0").is_err() && parse_bitrate("fast").is_err());
    }

    #[test]
    fn vp8_frames_carry_the_keyframe_bit_and_the_tag() {
        let filler = vec![0x55; 100];
        for keyframe in [true, false] {
            let tag = Tag {
                video: true,
                keyframe,
                publisher: 3,
                seq: 77,
                sent_us: 123_456,
            };
            let f = vp8_frame(&tag, 2000, &filler);
            assert_eq!(f.len(), 2000);
            // RFC 6386 9.1: P (inverse keyframe) is bit 0, show_frame bit 4.
            assert_eq!(f[0] & 1 == 0, keyframe);
            assert_eq!(f[0] & 0x10, 0x10);
            if keyframe {
                assert_eq!(&f[3..6], &[0x9d, 0x01, 0x2a]);
            }
            assert_eq!(Tag::find(true, &f), Some(tag));
        }
        let a = Tag {
            video: false,
            keyframe: false,
            publisher: 0,
            seq: 1,
            sent_us: 2,
        };
        let f = opus_frame(&a);
        assert_eq!(f[0], 0xF8);
        assert_eq!(Tag::find(false, &f), Some(a));
        assert_eq!(Tag::find(false, &[0xF8, 1, 2, 3]), None);
    }

    #[test]
    fn m_lines_follow_the_latest_msid() {
        let mut r = Receiver::default();
        let offer = |b: &str, c: &str| {
            format!(
                "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
                 m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=recvonly\r\n\
                 m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:3\r\na=sendonly\r\n{b}\
                 m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:5\r\n{c}"
            )
        };
        r.follow_sdp(&offer("a=msid:p_b t1\r\n", "a=msid:p_c t2\r\n"));
        assert_eq!(r.msid.get(&Mid::from("3")).map(String::as_str), Some("p_b"));
        assert_eq!(r.msid.get(&Mid::from("5")).map(String::as_str), Some("p_c"));
        assert!(!r.msid.contains_key(&Mid::from("0")));
        // p_b left and p_d took its m-line; p_c's m-line went inactive without an msid.
        r.follow_sdp(&offer("a=msid:p_d t9\r\n", "a=inactive\r\n"));
        assert_eq!(r.msid.get(&Mid::from("3")).map(String::as_str), Some("p_d"));
        assert!(!r.msid.contains_key(&Mid::from("5")));
        assert_eq!(r.msid_changes, 1);
    }

    #[test]
    fn http_answers_and_locations() {
        let raw = b"HTTP/1.1 201 Created\r\nLocation: /whip/r/abc\r\nContent-Length: 5\r\n\r\nv=0\r\nextra";
        let r = parse_response(raw).unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(r.header("location"), Some("/whip/r/abc"));
        assert_eq!(r.body, "v=0\r\n");
        let raw = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(raw).unwrap().body, "abcde");
        assert_eq!(location_path("http://h:1/x/whip/r/1", "/x"), "/whip/r/1");
        assert_eq!(location_path("/whip/r/1", ""), "/whip/r/1");
        let b = parse_base("http://127.0.0.1:8080/").unwrap();
        assert_eq!(b.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(b.prefix, "");
        assert!(parse_base("https://127.0.0.1").is_err());
    }

    #[test]
    fn bad_options_are_refused() {
        let ok = SfuArgs {
            http: "http://127.0.0.1:1".into(),
            room: "r".into(),
            publishers: 1,
            subscribers: 1,
            duration: 1.0,
            warmup: 0.0,
            bitrate: 500_000,
            local_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            participants: None,
            churn_every: None,
            seed: 1,
            starved_after: 10.0,
            token: None,
            server_pid: None,
            json: false,
        };
        assert!(ok.validate().is_ok());
        for bad in [
            SfuArgs {
                publishers: 0,
                ..ok.clone()
            },
            SfuArgs {
                subscribers: 200,
                ..ok.clone()
            },
            SfuArgs {
                duration: 601.0,
                ..ok.clone()
            },
            SfuArgs {
                room: "a/b".into(),
                ..ok.clone()
            },
            SfuArgs {
                bitrate: 100_000_000,
                ..ok.clone()
            },
            SfuArgs {
                participants: Some(1),
                ..ok.clone()
            },
            SfuArgs {
                participants: Some(51),
                ..ok.clone()
            },
            SfuArgs {
                churn_every: Some(2.0),
                ..ok.clone()
            },
            SfuArgs {
                participants: Some(4),
                churn_every: Some(0.1),
                ..ok.clone()
            },
            SfuArgs {
                starved_after: 0.0,
                ..ok.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        // Nothing listens on port 1: a clear error, no panic.
        let e = run(&ok).unwrap_err().to_string();
        assert!(e.contains("cannot connect"), "{e}");
    }
}
