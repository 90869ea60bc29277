//! Deterministic tests of the TURN state machine: every request, error and timer,
//! driven with a virtual clock and a fake relay binder. No sockets, no sleeps. The
//! tests are in the modules by topic; this file holds what they share.
#![allow(clippy::unwrap_used, clippy::type_complexity)]

#[path = "../common/mod.rs"]
mod common;

mod allocations;
mod binding;
mod channels;
mod misc;
mod permissions;
mod quotas;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tsunagi_stun::attr;
use tsunagi_stun::{ChannelData, Class, Message, Method};
use tsunagi_turn::auth::rest_credential;
use tsunagi_turn::{
    DeleteReason, Destination, Event, FiveTuple, PortRequest, ServerConfig, Transport,
};

fn send_indication(h: &mut Harness, peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    let tid = h.tid();
    build(Class::Indication, Method::SEND, tid, |e| {
        e.xor_address(attr::XOR_PEER_ADDRESS, &peer).unwrap();
        e.attr(attr::DATA, data).unwrap();
    })
}
