//! Shared helpers for the socket tests: an in-process tsunagi on 127.0.0.1 port 0, a
//! STUN/TURN client written with the `tsunagi_stun` encoder, and a UDP echo peer.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::task::JoinHandle;
use tsunagi::turn_runtime::{Listeners, RuntimeOptions, TurnService};
use tsunagi_stun::{
    attr, stream_frame_len, ChannelData, Class, EncodeError, FrameLen, IntegrityKey, Message,
    MessageEncoder, Method, PasswordAlgorithm, TransactionId,
};
use tsunagi_turn::auth::Credentials;
use tsunagi_turn::policy::PeerPolicy;
use tsunagi_turn::{Server, ServerConfig};

pub const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
pub const REALM: &str = "tsunagi.test";
pub const USER: &str = "alice";
pub const PASSWORD: &str = "wonderland";
pub const REST_SECRET: &str = "test-rest-secret";
/// A documentation block (RFC 5737) allowed as peers: in a network namespace with only
/// loopback, sends there fail at the socket.
pub const UNROUTABLE_RANGE: &str = "198.51.100.0/24";
const TIMEOUT: Duration = Duration::from_secs(5);

/// The test server's configuration: a static user, a REST secret, loopback peers and
/// the unroutable documentation range allowed.
pub fn server_config() -> ServerConfig {
    let mut credentials = Credentials::default();
    credentials.add_user(USER, PASSWORD);
    credentials.add_secret(REST_SECRET).unwrap();
    let mut nonce_key = [0u8; 32];
    rand::rng().fill(&mut nonce_key);
    ServerConfig {
        realm: REALM.into(),
        credentials,
        peer_policy: PeerPolicy {
            allowed: vec![UNROUTABLE_RANGE.parse().unwrap()],
            denied: Vec::new(),
            allow_loopback: true,
            allowed_endpoints: Vec::new(),
        },
        nonce_key,
        ..ServerConfig::default()
    }
}

/// A relay port range of 200 ports at a random place in 10000..20000: below the
/// kernel's ephemeral ports and apart from the interop tests' 20000..32000. Parallel
/// tests may overlap; the relay binder then skips ports in use.
pub fn relay_range() -> (u16, u16) {
    let min = rand::rng().random_range(10_000..19_800);
    (min, min + 199)
}

pub fn runtime_options() -> RuntimeOptions {
    let (min_port, max_port) = relay_range();
    RuntimeOptions {
        relay_ips: vec![LOCALHOST],
        min_port,
        max_port,
        max_tcp_connections: 100,
        workers: 1,
        redact_logs: false,
        queue_capacity: 1024,
        tcp_write_queue: 64,
        health: Default::default(),
        proxy_protocol: Default::default(),
    }
}

/// Starts tsunagi in-process on 127.0.0.1, UDP and TCP on port 0.
pub fn start_server() -> TurnService {
    start_server_with(server_config(), runtime_options())
}

pub fn start_server_with(config: ServerConfig, opts: RuntimeOptions) -> TurnService {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("debug")),
        )
        .with_test_writer()
        .try_init();
    let listeners = Listeners::bind(&[SocketAddr::new(LOCALHOST, 0)], true, true).unwrap();
    let unix_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let server = Server::new(config, Instant::now(), unix_now);
    TurnService::start(server, listeners, opts).unwrap()
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A UDP peer on 127.0.0.1 that sends every datagram back where it came from.
pub struct EchoPeer {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl EchoPeer {
    pub async fn start() -> Self {
        let sock = UdpSocket::bind(SocketAddr::new(LOCALHOST, 0))
            .await
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                let _ = sock.send_to(&buf[..n], from).await;
            }
        });
        Self { addr, task }
    }
}

impl Drop for EchoPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A byte stream to the server: TCP, or TLS over TCP.
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

