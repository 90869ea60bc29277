//! Relay fast-path benches of the sans-IO server on packets captured from
//! `turnutils_uclient` against tsunagi (`benches/data/*.hex`, made by
//! `benches/data/capture.py`): its 100-byte ChannelData through
//! [`Server::handle_client_relay`], its Send indication through `handle_client` (and
//! the queued transmit), and the echo peer's 100-byte datagram back to the client
//! through [`Server::handle_peer_into`] (as ChannelData, and as a Data indication for a
//! peer without a channel). Each runs against an allocation made with the test
//! harness, with a channel of the captured number bound to the captured peer.
//!
//! `cargo bench -p tsunagi-turn` (not part of the test command).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;

use common::{client_ft, config, Harness};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tsunagi_stun::{attr, ChannelData, Message};
use tsunagi_turn::Destination;

fn packet(hex: &str) -> Vec<u8> {
    let hex = hex.trim();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex dump"))
        .collect()
}

const CHANNEL_DATA: &str = include_str!("data/channel_data_100.hex");
const SEND_INDICATION: &str = include_str!("data/send_indication_fingerprint.hex");
const PEER_DATA: &str = include_str!("data/peer_data_100.hex");

fn benches(c: &mut Criterion) {
    let channel_data = packet(CHANNEL_DATA);
    let send = packet(SEND_INDICATION);
    let peer_data = packet(PEER_DATA);
    let channel = ChannelData::parse(&channel_data).unwrap().channel;
    // uclient's peer (the capture's echo peer on 127.0.0.1).
    let peer = Message::parse(&send)
        .unwrap()
        .get_xor_address(attr::XOR_PEER_ADDRESS)
        .unwrap()
        .unwrap();

    let mut cfg = config();
    cfg.peer_policy.allow_loopback = true;
    let mut h = Harness::new(cfg);
    // A crowd of other allocations, so that lookups are not in a one-entry map.
    for port in 2000..3000 {
        h.allocate(client_ft(port), "alice", "wonderland");
    }
    let ft = client_ft(40000);
    let (creds, relay) = h.allocate(ft, "alice", "wonderland");
    h.create_permission(ft, &creds, &[peer]);
    h.channel_bind(ft, &creds, channel, peer);
    // A second client with a permission for the peer and no channel: Data indications.
    let ft2 = client_ft(40001);
    let (creds2, relay2) = h.allocate(ft2, "alice", "wonderland");
    h.create_permission(ft2, &creds2, &[peer]);
    h.drain();
    let now = h.now;

    // The paths do what they are measured for.
    let (dest, range) = h
        .server
        .handle_client_relay(now, ft, &channel_data, &mut h.binder)
        .expect("ChannelData routed");
    assert!(matches!(dest, Destination::Peer { peer: p, .. } if p == peer));
    assert_eq!(range.len(), 100);
    h.server.handle_client(now, ft, &send, &mut h.binder);
    assert_eq!(h.drain().len(), 1, "Send indication relayed");
    let mut out = vec![0u8; 2048];
    let (_, n) = h
        .server
        .handle_peer_into(now, relay, peer, &peer_data, &mut out)
        .expect("peer data relayed");
    assert_eq!(ChannelData::parse(&out[..n]).unwrap().channel, channel);
    assert!(h
        .server
        .handle_peer_into(now, relay2, peer, &peer_data, &mut out)
        .is_some());

    let mut g = c.benchmark_group("turn relay");
    g.throughput(Throughput::Elements(1));
    g.bench_function("client ChannelData 100 B -> handle_client_relay", |b| {
        b.iter(|| {
            h.server
                .handle_client_relay(now, black_box(ft), black_box(&channel_data), &mut h.binder)
                .map(|(_, r)| r.len())
        })
    });
    g.bench_function(
        "client Send indication 100 B -> handle_client + transmit",
        |b| {
            b.iter(|| {
                h.server
                    .handle_client(now, black_box(ft), black_box(&send), &mut h.binder);
                h.server.poll_transmit().map(|t| t.payload.len())
            })
        },
    );
    g.bench_function("peer 100 B -> handle_peer_into (ChannelData)", |b| {
        b.iter(|| {
            h.server
                .handle_peer_into(now, relay, black_box(peer), black_box(&peer_data), &mut out)
                .map(|(_, n)| n)
        })
    });
    g.bench_function("peer 100 B -> handle_peer_into (Data indication)", |b| {
        b.iter(|| {
            h.server
                .handle_peer_into(
                    now,
                    relay2,
                    black_box(peer),
                    black_box(&peer_data),
                    &mut out,
                )
                .map(|(_, n)| n)
        })
    });
    g.finish();
}

criterion_group!(relay, benches);
criterion_main!(relay);
