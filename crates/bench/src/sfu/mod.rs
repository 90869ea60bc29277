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
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

use super::sfu_common::{exit_with, per_kib, printed_json, ratio, Core, Driver, Tail};
use super::{err, loadavg, BenchError, Histogram, MAX_DURATION_SECS};

mod args;
mod client;
mod http;
mod media;
mod report;

pub use args::{SfuArgs, Target};
pub(crate) use report::Setup;
pub use report::{FrameLatency, SfuReport, Spread, SubscriberResult};

pub(crate) use client::*;
pub(crate) use http::*;
pub(crate) use media::*;

/// Most publishers + subscribers in one run.
pub const MAX_CLIENTS: usize = 600;

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
    if args.target == Target::Janus {
        return super::sfu_janus::main(args);
    }
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

    fn measure(&mut self) -> Result<SfuReport, BenchError> {
        let args = self.args;
        let rss_start = self.core.rss();
        let anon_start = self.core.anon();
        let setup_start = Instant::now();

        for i in 0..args.publishers {
            self.add_client(Role::Publisher, i)?;
            self.turn(Duration::ZERO)?;
        }
        self.wait_connected(Role::Publisher)?;
        // Media flows before the viewers come (and before RSS with publishers).
        self.pump_for(Duration::from_millis(300))?;
        let rss_publishers = self.core.rss();
        let anon_publishers = self.core.anon();

        for j in 0..args.subscribers {
            self.add_client(Role::Subscriber, j)?;
            self.turn(Duration::ZERO)?;
        }
        self.wait_connected(Role::Subscriber)?;
        let setup_s = setup_start.elapsed().as_secs_f64();

        self.pump_for(Duration::from_secs_f64(args.warmup))?;
        let rss_connected = self.core.rss();
        let anon_connected = self.core.anon();

        let w = self.measure_window(args.duration)?;
        Ok(SfuReport::from_run(
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
        ))
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
