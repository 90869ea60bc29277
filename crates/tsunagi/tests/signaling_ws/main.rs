//! The signaling WebSocket end to end: an in-process server on 127.0.0.1 port 0 and
//! tokio-tungstenite clients. The tests are in the modules by topic: every message and
//! every error code of `docs/signaling.md`, sessions over time (resume after a dropped
//! socket, grace, idle timeouts, shutdown), misbehaving clients that get their error (or
//! get closed) while other peers keep talking, and the link to the SFU. This file holds
//! the server and client they share.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod messages;
mod misbehaving;
mod sessions;
mod sfu;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tsunagi::http::StatsSource;
use tsunagi::signaling::{routes, SfuLink, SignalingHandle, SignalingOptions};
use tsunagi_signal::token::{self, Claims};
use tsunagi_signal::{ErrorCode, SfuReply, SfuRequest, TokenSecret};

const TURN_SECRET: &str = "turn-rest-secret";
const TOKEN_SECRET: &[u8] = b"signaling-token-secret";
const WAIT: Duration = Duration::from_secs(5);
const SDP_SEND: &str = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendrecv\r\n";
const SDP_RECV: &str = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\n";

struct Server {
    addr: SocketAddr,
    handle: SignalingHandle,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(configure: impl FnOnce(&mut SignalingOptions)) -> Server {
        let mut o = SignalingOptions {
            turn_secret: Some(TURN_SECRET.into()),
            ..SignalingOptions::default()
        };
        configure(&mut o);
        let handle = SignalingHandle::start(o);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = routes(handle.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let serve = axum::serve(listener, app).into_future();
        let task = tokio::spawn(async move {
            let _ = serve.await;
        });
        Server { addr, handle, task }
    }

    async fn client(&self) -> Client {
        Client::connect(self.addr).await
    }

    /// A client that joined `room` as `name`: it, its id, its welcome.
    async fn join(&self, room: &str, name: &str) -> (Client, String, Value) {
        let mut c = self.client().await;
        c.send(json!({"type": "join", "room": room, "name": name}))
            .await;
        let w = c.expect("welcome").await;
        let id = w["id"].as_str().unwrap().to_owned();
        (c, id, w)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .unwrap();
        Client { ws }
    }

    async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    /// The next text frame. Panics on a close or after [`WAIT`].
    async fn recv(&mut self) -> Value {
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a message in time")
                .expect("the socket open")
                .expect("a frame");
            match frame {
                Message::Text(t) => return serde_json::from_str(&t).unwrap(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    async fn expect(&mut self, ty: &str) -> Value {
        let m = self.recv().await;
        assert_eq!(m["type"], ty, "{m}");
        m
    }

    /// An `error` with `code` and `ref` (`None`: no `ref`).
    async fn expect_error(&mut self, code: &str, reference: Option<&str>) -> Value {
        let e = self.expect("error").await;
        assert_eq!(e["code"], code, "{e}");
        assert_eq!(e.get("ref").and_then(Value::as_str), reference, "{e}");
        assert!(!e["message"].as_str().unwrap().is_empty());
        e
    }

    /// Nothing arrives for `d`.
    async fn expect_silence(&mut self, d: Duration) {
        if let Ok(Some(Ok(m))) = tokio::time::timeout(d, self.ws.next()).await {
            if !matches!(m, Message::Ping(_) | Message::Pong(_)) {
                panic!("expected silence, got {m:?}");
            }
        }
    }

    /// Reads until the server closes; returns the close code (skipping text frames).
    async fn expect_close(&mut self) -> Option<u16> {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a close in time")
            {
                Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    async fn close(&mut self, code: u16) {
        self.ws
            .close(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: "".into(),
            }))
            .await
            .unwrap();
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn tok(room: &str, sub: &str, ttl: i64, can_publish: Option<bool>, secret: &[u8]) -> String {
    token::sign(
        secret,
        &Claims {
            room: room.into(),
            sub: sub.into(),
            exp: (unix_now() as i64 + ttl) as u64,
            nbf: None,
            can_publish,
        },
    )
}
