//! Reaching a signaling server: the URL, TLS for wss:// (the system's roots, or any
//! certificate with --insecure), the WebSocket handshake, and the open-files limit.

use std::net::SocketAddr;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::WebSocketStream;

use super::*;

/// A WebSocket's byte stream: TCP, or TLS over TCP.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub(crate) type Ws = WebSocketStream<Box<dyn Io>>;

/// Largest message read: the server's limit (64 KiB) with room to spare. A `welcome`
/// of a full room is a few KiB.
const MAX_MESSAGE: usize = 256 * 1024;

/// Read buffer of each WebSocket (allocated up front: 4 KiB instead of 128).
const READ_BUFFER: usize = 4096;

/// A parsed `--server`.
#[derive(Debug)]
pub(crate) struct Url {
    pub(crate) uri: Uri,
    pub(crate) tls: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
}

pub(crate) fn parse_url(s: &str) -> Result<Url, BenchError> {
    let bad = |why: &str| BenchError(format!("--server {s}: {why}"));
    let uri: Uri = s.parse().map_err(|e| bad(&format!("not a URL ({e})")))?;
    let tls = match uri.scheme_str() {
        Some("ws") => false,
        Some("wss") => true,
        _ => return Err(bad("give ws://HOST:PORT/ws or wss://HOST:PORT/ws")),
    };
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("no host"))?;
    // `[::1]` → `::1` for the address and the TLS name.
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    Ok(Url {
        uri,
        tls,
        host,
        port,
    })
}

/// A server to connect to: its URL, its address (resolved once), TLS if wss.
pub(crate) struct Target {
    pub(crate) url: Url,
    pub(crate) addr: SocketAddr,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.url)
            .field("addr", &self.addr)
            .field("tls", &self.tls.as_ref().map(|(_, name)| name))
            .finish()
    }
}

impl Target {
    pub(crate) async fn resolve(s: &str, tls: Option<TlsConnector>) -> Result<Target, BenchError> {
        let url = parse_url(s)?;
        let lookup = tokio::net::lookup_host((url.host.as_str(), url.port));
        let addr = match tokio::time::timeout(Duration::from_secs(5), lookup).await {
            Ok(Ok(mut addrs)) => addrs.next(),
            Ok(Err(e)) => return err(format!("--server {s}: cannot resolve {}: {e}", url.host)),
            Err(_) => None,
        }
        .ok_or_else(|| BenchError(format!("--server {s}: {} has no address", url.host)))?;
        let tls = match (url.tls, tls) {
            (false, _) => None,
            (true, Some(connector)) => {
                let name = ServerName::try_from(url.host.clone())
                    .map_err(|e| BenchError(format!("--server {s}: TLS name: {e}")))?;
                Some((connector, name))
            }
            (true, None) => return err("wss:// without a TLS configuration"),
        };
        Ok(Target { url, addr, tls })
    }

    /// TCP connect, TLS, WebSocket handshake. Errors are short causes for the report
    /// (`connect: ...`, `tls: ...`, `handshake: ...`).
    pub(crate) async fn connect(&self) -> Result<Ws, String> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect: {}", io_kind(&e)))?;
        // Small frames, each on its way at once (no Nagle delay behind a delayed ACK).
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some((connector, name)) => Box::new(
                connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| format!("tls: {e}"))?,
            ),
        };
        let request = self
            .url
            .uri
            .clone()
            .into_client_request()
            .map_err(|e| format!("request: {e}"))?;
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(0)
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        let (ws, _) = tokio_tungstenite::client_async_with_config(request, io, Some(config))
            .await
            .map_err(|e| match e {
                WsError::Http(r) => format!("handshake: HTTP {}", r.status().as_u16()),
                WsError::Io(e) => format!("handshake: {}", io_kind(&e)),
                // "Handshake not finished": the server closed the connection before
                // its HTTP answer.
                e => format!("handshake: {e}"),
            })?;
        Ok(ws)
    }
}

/// The kind of an IO error, without the OS error number (so that equal causes count
/// together).
pub(crate) fn io_kind(e: &std::io::Error) -> String {
    format!("{:?}", e.kind())
}

/// The TLS client configuration when any --server is wss://.
pub(crate) fn tls_config(args: &SignalArgs) -> Result<Option<TlsConnector>, BenchError> {
    if !args.servers.iter().any(|s| s.starts_with("wss:")) {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| BenchError(format!("TLS setup: {e}")))?;
    let mut config = if args.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        let (added, _) =
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        if added == 0 {
            return err(
                "wss://: no root certificates on this system (package ca-certificates); \
                 --insecure accepts any certificate",
            );
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(TlsConnector::from(Arc::new(config))))
}

/// --insecure: any certificate is accepted (a server's self-signed one); the handshake
/// signatures are still checked, so the connection is TLS as usual, only unauthenticated.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Raises the soft limit of open files to the hard limit when `need` is more than the
/// soft limit; refuses when the hard limit is lower than `need`.
pub(crate) fn raise_nofile(need: u64) -> Result<(), BenchError> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    // `None` is unlimited.
    if lim.current.is_none_or(|c| c >= need) {
        return Ok(());
    }
    if lim.maximum.is_some_and(|m| m < need) {
        return err(format!(
            "this run needs {need} open files (one per client and {SPARE_FDS} more) but the \
             hard limit is {}: raise it (ulimit -Hn, LimitNOFILE=) or use fewer --clients",
            lim.maximum.unwrap_or(0)
        ));
    }
    lim.current = Some(lim.maximum.unwrap_or(need));
    setrlimit(Resource::Nofile, lim)
        .map_err(|e| BenchError(format!("raising the open-files limit to {need}: {e}")))
}
