//! tsunagi behind a load balancer or proxy, in-process on 127.0.0.1 port 0: PROXY
//! protocol headers (v1 and v2) on the TURN TCP listener and on the front ports (plain,
//! and before TLS), and `X-Forwarded-For` from trusted proxies; then a real HAProxy
//! (Debian package `haproxy`) in front of both.
//!
//! A listed proxy is 127.0.0.2 (or .3): a test "is" that proxy by binding its socket
//! there, and an unlisted peer connects from 127.0.0.1. What the server made of a
//! connection shows where a user sees it: the XOR-MAPPED-ADDRESS of a STUN Binding, the
//! counters of `/api/stats`, and the address an HTTP handler gets (`/whoami`, a route
//! of these tests' own that answers with its `ConnectInfo`, which is what the signaling
//! WebSocket and every other handler reads).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod process;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;

use common::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tsunagi::http::{self, HttpCounters, HttpOptions, HttpService, HttpState};
use tsunagi::proxied::ProxySources;
use tsunagi::tls::{CertStore, TlsMaterial};
use tsunagi::turn_runtime::{Listeners, TurnService};
use tsunagi_proxy_protocol::{encode_v1, encode_v2, Addresses};
use tsunagi_stun::{attr, Class, Message, Method};
use tsunagi_turn::Server;

/// The listed proxy (`proxy-protocol-ip` and, in the HTTP tests, `trusted-proxy-ip`).
const PROXY: &str = "127.0.0.2";
/// The HTTP proxy of the HAProxy test (`trusted-proxy-ip`).
const HTTP_PROXY: &str = "127.0.0.3";
/// A client the PROXY headers name: nobody on this host.
const CLIENT: &str = "203.0.113.7";

struct TestServer {
    turn: TurnService,
    http: HttpService,
    tls: Option<TlsMaterial>,
    counters: Arc<HttpCounters>,
}

async fn whoami(ConnectInfo(client): ConnectInfo<SocketAddr>) -> String {
    client.to_string()
}

impl TestServer {
    /// TURN (UDP and TCP) and HTTP (with TLS when `tls`) on 127.0.0.1, expecting PROXY
    /// headers from `proxy_protocol` and believing `X-Forwarded-For` from `trusted`.
    async fn start(tls: bool, proxy_protocol: &[&str], trusted: &[&str]) -> Self {
        Self::start_with(tls, proxy_protocol, trusted, http::HANDSHAKE_TIMEOUT).await
    }

    /// [`TestServer::start`] with the front ports' handshake timeout.
    async fn start_with(
        tls: bool,
        proxy_protocol: &[&str],
        trusted: &[&str],
        handshake_timeout: Duration,
    ) -> Self {
        let ranges = |l: &[&str]| ProxySources::new(l.iter().map(|s| s.parse().unwrap()).collect());
        let listeners = Listeners::bind(&[SocketAddr::new(LOCALHOST, 0)], true, true).unwrap();
        let mut opts = runtime_options();
        opts.proxy_protocol = ranges(proxy_protocol);
        let server = Server::new(server_config(), Instant::now(), now_unix());
        let turn = TurnService::start(server, listeners, opts).unwrap();
        let tls = tls.then(|| {
            TlsMaterial::self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap()
        });
        let store = tls
            .as_ref()
            .map(|m| CertStore::new(m, "self-signed").unwrap());
        let http_opts = HttpOptions {
            turn: Some(turn.streams()),
            proxy_protocol: ranges(proxy_protocol),
            trusted_proxies: ranges(trusted),
            handshake_timeout,
            ..HttpOptions::new(100, store)
        };
        let counters = http_opts.counters.clone();
        let state = HttpState::new(Some(turn.stats_handle()), counters.clone(), tls.is_some());
        let extra = axum::Router::new().route("/whoami", axum::routing::get(whoami));
        let http = HttpService::start(
            http::bind(&[SocketAddr::new(LOCALHOST, 0)]).unwrap(),
            http::app(state, extra),
            http_opts,
        )
        .unwrap();
        Self {
            turn,
            http,
            tls,
            counters,
        }
    }

