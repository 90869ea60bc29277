//! The HTTP(S) server and every TLS port: the embedded web client, `/healthz`,
//! `/api/stats`, `/metrics`, whatever routes the caller merges in (the signaling
//! WebSocket at `/ws`), and TURN over TLS (and TCP) that arrives on the same ports,
//! handed to the TURN runtime ([`front`] tells them apart).
//!
//! The accept loop is our own rather than `axum::serve`, for what `serve` does not do:
//! TLS (a rustls handshake per connection, in the connection's task so that a slow
//! client never holds up accepting; the certificate resolved per handshake from the
//! [`CertStore`], so a renewed one serves at once), TURN and HTTP on one port, a cap
//! on connections (a semaphore, as for TURN over TCP: at the cap, new connections wait
//! in the kernel's backlog), and keeping that cap for WebSockets (the permit travels
//! inside the connection's IO, which hyper hands over on upgrade, so an upgraded
//! WebSocket still holds it).
//!
//! Each request carries `axum::extract::ConnectInfo<SocketAddr>` (the client address:
//! behind a proxy, the one its PROXY header or `X-Forwarded-For` names, see
//! [`crate::proxied`]) and a [`Secure`] extension (whether it arrived over TLS).
//!
//! Limits: request headers at most [`MAX_HEADER_BYTES`] and received within
//! [`HEADER_TIMEOUT`]; request bodies at most [`MAX_BODY_BYTES`] (nothing here takes
//! uploads); the first byte and the TLS handshake within [`HANDSHAKE_TIMEOUT`], at most
//! [`pending::PENDING_PER_IP`] such connections per client address; HTTP/1.1 only.
//!
//! Shutdown: [`HttpService::shutdown`] stops accepting, lets each connection finish
//! the request in flight (hyper's graceful shutdown), and waits for connections to
//! close, up to a deadline. Upgraded WebSockets are closed by their owner (the
//! signaling runtime's own shutdown).

mod front;
pub(crate) mod metrics;
mod pending;
mod plain;
mod routes;
mod state;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tower::ServiceExt;
use tracing::{debug, info, warn};

pub use metrics::{Prometheus, StatsSource};
pub use pending::PENDING_PER_IP;
pub use routes::{app, embedded_files, routes, CONTENT_SECURITY_POLICY_BASE};
pub use state::{stats_value, HttpState};

use crate::proxied::{forwarded_client, ProxySources};
use crate::redact::Redactor;
use crate::supervise::{Component, Health};
use crate::tls::CertStore;
use crate::turn_runtime::{BindFailure, StartError, StreamIntake};
use tsunagi_net::{accept_limited, stopped};

/// Largest request body accepted (413 beyond it).
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Largest request head (hyper's read buffer; 431 beyond it).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Time a client has to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(15);
/// Time a client has to send its first byte and complete the TLS handshake (the
/// default of [`HttpOptions::handshake_timeout`]).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Whether the request arrived over TLS (a request extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Secure(pub bool);

/// Counters of the HTTP server itself, live (relaxed atomics).
#[derive(Debug, Default)]
pub struct HttpCounters {
    /// Connections open now (WebSockets included).
    pub connections: AtomicU64,
    /// Connections accepted since start.
    pub accepted: AtomicU64,
    /// TLS handshakes that failed or timed out.
    pub tls_handshake_failures: AtomicU64,
    /// Plain-HTTP connections from other hosts on the HTTPS port, answered with the
    /// certificate page or a redirect to https.
    pub plain_http_redirects: AtomicU64,
    /// Connections that were TURN (over TLS or TCP), handed to the TURN runtime.
    pub turn_streams: AtomicU64,
    /// Connections closed at once because their address had
    /// [`pending::PENDING_PER_IP`] connections not yet served (silent, or handshaking).
    pub pending_refused: AtomicU64,
    /// Connections from a `proxy-protocol-ip` address closed for want of a valid PROXY
    /// header in time.
    pub proxy_header_failures: AtomicU64,
}

/// What the server needs besides its listeners and routes.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Concurrent connections (WebSockets included).
    pub max_connections: usize,
    /// `Some`: HTTPS, with the certificate served from this store; plain HTTP then
    /// only for loopback clients (others get the certificate page or a redirect).
    pub tls: Option<Arc<CertStore>>,
    /// Where TURN streams that arrive on these ports go (`None`: they are closed).
    pub turn: Option<StreamIntake>,
    /// Time a connection has to send its first byte, and to complete its TLS handshake.
    pub handshake_timeout: Duration,
    pub redact_logs: bool,
    /// Shared with [`HttpState`] so that `/api/stats` can show them.
    pub counters: Arc<HttpCounters>,
    /// Where the acceptors report how they end.
    pub health: Health,
    /// Peers whose connections begin with a PROXY header (`proxy-protocol-ip`).
    pub proxy_protocol: ProxySources,
    /// Peers whose `X-Forwarded-For` names the client (`trusted-proxy-ip`).
    pub trusted_proxies: ProxySources,
}

