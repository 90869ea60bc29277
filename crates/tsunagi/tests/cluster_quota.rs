//! `user-quota` and `total-quota` across a cluster: two tsunagi processes on one Redis
//! (`redis-server` started here on a loopback port, without persistence), the same
//! `static-auth-secret`, allocations made with REST credentials on both nodes. The
//! nodes exchange their counts every heartbeat (1 s), so each refuses what would go
//! over the cluster-wide quota, and takes new allocations once one is deleted anywhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod process;
mod redis_server;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::Client;
use process::{get_json, Process};
use redis_server::Redis;
use tsunagi_stun::{attr, Message, Method};
use tsunagi_turn::auth::rest_credential;

const WAIT: Duration = Duration::from_secs(10);
const SECRET: &str = "cluster-quota-test-secret";
/// Long enough for a count to reach the other node: its node's next heartbeat writes
/// it, the other's next heartbeat reads it (1 s each), its workers take it (100 ms).
const HEARTBEATS: Duration = Duration::from_millis(2600);

/// A node with TURN (one worker), usernames redacted in its log, and `quota` (e.g.
/// `--user-quota 2`).
fn node(test: &str, name: &str, redis: &Redis, quota: &[&str]) -> Process {
    let url = redis.url();
    let mut args = vec![
        "--no-tls",
        "--no-sfu",
        "--redact-logs",
        "--redis",
        &url,
        "--node-name",
        name,
        "--static-auth-secret",
        SECRET,
    ];
    args.extend_from_slice(quota);
    Process::start(&format!("{test}-{name}"), &args, &[])
}

