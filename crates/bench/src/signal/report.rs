//! The report of `tsunagi bench signal`, printed as text or one JSON object.

use super::*;

/// Counts as `a 3, b 1`.
pub(crate) fn counts_text(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".to_owned();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One server's clients.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerResult {
    pub url: String,
    pub clients: u64,
    pub joined: u64,
    pub join_failed: u64,
    /// Joined clients whose connection ended before the close phase.
    pub disconnected: u64,
    /// Window chats delivered to this server's clients.
    pub received: u64,
}

/// Deliveries of one kind.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PartResult {
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub latency_us: Latency,
}

/// Chats sent in the window and what reached the other members.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FanOut {
    /// Σ over window chats of (members of the room when sent − 1).
    pub expected: u64,
    /// Of those, received within the drain period.
    pub received: u64,
    pub lost: u64,
    pub loss_ratio: f64,
    /// Send to receipt, all deliveries.
    pub latency_us: Latency,
    pub same_server: PartResult,
    /// Sender and receiver on different servers (several --server).
    pub cross_server: PartResult,
    pub late: u64,
    pub outside_window: u64,
    pub misrouted: u64,
    pub foreign: u64,
}

/// CPU and memory of one process from /proc.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProcUse {
    pub pid: u32,
    /// CPU seconds per second (1.0 = one core) from the first join to the last.
    pub join_cpu_util: Option<f64>,
    /// The same over the measurement window.
    pub window_cpu_util: Option<f64>,
    pub rss_start_kib: Option<u64>,
    pub rss_joined_kib: Option<u64>,
    pub rss_end_kib: Option<u64>,
    pub peak_rss_kib: Option<u64>,
    /// (RSS with its clients joined − RSS before) / its clients joined.
    pub rss_per_client_kib: Option<f64>,
}

/// What `tsunagi bench signal` measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SignalReport {
    pub bench: &'static str,
    pub servers: Vec<ServerResult>,
    pub clients: usize,
    pub rooms: usize,
    /// Members of the largest room.
    pub room_size: usize,
    pub mode: Option<JoinMode>,
    pub threads: usize,
    pub join_rate_target: f64,
    pub joins_in_flight: usize,
    pub chat_rate_target: f64,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub joined: u64,
    pub join_failed: u64,
    /// Refused or failed joins by cause: the server's error code, or
    /// `connect: ...`, `handshake: ...`, `timeout`, `closed ...`.
    pub join_failures: BTreeMap<String, u64>,
    /// From the first connect to the last join answered.
    pub join_s: f64,
    /// Joins completed per second over `join_s`.
    pub join_per_sec: f64,
    /// Connect + WebSocket handshake + `welcome`.
    pub join_latency_us: Latency,
    /// The `mode` of the `welcome`s.
    pub welcome_modes: BTreeMap<String, u64>,
    /// The smallest `maxPeers` any `welcome` gave.
    pub server_max_peers: Option<u64>,
    /// `mode` messages received (rooms switching between mesh and SFU).
    pub mode_messages: u64,
    pub chats_sent: u64,
    pub chats_sent_in_window: u64,
    /// Window chats sent per second.
    pub chat_per_sec: f64,
    pub fanout: FanOut,
    /// Deliveries received per second of window.
    pub fanout_per_sec: f64,
    /// `error` messages after `welcome` by code, and `rejoin` messages (a cluster
    /// ended the session) as `rejoin: {reason}`.
    pub errors: BTreeMap<String, u64>,
    pub rate_limited: u64,
    pub server_busy: u64,
    /// Joined connections that ended before the close phase, by cause.
    pub disconnects: BTreeMap<String, u64>,
    /// Connections closed with 1000 and answered by the server's close frame.
    pub closed_clean: u64,
    pub close_failures: BTreeMap<String, u64>,
    pub close_s: f64,
    /// In the order of --server-pid.
    pub server_procs: Vec<ProcUse>,
    /// This tool.
    pub generator: ProcUse,
    pub loadavg: String,
}

fn pct(u: Option<f64>) -> String {
    u.map_or("-".to_owned(), |u| format!("{:.0} %", u * 100.0))
}

fn kib(k: Option<u64>) -> String {
    k.map_or("-".to_owned(), |k| format!("{} MiB", k / 1024))
}