    fn turn_tcp(&self) -> SocketAddr {
        self.turn.tcp_addrs()[0]
    }

    fn http_addr(&self) -> SocketAddr {
        self.http.local_addrs()[0]
    }

    fn http_header_failures(&self) -> u64 {
        self.counters
            .proxy_header_failures
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn shutdown(self) {
        self.http.shutdown().await;
        self.turn.shutdown().await;
    }
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A TCP connection to `to` from `from` (an address on loopback).
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    sock.connect(to).await.unwrap()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum V {
    One,
    Two,
}

/// The header a proxy writes for a client `source` that connected to `destination`.
fn header(v: V, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let addrs = Addresses::Tcp {
        source,
        destination,
    };
    let mut out = Vec::new();
    match v {
        V::One => encode_v1(&addrs, &mut out).unwrap(),
        // With a TLV, as load balancers add them (here HAProxy's unique id).
        V::Two => encode_v2(&addrs, &[(0x05, b"req-1")], &mut out).unwrap(),
    }
    out
}

fn xor_mapped(resp: &[u8]) -> SocketAddr {
    let msg = Message::parse(resp).unwrap();
    assert_eq!(msg.class(), Class::Success);
    assert_eq!(msg.method(), Method::BINDING);
    msg.get_xor_address(attr::XOR_MAPPED_ADDRESS)
        .unwrap()
        .expect("Binding success without XOR-MAPPED-ADDRESS")
}

/// Whether the server closes `stream` within `within` (EOF or reset), having sent
/// nothing.
async fn closed_within<S: AsyncRead + Unpin>(stream: &mut S, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(within, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(n)) => panic!("the server answered: {:02x?}", &buf[..n]),
        Err(_) => false,
    }
}

/// A GET of `path` on `stream` with `headers`; the status and body.
async fn get<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    path: &str,
    headers: &str,
) -> (u16, String) {
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: tsunagi.test\r\nConnection: close\r\n{headers}\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
        .await
        .expect("no response within 5 s")
        .unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a response: {raw}"));
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
    (status, body.unwrap_or_default())
}

/// STUN over TCP after a v1 or a v2 header, on the TURN TCP port and on the HTTP port
/// (where TURN over TCP arrives too): XOR-MAPPED-ADDRESS is the header's client. Then
/// an allocation on such a connection relays for that client, and `LOCAL` (a health
/// check) keeps the proxy's own address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stun_over_tcp_sees_the_client_the_header_names() {
    let s = TestServer::start(false, &[PROXY], &[]).await;
    let mut port = 40_000;
    for to in [s.turn_tcp(), s.http_addr()] {
        for v in [V::One, V::Two] {
            port += 1;
            let client = SocketAddr::new(CLIENT.parse().unwrap(), port);
            let mut stream = connect_from(PROXY, to).await;
            let local = stream.local_addr().unwrap();
            stream.write_all(&header(v, client, to)).await.unwrap();
            let mut c = Client::stream(Box::new(stream), local);
            assert_eq!(xor_mapped(&c.binding().await), client, "{to} {v:?}");
            // The next request on the connection too.
            assert_eq!(xor_mapped(&c.binding().await), client, "{to} {v:?}");
        }
    }

    // A relay for a proxied client: the 5-tuple is the client's, the path the proxy's.
    let peer = EchoPeer::start().await;
    let client = sa("[2001:db8::7]:4711");
    let mut stream = connect_from(PROXY, s.turn_tcp()).await;
    let local = stream.local_addr().unwrap();
    stream
        .write_all(&header(V::Two, client, sa("[2001:db8::1]:3478")))
        .await
        .unwrap();
    let mut c = Client::stream(Box::new(stream), local);
    assert_eq!(xor_mapped(&c.binding().await), client);
    c.allocate().await;
    c.create_permission(&[peer.addr]).await;
    c.send_indication(peer.addr, b"through the proxy").await;
    assert_eq!(
        c.recv_relayed().await,
        Relayed::Data {
            peer: peer.addr,
            data: b"through the proxy".to_vec()
        }
    );

    // LOCAL: the proxy speaks for itself.
    let mut local_header = Vec::new();
    encode_v2(&Addresses::Local, &[], &mut local_header).unwrap();
    let mut stream = connect_from(PROXY, s.turn_tcp()).await;
    let local = stream.local_addr().unwrap();
    stream.write_all(&local_header).await.unwrap();
    let mut c = Client::stream(Box::new(stream), local);
    assert_eq!(xor_mapped(&c.binding().await), local);

    assert_eq!(s.turn.counters().proxy_header_failures, 0);
    assert_eq!(s.http_header_failures(), 0);
    s.shutdown().await;
}

