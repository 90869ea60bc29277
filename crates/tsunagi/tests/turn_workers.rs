//! Two STUN/TURN workers (`turn-workers 2`): one SO_REUSEPORT group per UDP listener,
//! each worker with its own allocations. Real sockets on 127.0.0.1, driven by the load
//! generator: clients spread over both workers, every packet of a relayed call arrives
//! (also between allocations of different workers, through the kernel), TCP clients
//! are served by the worker their 5-tuple hashes to, and the counters add up; and
//! `user-quota` and `total-quota` count the allocations of both workers.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Client, PASSWORD, USER};
use tsunagi::turn_runtime::{Listeners, TurnService};
use tsunagi_bench::Report;
use tsunagi_stun::{attr, Message, Method};
use tsunagi_turn::{Server, ServerConfig};

async fn bench(s: &str) -> Report {
    common::run_bench(s.split_whitespace().map(str::to_owned).collect()).await
}

fn start(workers: usize) -> TurnService {
    start_with(workers, common::server_config())
}

fn start_with(workers: usize, config: ServerConfig) -> TurnService {
    let listeners = Listeners::bind_workers(
        &[SocketAddr::new(common::LOCALHOST, 0)],
        true,
        true,
        workers,
    )
    .unwrap();
    assert_eq!(listeners.udp.len(), workers);
    let port = listeners.udp[0].local_addr().unwrap();
    assert!(listeners
        .udp
        .iter()
        .all(|s| s.local_addr().unwrap() == port));
    let mut opts = common::runtime_options();
    opts.workers = workers;
    opts.max_port = opts.min_port + 999;
    let server = Server::new(config, Instant::now(), common::now_unix());
    TurnService::start(server, listeners, opts).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_the_clients_and_relay_everything() {
    let service = start(2);
    let addr = service.udp_addrs()[0];
    assert_eq!(service.udp_addrs().len(), 1, "one address, two sockets");
    // 32 allocations in pairs over UDP: each pair's packets cross from one allocation to
    // the other, on the same worker (hand-off) or through the kernel between workers.
    let r = bench(&format!(
        "turn --server {addr} --user {USER} --password {PASSWORD} --allocations 32 \
         --rate 3200 --payload 100 --duration 2 --warmup 0.5 --mode pairs"
    ))
    .await;
    assert_eq!(r.allocations, 32, "{r:?}");
    assert!(r.sent > 3000, "{r:?}");
    assert_eq!((r.lost, r.received), (0, r.sent), "{r:?}");
    assert!(r.failures.is_empty(), "{r:?}");
    let per_worker = service.worker_stats();
    assert_eq!(per_worker.len(), 2);
    // Every client is on one worker; with 32 client sockets both workers get some
    // (all on one would be a 1 in 2^31 hash).
    let created: Vec<u64> = per_worker.iter().map(|s| s.allocations_created).collect();
    assert!(created.iter().all(|&c| c > 0), "{created:?}");
    assert_eq!(created.iter().sum::<u64>(), 32, "{created:?}");
    let total = service.stats();
    assert_eq!(total.allocations_created, 32);
    assert!(total.packets_to_peers >= r.received, "{total:?}");

    // TCP clients too (each connection on the worker its 5-tuple hashes to).
    let tcp = service.tcp_addrs()[0];
    let r = bench(&format!(
        "turn --server {tcp} --transport tcp --user {USER} --password {PASSWORD} \
         --allocations 8 --rate 800 --payload 100 --duration 1.5 --warmup 0.3 --mode pairs"
    ))
    .await;
    assert_eq!((r.lost, r.received), (0, r.sent), "{r:?}");
    assert!(r.sent > 500 && r.failures.is_empty(), "{r:?}");

    // STUN Binding on both sockets of the group.
    let r = bench(&format!(
        "stun --server {addr} --allocations 16 --window 2 --duration 1 --warmup 0.2"
    ))
    .await;
    assert!(r.received > 0 && r.failures.is_empty(), "{r:?}");
    let binding: Vec<u64> = service
        .worker_stats()
        .iter()
        .map(|s| s.binding_requests)
        .collect();
    assert!(binding.iter().all(|&b| b > 0), "{binding:?}");

    // Every allocation was deleted by the generator; shutdown sums the workers.
    let stats = service.shutdown().await;
    assert_eq!(stats.allocations, 0, "{stats:?}");
    assert_eq!(stats.allocations_created, 40, "{stats:?}");
}

/// The service refuses listeners that do not give every worker a socket.
#[tokio::test]
async fn a_listener_without_a_socket_per_worker_is_refused() {
    let listeners = Listeners::bind(&[SocketAddr::new(common::LOCALHOST, 0)], true, false).unwrap();
    let mut opts = common::runtime_options();
    opts.workers = 2;
    let server = Server::new(common::server_config(), Instant::now(), common::now_unix());
    let e = TurnService::start(server, listeners, opts).unwrap_err();
    assert!(e.to_string().contains("1 sockets for 2 workers"), "{e}");
}

/// A UDP client that the kernel hands to worker `worker` of `service`: each candidate
/// socket sends a Binding, and the worker whose count moved is the one it lands on.
async fn client_on(service: &TurnService, worker: usize) -> Client {
    let addr = service.udp_addrs()[0];
    for _ in 0..64 {
        let before: Vec<u64> = service
            .worker_stats()
            .iter()
            .map(|s| s.binding_requests)
            .collect();
        let mut c = Client::udp(addr).await;
        common::expect_success(&c.binding().await, "Binding");
        let mut on = None;
        common::eventually("the Binding counted by a worker", || {
            let now = service.worker_stats();
            on = now
                .iter()
                .zip(&before)
                .position(|(s, b)| s.binding_requests > *b);
            on.is_some()
        })
        .await;
        if on == Some(worker) {
            return c;
        }
    }
    panic!("64 client sockets and none on worker {worker}");
}

/// Allocate that may fail: the error code and reason, or `None` on success.
async fn try_allocate(c: &mut Client) -> Option<(u16, String)> {
    let resp = c
        .request(Method::ALLOCATE, |e| {
            e.requested_transport(attr::PROTO_UDP)?;
            Ok(())
        })
        .await;
    let m = Message::parse(&resp).unwrap();
    m.error_code()
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

/// Longer than two exchanges of the workers' counts (100 ms each).
const EXCHANGED: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_quota_counts_both_workers() {
    let mut config = common::server_config();
    config.user_quota = 2;
    let service = start_with(2, config);
    let mut a = client_on(&service, 0).await;
    let mut b = client_on(&service, 1).await;
    a.allocate().await;
    b.allocate().await;
    common::eventually("one allocation on each worker", || {
        let live: Vec<u64> = service
            .worker_stats()
            .iter()
            .map(|s| s.allocations)
            .collect();
        live == [1, 1]
    })
    .await;
    tokio::time::sleep(EXCHANGED).await;
    // A third for the same user, on either worker: 486, counted over both.
    let mut c = client_on(&service, 0).await;
    let mut d = client_on(&service, 1).await;
    for x in [&mut c, &mut d] {
        let (code, reason) = try_allocate(x)
            .await
            .expect("a third allocation is refused");
        assert_eq!(code, 486, "{reason}");
        assert!(
            reason.contains("2 allocations across this server's workers (user-quota)"),
            "{reason}"
        );
    }
    // One is deleted: after an exchange a new one succeeds, and no more.
    delete(&mut a).await;
    tokio::time::sleep(EXCHANGED).await;
    assert_eq!(try_allocate(&mut c).await, None);
    tokio::time::sleep(EXCHANGED).await;
    assert_eq!(try_allocate(&mut d).await.map(|e| e.0), Some(486));
    let stats = service.shutdown().await;
    assert_eq!(stats.allocations, 2, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_quota_counts_both_workers() {
    let mut config = common::server_config();
    config.total_quota = 2;
    let service = start_with(2, config);
    // Two users (the static one and a REST credential): total-quota counts everyone.
    let (user, password) =
        tsunagi_turn::auth::rest_credential(common::REST_SECRET, "bob", common::now_unix() + 3600);
    let mut a = client_on(&service, 0).await;
    let mut b = client_on(&service, 1)
        .await
        .with_credentials(&user, &password);
    a.allocate().await;
    b.allocate().await;
    tokio::time::sleep(EXCHANGED).await;
    let mut c = client_on(&service, 0)
        .await
        .with_credentials(&user, &password);
    let mut d = client_on(&service, 1).await;
    for x in [&mut c, &mut d] {
        let (code, reason) = try_allocate(x)
            .await
            .expect("a third allocation is refused");
        assert_eq!(code, 508, "{reason}");
        assert!(
            reason.contains("total-quota allocations, counted across its workers"),
            "{reason}"
        );
    }
    delete(&mut b).await;
    tokio::time::sleep(EXCHANGED).await;
    assert_eq!(try_allocate(&mut c).await, None);
    tokio::time::sleep(EXCHANGED).await;
    assert_eq!(try_allocate(&mut d).await.map(|e| e.0), Some(508));
    let stats = service.shutdown().await;
    assert_eq!(stats.allocations, 2, "{stats:?}");
}
