//! One configuration story (DESIGN practice 16): every option comes from the command
//! line, from `TSUNAGI_<NAME>` environment variables or from a TOML file, in that order
//! of precedence, and falls back to a default. The names are coturn's where the concept
//! is coturn's; `docs/configuration.md` documents each one.
//!
//! Each option is declared once, in [`Options`]: its flag, its variable (clap's `env`)
//! and its TOML key. clap reads the command line and the environment into one
//! `Options` (every field optional); the file's `Options` goes under it field by field
//! ([`Options::or`]), and the result is resolved and validated once into a
//! [`Config`]. Every validation error names the option and says what to write instead;
//! the binary exits with status 2 on any of them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use serde::de::{self, Deserializer};
use serde::Deserialize;
use tsunagi_signal::RoomMode;
use tsunagi_turn::auth::Credentials;
use tsunagi_turn::policy::{IpRange, PeerPolicy};
use tsunagi_turn::{DiscoveryAddresses, ServerConfig};

/// Prefix of every environment variable.
pub const ENV_PREFIX: &str = "TSUNAGI_";

/// `tsunagi [OPTIONS]` is `tsunagi serve [OPTIONS]`.
#[derive(Debug, Parser)]
#[command(
    name = "tsunagi",
    version,
    about = "Self-hosted WebRTC server: STUN/TURN (a drop-in for coturn)",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub options: Options,
}

// Parsed once at start; boxing `Options` would only complicate every use.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the STUN/TURN server (what `tsunagi` with no subcommand does).
    Serve(Options),
    /// Print a signaling access token (an HS256 JWT signed with token-secret).
    Token(crate::token::TokenArgs),
    /// Find out what kind of NAT this host is behind (RFC 5780) and what it means for WebRTC.
    Nat(crate::nat::NatArgs),
}

impl Cli {
    /// The options of `serve`, whether or not the subcommand was named.
    pub fn into_serve_options(self) -> Options {
        match self.command {
            Some(Command::Serve(o)) => o,
            Some(Command::Token(_) | Command::Nat(_)) | None => self.options,
        }
    }
}

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

    /// Allocations per username; 0 = unlimited [default: 0].
    #[arg(long, value_name = "N", env = "TSUNAGI_USER_QUOTA")]
    pub user_quota: Option<u32>,
    /// Allocations in total; 0 = unlimited [default: 0].
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
    /// PEM certificate chain (leaf first): enables HTTPS/WSS and TURN over TLS.
    #[arg(long, value_name = "FILE", env = "TSUNAGI_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of tls-cert.
    #[arg(long, value_name = "FILE", env = "TSUNAGI_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Generate a self-signed certificate at start (LAN testing); logs its fingerprint.
    #[arg(long, value_name = "BOOL", value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true, default_missing_value = "true", env = "TSUNAGI_TLS_SELF_SIGNED")]
    pub tls_self_signed: Option<bool>,
    /// TCP port of TURN over TLS (turns:), when TLS is on [default: 5349].
    #[arg(long, value_name = "N", env = "TSUNAGI_TLS_LISTENING_PORT")]
    pub tls_listening_port: Option<u16>,

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
}
}

/// Accepts a single value or an array in TOML.
fn list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
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
fn list_from_str<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = String>,
{
    list::<D, String>(d)?
        .iter()
        .map(|s| s.parse::<T>().map_err(de::Error::custom))
        .collect()
}

/// A configuration error: what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
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

/// For an invalid value that came from a `TSUNAGI_*` variable, which variable: clap's
/// message names only the option (`invalid value 'abc' for '--min-port <N>'`).
pub fn env_source_of(e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue};
    let (Some(ContextValue::String(arg)), Some(ContextValue::String(value))) = (
        e.get(ContextKind::InvalidArg),
        e.get(ContextKind::InvalidValue),
    ) else {
        return None;
    };
    let long = arg.strip_prefix("--")?.split(['[', ' ', '=']).next()?;
    let cmd = Cli::command();
    let var = cmd
        .get_arguments()
        .find(|a| a.get_long() == Some(long))?
        .get_env()?
        .to_str()?
        .to_owned();
    let set = std::env::var(&var).ok()?;
    // The variable's value, or one item of its list.
    (set == *value || set.split(',').any(|item| item == value))
        .then(|| format!("the value comes from the environment variable {var}"))
}

/// Removes `TSUNAGI_*` variables that are set but blank: an empty variable counts as
/// unset (`TSUNAGI_REALM=` in a compose file). Call it before parsing the command line,
/// while the process has one thread.
pub fn unset_blank_env() {
    let blank: Vec<_> = std::env::vars_os()
        .filter(|(k, v)| {
            k.to_str().is_some_and(|k| k.starts_with(ENV_PREFIX))
                && v.to_str().is_some_and(|v| v.trim().is_empty())
        })
        .map(|(k, _)| k)
        .collect();
    for k in blank {
        std::env::remove_var(k);
    }
}

/// Defaults (see `docs/configuration.md`).
pub mod defaults {
    pub const LISTENING_PORT: u16 = 3478;
    pub const MIN_PORT: u16 = 49152;
    pub const MAX_PORT: u16 = 65535;
    pub const REALM: &str = "tsunagi";
    pub const MAX_PERMISSIONS: u32 = 128;
    pub const MAX_CHANNELS: u32 = 128;
    pub const STALE_NONCE: u64 = 600;
    pub const MAX_ALLOCATE_LIFETIME: u64 = 3600;
    pub const DEFAULT_ALLOCATE_LIFETIME: u64 = 600;
    pub const PERMISSION_LIFETIME: u64 = 300;
    pub const CHANNEL_LIFETIME: u64 = 600;
    pub const MAX_TCP_CONNECTIONS: usize = 10_000;
    pub const LOG_LEVEL: &str = "info";
    pub const SOFTWARE: &str = concat!("tsunagi/", env!("CARGO_PKG_VERSION"));
    pub const HTTP_PORT: u16 = 8080;
    pub const SFU_PORT: u16 = 7882;
    pub const HTTP_MAX_CONNECTIONS: usize = 10_000;
    pub const TLS_LISTENING_PORT: u16 = 5349;
    pub const MAX_ROOM_PEERS: u32 = 50;
    pub const MESH_MAX_PEERS: u32 = 4;
    pub const MAX_ROOMS: usize = 10_000;
    pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
    pub const MESSAGES_PER_SECOND: u32 = 50;
    pub const RESUME_GRACE: u64 = 15;
    pub const TURN_CREDENTIAL_TTL: u64 = 86_400;
}

/// Where the TLS certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// `tls-cert` and `tls-key`: PEM files, read at start.
    Files { cert: PathBuf, key: PathBuf },
    /// `tls-self-signed`: generated at start.
    SelfSigned,
}

/// Channel numbers 0x4000..=0x4FFF (RFC 8656 §12).
const MAX_CHANNELS_LIMIT: u32 = 4096;
/// RFC 8489 §14.9/§14.14: REALM and SOFTWARE are at most 763 bytes.
const MAX_TEXT_BYTES: usize = 763;