/// On the HTTP port with TLS: the header first, then the handshake. TURN over TLS (by
/// ALPN, and by its first byte without ALPN) and HTTPS all see the header's client;
/// the plain-HTTP rule for loopback still goes by the TCP peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_over_tls_and_https_see_the_client_the_header_names() {
    let s = TestServer::start(true, &[PROXY], &[]).await;
    let m = s.tls.as_ref().unwrap();
    let to = s.http_addr();
    for (i, alpn) in [&[&b"stun.turn"[..]][..], &[]].into_iter().enumerate() {
        let client = SocketAddr::new(CLIENT.parse().unwrap(), 41_000 + i as u16);
        let mut tcp = connect_from(PROXY, to).await;
        let local = tcp.local_addr().unwrap();
        tcp.write_all(&header(V::Two, client, to)).await.unwrap();
        let tls = tls_client(m, alpn)
            .connect("127.0.0.1".try_into().unwrap(), tcp)
            .await
            .unwrap();
        let mut c = Client::stream(Box::new(tls), local);
        assert_eq!(xor_mapped(&c.binding().await), client, "{alpn:?}");
    }

    // HTTPS: the handler sees the header's client.
    let client = sa("203.0.113.7:42000");
    let mut tcp = connect_from(PROXY, to).await;
    tcp.write_all(&header(V::One, client, to)).await.unwrap();
    let tls = tls_client(m, &[b"http/1.1"])
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(get(tls, "/whoami", "").await, (200, client.to_string()));

    // Plain HTTP through a proxy on this host is served (its TCP peer is loopback),
    // and the handler still sees the header's client.
    let mut tcp = connect_from(PROXY, to).await;
    tcp.write_all(&header(V::One, client, to)).await.unwrap();
    assert_eq!(get(tcp, "/whoami", "").await, (200, client.to_string()));
    assert_eq!(
        s.counters
            .plain_http_redirects
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    s.shutdown().await;
}

