//! The HTTP(S) server and TURN over TLS, in-process on 127.0.0.1 port 0: the embedded
//! web client and its headers, `/healthz`, `/api/stats` and `/metrics` against a real
//! allocation, limits, shutdown; with a self-signed certificate (what
//! `--tls-self-signed` makes), HTTPS and a TURN allocation over TLS relaying to a UDP
//! echo peer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::routing::get;
use clap::Parser;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tsunagi::cli::Cli;
use tsunagi::config::{Config, PrimaryIps, TlsSource};
use tsunagi::http::{self, HttpOptions, HttpService, HttpState};
use tsunagi::supervise::Health;
use tsunagi::tls::{self, CertStore, TlsMaterial};
use tsunagi::turn_runtime::{Listeners, TurnService};
use tsunagi_turn::Server;

const INDEX_HTML: &[u8] = include_bytes!("../../../web/index.html");

/// The servers' handshake timeout here (10 s in the binary), so that the test of
/// silent connections waits less.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

async fn ws_echo(ws: WebSocketUpgrade) -> axum::response::Response {
    ws.on_upgrade(|mut socket| async move {
        while let Some(Ok(m)) = socket.recv().await {
            if socket.send(m).await.is_err() {
                break;
            }
        }
    })
}

/// tsunagi's TURN and HTTP services, started the way `main` starts them.
struct TestServer {
    turn: TurnService,
    http: HttpService,
    tls: Option<TlsMaterial>,
    /// The certificate store the TLS ports serve from (with TLS).
    store: Option<Arc<CertStore>>,
}

impl TestServer {
    async fn start(tls: bool) -> Self {
        Self::start_with(tls, 100).await
    }

    async fn start_with(tls: bool, max_connections: usize) -> Self {
        let tls = tls.then(|| {
            // The names come from the configuration, as with --tls-self-signed.
            let cli = Cli::try_parse_from([
                "tsunagi",
                "--tls-self-signed",
                "--listening-ip",
                "127.0.0.1",
                "--http-ip",
                "127.0.0.1",
            ])
            .unwrap();
            let config =
                Config::resolve(cli.into_serve_options(), None, PrimaryIps::default).unwrap();
            assert_eq!(config.tls, Some(TlsSource::SelfSigned { explicit: true }));
            let names = tls::self_signed_names(&config);
            assert!(names.contains(&"localhost".to_owned()), "{names:?}");
            assert!(names.contains(&"127.0.0.1".to_owned()), "{names:?}");
            TlsMaterial::self_signed(names).unwrap()
        });
        let listeners = Listeners::bind(&[SocketAddr::new(LOCALHOST, 0)], true, true).unwrap();
        let health = Health::new();
        let mut opts = runtime_options();
        opts.health = health.clone();
        let server = Server::new(server_config(), std::time::Instant::now(), now_unix());
        let turn = TurnService::start(server, listeners, opts).unwrap();

        let store = tls
            .as_ref()
            .map(|m| CertStore::new(m, "self-signed").unwrap());
        let http_opts = HttpOptions {
            health: health.clone(),
            turn: Some(turn.streams()),
            handshake_timeout: HANDSHAKE_TIMEOUT,
            ..HttpOptions::new(max_connections, store.clone())
        };
        let state = HttpState::new(
            Some(turn.stats_handle()),
            http_opts.counters.clone(),
            tls.is_some(),
        )
        .with_health(health);
        // Stands in for the signaling routes that main merges in: a WebSocket echo.
        let extra = axum::Router::new().route("/ws", get(ws_echo));
        let listeners = http::bind(&[SocketAddr::new(LOCALHOST, 0)]).unwrap();
        // With TLS, a port of TURN over TLS's own too (as tls-listening-port).
        let tls_ports = match &tls {
            Some(_) => http::bind_tls(&[SocketAddr::new(LOCALHOST, 0)]).unwrap(),
            None => Vec::new(),
        };
        let http = HttpService::start_with_tls_ports(
            listeners,
            tls_ports,
            http::app(state, extra),
            http_opts,
        )
        .unwrap();
        Self {
            turn,
            http,
            tls,
            store,
        }
    }

    fn http_addr(&self) -> SocketAddr {
        self.http.local_addrs()[0]
    }

    /// The port of TURN over TLS's own (with TLS).
    fn tls_port_addr(&self) -> SocketAddr {
        self.http.local_addrs()[1]
    }

