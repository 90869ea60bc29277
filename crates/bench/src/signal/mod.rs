//! `tsunagi bench signal`: many signaling clients (WebSockets) against one or more
//! signaling servers: how fast they join, and how fast and how completely `chat`
//! fans out to the rooms.
//!
//! * **Join**: client `i` connects to a `--server` (member `k = i / rooms` of room `r = i
//!   % rooms` goes to server `(r + k) % servers`, so that every room has members on as
//!   many servers as it can, and the clients are spread evenly), sends `join` for room
//!   `{room-prefix}{r}` and waits for `welcome`. Starts are paced at `--join-rate`
//!   (at most `--joins-in-flight` unanswered). Join latency is connect + handshake +
//!   `welcome`; every refused join is counted by its error code.
//! * **Fan-out**: once every join has ended, each joined client sends `chat` at
//!   `--chat-rate / --clients` per second (staggered, so that the total is even), text
//!   `b|{client}|{seq}|{µs since the bench started}`. For a chat sent inside the window
//!   (after `--warmup`, for `--duration`) every other member of the room joined at that
//!   moment should receive it: expected = Σ (members − 1). After the window the tool
//!   waits up to [`DRAIN`] for stragglers; loss = expected − received. Latency is send
//!   to receipt, split same-server / cross-server when there are several servers.
//! * **Close**: every client closes with code 1000 (a `leave`) and waits for the
//!   server's close frame, within [`CLOSE_TIMEOUT`] in all.
//!
//! Errors are counted, never hidden: refused joins by code, `error` messages during the
//! run by code (`rate-limited`, `server-busy` also on their own; a cluster's `rejoin` by
//! reason: the bench does not join again), connections that end early by cause. With
//! `--server-pid` (in the order of `--server`) each server's CPU and memory come from
//! `/proc`, and the tool's own CPU is reported beside them (is the generator the
//! bottleneck?). Everything is bounded: clients, rates, times, joins in flight; each
//! client holds a 4 KiB read buffer and a few counters.

mod agg;
mod args;
mod bench;
mod client;
mod net;
mod report;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use serde::Serialize;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;

use super::{err, loadavg, procfs, BenchError, Histogram, Latency, MAX_DURATION_SECS};

pub use args::{JoinMode, SignalArgs};
pub use report::{FanOut, PartResult, ProcUse, ServerResult, SignalReport};

use agg::Agg;
use args::server_of;
use bench::Bench;
use net::Target;

/// Most clients in one run.
pub const MAX_CLIENTS: usize = super::MAX_ALLOCATIONS;

/// Most `--server` URLs.
pub const MAX_SERVERS: usize = 64;

/// The most chats per second one client sends. The server allows 50 messages/s per
/// connection (burst 100); this leaves room for the `join` and the pongs.
pub const MAX_CHATS_PER_CLIENT: f64 = 40.0;

/// Most `--joins-in-flight`.
pub const MAX_JOINS_IN_FLIGHT: usize = 1024;

/// Connect + WebSocket handshake + `welcome`, per client.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// After the window: how long received chats still count.
pub const DRAIN: Duration = Duration::from_secs(3);

/// Closing every connection, in all.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// One write to the WebSocket.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The room limits of a tsunagi server with its defaults: `max-room-peers` and
/// `mesh-max-peers`.
const DEFAULT_MAX_ROOM_PEERS: usize = 50;
const DEFAULT_MESH_MAX_PEERS: usize = 4;

/// File descriptors beside the clients' sockets (runtime, stdio, /proc reads).
const SPARE_FDS: u64 = 64;

/// Runs `tsunagi bench signal` and prints the report: exit status 0 when it ran.
pub fn main(args: &SignalArgs) -> ExitCode {
    match run(args) {
        Ok(r) => {
            r.print(args.json);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tsunagi bench signal: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the benchmark and returns its report.
pub fn run(args: &SignalArgs) -> Result<SignalReport, BenchError> {
    args.validate()?;
    net::raise_nofile(args.clients as u64 + SPARE_FDS)?;
    let mut builder = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(args.threads);
        b
    };
    let rt = builder
        .enable_all()
        .build()
        .map_err(|e| BenchError(format!("tokio runtime: {e}")))?;
    let report = rt.block_on(Bench::run(args));
    rt.shutdown_timeout(Duration::from_secs(1));
    report
}

/// The phases the clients follow (the window itself is in [`Shared::plan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Join,
    /// Send chats as [`Shared::plan`] says.
    Chat,
    /// Close the WebSocket (1000) and end.
    Close,
}

/// When chats are sent: client `i`'s `k`-th at `t0 + i / chat_rate + k * interval`,
/// measured when sent in `[window_start, window_end)` (µs since [`Shared::start`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub(crate) t0: Instant,
    pub(crate) interval: Option<Duration>,
    pub(crate) chat_rate: f64,
    pub(crate) window_start_us: u64,
    pub(crate) window_end_us: u64,
    pub(crate) window_end: Instant,
}

/// What every client task shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) start: Instant,
    pub(crate) rooms: usize,
    pub(crate) servers: usize,
    pub(crate) targets: Vec<Target>,
    /// The `join` of each client is this with the room and name filled in.
    pub(crate) token: Option<String>,
    pub(crate) mode: Option<JoinMode>,
    pub(crate) room_prefix: String,
    pub(crate) name_prefix: String,
    pub(crate) plan: OnceLock<Plan>,
    /// Receipts of window chats count until the drain period ends.
    pub(crate) counting: AtomicBool,
    pub(crate) joins_done: AtomicUsize,
    pub(crate) join_notify: Notify,
    pub(crate) agg: Mutex<Agg>,
}

impl Shared {
    pub(crate) fn server_of(&self, i: usize) -> usize {
        server_of(i, self.rooms, self.servers)
    }

    pub(crate) fn us_since_start(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.start).as_micros() as u64
    }

    /// The aggregate; a poisoned lock (a panicked client task) still holds counts.
    pub(crate) fn agg(&self) -> std::sync::MutexGuard<'_, Agg> {
        self.agg.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Adds one to the count of `key`.
pub(crate) fn count(map: &mut BTreeMap<String, u64>, key: impl Into<String>) {
    *map.entry(key.into()).or_default() += 1;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
