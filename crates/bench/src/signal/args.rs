//! The options of `tsunagi bench signal` and the runs they refuse.

use super::*;

/// The room policy asked for in `join` (the `mode` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JoinMode {
    Mesh,
    Sfu,
    Auto,
}

impl JoinMode {
    pub fn as_str(self) -> &'static str {
        match self {
            JoinMode::Mesh => "mesh",
            JoinMode::Sfu => "sfu",
            JoinMode::Auto => "auto",
        }
    }
}

/// `tsunagi bench signal`
#[derive(Debug, Clone, Args)]
pub struct SignalArgs {
    /// Signaling WebSocket, ws://HOST:PORT/ws or wss://HOST:PORT/ws (repeatable: the
    /// clients, and each room's members, are spread over the servers).
    #[arg(long = "server", value_name = "URL", required = true)]
    pub servers: Vec<String>,
    /// WebSocket clients, one per room member (at most 20000).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub clients: usize,
    /// Rooms: client i joins room i % rooms.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub rooms: usize,
    /// Joins started per second; 0 = as fast as the server answers (with at most
    /// --joins-in-flight unanswered).
    #[arg(long, value_name = "N", default_value_t = 500.0)]
    pub join_rate: f64,
    /// Joins started and not yet answered (`welcome` or an error), at most. tsunagi
    /// serves at most 32 connections per client address that are not through their
    /// HTTP handshake yet and drops the others, so more than 32 from one address
    /// measures that limit.
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub joins_in_flight: usize,
    /// Chats per second in total, spread evenly over the clients (at most 40 per
    /// client); 0 = none.
    #[arg(long, value_name = "N", default_value_t = 1000.0)]
    pub chat_rate: f64,
    /// Seconds of measurement (at most 600).
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of chat before the measurement starts.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub warmup: f64,
    /// Room names are this followed by the room's number.
    #[arg(long, value_name = "S", default_value = "bench-")]
    pub room_prefix: String,
    /// Display names are this followed by the client's number.
    #[arg(long, value_name = "S", default_value = "b")]
    pub name_prefix: String,
    /// Access token sent in every `join` (servers with a token secret).
    #[arg(long, value_name = "JWT")]
    pub token: Option<String>,
    /// Room policy sent in `join` (`mode`) [default: none sent: the server's room-mode].
    #[arg(long, value_enum)]
    pub mode: Option<JoinMode>,
    /// Most members per room the servers take: a run whose rooms would be larger is
    /// refused [default: 50, tsunagi's max-room-peers; 4 with --mode mesh]. Raise it for
    /// servers configured with more (or on purpose, to see `room-full`).
    #[arg(long, value_name = "N")]
    pub room_limit: Option<usize>,
    /// wss://: accept any certificate (a self-signed one) instead of the system's roots.
    #[arg(long)]
    pub insecure: bool,
    /// Generator threads (the servers need the other cores).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub threads: usize,
    /// PID of a server, to report its CPU and memory from /proc (repeatable, in the
    /// order of --server).
    #[arg(long = "server-pid", value_name = "PID")]
    pub server_pids: Vec<u32>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

impl SignalArgs {
    /// Members of the largest room.
    pub fn room_size(&self) -> usize {
        self.clients.div_ceil(self.rooms.max(1))
    }

    fn room_limit(&self) -> usize {
        self.room_limit.unwrap_or(match self.mode {
            Some(JoinMode::Mesh) => DEFAULT_MESH_MAX_PEERS,
            _ => DEFAULT_MAX_ROOM_PEERS,
        })
    }

    /// Chats per second of each client.
    fn per_client_rate(&self) -> f64 {
        self.chat_rate / self.clients.max(1) as f64
    }

