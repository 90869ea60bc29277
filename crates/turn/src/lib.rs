//! Sans-IO TURN server (RFC 8656) with STUN Binding (RFC 8489).
//!
//! The [`Server`] owns every allocation, permission, channel and reservation, and
//! never touches a socket or the clock. The runtime drives it:
//!
//! * datagrams and TCP frames from clients go in through [`Server::handle_client`],
//! * datagrams that arrive on relay sockets go in through [`Server::handle_peer`],
//! * closed TCP connections through [`Server::handle_connection_closed`],
//! * time through [`Server::handle_timeout`] when [`Server::poll_timeout`] is reached;
//!
//! and after each input it drains [`Server::poll_transmit`] (packets to send) and
//! [`Server::poll_event`] (things to log or count) until both return `None`.
//! Relay sockets are opened and closed through the [`RelayBinder`] the runtime passes
//! in: that is the only place where the core asks the outside world for something.
//! A runtime that runs several servers (one per worker thread) gives each the same
//! [`relays::RelayDirectory`] through [`Server::share_relays`], so that every server
//! knows the others' relayed addresses as this server's own peers ([`relays`]).
//!
//! ```no_run
//! use std::time::Instant;
//! use tsunagi_turn::{Server, ServerConfig, FiveTuple, Transport, RelayBinder, BindRequest, BindError};
//! # struct Sockets;
//! # impl RelayBinder for Sockets {
//! #     fn bind(&mut self, _: BindRequest) -> Result<std::net::SocketAddr, BindError> { Err(BindError::Exhausted) }
//! #     fn release(&mut self, _: std::net::SocketAddr) {}
//! # }
//! # fn recv() -> (std::net::SocketAddr, Vec<u8>) { (([127, 0, 0, 1], 5000).into(), Vec::new()) }
//! # fn send(_: &tsunagi_turn::Transmit) {}
//! let mut server = Server::new(ServerConfig::default(), Instant::now(), 1_700_000_000);
//! let mut sockets = Sockets;
//! let local = "0.0.0.0:3478".parse().unwrap();
//! loop {
//!     let (from, datagram) = recv(); // or: a relay socket / a timer fired
//!     let ft = FiveTuple { client: from, server: local, transport: Transport::Udp };
//!     server.handle_client(Instant::now(), ft, &datagram, &mut sockets);
//!     while let Some(t) = server.poll_transmit() {
//!         send(&t);
//!     }
//!     while let Some(ev) = server.poll_event() {
//!         println!("{ev:?}");
//!     }
//!     let _next_wakeup = server.poll_timeout();
//! }
//! ```
//!
//! Transmits name their [`Destination`]: a client's 5-tuple, a peer (sent from a relay
//! socket), or, for RFC 5780 Binding responses only, a UDP listener and a client
//! address that differ from the request's 5-tuple ([`Destination::ClientFrom`]). A
//! runtime that configures [`ServerConfig::discovery`] listens on every address of
//! each [`DiscoveryAddresses`] group and sends `ClientFrom` transmits from the
//! listener bound at `local`.
//!
//! # Quotas over several servers
//! `user-quota` and `total-quota` ([`ServerConfig::user_quota`],
//! [`ServerConfig::total_quota`]) count this server's allocations plus those the
//! runtime says exist elsewhere: other servers of the process (one per worker thread)
//! or other nodes of a cluster. A runtime with more than one server exchanges counts
//! on a short period `P` (tsunagi: 100 ms between workers, the 1 s heartbeat between
//! nodes): each server's [`Server::usage`] goes somewhere all can read, and each server
//! gets the sum of the *others'* through [`Server::set_elsewhere`]:
//!
//! ```no_run
//! use std::time::Instant;
//! use tsunagi_turn::{Across, Elsewhere, Server, ServerConfig, Usage};
//! let config = ServerConfig { user_quota: 2, total_quota: 100, ..ServerConfig::default() };
//! let mut servers: Vec<Server> =
//!     (0..2).map(|_| Server::new(config.clone(), Instant::now(), 1_700_000_000)).collect();
//! // Every P, between inputs (never in the middle of handling one):
//! let usage: Vec<Usage> = servers.iter().map(Server::usage).collect();
//! for (i, server) in servers.iter_mut().enumerate() {
//!     let mut others = Usage::default();
//!     for (j, u) in usage.iter().enumerate() {
//!         if j != i {
//!             others.add(u);
//!         }
//!     }
//!     server.set_elsewhere(Elsewhere { usage: others, across: Across::Workers });
//! }
//! ```
//!
//! The counts a server holds are a snapshot, so the quotas are soft by what the others
//! grant before the next exchange: a server learns of an allocation made elsewhere at
//! most two periods after it was granted (its server's next publication, then this
//! server's next reading), and until then may grant one of its own that goes over.
//! With `W` servers a quota can be exceeded by at most what the other `W - 1` grant
//! within that window; it is never exceeded by one server alone. Deleted allocations
//! free quota elsewhere on the same delay. Any counts are accepted (sums saturate, a
//! username absent counts 0); [`Across`] only changes the 486 and 508 reason phrases,
//! which then say what was counted.
//!
//! # Panic policy
//! No input panics. Tables are bounded by [`ServerConfig`] quotas; nothing is stored
//! for a client until a request authenticates (nonces are stateless, see `nonce`).
#![forbid(unsafe_code)]

pub mod auth;
pub mod policy;
pub mod relays;

mod nonce;
mod server;

pub use server::{
    Across, BindError, BindRequest, DeleteReason, Destination, DiscoveryAddresses, Elsewhere,
    Event, Family, FiveTuple, PortRequest, RelayBinder, Server, ServerConfig, Stats, Transmit,
    Transport, Usage,
};
