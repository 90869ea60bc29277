//! The HTTPS client the ACME protocol runs over ([`Https`], instant-acme's
//! `HttpClient`): one HTTP/1.1 connection per request (an order is a few dozen
//! requests, a few times a year), rustls on aws-lc-rs with the roots given, and every
//! request bounded: [`REQUEST_TIMEOUT`] from name lookup to the last byte of the
//! answer, at most [`MAX_RESPONSE_BYTES`] of it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue, Request, Response, Uri};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls::pki_types::ServerName;
use rustls::RootCertStore;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::super::{provider, TlsError};

/// Longest a request to the CA may take, connection and answer included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer read from the CA (a certificate chain is a few KiB).
pub const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// An HTTPS client for the CA's URLs.
#[derive(Clone)]
pub struct Https {
    tls: TlsConnector,
}

impl fmt::Debug for Https {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Https").finish_non_exhaustive()
    }
}

/// What went wrong with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// The host name did not resolve.
    Resolve,
    /// No address of the host accepted a TCP connection.
    Connect,
    /// The TLS handshake failed (an untrusted certificate, most often).
    Tls,
    /// No complete answer within [`REQUEST_TIMEOUT`].
    Timeout,
    /// The connection or the HTTP exchange broke, or the answer was too large.
    Http,
}

/// A request to the CA that got no answer: which URL, what went wrong and the cause.
#[derive(Debug, Clone)]
pub struct RequestError {
    pub url: String,
    pub failed: Failed,
    pub detail: String,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.url, self.detail)
    }
}

impl std::error::Error for RequestError {}

impl Https {
    /// A client that trusts `roots` alone.
    pub fn new(roots: RootCertStore) -> Result<Self, TlsError> {
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(format!("TLS setup of the ACME client: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            tls: TlsConnector::from(Arc::new(config)),
        })
    }

    /// Sends `req` and reads the whole answer, within [`REQUEST_TIMEOUT`].
    pub async fn send(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Result<Response<Bytes>, RequestError> {
        let url = req.uri().to_string();
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange(self.tls.clone(), req)).await {
            Ok(r) => r,
            Err(_) => Err(RequestError {
                url,
                failed: Failed::Timeout,
                detail: format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()),
            }),
        }
    }
}

impl HttpClient for Https {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.clone();
        Box::pin(async move {
            match client.send(req).await {
                Ok(response) => Ok(BytesResponse::from(response.map(Full::new))),
                Err(e) => Err(instant_acme::Error::Other(Box::new(e))),
            }
        })
    }
}

/// One request on a connection of its own.
async fn exchange(
    tls: TlsConnector,
    req: Request<BodyWrapper<Bytes>>,
) -> Result<Response<Bytes>, RequestError> {
    let (mut parts, body) = req.into_parts();
    let url = parts.uri.to_string();
    let fail = |failed: Failed, detail: String| RequestError {
        url: url.clone(),
        failed,
        detail,
    };
    if parts.uri.scheme_str() != Some("https") {
        return Err(fail(Failed::Http, "not an https URL".into()));
    }
    let Some(host) = parts
        .uri
        .host()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned())
    else {
        return Err(fail(Failed::Http, "no host in the URL".into()));
    };
    let port = parts.uri.port_u16().unwrap_or(443);

    let addrs: Vec<_> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| fail(Failed::Resolve, format!("cannot resolve {host}: {e}")))?
        .collect();
    let mut tcp = None;
    let mut last_error = format!("{host} has no address");
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last_error = format!("cannot connect to {addr}: {e}"),
        }
    }
    let tcp = tcp.ok_or_else(|| fail(Failed::Connect, last_error))?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(host.clone())
        .map_err(|e| fail(Failed::Tls, format!("{host} is not a TLS server name: {e}")))?;
    let stream = tls
        .connect(name, tcp)
        .await
        .map_err(|e| fail(Failed::Tls, e.to_string()))?;

    // HTTP/1.1 to the origin: the path in the request line, the host in `Host`.
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    let target = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    parts.uri = target
        .parse::<Uri>()
        .map_err(|e| fail(Failed::Http, format!("bad path: {e}")))?;
    let host_header = HeaderValue::try_from(authority)
        .map_err(|e| fail(Failed::Http, format!("bad host: {e}")))?;
    parts.headers.insert(header::HOST, host_header);
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    let req = Request::from_parts(parts, body);

    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| fail(Failed::Http, e.to_string()))?;
    let answer = async {
        let response = sender
            .send_request(req)
            .await
            .map_err(|e| fail(Failed::Http, e.to_string()))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| fail(Failed::Http, format!("reading the answer: {e}")))?
            .to_bytes();
        Ok(Response::from_parts(parts, body))
    };
    // The connection is driven beside the exchange; when it ends first, the exchange
    // learns why from hyper and ends too, so `drive` itself never completes.
    let drive = async {
        let _ = conn.await;
        std::future::pending::<Result<Response<Bytes>, RequestError>>().await
    };
    tokio::select! {
        r = answer => r,
        r = drive => r,
    }
}
