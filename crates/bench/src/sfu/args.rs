//! The command line of `tsunagi bench sfu` ([`SfuArgs`]): its options, their parsers
//! (durations, bit rates) and the checks that bound a run.

use super::*;

/// The SFU a run talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Target {
    /// tsunagi: WHIP/WHEP, or the signaling WebSocket with --participants.
    #[default]
    Tsunagi,
    /// Janus's VideoRoom plugin over its HTTP API (--http is Janus's base URL, such as
    /// http://127.0.0.1:8088/janus); the tool creates a room and destroys it at the end.
    Janus,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Tsunagi => "tsunagi",
            Target::Janus => "janus",
        }
    }
}

/// `tsunagi bench sfu ...`
#[derive(Debug, Clone, Args)]
pub struct SfuArgs {
    /// The server's HTTP base URL (http:// only).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080")]
    pub http: String,
    /// The server under test.
    #[arg(long, value_enum, default_value_t = Target::Tsunagi)]
    pub target: Target,
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
pub(super) fn parse_secs(s: &str) -> Result<f64, String> {
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
pub(super) fn parse_bitrate(s: &str) -> Result<u64, String> {
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
    pub(crate) fn validate(&self) -> Result<(), BenchError> {
        if !(self.duration > 0.0 && self.duration <= MAX_DURATION_SECS) {
            return err(format!(
                "--duration must be in (0, {MAX_DURATION_SECS}] seconds"
            ));
        }
        if !(0.0..=60.0).contains(&self.warmup) {
            return err("--warmup must be in [0, 60] seconds");
        }
        if let Some(n) = self.participants {
            if !(2..=crate::sfu_room::MAX_PARTICIPANTS).contains(&n) {
                return err(format!(
                    "--participants must be in 2..={}",
                    crate::sfu_room::MAX_PARTICIPANTS
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
        if self.target == Target::Janus && self.churn_every.is_some() {
            return err("--churn-every runs against tsunagi only (--target tsunagi)");
        }
        if self.target == Target::Janus && self.token.is_some() {
            return err("--token is for tsunagi; the Janus run uses no API secret");
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