fn lat(l: &Latency) -> String {
    format!(
        "p50 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}",
        l.p50, l.p99, l.p999, l.max
    )
}

impl SignalReport {
    pub fn print(&self, json: bool) {
        if json {
            match serde_json::to_string(self) {
                Ok(s) => println!("{s}"),
                Err(e) => eprintln!("tsunagi bench signal: cannot encode the report: {e}"),
            }
            return;
        }
        let mode = self
            .mode
            .map_or("none".to_owned(), |m| m.as_str().to_owned());
        println!(
            "bench signal: {} clients in {} rooms (up to {} members), {} server(s), mode {mode}, {} thread(s)",
            self.clients,
            self.rooms,
            self.room_size,
            self.servers.len(),
            self.threads
        );
        println!(
            "  join   {} joined, {} failed in {:.2} s: {:.0} joins/s (target {}, at most {} in flight)",
            self.joined,
            self.join_failed,
            self.join_s,
            self.join_per_sec,
            if self.join_rate_target > 0.0 {
                format!("{:.0}/s", self.join_rate_target)
            } else {
                "flat out".to_owned()
            },
            self.joins_in_flight
        );
        println!(
            "         latency ms: p50 {:.2}  p99 {:.2}  max {:.2}",
            self.join_latency_us.p50 / 1000.0,
            self.join_latency_us.p99 / 1000.0,
            self.join_latency_us.max / 1000.0
        );
        if self.join_failed > 0 {
            println!("         failures: {}", counts_text(&self.join_failures));
        }
        println!(
            "         welcome modes: {}; smallest maxPeers {}; mode messages {}",
            counts_text(&self.welcome_modes),
            self.server_max_peers
                .map_or("-".to_owned(), |m| m.to_string()),
            self.mode_messages
        );
        let f = &self.fanout;
        println!(
            "  chat   {} sent in {:.1} s ({:.0}/s, target {:.0}/s; {} in all)",
            self.chats_sent_in_window,
            self.duration_s,
            self.chat_per_sec,
            self.chat_rate_target,
            self.chats_sent
        );
        println!(
            "  fanout {} of {} deliveries ({:.0}/s), lost {} ({:.3} %)",
            f.received,
            f.expected,
            self.fanout_per_sec,
            f.lost,
            f.loss_ratio * 100.0
        );
        println!("         latency us: {}", lat(&f.latency_us));
        if self.servers.len() > 1 {
            for (name, p) in [("same server", &f.same_server), ("cross", &f.cross_server)] {
                println!(
                    "         {name}: {} of {}, {}",
                    p.received,
                    p.expected,
                    lat(&p.latency_us)
                );
            }
        }
        if f.late + f.misrouted + f.foreign > 0 {
            println!(
                "         late {}, misrouted {}, foreign {}",
                f.late, f.misrouted, f.foreign
            );
        }
        println!(
            "  errors {} (rate-limited {}, server-busy {}); disconnects {}",
            counts_text(&self.errors),
            self.rate_limited,
            self.server_busy,
            counts_text(&self.disconnects)
        );
        println!(
            "  close  {} clean in {:.2} s; failures {}",
            self.closed_clean,
            self.close_s,
            counts_text(&self.close_failures)
        );
        if self.servers.len() > 1 {
            for s in &self.servers {
                println!(
                    "  server {}: {} clients, {} joined, {} failed, {} disconnected, {} received",
                    s.url, s.clients, s.joined, s.join_failed, s.disconnected, s.received
                );
            }
        }
        for p in &self.server_procs {
            println!(
                "  server pid {}: CPU join {} window {}; RSS {} -> {} joined -> {} end, peak {}; {:.1} KiB per client",
                p.pid,
                pct(p.join_cpu_util),
                pct(p.window_cpu_util),
                kib(p.rss_start_kib),
                kib(p.rss_joined_kib),
                kib(p.rss_end_kib),
                kib(p.peak_rss_kib),
                p.rss_per_client_kib.unwrap_or(0.0)
            );
        }
        let g = &self.generator;
        println!(
            "  generator CPU join {} window {} (of one core); peak RSS {}",
            pct(g.join_cpu_util),
            pct(g.window_cpu_util),
            kib(g.peak_rss_kib)
        );
        println!("  load average: {}", self.loadavg);
    }
}