/// A listed proxy that sends garbage is closed at once; one that sends nothing, within
/// the front ports' handshake timeout (3 s here) on the HTTP port and within the 10 s
/// a TURN stream has for its first frame on the TURN port. Each is counted, on the port
/// it came to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_proxy_without_a_valid_header_is_closed_and_counted() {
    let s = TestServer::start_with(true, &[PROXY], &[], Duration::from_secs(3)).await;
    // What the client would have sent without the proxy, a STUN Binding, a TLS
    // ClientHello and an HTTP request, is not a header.
    let garbage: [&[u8]; 3] = [
        b"\x00\x01\x00\x00\x21\x12\xa4\x42012345678901",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03abcdefghijklmnopqrstuvwxyz",
        b"GET / HTTP/1.1\r\nHost: tsunagi.test\r\n\r\n",
    ];
    for to in [s.turn_tcp(), s.http_addr()] {
        for g in garbage {
            let mut stream = connect_from(PROXY, to).await;
            stream.write_all(g).await.unwrap();
            assert!(
                closed_within(&mut stream, Duration::from_secs(2)).await,
                "{to} kept a connection that began {g:02x?}"
            );
        }
        // A header that stops halfway, then the end of the stream.
        let mut stream = connect_from(PROXY, to).await;
        stream.write_all(b"PROXY TCP4 203.0.113.7 ").await.unwrap();
        stream.shutdown().await.unwrap();
        assert!(closed_within(&mut stream, Duration::from_secs(2)).await);
    }
    assert_eq!(s.turn.counters().proxy_header_failures, 4);
    assert_eq!(s.http_header_failures(), 4);

    // Silence: closed when the time is up, not before (a slow proxy has that long).
    let started = tokio::time::Instant::now();
    let mut quiet_turn = connect_from(PROXY, s.turn_tcp()).await;
    let mut quiet_http = connect_from(PROXY, s.http_addr()).await;
    let http = async {
        let closed = closed_within(&mut quiet_http, Duration::from_secs(8)).await;
        (closed, started.elapsed())
    };
    let turn = async {
        let closed = closed_within(&mut quiet_turn, Duration::from_secs(14)).await;
        (closed, started.elapsed())
    };
    let ((http_closed, http_after), (turn_closed, turn_after)) = tokio::join!(http, turn);
    assert!(http_closed, "the HTTP port kept a silent proxy connection");
    assert!(turn_closed, "the TURN port kept a silent proxy connection");
    assert!(
        http_after >= Duration::from_millis(2900) && http_after < Duration::from_secs(8),
        "HTTP port: closed after {http_after:?}"
    );
    assert!(
        turn_after >= Duration::from_millis(9900),
        "TURN port: closed after {turn_after:?}"
    );
    assert_eq!(s.turn.counters().proxy_header_failures, 5);
    assert_eq!(s.http_header_failures(), 5);

    // The stats report them.
    let (status, body) = get(
        TcpStream::connect(s.http_addr()).await.unwrap(),
        "/api/stats",
        "",
    )
    .await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["http"]["proxyHeaderFailures"], 5, "{v}");
    assert_eq!(v["turn"]["runtime"]["proxyHeaderFailures"], 5, "{v}");
    s.shutdown().await;
}

