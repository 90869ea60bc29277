//! A virtual-clock harness: a TURN client built from the codec, a fake relay binder,
//! and helpers that drive `Server` without sockets or sleeps.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tsunagi_stun::attr;
use tsunagi_stun::{Class, IntegrityKey, Message, MessageEncoder, Method, TransactionId};
use tsunagi_turn::{
    BindError, BindRequest, Destination, Event, Family, FiveTuple, PortRequest, RelayBinder,
    Server, ServerConfig, Transmit, Transport,
};

pub const REALM: &str = "example.org";
pub const UNIX0: u64 = 1_800_000_000;

/// Hands out relay addresses from fixed IPs and records releases.
#[derive(Debug)]
pub struct FakeBinder {
    pub v4: Option<IpAddr>,
    pub v6: Option<IpAddr>,
    pub next_port: u16,
    pub max_port: u16,
    pub bound: BTreeSet<SocketAddr>,
    pub released: Vec<SocketAddr>,
    pub requests: Vec<BindRequest>,
    /// Hand out released ports again (wrapping at `max_port`), for long churn tests.
    pub reuse_ports: bool,
}

impl FakeBinder {
    pub fn new() -> Self {
        Self {
            v4: Some("192.0.2.10".parse().unwrap()),
            v6: Some("2001:db8::10".parse().unwrap()),
            next_port: 50000,
            max_port: 60000,
            bound: BTreeSet::new(),
            released: Vec::new(),
            requests: Vec::new(),
            reuse_ports: false,
        }
    }
}

impl RelayBinder for FakeBinder {
    fn bind(&mut self, req: BindRequest) -> Result<SocketAddr, BindError> {
        self.requests.push(req);
        let ip = match req.family {
            Family::V4 => self.v4,
            Family::V6 => self.v6,
        }
        .ok_or(BindError::FamilyUnsupported)?;
        let mut port = self.next_port;
        if req.port != PortRequest::Any && port % 2 == 1 {
            port += 1;
        }
        let need = if req.port == PortRequest::EvenReserveNext {
            2
        } else {
            1
        };
        if self.reuse_ports {
            // First free port (pair) from `next_port`, wrapping once.
            let span = (self.max_port - 50000) as u32 + 1;
            let step = if req.port == PortRequest::Any { 1 } else { 2 };
            let mut tries = 0;
            while (port as u32 + need > self.max_port as u32 + 1)
                || (0..need as u16).any(|i| self.bound.contains(&SocketAddr::new(ip, port + i)))
            {
                tries += 1;
                if tries > span {
                    return Err(BindError::Exhausted);
                }
                port = if port as u32 + step + need > self.max_port as u32 + 1 {
                    50000
                } else {
                    port + step as u16
                };
            }
        }
        if port as u32 + need > self.max_port as u32 + 1 {
            return Err(BindError::Exhausted);
        }
        self.next_port = port + need as u16;
        let a = SocketAddr::new(ip, port);
        self.bound.insert(a);
        if need == 2 {
            self.bound.insert(SocketAddr::new(ip, port + 1));
        }
        Ok(a)
    }

    fn release(&mut self, relay: SocketAddr) {
        assert!(
            self.bound.remove(&relay),
            "released {relay} which was not bound"
        );
        self.released.push(relay);
    }
}

pub fn config() -> ServerConfig {
    // Nonces outlive the tests' clock jumps; `stale_nonce_*` sets its own lifetime.
    let mut c = ServerConfig {
        realm: REALM.into(),
        nonce_key: [7; 32],
        nonce_lifetime: Duration::from_secs(3 * 3600),
        ..ServerConfig::default()
    };
    c.credentials.add_user("alice", "wonderland");
    c.credentials.add_user("bob", "builder");
    c.peer_policy
        .allowed
        .push("198.51.100.0/24".parse().unwrap());
    c.peer_policy
        .allowed
        .push("2001:db8:1::/48".parse().unwrap());
    c
}

