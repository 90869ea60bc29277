//! `tsunagi bench` (this crate, linked only by the binary): a load generator for STUN/TURN servers (ours or any other, e.g.
//! coturn), and a minimal UDP forwarder that serves as the limit baseline.
//!
//! * `bench turn`: N allocations relay ChannelData to each other in pairs (`--mode
//!   pairs`: the peer of each allocation is its partner's relay address), to a UDP echo
//!   peer that the tool runs itself (`--mode echo`), or, without TURN, through a plain
//!   forwarder (`bench forwarder`): one way to a sink (`--mode raw`), or from a socket
//!   per client to the tool's echo peer and back (`--mode raw-echo`, for `bench
//!   forwarder --relays`). Flat out (`--rate 0`, with at most
//!   `--window` packets in flight per thread) or at a fixed total rate. Every payload
//!   carries its send time and sequence, so each packet's latency is measured.
//! * `bench stun`: Binding requests per second, `--window` outstanding per client.
//! * `bench alloc`: authenticated allocations per second: each cycle is an Allocate
//!   answered by 401, the Allocate with credentials, and a Refresh with LIFETIME 0.
//!   With `--hold`, instead: N allocations (each with a channel) are created and held,
//!   and the server's resident memory per allocation is reported.
//! * `bench churn`: holds N allocations for a bounded time (default 5 minutes) while
//!   they refresh, are deleted or abandoned (to expire) and are replaced, and samples
//!   the server's RSS every `--sample` seconds (see [`churn`]).
//! * `bench forwarder`: receives on one port and forwards every datagram to a fixed
//!   destination (through a second socket of its own with `--hops 2`, as a TURN relay
//!   does), or with `--relays N` from a socket per client to an echo peer and back (as
//!   N allocations relaying to a peer outside the server), with the same socket
//!   batching as the relay and no TURN logic.
//! * `bench sfu`: WHIP publishers and WHEP subscribers against the SFU, or with
//!   `--participants` a room of N over signaling (see [`sfu`], [`sfu_room`]); with
//!   `--target janus` the same clients against Janus's VideoRoom (see [`sfu_janus`]).
//! * `bench signal`: N signaling WebSockets over one or more servers (`--server`
//!   repeatable, ws:// or wss://) join M rooms at `--join-rate`, then send `chat` at
//!   `--chat-rate` in total: join rate and latency, fan-out latency (send to each other
//!   member's receipt) and loss, every refused join and error counted (see [`signal`]).
//!
//! Everything is bounded: durations (at most 600 s), counts, queues. The generator sends
//! only to `--server` and to its own echo peer. With `--server-pid` it reads the server's
//! CPU time and memory from `/proc`. `--json` prints one JSON object.
//!
//! Packets counted: those *sent* inside the measurement window (after `--warmup`, for
//! `--duration`); after the window the generator stops sending and waits for stragglers,
//! so loss = sent in the window − received of those. "Relayed packets/s" is packets
//! delivered back to the generator per second: each went client → server → peer →
//! server → client, i.e. through the relay in both directions.

pub mod churn;
mod client;
mod conn;
mod forwarder;
mod hist;
mod procfs;
mod rpc;
pub mod sfu;
mod sfu_common;
pub mod sfu_janus;
pub mod sfu_room;
pub mod signal;
mod traffic;

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;

pub use hist::Histogram;

/// Longest measurement (and forwarder run).
pub const MAX_DURATION_SECS: f64 = 600.0;
/// Most client sockets or connections one run opens.
pub const MAX_ALLOCATIONS: usize = 20_000;
/// Most generator threads.
const MAX_THREADS: usize = 64;

/// `tsunagi bench ...`
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

