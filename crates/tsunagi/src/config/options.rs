//! The option list, declared once ([`Options`]): the command line and `TSUNAGI_*`
//! variables through clap, the TOML file through serde, and how the layers merge.

use super::*;

/// `text` or `json` log lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("'{other}' is not a log format; use text or json")),
        }
    }
}

/// A string that must not appear in logs or `Debug` output (passwords, secrets).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// `PUBLIC[/PRIVATE]`: advertise `PUBLIC` in XOR-RELAYED-ADDRESS for relays bound on
/// `PRIVATE` (or on every relay address of that family).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExternalIp {
    pub public: IpAddr,
    pub private: Option<IpAddr>,
}

impl FromStr for ExternalIp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        const FORM: &str = "expected PUBLIC or PUBLIC/PRIVATE, e.g. 203.0.113.7/10.0.0.5";
        let (public, private) = match s.trim().split_once('/') {
            Some((p, q)) => (p.trim(), Some(q.trim())),
            None => (s.trim(), None),
        };
        let public: IpAddr = public
            .parse()
            .map_err(|_| format!("'{public}' in '{s}' is not an IP address; {FORM}"))?;
        if public.is_unspecified() {
            return Err(format!(
                "'{s}': the public address {public} is unspecified; name the address clients reach"
            ));
        }
        let private = match private {
            None => None,
            Some(q) => {
                let ip: IpAddr = q.parse().map_err(|_| {
                    format!("'{q}' in '{s}' is not an IP address (the part after '/' is the private address, not a prefix length); {FORM}")
                })?;
                if ip.is_ipv4() != public.is_ipv4() {
                    return Err(format!(
                        "'{s}' mixes IPv4 and IPv6; map each family with its own external-ip"
                    ));
                }
                Some(ip)
            }
        };
        Ok(ExternalIp { public, private })
    }
}

impl fmt::Display for ExternalIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.private {
            Some(p) => write!(f, "{}/{}", self.public, p),
            None => write!(f, "{}", self.public),
        }
    }
}

