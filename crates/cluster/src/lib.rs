//! Sans-IO parts of a tsunagi cluster (docs/cluster.md): what crosses between nodes and
//! how they agree, without sockets, tokio or a clock.
//!
//! * [`wire`]: the relay format. A node that holds a client's WebSocket (the *edge*)
//!   and the node that runs the client's room (the *owner*) exchange [`Frame`]s, many
//!   to a [`wire::encode_batch`]ed message on the receiver's Redis channel.
//! * [`node`]: the [`NodeRecord`] each node publishes with its load, and
//!   [`node::choose`], which places a new room on the least loaded live node.
//! * [`keys`]: the Redis key and channel names, and the Lua scripts that claim, renew
//!   and release rooms atomically.
//!
//! # Panic policy
//!
//! No input panics: [`wire::decode_batch`] reads through a checked cursor and returns a
//! [`wire::WireError`] for anything short, long, unknown or not UTF-8.
#![forbid(unsafe_code)]

pub mod keys;
pub mod node;
pub mod wire;

pub use keys::Keys;
pub use node::{choose, Load, NodeRecord};
pub use wire::{decode_batch, encode_batch, Frame, How, WireError};
