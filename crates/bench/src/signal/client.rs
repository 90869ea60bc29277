//! One signaling client: connect and join, read everything, send chats on its schedule,
//! close with 1000. Everything it sees goes into the shared [`Agg`].

use std::borrow::Cow;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::OwnedSemaphorePermit;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::net::{io_kind, Ws};
use super::*;

/// Messages read before `welcome` (or an error) at most.
const MAX_BEFORE_WELCOME: usize = 64;

/// Messages read while waiting for the server's close frame at most.
const MAX_WHILE_CLOSING: usize = 100_000;

/// How long a refused connection waits for the server's close frame.
const REFUSED_CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The fields of a server message that the bench reads (unknown fields are skipped).
#[derive(Debug, Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    mode: Option<Cow<'a, str>>,
    #[serde(default, rename = "maxPeers")]
    max_peers: Option<u64>,
    #[serde(default, borrow)]
    reason: Option<Cow<'a, str>>,
}

/// The chat text of client `client`: `b|{client}|{seq}|{µs}`.
pub(crate) fn chat_text(client: usize, seq: u64, us: u64) -> String {
    format!(r#"{{"type":"chat","text":"b|{client}|{seq}|{us}"}}"#)
}

/// Sender and send time (µs since the bench started) of one of our chat texts.
pub(crate) fn parse_chat(text: &str) -> Option<(usize, u64)> {
    let mut it = text.strip_prefix("b|")?.split('|');
    let client = it.next()?.parse().ok()?;
    let _seq: u64 = it.next()?.parse().ok()?;
    let us = it.next()?.parse().ok()?;
    it.next().is_none().then_some((client, us))
}

/// Why a connection ended, from its close frame.
fn close_cause(f: Option<&CloseFrame>) -> String {
    match f {
        Some(f) => format!("closed by server: {}", u16::from(f.code)),
        None => "closed by server: no code".to_owned(),
    }
}

fn ws_cause(what: &str, e: &WsError) -> String {
    match e {
        WsError::Io(e) => format!("{what}: {}", io_kind(e)),
        e => format!("{what}: {e}"),
    }
}

/// Client `i` from start to end. `permit` is one of the joins in flight: given back
/// once the join has ended.
pub(crate) async fn run(
    i: usize,
    server: usize,
    sh: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
    permit: OwnedSemaphorePermit,
) {
    let room = i % sh.rooms;
    let started = Instant::now();
    sh.agg().connect_started(started, server);
    let joined = tokio::time::timeout(JOIN_TIMEOUT, join(i, room, server, &sh)).await;
    let now = Instant::now();
    drop(permit);
    let ws = match joined {
        Ok(Ok((ws, welcome))) => {
            let mut agg = sh.agg();
            agg.joined(room, server, started, now);
            count(
                &mut agg.welcome_modes,
                welcome.mode.as_deref().unwrap_or("none"),
            );
            if let Some(m) = welcome.max_peers {
                agg.max_peers = Some(agg.max_peers.map_or(m, |p| p.min(m)));
            }
            Some(ws)
        }
        Ok(Err((why, ws))) => {
            sh.agg().join_failed(server, why, now);
            if let Some(mut ws) = ws {
                finish_close(&sh, &mut ws, REFUSED_CLOSE_TIMEOUT).await;
            }
            None
        }
        Err(_) => {
            sh.agg().join_failed(server, "timeout".to_owned(), now);
            None
        }
    };
    sh.joins_done.fetch_add(1, Ordering::AcqRel);
    sh.join_notify.notify_one();
    let Some(mut ws) = ws else {
        return;
    };
    let mut c = Client {
        i,
        room,
        server,
        sh: &sh,
        next: None,
        seq: 0,
    };
    match c.serve(&mut ws, &mut phase).await {
        Some(why) => sh.agg().disconnected(room, server, why),
        None => {
            sh.agg().left(room, server);
            finish_close(&sh, &mut ws, CLOSE_TIMEOUT).await;
        }
    }
}

/// What `welcome` said.
struct Welcome {
    mode: Option<String>,
    max_peers: Option<u64>,
}

type JoinError = (String, Option<Ws>);

/// Connect, `join`, wait for `welcome`. On an `error` the WebSocket is handed back to
/// be closed.
async fn join(
    i: usize,
    room: usize,
    server: usize,
    sh: &Shared,
) -> Result<(Ws, Welcome), JoinError> {
    let target = sh
        .targets
        .get(server)
        .ok_or_else(|| ("no such server".to_owned(), None))?;
    let mut ws = target.connect().await.map_err(|e| (e, None))?;
    let mut join = serde_json::json!({
        "type": "join",
        "room": format!("{}{room}", sh.room_prefix),
        "name": format!("{}{i}", sh.name_prefix),
    });
    if let Some(t) = &sh.token {
        join["token"] = t.as_str().into();
    }
    if let Some(m) = sh.mode {
        join["mode"] = m.as_str().into();
    }
    if let Err(e) = ws.send(Message::text(join.to_string())).await {
        return Err((ws_cause("send", &e), None));
    }
    for _ in 0..MAX_BEFORE_WELCOME {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => match serde_json::from_str::<Incoming<'_>>(&t) {
                Ok(m) if m.kind == "welcome" => {
                    let welcome = Welcome {
                        mode: m.mode.map(Cow::into_owned),
                        max_peers: m.max_peers,
                    };
                    return Ok((ws, welcome));
                }
                Ok(m) if m.kind == "error" => {
                    let code = m
                        .code
                        .map_or("error without a code".to_owned(), Cow::into_owned);
                    return Err((code, Some(ws)));
                }
                Ok(_) => {}
                Err(_) => return Err(("not JSON before welcome".to_owned(), Some(ws))),
            },
            Some(Ok(Message::Close(f))) => return Err((close_cause(f.as_ref()), None)),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err((ws_cause("read", &e), None)),
            None => return Err(("closed before welcome".to_owned(), None)),
        }
    }
    Err(("no welcome".to_owned(), Some(ws)))
}

