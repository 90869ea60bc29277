//! Hub tests on a virtual clock: every message and error code of `docs/signaling.md`.
//! This file holds the harness; the tests are in the submodules by topic.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::{json, Value};

use crate::token::{self, Claims};
use crate::*;

mod fuzz;
mod limits;
mod resume;
mod rooms;
mod sfu_messages;
mod sfu_modes;

/// Unix time of the virtual clock's start: 2025-11-24T16:00:00Z in ms.
const UNIX0_MS: u64 = 1_764_000_000_000;
const SECRET: &[u8] = b"token-secret";

type TestHub = Hub<fn(&IceRequest<'_>) -> Vec<IceServer>>;

fn ice(req: &IceRequest<'_>) -> Vec<IceServer> {
    vec![
        IceServer {
            urls: vec!["stun:127.0.0.1:3478".into()],
            username: None,
            credential: None,
        },
        IceServer {
            urls: vec!["turn:127.0.0.1:3478?transport=udp".into()],
            username: Some(format!("{}:{}", req.unix_secs + 3600, req.peer_id)),
            credential: Some(format!("cred-{}", req.conn)),
        },
    ]
}

struct T {
    hub: TestHub,
    t0: Instant,
    now: Instant,
    next_conn: u64,
}

impl T {
    fn new() -> T {
        T::with(HubConfig::default())
    }

    fn with(config: HubConfig) -> T {
        let t0 = Instant::now();
        T {
            hub: Hub::new(
                config,
                ice as fn(&IceRequest<'_>) -> Vec<IceServer>,
                [1; 32],
                t0,
                UNIX0_MS,
            ),
            t0,
            now: t0,
            next_conn: 1,
        }
    }

    fn advance(&mut self, d: Duration) -> Vec<Output> {
        self.now += d;
        if self.hub.poll_timeout().is_some_and(|t| t <= self.now) {
            self.hub.handle_timeout(self.now);
        }
        self.drain()
    }

    fn drain(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.hub.poll_output()).collect()
    }

    fn open(&mut self) -> ConnId {
        let c = ConnId(self.next_conn);
        self.next_conn += 1;
        self.hub.handle_open(self.now, c);
        assert!(self.drain().is_empty());
        c
    }

    fn text(&mut self, c: ConnId, text: &str) -> Vec<Output> {
        self.hub.handle_text(self.now, c, text);
        self.drain()
    }

    fn send(&mut self, c: ConnId, v: Value) -> Vec<Output> {
        self.text(c, &v.to_string())
    }

    /// Opens a connection and joins `room` as `name`; returns it and its peer id.
    fn join(&mut self, room: &str, name: &str) -> (ConnId, String, Vec<Output>) {
        let c = self.open();
        let out = self.send(c, json!({"type": "join", "room": room, "name": name}));
        let w = only(&out, c, "welcome");
        let id = w["id"].as_str().unwrap().to_owned();
        (c, id, out)
    }

    fn close(&mut self, c: ConnId, how: Disconnect) -> Vec<Output> {
        self.hub.handle_close(self.now, c, how);
        self.drain()
    }

    fn unix_ms(&self) -> u64 {
        UNIX0_MS + (self.now - self.t0).as_millis() as u64
    }
}

/// The messages sent to `c`, parsed.
fn to(out: &[Output], c: ConnId) -> Vec<Value> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { conn, text } if *conn == c => Some(serde_json::from_str(text).unwrap()),
            _ => None,
        })
        .collect()
}

/// The one message to `c`, which must have type `ty`.
fn only(out: &[Output], c: ConnId, ty: &str) -> Value {
    let m = to(out, c);
    assert_eq!(m.len(), 1, "to {c}: {m:?}");
    assert_eq!(m[0]["type"], ty, "{m:?}");
    m[0].clone()
}

fn error(out: &[Output], c: ConnId) -> (String, Option<String>) {
    let e = only(out, c, "error");
    assert!(!e["message"].as_str().unwrap().is_empty());
    (
        e["code"].as_str().unwrap().to_owned(),
        e.get("ref").map(|r| r.as_str().unwrap().to_owned()),
    )
}

fn err(code: &str, r: Option<&str>) -> (String, Option<String>) {
    (code.to_owned(), r.map(str::to_owned))
}

fn closes(out: &[Output]) -> Vec<(ConnId, CloseReason)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Close { conn, reason } => Some((*conn, *reason)),
            _ => None,
        })
        .collect()
}

const SDP_SEND: &str = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendrecv\r\n";
const SDP_RECV: &str = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\n";

// ---- mesh and SFU rooms (docs/sfu.md) ----

fn sfu_config() -> HubConfig {
    HubConfig {
        sfu: true,
        ..HubConfig::default()
    }
}

/// The SFU requests in `out`, in order.
fn sfu_reqs(out: &[Output]) -> Vec<SfuRequest> {
    out.iter()
        .filter_map(|o| match o {
            Output::Sfu(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn sfu_join(room: &str, peer: &str) -> SfuRequest {
    SfuRequest::Join {
        room: room.into(),
        peer: peer.into(),
        can_publish: true,
    }
}

fn sfu_leave(peer: &str, linger: bool) -> SfuRequest {
    SfuRequest::Leave {
        peer: peer.into(),
        linger,
    }
}

impl T {
    fn join_with(&mut self, room: &str, name: &str, mode: &str) -> (ConnId, String, Vec<Output>) {
        let c = self.open();
        let out = self.send(
            c,
            json!({"type": "join", "room": room, "name": name, "mode": mode}),
        );
        let w = to(&out, c)
            .into_iter()
            .find(|m| m["type"] == "welcome")
            .unwrap_or_else(|| panic!("no welcome: {out:?}"));
        (c, w["id"].as_str().unwrap().to_owned(), out)
    }

    fn sfu(&mut self, reply: SfuReply) -> Vec<Output> {
        self.hub.handle_sfu(self.now, reply);
        self.drain()
    }
}

/// Joins `n` peers to `room`; their connections and ids.
fn fill(t: &mut T, room: &str, n: usize) -> Vec<(ConnId, String)> {
    (0..n)
        .map(|i| {
            let (c, id, _) = t.join(room, &format!("P{i}"));
            (c, id)
        })
        .collect()
}
