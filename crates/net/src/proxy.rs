//! The PROXY protocol header at the start of an accepted stream, read without taking
//! a byte past it: what follows is the proxied client's, for whoever serves the
//! connection (front ports peek at its first byte). The format itself is
//! [`tsunagi_proxy_protocol`]; which peers must send a header, and how long they have,
//! is the caller's decision.

use std::fmt;
use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};
use tsunagi_proxy_protocol::{parse, Header, Parsed};

/// Why no header could be read.
#[derive(Debug)]
pub enum ProxyHeaderError {
    /// The stream failed.
    Io(io::Error),
    /// The stream ended after `read` bytes, before the header did (nothing at all when
    /// `read` is 0).
    Closed { read: usize },
    /// The bytes are not a header.
    Invalid(tsunagi_proxy_protocol::Error),
}

impl fmt::Display for ProxyHeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyHeaderError::Io(e) => write!(f, "read error before the PROXY header: {e}"),
            ProxyHeaderError::Closed { read: 0 } => {
                f.write_str("closed before sending a PROXY header")
            }
            ProxyHeaderError::Closed { read } => {
                write!(f, "closed after {read} bytes, within the PROXY header")
            }
            ProxyHeaderError::Invalid(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ProxyHeaderError {}

/// Reads the PROXY header (v1 or v2) that `stream` starts with, and nothing after it.
/// Unbounded in time: the caller puts a deadline around it. At most
/// [`tsunagi_proxy_protocol::MAX_LEN`] bytes are buffered.
pub async fn read_proxy_header<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<Header, ProxyHeaderError> {
    let mut buf = Vec::with_capacity(64);
    loop {
        match parse(&buf).map_err(ProxyHeaderError::Invalid)? {
            Parsed::Header(h) => return Ok(h),
            Parsed::Incomplete { at_least } => {
                let start = buf.len();
                buf.resize(start + at_least, 0);
                let n = match buf.get_mut(start..) {
                    Some(room) => stream.read(room).await.map_err(ProxyHeaderError::Io)?,
                    None => 0,
                };
                if n == 0 {
                    return Err(ProxyHeaderError::Closed { read: start });
                }
                buf.truncate(start + n);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::io::AsyncWriteExt;
    use tsunagi_proxy_protocol::{encode_v1, encode_v2, Addresses};

    fn addrs() -> Addresses {
        Addresses::Tcp {
            source: "203.0.113.7:50000".parse::<SocketAddr>().unwrap(),
            destination: "192.0.2.10:443".parse::<SocketAddr>().unwrap(),
        }
    }

    /// Whether it arrives at once or a byte at a time, the header is read and the
    /// client's bytes after it stay in the stream.
    #[tokio::test]
    async fn reads_the_header_and_nothing_after_it() {
        let mut v1 = Vec::new();
        encode_v1(&addrs(), &mut v1).unwrap();
        let mut v2 = Vec::new();
        encode_v2(&addrs(), &[(0x05, b"id-1")], &mut v2).unwrap();
        for header in [v1, v2] {
            for dribble in [false, true] {
                let (mut client, mut server) = tokio::io::duplex(4096);
                let mut bytes = header.clone();
                bytes.extend_from_slice(b"\x16\x03\x01 the ClientHello");
                let writer = tokio::spawn(async move {
                    if dribble {
                        for b in bytes {
                            client.write_all(&[b]).await.unwrap();
                            tokio::task::yield_now().await;
                        }
                    } else {
                        client.write_all(&bytes).await.unwrap();
                    }
                    client
                });
                let h = read_proxy_header(&mut server).await.unwrap();
                assert_eq!(h.addresses, addrs());
                assert_eq!(h.len, header.len());
                drop(writer.await.unwrap());
                let mut rest = Vec::new();
                server.read_to_end(&mut rest).await.unwrap();
                assert_eq!(rest, b"\x16\x03\x01 the ClientHello");
            }
        }
    }

    #[tokio::test]
    async fn garbage_and_early_close_are_errors() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let e = read_proxy_header(&mut server).await.unwrap_err();
        assert!(matches!(e, ProxyHeaderError::Invalid(_)), "{e}");

        let (mut client, mut server) = tokio::io::duplex(4096);
        client.write_all(b"PROXY TCP4 1.2.3.4").await.unwrap();
        drop(client);
        let e = read_proxy_header(&mut server).await.unwrap_err();
        assert!(matches!(e, ProxyHeaderError::Closed { read: 18 }), "{e}");
        assert_eq!(
            e.to_string(),
            "closed after 18 bytes, within the PROXY header"
        );

        let (client, mut server) = tokio::io::duplex(4096);
        drop(client);
        let e = read_proxy_header(&mut server).await.unwrap_err();
        assert_eq!(e.to_string(), "closed before sending a PROXY header");
    }
}