/// Sends close 1000 and waits (up to `within`) for the server's close frame; counts
/// the outcome.
async fn finish_close(sh: &Shared, ws: &mut Ws, within: Duration) {
    let outcome = tokio::time::timeout(within, async {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        ws.close(Some(frame))
            .await
            .map_err(|e| ws_cause("close", &e))?;
        for _ in 0..MAX_WHILE_CLOSING {
            match ws.next().await {
                Some(Ok(Message::Close(_))) => return Ok(()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(ws_cause("closing", &e)),
                None => return Err("no close frame".to_owned()),
            }
        }
        Err("no close frame".to_owned())
    })
    .await
    .unwrap_or_else(|_| Err("timeout".to_owned()));
    let mut agg = sh.agg();
    match outcome {
        Ok(()) => agg.closed_clean += 1,
        Err(why) => count(&mut agg.close_failures, why),
    }
}

/// A joined client.
struct Client<'a> {
    i: usize,
    room: usize,
    server: usize,
    sh: &'a Shared,
    /// When the next chat is due.
    next: Option<Instant>,
    seq: u64,
}

impl Client<'_> {
    /// Reads and sends until the close phase (`None`) or until the connection ends
    /// (its cause). Each turn handles one message, one chat or one phase change; the
    /// close phase ends it within the run's bounded time.
    async fn serve(&mut self, ws: &mut Ws, phase: &mut watch::Receiver<Phase>) -> Option<String> {
        // A client that joined after the chat phase began (a slow join) starts at once.
        if *phase.borrow_and_update() == Phase::Chat {
            self.schedule_first();
        }
        if *phase.borrow() == Phase::Close {
            return None;
        }
        loop {
            let due = self.next;
            tokio::select! {
                m = ws.next() => match m {
                    Some(Ok(Message::Text(t))) => self.handle(&t),
                    Some(Ok(Message::Close(f))) => return Some(close_cause(f.as_ref())),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Some(ws_cause("read", &e)),
                    None => return Some("closed without a close frame".to_owned()),
                },
                _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now).into()), if due.is_some() => {
                    if let Err(why) = self.send_chat(ws).await {
                        return Some(why);
                    }
                }
                r = phase.changed() => {
                    let p = if r.is_ok() { *phase.borrow_and_update() } else { Phase::Close };
                    match p {
                        Phase::Join => {}
                        Phase::Chat => self.schedule_first(),
                        Phase::Close => return None,
                    }
                }
            }
        }
    }

    fn schedule_first(&mut self) {
        let Some(plan) = self.sh.plan.get() else {
            return;
        };
        if plan.interval.is_none() || plan.chat_rate <= 0.0 {
            return;
        }
        let first = plan.t0 + Duration::from_secs_f64(self.i as f64 / plan.chat_rate);
        self.next = (first < plan.window_end).then_some(first);
    }

    async fn send_chat(&mut self, ws: &mut Ws) -> Result<(), String> {
        let Some(plan) = self.sh.plan.get() else {
            self.next = None;
            return Ok(());
        };
        let now = Instant::now();
        let us = self.sh.us_since_start(now);
        let text = chat_text(self.i, self.seq, us);
        self.seq += 1;
        match tokio::time::timeout(WRITE_TIMEOUT, ws.send(Message::text(text))).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(ws_cause("write", &e)),
            Err(_) => return Err("write: timeout".to_owned()),
        }
        let in_window = (plan.window_start_us..plan.window_end_us).contains(&us);
        self.sh.agg().sent(self.room, self.server, in_window);
        // On schedule; a generator that fell behind sends late rather than in a burst
        // (a burst would run into the server's rate limit).
        self.next = match (self.next, plan.interval) {
            (Some(due), Some(iv)) => Some((due + iv).max(Instant::now())),
            _ => None,
        }
        .filter(|t| *t < plan.window_end);
        Ok(())
    }

    fn handle(&mut self, text: &str) {
        let Ok(m) = serde_json::from_str::<Incoming<'_>>(text) else {
            count(&mut self.sh.agg().errors, "not JSON from the server");
            return;
        };
        match &*m.kind {
            "chat" => self.chat(m.text.as_deref().unwrap_or("")),
            "error" => {
                let code = m.code.as_deref().unwrap_or("error without a code");
                count(&mut self.sh.agg().errors, code);
            }
            "mode" => self.sh.agg().mode_messages += 1,
            // A cluster ended the session (the server closes with 4001 next, counted
            // as a disconnect); the bench does not join again.
            "rejoin" => {
                let reason = m.reason.as_deref().unwrap_or("no reason");
                count(&mut self.sh.agg().errors, format!("rejoin: {reason}"));
            }
            // peer-joined, peer-left, pong, media, speaker, sfu-stats, ...: nothing to do.
            _ => {}
        }
    }

    fn chat(&mut self, text: &str) {
        let now_us = self.sh.us_since_start(Instant::now());
        let sh = self.sh;
        let mut agg = sh.agg();
        let Some((from, sent_us)) = parse_chat(text) else {
            agg.fanout.foreign += 1;
            return;
        };
        if from % sh.rooms != self.room || from == self.i {
            agg.fanout.misrouted += 1;
            return;
        }
        let in_window = sh
            .plan
            .get()
            .is_some_and(|p| (p.window_start_us..p.window_end_us).contains(&sent_us));
        if !in_window {
            agg.fanout.outside_window += 1;
        } else if !sh.counting.load(Ordering::Acquire) {
            agg.fanout.late += 1;
        } else {
            let from_server = sh.server_of(from);
            agg.received(
                self.server,
                from_server,
                now_us.saturating_sub(sent_us) * 1000,
            );
        }
    }
}
