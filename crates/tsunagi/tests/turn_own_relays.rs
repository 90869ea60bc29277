//! A relay-only call between two clients of one server, over real UDP sockets on
//! 127.0.0.1, on a server started WITHOUT allow-loopback-peers: each client's peer is
//! the other's relayed address, a loopback address this server allows because it is
//! its own live relay (`tsunagi_turn::relays`). Data flows relay to relay both ways;
//! any other loopback port is refused: 403 on CreatePermission and ChannelBind naming
//! it, and datagrams to or from it are dropped (and counted) where a permission for
//! the IP already exists. With `turn-workers 2` the same holds between allocations of
//! different workers (through the kernel, with the shared relay directory).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use tsunagi::turn_runtime::{Listeners, TurnService};
use tsunagi_stun::{attr, Message, Method};
use tsunagi_turn::{Server, ServerConfig};

/// The test server's configuration without loopback peers (the default of the binary).
fn no_loopback_config() -> ServerConfig {
    let mut c = server_config();
    c.peer_policy.allow_loopback = false;
    c
}

fn start(workers: usize) -> TurnService {
    let listeners =
        Listeners::bind_workers(&[SocketAddr::new(LOCALHOST, 0)], true, false, workers).unwrap();
    let mut opts = runtime_options();
    opts.workers = workers;
    let server = Server::new(no_loopback_config(), Instant::now(), now_unix());
    TurnService::start(server, listeners, opts).unwrap()
}

/// The 403 reason phrase of `resp`.
fn forbidden(resp: &[u8]) -> String {
    assert_eq!(error_code(resp), Some(403));
    Message::parse(resp)
        .unwrap()
        .error_code()
        .unwrap()
        .unwrap()
        .reason
        .to_owned()
}

const NOT_A_RELAY: &str =
    "Forbidden: no live relay of this server has this port; allow every port with allow-loopback-peers or allowed-peer-ip";

