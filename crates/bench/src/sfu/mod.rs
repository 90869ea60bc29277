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

mod args;
mod client;
mod http;
mod media;
mod report;

pub use args::SfuArgs;
pub use report::{FrameLatency, SfuReport, Spread, SubscriberResult};

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