impl HttpOptions {
    pub fn new(max_connections: usize, tls: Option<Arc<CertStore>>) -> Self {
        Self {
            max_connections,
            tls,
            turn: None,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            redact_logs: false,
            counters: Arc::default(),
            health: Health::default(),
            proxy_protocol: ProxySources::default(),
            trusted_proxies: ProxySources::default(),
        }
    }
}

/// Binds the HTTP listeners (IPv6 sockets IPv6-only, so `0.0.0.0` and `::` share a
/// port).
pub fn bind(addrs: &[SocketAddr]) -> Result<Vec<std::net::TcpListener>, BindFailure> {
    bind_as(addrs, "http")
}

/// Binds the listeners of TURN over TLS on a port of their own (`tls-listening-port`);
/// they are front ports like the HTTP port's, and serve HTTPS too.
pub fn bind_tls(addrs: &[SocketAddr]) -> Result<Vec<std::net::TcpListener>, BindFailure> {
    bind_as(addrs, "tls")
}

fn bind_as(
    addrs: &[SocketAddr],
    transport: &'static str,
) -> Result<Vec<std::net::TcpListener>, BindFailure> {
    addrs
        .iter()
        .map(|&addr| {
            crate::turn_runtime::tcp_listener(addr).map_err(|error| BindFailure {
                transport,
                addr,
                error,
            })
        })
        .collect()
}

/// A running HTTP(S) server.
#[derive(Debug)]
pub struct HttpService {
    addrs: Vec<SocketAddr>,
    tls: bool,
    shutdown: watch::Sender<bool>,
    acceptors: Vec<JoinHandle<()>>,
    semaphore: Arc<Semaphore>,
    max_connections: u32,
}

/// Shared by the accept loops and connection tasks.
struct Shared {
    app: Router,
    /// What plain-HTTP clients of other hosts get when TLS is on.
    plain: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    turn: Option<StreamIntake>,
    handshake_timeout: Duration,
    pending: Arc<pending::Pending>,
    semaphore: Arc<Semaphore>,
    counters: Arc<HttpCounters>,
    redact: Redactor,
    http1: hyper::server::conn::http1::Builder,
    proxy_protocol: ProxySources,
    trusted_proxies: ProxySources,
}

impl HttpService {
    /// Serves `app` (see [`app`]) on `listeners`; must be called inside a tokio runtime.
    pub fn start(
        listeners: Vec<std::net::TcpListener>,
        app: Router,
        opts: HttpOptions,
    ) -> Result<Self, StartError> {
        Self::start_with_tls_ports(listeners, Vec::new(), app, opts)
    }