/// The bound on connections per address that are not yet served counts the client a
/// PROXY header names, not the proxy: many clients through one proxy are not refused,
/// one client is refused past the bound whichever way it comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_address_bound_counts_the_client_the_header_names() {
    let s = TestServer::start_with(false, &[PROXY], &[], Duration::from_secs(8)).await;
    let refused = || {
        s.counters
            .pending_refused
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let limit = http::PENDING_PER_IP as usize;
    let to = s.http_addr();
    // More than the bound through the proxy, each for another client, all silent after
    // the header: none is refused.
    let mut held = Vec::new();
    for i in 0..limit + 8 {
        let client = SocketAddr::new([198, 51, 100, 1 + i as u8].into(), 50_000);
        let mut stream = connect_from(PROXY, to).await;
        stream.write_all(&header(V::Two, client, to)).await.unwrap();
        held.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(refused(), 0);
    for stream in &mut held {
        assert!(!closed_within(stream, Duration::from_millis(10)).await);
    }
    // One client, through the proxy, one connection over the bound: exactly one of them
    // is closed at once.
    let mut same = Vec::new();
    for i in 0..=limit {
        let client = SocketAddr::new(CLIENT.parse().unwrap(), 50_000 + i as u16);
        let mut stream = connect_from(PROXY, to).await;
        stream.write_all(&header(V::One, client, to)).await.unwrap();
        same.push(stream);
    }
    eventually("the connection over the bound to be refused", || {
        refused() == 1
    })
    .await;
    let mut closed = 0;
    for stream in &mut same {
        if closed_within(stream, Duration::from_millis(50)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 1);
    // Another client through the same proxy still has its room.
    let mut other = connect_from(PROXY, to).await;
    other
        .write_all(&header(V::Two, sa("203.0.113.8:50000"), to))
        .await
        .unwrap();
    assert!(!closed_within(&mut other, Duration::from_millis(500)).await);
    assert_eq!(refused(), 1);
    assert_eq!(s.http_header_failures(), 0);
    drop((held, same, other));
    s.shutdown().await;
}

/// A peer that is not listed is served as before; a PROXY header from it is bad
/// input, never believed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_from_an_unlisted_peer_is_not_believed() {
    let s = TestServer::start(false, &[PROXY], &[]).await;
    let client = sa("203.0.113.7:43000");
    // 127.0.0.1 is not listed: its plain STUN is served as ever.
    for to in [s.turn_tcp(), s.http_addr()] {
        let mut c = Client::tcp(to).await;
        assert_eq!(xor_mapped(&c.binding().await), c.local_addr());
    }
    // A v2 header before STUN on the TURN port: not STUN, closed.
    let invalid_before = s.turn.counters().tcp_invalid;
    let mut stream = TcpStream::connect(s.turn_tcp()).await.unwrap();
    stream
        .write_all(&header(V::Two, client, s.turn_tcp()))
        .await
        .unwrap();
    let mut c = Client::stream(Box::new(stream), sa("127.0.0.1:1"));
    c.send_raw(&binding_request()).await;
    assert_eq!(c.recv_within(Duration::from_secs(2)).await, None);
    eventually("the stream to be counted as invalid", || {
        s.turn.counters().tcp_invalid == invalid_before + 1
    })
    .await;
    // A v1 header before an HTTP request on the HTTP port: a bad request line.
    let mut stream = TcpStream::connect(s.http_addr()).await.unwrap();
    stream
        .write_all(&header(V::One, client, s.http_addr()))
        .await
        .unwrap();
    let (status, _) = get(stream, "/whoami", "").await;
    assert_eq!(status, 400);
    // From another address on loopback that is not listed either.
    let mut stream = connect_from("127.0.0.3", s.http_addr()).await;
    stream
        .write_all(&header(V::Two, client, s.http_addr()))
        .await
        .unwrap();
    assert!(closed_within(&mut stream, Duration::from_secs(12)).await);
    assert_eq!(s.turn.counters().proxy_header_failures, 0);
    assert_eq!(s.http_header_failures(), 0);
    s.shutdown().await;
}

fn binding_request() -> Vec<u8> {
    let mut buf = [0u8; 64];
    let mut enc =
        tsunagi_stun::MessageEncoder::new(&mut buf, Class::Request, Method::BINDING, random_tid())
            .unwrap();
    enc.fingerprint().unwrap();
    let n = enc.finish();
    buf[..n].to_vec()
}

/// `X-Forwarded-For` from a trusted proxy names the client handlers see: the rightmost
/// entry that is not a trusted proxy itself. From anyone else it is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_from_a_trusted_proxy_names_the_client() {
    let s = TestServer::start(true, &[], &[PROXY, "10.0.0.0/8"]).await;
    let to = s.http_addr();
    let whoami = |from: &'static str, headers: &'static str| async move {
        let stream = connect_from(from, to).await;
        let local = stream.local_addr().unwrap();
        (get(stream, "/whoami", headers).await, local)
    };
    let ((status, body), _) = whoami(PROXY, "X-Forwarded-For: 198.51.100.7\r\n").await;
    assert_eq!((status, body.as_str()), (200, "198.51.100.7:0"));
    // What a client wrote to the left of the address the proxies saw is not believed;
    // a chain of trusted proxies is walked through.
    let ((_, body), _) = whoami(
        PROXY,
        "X-Forwarded-For: 6.6.6.6, 198.51.100.7\r\nX-Forwarded-For: 10.1.2.3\r\n",
    )
    .await;
    assert_eq!(body, "198.51.100.7:0");
    let ((_, body), _) = whoami(PROXY, "X-Forwarded-For: [2001:db8::7]:4711\r\n").await;
    assert_eq!(body, "[2001:db8::7]:4711");
    // A trusted proxy without the header: itself.
    let ((_, body), local) = whoami(PROXY, "").await;
    assert_eq!(body, local.to_string());
    // An untrusted peer: itself, whatever it says.
    let ((_, body), local) = whoami("127.0.0.1", "X-Forwarded-For: 198.51.100.7\r\n").await;
    assert_eq!(body, local.to_string());
    // Plain HTTP with TLS on: served, because the TCP peer is loopback, even though
    // the forwarded client is not; no redirect.
    assert_eq!(
        s.counters
            .plain_http_redirects
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    // Over HTTPS the same.
    let m = s.tls.as_ref().unwrap();
    let tcp = connect_from(PROXY, to).await;
    let tls = tls_client(m, &[b"http/1.1"])
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let (_, body) = get(tls, "/whoami", "X-Forwarded-For: 198.51.100.8\r\n").await;
    assert_eq!(body, "198.51.100.8:0");
    s.shutdown().await;
}

/// Each request of a kept-alive connection from a trusted proxy is judged on its own
/// header: a proxy reuses its connections for many clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_of_a_proxy_connection_names_its_own_client() {
    let s = TestServer::start(false, &[], &[PROXY]).await;
    let mut stream = connect_from(PROXY, s.http_addr()).await;
    let mut seen = Vec::new();
    for client in ["198.51.100.1", "198.51.100.2"] {
        let req = format!(
            "GET /whoami HTTP/1.1\r\nHost: tsunagi.test\r\nX-Forwarded-For: {client}\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&raw).contains(":0") {
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&raw));
            raw.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&raw).into_owned();
        seen.push(text.rsplit("\r\n\r\n").next().unwrap().to_owned());
    }
    assert_eq!(seen, ["198.51.100.1:0", "198.51.100.2:0"]);
    s.shutdown().await;
}