pub struct Harness {
    pub server: Server,
    pub binder: FakeBinder,
    pub t0: Instant,
    pub now: Instant,
    pub tid_counter: u32,
}

pub fn client_ft(port: u16) -> FiveTuple {
    FiveTuple {
        client: SocketAddr::new("203.0.113.5".parse().unwrap(), port),
        server: "192.0.2.1:3478".parse().unwrap(),
        transport: Transport::Udp,
    }
}

/// Credentials a client presents.
#[derive(Clone, Debug)]
pub struct Creds {
    pub username: String,
    pub password: String,
    pub nonce: String,
    pub realm: String,
}

impl Harness {
    pub fn new(config: ServerConfig) -> Self {
        let t0 = Instant::now();
        Self {
            server: Server::new(config, t0, UNIX0),
            binder: FakeBinder::new(),
            t0,
            now: t0,
            tid_counter: 0,
        }
    }

    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        self.server.handle_timeout(self.now, &mut self.binder);
    }

    /// Advance the clock to the server's next timeout, firing it.
    pub fn run_timers_until(&mut self, until: Instant) {
        while let Some(t) = self.server.poll_timeout() {
            if t > until {
                break;
            }
            self.now = self.now.max(t);
            self.server.handle_timeout(self.now, &mut self.binder);
        }
        self.now = self.now.max(until);
        self.server.handle_timeout(self.now, &mut self.binder);
    }

    pub fn tid(&mut self) -> TransactionId {
        self.tid_counter += 1;
        let mut b = [0xAB; 12];
        b[8..].copy_from_slice(&self.tid_counter.to_be_bytes());
        TransactionId::new(b)
    }

    pub fn send(&mut self, ft: FiveTuple, bytes: &[u8]) -> Vec<Transmit> {
        self.server
            .handle_client(self.now, ft, bytes, &mut self.binder);
        self.drain()
    }

    pub fn peer(&mut self, relay: SocketAddr, peer: SocketAddr, bytes: &[u8]) -> Vec<Transmit> {
        self.server.handle_peer(self.now, relay, peer, bytes);
        self.drain()
    }

    pub fn drain(&mut self) -> Vec<Transmit> {
        let mut v = Vec::new();
        while let Some(t) = self.server.poll_transmit() {
            v.push(t);
        }
        v
    }

    pub fn events(&mut self) -> Vec<Event> {
        let mut v = Vec::new();
        while let Some(e) = self.server.poll_event() {
            v.push(e);
        }
        v
    }

    /// Send one request and return the single response bytes addressed back to `ft`.
    pub fn request(&mut self, ft: FiveTuple, bytes: &[u8]) -> Vec<u8> {
        let out = self.send(ft, bytes);
        assert_eq!(out.len(), 1, "expected exactly one response, got {out:?}");
        assert_eq!(out[0].destination, Destination::Client(ft));
        out[0].payload.clone()
    }

    /// Obtain a nonce with an unauthenticated Allocate (the 401 challenge).
    pub fn challenge(&mut self, ft: FiveTuple, username: &str, password: &str) -> Creds {
        let tid = self.tid();
        let req = build(Class::Request, Method::ALLOCATE, tid, |e| {
            e.requested_transport(attr::PROTO_UDP).unwrap();
        });
        let resp = self.request(ft, &req);
        let m = Message::parse(&resp).unwrap();
        assert_eq!(m.class(), Class::Error);
        assert_eq!(m.error_code().unwrap().unwrap().code, 401);
        assert!(
            !m.has_message_integrity(),
            "a 401 challenge carries no MESSAGE-INTEGRITY"
        );
        Creds {
            username: username.into(),
            password: password.into(),
            nonce: m.get_str(attr::NONCE).unwrap().unwrap().into(),
            realm: m.get_str(attr::REALM).unwrap().unwrap().into(),
        }
    }

    /// An authenticated request; `f` adds method-specific attributes.
    pub fn auth_request(
        &mut self,
        ft: FiveTuple,
        method: Method,
        creds: &Creds,
        f: impl FnOnce(&mut MessageEncoder<'_>),
    ) -> Vec<u8> {
        let tid = self.tid();
        let req = signed(method, tid, creds, f);
        self.request(ft, &req)
    }

    /// Challenge + Allocate; returns the credentials and the relayed address.
    pub fn allocate(&mut self, ft: FiveTuple, user: &str, pw: &str) -> (Creds, SocketAddr) {
        let creds = self.challenge(ft, user, pw);
        let resp = self.auth_request(ft, Method::ALLOCATE, &creds, |e| {
            e.requested_transport(attr::PROTO_UDP).unwrap();
        });
        let m = Message::parse(&resp).unwrap();
        assert_eq!(
            m.class(),
            Class::Success,
            "allocate failed: {:?}",
            m.error_code()
        );
        verify(&m, &creds);
        let relay = m
            .get_xor_address(attr::XOR_RELAYED_ADDRESS)
            .unwrap()
            .unwrap();
        (creds, relay)
    }

    pub fn create_permission(
        &mut self,
        ft: FiveTuple,
        creds: &Creds,
        peers: &[SocketAddr],
    ) -> Vec<u8> {
        let peers = peers.to_vec();
        self.auth_request(ft, Method::CREATE_PERMISSION, creds, |e| {
            for p in &peers {
                e.xor_address(attr::XOR_PEER_ADDRESS, p).unwrap();
            }
        })
    }

    pub fn channel_bind(
        &mut self,
        ft: FiveTuple,
        creds: &Creds,
        ch: u16,
        peer: SocketAddr,
    ) -> Vec<u8> {
        self.auth_request(ft, Method::CHANNEL_BIND, creds, |e| {
            e.channel_number(ch).unwrap();
            e.xor_address(attr::XOR_PEER_ADDRESS, &peer).unwrap();
        })
    }
}

