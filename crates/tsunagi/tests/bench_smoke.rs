//! A short run of the load generator (`tsunagi bench`) against an in-process tsunagi on
//! 127.0.0.1: every mode finishes, nothing is lost at a modest rate, and the numbers
//! are coherent. Performance itself is measured by `scripts/bench-vs-coturn`, never
//! asserted here.

#![allow(clippy::unwrap_used)]

mod common;
mod ports;

use common::{run_bench as bench, PASSWORD, REST_SECRET, USER};
use tsunagi_bench::{self as bench, BenchArgs, Report};

fn args(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

/// Percentiles in order and non-zero: the packets really went through.
fn assert_sane(r: &Report) {
    let l = &r.latency_us;
    assert!(
        l.p50 > 0.0 && l.p50 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max,
        "{r:?}"
    );
    assert!(r.per_sec > 0.0, "{r:?}");
}

/// 8 allocations, 1600 packets/s in total (200 each), 100-byte payloads, ~3 s.
async fn relay_run(server: std::net::SocketAddr, transport: &str, mode: &str) -> Report {
    let r = bench(args(&format!(
        "turn --server {server} --transport {transport} --user {USER} --password {PASSWORD} \
         --allocations 8 --rate 1600 --payload 100 --duration 2.5 --warmup 0.5 --mode {mode} \
         --server-pid {}",
        std::process::id()
    )))
    .await;
    assert_eq!(r.allocations, 8, "{r:?}");
    assert!(r.sent > 1000, "{r:?}");
    assert_eq!((r.lost, r.received), (0, r.sent), "{r:?}");
    assert!(r.failures.is_empty(), "{r:?}");
    assert!(
        r.server_cpu_s.is_some() && r.server_peak_rss_kib.is_some(),
        "{r:?}"
    );
    assert_sane(&r);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_pairs_and_echo_over_udp() {
    let server = common::start_server();
    let addr = server.udp_addrs()[0];
    relay_run(addr, "udp", "pairs").await;
    relay_run(addr, "udp", "echo").await;
    let stats = server.shutdown().await;
    // Every allocation was deleted at the end of each run.
    assert_eq!(stats.allocations, 0);
    assert_eq!(stats.allocations_created, 16);
}

/// Flat out with one allocation: bursts of ChannelData that the relay receives and
/// sends in batches (GRO/GSO runs). Only that it relays is checked, not how fast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_flat_out_in_bursts() {
    let server = common::start_server();
    let addr = server.udp_addrs()[0];
    let r = bench(args(&format!(
        "turn --server {addr} --user {USER} --password {PASSWORD} --allocations 1 \
         --window 64 --payload 1200 --duration 1 --warmup 0.2"
    )))
    .await;
    assert!(r.received > 100, "{r:?}");
    assert_eq!(r.allocations, 1, "{r:?}");
    assert_sane(&r);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_pairs_over_tcp() {
    let server = common::start_server();
    let addr = server.tcp_addrs()[0];
    relay_run(addr, "tcp", "pairs").await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stun_and_alloc_with_rest_credentials() {
    let server = common::start_server();
    let addr = server.udp_addrs()[0];
    let r = bench(args(&format!(
        "stun --server {addr} --allocations 4 --window 2 --duration 1 --warmup 0.2"
    )))
    .await;
    assert!(r.received > 0 && r.failures.is_empty(), "{r:?}");
    assert_sane(&r);

    let r = bench(args(&format!(
        "alloc --server {addr} --static-auth-secret {REST_SECRET} --allocations 4 --duration 1 --warmup 0.2"
    )))
    .await;
    assert!(r.received > 0, "{r:?}");
    assert!(r.failures.is_empty(), "{r:?}");
    assert_sane(&r);

    let r = bench(args(&format!(
        "alloc --server {addr} --user {USER} --password {PASSWORD} --allocations 50 --hold --server-pid {}",
        std::process::id()
    )))
    .await;
    assert_eq!(r.allocations, 50, "{r:?}");
    assert!(r.bytes_per_allocation.is_some(), "{r:?}");
    let stats = server.shutdown().await;
    assert_eq!(stats.allocations, 0);
}

/// `bench churn` on a server whose allocations live 2 s: refreshes, deletes and
/// abandoned allocations that expire, replaced all along; nothing refused, and the
/// server holds nothing once the run has ended and the abandoned ones have expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_refreshes_deletes_and_expires() {
    let mut config = common::server_config();
    config.default_lifetime = std::time::Duration::from_secs(2);
    config.max_lifetime = std::time::Duration::from_secs(2);
    let server = common::start_server_with(config, common::runtime_options());
    let addr = server.udp_addrs()[0];
    let r = bench(args(&format!(
        "churn --server {addr} --user {USER} --password {PASSWORD} --allocations 40 \
         --duration 3 --lifetime 2 --churn 10 --sample 1 --server-pid {}",
        std::process::id()
    )))
    .await;
    let c = r.churn.clone().unwrap();
    assert_eq!(c.target, 40, "{r:?}");
    assert!(c.refreshed > 0 && c.deleted > 0 && c.abandoned > 0, "{r:?}");
    assert!(c.created > 0 && r.per_sec > 0.0, "{r:?}");
    assert_eq!(c.insufficient_capacity, 0, "{r:?}");
    assert!(r.failures.is_empty(), "{r:?}");
    assert_eq!(c.granted_lifetime_s, (2, 2), "{r:?}");
    assert!(
        c.rss.len() >= 3 && c.rss.iter().all(|s| s.rss_kib > 0),
        "{r:?}"
    );
    let mut stats = server.watch_stats();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stats.wait_for(|s| s.allocations == 0),
    )
    .await
    .expect("abandoned allocations expire")
    .unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_fails_cleanly() {
    let server = common::start_server();
    let addr = server.udp_addrs()[0];
    let b = BenchArgs::parse_from(args(&format!(
        "turn --server {addr} --user {USER} --password nope --allocations 2 --duration 1 --warmup 0"
    )))
    .unwrap();
    let e = tokio::task::spawn_blocking(move || bench::report(&b))
        .await
        .unwrap()
        .unwrap_err();
    assert!(e.to_string().contains("401"), "{e}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_mode_through_the_forwarder() {
    // Free ports (tests/ports) for the forwarder and the sink to bind.
    let free = || std::net::SocketAddr::from(([127, 0, 0, 1], ports::free_port()));
    let (listen, sink) = (free(), free());
    let fwd = bench(args(&format!(
        "forwarder --listen {listen} --to {sink} --duration 4"
    )));
    let fwd = tokio::spawn(fwd);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let r = bench(args(&format!(
        "turn --mode raw --server {listen} --sink {sink} --allocations 4 --rate 1000 --duration 1.5 --warmup 0.2"
    )))
    .await;
    assert_eq!((r.lost, r.received), (0, r.sent), "{r:?}");
    assert!(r.sent > 500, "{r:?}");
    assert_sane(&r);
    assert_eq!(fwd.await.unwrap().bench, "forwarder");
}

#[test]
fn bad_options_are_refused() {
    for a in [
        "turn --server 127.0.0.1:3478 --user a --password b --duration 601",
        "turn --server 127.0.0.1:3478 --user a --password b --payload 8",
        "turn --server 127.0.0.1:3478 --user a --password b --allocations 0",
        "turn --server 127.0.0.1:3478",
        "turn --server 127.0.0.1:3478 --mode raw",
        "stun --server 0.0.0.0:3478",
    ] {
        let b = BenchArgs::parse_from(args(a)).unwrap();
        assert!(bench::report(&b).is_err(), "{a}");
    }
}
