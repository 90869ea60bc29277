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
//!
//! Submodules: [`options`] (the option list, the command line, the environment and the
//! file), [`resolve`] (defaults and validation into a [`Config`]) and [`net`] (the host's
//! addresses, for automatic relay addresses).

mod net;
mod options;
mod resolve;

pub use net::*;
pub use options::*;
use resolve::*;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Args, ValueEnum};
use serde::de::{self, Deserializer};
use serde::Deserialize;
use tsunagi_signal::RoomMode;
use tsunagi_turn::auth::Credentials;
use tsunagi_turn::policy::{IpRange, PeerPolicy};
use tsunagi_turn::{DiscoveryAddresses, ServerConfig};

/// Prefix of every environment variable.
pub const ENV_PREFIX: &str = "TSUNAGI_";

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
    pub const DRAIN_TIMEOUT: u64 = 60;
    /// Let's Encrypt's production directory.
    pub const ACME_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";
    /// Names in one certificate: Let's Encrypt's limit.
    pub const ACME_MAX_DOMAINS: usize = 100;
}

/// Where the TLS certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// `tls-cert` and `tls-key`: PEM files, read at start and again when they change
    /// (or on SIGHUP).
    Files { cert: PathBuf, key: PathBuf },
    /// A self-signed certificate, kept in `data-dir`: the default (HTTPS for the LAN,
    /// `explicit: false`), or asked for with `tls-self-signed` (`explicit: true`, which
    /// also starts TURN over TLS).
    SelfSigned { explicit: bool },
    /// `acme-domain`: a certificate from an ACME CA (RFC 8555), kept in `data-dir` and
    /// renewed while tsunagi runs.
    Acme(AcmeConfig),
}

impl TlsSource {
    /// Whether this certificate also serves TURN over TLS: one that clients trust, or
    /// a self-signed one asked for by name (not the default self-signed one, which only
    /// gives the LAN its HTTPS: browsers do not accept it for TURN).
    pub fn serves_turn(&self) -> bool {
        matches!(
            self,
            Self::Files { .. } | Self::SelfSigned { explicit: true } | Self::Acme(_)
        )
    }
}

/// How the ACME CA checks that a name is this server's (`acme-challenge`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Deserialize)]
pub enum AcmeChallenge {
    /// TLS-ALPN-01 (RFC 8737): the CA opens a TLS connection to port 443 of the name.
    #[default]
    #[value(name = "tls-alpn-01")]
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// HTTP-01 (RFC 8555 §8.3): the CA asks for a file over plain HTTP on port 80.
    #[value(name = "http-01")]
    #[serde(rename = "http-01")]
    Http01,
}

impl AcmeChallenge {
    /// The port the CA connects to, on the address the name resolves to.
    pub fn port(self) -> u16 {
        match self {
            Self::TlsAlpn01 => 443,
            Self::Http01 => 80,
        }
    }
}

impl fmt::Display for AcmeChallenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TlsAlpn01 => "TLS-ALPN-01",
            Self::Http01 => "HTTP-01",
        })
    }
}

/// Certificates from an ACME CA: the validated `acme-*` options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    /// DNS names, lowercase, without a trailing dot, no duplicates; at least one.
    pub domains: Vec<String>,
    /// Contact of the account, without `mailto:`.
    pub email: Option<String>,
    /// The CA's directory URL (https).
    pub directory: String,
    /// Roots trusted for the CA's HTTPS instead of the system's.
    pub ca_root: Option<PathBuf>,
    pub challenge: AcmeChallenge,
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
    /// Whether the SFU forwards RTP packets as they come (str0m's RTP mode).
    pub sfu_rtp_mode: bool,
    pub http_max_connections: usize,
    /// `None` (`no-tls`): plain HTTP and no TURN over TLS.
    pub tls: Option<TlsSource>,
    /// Where kept state goes (`data-dir`, or its default); `None` when there is no
    /// default (no home directory) and none was set.
    pub data_dir: Option<PathBuf>,
    pub tls_listening_port: u16,
    /// Peers whose TCP and TLS connections begin with a PROXY header
    /// (`proxy-protocol-ip`).
    pub proxy_protocol: Vec<IpRange>,
    /// Peers whose `X-Forwarded-For` is believed (`trusted-proxy-ip`).
    pub trusted_proxies: Vec<IpRange>,
    /// Signaling (see `crate::signaling`).
    pub signaling: SignalingConfig,
    /// Membership of a cluster (`redis`); `None`: one node, in memory.
    pub cluster: Option<ClusterConfig>,
}

/// The validated cluster options (docs/cluster.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `redis://[user:password@]host:port/db` or `rediss://` (TLS).
    pub redis: Secret,
    /// This node's name (`node-name`); its id adds 8 hex digits drawn at each start.
    pub node_name: String,
    /// The signaling URL of this node that `rejoin` may offer (`cluster-url`).
    pub url: Option<String>,
    /// Longest a draining node waits for its rooms to move (`drain-timeout`).
    pub drain_timeout: Duration,
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

    /// Whether TURN over TLS is offered (`turns:` in `welcome`): with a certificate
    /// from files or an ACME CA, or a self-signed one asked for by name; not with the
    /// default self-signed one, which only gives the LAN its HTTPS (browsers do not
    /// accept a self-signed certificate for TURN).
    pub fn turn_tls(&self) -> bool {
        self.tls.as_ref().is_some_and(TlsSource::serves_turn)
    }

    /// Whether TURN over TLS shares the HTTP port (`tls-listening-port` equal to
    /// `http-port`): one port for HTTPS, the signaling WebSocket and `turns:`.
    pub fn one_tls_port(&self) -> bool {
        self.turn_tls() && self.tls_listening_port == self.http_port && self.http_port != 0
    }

    /// The socket addresses of listeners of their own for TURN over TLS (empty
    /// without it, or when it shares the HTTP port). They serve HTTPS too: every TLS
    /// port tells TURN from HTTP by ALPN or the first bytes.
    pub fn tls_listening_addrs(&self) -> Vec<SocketAddr> {
        if !self.turn_tls() || self.one_tls_port() {
            return Vec::new();
        }
        self.listening_ips
            .iter()
            .map(|ip| SocketAddr::new(*ip, self.tls_listening_port))
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