pub fn key(creds: &Creds) -> IntegrityKey {
    IntegrityKey::from_bytes(&tsunagi_stun::long_term_key_md5(
        &creds.username,
        &creds.realm,
        &creds.password,
    ))
}

pub fn build(
    class: Class,
    method: Method,
    tid: TransactionId,
    f: impl FnOnce(&mut MessageEncoder<'_>),
) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let mut e = MessageEncoder::new(&mut buf, class, method, tid).unwrap();
    f(&mut e);
    let n = e.finish();
    buf.truncate(n);
    buf
}

pub fn signed(
    method: Method,
    tid: TransactionId,
    creds: &Creds,
    f: impl FnOnce(&mut MessageEncoder<'_>),
) -> Vec<u8> {
    let k = key(creds);
    build(Class::Request, method, tid, |e| {
        f(e);
        e.string(attr::USERNAME, &creds.username).unwrap();
        e.string(attr::REALM, &creds.realm).unwrap();
        e.string(attr::NONCE, &creds.nonce).unwrap();
        e.message_integrity(&k).unwrap();
        e.fingerprint().unwrap();
    })
}

/// Assert a response is integrity-protected with the client's key.
pub fn verify(m: &Message<'_>, creds: &Creds) {
    m.verify_integrity(&key(creds))
        .expect("response MESSAGE-INTEGRITY verifies with the client's key");
}

pub fn error_code(resp: &[u8]) -> u16 {
    let m = Message::parse(resp).unwrap();
    assert_eq!(m.class(), Class::Error, "expected an error response");
    m.error_code().unwrap().unwrap().code
}

pub fn reason(resp: &[u8]) -> String {
    let m = Message::parse(resp).unwrap();
    m.error_code().unwrap().unwrap().reason.to_string()
}

pub fn is_success(resp: &[u8]) -> bool {
    Message::parse(resp).unwrap().class() == Class::Success
}

pub fn peer4(last: u8, port: u16) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, last)),
        port,
    )
}
