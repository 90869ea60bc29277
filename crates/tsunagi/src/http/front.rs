//! One connection on a front port (the HTTP port, and the TURN-over-TLS port when it
//! has its own): what it is, and who serves it.
//!
//! A connection from a `proxy-protocol-ip` address first gives its PROXY header, within
//! the handshake timeout ([`crate::proxied`]): the client it names is the connection's
//! client from then on (TURN's 5-tuple, logs, the address HTTP handlers see, the
//! address [`super::pending`] counts).
//!
//! Then the first byte of the client's stream decides before anything is read:
//!
//! - `0x16`, a TLS record, with TLS on: the handshake (bounded by the handshake
//!   timeout, and in number per client address by [`super::pending`]), then by ALPN: `stun.turn` is TURN over TLS (RFC 7443),
//!   `http/1.1` is HTTPS, `acme-tls/1` was an ACME validation (the handshake was all of
//!   it). A client that offered no ALPN is told apart by its first byte after the
//!   handshake: a STUN message starts below `0x40`, an HTTP request line with a
//!   letter. So TURN over TLS and HTTPS share a port, `turns:host:443` included.
//! - below `0x40`: a STUN message, TURN over TCP.
//! - anything else: plain HTTP. Without TLS, served. With TLS, served to loopback
//!   clients (browsers allow camera and microphone on `http://localhost`); another
//!   host gets the page that explains the certificate and sends it to https (a
//!   self-signed certificate), or a redirect (a certificate browsers trust). Loopback
//!   is the TCP peer's, not what a PROXY header or `X-Forwarded-For` says: the rule is
//!   about the hop that carries the plain text, so a proxy on this host that ends TLS
//!   itself and passes plain HTTP on is served.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{watch, OwnedSemaphorePermit};
use tracing::debug;
use tsunagi_turn::Transport;

use super::pending::PendingGuard;
use super::{serve, HttpCounters, Shared, HEADER_TIMEOUT};
use crate::tls::store::{ALPN_ACME, ALPN_STUN_TURN};

/// The first byte of a TLS ClientHello record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Whether a stream that starts with `b` is STUN (RFC 8489 §5: the two most
/// significant bits of a STUN message are zero). An HTTP request starts with a
/// method's capital letter, `0x41` or above.
fn is_stun_start(b: u8) -> bool {
    b < 0x40
}

/// Serves one accepted connection; see the module docs.
pub(super) async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    // The accepted socket's own address, more specific than a wildcard listener's.
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let mut io = CountedIo::new(stream, permit, shared.counters.clone());
    let mut stop = shutdown.clone();
    // A listed proxy's header is not counted against the proxy's address by `pending`:
    // the proxy speaks for many clients, and one client's silent connections must not
    // use up the others' room. The connection cap and the timeout bound it.
    let Some(remote) = crate::proxied::client_of(
        &mut io.inner,
        peer,
        &shared.proxy_protocol,
        shared.handshake_timeout,
        &mut stop,
        &shared.redact,
        &shared.counters.proxy_header_failures,
    )
    .await
    else {
        return;
    };
    let Some(pending) = shared.pending.enter(remote.ip()) else {
        shared
            .counters
            .pending_refused
            .fetch_add(1, Ordering::Relaxed);
        debug!(client = %shared.redact.addr(remote), "closed: too many connections of this address not yet served");
        return;
    };
    let mut first = [0u8; 1];
    match bounded(
        shared.handshake_timeout,
        &mut stop,
        io.inner.peek(&mut first),
    )
    .await
    {
        Some(Ok(1..)) => {}
        _ => return,
    }
    let first = first[0];
    if let (Some(acceptor), TLS_HANDSHAKE_RECORD) = (&shared.tls, first) {
        // Pending until its handshake is done.
        let acceptor = acceptor.clone();
        tls(io, remote, local, acceptor, pending, &shared, shutdown).await;
        return;
    }
    // Served from here on.
    drop(pending);
    match &shared.tls {
        _ if is_stun_start(first) && first != TLS_HANDSHAKE_RECORD => {
            to_turn(io, remote, local, Transport::Tcp, &[], &shared);
        }
        None => serve(io, remote, false, shared.app.clone(), &shared, shutdown).await,
        Some(_) if is_loopback(peer) => {
            serve(io, remote, false, shared.app.clone(), &shared, shutdown).await;
        }
        Some(_) => {
            shared
                .counters
                .plain_http_redirects
                .fetch_add(1, Ordering::Relaxed);
            serve(io, remote, false, shared.plain.clone(), &shared, shutdown).await;
        }
    }
}

/// `fut`, unless it takes longer than `limit` or shutdown comes first (`None`): what a
/// connection waits for before it is served (its first byte, its handshake) must not
/// hold its permit for long, nor hold up shutdown.
async fn bounded<F: std::future::Future>(
    limit: std::time::Duration,
    shutdown: &mut watch::Receiver<bool>,
    fut: F,
) -> Option<F::Output> {
    tokio::select! {
        r = tokio::time::timeout(limit, fut) => r.ok(),
        _ = tsunagi_net::stopped(shutdown) => None,
    }
}

