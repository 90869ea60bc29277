//! STUN/TURN over real sockets on 127.0.0.1: an in-process tsunagi on port 0, a client
//! written with the `tsunagi_stun` encoder, UDP echo peers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tsunagi_stun::{attr, Class, Message, Method};
use tsunagi_turn::auth::rest_credential;

fn xor_mapped(resp: &[u8]) -> SocketAddr {
    let msg = Message::parse(resp).unwrap();
    assert_eq!(msg.class(), Class::Success);
    assert_eq!(msg.method(), Method::BINDING);
    msg.get_xor_address(attr::XOR_MAPPED_ADDRESS)
        .unwrap()
        .expect("Binding success without XOR-MAPPED-ADDRESS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stun_binding_over_udp() {
    let server = start_server();
    let mut c = Client::udp(server.udp_addrs()[0]).await;
    let resp = c.binding().await;
    assert_eq!(xor_mapped(&resp), c.local_addr());
    assert!(Message::parse(&resp).unwrap().has_valid_fingerprint());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stun_binding_over_tcp() {
    let server = start_server();
    let mut c = Client::tcp(server.tcp_addrs()[0]).await;
    // Two requests on one connection, the second written byte by byte to exercise
    // the stream framing.
    let resp = c.binding().await;
    assert_eq!(xor_mapped(&resp), c.local_addr());
    let tid = random_tid();
    let mut buf = [0u8; 64];
    let mut enc =
        tsunagi_stun::MessageEncoder::new(&mut buf, Class::Request, Method::BINDING, tid).unwrap();
    enc.software("test").unwrap();
    let n = enc.finish();
    for b in &buf[..n] {
        c.send_raw(std::slice::from_ref(b)).await;
    }
    let resp = c.recv().await;
    assert_eq!(Message::parse(&resp).unwrap().transaction_id(), tid);
    assert_eq!(xor_mapped(&resp), c.local_addr());
    server.shutdown().await;
}

/// Allocate, permissions, Send/Data indications and ChannelData both ways.
async fn full_flow(c: &mut Client, peer: &EchoPeer) {
    let relay = c.allocate().await;
    assert_eq!(relay.ip(), LOCALHOST);

    c.create_permission(&[peer.addr]).await;
    c.send_indication(peer.addr, b"hello via send indication")
        .await;
    assert_eq!(
        c.recv_relayed().await,
        Relayed::Data {
            peer: peer.addr,
            data: b"hello via send indication".to_vec()
        }
    );

    c.channel_bind(0x4001, peer.addr).await;
    // Odd lengths: over TCP both directions carry padding.
    for payload in [&b"abc"[..], b"hello via channel", b"x"] {
        c.send_channel_data(0x4001, payload).await;
        assert_eq!(
            c.recv_relayed().await,
            Relayed::Channel {
                channel: 0x4001,
                data: payload.to_vec()
            }
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_flow_over_udp() {
    let server = start_server();
    let peer = EchoPeer::start().await;
    let mut c = Client::udp(server.udp_addrs()[0]).await;

    // The first Allocate, without credentials, is challenged.
    let resp = c
        .request(Method::ALLOCATE, |e| {
            e.requested_transport(attr::PROTO_UDP)?;
            Ok(())
        })
        .await;
    // `request` answered the challenge itself; the result is a success.
    let relay = relayed_address(&resp);
    // A second Allocate on the same 5-tuple is a mismatch (437).
    let again = c
        .request(Method::ALLOCATE, |e| {
            e.requested_transport(attr::PROTO_UDP)?;
            Ok(())
        })
        .await;
    assert_eq!(error_code(&again), Some(437));
    // Refresh to 0 deletes it; then the full flow on a new allocation.
    let resp = c
        .request(Method::REFRESH, |e| {
            e.u32(attr::LIFETIME, 0)?;
            Ok(())
        })
        .await;
    expect_success(&resp, "Refresh");
    eventually("the relay port to be closed", || {
        std::net::UdpSocket::bind(relay).is_ok()
    })
    .await;

    full_flow(&mut c, &peer).await;
    let stats = server.stats();
    assert!(stats.allocations_created >= 2, "{stats:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_flow_over_tcp() {
    let server = start_server();
    let peer = EchoPeer::start().await;
    let mut c = Client::tcp(server.tcp_addrs()[0]).await;
    full_flow(&mut c, &peer).await;
    assert_eq!(server.stats().allocations, 1);
    // Closing the connection deletes the allocation (RFC 8656 §3.1... TCP 5-tuple).
    drop(c);
    let mut stats = server.watch_stats();
    tokio::time::timeout(
        Duration::from_secs(5),
        stats.wait_for(|s| s.allocations == 0),
    )
    .await
    .expect("allocation not deleted after the TCP connection closed")
    .unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_credentials_are_accepted() {
    let server = start_server();
    let peer = EchoPeer::start().await;
    let (user, pass) = rest_credential(REST_SECRET, "bob", now_unix() + 3600);
    let mut c = Client::udp(server.udp_addrs()[0])
        .await
        .with_credentials(&user, &pass);
    full_flow(&mut c, &peer).await;

    // An expired one is refused.
    let (user, pass) = rest_credential(REST_SECRET, "bob", now_unix() - 10);
    let mut c = Client::udp(server.udp_addrs()[0])
        .await
        .with_credentials(&user, &pass);
    let resp = c
        .request(Method::ALLOCATE, |e| {
            e.requested_transport(attr::PROTO_UDP)?;
            Ok(())
        })
        .await;
    assert_eq!(error_code(&resp), Some(401));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_gets_401() {
    let server = start_server();
    for tcp in [false, true] {
        let mut c = if tcp {
            Client::tcp(server.tcp_addrs()[0]).await
        } else {
            Client::udp(server.udp_addrs()[0]).await
        }
        .with_credentials(USER, "not-the-password");
        let resp = c
            .request(Method::ALLOCATE, |e| {
                e.requested_transport(attr::PROTO_UDP)?;
                Ok(())
            })
            .await;
        assert_eq!(error_code(&resp), Some(401), "tcp={tcp}");
        let msg = Message::parse(&resp).unwrap();
        assert!(
            msg.get(attr::NONCE).is_some(),
            "a 401 carries a fresh nonce"
        );
    }
    // Stats are published by the core after each batch, possibly after the response
    // has already reached the client.
    eventually("both failures to be counted", || {
        server.stats().auth_failures >= 2
    })
    .await;
    assert_eq!(server.stats().allocations, 0);
    server.shutdown().await;
}

/// THE IMPORTANT ONE: a send that fails at the socket (a peer the OS cannot route to)
/// must not disturb relaying to a working peer of the same allocation, in either
/// direction, over indications and channels alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_peer_does_not_break_the_allocation() {
    let server = start_server();
    let good = EchoPeer::start().await;
    let bad: SocketAddr = "198.51.100.9:9".parse().unwrap();
    // Kept open until the end: closing the TCP one would delete its allocation.
    let mut clients = Vec::new();
    for tcp in [false, true] {
        let mut c = if tcp {
            Client::tcp(server.tcp_addrs()[0]).await
        } else {
            Client::udp(server.udp_addrs()[0]).await
        };
        c.allocate().await;
        c.create_permission(&[good.addr, bad]).await;
        c.channel_bind(0x4000, bad).await;
        c.channel_bind(0x4002, good.addr).await;

        for round in 0..3u8 {
            // Fails at the socket in a namespace with only loopback (ENETUNREACH), and
            // from a relay bound to 127.0.0.1 on most other machines (EINVAL).
            c.send_indication(bad, b"to nowhere").await;
            c.send_channel_data(0x4000, b"to nowhere either").await;

            let msg = format!("good peer, round {round}");
            c.send_indication(good.addr, msg.as_bytes()).await;
            assert_eq!(
                c.recv_relayed().await,
                // The good peer has a channel, so its answer comes as ChannelData.
                Relayed::Channel {
                    channel: 0x4002,
                    data: msg.as_bytes().to_vec()
                },
                "tcp={tcp}"
            );
            c.send_channel_data(0x4002, msg.as_bytes()).await;
            assert_eq!(
                c.recv_relayed().await,
                Relayed::Channel {
                    channel: 0x4002,
                    data: msg.as_bytes().to_vec()
                },
                "tcp={tcp}"
            );
        }
        // The allocation is still healthy for requests too.
        c.create_permission(&[good.addr]).await;
        clients.push(c);
    }
    let counters = server.counters();
    // On a machine with a route to 198.51.100.0/24 the sends may succeed; where they
    // fail, each failure was counted and nothing else was affected.
    eprintln!("send errors counted: {}", counters.send_errors);
    // 12 sends to the unroutable peer and 12 to the good one were attempted (stats are
    // published after each batch, possibly after the last echo arrived).
    eventually("all sends to be counted", || {
        server.stats().packets_to_peers >= 24
    })
    .await;
    assert_eq!(server.stats().allocations, 2);
    server.shutdown().await;
}

/// Both clients of a call relayed by this server: each allocation's peer is the other
/// allocation's relay address. The runtime hands such packets from one allocation to
/// the other without the kernel; what each client sees, and every check, must be as if
/// they had gone through the relay sockets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocations_of_one_server_relay_to_each_other() {
    let server = start_server();
    let mut a = Client::udp(server.udp_addrs()[0]).await;
    let mut b = Client::udp(server.udp_addrs()[0]).await;
    let ra = a.allocate().await;
    let rb = b.allocate().await;
    a.create_permission(&[rb]).await;
    // B has no permission for A yet: A's packets are dropped at B's allocation.
    a.send_indication(rb, b"not yet").await;
    assert_eq!(b.recv_within(Duration::from_millis(200)).await, None);
    b.create_permission(&[ra]).await;

    // Send indication from A arrives at B as a Data indication from A's relay address.
    a.send_indication(rb, b"hello b").await;
    assert_eq!(
        b.recv_relayed().await,
        Relayed::Data {
            peer: ra,
            data: b"hello b".to_vec()
        }
    );
    // Channels both ways.
    a.channel_bind(0x4001, rb).await;
    b.channel_bind(0x4007, ra).await;
    for i in 0..20u8 {
        let msg = [i; 37];
        a.send_channel_data(0x4001, &msg).await;
        assert_eq!(
            b.recv_relayed().await,
            Relayed::Channel {
                channel: 0x4007,
                data: msg.to_vec()
            }
        );
        b.send_channel_data(0x4007, &msg[..5]).await;
        assert_eq!(
            a.recv_relayed().await,
            Relayed::Channel {
                channel: 0x4001,
                data: msg[..5].to_vec()
            }
        );
    }
    // B's allocation ends: A's packets to its old relay address go nowhere, and A's
    // allocation keeps working.
    let resp = b
        .request(Method::REFRESH, |e| {
            e.u32(attr::LIFETIME, 0)?;
            Ok(())
        })
        .await;
    expect_success(&resp, "Refresh");
    a.send_channel_data(0x4001, b"to a closed relay").await;
    assert_eq!(b.recv_within(Duration::from_millis(200)).await, None);
    a.create_permission(&[rb]).await;
    // Stats are published after each batch.
    eventually("every packet to be counted", || {
        let s = server.stats();
        s.packets_to_peers == 43 && s.packets_from_peers == 41
    })
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn even_port_reservation_gives_the_next_port() {
    let server = start_server();
    let mut a = Client::udp(server.udp_addrs()[0]).await;
    let resp = a
        .request(Method::ALLOCATE, |e| {
            e.requested_transport(attr::PROTO_UDP)?;
            e.even_port(true)?;
            Ok(())
        })
        .await;
    let even = relayed_address(&resp);
    assert_eq!(even.port() % 2, 0, "{even}");
    let token = Message::parse(&resp)
        .unwrap()
        .get(attr::RESERVATION_TOKEN)
        .expect("EVEN-PORT with R set returns a RESERVATION-TOKEN")
        .to_vec();
    // The odd port is held by the server while reserved.
    let odd = SocketAddr::new(even.ip(), even.port() + 1);
    assert!(std::net::UdpSocket::bind(odd).is_err(), "{odd} not held");

    let peer = EchoPeer::start().await;
    let mut b = Client::udp(server.udp_addrs()[0]).await;
    let resp = b
        .request(Method::ALLOCATE, |e| {
            e.requested_transport(attr::PROTO_UDP)?;
            e.attr(attr::RESERVATION_TOKEN, &token)?;
            Ok(())
        })
        .await;
    assert_eq!(relayed_address(&resp), odd);
    // The reserved socket relays like any other.
    b.create_permission(&[peer.addr]).await;
    b.send_indication(peer.addr, b"odd").await;
    assert_eq!(
        b.recv_relayed().await,
        Relayed::Data {
            peer: peer.addr,
            data: b"odd".to_vec()
        }
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dont_fragment_allocation_relays() {
    let server = start_server();
    let peer = EchoPeer::start().await;
    let mut c = Client::udp(server.udp_addrs()[0]).await;
    let resp = c
        .request(Method::ALLOCATE, |e| {
            e.requested_transport(attr::PROTO_UDP)?;
            e.flag(attr::DONT_FRAGMENT)?;
            Ok(())
        })
        .await;
    relayed_address(&resp);
    c.create_permission(&[peer.addr]).await;
    c.send_indication(peer.addr, b"df").await;
    assert_eq!(
        c.recv_relayed().await,
        Relayed::Data {
            peer: peer.addr,
            data: b"df".to_vec()
        }
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_tcp_stream_is_closed() {
    let server = start_server();
    let mut c = Client::tcp(server.tcp_addrs()[0]).await;
    // A TLS ClientHello sent to the plain TCP port. (Plain HTTP would not do: "GE"
    // frames as ChannelData on channel 0x4745.)
    c.send_raw(&[
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ])
    .await;
    assert_eq!(c.recv_within(Duration::from_secs(5)).await, None);
    eventually("the invalid stream to be counted", || {
        server.counters().tcp_invalid == 1
    })
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_tcp_stream_is_closed_but_idle_clients_stay() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start_server();
    let mut idle = Client::tcp(server.tcp_addrs()[0]).await;
    idle.binding().await;
    // An HTTP request frames as ChannelData with a length it never completes.
    let mut http = tokio::net::TcpStream::connect(server.tcp_addrs()[0])
        .await
        .unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut sink = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(30), http.read(&mut sink)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the stalled connection is closed by the server: {read:?}"
    );
    eventually("the stalled stream to be counted", || {
        server.counters().tcp_invalid == 1
    })
    .await;
    // The client that finished its frames and then went quiet for as long is still served.
    idle.binding().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_are_capped() {
    let mut opts = runtime_options();
    opts.max_tcp_connections = 1;
    let server = start_server_with(server_config(), opts);
    let mut first = Client::tcp(server.tcp_addrs()[0]).await;
    first.binding().await;
    // The second connection waits in the backlog, unserved.
    let mut second = Client::tcp(server.tcp_addrs()[0]).await;
    let tid = random_tid();
    let mut buf = [0u8; 64];
    let n = tsunagi_stun::MessageEncoder::new(&mut buf, Class::Request, Method::BINDING, tid)
        .unwrap()
        .finish();
    second.send_raw(&buf[..n]).await;
    assert_eq!(second.recv_within(Duration::from_millis(300)).await, None);
    // When the first goes, the second is served.
    drop(first);
    let resp = second.recv().await;
    assert_eq!(Message::parse(&resp).unwrap().transaction_id(), tid);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_relays_quickly() {
    let server = start_server();
    let mut c = Client::udp(server.udp_addrs()[0]).await;
    let relay = c.allocate().await;
    let mut t = Client::tcp(server.tcp_addrs()[0]).await;
    let tcp_relay = t.allocate().await;
    let udp = server.udp_addrs()[0];
    let started = std::time::Instant::now();
    let stats = server.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(stats.allocations, 2);
    for addr in [relay, tcp_relay, udp] {
        eventually("a port to be free after shutdown", || {
            std::net::UdpSocket::bind(addr).is_ok()
        })
        .await;
    }
    // The TCP client sees its connection close.
    assert_eq!(t.recv_within(Duration::from_secs(2)).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_peer_needs_the_option() {
    let mut config = server_config();
    config.peer_policy.allow_loopback = false;
    let server = start_server_with(config, runtime_options());
    let peer = EchoPeer::start().await;
    let mut c = Client::udp(server.udp_addrs()[0]).await;
    c.allocate().await;
    let resp = c
        .request(Method::CREATE_PERMISSION, |e| {
            e.xor_address(attr::XOR_PEER_ADDRESS, &peer.addr)?;
            Ok(())
        })
        .await;
    assert_eq!(error_code(&resp), Some(403));
    let reason = Message::parse(&resp)
        .unwrap()
        .error_code()
        .unwrap()
        .unwrap()
        .reason
        .to_owned();
    assert!(reason.contains("allow-loopback-peers"), "{reason}");
    server.shutdown().await;
}