impl BenchArgs {
    /// Parses the arguments that follow `tsunagi bench`.
    pub fn parse_from<I, T>(args: I) -> Result<BenchArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::FromArgMatches;
        let cmd = BenchArgs::augment_args(clap::Command::new("bench"));
        let argv = std::iter::once(std::ffi::OsString::from("bench"))
            .chain(args.into_iter().map(Into::into));
        BenchArgs::from_arg_matches(&cmd.try_get_matches_from(argv)?)
    }
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Relay throughput, loss and latency through TURN channels.
    Turn(TurnArgs),
    /// STUN Binding requests per second.
    Stun(StunArgs),
    /// Authenticated allocations per second, or memory per allocation (--hold).
    Alloc(AllocArgs),
    /// Holds N allocations while they refresh, end and are replaced; samples the
    /// server's memory.
    Churn(ChurnArgs),
    /// A minimal UDP forwarder without TURN logic (the limit baseline).
    Forwarder(ForwarderArgs),
    /// WHIP publishers and WHEP subscribers (str0m) against an SFU, or with
    /// --participants a room of N over signaling, each publishing and receiving the
    /// others: forwarded packets/s, loss, server CPU and memory per subscriber.
    Sfu(sfu::SfuArgs),
    /// Signaling load: N WebSocket clients join M rooms at a given rate and chat; join
    /// rate and latency, fan-out latency and loss, errors by code.
    Signal(signal::SignalArgs),
}

/// Client transport to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchTransport {
    Udp,
    Tcp,
}

/// Where relayed packets go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayMode {
    /// Allocations in pairs send to each other's relay address.
    Pairs,
    /// Allocations send to a UDP echo peer that the tool runs on --peer-ip.
    Echo,
    /// No TURN: plain datagrams to --server (a forwarder) that come back on --sink.
    Raw,
    /// No TURN: plain datagrams to --server (`bench forwarder --relays`), which sends
    /// them from a socket per client to the tool's echo peer on --sink; the echoes come
    /// back to each client through the forwarder.
    #[serde(rename = "raw-echo")]
    RawEcho,
}

impl RelayMode {
    /// Without TURN, through `bench forwarder`.
    pub fn is_raw(self) -> bool {
        matches!(self, RelayMode::Raw | RelayMode::RawEcho)
    }
}

/// Options of every client benchmark.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// The server to measure, HOST:PORT (an IP address).
    #[arg(long, value_name = "IP:PORT")]
    pub server: SocketAddr,
    /// Transport from clients to the server.
    #[arg(long, value_enum, default_value = "udp")]
    pub transport: BenchTransport,
    /// Allocations (bench turn, bench alloc) or clients (bench stun).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub allocations: usize,
    /// Seconds of measurement (at most 600).
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before the measurement starts.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub warmup: f64,
    /// Generator threads (each owns a share of the allocations).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub threads: usize,
    /// PID of the server, to report its CPU seconds and memory from /proc.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Long-term credentials: a static user, or REST credentials minted from a secret.
#[derive(Debug, Clone, Args)]
pub struct CredArgs {
    /// Static TURN user name.
    #[arg(long, value_name = "U", requires = "password")]
    pub user: Option<String>,
    /// Password of --user.
    #[arg(long, value_name = "P")]
    pub password: Option<String>,
    /// TURN REST API secret: credentials are minted per run (user "<expiry>:bench").
    #[arg(long, value_name = "S", conflicts_with = "user")]
    pub static_auth_secret: Option<String>,
    /// Realm [default: the one in the server's 401].
    #[arg(long, value_name = "S")]
    pub realm: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct TurnArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub cred: CredArgs,
    /// Where packets go: pairs, echo, raw or raw-echo.
    #[arg(long, value_enum, default_value = "pairs")]
    pub mode: RelayMode,
    /// Payload bytes per packet (16..=16384).
    #[arg(long, value_name = "BYTES", default_value_t = 100)]
    pub payload: usize,
    /// Packets per second in total; 0 = flat out (bounded by --window).
    #[arg(long, value_name = "PPS", default_value_t = 0)]
    pub rate: u64,
    /// Flat out: packets in flight per thread.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub window: usize,
    /// Address of the echo peer (--mode echo).
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    pub peer_ip: IpAddr,
    /// Address the forwarder sends to (its --to): --mode raw receives there, --mode
    /// raw-echo runs its echo peer there.
    #[arg(long, value_name = "IP:PORT")]
    pub sink: Option<SocketAddr>,
}

#[derive(Debug, Clone, Args)]
pub struct StunArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Binding requests outstanding per client.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub window: usize,
}

#[derive(Debug, Clone, Args)]
pub struct AllocArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub cred: CredArgs,
    /// Create --allocations allocations (each with a channel), hold them, report the
    /// server's memory per allocation (needs --server-pid), then delete them.
    #[arg(long)]
    pub hold: bool,
}