/// Loopback, IPv4-mapped loopback included.
fn is_loopback(a: SocketAddr) -> bool {
    match a.ip() {
        std::net::IpAddr::V4(v4) => v4.is_loopback(),
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// A TLS connection: the handshake, then TURN or HTTPS. `pending` counts it against
/// its address until the handshake (and, without ALPN, the first byte) is done.
async fn tls(
    io: CountedIo,
    remote: SocketAddr,
    local: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    pending: PendingGuard,
    shared: &Shared,
    shutdown: watch::Receiver<bool>,
) {
    let failed = |why: &dyn std::fmt::Display| {
        shared
            .counters
            .tls_handshake_failures
            .fetch_add(1, Ordering::Relaxed);
        debug!(client = %shared.redact.addr(remote), error = %why, "TLS handshake failed");
    };
    let mut stop = shutdown.clone();
    let mut stream = match bounded(shared.handshake_timeout, &mut stop, acceptor.accept(io)).await {
        Some(Ok(s)) => s,
        Some(Err(e)) => return failed(&e),
        None if *stop.borrow() => return,
        None => return failed(&"timed out"),
    };
    let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let pending = alpn.is_none().then_some(pending);
    debug!(
        client = %shared.redact.addr(remote),
        alpn = %alpn.as_deref().map(String::from_utf8_lossy).unwrap_or_default(),
        sni = stream.get_ref().1.server_name().unwrap_or(""),
        "TLS handshake done"
    );
    match alpn.as_deref() {
        Some(ALPN_STUN_TURN) => to_turn(stream, remote, local, Transport::Tls, &[], shared),
        // RFC 8737 §3: the validation is the handshake; nothing follows.
        Some(ALPN_ACME) => {}
        Some(_) => serve(stream, remote, true, shared.app.clone(), shared, shutdown).await,
        None => {
            // No ALPN (TURN clients that do not send RFC 7443's, HTTP clients that
            // send none): the first byte tells.
            let mut first = [0u8; 1];
            match bounded(HEADER_TIMEOUT, &mut stop, stream.read(&mut first)).await {
                Some(Ok(1..)) => {}
                _ => return,
            }
            drop(pending);
            if is_stun_start(first[0]) {
                to_turn(stream, remote, local, Transport::Tls, &first, shared);
            } else {
                let stream = Prefixed::new(first[0], stream);
                serve(stream, remote, true, shared.app.clone(), shared, shutdown).await;
            }
        }
    }
}

/// Hands a stream to TURN (when TURN runs; otherwise closes it).
fn to_turn<S>(
    stream: S,
    remote: SocketAddr,
    local: SocketAddr,
    transport: Transport,
    first: &[u8],
    shared: &Shared,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let Some(turn) = &shared.turn else {
        debug!(client = %shared.redact.addr(remote), "STUN on the HTTP port, and no TURN server here");
        return;
    };
    shared.counters.turn_streams.fetch_add(1, Ordering::Relaxed);
    if !turn.serve(stream, remote, local, transport, first) {
        debug!(client = %shared.redact.addr(remote), "TURN stream refused: max-tcp-connections are open");
    }
}

/// `impl AsyncWrite for $ty` by handing every call to its field `$field`: the two
/// wrappers here change how a stream is read or counted, never how it is written.
macro_rules! forward_async_write {
    ([$($generics:tt)*] $ty:ty, $field:ident) => {
        impl<$($generics)*> AsyncWrite for $ty {
            fn poll_write(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<std::io::Result<usize>> {
                Pin::new(&mut self.$field).poll_write(cx, buf)
            }

            fn poll_write_vectored(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> Poll<std::io::Result<usize>> {
                Pin::new(&mut self.$field).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.$field.is_write_vectored()
            }

            fn poll_flush(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<std::io::Result<()>> {
                Pin::new(&mut self.$field).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<std::io::Result<()>> {
                Pin::new(&mut self.$field).poll_shutdown(cx)
            }
        }
    };
}

/// A stream with one byte already read from it, given back first.
struct Prefixed<S> {
    first: Option<u8>,
    inner: S,
}

impl<S> Prefixed<S> {
    fn new(first: u8, inner: S) -> Self {
        Self {
            first: Some(first),
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if buf.remaining() > 0 {
            if let Some(b) = self.first.take() {
                buf.put_slice(&[b]);
                return Poll::Ready(Ok(()));
            }
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

forward_async_write!([S: AsyncWrite + Unpin] Prefixed<S>, inner);

/// A connection's stream that holds its connection permit and counts it as open for
/// as long as it lives, including after hyper hands it to a WebSocket on upgrade, or
/// it goes to TURN.
pub(super) struct CountedIo {
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

forward_async_write!([] CountedIo, inner);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stun_and_http_start_apart() {
        // Binding request, Allocate, ChannelData's first byte is never a stream start.
        for b in [0x00, 0x01, 0x16, 0x3f] {
            assert!(is_stun_start(b));
        }
        for m in [
            "GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH", "CONNECT",
        ] {
            assert!(!is_stun_start(m.as_bytes()[0]), "{m}");
        }
    }

    #[test]
    fn loopback_includes_mapped_v4() {
        for a in ["127.0.0.1:1", "[::1]:1", "[::ffff:127.0.0.5]:1"] {
            assert!(
                is_loopback(a.parse().unwrap_or_else(|_| SocketAddr::from(([0; 4], 0)))),
                "{a}"
            );
        }
        for a in [
            "198.51.100.1:1",
            "[::ffff:198.51.100.1]:1",
            "[2001:db8::1]:1",
        ] {
            assert!(
                !is_loopback(
                    a.parse()
                        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
                ),
                "{a}"
            );
        }
    }
}