    pub fn validate(&self) -> Result<(), BenchError> {
        if self.servers.is_empty() || self.servers.len() > MAX_SERVERS {
            return err(format!("give 1 to {MAX_SERVERS} --server URLs"));
        }
        for s in &self.servers {
            net::parse_url(s)?;
        }
        if self.clients == 0 || self.clients > MAX_CLIENTS {
            return err(format!("--clients must be in 1..={MAX_CLIENTS}"));
        }
        if self.rooms == 0 || self.rooms > self.clients {
            return err("--rooms must be in 1..=--clients");
        }
        if !(self.join_rate.is_finite() && (0.0..=100_000.0).contains(&self.join_rate)) {
            return err("--join-rate must be in [0, 100000] joins/s (0 = as fast as possible)");
        }
        if self.joins_in_flight == 0 || self.joins_in_flight > MAX_JOINS_IN_FLIGHT {
            return err(format!(
                "--joins-in-flight must be in 1..={MAX_JOINS_IN_FLIGHT}"
            ));
        }
        if !(self.chat_rate.is_finite() && self.chat_rate >= 0.0) {
            return err("--chat-rate must be 0 or more chats/s");
        }
        let per_client = self.per_client_rate();
        if per_client > MAX_CHATS_PER_CLIENT {
            return err(format!(
                "--chat-rate {} over {} clients is {per_client:.1} chats/s per client: the server \
                 allows 50 messages/s per connection (burst 100) and this tool keeps each client \
                 at {MAX_CHATS_PER_CLIENT} or fewer; use a --chat-rate of at most {} or more --clients",
                self.chat_rate,
                self.clients,
                MAX_CHATS_PER_CLIENT * self.clients as f64
            ));
        }
        if !(self.duration > 0.0 && self.duration <= MAX_DURATION_SECS) {
            return err(format!(
                "--duration must be in (0, {MAX_DURATION_SECS}] seconds"
            ));
        }
        if !(0.0..=60.0).contains(&self.warmup) {
            return err("--warmup must be in [0, 60] seconds");
        }
        let (size, limit) = (self.room_size(), self.room_limit());
        if size > limit {
            return err(format!(
                "{} clients in {} rooms make rooms of up to {size} members, more than {limit} \
                 (the server's default {}); use at least {} --rooms, or --room-limit N if the \
                 servers take more",
                self.clients,
                self.rooms,
                if self.mode == Some(JoinMode::Mesh) {
                    "mesh-max-peers, the limit of a mesh room"
                } else {
                    "max-room-peers"
                },
                self.clients.div_ceil(limit)
            ));
        }
        let last_room = format!("{}{}", self.room_prefix, self.rooms - 1);
        if last_room.len() > 64
            || !last_room
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return err("--room-prefix: room names are 1-64 characters of A-Z a-z 0-9 _ -");
        }
        let last_name = format!("{}{}", self.name_prefix, self.clients - 1);
        if last_name.trim() != last_name
            || last_name.chars().count() > 64
            || last_name.chars().any(char::is_control)
        {
            return err(
                "--name-prefix: names are at most 64 characters, without control characters \
                 or leading white space",
            );
        }
        if self.token.as_ref().is_some_and(|t| t.len() > 4096) {
            return err("--token: at most 4096 bytes");
        }
        if self.threads == 0 || self.threads > 8 {
            return err("--threads must be in 1..=8");
        }
        if !self.server_pids.is_empty() && self.server_pids.len() != self.servers.len() {
            return err("give one --server-pid per --server, in the same order (or none)");
        }
        Ok(())
    }

    /// The server of client `i`: member `i / rooms` of room `i % rooms` goes to the
    /// server after that of the member before it. (`i % servers` would put every member
    /// of a room on one server whenever rooms and servers share a factor.)
    pub fn server_of(&self, i: usize) -> usize {
        server_of(i, self.rooms, self.servers.len())
    }
}

/// Client `i`'s server: member `i / rooms` of room `i % rooms` on the server after the
/// previous member's.
pub(crate) fn server_of(i: usize, rooms: usize, servers: usize) -> usize {
    (i % rooms.max(1) + i / rooms.max(1)) % servers.max(1)
}