/// A and B reach each other's relayed addresses both ways (Send/Data and channels).
async fn call(a: &mut Client, ra: SocketAddr, b: &mut Client, rb: SocketAddr) {
    assert_eq!((ra.ip(), rb.ip()), (LOCALHOST, LOCALHOST));
    a.create_permission(&[rb]).await;
    b.create_permission(&[ra]).await;
    a.send_indication(rb, b"hello b").await;
    assert_eq!(
        b.recv_relayed().await,
        Relayed::Data {
            peer: ra,
            data: b"hello b".to_vec()
        }
    );
    b.send_indication(ra, b"hello a").await;
    assert_eq!(
        a.recv_relayed().await,
        Relayed::Data {
            peer: rb,
            data: b"hello a".to_vec()
        }
    );
    a.channel_bind(0x4001, rb).await;
    b.channel_bind(0x4002, ra).await;
    for i in 0..10u8 {
        let msg = [i; 101];
        a.send_channel_data(0x4001, &msg).await;
        assert_eq!(
            b.recv_relayed().await,
            Relayed::Channel {
                channel: 0x4002,
                data: msg.to_vec()
            }
        );
        b.send_channel_data(0x4002, &msg[..7]).await;
        assert_eq!(
            a.recv_relayed().await,
            Relayed::Channel {
                channel: 0x4001,
                data: msg[..7].to_vec()
            }
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_to_relay_on_loopback_without_allow_loopback_peers() {
    let server = start(1);
    let mut a = Client::udp(server.udp_addrs()[0]).await;
    let mut b = Client::udp(server.udp_addrs()[0]).await;
    let ra = a.allocate().await;
    let rb = b.allocate().await;
    call(&mut a, ra, &mut b, rb).await;

    // Another loopback port: a live UDP socket that answers everything it receives.
    let other = EchoPeer::start().await;
    let resp = a
        .request(Method::CREATE_PERMISSION, |e| {
            e.xor_address(attr::XOR_PEER_ADDRESS, &other.addr)?;
            Ok(())
        })
        .await;
    assert_eq!(forbidden(&resp), NOT_A_RELAY);
    let resp = a
        .request(Method::CHANNEL_BIND, |e| {
            e.channel_number(0x4003)?;
            e.xor_address(attr::XOR_PEER_ADDRESS, &other.addr)?;
            Ok(())
        })
        .await;
    assert_eq!(forbidden(&resp), NOT_A_RELAY);
    // A holds a permission for 127.0.0.1 (through B's relay), yet nothing reaches the
    // other port: the echo would answer, and A hears nothing.
    let before = server.stats();
    a.send_indication(other.addr, b"to another port").await;
    // From another port to A's relay: dropped too.
    let stranger = tokio::net::UdpSocket::bind(SocketAddr::new(LOCALHOST, 0))
        .await
        .unwrap();
    stranger.send_to(b"from another port", ra).await.unwrap();
    assert_eq!(a.recv_within(Duration::from_millis(300)).await, None);
    eventually("both drops to be counted", || {
        let s = server.stats();
        s.dropped_peer_denied == before.dropped_peer_denied + 1
            && s.dropped_no_permission == before.dropped_no_permission + 1
    })
    .await;

    // B's allocation ends: its address is no relay any more.
    let resp = b
        .request(Method::REFRESH, |e| {
            e.u32(attr::LIFETIME, 0)?;
            Ok(())
        })
        .await;
    expect_success(&resp, "Refresh");
    let resp = a
        .request(Method::CREATE_PERMISSION, |e| {
            e.xor_address(attr::XOR_PEER_ADDRESS, &rb)?;
            Ok(())
        })
        .await;
    assert_eq!(forbidden(&resp), NOT_A_RELAY);
    server.shutdown().await;
}

/// Which worker holds the allocation just made: the one whose count went up.
async fn worker_of(server: &TurnService, before: &[u64]) -> usize {
    let mut found = None;
    eventually("the allocation to be counted", || {
        let now: Vec<u64> = server
            .worker_stats()
            .iter()
            .map(|s| s.allocations)
            .collect();
        found = now.iter().zip(before).position(|(n, b)| n > b);
        found.is_some()
    })
    .await;
    found.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_to_relay_across_workers() {
    let server = start(2);
    let counts =
        |s: &TurnService| -> Vec<u64> { s.worker_stats().iter().map(|w| w.allocations).collect() };
    let mut a = Client::udp(server.udp_addrs()[0]).await;
    let before = counts(&server);
    let ra = a.allocate().await;
    let wa = worker_of(&server, &before).await;
    // New client ports until the kernel's SO_REUSEPORT hash picks the other worker
    // (each try has an even chance; the ones on A's worker stay allocated).
    let mut b = None;
    let mut others = Vec::new();
    for _ in 0..40 {
        let mut c = Client::udp(server.udp_addrs()[0]).await;
        let before = counts(&server);
        let rc = c.allocate().await;
        if worker_of(&server, &before).await != wa {
            b = Some((c, rc));
            break;
        }
        others.push(c);
    }
    let (mut b, rb) = b.expect("no client reached the second worker in 40 tries");
    call(&mut a, ra, &mut b, rb).await;

    // Another loopback port (an ephemeral one, never in the relay range) stays
    // refused on both workers.
    let other = EchoPeer::start().await;
    for c in [&mut a, &mut b] {
        let resp = c
            .request(Method::CREATE_PERMISSION, |e| {
                e.xor_address(attr::XOR_PEER_ADDRESS, &other.addr)?;
                Ok(())
            })
            .await;
        assert_eq!(forbidden(&resp), NOT_A_RELAY);
    }
    eventually("both workers to count relayed packets", || {
        server
            .worker_stats()
            .iter()
            .all(|w| w.packets_to_peers > 0 && w.packets_from_peers > 0)
    })
    .await;
    drop(others);
    server.shutdown().await;
}
