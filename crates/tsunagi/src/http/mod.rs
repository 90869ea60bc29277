//! The HTTP(S) server: the embedded web client, `/healthz`, `/api/stats`, `/metrics`,
//! and whatever routes the caller merges in (the signaling WebSocket at `/ws`).
//!
//! The accept loop is our own rather than `axum::serve`, for three things `serve`
//! does not do: TLS (a rustls handshake per connection, in the connection's task so
//! that a slow client never holds up accepting), a cap on connections (a semaphore,
//! as for TURN over TCP: at the cap, new connections wait in the kernel's backlog), and
//! keeping that cap for WebSockets (the permit travels inside the connection's IO,
//! which hyper hands over on upgrade, so an upgraded WebSocket still holds it).
//!
//! Each request carries `axum::extract::ConnectInfo<SocketAddr>` (the client address)
//! and a [`Secure`] extension (whether it arrived over TLS).
//!
//! Limits: request headers at most [`MAX_HEADER_BYTES`] and received within
//! [`HEADER_TIMEOUT`]; request bodies at most [`MAX_BODY_BYTES`] (nothing here takes
//! uploads); TLS handshakes within [`HANDSHAKE_TIMEOUT`]; HTTP/1.1 only.
//!
//! Shutdown: [`HttpService::shutdown`] stops accepting, lets each connection finish
//! the request in flight (hyper's graceful shutdown), and waits for connections to
//! close, up to a deadline. Upgraded WebSockets are closed by their owner (the
//! signaling runtime's own shutdown).

pub(crate) mod metrics;
mod routes;
mod state;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tower::ServiceExt;
use tracing::{debug, info, warn};

pub use metrics::{Prometheus, StatsSource};
pub use routes::{app, embedded_files, routes, CONTENT_SECURITY_POLICY_BASE};
pub use state::{stats_value, HttpState};

use crate::redact::Redactor;
use crate::supervise::{Component, Health};
use crate::turn_runtime::{BindFailure, StartError};
use tsunagi_net::{accept_limited, stopped};

/// Largest request body accepted (413 beyond it).
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Largest request head (hyper's read buffer; 431 beyond it).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Time a client has to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(15);
/// Time a client has to complete the TLS handshake.
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
    /// Plain-HTTP requests on the HTTPS port, answered with a redirect.
    pub plain_http_redirects: AtomicU64,
}

/// What the server needs besides its listeners and routes.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Concurrent connections (WebSockets included).
    pub max_connections: usize,
    /// `Some`: HTTPS only (a plain-HTTP request gets a redirect to https).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub redact_logs: bool,
    /// Shared with [`HttpState`] so that `/api/stats` can show them.
    pub counters: Arc<HttpCounters>,
    /// Where the acceptors report how they end.
    pub health: Health,
}

impl HttpOptions {
    pub fn new(max_connections: usize, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        Self {
            max_connections,
            tls,
            redact_logs: false,
            counters: Arc::default(),
            health: Health::default(),
        }
    }
}