/// Declares [`Options`] and [`Options::or`] from one list of fields: an option is
/// written once, with its flag, its environment variable, its TOML key and its help.
macro_rules! options {
    (
        $(#[$meta:meta])*
        pub struct Options {
            $(
                $(#[$fmeta:meta])*
                pub $field:ident: $ty:ty,
            )*
        }
    ) => {
        $(#[$meta])*
        pub struct Options {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl Options {
            /// Field by field: a value set in `self` wins over one in `lower`. A list set
            /// in `self` replaces the list of `lower` (they are not concatenated).
            pub fn or(self, lower: Options) -> Options {
                Options {
                    $( $field: Layer::over(self.$field, lower.$field), )*
                }
            }
        }
    };
}

/// One layer of configuration over a lower one.
trait Layer {
    fn over(self, lower: Self) -> Self;
}

impl<T> Layer for Option<T> {
    fn over(self, lower: Self) -> Self {
        self.or(lower)
    }
}

impl<T> Layer for Vec<T> {
    fn over(self, lower: Self) -> Self {
        if self.is_empty() {
            lower
        } else {
            self
        }
    }
}

options! {
/// Every option of `serve`, each optional so that the layers can be merged. The same
/// struct is the clap argument set (flags, and `TSUNAGI_<NAME>` environment variables
/// through clap's `env`; lists there are comma-separated) and the TOML schema
/// (kebab-case keys = the long option names).
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Options {
    /// TOML config file (keys are the long option names).
    #[arg(long, short = 'c', value_name = "FILE", env = "TSUNAGI_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Address for STUN/TURN listeners (repeatable) [default: 0.0.0.0 and ::].
    #[arg(long, value_name = "IP", env = "TSUNAGI_LISTENING_IP", value_delimiter = ',')]
    #[serde(default, deserialize_with = "list")]
    pub listening_ip: Vec<IpAddr>,
    /// UDP and TCP port of the listeners [default: 3478].
    #[arg(long, value_name = "N", env = "TSUNAGI_LISTENING_PORT")]
    pub listening_port: Option<u16>,
    /// Do not listen on UDP.
    #[arg(long, value_name = "BOOL", value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true", env = "TSUNAGI_NO_UDP")]
    pub no_udp: Option<bool>,
    /// Second address for RFC 5780 NAT discovery, one per family (repeatable); pairs
    /// with the listening-ip of its family [default: none].
    #[arg(long, value_name = "IP", env = "TSUNAGI_ALT_LISTENING_IP", value_delimiter = ',')]
    #[serde(default, deserialize_with = "list")]
    pub alt_listening_ip: Vec<IpAddr>,
    /// Second UDP port for RFC 5780 NAT discovery; alone it turns on change-port only
    /// [default: listening-port + 1 when alt-listening-ip is set].
    #[arg(long, value_name = "N", env = "TSUNAGI_ALT_LISTENING_PORT")]
    pub alt_listening_port: Option<u16>,
    /// Do not listen on TCP.
    #[arg(long, value_name = "BOOL", value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true", env = "TSUNAGI_NO_TCP")]
    pub no_tcp: Option<bool>,

    /// Address relay sockets bind to (repeatable) [default: the listening IP if
    /// specific, else the host's primary IPv4 or 127.0.0.1, plus its primary IPv6].
    #[arg(long, value_name = "IP", env = "TSUNAGI_RELAY_IP", value_delimiter = ',')]
    #[serde(default, deserialize_with = "list")]
    pub relay_ip: Vec<IpAddr>,
    /// Advertise PUBLIC in XOR-RELAYED-ADDRESS for relays on PRIVATE (repeatable).
    #[arg(long, value_name = "PUBLIC[/PRIVATE]", env = "TSUNAGI_EXTERNAL_IP", value_delimiter = ',')]
    #[serde(default, deserialize_with = "list_from_str")]
    pub external_ip: Vec<ExternalIp>,
    /// Lowest relay port [default: 49152].
    #[arg(long, value_name = "N", env = "TSUNAGI_MIN_PORT")]
    pub min_port: Option<u16>,
    /// Highest relay port [default: 65535].
    #[arg(long, value_name = "N", env = "TSUNAGI_MAX_PORT")]
    pub max_port: Option<u16>,

    /// Long-term credential realm [default: tsunagi].
    #[arg(long, value_name = "S", env = "TSUNAGI_REALM")]
    pub realm: Option<String>,
    /// Static user NAME:PASSWORD or NAME:0xMD5KEY (repeatable).
    #[arg(long, value_name = "NAME:PASSWORD", env = "TSUNAGI_USER", value_delimiter = ',')]
    #[serde(default, deserialize_with = "list")]
    pub user: Vec<Secret>,
    /// TURN REST API shared secret (repeatable, for rotation).
    #[arg(long, value_name = "S", env = "TSUNAGI_STATIC_AUTH_SECRET", value_delimiter = ',')]
    #[serde(default, deserialize_with = "list")]
    pub static_auth_secret: Vec<Secret>,

    /// Peer addresses always allowed: IP, CIDR or A-B range (repeatable).
    #[arg(long, value_name = "RANGE", env = "TSUNAGI_ALLOWED_PEER_IP", value_delimiter = ',')]
    #[serde(default, deserialize_with = "list_from_str")]
    pub allowed_peer_ip: Vec<IpRange>,
    /// Peer addresses refused: IP, CIDR or A-B range (repeatable).
    #[arg(long, value_name = "RANGE", env = "TSUNAGI_DENIED_PEER_IP", value_delimiter = ',')]
    #[serde(default, deserialize_with = "list_from_str")]
    pub denied_peer_ip: Vec<IpRange>,
    /// Permit loopback peers (127.0.0.0/8, ::1).
    #[arg(long, value_name = "BOOL", value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true", env = "TSUNAGI_ALLOW_LOOPBACK_PEERS")]
    pub allow_loopback_peers: Option<bool>,

    /// Allocations per username, counted over every TURN worker and (with redis) every
    /// node of the cluster; 0 = unlimited [default: 0].
    #[arg(long, value_name = "N", env = "TSUNAGI_USER_QUOTA")]
    pub user_quota: Option<u32>,
    /// Allocations in total, counted over every TURN worker and (with redis) every node
    /// of the cluster; 0 = unlimited [default: 0].
    #[arg(long, value_name = "N", env = "TSUNAGI_TOTAL_QUOTA")]
    pub total_quota: Option<u32>,
    /// Relay bandwidth per allocation in bits/s, each direction; 0 = unlimited [default: 0].
    #[arg(long, value_name = "N", env = "TSUNAGI_MAX_BPS")]
    pub max_bps: Option<u64>,
    /// Permissions per allocation [default: 128].
    #[arg(long, value_name = "N", env = "TSUNAGI_MAX_PERMISSIONS")]
    pub max_permissions: Option<u32>,
    /// Channels per allocation [default: 128].
    #[arg(long, value_name = "N", env = "TSUNAGI_MAX_CHANNELS")]
    pub max_channels: Option<u32>,

    /// Nonce lifetime in seconds [default: 600].
    #[arg(long, value_name = "SECS", env = "TSUNAGI_STALE_NONCE")]
    pub stale_nonce: Option<u64>,
    /// Longest allocation lifetime in seconds [default: 3600].
    #[arg(long, value_name = "SECS", env = "TSUNAGI_MAX_ALLOCATE_LIFETIME")]
    pub max_allocate_lifetime: Option<u64>,
    /// Allocation lifetime when the client asks for less, in seconds [default: 600].
    #[arg(long, value_name = "SECS", env = "TSUNAGI_DEFAULT_ALLOCATE_LIFETIME")]
    pub default_allocate_lifetime: Option<u64>,
    /// Permission lifetime in seconds [default: 300].
    #[arg(long, value_name = "SECS", env = "TSUNAGI_PERMISSION_LIFETIME")]
    pub permission_lifetime: Option<u64>,
    /// Channel binding lifetime in seconds [default: 600].
    #[arg(long, value_name = "SECS", env = "TSUNAGI_CHANNEL_LIFETIME")]
    pub channel_lifetime: Option<u64>,

    /// Concurrent TCP client connections [default: 10000].
    #[arg(long, value_name = "N", env = "TSUNAGI_MAX_TCP_CONNECTIONS")]
    pub max_tcp_connections: Option<usize>,
    /// STUN/TURN worker threads, each with its own share of the clients (SO_REUSEPORT
    /// UDP listeners; the kernel keeps each client on one worker); 0: one per CPU
    /// this process may use [default: 1].
    #[arg(long, value_name = "N", env = "TSUNAGI_TURN_WORKERS")]
    pub turn_workers: Option<usize>,
    /// SOFTWARE attribute [default: tsunagi/<version>].
    #[arg(long, value_name = "S", conflicts_with = "no_software", env = "TSUNAGI_SOFTWARE")]
    pub software: Option<String>,
    /// Send no SOFTWARE attribute.
    #[arg(long, value_name = "BOOL", value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true", env = "TSUNAGI_NO_SOFTWARE")]
    pub no_software: Option<bool>,

    /// Tracing filter, e.g. info or tsunagi=debug [default: info; RUST_LOG is used when unset].
    #[arg(long, value_name = "L", env = "TSUNAGI_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Log line format [default: text].
    #[arg(long, value_name = "FORMAT", ignore_case = true, env = "TSUNAGI_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Replace client IPs and usernames in logs by short stable hashes.
    #[arg(long, value_name = "BOOL", value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true", env = "TSUNAGI_REDACT_LOGS")]
    pub redact_logs: Option<bool>,

    /// Address of the HTTP(S) server: web client, /ws, /api/stats, /metrics
    /// (repeatable) [default: 0.0.0.0 and ::].
    #[arg(long, value_name = "IP", env = "TSUNAGI_HTTP_IP", value_delimiter = ',')]
    #[serde(default, deserialize_with = "list")]
    pub http_ip: Vec<IpAddr>,
    /// Port of the HTTP(S) server [default: 8080].
    #[arg(long, value_name = "N", env = "TSUNAGI_HTTP_PORT")]
    pub http_port: Option<u16>,
    /// Concurrent HTTP connections, WebSockets included [default: 10000].
    #[arg(long, value_name = "N", env = "TSUNAGI_HTTP_MAX_CONNECTIONS")]
    pub http_max_connections: Option<usize>,
    /// PEM certificate chain (leaf first) for HTTPS/WSS and TURN over TLS, read again
    /// when the file changes or on SIGHUP [default: a self-signed certificate kept in
    /// data-dir].
    #[arg(long, value_name = "FILE", env = "TSUNAGI_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of tls-cert.
    #[arg(long, value_name = "FILE", env = "TSUNAGI_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Use the self-signed certificate for TURN over TLS too (it always serves HTTPS
    /// unless tls-cert, acme-domain or no-tls is set); logs its fingerprint.
    #[arg(long, value_name = "BOOL", value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true", env = "TSUNAGI_TLS_SELF_SIGNED")]
    pub tls_self_signed: Option<bool>,
    /// DNS name of this server to get a certificate for from an ACME CA (Let's Encrypt
    /// by default), for HTTPS/WSS and TURN over TLS; repeatable, one certificate
    /// covers every name. Kept in data-dir and renewed while tsunagi runs.
    #[arg(long, value_name = "NAME", env = "TSUNAGI_ACME_DOMAIN", value_delimiter = ',')]
    #[serde(default, deserialize_with = "list")]
    pub acme_domain: Vec<String>,
    /// Contact email of the ACME account, for the CA's notices [default: none].
    #[arg(long, value_name = "ADDRESS", env = "TSUNAGI_ACME_EMAIL")]
    pub acme_email: Option<String>,
    /// Directory URL of the ACME CA [default:
    /// https://acme-v02.api.letsencrypt.org/directory, Let's Encrypt].
    #[arg(long, value_name = "URL", env = "TSUNAGI_ACME_DIRECTORY")]
    pub acme_directory: Option<String>,
    /// PEM root certificate(s) to trust for the ACME CA's HTTPS instead of the
    /// system's (a private CA such as step-ca) [default: the system's roots].
    #[arg(long, value_name = "FILE", env = "TSUNAGI_ACME_CA_ROOT")]
    pub acme_ca_root: Option<PathBuf>,
    /// How the CA checks each acme-domain: tls-alpn-01 (a TLS handshake on port 443)
    /// or http-01 (plain HTTP on port 80) [default: tls-alpn-01].
    #[arg(long, value_name = "TYPE", ignore_case = true, env = "TSUNAGI_ACME_CHALLENGE")]
    pub acme_challenge: Option<AcmeChallenge>,
    /// Directory for what tsunagi makes once and keeps (the self-signed certificate,
    /// the ACME account and certificate) [default: $STATE_DIRECTORY, else
    /// $XDG_STATE_HOME/tsunagi, else ~/.local/state/tsunagi].
    #[arg(long, value_name = "DIR", env = "TSUNAGI_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// TCP port of TURN over TLS (turns:), when TLS is on; the same as http-port
    /// serves HTTPS and TURN on one port [default: 5349].
    #[arg(long, value_name = "N", env = "TSUNAGI_TLS_LISTENING_PORT")]
    pub tls_listening_port: Option<u16>,
    /// No TLS at all: plain HTTP on http-port (browsers on other devices then get no
    /// camera), no TURN over TLS.
    #[arg(long, value_name = "BOOL", value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true", env = "TSUNAGI_NO_TLS")]
    pub no_tls: Option<bool>,

    /// Load balancers or proxies whose TCP and TLS connections begin with a PROXY
    /// protocol header (v1 or v2) naming the client: IP, CIDR or A-B range (repeatable)
    /// [default: none].
    #[arg(long, value_name = "RANGE", env = "TSUNAGI_PROXY_PROTOCOL_IP", value_delimiter = ',')]
    #[serde(default, deserialize_with = "list_from_str")]
    pub proxy_protocol_ip: Vec<IpRange>,
    /// HTTP proxies whose X-Forwarded-For names the client: IP, CIDR or A-B range
    /// (repeatable) [default: none].
    #[arg(long, value_name = "RANGE", env = "TSUNAGI_TRUSTED_PROXY_IP", value_delimiter = ',')]
    #[serde(default, deserialize_with = "list_from_str")]
    pub trusted_proxy_ip: Vec<IpRange>,

    /// Secret of signaling access tokens (HS256); with it, join needs a token.
    #[arg(long, value_name = "S", env = "TSUNAGI_TOKEN_SECRET")]
    pub token_secret: Option<Secret>,
    /// Host name or IP browsers use for STUN/TURN in the ICE servers of welcome
    /// [default: the first external-ip, else the host the page was loaded from].
    #[arg(long, value_name = "HOST", env = "TSUNAGI_PUBLIC_HOST")]
    pub public_host: Option<String>,
    /// Peers per signaling room that may run as SFU (auto and sfu rooms) [default: 50].
    #[arg(long, value_name = "N", env = "TSUNAGI_MAX_ROOM_PEERS")]
    pub max_room_peers: Option<u32>,
    /// Peers per mesh room: auto rooms switch to SFU past it, mesh rooms are full at it
    /// [default: 4].
    #[arg(long, value_name = "N", env = "TSUNAGI_MESH_MAX_PEERS")]
    pub mesh_max_peers: Option<u32>,
    /// Policy of new rooms: auto (mesh while small, SFU past mesh-max-peers), mesh or
    /// sfu; a room's first join may choose [default: auto].
    #[arg(long, value_name = "MODE", env = "TSUNAGI_ROOM_MODE")]
    pub room_mode: Option<RoomMode>,
    /// Run no SFU: every room is mesh, up to mesh-max-peers.
    #[arg(long, value_name = "BOOL", value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true", env = "TSUNAGI_NO_SFU")]
    pub no_sfu: Option<bool>,
    /// UDP port of the SFU (one port for every SFU peer, on each relay-ip; ICE-TCP
    /// listens on the same TCP port number) [default: 7882].
    #[arg(long, value_name = "N", env = "TSUNAGI_SFU_PORT")]
    pub sfu_port: Option<u16>,
    /// No ICE-TCP for the SFU (UDP only).
    #[arg(long, value_name = "BOOL", value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true", env = "TSUNAGI_NO_SFU_TCP")]
    pub no_sfu_tcp: Option<bool>,
    /// The SFU forwards RTP packets as they come, one shared payload for every subscriber
    /// [default: true]; false: whole frames, depacketized and packetized again per
    /// subscriber.
    #[arg(long, value_name = "BOOL", value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true", env = "TSUNAGI_SFU_RTP_MODE")]
    pub sfu_rtp_mode: Option<bool>,
    /// Signaling rooms at once [default: 10000].
    #[arg(long, value_name = "N", env = "TSUNAGI_MAX_ROOMS")]
    pub max_rooms: Option<usize>,
    /// Largest signaling message in bytes [default: 65536].
    #[arg(long, value_name = "N", env = "TSUNAGI_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Signaling messages per second per connection (burst twice that); 0 = unlimited [default: 50].
    #[arg(long, value_name = "N", env = "TSUNAGI_MESSAGES_PER_SECOND")]
    pub messages_per_second: Option<u32>,
    /// Seconds a dropped signaling peer can resume its session [default: 15].
    #[arg(long, value_name = "SECS", env = "TSUNAGI_RESUME_GRACE")]
    pub resume_grace: Option<u64>,
    /// Lifetime of the TURN credentials handed out in welcome, in seconds [default: 86400].
    #[arg(long, value_name = "SECS", env = "TSUNAGI_TURN_CREDENTIAL_TTL")]
    pub turn_credential_ttl: Option<u64>,

    /// Join a cluster of tsunagi nodes through this Redis:
    /// redis://[:PASSWORD@]HOST:PORT/DB, or rediss:// for TLS [default: none, one node].
    #[arg(long, value_name = "URL", env = "TSUNAGI_REDIS")]
    pub redis: Option<Secret>,
    /// This node's name in the cluster: letters, digits, '-', '_', '.' [default: the
    /// host name].
    #[arg(long, value_name = "NAME", env = "TSUNAGI_NODE_NAME")]
    pub node_name: Option<String>,
    /// Signaling URL of this node (wss://HOST:PORT/ws) that other nodes may send
    /// clients to when they drain [default: none].
    #[arg(long, value_name = "URL", env = "TSUNAGI_CLUSTER_URL")]
    pub cluster_url: Option<String>,
    /// Seconds a draining node (SIGTERM, POST /api/drain) waits for its rooms to move
    /// before it exits [default: 60].
    #[arg(long, value_name = "SECS", env = "TSUNAGI_DRAIN_TIMEOUT")]
    pub drain_timeout: Option<u64>,
}
}

/// Accepts a single value or an array in TOML.
pub(super) fn list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        One(T),
        Many(Vec<T>),
    }
    Ok(match OneOrMany::<T>::deserialize(d)? {
        OneOrMany::One(x) => vec![x],
        OneOrMany::Many(v) => v,
    })
}

/// A string or an array of strings, each parsed with `FromStr`.
pub(super) fn list_from_str<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = String>,
{
    list::<D, String>(d)?
        .iter()
        .map(|s| s.parse::<T>().map_err(de::Error::custom))
        .collect()
}

impl Options {
    /// Options from the text of a TOML file; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Options, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError(format!("{origin}: {e}")))
    }

    /// Reads and parses a TOML file.
    pub fn from_file(path: &Path) -> Result<Options, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(format!(
                "cannot read config file {}: {e}; check the --config path",
                path.display()
            ))
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }
}

/// The environment variable of every option of `serve`, from the clap definition.
pub fn env_names() -> Vec<String> {
    Options::augment_args(clap::Command::new("serve"))
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect()
}

/// `TSUNAGI_*` variables that name no option (typos), for a warning at start.
pub fn unknown_env_vars(vars: impl IntoIterator<Item = String>) -> Vec<String> {
    let known = env_names();
    vars.into_iter()
        .filter(|k| {
            // DEBUG_FAULT: the fault hook of debug builds (crate::supervise).
            k.starts_with(ENV_PREFIX) && !known.contains(k) && k.as_str() != "TSUNAGI_DEBUG_FAULT"
        })
        .collect()
}