/// Waits until both nodes list both as live.
async fn wait_for_cluster(nodes: &mut [&mut Process]) {
    for p in nodes.iter_mut() {
        p.first_health();
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let ok = nodes.iter().all(|p| {
            get_json(&p.http, "/api/cluster").is_some_and(|(s, v)| {
                s == 200 && v["nodes"].as_array().is_some_and(|a| a.len() == 2)
            })
        });
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "the nodes never saw each other");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// This node's id, from `/api/cluster`.
fn node_id(p: &Process) -> String {
    let (_, v) = get_json(&p.http, "/api/cluster").unwrap();
    v["node"].as_str().unwrap().to_owned()
}

/// A REST credential for `user`, valid for an hour: (username, password).
fn credential(user: &str) -> (String, String) {
    rest_credential(SECRET, user, common::now_unix() + 3600)
}

/// A UDP TURN client of `node` with the credential `cred`.
async fn client(node: &Process, cred: &(String, String)) -> Client {
    let addr: SocketAddr = node.turn.parse().unwrap();
    Client::udp(addr).await.with_credentials(&cred.0, &cred.1)
}

/// The usernames never reach a log (`redact-logs`), the quota exchange's included.
fn assert_no_username_logged(nodes: &[&Process], users: &[&str]) {
    for p in nodes {
        let log = p.log_text();
        assert!(log.contains("allocation created"), "{log}");
        for u in users {
            assert!(!log.contains(u), "{u} in the log: {log}");
        }
    }
}

/// Allocate that may fail: `None` on success, else the error code and reason.
async fn try_allocate(c: &mut Client) -> Option<(u16, String)> {
    let resp = c
        .request(Method::ALLOCATE, |e| {
            e.requested_transport(attr::PROTO_UDP)?;
            Ok(())
        })
        .await;
    Message::parse(&resp)
        .unwrap()
        .error_code()
        .unwrap()
        .map(|e| (e.code, e.reason.to_string()))
}

async fn delete(c: &mut Client) {
    let resp = c
        .request(Method::REFRESH, |e| {
            e.u32(attr::LIFETIME, 0)?;
            Ok(())
        })
        .await;
    common::expect_success(&resp, "Refresh to 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_quota_counts_every_node() {
    let redis = Redis::start_free();
    let mut a = node("quota-user", "qa", &redis, &["--user-quota", "2"]);
    // B with two TURN workers: its hash holds the sum of both.
    let mut b = node(
        "quota-user",
        "qb",
        &redis,
        &["--user-quota", "2", "--turn-workers", "2"],
    );
    wait_for_cluster(&mut [&mut a, &mut b]).await;

    // One REST credential (one username), one allocation on each node.
    let carol = credential("carol");
    let mut on_a = client(&a, &carol).await;
    let mut on_b = client(&b, &carol).await;
    assert_eq!(try_allocate(&mut on_a).await, None);
    assert_eq!(try_allocate(&mut on_b).await, None);
    tokio::time::sleep(HEARTBEATS).await;

    // Each node's hash holds its count under the username, and nothing else.
    let hash = redis.hgetall(&format!("tsunagi:turn:{}", node_id(&a)));
    let mut fields: Vec<(String, String)> = hash
        .chunks(2)
        .map(|p| (p[0].clone(), p[1].clone()))
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            ("total".to_owned(), "1".to_owned()),
            (format!("u:{}", carol.0), "1".to_owned())
        ]
    );

    // A third, on either node: 486, and the phrase says the cluster was counted.
    for node in [&a, &b] {
        let mut c = client(node, &carol).await;
        let (code, reason) = try_allocate(&mut c)
            .await
            .expect("a third allocation is refused");
        assert_eq!(code, 486, "{reason}");
        assert!(
            reason.contains("2 allocations across the cluster's nodes (user-quota)"),
            "{reason}"
        );
    }
    // Another user is not limited by carol's.
    let mut dave = client(&a, &credential("dave")).await;
    assert_eq!(try_allocate(&mut dave).await, None);

    // Deleted on A: after a heartbeat or two, B takes a new one; then carol is at her
    // quota again on both.
    delete(&mut on_a).await;
    tokio::time::sleep(HEARTBEATS).await;
    let mut again = client(&b, &carol).await;
    assert_eq!(try_allocate(&mut again).await, None);
    tokio::time::sleep(HEARTBEATS).await;
    let mut over = client(&a, &carol).await;
    assert_eq!(try_allocate(&mut over).await.map(|e| e.0), Some(486));
    assert_no_username_logged(&[&a, &b], &["carol", "dave"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_quota_counts_every_node() {
    let redis = Redis::start_free();
    let mut a = node("quota-total", "ta", &redis, &["--total-quota", "2"]);
    let mut b = node("quota-total", "tb", &redis, &["--total-quota", "2"]);
    wait_for_cluster(&mut [&mut a, &mut b]).await;

    let mut on_a = client(&a, &credential("erin")).await;
    let mut on_b = client(&b, &credential("frank")).await;
    assert_eq!(try_allocate(&mut on_a).await, None);
    assert_eq!(try_allocate(&mut on_b).await, None);
    tokio::time::sleep(HEARTBEATS).await;

    for node in [&a, &b] {
        let mut c = client(node, &credential("grace")).await;
        let (code, reason) = try_allocate(&mut c)
            .await
            .expect("a third allocation is refused");
        assert_eq!(code, 508, "{reason}");
        assert!(
            reason.contains("the cluster is at total-quota allocations"),
            "{reason}"
        );
    }

    delete(&mut on_b).await;
    tokio::time::sleep(HEARTBEATS).await;
    let mut again = client(&a, &credential("grace")).await;
    assert_eq!(try_allocate(&mut again).await, None);
    tokio::time::sleep(HEARTBEATS).await;
    let mut over = client(&b, &credential("heidi")).await;
    assert_eq!(try_allocate(&mut over).await.map(|e| e.0), Some(508));

    assert_no_username_logged(&[&a, &b], &["erin", "frank", "grace", "heidi"]);

    // A node that dies (SIGKILL): its hash expires with its record, and the other
    // node counts its own allocations only.
    let id_a = node_id(&a);
    drop(a);
    let deadline = Instant::now() + WAIT;
    while !redis.hgetall(&format!("tsunagi:turn:{id_a}")).is_empty() {
        assert!(Instant::now() < deadline, "A's hash outlived A");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(HEARTBEATS).await;
    assert_eq!(try_allocate(&mut over).await, None);
}
