//! The `tsunagi` binary as a library, so that integration tests can start the STUN/TURN
//! server in-process on port 0 and learn the bound addresses.
//!
//! * [`cli`]: the command line (`serve`, `token`, `nat`) and its environment variables.
//! * [`config`]: command line, TOML file and `TSUNAGI_*` environment, validated once.
//! * [`turn_runtime`]: the sockets and tasks that drive the sans-IO
//!   [`tsunagi_turn::Server`].
//! * [`http`]: the HTTP(S) server: web client, `/healthz`, `/api/stats`, `/metrics`.
//! * `net`: the accept loop every TCP listener shares, and the shutdown signal.
//! * [`tls`]: certificates for HTTPS/WSS and TURN over TLS.
//! * [`signaling`]: the signaling WebSocket (`/ws`) around the sans-IO
//!   [`tsunagi_signal::Hub`].
//! * [`sfu_runtime`]: the SFU's UDP/ICE-TCP sockets around the sans-IO
//!   [`tsunagi_sfu::Sfu`], and WHIP/WHEP.
//! * [`supervise`]: every core runs under a health registry; `/healthz` reads it.
//! * [`token`]: `tsunagi token`, which prints signaling access tokens.
//! * [`nat`]: `tsunagi nat`, NAT behaviour discovery (RFC 5780) as a client.

pub mod cli;
pub mod config;
pub mod http;
pub mod nat;
pub mod redact;
pub mod sfu_runtime;
pub mod signaling;
pub mod supervise;
pub mod tls;
pub mod token;
pub mod turn_runtime;