    /// [`HttpService::start`], and the same on `tls_ports`, the listeners of TURN over
    /// TLS on a port of its own (`tls-listening-port`): every front port serves HTTPS
    /// and TURN alike.
    pub fn start_with_tls_ports(
        listeners: Vec<std::net::TcpListener>,
        tls_ports: Vec<std::net::TcpListener>,
        app: Router,
        opts: HttpOptions,
    ) -> Result<Self, StartError> {
        let max_connections = opts.max_connections.clamp(1, 1 << 24);
        let semaphore = Arc::new(Semaphore::new(max_connections));
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .max_buf_size(MAX_HEADER_BYTES)
            .max_header_size(MAX_HEADER_BYTES);
        let tls = match &opts.tls {
            Some(store) => Some(tokio_rustls::TlsAcceptor::from(
                store
                    .server_config()
                    .map_err(|e| StartError(e.to_string()))?,
            )),
            None => None,
        };
        let shared = Arc::new(Shared {
            app,
            plain: plain::router(opts.tls.clone()),
            tls,
            turn: opts.turn.clone(),
            handshake_timeout: opts.handshake_timeout,
            pending: Arc::default(),
            semaphore: semaphore.clone(),
            counters: opts.counters.clone(),
            redact: Redactor::new(opts.redact_logs),
            http1,
            proxy_protocol: opts.proxy_protocol.clone(),
            trusted_proxies: opts.trusted_proxies.clone(),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut addrs = Vec::new();
        let mut acceptors = Vec::new();
        let scheme = if opts.tls.is_some() { "https" } else { "http" };
        let http_port_count = listeners.len();
        for (i, l) in listeners.into_iter().chain(tls_ports).enumerate() {
            let err = |e: std::io::Error| StartError(format!("HTTP listener: {e}"));
            let local = l.local_addr().map_err(err)?;
            let l = TcpListener::from_std(l).map_err(err)?;
            if i < http_port_count {
                info!("{scheme} listening on {local}");
            } else {
                info!("TURN over TLS (and HTTPS) listening on tcp {local}");
            }
            addrs.push(local);
            acceptors.push(opts.health.spawn(
                Component::Http,
                format!("http {local}"),
                accept_loop(l, shared.clone(), shutdown_rx.clone()),
            ));
        }
        let http_addrs = &addrs[..http_port_count];
        // Loopback clients get plain HTTP even with TLS on, and browsers allow camera
        // and microphone on http://localhost: no certificate warning on this host.
        if let Some(url) = browse_url(scheme, http_addrs) {
            info!("web client at {url}");
        }
        let ifaces: Vec<std::net::IpAddr> = if_addrs::get_if_addrs()
            .map(|v| v.into_iter().map(|i| i.ip()).collect())
            .unwrap_or_default();
        let lan = lan_urls(scheme, http_addrs, &ifaces);
        if !lan.is_empty() {
            let urls = lan.join(" ");
            match &opts.tls {
                Some(store) if store.status().source == "self-signed" => info!(
                    %urls,
                    sha256 = %store.status().sha256,
                    "web client for other devices on this network: their browsers warn about \
                     the self-signed certificate once (check that it shows this sha256; the \
                     http:// address explains how to accept it)"
                ),
                Some(_) => info!(%urls, "web client for other devices on this network"),
                None => info!(
                    %urls,
                    "web client for other devices on this network: browsers there allow camera \
                     and microphone only over HTTPS, and no-tls is set"
                ),
            }
        }
        Ok(Self {
            addrs,
            tls: opts.tls.is_some(),
            shutdown,
            acceptors,
            semaphore,
            max_connections: max_connections as u32,
        })
    }

    /// Bound addresses (useful with port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Whether this server speaks HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Stops accepting, finishes requests in flight, and waits (at most 5 s) for
    /// every connection to close.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for a in self.acceptors {
            let _ = a.await;
        }
        // Every connection holds a permit: all permits back means all closed.
        let drained = tokio::time::timeout(
            SHUTDOWN_GRACE,
            self.semaphore.acquire_many(self.max_connections),
        )
        .await;
        if drained.is_err() {
            let open = self.max_connections as usize - self.semaphore.available_permits();
            warn!(
                open,
                "HTTP connections still open after {}s; leaving them",
                SHUTDOWN_GRACE.as_secs()
            );
        }
    }
}