/// A real HAProxy in front: TCP mode with `send-proxy-v2` to the TURN TCP port and
/// `send-proxy` (v1) to the HTTP port from 127.0.0.2 (`proxy-protocol-ip`), and HTTP
/// mode with `option forwardfor` from 127.0.0.3 (`trusted-proxy-ip`). Clients connect to
/// HAProxy from 127.0.0.4: TURN and the HTTP handlers see 127.0.0.4 (and the client's
/// port, where the proxy passes it on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_real_haproxy() {
    // HTTP mode comes from an address of its own: it sends no PROXY header.
    let s = TestServer::start(false, &[PROXY], &[HTTP_PROXY]).await;
    let ports: Vec<u16> = (0..3).map(|_| free_tcp_port()).collect();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("haproxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global
    maxconn 100
defaults
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend turn
    mode tcp
    bind 127.0.0.1:{p0}
    default_backend turn
backend turn
    mode tcp
    server tsunagi {turn} send-proxy-v2 source {PROXY}
frontend tcp_http
    mode tcp
    bind 127.0.0.1:{p1}
    default_backend tcp_http
backend tcp_http
    mode tcp
    server tsunagi {http} send-proxy source {PROXY}
frontend web
    mode http
    bind 127.0.0.1:{p2}
    option forwardfor
    default_backend web
backend web
    mode http
    server tsunagi {http} source {HTTP_PROXY}
",
            p0 = ports[0],
            p1 = ports[1],
            p2 = ports[2],
            turn = s.turn_tcp(),
            http = s.http_addr(),
        ),
    )
    .unwrap();
    let check = std::process::Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(&cfg)
        .output()
        .expect("haproxy is not installed: apt-get install haproxy (scripts/test does it)");
    assert!(
        check.status.success(),
        "haproxy -c: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let mut haproxy = KillOnDrop(
        std::process::Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let front = |i: usize| SocketAddr::new(LOCALHOST, ports[i]);
    // Listening once its ports cannot be bound (a probe connection would make HAProxy
    // connect to tsunagi).
    for i in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpListener::bind(front(i)).is_ok() {
            assert!(
                haproxy.0.try_wait().unwrap().is_none(),
                "haproxy exited before listening"
            );
            assert!(Instant::now() < deadline, "haproxy is not listening");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // TURN over TCP through HAProxy (v2): the client's own address, not HAProxy's.
    for i in [0, 1] {
        let stream = connect_from("127.0.0.4", front(i)).await;
        let local = stream.local_addr().unwrap();
        let mut c = Client::stream(Box::new(stream), local);
        assert_eq!(
            xor_mapped(&c.binding().await),
            local,
            "through frontend {i}"
        );
    }
    // An allocation through HAProxy relays.
    let peer = EchoPeer::start().await;
    let stream = connect_from("127.0.0.4", front(0)).await;
    let local = stream.local_addr().unwrap();
    let mut c = Client::stream(Box::new(stream), local);
    c.allocate().await;
    c.create_permission(&[peer.addr]).await;
    c.send_indication(peer.addr, b"through haproxy").await;
    assert_eq!(
        c.recv_relayed().await,
        Relayed::Data {
            peer: peer.addr,
            data: b"through haproxy".to_vec()
        }
    );
    // HTTP through HAProxy: by the v1 header in TCP mode, by X-Forwarded-For in HTTP mode
    // (no port in that header: 0).
    let stream = connect_from("127.0.0.4", front(1)).await;
    let local = stream.local_addr().unwrap();
    assert_eq!(get(stream, "/whoami", "").await, (200, local.to_string()));
    let stream = connect_from("127.0.0.4", front(2)).await;
    assert_eq!(
        get(stream, "/whoami", "").await,
        (200, "127.0.0.4:0".to_owned())
    );

    assert_eq!(s.turn.counters().proxy_header_failures, 0);
    assert_eq!(s.http_header_failures(), 0);
    drop(c);
    let _ = haproxy.0.kill();
    let _ = std::fs::remove_dir_all(&dir);
    s.shutdown().await;
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port free on 127.0.0.1 (tests/ports: outside the ephemeral range).
fn free_tcp_port() -> u16 {
    process::free_port()
}

/// The binary, configured the way a user configures it: both options from the command
/// line, the startup log saying what is expected of whom, STUN through a PROXY header
/// on the TURN and HTTP ports, the signaling WebSocket's client (logged at debug) from
/// `X-Forwarded-For`, and a header-less connection from a listed proxy counted in
/// `/api/stats` and logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_takes_both_options() {
    let mut p = process::Process::start(
        "behind-proxy",
        &["--proxy-protocol-ip", PROXY, "--log-level", "tsunagi=debug"],
        &[("TSUNAGI_TRUSTED_PROXY_IP", HTTP_PROXY)],
    );
    p.first_health();
    let log = p.log_text();
    assert!(
        log.contains("127.0.0.2") && log.contains("must begin with a PROXY header"),
        "{log}"
    );
    assert!(
        log.contains("127.0.0.3") && log.contains("X-Forwarded-For names the client"),
        "{log}"
    );

    let turn: SocketAddr = p.turn.parse().unwrap();
    let http: SocketAddr = p.http.parse().unwrap();
    for (to, v) in [(turn, V::Two), (http, V::One)] {
        let client = sa("203.0.113.7:44000");
        let mut stream = connect_from(PROXY, to).await;
        let local = stream.local_addr().unwrap();
        stream.write_all(&header(v, client, to)).await.unwrap();
        let mut c = Client::stream(Box::new(stream), local);
        assert_eq!(xor_mapped(&c.binding().await), client, "{to}");
    }

    let stream = connect_from(HTTP_PROXY, http).await;
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{http}/ws"),
    )
    .unwrap();
    req.headers_mut()
        .insert("x-forwarded-for", "6.6.6.6, 198.51.100.7".parse().unwrap());
    let (ws, _) = tokio_tungstenite::client_async(req, stream).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let opened = loop {
        let log = p.log_text();
        if let Some(line) = log
            .lines()
            .find(|l| l.contains("signaling connection opened"))
        {
            break line.to_owned();
        }
        assert!(Instant::now() < deadline, "no signaling log line: {log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(opened.contains("client=\"198.51.100.7:0\""), "{opened}");
    drop(ws);

    let mut stream = connect_from(PROXY, http).await;
    stream.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    assert!(closed_within(&mut stream, Duration::from_secs(2)).await);
    let (_, stats) = process::get_json(&p.http, "/api/stats").unwrap();
    assert_eq!(stats["http"]["proxyHeaderFailures"], 1, "{stats}");
    assert!(
        p.log_text()
            .contains("connection from a proxy-protocol-ip address closed"),
        "{}",
        p.log_text()
    );
}