enum Conn {
    Udp {
        sock: UdpSocket,
        server: SocketAddr,
    },
    /// TCP or TLS; `local` is the TCP socket's address.
    Tcp {
        stream: Box<dyn Stream>,
        local: SocketAddr,
        buf: BytesMut,
    },
}

/// What arrived from a peer through the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relayed {
    Data { peer: SocketAddr, data: Vec<u8> },
    Channel { channel: u16, data: Vec<u8> },
}

/// A STUN/TURN client over UDP or TCP, with long-term credentials.
pub struct Client {
    conn: Conn,
    pub username: String,
    pub password: String,
    realm: Option<String>,
    nonce: Option<Vec<u8>>,
    /// Messages received while waiting for something else.
    backlog: VecDeque<Vec<u8>>,
}

impl Client {
    pub async fn udp(server: SocketAddr) -> Self {
        let sock = UdpSocket::bind(SocketAddr::new(LOCALHOST, 0))
            .await
            .unwrap();
        Self::new(Conn::Udp { sock, server })
    }

    pub async fn tcp(server: SocketAddr) -> Self {
        let stream = TcpStream::connect(server).await.unwrap();
        let local = stream.local_addr().unwrap();
        Self::new(Conn::Tcp {
            stream: Box::new(stream),
            local,
            buf: BytesMut::new(),
        })
    }

    /// A client over an established stream (e.g. TLS); `local` is its TCP address.
    pub fn stream(stream: Box<dyn Stream>, local: SocketAddr) -> Self {
        Self::new(Conn::Tcp {
            stream,
            local,
            buf: BytesMut::new(),
        })
    }

    fn new(conn: Conn) -> Self {
        Self {
            conn,
            username: USER.into(),
            password: PASSWORD.into(),
            realm: None,
            nonce: None,
            backlog: VecDeque::new(),
        }
    }

    pub fn with_credentials(mut self, username: &str, password: &str) -> Self {
        self.username = username.into();
        self.password = password.into();
        self
    }

    pub fn is_tcp(&self) -> bool {
        matches!(self.conn, Conn::Tcp { .. })
    }

    pub fn local_addr(&self) -> SocketAddr {
        match &self.conn {
            Conn::Udp { sock, .. } => sock.local_addr().unwrap(),
            Conn::Tcp { local, .. } => *local,
        }
    }

    pub async fn send_raw(&mut self, data: &[u8]) {
        match &mut self.conn {
            Conn::Udp { sock, server } => {
                sock.send_to(data, *server).await.unwrap();
            }
            Conn::Tcp { stream, .. } => {
                stream.write_all(data).await.unwrap();
                // TLS holds written bytes until a flush.
                stream.flush().await.unwrap();
            }
        }
    }

    /// The next message (datagram or TCP frame), or `None` after `wait`.
    pub async fn recv_within(&mut self, wait: Duration) -> Option<Vec<u8>> {
        if let Some(m) = self.backlog.pop_front() {
            return Some(m);
        }
        tokio::time::timeout(wait, self.recv_conn()).await.ok()?
    }

    /// `None` when the TCP connection closed.
    async fn recv_conn(&mut self) -> Option<Vec<u8>> {
        match &mut self.conn {
            Conn::Udp { sock, .. } => {
                let mut buf = vec![0u8; 65_536];
                let (n, _) = sock.recv_from(&mut buf).await.ok()?;
                buf.truncate(n);
                Some(buf)
            }
            Conn::Tcp { stream, buf, .. } => loop {
                match stream_frame_len(buf) {
                    FrameLen::Stun(n) | FrameLen::ChannelData(n) if buf.len() >= n => {
                        return Some(buf.split_to(n).to_vec());
                    }
                    FrameLen::Invalid => panic!("server sent a non-STUN stream"),
                    _ => {}
                }
                buf.reserve(4096);
                if stream.read_buf(buf).await.ok()? == 0 {
                    return None;
                }
            },
        }
    }

    pub async fn recv(&mut self) -> Vec<u8> {
        self.recv_within(TIMEOUT)
            .await
            .expect("nothing from the server within 5 s")
    }