/// The address to open in a browser: `http://localhost` for a wildcard or loopback
/// listener (loopback clients get plain HTTP even with TLS on, and browsers allow
/// camera and microphone on `http://localhost`), else the first address.
fn browse_url(scheme: &str, addrs: &[SocketAddr]) -> Option<String> {
    let a = addrs.first()?;
    let (scheme, host) = match a.ip() {
        ip if ip.is_unspecified() || ip.is_loopback() => ("http", "localhost".to_owned()),
        std::net::IpAddr::V6(ip) => (scheme, format!("[{ip}]")),
        ip => (scheme, ip.to_string()),
    };
    Some(format!("{scheme}://{host}:{}/", a.port()))
}

/// The addresses other devices open: for a wildcard listener every address of the
/// host's interfaces of its family, else the listener's own address; never loopback,
/// link-local, multicast or unspecified ones.
fn lan_urls(scheme: &str, addrs: &[SocketAddr], ifaces: &[std::net::IpAddr]) -> Vec<String> {
    use std::net::IpAddr;
    let reachable = |ip: &IpAddr| !ip.is_loopback() && crate::config::addressable(*ip);
    let mut urls = Vec::new();
    for a in addrs {
        let ips: Vec<IpAddr> = if a.ip().is_unspecified() {
            ifaces
                .iter()
                .copied()
                .filter(|ip| ip.is_ipv4() == a.is_ipv4())
                .collect()
        } else {
            vec![a.ip()]
        };
        for ip in ips.into_iter().filter(reachable) {
            let url = format!("{scheme}://{}/", SocketAddr::new(ip, a.port()));
            if !urls.contains(&url) {
                urls.push(url);
            }
        }
    }
    urls
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, shutdown: watch::Receiver<bool>) {
    let limit = shared.semaphore.clone();
    let for_connections = shutdown.clone();
    accept_limited(
        listener,
        limit,
        shutdown,
        "HTTP",
        move |stream, remote, permit| {
            shared.counters.accepted.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(front::connection(
                stream,
                remote,
                permit,
                shared.clone(),
                for_connections.clone(),
            ));
        },
    )
    .await;
}

/// Serves HTTP/1.1 (with upgrades) on one connection from `remote` (the client a PROXY
/// header named, or the TCP peer) until it closes, or until shutdown, when the request
/// in flight may finish (within the grace period). Each request's client is `remote`,
/// or what `X-Forwarded-For` says when `remote` is a trusted proxy (asked per request:
/// a proxy may send several clients' requests over one connection).
async fn serve<I>(
    io: I,
    remote: SocketAddr,
    secure: bool,
    app: Router,
    shared: &Shared,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let trusted = shared.trusted_proxies.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let client = forwarded_client(remote, req.headers(), &trusted);
        req.extensions_mut().insert(ConnectInfo(client));
        req.extensions_mut().insert(Secure(secure));
        app.clone().oneshot(req)
    });
    let conn = shared
        .http1
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stopped(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await {
                Ok(r) => r,
                Err(_) => return,
            }
        }
    };
    if let Err(e) = result {
        debug!(client = %shared.redact.addr(remote), error = %e, "HTTP connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wildcard listener lists the host's reachable addresses of its family; a
    /// specific one itself; loopback, link-local and duplicates never.
    #[test]
    fn lan_urls_name_what_other_devices_can_open() {
        let ifaces: Vec<std::net::IpAddr> = [
            "127.0.0.1",
            "198.51.100.20",
            "169.254.3.4",
            "::1",
            "fe80::1",
            "2001:db8::20",
        ]
        .iter()
        .map(|s| s.parse().unwrap_or(std::net::IpAddr::from([0, 0, 0, 0])))
        .collect();
        let addrs: Vec<SocketAddr> = [
            "0.0.0.0:8080",
            "[::]:8080",
            "203.0.113.5:8443",
            "127.0.0.1:9000",
            "0.0.0.0:8080",
        ]
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
        assert_eq!(
            lan_urls("https", &addrs, &ifaces),
            vec![
                "https://198.51.100.20:8080/",
                "https://[2001:db8::20]:8080/",
                "https://203.0.113.5:8443/",
            ]
        );
        assert!(lan_urls("http", &addrs[3..4], &ifaces).is_empty());
    }
}