/// `--duration` defaults to 300 s (5 minutes) here.
#[derive(Debug, Clone, Args)]
#[command(mut_arg("duration", |a| a.default_value("300")))]
pub struct ChurnArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub cred: CredArgs,
    /// LIFETIME asked for in Allocate and Refresh, in seconds; each allocation
    /// refreshes at half of what the server grants.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub lifetime: u32,
    /// Allocations ended per second (half deleted, half abandoned to expire), each
    /// replaced by a new one.
    #[arg(long, value_name = "N", default_value_t = 50.0)]
    pub churn: f64,
    /// Seconds between samples of the server's RSS.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub sample: f64,
}

#[derive(Debug, Clone, Args)]
pub struct ForwarderArgs {
    /// Address to receive on (from clients).
    #[arg(long, value_name = "IP:PORT")]
    pub listen: SocketAddr,
    /// Where datagrams from clients go: the sink of `bench turn --mode raw`, or with
    /// --relays the echo peer of `bench turn --mode raw-echo` (its --sink). Not with
    /// --reflect.
    #[arg(long, value_name = "IP:PORT", required_unless_present = "reflect")]
    pub to: Option<SocketAddr>,
    /// 1: straight to --to. 2: through a second socket of the forwarder first, so that
    /// each packet costs the same socket operations as through a TURN relay. Not with
    /// --relays.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub hops: u8,
    /// The echo shape, as N TURN allocations with a peer outside the server: open N
    /// relay sockets on the --listen IP. Each new client address takes one (round
    /// robin, one client per socket, at most N clients); its datagrams leave from that
    /// socket to --to, and what arrives on the socket goes back to the client from the
    /// listen socket.
    #[arg(
        long,
        value_name = "N",
        conflicts_with = "hops",
        value_parser = clap::value_parser!(u32).range(1..=MAX_ALLOCATIONS as i64)
    )]
    pub relays: Option<u32>,
    /// The STUN shape: every datagram goes straight back to where it came from, from
    /// the listen socket (one receive and one send per datagram, as a STUN Binding
    /// request and its response). Drive it with `bench turn --mode raw-echo` (whose
    /// echo peer then stays idle).
    #[arg(long, conflicts_with_all = ["hops", "relays", "to"])]
    pub reflect: bool,
    /// Seconds to run before exiting (at most 600); SIGTERM also stops it.
    #[arg(long, value_name = "SECS", default_value_t = 600.0)]
    pub duration: f64,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    pub fn of(h: &Histogram) -> Self {
        let us = |ns: u64| ns as f64 / 1000.0;
        Self {
            p50: us(h.quantile(0.5)),
            p99: us(h.quantile(0.99)),
            p999: us(h.quantile(0.999)),
            max: us(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// What a benchmark measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub bench: &'static str,
    pub server: String,
    pub transport: Option<BenchTransport>,
    pub mode: Option<RelayMode>,
    /// Allocations (or clients) that took part.
    pub allocations: usize,
    pub payload: Option<usize>,
    /// Target packets/s; 0 = flat out.
    pub rate: Option<u64>,
    pub threads: usize,
    pub duration_s: f64,
    /// Time to create the allocations and channels.
    pub setup_s: f64,
    /// Packets (or requests) sent inside the window.
    pub sent: u64,
    /// Of those, received back.
    pub received: u64,
    pub lost: u64,
    pub loss_ratio: f64,
    /// Received per second: relayed packets, Binding responses or allocation cycles.
    pub per_sec: f64,
    /// Payload megabits per second relayed.
    pub mbit_per_sec: Option<f64>,
    /// Per packet (turn), per request (stun), per Allocate-to-deleted cycle (alloc).
    pub latency_us: Latency,
    pub server_cpu_s: Option<f64>,
    /// Server CPU seconds per second of the window (1.0 = one core busy).
    pub server_cpu_util: Option<f64>,
    pub server_rss_start_kib: Option<u64>,
    pub server_rss_end_kib: Option<u64>,
    pub server_peak_rss_kib: Option<u64>,
    /// --hold: server RSS growth per allocation held.
    pub bytes_per_allocation: Option<f64>,
    /// Failed requests by error code ("timeout" for none).
    pub failures: String,
    /// /proc/loadavg at the end: how busy the machine was.
    pub loadavg: String,
    /// `bench churn`: samples and counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub churn: Option<churn::ChurnReport>,
}

impl Report {
    fn print(&self, json: bool) {
        if json {
            match serde_json::to_string(self) {
                Ok(s) => println!("{s}"),
                Err(e) => eprintln!("tsunagi bench: cannot encode the report: {e}"),
            }
            return;
        }
        let l = &self.latency_us;
        println!(
            "bench {} against {} ({}{} allocations/clients, {} thread(s))",
            self.bench,
            self.server,
            self.mode
                .and_then(|m| m.to_possible_value())
                .map(|m| format!("{} mode, ", m.get_name()))
                .unwrap_or_default(),
            self.allocations,
            self.threads
        );
        println!(
            "  {:.0}/s over {:.1} s (setup {:.2} s); sent {} received {} lost {} ({:.3} %)",
            self.per_sec,
            self.duration_s,
            self.setup_s,
            self.sent,
            self.received,
            self.lost,
            self.loss_ratio * 100.0
        );
        if let Some(m) = self.mbit_per_sec {
            println!("  {m:.1} Mbit/s of payload");
        }
        if self.churn.is_none() {
            println!(
                "  latency us: p50 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  mean {:.1}",
                l.p50, l.p99, l.p999, l.max, l.mean
            );
        }
        if let Some(c) = self.server_cpu_s {
            println!(
                "  server CPU {c:.2} s ({:.0} % of one core); RSS {} -> {} KiB, peak {} KiB",
                self.server_cpu_util.unwrap_or(0.0) * 100.0,
                self.server_rss_start_kib.unwrap_or(0),
                self.server_rss_end_kib.unwrap_or(0),
                self.server_peak_rss_kib.unwrap_or(0)
            );
        }
        if let Some(b) = self.bytes_per_allocation {
            println!("  server memory per allocation: {b:.0} bytes");
        }
        if let Some(c) = &self.churn {
            println!(
                "  churn: {} held (ramp {:.1} s); created {} ({:.1}/s), refreshed {}, deleted {}, abandoned {}, 508 answers {}; held at end {}, fewest held {}; lifetime granted {}-{} s",
                c.target, c.ramp_s, c.created, c.created_per_sec, c.refreshed, c.deleted,
                c.abandoned, c.insufficient_capacity, c.held_at_end, c.min_held,
                c.granted_lifetime_s.0, c.granted_lifetime_s.1
            );
            for r in &c.rss {
                println!(
                    "    t {:6.1} s  RSS {} KiB  held {}",
                    r.t_s, r.rss_kib, r.held
                );
            }
        }
        if !self.failures.is_empty() {
            println!("  failed requests: {}", self.failures);
        }
        println!("  load average: {}", self.loadavg);
    }
}

/// A benchmark that could not run.
#[derive(Debug)]
pub struct BenchError(pub String);

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BenchError {}

fn err<T>(msg: impl Into<String>) -> Result<T, BenchError> {
    Err(BenchError(msg.into()))
}

impl CommonArgs {
    fn validate(&self) -> Result<(), BenchError> {
        if !(self.duration > 0.0 && self.duration <= MAX_DURATION_SECS) {
            return err(format!(
                "--duration must be in (0, {MAX_DURATION_SECS}] seconds"
            ));
        }
        if !(0.0..=60.0).contains(&self.warmup) {
            return err("--warmup must be in [0, 60] seconds");
        }
        if self.allocations == 0 || self.allocations > MAX_ALLOCATIONS {
            return err(format!("--allocations must be in 1..={MAX_ALLOCATIONS}"));
        }
        if self.threads == 0 || self.threads > MAX_THREADS {
            return err(format!("--threads must be in 1..={MAX_THREADS}"));
        }
        if self.server.port() == 0 || self.server.ip().is_unspecified() {
            return err("--server must be a concrete IP:PORT");
        }
        Ok(())
    }

    fn window(&self) -> (Duration, Duration) {
        (
            Duration::from_secs_f64(self.warmup),
            Duration::from_secs_f64(self.duration),
        )
    }
}

impl CredArgs {
    /// Username, password and realm for the clients.
    fn auth(&self) -> Result<client::Auth, BenchError> {
        let (username, password) = match (&self.user, &self.password, &self.static_auth_secret) {
            (Some(u), Some(p), None) => (u.clone(), p.clone()),
            (None, None, Some(secret)) => {
                let expiry = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
                    + 86_400;
                tsunagi_turn::auth::rest_credential(secret, "bench", expiry)
            }
            _ => return err("give --user and --password, or --static-auth-secret"),
        };
        Ok(client::Auth {
            username,
            password,
            realm: self.realm.clone(),
        })
    }
}

/// Splits `n` items over `threads` in contiguous ranges; with `even`, every range but
/// the last has an even length (pairs stay on one thread).
fn split(n: usize, threads: usize, even: bool) -> Vec<std::ops::Range<usize>> {
    let threads = threads.clamp(1, n.max(1));
    let mut per = n.div_ceil(threads);
    if even && per % 2 == 1 {
        per += 1;
    }
    let mut out = Vec::new();
    let mut start = 0;
    while start < n {
        let end = (start + per).min(n);
        out.push(start..end);
        start = end;
    }
    out
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The server's counters around a measurement window.
#[derive(Debug, Default)]
struct ServerWatch {
    pid: Option<u32>,
    cpu_start: Option<f64>,
    rss_start: Option<u64>,
}

impl ServerWatch {
    fn start(pid: Option<u32>) -> Self {
        Self {
            pid,
            cpu_start: pid.and_then(procfs::cpu_seconds),
            rss_start: pid.and_then(procfs::rss_kib),
        }
    }

    fn finish(&self, r: &mut Report, seconds: f64) {
        let Some(pid) = self.pid else {
            return;
        };
        if let (Some(a), Some(b)) = (self.cpu_start, procfs::cpu_seconds(pid)) {
            r.server_cpu_s = Some(b - a);
            r.server_cpu_util = Some((b - a) / seconds.max(1e-9));
        }
        r.server_rss_start_kib = self.rss_start;
        r.server_rss_end_kib = procfs::rss_kib(pid);
        r.server_peak_rss_kib = procfs::peak_rss_kib(pid);
    }
}

/// Runs a benchmark and returns its report (the forwarder returns an empty one when
/// its time is up).
pub fn report(args: &BenchArgs) -> Result<Report, BenchError> {
    let mut report = match &args.command {
        BenchCommand::Turn(a) => traffic::run(a)?,
        BenchCommand::Stun(a) => rpc::run_stun(a)?,
        BenchCommand::Alloc(a) => rpc::run_alloc(a)?,
        BenchCommand::Churn(a) => churn::run(a)?,
        BenchCommand::Forwarder(a) => {
            forwarder::run(a)?;
            Report {
                bench: "forwarder",
                ..Report::default()
            }
        }
        BenchCommand::Sfu(_) => return err("bench sfu has its own report: call bench::sfu::run"),
        BenchCommand::Signal(_) => {
            return err("bench signal has its own report: call bench::signal::run")
        }
    };
    report.loadavg = loadavg();
    Ok(report)
}

/// Runs `tsunagi bench ...`; exit status 0 when the benchmark ran, 1 when it could not
/// (bad options, setup failed). clap exits with 2 on a bad command line.
pub fn run(args: &BenchArgs) -> ExitCode {
    if let BenchCommand::Sfu(a) = &args.command {
        return sfu::main(a);
    }
    if let BenchCommand::Signal(a) = &args.command {
        return signal::main(a);
    }
    let json = match &args.command {
        BenchCommand::Turn(a) => a.common.json,
        BenchCommand::Stun(a) => a.common.json,
        BenchCommand::Alloc(a) => a.common.json,
        BenchCommand::Churn(a) => a.common.json,
        BenchCommand::Forwarder(_) | BenchCommand::Sfu(_) | BenchCommand::Signal(_) => false,
    };
    match report(args) {
        Ok(r) if r.bench == "forwarder" => ExitCode::SUCCESS,
        Ok(r) => {
            r.print(json);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tsunagi bench: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_pairs_together() {
        assert_eq!(split(8, 3, true), vec![0..4, 4..8]);
        assert_eq!(split(7, 2, true), vec![0..4, 4..7]);
        assert_eq!(split(1, 4, false), vec![0..1]);
        assert_eq!(split(10, 3, false), vec![0..4, 4..8, 8..10]);
    }
}