    /// Waits for the response to `tid`, keeping anything else for later.
    async fn recv_response(&mut self, tid: TransactionId) -> Vec<u8> {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        let mut other = Vec::new();
        let found = loop {
            let m = tokio::time::timeout_at(deadline, self.recv_conn())
                .await
                .expect("no response within 5 s")
                .expect("connection closed while waiting for a response");
            let is_it = Message::parse(&m).is_ok_and(|msg| {
                msg.transaction_id() == tid && matches!(msg.class(), Class::Success | Class::Error)
            });
            if is_it {
                break m;
            }
            other.push(m);
        };
        self.backlog.extend(other);
        found
    }

    /// A Binding request without credentials; returns the response.
    pub async fn binding(&mut self) -> Vec<u8> {
        let tid = random_tid();
        let mut buf = [0u8; 128];
        let mut enc = MessageEncoder::new(&mut buf, Class::Request, Method::BINDING, tid).unwrap();
        enc.fingerprint().unwrap();
        let n = enc.finish();
        self.send_raw(&buf[..n]).await;
        self.recv_response(tid).await
    }

    fn key(&self) -> IntegrityKey {
        IntegrityKey::long_term(
            PasswordAlgorithm::Md5,
            &self.username,
            self.realm.as_deref().unwrap_or(REALM),
            &self.password,
        )
    }

    /// Sends an authenticated request with the attributes `attrs` writes; answers a
    /// first 401 challenge (or a 438 stale nonce) by retrying with the new nonce.
    /// Returns the final response.
    pub async fn request(
        &mut self,
        method: Method,
        attrs: impl Fn(&mut MessageEncoder<'_>) -> Result<(), EncodeError>,
    ) -> Vec<u8> {
        for _ in 0..3 {
            let tid = random_tid();
            let mut buf = vec![0u8; 70_000];
            let mut enc = MessageEncoder::new(&mut buf, Class::Request, method, tid).unwrap();
            attrs(&mut enc).unwrap();
            if let (Some(realm), Some(nonce)) = (&self.realm, &self.nonce) {
                enc.string(attr::USERNAME, &self.username).unwrap();
                enc.string(attr::REALM, realm).unwrap();
                enc.attr(attr::NONCE, nonce).unwrap();
                enc.message_integrity(&self.key()).unwrap();
            }
            enc.fingerprint().unwrap();
            let n = enc.finish();
            self.send_raw(&buf[..n]).await;
            let resp = self.recv_response(tid).await;
            let msg = Message::parse(&resp).unwrap();
            if msg.class() == Class::Error {
                let code = msg.error_code().unwrap().map(|e| e.code);
                let retry = (code == Some(401) && self.nonce.is_none()) || code == Some(438);
                if retry {
                    if let (Some(realm), Some(nonce)) =
                        (msg.get_str(attr::REALM).unwrap(), msg.get(attr::NONCE))
                    {
                        self.realm = Some(realm.to_owned());
                        self.nonce = Some(nonce.to_vec());
                        continue;
                    }
                }
            }
            return resp;
        }
        panic!("no answer but challenges after 3 tries");
    }

    /// Allocate (UDP relay); panics unless it succeeds. Returns XOR-RELAYED-ADDRESS.
    pub async fn allocate(&mut self) -> SocketAddr {
        let resp = self
            .request(Method::ALLOCATE, |e| {
                e.requested_transport(attr::PROTO_UDP)?;
                Ok(())
            })
            .await;
        relayed_address(&resp)
    }

    pub async fn create_permission(&mut self, peers: &[SocketAddr]) {
        let resp = self
            .request(Method::CREATE_PERMISSION, |e| {
                for p in peers {
                    e.xor_address(attr::XOR_PEER_ADDRESS, p)?;
                }
                Ok(())
            })
            .await;
        expect_success(&resp, "CreatePermission");
    }

    pub async fn channel_bind(&mut self, channel: u16, peer: SocketAddr) {
        let resp = self
            .request(Method::CHANNEL_BIND, |e| {
                e.channel_number(channel)?;
                e.xor_address(attr::XOR_PEER_ADDRESS, &peer)?;
                Ok(())
            })
            .await;
        expect_success(&resp, "ChannelBind");
    }

    pub async fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) {
        let mut buf = vec![0u8; data.len() + 128];
        let mut enc =
            MessageEncoder::new(&mut buf, Class::Indication, Method::SEND, random_tid()).unwrap();
        enc.xor_address(attr::XOR_PEER_ADDRESS, &peer).unwrap();
        enc.attr(attr::DATA, data).unwrap();
        let n = enc.finish();
        self.send_raw(&buf[..n]).await;
    }

