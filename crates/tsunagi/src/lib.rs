//! The `tsunagi` binary as a library, so that integration tests can start the STUN/TURN
//! server in-process on port 0 and learn the bound addresses.
//!
//! * [`config`]: command line, TOML file and `TSUNAGI_*` environment, validated once.
//! * [`turn_runtime`]: the sockets and tasks that drive the sans-IO
//!   [`tsunagi_turn::Server`].

pub mod config;
pub mod redact;
pub mod turn_runtime;
