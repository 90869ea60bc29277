//! The `tsunagi` binary as a library, so that integration tests can start the STUN/TURN
//! server in-process on port 0 and learn the bound addresses.
//!
//! * [`cli`]: the command line (`serve`, `token`, `nat`) and its environment variables.
//! * [`config`]: command line, TOML file and `TSUNAGI_*` environment, validated once.
//! * [`turn_runtime`]: the sockets and tasks that drive the sans-IO
//!   [`tsunagi_turn::Server`].
//! * [`http`]: the HTTP(S) server and every TLS port: web client, `/healthz`,
//!   `/api/stats`, `/metrics`, and TURN over TLS told apart from HTTPS.
//! * [`tls`]: certificates for HTTPS/WSS and TURN over TLS: kept, reloaded, served.
//! * [`service_notify`]: readiness and stopping, told to systemd.
//! * [`proxied`]: clients behind a load balancer or proxy (PROXY protocol headers,
//!   `X-Forwarded-For`).
//! * [`signaling`]: the signaling WebSocket (`/ws`) around the sans-IO
//!   [`tsunagi_signal::Hub`].
//! * [`sfu_runtime`]: the SFU's UDP/ICE-TCP sockets around the sans-IO
//!   [`tsunagi_sfu::Sfu`], and WHIP/WHEP.
//! * [`cluster`]: membership of a cluster of nodes through Redis: room placement and
//!   the relay of WebSocket sessions between nodes.
//! * [`supervise`]: every core runs under a health registry; `/healthz` reads it.
//! * [`token`]: `tsunagi token`, which prints signaling access tokens.
//! * [`nat`]: `tsunagi nat`, NAT behaviour discovery (RFC 5780) as a client.

pub mod cli;
pub mod cluster;
pub mod config;
pub mod http;
pub mod nat;
pub mod proxied;
pub mod redact;
pub mod service_notify;
pub mod sfu_runtime;
pub mod signaling;
pub mod supervise;
pub mod tls;
pub mod token;
pub mod turn_runtime;