    /// ChannelData, padded to 4 bytes over TCP (RFC 8656 §12.5), unpadded over UDP.
    pub async fn send_channel_data(&mut self, channel: u16, data: &[u8]) {
        let padded = self.is_tcp();
        let mut buf = vec![0u8; ChannelData::encoded_len(data.len(), padded)];
        let n = ChannelData { channel, data }
            .encode(&mut buf, padded)
            .unwrap();
        self.send_raw(&buf[..n]).await;
    }

    /// The next Data indication or ChannelData from the relay.
    pub async fn recv_relayed(&mut self) -> Relayed {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let m = self
                .recv_within(left)
                .await
                .expect("nothing relayed from the peer within 5 s");
            if let Some(r) = parse_relayed(&m, self.is_tcp()) {
                return r;
            }
        }
    }
}

/// A Data indication or ChannelData message, if `m` is one.
pub fn parse_relayed(m: &[u8], tcp: bool) -> Option<Relayed> {
    if let Ok(cd) = ChannelData::parse(m) {
        if tcp {
            assert_eq!(m.len() % 4, 0, "ChannelData over TCP must be padded");
        }
        return Some(Relayed::Channel {
            channel: cd.channel,
            data: cd.data.to_vec(),
        });
    }
    let msg = Message::parse(m).ok()?;
    if msg.class() == Class::Indication && msg.method() == Method::DATA {
        let peer = msg.get_xor_address(attr::XOR_PEER_ADDRESS).ok()??;
        let data = msg.get(attr::DATA)?.to_vec();
        return Some(Relayed::Data { peer, data });
    }
    None
}

pub fn random_tid() -> TransactionId {
    let mut t = [0u8; 12];
    rand::rng().fill(&mut t);
    TransactionId::new(t)
}

pub fn error_code(resp: &[u8]) -> Option<u16> {
    let msg = Message::parse(resp).unwrap();
    msg.error_code().unwrap().map(|e| e.code)
}

pub fn expect_success(resp: &[u8], what: &str) {
    let msg = Message::parse(resp).unwrap();
    if msg.class() != Class::Success {
        let e = msg.error_code().unwrap();
        panic!("{what} failed: {e:?}");
    }
}

pub fn relayed_address(resp: &[u8]) -> SocketAddr {
    expect_success(resp, "Allocate");
    Message::parse(resp)
        .unwrap()
        .get_xor_address(attr::XOR_RELAYED_ADDRESS)
        .unwrap()
        .expect("Allocate success without XOR-RELAYED-ADDRESS")
}

/// Waits until `f` holds, polling every 10 ms, for at most 5 s.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Parses `tsunagi bench ARGS...` and runs it on a blocking thread (the generator is
/// synchronous).
pub async fn run_bench(args: Vec<String>) -> tsunagi_bench::Report {
    let argv = args.clone();
    let b = tsunagi_bench::BenchArgs::parse_from(args).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    tokio::task::spawn_blocking(move || tsunagi_bench::report(&b))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"))
}

/// A TLS client that trusts only `m`'s certificate, offering `alpn`.
pub fn tls_client(m: &tsunagi::tls::TlsMaterial, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(m.certificate().clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}
