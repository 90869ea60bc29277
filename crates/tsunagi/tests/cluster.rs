//! A cluster of tsunagi processes on one Redis (`redis-server` started here on a
//! loopback port, without persistence, stopped by PID), driven by WebSocket clients
//! connected to different nodes: one room across three nodes, a resume through
//! another node, the owner killed with SIGKILL, Redis restarted mid-call.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod process;
mod redis_server;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use process::{free_port, get_json, Process};
use redis_server::Redis;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const WAIT: Duration = Duration::from_secs(10);

/// A node of the cluster: plain HTTP on loopback, no SFU (signaling only).
fn node(test: &str, name: &str, redis: &str) -> Process {
    Process::start(
        &format!("{test}-{name}"),
        &[
            "--no-tls",
            "--no-sfu",
            "--redis",
            redis,
            "--node-name",
            name,
        ],
        &[],
    )
}

/// Waits until every node lists `n` live nodes.
async fn wait_for_nodes(nodes: &[&Process], n: usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let ok = nodes.iter().all(|p| {
            get_json(&p.http, "/api/cluster").is_some_and(|(s, v)| {
                s == 200 && v["nodes"].as_array().is_some_and(|a| a.len() == n)
            })
        });
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the nodes did not see {n} live nodes: {:?}",
            nodes
                .iter()
                .map(|p| get_json(&p.http, "/api/cluster"))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `from`'s view of the node named `name…` shows `peers` peers.
async fn wait_for_peers(from: &Process, name: &str, peers: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, v) = get_json(&from.http, "/api/cluster").unwrap();
        let seen =
            v["nodes"].as_array().unwrap().iter().any(|n| {
                n["id"].as_str().unwrap().starts_with(name) && n["load"]["peers"] == peers
            });
        if seen {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never showed {peers} peers: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Rooms each node runs now (`/api/stats` signaling.rooms).
fn rooms_of(p: &Process) -> u64 {
    get_json(&p.http, "/api/stats")
        .and_then(|(_, v)| v["signaling"]["rooms"].as_u64())
        .unwrap_or(0)
}

struct Client {
    ws: WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>,
}

impl Client {
    async fn connect(http: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/ws"))
            .await
            .unwrap();
        Client { ws }
    }

    async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .unwrap();
    }

    /// The next message, or `None` when the socket closed (or nothing came in `wait`).
    async fn next(&mut self, wait: Duration) -> Option<Value> {
        loop {
            match tokio::time::timeout(wait, self.ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => return Some(serde_json::from_str(&t).unwrap()),
                Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) | Err(_) => {
                    return None
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// The next message of type `ty`, skipping others.
    async fn expect(&mut self, ty: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(m) if m["type"] == ty => return m,
                Some(m) => {
                    eprintln!("skipped while waiting for {ty}: {m}");
                    continue;
                }
                None => panic!("no {ty} within {WAIT:?} (socket closed or silent)"),
            }
        }
    }

    async fn join(http: &str, room: &str, name: &str) -> (Client, Value) {
        let mut c = Client::connect(http).await;
        c.send(json!({"type": "join", "room": room, "name": name}))
            .await;
        let w = c.expect("welcome").await;
        (c, w)
    }

    /// Drops the TCP connection without a close frame (a lost network).
    fn drop_socket(self) {
        drop(self);
    }
}

/// A chat from `from` reaches every client of `to`.
async fn chat_reaches(from: &mut Client, to: &mut [&mut Client], text: &str) {
    from.send(json!({"type": "chat", "text": text})).await;
    for c in to.iter_mut() {
        let m = c.expect("chat").await;
        assert_eq!(m["text"], text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_room_across_three_nodes_and_a_resume_through_another_node() {
    let redis = Redis::start(free_port());
    let (n1, n2, n3) = (
        node("across", "n1", &redis.url()),
        node("across", "n2", &redis.url()),
        node("across", "n3", &redis.url()),
    );
    wait_for_nodes(&[&n1, &n2, &n3], 3).await;

    let (mut a, wa) = Client::join(&n1.http, "r", "Alice").await;
    let (mut b, wb) = Client::join(&n2.http, "r", "Bob").await;
    let (mut c, wc) = Client::join(&n3.http, "r", "Carol").await;
    assert_eq!(wa["peers"].as_array().unwrap().len(), 0);
    assert_eq!(wb["peers"][0]["id"], wa["id"]);
    let ids: Vec<&Value> = wc["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["id"])
        .collect();
    assert_eq!(ids, [&wa["id"], &wb["id"]], "Carol sees Alice and Bob");
    // The welcome's ICE servers name the node the client connected to.
    let stun = wb["iceServers"][0]["urls"][0].as_str().unwrap();
    assert!(stun.starts_with("stun:127.0.0.1:"), "{stun}");
    assert_eq!(a.expect("peer-joined").await["id"], wb["id"]);
    assert_eq!(a.expect("peer-joined").await["id"], wc["id"]);
    assert_eq!(b.expect("peer-joined").await["id"], wc["id"]);

    // One node runs the room; the others relay.
    let owners: Vec<u64> = [&n1, &n2, &n3].iter().map(|p| rooms_of(p)).collect();
    assert_eq!(owners.iter().sum::<u64>(), 1, "rooms per node: {owners:?}");
    chat_reaches(&mut a, &mut [&mut b, &mut c], "from n1").await;
    chat_reaches(&mut c, &mut [&mut a, &mut b], "from n3").await;
    let (_, cluster) = get_json(&n2.http, "/api/cluster").unwrap();
    let nodes = cluster["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{cluster}");
    assert!(
        cluster["node"].as_str().unwrap().starts_with("n2-"),
        "{cluster}"
    );
    assert_eq!(cluster["redis"]["connected"], true);
    let (_, health) = get_json(&n2.http, "/healthz").unwrap();
    assert_eq!(health["cluster"]["redis"]["connected"], true, "{health}");

    // Bob's network drops; he resumes through n3 and the room goes on.
    let token = wb["resumeToken"].as_str().unwrap().to_owned();
    b.drop_socket();
    let mut b = Client::connect(&n3.http).await;
    b.send(json!({"type": "resume", "token": token})).await;
    let r = b.expect("resumed").await;
    assert_eq!(r["id"], wb["id"]);
    chat_reaches(&mut a, &mut [&mut b, &mut c], "after the resume").await;
    // Nobody saw Bob leave.
    a.send(json!({"type": "ping", "id": 1})).await;
    loop {
        let m = a.next(WAIT).await.unwrap();
        assert_ne!(m["type"], "peer-left", "{m}");
        if m["type"] == "pong" {
            break;
        }
    }
    // A new room goes to a node without one (the least loaded).
    let (_d, _) = Client::join(&n1.http, "r2", "Dan").await;
    let owners: Vec<u64> = [&n1, &n2, &n3].iter().map(|p| rooms_of(p)).collect();
    assert_eq!(
        owners.iter().filter(|r| **r == 1).count(),
        2,
        "rooms per node: {owners:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_killed_and_everyone_back_in_the_room_within_ten_seconds() {
    let redis = Redis::start(free_port());
    let mut nodes = [
        node("kill", "n1", &redis.url()),
        node("kill", "n2", &redis.url()),
        node("kill", "n3", &redis.url()),
    ];
    wait_for_nodes(&nodes.iter().collect::<Vec<_>>(), 3).await;
    let mut clients = Vec::new();
    for (i, name) in ["Alice", "Bob", "Carol"].iter().enumerate() {
        let (c, w) = Client::join(&nodes[i].http, "r", name).await;
        clients.push((i, c, w));
    }
    let owner = (0..3).find(|i| rooms_of(&nodes[*i]) == 1).unwrap();
    let killed_at = Instant::now();
    nodes[owner].child.kill().unwrap(); // SIGKILL
    nodes[owner].child.wait().unwrap();

    let mut back = Vec::new();
    for (i, mut c, _) in clients {
        if i == owner {
            // Its WebSocket was on the dead node: it reconnects to another node and
            // tries to resume, which fails (the session died with its node).
            drop(c);
            let other = (owner + 1) % 3;
            let mut c = Client::connect(&nodes[other].http).await;
            let w = clients_token_resume(&mut c).await;
            assert_eq!(w["code"], "resume-failed", "{w}");
            back.push(other);
        } else {
            // The edge tells it to join again.
            let m = c.expect("rejoin").await;
            assert_eq!(m["reason"], "node-failed");
            assert!(
                killed_at.elapsed() < Duration::from_secs(6),
                "rejoin after {:?}",
                killed_at.elapsed()
            );
            assert!(
                c.next(Duration::from_secs(2)).await.is_none(),
                "closed after rejoin"
            );
            back.push(i);
        }
    }
    let mut rejoined = Vec::new();
    for (k, i) in back.iter().enumerate() {
        let (c, _) = Client::join(&nodes[*i].http, "r", &format!("again-{k}")).await;
        rejoined.push(c);
    }
    let (first, rest) = rejoined.split_first_mut().unwrap();
    let mut rest: Vec<&mut Client> = rest.iter_mut().collect();
    chat_reaches(first, &mut rest, "back").await;
    let took = killed_at.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "the room was back after {took:?}"
    );
    let owners: Vec<u64> = (0..3)
        .filter(|i| *i != owner)
        .map(|i| rooms_of(&nodes[i]))
        .collect();
    assert_eq!(owners.iter().sum::<u64>(), 1, "one new owner: {owners:?}");
}

/// Sends a resume with a token of a session that lived on a dead node (any token the
/// directory still maps to it: here, a fresh guess is enough to get the answer of an
/// unknown token, which must not be `unavailable` for long).
async fn clients_token_resume(c: &mut Client) -> Value {
    c.send(json!({"type": "resume", "token": "0000000000000000000000000000000000000000000"}))
        .await;
    c.expect("error").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_mid_call() {
    let port = free_port();
    let mut redis = Redis::start(port);
    let (n1, n2) = (
        node("restart", "n1", &redis.url()),
        node("restart", "n2", &redis.url()),
    );
    wait_for_nodes(&[&n1, &n2], 2).await;
    let (mut a, _) = Client::join(&n1.http, "r", "Alice").await;
    let (mut b, wb) = Client::join(&n2.http, "r", "Bob").await;
    a.expect("peer-joined").await;
    chat_reaches(&mut a, &mut [&mut b], "before").await;

    redis.stop();
    // Each node says so on /healthz (still 200: calls go on), and new joins get a
    // clear error.
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, h) = get_json(&n1.http, "/healthz").unwrap();
        if h["cluster"]["redis"]["connected"] == false {
            assert_eq!(status, 200);
            assert!(h["cluster"]["redis"]["problem"].is_string(), "{h}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz never said Redis is gone: {h}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut d = Client::connect(&n1.http).await;
    d.send(json!({"type": "join", "room": "new", "name": "Dan"}))
        .await;
    let e = d.expect("error").await;
    assert_eq!(e["code"], "unavailable", "{e}");
    assert_eq!(e["ref"], "join");

    let _redis = Redis::start(port);
    // The relayed session was cut when the subscription broke (a gap is possible);
    // whoever was relayed resumes, through either node, and the call goes on.
    let token = wb["resumeToken"].as_str().unwrap().to_owned();
    let relayed_bob = rooms_of(&n2) == 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut b = if relayed_bob {
        assert!(
            b.next(WAIT).await.is_none(),
            "Bob's relayed socket is closed"
        );
        loop {
            let mut c = Client::connect(&n2.http).await;
            c.send(json!({"type": "resume", "token": token})).await;
            let m = c.next(WAIT).await.unwrap();
            if m["type"] == "resumed" {
                break c;
            }
            assert_eq!(m["code"], "unavailable", "{m}");
            assert!(Instant::now() < deadline, "no resume after Redis came back");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    } else {
        b
    };
    let mut a = if relayed_bob {
        a
    } else {
        // Alice was the relayed one.
        assert!(a.next(WAIT).await.is_none());
        panic!("placement put the room on n2 although n1 asked first with no load anywhere");
    };
    chat_reaches(&mut a, &mut [&mut b], "after").await;
    // New rooms are placed again.
    let deadline = Instant::now() + WAIT;
    loop {
        let mut d = Client::connect(&n1.http).await;
        d.send(json!({"type": "join", "room": "new", "name": "Dan"}))
            .await;
        let m = d.next(WAIT).await.unwrap();
        if m["type"] == "welcome" {
            break;
        }
        assert_eq!(m["code"], "unavailable", "{m}");
        assert!(
            Instant::now() < deadline,
            "joins still refused after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Neither node took the other for failed (it was only missing from a Redis that
    // restarted empty), nor cut the relay once more after it was back: the one end of
    // each node's subscription is the outage's.
    wait_for_nodes(&[&n1, &n2], 2).await;
    for n in [&n1, &n2] {
        let (_, s) = get_json(&n.http, "/api/stats").unwrap();
        assert_eq!(s["cluster"]["nodesFailed"], 0, "{s}");
        let log = n.log_text();
        assert_eq!(log.matches("Redis subscription ended").count(), 1, "{log}");
    }
}

/// `POST path` with an empty body: the status.
fn post(addr: &str, path: &str) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    raw.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_moves_everyone_and_exits() {
    let redis = Redis::start(free_port());
    let mut n1 = node("drain", "n1", &redis.url());
    let n2 = node("drain", "n2", &redis.url());
    let n3 = node("drain", "n3", &redis.url());
    wait_for_nodes(&[&n1, &n2, &n3], 3).await;
    // Room r runs on n1 (the first placement: every node empty, smallest id).
    let (mut a, wa) = Client::join(&n1.http, "r", "Alice").await;
    let (mut b, _) = Client::join(&n2.http, "r", "Bob").await;
    let (mut c, _) = Client::join(&n3.http, "r", "Carol").await;
    assert_eq!(rooms_of(&n1), 1);
    // Placement goes by the load in the node records, a heartbeat old: wait for it.
    wait_for_peers(&n2, "n1-", 3).await;
    // Room s runs on n2 (now the least loaded); Erin reaches it through n1.
    let (mut d, _) = Client::join(&n2.http, "s", "Dave").await;
    let (mut e, we) = Client::join(&n1.http, "s", "Erin").await;
    assert_eq!(rooms_of(&n2), 1, "s runs on n2");
    d.expect("peer-joined").await;

    let drained_at = Instant::now();
    assert_eq!(post(&n1.http, "/api/drain"), 202);
    // Room r's peers are told to join again; none is simply dropped.
    for cl in [&mut a, &mut b, &mut c] {
        let m = cl.expect("rejoin").await;
        assert_eq!(m["reason"], "drain", "{m}");
    }
    // n1 no longer takes WebSockets, and says so to load balancers.
    let (status, h) = get_json(&n1.http, "/healthz").unwrap();
    assert_eq!(status, 503, "{h}");
    assert_eq!(h["cluster"]["draining"], true);
    // Erin's WebSocket was on n1: it is closed, and she resumes through n3 with
    // her session (same id); Dave never sees her leave.
    assert!(
        e.next(WAIT).await.is_none(),
        "Erin's socket on n1 is closed"
    );
    let mut e = Client::connect(&n3.http).await;
    e.send(json!({"type": "resume", "token": we["resumeToken"]}))
        .await;
    let r = e.expect("resumed").await;
    assert_eq!(r["id"], we["id"]);
    chat_reaches(&mut d, &mut [&mut e], "s goes on").await;

    // Everyone of r joins again through n2 and n3; the room runs on one of them.
    let (mut a, wa2) = Client::join(&n2.http, "r", "Alice").await;
    assert_ne!(wa2["id"], wa["id"]);
    let (mut b, _) = Client::join(&n3.http, "r", "Bob").await;
    let (mut c, _) = Client::join(&n2.http, "r", "Carol").await;
    chat_reaches(&mut a, &mut [&mut b, &mut c], "r goes on").await;
    assert_eq!(rooms_of(&n2) + rooms_of(&n3), 2);
    // With nobody left, n1 exits by itself, cleanly.
    let status = n1.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status}: {}", n1.log_text());
    assert!(drained_at.elapsed() < Duration::from_secs(20));
    assert!(
        n1.log_text().contains("drained: no client left"),
        "{}",
        n1.log_text()
    );
    wait_for_nodes(&[&n2, &n3], 2).await;
    // A drained node's leaving is no failure.
    for n in [&n2, &n3] {
        let (_, s) = get_json(&n.http, "/api/stats").unwrap();
        assert_eq!(s["cluster"]["nodesFailed"], 0, "{s}");
        assert!(n.log_text().contains("left the directory after draining"));
    }
}

/// A participant that follows the cluster as the web client does: `rejoin` → join the
/// room again through a live node; a socket closed without it → resume through a live
/// node.
struct Participant {
    name: String,
    client: Client,
    token: String,
    id: String,
    /// Index of the node its WebSocket is on.
    on: usize,
}

impl Participant {
    async fn join(nodes: &[Option<Process>], on: usize, name: &str) -> Participant {
        let http = &nodes[on].as_ref().unwrap().http;
        let (client, w) = Client::join(http, "r", name).await;
        Participant {
            name: name.to_owned(),
            client,
            token: w["resumeToken"].as_str().unwrap().to_owned(),
            id: w["id"].as_str().unwrap().to_owned(),
            on,
        }
    }

    /// Handles what a drain of node `drained` does to it; `to` is a live node.
    async fn follow(
        &mut self,
        nodes: &[Option<Process>],
        drained: usize,
        owner_drained: bool,
        to: usize,
    ) {
        let http = &nodes[to].as_ref().unwrap().http;
        if owner_drained {
            let m = self.client.expect("rejoin").await;
            assert_eq!(m["reason"], "drain", "{}: {m}", self.name);
            let (client, w) = Client::join(http, "r", &self.name).await;
            self.client = client;
            self.token = w["resumeToken"].as_str().unwrap().to_owned();
            self.id = w["id"].as_str().unwrap().to_owned();
            self.on = to;
        } else if self.on == drained {
            assert!(
                self.client.next(WAIT).await.is_none(),
                "{}: closed",
                self.name
            );
            let mut c = Client::connect(http).await;
            c.send(json!({"type": "resume", "token": self.token})).await;
            let r = c.expect("resumed").await;
            assert_eq!(
                r["id"].as_str().unwrap(),
                self.id,
                "{}: same session",
                self.name
            );
            self.token = r["resumeToken"].as_str().unwrap().to_owned();
            self.client = c;
            self.on = to;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_upgrade_of_every_node_ends_no_call() {
    let redis = Redis::start(free_port());
    let mut nodes: Vec<Option<Process>> = (1..=3)
        .map(|i| Some(node("rolling", &format!("n{i}"), &redis.url())))
        .collect();
    wait_for_nodes(&nodes.iter().flatten().collect::<Vec<_>>(), 3).await;
    let mut people = Vec::new();
    for (i, name) in ["Alice", "Bob", "Carol"].iter().enumerate() {
        people.push(Participant::join(&nodes, i, name).await);
    }
    for round in 0..3 {
        let owner = (0..3)
            .find(|i| rooms_of(nodes[*i].as_ref().unwrap()) == 1)
            .unwrap();
        // SIGTERM, as a service manager stops a node for its upgrade.
        let pid = nodes[round].as_ref().unwrap().child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let to = (round + 1) % 3;
        for p in people.iter_mut() {
            p.follow(&nodes, round, owner == round, to).await;
        }
        let mut old = nodes[round].take().unwrap();
        let status = old.wait_exit(Duration::from_secs(20));
        assert!(status.success(), "{status}: {}", old.log_text());
        // Everyone is in the room together, and it talks.
        let (first, rest) = people.split_first_mut().unwrap();
        let mut rest: Vec<&mut Client> = rest.iter_mut().map(|p| &mut p.client).collect();
        chat_reaches(&mut first.client, &mut rest, &format!("round {round}")).await;
        // The upgraded node comes back as a new member.
        nodes[round] = Some(node("rolling", &format!("n{}v2", round + 1), &redis.url()));
        wait_for_nodes(&nodes.iter().flatten().collect::<Vec<_>>(), 3).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_password_works_and_stays_out_of_sight() {
    let port = free_port();
    let _redis = Redis::start_with(port, &["--requirepass", "hunter2-secret"]);
    let good = node(
        "auth",
        "good",
        &format!("redis://:hunter2-secret@127.0.0.1:{port}/0"),
    );
    let bad = node(
        "auth",
        "bad",
        &format!("redis://:wrong-pass@127.0.0.1:{port}/0"),
    );
    wait_for_nodes(&[&good], 1).await;
    let (_, v) = get_json(&good.http, "/api/cluster").unwrap();
    assert_eq!(
        v["redis"]["url"],
        format!("redis://<redacted>@127.0.0.1:{port}/0"),
        "{v}"
    );
    // A wrong password: the node serves, says what is wrong, and refuses joins clearly.
    let deadline = Instant::now() + WAIT;
    let problem = loop {
        let (status, h) = get_json(&bad.http, "/healthz").unwrap();
        assert_eq!(status, 200, "{h}");
        if let Some(p) = h["cluster"]["redis"]["problem"].as_str() {
            break p.to_owned();
        }
        assert!(Instant::now() < deadline, "no problem reported: {h}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        problem.to_ascii_lowercase().contains("auth") || problem.contains("WRONGPASS"),
        "{problem}"
    );
    let mut c = Client::connect(&bad.http).await;
    c.send(json!({"type": "join", "room": "r", "name": "A"}))
        .await;
    assert_eq!(c.expect("error").await["code"], "unavailable");
    for p in [&good, &bad] {
        let log = p.log_text();
        assert!(
            !log.contains("hunter2") && !log.contains("wrong-pass"),
            "{log}"
        );
    }
}