/// Binds the HTTP listeners (IPv6 sockets IPv6-only, so `0.0.0.0` and `::` share a
/// port).
pub fn bind(addrs: &[SocketAddr]) -> Result<Vec<std::net::TcpListener>, BindFailure> {
    addrs
        .iter()
        .map(|&addr| {
            crate::turn_runtime::tcp_listener(addr).map_err(|error| BindFailure {
                transport: "http",
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
    tls: Option<tokio_rustls::TlsAcceptor>,
    semaphore: Arc<Semaphore>,
    counters: Arc<HttpCounters>,
    redact: Redactor,
    http1: hyper::server::conn::http1::Builder,
}

impl HttpService {
    /// Serves `app` (see [`app`]) on `listeners`; must be called inside a tokio runtime.
    pub fn start(
        listeners: Vec<std::net::TcpListener>,
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
        let shared = Arc::new(Shared {
            app,
            tls: opts.tls.clone().map(tokio_rustls::TlsAcceptor::from),
            semaphore: semaphore.clone(),
            counters: opts.counters.clone(),
            redact: Redactor::new(opts.redact_logs),
            http1,
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut addrs = Vec::new();
        let mut acceptors = Vec::new();
        let scheme = if opts.tls.is_some() { "https" } else { "http" };
        for l in listeners {
            let err = |e: std::io::Error| StartError(format!("HTTP listener: {e}"));
            let local = l.local_addr().map_err(err)?;
            let l = TcpListener::from_std(l).map_err(err)?;
            info!("{scheme} listening on {local}");
            addrs.push(local);
            acceptors.push(opts.health.spawn(
                Component::Http,
                format!("http {local}"),
                accept_loop(l, shared.clone(), shutdown_rx.clone()),
            ));
        }
        if let Some(url) = browse_url(scheme, &addrs) {
            info!("web client at {url}");
        }
        let ifaces: Vec<std::net::IpAddr> = if_addrs::get_if_addrs()
            .map(|v| v.into_iter().map(|i| i.ip()).collect())
            .unwrap_or_default();
        let lan = lan_urls(scheme, &addrs, &ifaces);
        if !lan.is_empty() {
            let urls = lan.join(" ");
            if opts.tls.is_some() {
                info!(%urls, "web client for other devices on this network (accept the certificate warning once)");
            } else {
                info!(
                    %urls,
                    "web client for other devices on this network: browsers there allow camera \
                     and microphone only over HTTPS, so start with tls-self-signed (or tls-cert \
                     and tls-key) for them"
                );
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

/// The address to open in a browser: `localhost` for a wildcard listener (browsers
/// allow camera and microphone on plain-HTTP `localhost`), else the first address.
fn browse_url(scheme: &str, addrs: &[SocketAddr]) -> Option<String> {
    let a = addrs.first()?;
    let host = match a.ip() {
        ip if ip.is_unspecified() || ip.is_loopback() => "localhost".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
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
            tokio::spawn(connection(
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

/// The first byte of a TLS ClientHello record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

async fn connection(
    stream: TcpStream,
    remote: SocketAddr,
    permit: OwnedSemaphorePermit,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let io = CountedIo::new(stream, permit, shared.counters.clone());
    let Some(acceptor) = shared.tls.clone() else {
        serve(io, remote, false, shared.app.clone(), &shared, shutdown).await;
        return;
    };
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(HANDSHAKE_TIMEOUT, io.inner.peek(&mut first)).await;
    match peeked {
        Ok(Ok(1..)) => {}
        _ => return,
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        // Someone typed http:// on the HTTPS port: send them to https://.
        shared
            .counters
            .plain_http_redirects
            .fetch_add(1, Ordering::Relaxed);
        serve(
            io,
            remote,
            false,
            routes::https_redirect(),
            &shared,
            shutdown,
        )
        .await;
        return;
    }
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
        Ok(Ok(tls)) => serve(tls, remote, true, shared.app.clone(), &shared, shutdown).await,
        Ok(Err(e)) => {
            shared
                .counters
                .tls_handshake_failures
                .fetch_add(1, Ordering::Relaxed);
            debug!(client = %shared.redact.addr(remote), error = %e, "HTTPS handshake failed");
        }
        Err(_) => {
            shared
                .counters
                .tls_handshake_failures
                .fetch_add(1, Ordering::Relaxed);
            debug!(client = %shared.redact.addr(remote), "HTTPS handshake timed out");
        }
    }
}

/// Serves HTTP/1.1 (with upgrades) on one connection until it closes, or until
/// shutdown, when the request in flight may finish (within the grace period).
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
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(remote));
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

/// A connection's stream that holds its connection permit and counts it as open for
/// as long as it lives, including after hyper hands it to a WebSocket on upgrade.
struct CountedIo {
    inner: TcpStream,
    counters: Arc<HttpCounters>,
    _permit: OwnedSemaphorePermit,
}

impl CountedIo {
    fn new(inner: TcpStream, permit: OwnedSemaphorePermit, counters: Arc<HttpCounters>) -> Self {
        counters.connections.fetch_add(1, Ordering::Relaxed);
        Self {
            inner,
            counters,
            _permit: permit,
        }
    }
}

impl Drop for CountedIo {
    fn drop(&mut self) {
        self.counters.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AsyncRead for CountedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
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