/// The validated configuration of `serve`.
#[derive(Debug, Clone)]
pub struct Config {
    pub listening_ips: Vec<IpAddr>,
    /// Whether `listening_ips` is the default (`0.0.0.0` and `::`): then a host without
    /// IPv6 skips `::` instead of failing.
    pub listening_ips_default: bool,
    pub listening_port: u16,
    pub udp: bool,
    pub tcp: bool,
    /// RFC 5780 NAT discovery groups (`alt-listening-ip`, `alt-listening-port`); empty
    /// when both are unset.
    pub discovery: Vec<DiscoveryAddresses>,
    /// Addresses relay sockets bind to: specific, de-duplicated, at least one.
    pub relay_ips: Vec<IpAddr>,
    /// Whether `relay_ips` was chosen automatically.
    pub relay_ips_auto: bool,
    pub external_ips: Vec<ExternalIp>,
    pub min_port: u16,
    pub max_port: u16,
    pub realm: String,
    /// Static users and REST secrets (`Debug` shows counts only).
    pub credentials: Credentials,
    pub peer_policy: PeerPolicy,
    pub user_quota: u32,
    pub total_quota: u32,
    pub max_bps: u64,
    pub max_permissions: u32,
    pub max_channels: u32,
    pub stale_nonce: Duration,
    pub max_allocate_lifetime: Duration,
    pub default_allocate_lifetime: Duration,
    pub permission_lifetime: Duration,
    pub channel_lifetime: Duration,
    pub max_tcp_connections: usize,
    /// STUN/TURN worker threads (resolved: at least 1).
    pub turn_workers: usize,
    pub software: Option<String>,
    pub log_level: String,
    pub log_format: LogFormat,
    pub redact_logs: bool,
    /// Addresses of the HTTP(S) server.
    pub http_ips: Vec<IpAddr>,
    /// Whether `http_ips` is the default (`0.0.0.0` and `::`; `::` is skipped on a
    /// host without IPv6).
    pub http_ips_default: bool,
    pub http_port: u16,
    /// UDP (and ICE-TCP) port of the SFU on each relay IP.
    pub sfu_port: u16,
    /// Whether the SFU offers ICE-TCP candidates.
    pub sfu_tcp: bool,
    pub http_max_connections: usize,
    /// `None`: plain HTTP and no TURN over TLS.
    pub tls: Option<TlsSource>,
    pub tls_listening_port: u16,
    /// Signaling (see `crate::signaling`).
    pub signaling: SignalingConfig,
}

/// The validated signaling options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalingConfig {
    /// With a secret, `join` needs an HS256 access token signed with it.
    pub token_secret: Option<Secret>,
    /// Host (name, IPv4 or bracketed IPv6) for STUN/TURN URLs, if configured.
    pub public_host: Option<String>,
    /// Peers per room that may run as SFU (`auto` and `sfu` rooms).
    pub max_room_peers: u32,
    /// Peers per mesh room (see `docs/sfu.md`).
    pub mesh_max_peers: u32,
    /// Policy of rooms whose first join names none.
    pub room_mode: RoomMode,
    /// Whether rooms may run as SFU (false with `no-sfu`).
    pub sfu: bool,
    pub max_rooms: usize,
    pub max_message_bytes: usize,
    pub messages_per_second: u32,
    pub resume_grace: Duration,
    pub turn_credential_ttl: Duration,
}

impl SignalingConfig {
    fn resolve(o: &Options) -> Result<SignalingConfig, ConfigError> {
        fn range<T: PartialOrd + fmt::Display + Copy>(
            name: &str,
            v: Option<T>,
            default: T,
            lo: T,
            hi: T,
        ) -> Result<T, ConfigError> {
            let v = v.unwrap_or(default);
            if v < lo || v > hi {
                return err(format!(
                    "{name} {v} is out of range; use {lo} to {hi} (default {default})"
                ));
            }
            Ok(v)
        }
        let token_secret = match &o.token_secret {
            Some(s) if s.0.chars().count() < 16 => {
                return err("token-secret is shorter than 16 characters; use a long random string, e.g. from `openssl rand -hex 32`");
            }
            other => other.clone(),
        };
        let public_host = match o.public_host.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(h) => Some(public_host(h)?),
        };
        let max_room_peers = range(
            "max-room-peers",
            o.max_room_peers,
            defaults::MAX_ROOM_PEERS,
            1,
            1000,
        )?;
        let mesh_max_peers = range(
            "mesh-max-peers",
            o.mesh_max_peers,
            defaults::MESH_MAX_PEERS,
            1,
            32,
        )?;
        if max_room_peers < mesh_max_peers {
            return err(format!(
                "max-room-peers {max_room_peers} is less than mesh-max-peers {mesh_max_peers}; \
                 max-room-peers is the limit of rooms that may run as SFU, so set it at least \
                 as high (or lower mesh-max-peers)"
            ));
        }
        Ok(SignalingConfig {
            token_secret,
            public_host,
            max_room_peers,
            mesh_max_peers,
            room_mode: o.room_mode.unwrap_or_default(),
            sfu: !o.no_sfu.unwrap_or(false),
            max_rooms: range("max-rooms", o.max_rooms, defaults::MAX_ROOMS, 1, 1_000_000)?,
            max_message_bytes: range(
                "max-message-bytes",
                o.max_message_bytes,
                defaults::MAX_MESSAGE_BYTES,
                1024,
                1024 * 1024,
            )?,
            messages_per_second: range(
                "messages-per-second",
                o.messages_per_second,
                defaults::MESSAGES_PER_SECOND,
                0,
                10_000,
            )?,
            resume_grace: Duration::from_secs(range(
                "resume-grace",
                o.resume_grace,
                defaults::RESUME_GRACE,
                0,
                3600,
            )?),
            turn_credential_ttl: Duration::from_secs(range(
                "turn-credential-ttl",
                o.turn_credential_ttl,
                defaults::TURN_CREDENTIAL_TTL,
                60,
                7 * 86_400,
            )?),
        })
    }
}

/// A DNS name or an IP address, as it goes into `stun:HOST:PORT` (IPv6 bracketed).
fn public_host(h: &str) -> Result<String, ConfigError> {
    let bare = h
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(h);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        });
    }
    let name_ok = h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !name_ok {
        return err(format!(
            "public-host '{h}' is not a host name or IP address; write e.g. turn.example.org or 203.0.113.7 (no scheme, no port)"
        ));
    }
    Ok(h.to_ascii_lowercase())
}

/// The host's primary addresses, as a route lookup finds them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrimaryIps {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

impl PrimaryIps {
    /// The source addresses the kernel would use for the default routes. `connect` on
    /// a UDP socket only looks the route up; no packet is sent. The targets are
    /// documentation addresses (RFC 5737, RFC 3849), which follow the default route.
    pub fn detect() -> Self {
        fn source(bind: &str, target: &str) -> Option<IpAddr> {
            let s = UdpSocket::bind(bind).ok()?;
            s.connect(target).ok()?;
            s.local_addr().ok().map(|a| a.ip())
        }
        let v4 = match source("0.0.0.0:0", "192.0.2.1:9") {
            Some(IpAddr::V4(ip)) if !ip.is_unspecified() && !ip.is_loopback() => Some(ip),
            _ => None,
        };
        let v6 = match source("[::]:0", "[2001:db8::1]:9") {
            Some(IpAddr::V6(ip))
                if !ip.is_unspecified()
                    && !ip.is_loopback()
                    // Link-local (fe80::/10) is useless as a relay address.
                    && (ip.segments()[0] & 0xffc0) != 0xfe80 =>
            {
                Some(ip)
            }
            _ => None,
        };
        PrimaryIps { v4, v6 }
    }
}