    /// A GET over HTTPS when TLS is on, else plain HTTP.
    async fn get(&self, path: &str) -> Response {
        let line = format!("GET {path} HTTP/1.1\r\n");
        match &self.tls {
            None => request(self.http_addr(), &line, "").await,
            Some(m) => {
                let tcp = TcpStream::connect(self.http_addr()).await.unwrap();
                let tls = tls_client(m, &[])
                    .connect("localhost".try_into().unwrap(), tcp)
                    .await
                    .unwrap();
                exchange(tls, self.http_addr(), &line, "").await
            }
        }
    }

    /// A plain-HTTP GET, even when TLS is on.
    async fn get_plain(&self, path: &str) -> Response {
        request(self.http_addr(), &format!("GET {path} HTTP/1.1\r\n"), "").await
    }

    async fn stats(&self) -> Value {
        let r = self.get("/api/stats").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
        serde_json::from_slice(&r.body).unwrap()
    }

    async fn shutdown(self) {
        self.http.shutdown().await;
        self.turn.shutdown().await;
    }
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
}

/// Sends `request_line` + Host + `Connection: close` + `headers` on a new connection
/// and reads the whole response.
async fn request(addr: SocketAddr, request_line: &str, headers: &str) -> Response {
    let stream = TcpStream::connect(addr).await.unwrap();
    exchange(stream, addr, request_line, headers).await
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    addr: SocketAddr,
    request_line: &str,
    headers: &str,
) -> Response {
    let req = format!("{request_line}Host: {addr}\r\nConnection: close\r\n{headers}\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
        .await
        .expect("no complete response within 5 s")
        .unwrap();
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Response {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = std::str::from_utf8(&raw[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    Response {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    }
}

fn assert_security_headers(r: &Response, host: SocketAddr) {
    let csp = r.header("content-security-policy").expect("a CSP on HTML");
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(
        csp.contains(&format!("connect-src 'self' ws://{host} wss://{host}")),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_and_room_links_serve_the_embedded_client() {
    let s = TestServer::start(false).await;
    for path in ["/", "/r/lobby", "/r/some-other_room"] {
        let r = s.get(path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
        assert_eq!(r.header("cache-control"), Some("no-cache"));
        assert_eq!(r.body, INDEX_HTML, "{path}");
        assert_security_headers(&r, s.http_addr());
    }
    // Revalidation: the ETag gives a 304 with no body.
    let etag = s.get("/").await.header("etag").unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let r = request(
        s.http_addr(),
        "GET / HTTP/1.1\r\n",
        &format!("If-None-Match: {etag}\r\n"),
    )
    .await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    let r = request(
        s.http_addr(),
        "GET / HTTP/1.1\r\n",
        "If-None-Match: \"stale\"\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    // HEAD: the headers without the body.
    let r = request(s.http_addr(), "HEAD /r/lobby HTTP/1.1\r\n", "").await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(
        r.header("content-length"),
        Some(INDEX_HTML.len().to_string().as_str())
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_embedded_file_is_served_with_its_content_type() {
    let s = TestServer::start(false).await;
    let files: Vec<_> = http::embedded_files().collect();
    assert!(files.iter().any(|(p, _)| *p == "index.html"), "{files:?}");
    for (path, content_type) in files {
        let r = s.get(&format!("/{path}")).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some(content_type), "{path}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        let expected = match path.rsplit_once('.').map(|(_, e)| e) {
            Some("html") => "text/html; charset=utf-8",
            Some("js" | "mjs") => "text/javascript; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            Some("svg") => "image/svg+xml",
            Some("json") => "application/json",
            Some("png") => "image/png",
            _ => content_type,
        };
        assert_eq!(content_type, expected, "{path}");
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_get_a_404_page_and_limits_hold() {
    let s = TestServer::start(false).await;
    for path in [
        "/nope",
        "/js/not-there.js",
        "/r/",
        "/r/a/b",
        "/../Cargo.toml",
        "/%2e%2e/Cargo.toml",
    ] {
        let r = s.get(path).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
        assert!(r.text().contains("Not found"), "{path}");
        assert_security_headers(&r, s.http_addr());
    }
    // Routes merged in (the signaling /ws) win over the file routes: a GET without
    // the upgrade headers gets the WebSocket route's refusal, not a 404.
    let r = s.get("/ws").await;
    assert!(r.status != 404 && r.status >= 400, "{r:?}");
    // Methods nothing handles.
    let r = request(s.http_addr(), "DELETE /healthz HTTP/1.1\r\n", "").await;
    assert_eq!(r.status, 405);
    // A declared body over the limit is refused before anything reads it.
    let r = request(
        s.http_addr(),
        "POST /api/stats HTTP/1.1\r\n",
        "Content-Length: 1000000\r\n",
    )
    .await;
    assert_eq!(r.status, 413);
    // An oversized request head.
    let big = format!("X-Big: {}\r\n", "a".repeat(100_000));
    let mut stream = TcpStream::connect(s.http_addr()).await.unwrap();
    let _ = stream
        .write_all(format!("GET / HTTP/1.1\r\nHost: x\r\n{big}\r\n").as_bytes())
        .await;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw)).await;
    assert!(
        raw.is_empty() || parse_response(&raw).status == 431,
        "{:?}",
        String::from_utf8_lossy(&raw)
    );
    // The server is still fine.
    assert_eq!(s.get("/healthz").await.status, 200);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_ok() {
    let s = TestServer::start(false).await;
    let r = s.get("/healthz").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body: Value = serde_json::from_str(r.text()).unwrap();
    assert_eq!(body["status"], "ok", "{body}");
    // One worker and one TCP acceptor; one HTTP acceptor.
    assert_eq!(body["components"]["turn"]["status"], "up", "{body}");
    assert_eq!(body["components"]["turn"]["cores"], 2, "{body}");
    assert_eq!(body["components"]["http"]["status"], "up", "{body}");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    s.shutdown().await;
}

/// Polls `/api/stats` until `f` holds (the core publishes after each batch).
async fn stats_until(s: &TestServer, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let v = s.stats().await;
        if f(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Allocate, a permission, a Send indication and ChannelData to an echo peer, both
/// ways. Returns the number of payload bytes sent each way.
async fn relay_through(c: &mut Client, peer: &EchoPeer) -> u64 {
    c.allocate().await;
    c.create_permission(&[peer.addr]).await;
    c.send_indication(peer.addr, b"hello through the relay")
        .await;
    assert_eq!(
        c.recv_relayed().await,
        Relayed::Data {
            peer: peer.addr,
            data: b"hello through the relay".to_vec()
        }
    );
    c.channel_bind(0x4000, peer.addr).await;
    c.send_channel_data(0x4000, b"on a channel").await;
    assert_eq!(
        c.recv_relayed().await,
        Relayed::Channel {
            channel: 0x4000,
            data: b"on a channel".to_vec()
        }
    );
    (b"hello through the relay".len() + b"on a channel".len()) as u64
}

/// A new certificate (what a file reload, SIGHUP or an ACME renewal installs) serves
/// the next connections at once, and a TURN allocation over TLS made before goes on
/// relaying on its connection: no call drops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_certificate_serves_new_connections_and_an_allocation_goes_on() {
    let s = TestServer::start(true).await;
    let old = s.tls.as_ref().unwrap();
    let addr = s.http_addr();
    let peer = EchoPeer::start().await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let local = tcp.local_addr().unwrap();
    let tls = tls_client(old, &[b"stun.turn"])
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let mut call = Client::stream(Box::new(tls), local);
    relay_through(&mut call, &peer).await;

    let new = TlsMaterial::self_signed(vec!["localhost".into()]).unwrap();
    s.store.as_ref().unwrap().install(&new, "files").unwrap();
    // New connections: the new certificate, never the old one.
    let tcp = TcpStream::connect(addr).await.unwrap();
    tls_client(&new, &[b"http/1.1"])
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .expect("the new certificate serves new connections");
    let tcp = TcpStream::connect(addr).await.unwrap();
    assert!(tls_client(old, &[b"http/1.1"])
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .is_err());
    // The allocation made before relays on, both ways, on its channel.
    for i in 0..3u8 {
        let data = [b'x', i];
        call.send_channel_data(0x4000, &data).await;
        assert_eq!(
            call.recv_relayed().await,
            Relayed::Channel {
                channel: 0x4000,
                data: data.to_vec()
            }
        );
    }
    // (Over plain HTTP from loopback: the test's own client trusts the old certificate.)
    let r = s.get_plain("/api/stats").await;
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["turn"]["allocations"], 1, "{v}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_stats_reflects_a_real_allocation() {
    let s = TestServer::start(false).await;
    let v = s.stats().await;
    assert_eq!(v["turn"]["allocations"], 0);
    assert_eq!(v["tls"], false);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        s.get("/api/stats").await.header("cache-control"),
        Some("no-store")
    );

    let peer = EchoPeer::start().await;
    let mut c = Client::udp(s.turn.udp_addrs()[0]).await;
    let bytes = relay_through(&mut c, &peer).await;
    let v = stats_until(&s, "the relayed packets", |v| {
        v["turn"]["packetsFromPeers"].as_u64() >= Some(2)
    })
    .await;
    let t = &v["turn"];
    assert_eq!(t["allocations"], 1, "{v}");
    assert_eq!(t["allocationsCreated"], 1, "{v}");
    assert_eq!(t["permissions"], 1, "{v}");
    assert_eq!(t["channels"], 1, "{v}");
    assert_eq!(t["packetsToPeers"], 2, "{v}");
    assert_eq!(t["bytesToPeers"], bytes, "{v}");
    assert_eq!(t["packetsFromPeers"], 2, "{v}");
    assert_eq!(t["bytesFromPeers"], bytes, "{v}");
    // The first Allocate of each request is challenged (401), which is not a failure
    // of credentials but counts as one.
    assert!(t["authFailures"].is_u64(), "{v}");
    assert_eq!(t["peersDenied"], 0, "{v}");
    assert!(t["runtime"]["sendErrors"].is_u64(), "{v}");
    assert!(v["http"]["connections"].as_u64() >= Some(1), "{v}");

    // A denied peer shows too.
    let resp = c
        .request(tsunagi_stun::Method::CREATE_PERMISSION, |e| {
            e.xor_address(
                tsunagi_stun::attr::XOR_PEER_ADDRESS,
                &"10.1.2.3:5000".parse().unwrap(),
            )?;
            Ok(())
        })
        .await;
    assert_eq!(error_code(&resp), Some(403));
    stats_until(&s, "a denied peer", |v| v["turn"]["peersDenied"] == 1).await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expose_the_counters() {
    let s = TestServer::start(false).await;
    let peer = EchoPeer::start().await;
    let mut c = Client::udp(s.turn.udp_addrs()[0]).await;
    let bytes = relay_through(&mut c, &peer).await;
    stats_until(&s, "the relayed packets", |v| {
        v["turn"]["packetsFromPeers"].as_u64() >= Some(2)
    })
    .await;
    let r = s.get("/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = r.text();
    let sample = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
            .parse()
            .unwrap()
    };
    assert_eq!(sample("tsunagi_turn_allocations"), 1);
    assert_eq!(sample("tsunagi_turn_allocations_created_total"), 1);
    assert_eq!(sample("tsunagi_turn_permissions"), 1);
    assert_eq!(sample("tsunagi_turn_channels"), 1);
    assert_eq!(sample("tsunagi_turn_packets_to_peers_total"), 2);
    assert_eq!(sample("tsunagi_turn_bytes_to_peers_total"), bytes);
    assert_eq!(sample("tsunagi_turn_packets_from_peers_total"), 2);
    assert_eq!(sample("tsunagi_turn_bytes_from_peers_total"), bytes);
    assert_eq!(sample("tsunagi_turn_peers_denied_total"), 0);
    assert!(sample("tsunagi_http_connections") >= 1);
    assert_eq!(
        sample("tsunagi_turn_dropped_total{reason=\"no_permission\"}"),
        0
    );
    assert!(text.contains("# TYPE tsunagi_turn_bytes_to_peers_total counter\n"));
    assert!(text.contains("# TYPE tsunagi_turn_allocations gauge\n"));
    // Well-formed: every line is a comment or `name[{labels}] value`, and every sample
    // follows a TYPE line of its family.
    let mut typed = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            typed.push(rest.split(' ').next().unwrap().to_owned());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (name, value) = line.rsplit_once(' ').unwrap();
        value.parse::<f64>().unwrap();
        let family = name.split('{').next().unwrap();
        assert!(
            family
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "{line}"
        );
        assert!(typed.iter().any(|t| t == family), "{line} has no TYPE");
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_and_shutdown_is_graceful() {
    let s = TestServer::start_with(false, 2).await;
    let addr = s.http_addr();
    // Two idle connections take both permits.
    let a = TcpStream::connect(addr).await.unwrap();
    let b = TcpStream::connect(addr).await.unwrap();
    let eventual =
        tokio::spawn(async move { request(addr, "GET /healthz HTTP/1.1\r\n", "").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !eventual.is_finished(),
        "a third connection was served at the cap"
    );
    drop(a);
    let r = tokio::time::timeout(Duration::from_secs(5), eventual)
        .await
        .expect("served once a connection closed")
        .unwrap();
    assert_eq!(r.status, 200);
    // Shutdown with an idle keep-alive connection open does not wait for it.
    let started = std::time::Instant::now();
    s.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    drop(b);
    assert!(TcpStream::connect(addr).await.is_err(), "still listening");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_self_signed_certificate() {
    let s = TestServer::start(true).await;
    let m = s.tls.as_ref().unwrap();
    assert!(m.is_self_signed());
    assert_eq!(
        m.fingerprint(),
        tls::sha256_fingerprint(m.certificate()),
        "the logged fingerprint is the certificate's"
    );
    let addr = s.http_addr();
    // A browser offers h2 and http/1.1; HTTP/1.1 is chosen (WebSockets need it).
    let connector = tls_client(m, &[b"h2", b"http/1.1"]);
    for name in ["localhost", "127.0.0.1"] {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let server_name = rustls::pki_types::ServerName::try_from(name)
            .unwrap()
            .to_owned();
        let tls = connector.connect(server_name, tcp).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let r = exchange(tls, addr, "GET /r/lobby HTTP/1.1\r\n", "").await;
        assert_eq!(r.status, 200, "{name}");
        assert_eq!(r.body, INDEX_HTML);
        assert_security_headers(&r, addr);
    }
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let r = exchange(tls, addr, "GET /api/stats HTTP/1.1\r\n", "").await;
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["tls"], true);

    // Plain HTTP on the HTTPS port is served to loopback clients (browsers allow
    // camera and microphone on http://localhost); other hosts get the certificate page
    // (tests/e2e's phone test, and the unit tests of http::plain).
    let r = s.get_plain("/r/lobby?x=1").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, INDEX_HTML);
    // A client that does not trust the certificate fails the handshake, and that is
    // counted.
    let other = TlsMaterial::self_signed(vec!["localhost".into()]).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    assert!(tls_client(&other, &[])
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .is_err());
    // An unknown SNI name gets the certificate being served (the client, which checks
    // names, then refuses it for that name: the server did not abort).
    let tcp = TcpStream::connect(addr).await.unwrap();
    let e = connector
        .connect("unknown.example".try_into().unwrap(), tcp)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("NotValidForName") || e.to_string().contains("not valid for name"),
        "{e}"
    );
    // A client that sends a ClientHello and then garbage.
    let mut raw = TcpStream::connect(addr).await.unwrap();
    // A handshake record longer than TLS allows.
    raw.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3, 4, 5])
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut sink)).await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let r = exchange(tls, addr, "GET /api/stats HTTP/1.1\r\n", "").await;
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert!(v["http"]["tlsHandshakeFailures"].as_u64() >= Some(1), "{v}");
    assert_eq!(v["http"]["plainHttpRedirects"], 0, "{v}");
    s.shutdown().await;
}

/// TURN over TLS on the port of its own and on the HTTP port (one port): with RFC
/// 7443's ALPN, or none (told by the first byte); each allocation relays to a UDP peer
/// and goes with its connection. Plain STUN on a TLS port is TURN over TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_allocate_over_tls_relays_to_a_udp_peer() {
    let s = TestServer::start(true).await;
    let m = s.tls.as_ref().unwrap();
    let peer = EchoPeer::start().await;
    let mut handed = 0;
    for (port, alpn) in [
        (s.tls_port_addr(), &[][..]),
        (s.http_addr(), &[&b"stun.turn"[..]][..]),
        (s.http_addr(), &[][..]),
    ] {
        let tcp = TcpStream::connect(port).await.unwrap();
        let local = tcp.local_addr().unwrap();
        let tls = tls_client(m, alpn)
            .connect("127.0.0.1".try_into().unwrap(), tcp)
            .await
            .unwrap();
        if !alpn.is_empty() {
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"stun.turn"[..]));
        }
        let mut c = Client::stream(Box::new(tls), local);
        // STUN Binding over TLS sees the client's TCP address.
        let resp = c.binding().await;
        let mapped = tsunagi_stun::Message::parse(&resp)
            .unwrap()
            .get_xor_address(tsunagi_stun::attr::XOR_MAPPED_ADDRESS)
            .unwrap()
            .unwrap();
        assert_eq!(mapped, local, "{port} {alpn:?}");
        let before = s.stats().await["turn"]["bytesToPeers"].as_u64().unwrap();
        let bytes = relay_through(&mut c, &peer).await;
        let v = stats_until(&s, "the relayed packets", |v| {
            v["turn"]["bytesToPeers"].as_u64() == Some(before + bytes)
        })
        .await;
        assert_eq!(v["turn"]["allocations"], 1, "{v}");
        assert_eq!(v["turn"]["runtime"]["tcpConnections"], 1, "{v}");
        handed += 1;
        assert_eq!(v["http"]["turnStreams"], handed, "{v}");
        // Closing the TLS connection deletes its allocation, as for TCP.
        drop(c);
        stats_until(&s, "the allocation to go", |v| {
            v["turn"]["allocations"] == 0
        })
        .await;
    }

    // Plain STUN on the TLS port is TURN over TCP there.
    let tcp = TcpStream::connect(s.tls_port_addr()).await.unwrap();
    let local = tcp.local_addr().unwrap();
    let mut c = Client::stream(Box::new(tcp), local);
    let resp = c.binding().await;
    let mapped = tsunagi_stun::Message::parse(&resp)
        .unwrap()
        .get_xor_address(tsunagi_stun::attr::XOR_MAPPED_ADDRESS)
        .unwrap()
        .unwrap();
    assert_eq!(mapped, local);
    s.shutdown().await;
}

/// Silent or slow connections are bounded in time (the handshake timeout) and in number
/// per address: the one beyond the bound is closed at once and counted, and the server
/// goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_bounded_in_time_and_number() {
    let s = TestServer::start(true).await;
    let m = s.tls.as_ref().unwrap();
    let addr = s.http_addr();
    // The silent client is 127.0.0.2; the test's own requests (127.0.0.1) are another
    // address, not bounded by it.
    let connect_from_other = || async move {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        sock.connect(addr).await.unwrap()
    };
    let accepted_before = s.stats().await["http"]["accepted"].as_u64().unwrap();
    let mut silent = Vec::new();
    for i in 0..tsunagi::http::PENDING_PER_IP {
        let mut c = connect_from_other().await;
        if i % 2 == 1 {
            // Half of them start a handshake and stop: a ClientHello record's header.
            c.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).await.unwrap();
        }
        silent.push(c);
    }
    // The server has seen every one of them before the next comes.
    stats_until(&s, "the silent connections", |v| {
        v["http"]["accepted"].as_u64()
            >= Some(accepted_before + u64::from(tsunagi::http::PENDING_PER_IP))
    })
    .await;
    let mut over = connect_from_other().await;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_millis(1500), over.read(&mut buf))
        .await
        .expect("the connection over the bound is closed at once");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    // Each silent one is closed by the handshake timeout.
    let started = std::time::Instant::now();
    for c in &mut silent {
        let r = tokio::time::timeout(HANDSHAKE_TIMEOUT * 2, c.read(&mut buf))
            .await
            .expect("closed within the handshake timeout");
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    }
    assert!(started.elapsed() <= HANDSHAKE_TIMEOUT * 2);
    // And the address is served again.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tls_client(m, &[b"http/1.1"])
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let r = exchange(tls, addr, "GET /api/stats HTTP/1.1\r\n", "").await;
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["http"]["pendingRefused"], 1, "{v}");
    assert!(v["http"]["tlsHandshakeFailures"].as_u64() >= Some(1), "{v}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_upgrades_and_keeps_its_connection_permit() {
    let s = TestServer::start(true).await;
    let m = s.tls.as_ref().unwrap();
    let addr = s.http_addr();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tls_client(m, &[b"http/1.1"])
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let (mut ws, resp) =
        tokio_tungstenite::client_async(format!("wss://localhost:{}/ws", addr.port()), tls)
            .await
            .unwrap();
    assert_eq!(resp.status(), 101);
    ws.send(tokio_tungstenite::tungstenite::Message::text("over wss"))
        .await
        .unwrap();
    let echo = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echo.into_text().unwrap().as_str(), "over wss");
    // The upgraded connection still counts (and holds its permit): it and the stats
    // request itself.
    let v = s.stats().await;
    assert_eq!(v["http"]["connections"], 2, "{v}");
    drop(ws);
    stats_until(&s, "the WebSocket connection to close", |v| {
        v["http"]["connections"] == 1
    })
    .await;
    s.shutdown().await;
}