/// The automatic relay addresses: the specific listening IPs; for a wildcard IPv4
/// listener (or none) the primary IPv4, else 127.0.0.1; for a wildcard IPv6 listener
/// (or none) the primary IPv6 if there is one.
pub fn auto_relay_ips(listening: &[IpAddr], primary: PrimaryIps) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = listening
        .iter()
        .copied()
        .filter(|ip| !ip.is_unspecified())
        .collect();
    let wild_v4 = listening.is_empty() || listening.contains(&IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let wild_v6 = listening.is_empty() || listening.contains(&IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    if wild_v4 && !out.iter().any(IpAddr::is_ipv4) {
        out.push(IpAddr::V4(primary.v4.unwrap_or(Ipv4Addr::LOCALHOST)));
    }
    if wild_v6 && !out.iter().any(IpAddr::is_ipv6) {
        if let Some(v6) = primary.v6 {
            out.push(IpAddr::V6(v6));
        }
    }
    dedup(&mut out);
    out
}

fn dedup<T: PartialEq + Copy>(v: &mut Vec<T>) {
    let mut seen: Vec<T> = Vec::with_capacity(v.len());
    v.retain(|x| {
        if seen.contains(x) {
            false
        } else {
            seen.push(*x);
            true
        }
    });
}

impl Config {
    /// Reads the config file named by `cli` (`--config` or `TSUNAGI_CONFIG`) under the
    /// options of the command line and the environment (clap read both into `cli`) and
    /// resolves everything. Also returns the unknown `TSUNAGI_*` variables.
    pub fn load(cli: Options) -> Result<(Config, Vec<String>), ConfigError> {
        let unknown = unknown_env_vars(std::env::vars().map(|(k, _)| k));
        let file = match cli.config.as_ref() {
            Some(path) => Options::from_file(path)?,
            None => Options::default(),
        };
        let rust_log = std::env::var("RUST_LOG")
            .ok()
            .filter(|s| !s.trim().is_empty());
        let cfg = Self::resolve(cli.or(file), rust_log, PrimaryIps::detect)?;
        Ok((cfg, unknown))
    }

    /// Applies defaults to merged options and validates them. `rust_log` is the
    /// fallback log filter; `primary` is asked only when relay addresses are automatic.
    pub fn resolve(
        o: Options,
        rust_log: Option<String>,
        primary: impl FnOnce() -> PrimaryIps,
    ) -> Result<Config, ConfigError> {
        let signaling = SignalingConfig::resolve(&o)?;
        let udp = !o.no_udp.unwrap_or(false);
        let tcp = !o.no_tcp.unwrap_or(false);
        if !udp && !tcp {
            return err("no-udp and no-tcp are both set: nothing would listen; drop one of them");
        }

        let listening_ips_default = o.listening_ip.is_empty();
        let mut listening_ips = if listening_ips_default {
            vec![
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ]
        } else {
            o.listening_ip
        };
        dedup(&mut listening_ips);
        let listening_port = o.listening_port.unwrap_or(defaults::LISTENING_PORT);
        let discovery = resolve_discovery(
            &listening_ips,
            listening_port,
            &o.alt_listening_ip,
            o.alt_listening_port,
            udp,
        )?;

        let min_port = o.min_port.unwrap_or(defaults::MIN_PORT);
        let max_port = o.max_port.unwrap_or(defaults::MAX_PORT);
        if min_port == 0 {
            return err("min-port is 0; relay ports start at 1 or above (49152 by default)");
        }
        if min_port > max_port {
            return err(format!(
                "min-port {min_port} is above max-port {max_port}; the relay range is min-port..=max-port, so set min-port <= max-port"
            ));
        }

        let (relay_ips, relay_ips_auto) = if o.relay_ip.is_empty() {
            (auto_relay_ips(&listening_ips, primary()), true)
        } else {
            let mut r = o.relay_ip;
            dedup(&mut r);
            (r, false)
        };
        if let Some(ip) = relay_ips.iter().find(|ip| ip.is_unspecified()) {
            return err(format!(
                "relay-ip {ip} is a wildcard address; relay sockets need the specific address peers reach (use external-ip for a public address behind NAT)"
            ));
        }
        for e in &o.external_ip {
            if let Some(p) = e.private {
                if !relay_ips.contains(&p) {
                    return err(format!(
                        "external-ip {e}: {p} is not a relay address (relay addresses: {}); set relay-ip {p} or fix the private part",
                        join(&relay_ips)
                    ));
                }
            }
        }

        let realm = o.realm.unwrap_or_else(|| defaults::REALM.to_owned());
        if realm.is_empty() || realm.len() > MAX_TEXT_BYTES {
            return err(format!(
                "realm must be 1 to {MAX_TEXT_BYTES} bytes long; it is {} bytes",
                realm.len()
            ));
        }

        let mut credentials = Credentials::default();
        for (i, u) in o.user.iter().enumerate() {
            credentials
                .add_user_spec(&u.0)
                .map_err(|e| ConfigError(format!("user #{}: {e}", i + 1)))?;
        }
        for s in &o.static_auth_secret {
            credentials
                .add_secret(&s.0)
                .map_err(|e| ConfigError(format!("static-auth-secret: {e}")))?;
        }

        let peer_policy = PeerPolicy {
            allowed: o.allowed_peer_ip,
            denied: o.denied_peer_ip,
            allow_loopback: o.allow_loopback_peers.unwrap_or(false),
            // The SFU's own addresses are added when it binds (main.rs).
            allowed_endpoints: Vec::new(),
        };

        let max_permissions = o.max_permissions.unwrap_or(defaults::MAX_PERMISSIONS);
        if max_permissions == 0 {
            return err(
                "max-permissions is 0: no peer could be reached; use 1 or more (default 128)",
            );
        }
        let max_channels = o.max_channels.unwrap_or(defaults::MAX_CHANNELS);
        if max_channels > MAX_CHANNELS_LIMIT {
            return err(format!(
                "max-channels {max_channels} is above {MAX_CHANNELS_LIMIT}, the number of TURN channel numbers; use at most {MAX_CHANNELS_LIMIT}"
            ));
        }

        let secs = |name: &str, v: Option<u64>, default: u64| -> Result<Duration, ConfigError> {
            let v = v.unwrap_or(default);
            if v == 0 {
                return err(format!(
                    "{name} is 0 seconds; use a positive number of seconds (default {default})"
                ));
            }
            if v > u64::from(u32::MAX) {
                return err(format!(
                    "{name} {v} is too large; use at most {} seconds",
                    u32::MAX
                ));
            }
            Ok(Duration::from_secs(v))
        };
        let stale_nonce = secs("stale-nonce", o.stale_nonce, defaults::STALE_NONCE)?;
        let max_allocate_lifetime = secs(
            "max-allocate-lifetime",
            o.max_allocate_lifetime,
            defaults::MAX_ALLOCATE_LIFETIME,
        )?;
        let default_allocate_lifetime = secs(
            "default-allocate-lifetime",
            o.default_allocate_lifetime,
            defaults::DEFAULT_ALLOCATE_LIFETIME,
        )?;
        if default_allocate_lifetime > max_allocate_lifetime {
            return err(format!(
                "default-allocate-lifetime {}s is above max-allocate-lifetime {}s; lower the default or raise the maximum",
                default_allocate_lifetime.as_secs(),
                max_allocate_lifetime.as_secs()
            ));
        }
        let permission_lifetime = secs(
            "permission-lifetime",
            o.permission_lifetime,
            defaults::PERMISSION_LIFETIME,
        )?;
        let channel_lifetime = secs(
            "channel-lifetime",
            o.channel_lifetime,
            defaults::CHANNEL_LIFETIME,
        )?;

        let max_tcp_connections = o
            .max_tcp_connections
            .unwrap_or(defaults::MAX_TCP_CONNECTIONS);
        if tcp && max_tcp_connections == 0 {
            return err(
                "max-tcp-connections is 0 while TCP is enabled; use 1 or more, or set no-tcp",
            );
        }
        // tokio's semaphore holds at most usize::MAX >> 3 permits.
        if max_tcp_connections > 1 << 24 {
            return err(format!(
                "max-tcp-connections {max_tcp_connections} is too large; use at most {}",
                1 << 24
            ));
        }

        let turn_workers = match o.turn_workers.unwrap_or(1) {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        if turn_workers > 256 {
            return err(format!(
                "turn-workers {turn_workers} is too many; use at most 256 (0: one per CPU)"
            ));
        }
        if turn_workers > 1 && (o.user_quota.unwrap_or(0) > 0 || o.total_quota.unwrap_or(0) > 0) {
            return err(format!(
                "user-quota and total-quota count the allocations of one worker, and turn-workers is {turn_workers}; run one worker (turn-workers 1) to use quotas"
            ));
        }

        let software = if o.no_software.unwrap_or(false) {
            None
        } else {
            Some(o.software.unwrap_or_else(|| defaults::SOFTWARE.to_owned()))
        };
        if let Some(s) = &software {
            if s.len() > MAX_TEXT_BYTES {
                return err(format!(
                    "software is {} bytes; SOFTWARE holds at most {MAX_TEXT_BYTES}",
                    s.len()
                ));
            }
        }

        let http_ips_default = o.http_ip.is_empty();
        let mut http_ips = if http_ips_default {
            vec![
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ]
        } else {
            o.http_ip.clone()
        };
        dedup(&mut http_ips);
        let http_port = o.http_port.unwrap_or(defaults::HTTP_PORT);
        let sfu_port = o.sfu_port.unwrap_or(defaults::SFU_PORT);
        let sfu_tcp = !o.no_sfu_tcp.unwrap_or(false);
        if sfu_port != 0 && sfu_port == listening_port {
            return err(format!(
                "sfu-port {sfu_port} is also the TURN listening-port; give the SFU its own port (default {})",
                defaults::SFU_PORT
            ));
        }
        if sfu_port != 0 && sfu_tcp && sfu_port == http_port {
            return err(format!(
                "sfu-port {sfu_port} is also the http-port; give the SFU its own port (default {}) or set no-sfu-tcp",
                defaults::SFU_PORT
            ));
        }
        let http_max_connections = o
            .http_max_connections
            .unwrap_or(defaults::HTTP_MAX_CONNECTIONS);
        if http_max_connections == 0 || http_max_connections > 1 << 24 {
            return err(format!(
                "http-max-connections {http_max_connections} is out of range; use 1 to {} (default {})",
                1 << 24,
                defaults::HTTP_MAX_CONNECTIONS
            ));
        }
        let tls = match (
            o.tls_cert.clone(),
            o.tls_key.clone(),
            o.tls_self_signed.unwrap_or(false),
        ) {
            (None, None, false) => None,
            (None, None, true) => Some(TlsSource::SelfSigned),
            (Some(cert), Some(key), false) => Some(TlsSource::Files { cert, key }),
            (Some(_), Some(_), true) => {
                return err("tls-self-signed is set together with tls-cert and tls-key; use either the files or a generated certificate");
            }
            (Some(_), None, _) => return err("tls-cert is set without tls-key; set both"),
            (None, Some(_), _) => return err("tls-key is set without tls-cert; set both"),
        };
        let tls_listening_port = o.tls_listening_port.unwrap_or(defaults::TLS_LISTENING_PORT);
        // Port 0 (any free port, in tests) never collides.
        if http_port != 0 && tcp && http_port == listening_port {
            return err(format!(
                "http-port {http_port} is also the TCP listening-port; give the HTTP server its own port (default {})",
                defaults::HTTP_PORT
            ));
        }
        if tls.is_some() && tls_listening_port != 0 {
            if tcp && tls_listening_port == listening_port {
                return err(format!(
                    "tls-listening-port {tls_listening_port} is also the TCP listening-port; use another (default {})",
                    defaults::TLS_LISTENING_PORT
                ));
            }
            if tls_listening_port == http_port {
                return err(format!(
                    "tls-listening-port {tls_listening_port} is also the http-port; use another (default {})",
                    defaults::TLS_LISTENING_PORT
                ));
            }
        }

        let log_level = o
            .log_level
            .or(rust_log)
            .unwrap_or_else(|| defaults::LOG_LEVEL.to_owned());
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_level) {
            return err(format!(
                "log-level '{log_level}' is not a tracing filter ({e}); use e.g. info, debug or tsunagi=debug,warn"
            ));
        }

        Ok(Config {
            listening_ips,
            listening_ips_default,
            listening_port,
            udp,
            tcp,
            discovery,
            relay_ips,
            relay_ips_auto,
            external_ips: o.external_ip,
            min_port,
            max_port,
            realm,
            credentials,
            peer_policy,
            user_quota: o.user_quota.unwrap_or(0),
            total_quota: o.total_quota.unwrap_or(0),
            max_bps: o.max_bps.unwrap_or(0),
            max_permissions,
            max_channels,
            stale_nonce,
            max_allocate_lifetime,
            default_allocate_lifetime,
            permission_lifetime,
            channel_lifetime,
            max_tcp_connections,
            turn_workers,
            software,
            log_level,
            log_format: o.log_format.unwrap_or_default(),
            redact_logs: o.redact_logs.unwrap_or(false),
            http_ips,
            http_ips_default,
            http_port,
            sfu_port,
            sfu_tcp,
            http_max_connections,
            tls,
            tls_listening_port,
            signaling,
        })
    }

    /// The sans-IO server's configuration, with the given nonce key.
    pub fn server_config(&self, nonce_key: [u8; 32]) -> ServerConfig {
        ServerConfig {
            realm: self.realm.clone(),
            software: self.software.clone(),
            credentials: self.credentials.clone(),
            peer_policy: self.peer_policy.clone(),
            nonce_key,
            nonce_lifetime: self.stale_nonce,
            default_lifetime: self.default_allocate_lifetime,
            max_lifetime: self.max_allocate_lifetime,
            permission_lifetime: self.permission_lifetime,
            channel_lifetime: self.channel_lifetime,
            user_quota: self.user_quota,
            total_quota: self.total_quota,
            max_permissions: self.max_permissions,
            max_channels: self.max_channels,
            max_bps: self.max_bps,
            external_ips: self
                .external_ips
                .iter()
                .map(|e| (e.public, e.private))
                .collect(),
            discovery: self.discovery.clone(),
            ..ServerConfig::default()
        }
    }

    /// The socket addresses of the listeners this configuration asks for.
    pub fn listening_addrs(&self) -> Vec<SocketAddr> {
        self.listening_ips
            .iter()
            .map(|ip| SocketAddr::new(*ip, self.listening_port))
            .collect()
    }

    /// The UDP-only listeners RFC 5780 needs besides `listening_addrs`: the alternate
    /// port on each listening IP and both ports on each alternate IP.
    pub fn discovery_addrs(&self) -> Vec<SocketAddr> {
        self.discovery
            .iter()
            .flat_map(|g| g.addresses().into_iter().skip(1))
            .collect()
    }

    /// The socket addresses of the HTTP(S) server.
    pub fn http_addrs(&self) -> Vec<SocketAddr> {
        self.http_ips
            .iter()
            .map(|ip| SocketAddr::new(*ip, self.http_port))
            .collect()
    }

    /// The socket addresses of the TURN-over-TLS listeners (empty without TLS).
    pub fn tls_listening_addrs(&self) -> Vec<SocketAddr> {
        if self.tls.is_none() {
            return Vec::new();
        }
        self.listening_ips
            .iter()
            .map(|ip| SocketAddr::new(*ip, self.tls_listening_port))
            .collect()
    }
}

/// RFC 5780 groups: each specific listening IP with the alternate port, and with the
/// alternate IP of its family if there is one (the first listening IP of that family
/// takes it). coturn's semantics: an unset or zero `alt-listening-port` is
/// `listening-port + 1`.
fn resolve_discovery(
    listening: &[IpAddr],
    port: u16,
    alt_ips: &[IpAddr],
    alt_port: Option<u16>,
    udp: bool,
) -> Result<Vec<DiscoveryAddresses>, ConfigError> {
    if alt_ips.is_empty() && alt_port.is_none() {
        return Ok(Vec::new());
    }
    if !udp {
        return err("alt-listening-ip/alt-listening-port set with no-udp: NAT discovery (RFC 5780) is UDP only; drop one of them");
    }
    if port == 0 {
        return err("alt-listening-ip/alt-listening-port need a fixed listening-port, not 0");
    }
    let alt_port = match alt_port.filter(|p| *p != 0) {
        Some(p) => p,
        None => port.checked_add(1).ok_or_else(|| {
            ConfigError(format!(
                "listening-port {port} has no port above it for NAT discovery; set alt-listening-port"
            ))
        })?,
    };
    if alt_port == port {
        return err(format!(
            "alt-listening-port {alt_port} is the listening-port; use another port (default listening-port + 1)"
        ));
    }
    if let Some(ip) = listening.iter().find(|ip| ip.is_unspecified()) {
        return err(format!(
            "NAT discovery (alt-listening-ip/alt-listening-port) needs specific listening addresses, and listening-ip includes {ip}; set listening-ip to the address clients reach (RESPONSE-ORIGIN and OTHER-ADDRESS name it)"
        ));
    }
    let mut pairs: Vec<(IpAddr, IpAddr)> = Vec::new();
    for &alt in alt_ips {
        if alt.is_unspecified() {
            return err(format!(
                "alt-listening-ip {alt} is a wildcard address; name the second address of this host"
            ));
        }
        if listening.contains(&alt) {
            return err(format!(
                "alt-listening-ip {alt} is also a listening-ip; the alternate address must be a different one"
            ));
        }
        if pairs.iter().any(|(_, a)| a.is_ipv4() == alt.is_ipv4()) {
            return err(format!(
                "alt-listening-ip {alt}: only one alternate address per family (IPv4, IPv6)"
            ));
        }
        let Some(primary) = listening.iter().find(|ip| ip.is_ipv4() == alt.is_ipv4()) else {
            return err(format!(
                "alt-listening-ip {alt} has no listening-ip of its family to pair with; add one"
            ));
        };
        pairs.push((*primary, alt));
    }
    Ok(listening
        .iter()
        .map(|&ip| DiscoveryAddresses {
            primary: SocketAddr::new(ip, port),
            alt_ip: pairs.iter().find(|(p, _)| *p == ip).map(|(_, a)| *a),
            alt_port,
        })
        .collect())
}

fn join(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::FromArgMatches;

    /// The options that `TSUNAGI_*` variables give, parsed as clap parses them (each
    /// variable as the value of its option; blank ones unset, see `unset_blank_env`),
    /// without touching the process environment. `tests/config_env.rs` runs the binary
    /// with real variables.
    fn try_env(pairs: &[(&str, &str)]) -> Result<Options, clap::Error> {
        let cmd = Options::augment_args(clap::Command::new("serve"));
        let mut argv = vec!["serve".to_owned()];
        for (k, v) in pairs {
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_env().is_some_and(|e| e == *k))
                .unwrap_or_else(|| panic!("{k} is no option's variable"));
            if !v.trim().is_empty() {
                argv.push(format!("--{}={v}", arg.get_long().unwrap()));
            }
        }
        let m = cmd.try_get_matches_from(argv)?;
        Options::from_arg_matches(&m)
    }

    fn env(pairs: &[(&str, &str)]) -> Options {
        try_env(pairs).unwrap()
    }

    fn cli(args: &[&str]) -> Options {
        let mut v = vec!["tsunagi"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v).unwrap().into_serve_options()
    }

    fn resolve(o: Options) -> Result<Config, ConfigError> {
        Config::resolve(o, None, PrimaryIps::default)
    }

    #[test]
    fn defaults() {
        let c = resolve(Options::default()).unwrap();
        assert_eq!(c.listening_port, 3478);
        assert_eq!(
            c.listening_ips,
            vec![
                "0.0.0.0".parse::<IpAddr>().unwrap(),
                "::".parse::<IpAddr>().unwrap()
            ]
        );
        assert!(c.udp && c.tcp);
        assert_eq!((c.min_port, c.max_port), (49152, 65535));
        assert_eq!(c.realm, "tsunagi");
        assert_eq!(c.relay_ips, vec!["127.0.0.1".parse::<IpAddr>().unwrap()]);
        assert!(c.relay_ips_auto);
        assert_eq!(c.max_permissions, 128);
        assert_eq!(c.max_channels, 128);
        assert_eq!(c.stale_nonce, Duration::from_secs(600));
        assert_eq!(c.max_allocate_lifetime, Duration::from_secs(3600));
        assert_eq!(c.default_allocate_lifetime, Duration::from_secs(600));
        assert_eq!(c.permission_lifetime, Duration::from_secs(300));
        assert_eq!(c.channel_lifetime, Duration::from_secs(600));
        assert_eq!(c.max_tcp_connections, 10_000);
        assert_eq!(c.software.as_deref(), Some(defaults::SOFTWARE));
        assert_eq!(c.log_level, "info");
        assert_eq!(c.log_format, LogFormat::Text);
        assert!(!c.redact_logs && !c.peer_policy.allow_loopback);
        assert!(c.credentials.is_empty());
        assert_eq!(c.http_port, 8080);
        assert_eq!(c.http_ips, c.listening_ips);
        assert!(c.http_ips_default);
        assert_eq!(c.http_max_connections, 10_000);
        assert_eq!(c.tls, None);
        assert_eq!(c.tls_listening_port, 5349);
        assert!(c.tls_listening_addrs().is_empty());
    }

    #[test]
    fn http_and_tls_options() {
        let c = resolve(cli(&[
            "--http-port",
            "8443",
            "--http-ip",
            "127.0.0.1",
            "--tls-cert",
            "/etc/c.pem",
            "--tls-key",
            "/etc/k.pem",
            "--tls-listening-port",
            "5350",
        ]))
        .unwrap();
        assert_eq!(c.http_addrs(), vec!["127.0.0.1:8443".parse().unwrap()]);
        assert_eq!(
            c.tls,
            Some(TlsSource::Files {
                cert: "/etc/c.pem".into(),
                key: "/etc/k.pem".into()
            })
        );
        assert_eq!(c.tls_listening_addrs().len(), 2);
        assert_eq!(c.tls_listening_addrs()[0].port(), 5350);
        let o = env(&[
            ("TSUNAGI_TLS_SELF_SIGNED", "1"),
            ("TSUNAGI_HTTP_PORT", "9000"),
        ]);
        let c = resolve(o).unwrap();
        assert_eq!(c.tls, Some(TlsSource::SelfSigned));
        assert_eq!(c.http_port, 9000);
        let o = Options::from_toml(
            "http-ip = \"::1\"\nhttp-max-connections = 5\ntls-self-signed = true\n",
            "t",
        )
        .unwrap();
        let c = resolve(o).unwrap();
        assert_eq!(c.http_ips, vec!["::1".parse::<IpAddr>().unwrap()]);
        assert_eq!(c.http_max_connections, 5);

        let e = resolve(cli(&["--tls-cert", "c.pem"])).unwrap_err();
        assert!(e.0.contains("without tls-key"), "{e}");
        let e = resolve(cli(&["--tls-key", "k.pem"])).unwrap_err();
        assert!(e.0.contains("without tls-cert"), "{e}");
        let e = resolve(cli(&[
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
            "--tls-self-signed",
        ]))
        .unwrap_err();
        assert!(e.0.contains("either"), "{e}");
        let e = resolve(cli(&["--http-port", "3478"])).unwrap_err();
        assert!(e.0.contains("http-port 3478"), "{e}");
        resolve(cli(&["--http-port", "3478", "--no-tcp"])).unwrap();
        let e = resolve(cli(&["--tls-self-signed", "--tls-listening-port", "8080"])).unwrap_err();
        assert!(e.0.contains("also the http-port"), "{e}");
        let e = resolve(cli(&["--http-max-connections", "0"])).unwrap_err();
        assert!(e.0.contains("http-max-connections"), "{e}");
    }

    #[test]
    fn precedence_cli_env_file_default() {
        let file = Options::from_toml(
            "listening-port = 1000\nrealm = \"file\"\nmin-port = 40000\nmax-bps = 7\n",
            "test.toml",
        )
        .unwrap();
        let env = env(&[("TSUNAGI_LISTENING_PORT", "2000"), ("TSUNAGI_REALM", "env")]);
        let cli = cli(&["--listening-port", "3000"]);
        let c = resolve(cli.or(env).or(file)).unwrap();
        assert_eq!(c.listening_port, 3000, "cli beats env and file");
        assert_eq!(c.realm, "env", "env beats file");
        assert_eq!(c.min_port, 40000, "file beats default");
        assert_eq!(c.max_bps, 7);
        assert_eq!(c.max_port, 65535, "default");
    }

    #[test]
    fn flags_can_be_turned_off_by_a_higher_layer() {
        let file = Options::from_toml("allow-loopback-peers = true\nno-tcp = true", "f").unwrap();
        let env = env(&[("TSUNAGI_ALLOW_LOOPBACK_PEERS", "false")]);
        let c = resolve(Options::default().or(env).or(file.clone())).unwrap();
        assert!(!c.peer_policy.allow_loopback);
        assert!(!c.tcp);
        let c = resolve(cli(&["--no-tcp=false"]).or(file)).unwrap();
        assert!(c.tcp);
        let c = resolve(cli(&["--allow-loopback-peers", "--no-udp"])).unwrap();
        assert!(c.peer_policy.allow_loopback && !c.udp && c.tcp);
    }

    #[test]
    fn lists_replace_lower_layers() {
        let file = Options::from_toml("user = [\"a:1\", \"b:2\"]", "f").unwrap();
        let env = env(&[("TSUNAGI_USER", "c:3")]);
        let merged = Options::default().or(env).or(file);
        assert_eq!(merged.user, vec![Secret("c:3".into())]);
    }

    #[test]
    fn toml_parsing() {
        let o = Options::from_toml(
            r#"
listening-ip = ["127.0.0.1", "::1"]
listening-port = 3479
relay-ip = "10.0.0.5"
external-ip = ["203.0.113.7/10.0.0.5"]
min-port = 50000
max-port = 50100
realm = "example.org"
user = ["alice:pw", "bob:0x0123456789abcdef0123456789abcdef"]
static-auth-secret = ["s1", "s2"]
allowed-peer-ip = ["10.0.0.0/8", "192.168.1.1-192.168.1.9"]
denied-peer-ip = "203.0.113.0/24"
allow-loopback-peers = true
user-quota = 5
total-quota = 100
max-bps = 1000000
max-permissions = 10
max-channels = 20
stale-nonce = 60
max-allocate-lifetime = 1200
default-allocate-lifetime = 300
permission-lifetime = 120
channel-lifetime = 240
max-tcp-connections = 50
software = "my-turn"
log-level = "debug"
log-format = "json"
redact-logs = true
no-udp = false
"#,
            "t.toml",
        )
        .unwrap();
        let c = resolve(o).unwrap();
        assert_eq!(c.listening_ips.len(), 2);
        assert_eq!(c.listening_port, 3479);
        assert_eq!(c.relay_ips, vec!["10.0.0.5".parse::<IpAddr>().unwrap()]);
        assert_eq!(
            c.external_ips[0].public,
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!((c.min_port, c.max_port), (50000, 50100));
        assert_eq!(c.realm, "example.org");
        assert_eq!(c.credentials.user_count(), 2);
        assert_eq!(c.credentials.secret_count(), 2);
        assert_eq!(c.peer_policy.allowed.len(), 2);
        assert_eq!(c.peer_policy.denied.len(), 1);
        assert!(c.peer_policy.allow_loopback);
        assert_eq!(
            (c.user_quota, c.total_quota, c.max_bps),
            (5, 100, 1_000_000)
        );
        assert_eq!((c.max_permissions, c.max_channels), (10, 20));
        assert_eq!(c.stale_nonce, Duration::from_secs(60));
        assert_eq!(c.max_tcp_connections, 50);
        assert_eq!(c.software.as_deref(), Some("my-turn"));
        assert_eq!(c.log_level, "debug");
        assert_eq!(c.log_format, LogFormat::Json);
        assert!(c.redact_logs);
        let sc = c.server_config([1; 32]);
        assert_eq!(sc.realm, "example.org");
        assert_eq!(sc.external_ips.len(), 1);
        assert_eq!(sc.permission_lifetime, Duration::from_secs(120));
    }

    #[test]
    fn toml_errors_name_the_problem() {
        let e = Options::from_toml("listening-prot = 1", "t.toml").unwrap_err();
        assert!(e.0.contains("listening-prot"), "{e}");
        let e = Options::from_toml("max-port = 70000", "t.toml").unwrap_err();
        assert!(e.0.contains("t.toml"), "{e}");
        let e = Options::from_toml("allowed-peer-ip = [\"10.0.0.0/33\"]", "t.toml").unwrap_err();
        assert!(e.0.contains("10.0.0.0/33"), "{e}");
        // The config file cannot name another config file.
        assert!(Options::from_toml("config = \"x\"", "t").is_err());
    }

    #[test]
    fn env_list_parsing() {
        let o = env(&[
            ("TSUNAGI_LISTENING_IP", "127.0.0.1,::1"),
            (
                "TSUNAGI_ALLOWED_PEER_IP",
                "10.0.0.0/8,198.51.100.1-198.51.100.9",
            ),
            ("TSUNAGI_STATIC_AUTH_SECRET", "a,b"),
            ("TSUNAGI_SOFTWARE", "x, y"),
            ("TSUNAGI_REALM", ""),
            ("TSUNAGI_LOG_FORMAT", "JSON"),
            ("TSUNAGI_REDACT_LOGS", "yes"),
        ]);
        assert_eq!(o.listening_ip.len(), 2);
        assert_eq!(o.allowed_peer_ip.len(), 2);
        assert_eq!(o.static_auth_secret.len(), 2);
        assert_eq!(o.software.as_deref(), Some("x, y"), "strings are not split");
        assert_eq!(o.realm, None, "empty means unset");
        assert_eq!(o.log_format, Some(LogFormat::Json));
        assert_eq!(o.redact_logs, Some(true));
        let e = try_env(&[("TSUNAGI_MIN_PORT", "abc")]).unwrap_err();
        assert!(e.to_string().contains("min-port"), "{e}");
        let e = try_env(&[("TSUNAGI_DENIED_PEER_IP", "10.0.0.1,nope")]).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }

    #[test]
    fn cli_list_parsing_and_subcommand() {
        let o = cli(&[
            "serve",
            "--user",
            "a:1",
            "--user",
            "b:2",
            "--allowed-peer-ip",
            "198.51.100.0/24",
            "--external-ip",
            "203.0.113.1",
        ]);
        assert_eq!(o.user.len(), 2);
        assert_eq!(o.allowed_peer_ip.len(), 1);
        assert_eq!(o.external_ip[0].private, None);
        assert!(Cli::try_parse_from(["tsunagi", "--allowed-peer-ip", "bad"]).is_err());
        assert!(Cli::try_parse_from(["tsunagi", "--software", "x", "--no-software"]).is_err());
        assert!(Cli::try_parse_from(["tsunagi", "--min-port", "70000"]).is_err());
    }

    #[test]
    fn validation_errors_say_what_to_fix() {
        let e = resolve(cli(&["--min-port", "6000", "--max-port", "5000"])).unwrap_err();
        assert!(e.0.contains("min-port 6000 is above max-port 5000"), "{e}");
        let e = resolve(cli(&["--user", "nocolon"])).unwrap_err();
        assert!(e.0.contains("user #1"), "{e}");
        let e = resolve(cli(&["--user", "a:0x12"])).unwrap_err();
        assert!(e.0.contains("32 hex digits"), "{e}");
        let e = resolve(cli(&["--no-udp", "--no-tcp"])).unwrap_err();
        assert!(e.0.contains("nothing would listen"), "{e}");
        let e = resolve(cli(&["--default-allocate-lifetime", "7200"])).unwrap_err();
        assert!(e.0.contains("max-allocate-lifetime"), "{e}");
        let e = resolve(cli(&["--relay-ip", "0.0.0.0"])).unwrap_err();
        assert!(e.0.contains("wildcard"), "{e}");
        let e = resolve(cli(&["--max-channels", "5000"])).unwrap_err();
        assert!(e.0.contains("4096"), "{e}");
        let e = resolve(cli(&["--stale-nonce", "0"])).unwrap_err();
        assert!(e.0.contains("stale-nonce"), "{e}");
        let e = resolve(cli(&["--log-level", "info,=["])).unwrap_err();
        assert!(e.0.contains("log-level"), "{e}");
        let e = resolve(cli(&[
            "--relay-ip",
            "10.0.0.1",
            "--external-ip",
            "203.0.113.1/10.0.0.2",
        ]))
        .unwrap_err();
        assert!(e.0.contains("not a relay address"), "{e}");
        assert!("1.2.3.4/24"
            .parse::<ExternalIp>()
            .unwrap_err()
            .contains("prefix length"));
        assert!("1.2.3.4/::1"
            .parse::<ExternalIp>()
            .unwrap_err()
            .contains("mixes"));
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let o = cli(&[
            "--user",
            "alice:hunter2",
            "--static-auth-secret",
            "topsecret",
        ]);
        let s = format!("{o:?}");
        assert!(!s.contains("hunter2") && !s.contains("topsecret"), "{s}");
        let c = resolve(o).unwrap();
        let s = format!("{c:?}");
        assert!(!s.contains("hunter2") && !s.contains("topsecret"), "{s}");
    }

    #[test]
    fn rust_log_is_the_fallback_filter() {
        let c =
            Config::resolve(Options::default(), Some("warn".into()), PrimaryIps::default).unwrap();
        assert_eq!(c.log_level, "warn");
        let c = Config::resolve(
            cli(&["--log-level", "debug"]),
            Some("warn".into()),
            PrimaryIps::default,
        )
        .unwrap();
        assert_eq!(c.log_level, "debug");
    }

    #[test]
    fn automatic_relay_addresses() {
        let p = PrimaryIps {
            v4: Some("10.1.2.3".parse().unwrap()),
            v6: Some("2001:db8::5".parse().unwrap()),
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            auto_relay_ips(&[ip("0.0.0.0"), ip("::")], p),
            vec![ip("10.1.2.3"), ip("2001:db8::5")]
        );
        assert_eq!(
            auto_relay_ips(&[ip("192.168.0.9")], p),
            vec![ip("192.168.0.9")]
        );
        assert_eq!(
            auto_relay_ips(&[ip("0.0.0.0")], PrimaryIps::default()),
            vec![ip("127.0.0.1")]
        );
        assert_eq!(
            auto_relay_ips(&[ip("192.168.0.9"), ip("::")], p),
            vec![ip("192.168.0.9"), ip("2001:db8::5")]
        );
    }

    const DOCS: &str = include_str!("../../../docs/configuration.md");

    #[test]
    fn documented_example_parses() {
        let start = DOCS.find("```toml\n").expect("a TOML example in the docs") + 8;
        let len = DOCS[start..].find("```").unwrap();
        let o = Options::from_toml(&DOCS[start..start + len], "docs example").unwrap();
        let c = resolve(o).unwrap();
        assert_eq!(c.realm, "turn.example.org");
        assert_eq!(c.credentials.secret_count(), 2);
    }

    #[test]
    fn nat_discovery_options() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let c = resolve(Options::default()).unwrap();
        assert!(c.discovery.is_empty());
        assert!(c.server_config([0; 32]).discovery.is_empty());

        let c = resolve(cli(&[
            "--listening-ip",
            "203.0.113.1",
            "--alt-listening-ip",
            "203.0.113.2",
        ]))
        .unwrap();
        let g = DiscoveryAddresses {
            primary: "203.0.113.1:3478".parse().unwrap(),
            alt_ip: Some(ip("203.0.113.2")),
            alt_port: 3479,
        };
        assert_eq!(c.discovery, vec![g]);
        assert_eq!(c.server_config([0; 32]).discovery, vec![g]);
        let extra: Vec<SocketAddr> = ["203.0.113.1:3479", "203.0.113.2:3478", "203.0.113.2:3479"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(c.discovery_addrs(), extra);

        // One IP and two ports: change-port only.
        let c = resolve(cli(&[
            "--listening-ip",
            "203.0.113.1",
            "--listening-ip",
            "2001:db8::1",
            "--alt-listening-port",
            "4000",
        ]))
        .unwrap();
        assert_eq!(c.discovery.len(), 2);
        assert!(c
            .discovery
            .iter()
            .all(|g| g.alt_ip.is_none() && g.alt_port == 4000));
        assert_eq!(c.discovery_addrs().len(), 2);

        // From the environment and a file too.
        let o = env(&[
            ("TSUNAGI_LISTENING_IP", "203.0.113.1"),
            ("TSUNAGI_ALT_LISTENING_IP", "203.0.113.2"),
            ("TSUNAGI_ALT_LISTENING_PORT", "3500"),
        ]);
        assert_eq!(resolve(o).unwrap().discovery[0].alt_port, 3500);
        let o = Options::from_toml(
            "listening-ip = \"203.0.113.1\"\nalt-listening-ip = \"203.0.113.2\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            resolve(o).unwrap().discovery[0].alt_ip,
            Some(ip("203.0.113.2"))
        );

        for (args, needle) in [
            (
                vec!["--alt-listening-ip", "203.0.113.2"],
                "specific listening addresses",
            ),
            (
                vec![
                    "--listening-ip",
                    "203.0.113.1",
                    "--alt-listening-ip",
                    "203.0.113.1",
                ],
                "also a listening-ip",
            ),
            (
                vec![
                    "--listening-ip",
                    "203.0.113.1",
                    "--alt-listening-ip",
                    "2001:db8::2",
                ],
                "no listening-ip of its family",
            ),
            (
                vec![
                    "--listening-ip",
                    "203.0.113.1",
                    "--alt-listening-port",
                    "3478",
                ],
                "is the listening-port",
            ),
            (
                vec![
                    "--listening-ip",
                    "203.0.113.1",
                    "--listening-port",
                    "0",
                    "--alt-listening-port",
                    "5000",
                ],
                "fixed listening-port",
            ),
            (
                vec![
                    "--listening-ip",
                    "203.0.113.1",
                    "--alt-listening-port",
                    "9",
                    "--no-udp",
                ],
                "UDP only",
            ),
            (
                vec![
                    "--listening-ip",
                    "203.0.113.1",
                    "--alt-listening-ip",
                    "203.0.113.2",
                    "--alt-listening-ip",
                    "203.0.113.3",
                ],
                "one alternate address per family",
            ),
        ] {
            let e = resolve(cli(&args)).unwrap_err();
            assert!(e.0.contains(needle), "{args:?}: {e}");
        }
    }

    #[test]
    fn every_option_is_documented() {
        let names = env_names();
        assert!(names.len() > 50, "{names:?}");
        for name in names {
            let key = name
                .strip_prefix(ENV_PREFIX)
                .unwrap()
                .to_ascii_lowercase()
                .replace('_', "-");
            let env = format!("`{name}`");
            assert!(
                DOCS.contains(&env),
                "{env} missing from docs/configuration.md"
            );
            assert!(
                DOCS.contains(&format!("`--{key}")),
                "--{key} missing from docs/configuration.md"
            );
        }
    }

    #[test]
    fn unknown_env_vars_are_reported() {
        let u = unknown_env_vars(
            [
                "TSUNAGI_LISTEN_PORT",
                "TSUNAGI_REALM",
                "TSUNAGI_TURN_WORKERS",
                "PATH",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        assert_eq!(u, vec!["TSUNAGI_LISTEN_PORT".to_string()]);
    }

    #[test]
    fn signaling_options() {
        let c = resolve(Options::default()).unwrap().signaling;
        assert_eq!(c.token_secret, None);
        assert_eq!(c.public_host, None);
        assert_eq!((c.max_room_peers, c.max_rooms), (50, 10_000));
        assert_eq!(
            (c.mesh_max_peers, c.room_mode, c.sfu),
            (4, RoomMode::Auto, true)
        );
        assert_eq!((c.max_message_bytes, c.messages_per_second), (65_536, 50));
        assert_eq!(c.resume_grace, Duration::from_secs(15));
        assert_eq!(c.turn_credential_ttl, Duration::from_secs(86_400));
        // The room modes from each source.
        let c = resolve(cli(&[
            "--room-mode",
            "sfu",
            "--no-sfu",
            "--mesh-max-peers",
            "6",
        ]))
        .unwrap()
        .signaling;
        assert_eq!(
            (c.room_mode, c.sfu, c.mesh_max_peers),
            (RoomMode::Sfu, false, 6)
        );
        let o = Options::from_toml("room-mode = \"mesh\"\nno-sfu = false", "f").unwrap();
        let c = resolve(o).unwrap().signaling;
        assert_eq!((c.room_mode, c.sfu), (RoomMode::Mesh, true));
        let c = resolve(env(&[
            ("TSUNAGI_ROOM_MODE", "Auto"),
            ("TSUNAGI_NO_SFU", "1"),
            ("TSUNAGI_MESH_MAX_PEERS", "2"),
        ]))
        .unwrap()
        .signaling;
        assert_eq!(
            (c.room_mode, c.sfu, c.mesh_max_peers),
            (RoomMode::Auto, false, 2)
        );
        assert!(Options::from_toml("room-mode = \"p2p\"", "f").is_err());
        assert!(try_env(&[("TSUNAGI_ROOM_MODE", "p2p")]).is_err());

        let file = Options::from_toml(
            "token-secret = \"0123456789abcdef-file\"\nmax-room-peers = 6\npublic-host = \"Turn.Example.org\"",
            "f",
        )
        .unwrap();
        let env = env(&[
            ("TSUNAGI_TOKEN_SECRET", "0123456789abcdef-env"),
            ("TSUNAGI_RESUME_GRACE", "0"),
            ("TSUNAGI_MESSAGES_PER_SECOND", "0"),
        ]);
        let args = cli(&["--max-rooms", "7", "--public-host", "2001:db8::1"]);
        let c = resolve(args.or(env).or(file)).unwrap().signaling;
        assert_eq!(c.token_secret, Some(Secret("0123456789abcdef-env".into())));
        assert_eq!(c.public_host.as_deref(), Some("[2001:db8::1]"));
        assert_eq!((c.max_room_peers, c.max_rooms), (6, 7));
        assert_eq!((c.resume_grace, c.messages_per_second), (Duration::ZERO, 0));
        let c = resolve(cli_with_host("Turn.Example.org"))
            .unwrap()
            .signaling;
        assert_eq!(c.public_host.as_deref(), Some("turn.example.org"));

        let e = Cli::try_parse_from(["tsunagi", "--room-mode", "p2p"]).unwrap_err();
        assert!(e.to_string().contains("auto, mesh or sfu"), "{e}");
        for (args, needle) in [
            (&["--mesh-max-peers", "0"][..], "mesh-max-peers"),
            (&["--mesh-max-peers", "33"][..], "mesh-max-peers"),
            (&["--max-room-peers", "1001"][..], "max-room-peers"),
            (&["--max-room-peers", "3"][..], "less than mesh-max-peers"),
            (&["--token-secret", "short"][..], "token-secret"),
            (&["--public-host", "https://x.org"][..], "public-host"),
            (&["--public-host", "x.org:3478"][..], "public-host"),
            (&["--max-room-peers", "0"][..], "max-room-peers"),
            (&["--max-message-bytes", "100"][..], "max-message-bytes"),
            (&["--turn-credential-ttl", "1"][..], "turn-credential-ttl"),
            (&["--resume-grace", "100000"][..], "resume-grace"),
        ] {
            let e = resolve(cli(args)).unwrap_err();
            assert!(e.0.contains(needle), "{args:?}: {e}");
        }
    }

    fn cli_with_host(h: &str) -> Options {
        cli(&["--public-host", h])
    }

    #[test]
    fn token_subcommand_parses() {
        let c = Cli::try_parse_from([
            "tsunagi",
            "token",
            "--room",
            "lobby",
            "--identity",
            "alice",
            "--ttl",
            "60",
            "--no-publish",
        ])
        .unwrap();
        assert!(matches!(c.command, Some(Command::Token(_))));
    }

    #[test]
    fn turn_workers() {
        assert_eq!(resolve(Options::default()).unwrap().turn_workers, 1);
        assert_eq!(
            resolve(cli(&["--turn-workers", "3"])).unwrap().turn_workers,
            3
        );
        let all = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(
            resolve(cli(&["--turn-workers", "0"])).unwrap().turn_workers,
            all
        );
        let e = resolve(cli(&["--turn-workers", "2", "--user-quota", "5"])).unwrap_err();
        assert!(e.0.contains("turn-workers 1"), "{e}");
        let e = resolve(cli(&["--turn-workers", "2", "--total-quota", "5"])).unwrap_err();
        assert!(e.0.contains("quota"), "{e}");
        assert!(resolve(cli(&["--turn-workers", "1", "--user-quota", "5"])).is_ok());
        let e = resolve(cli(&["--turn-workers", "999"])).unwrap_err();
        assert!(e.0.contains("at most 256"), "{e}");
    }
}
