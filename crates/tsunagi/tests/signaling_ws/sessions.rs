//! Sessions over time: resume after a dropped socket, the grace period, idle timeouts
//! and server pings, shutdown.

use super::*;

#[tokio::test]
async fn resume_after_a_dropped_socket() {
    let s = Server::start(|_| {}).await;
    let (a, a_id, w) = s.join("r", "A").await;
    let token = w["resumeToken"].as_str().unwrap().to_owned();
    let (mut b, b_id, _) = s.join("r", "B").await;
    // The TCP connection goes away without a close frame.
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.handle.stats().peers_in_grace, 1);
    // Messages for A meanwhile are queued.
    b.send(json!({"type": "offer", "to": a_id, "sdp": "v=0 while away"}))
        .await;
    b.send(json!({"type": "chat", "text": "still there?"}))
        .await;

    let mut a2 = s.client().await;
    a2.send(json!({"type": "resume", "token": token})).await;
    let r = a2.expect("resumed").await;
    assert_eq!(r["id"], a_id);
    assert_eq!(r["room"], "r");
    assert_eq!(r["peers"][0]["id"], b_id);
    assert_ne!(r["resumeToken"], token.as_str());
    assert_eq!(
        r["iceServers"][1]["username"]
            .as_str()
            .unwrap()
            .split_once(':')
            .unwrap()
            .1,
        a_id
    );
    assert_eq!(
        a2.recv().await,
        json!({"type": "offer", "from": b_id, "sdp": "v=0 while away"})
    );
    assert_eq!(a2.expect("chat").await["text"], "still there?");
    // B saw neither a leave nor a join.
    b.expect_silence(Duration::from_millis(300)).await;
    a2.send(json!({"type": "answer", "to": b_id, "sdp": "v=0 back"}))
        .await;
    assert_eq!(b.expect("answer").await["from"], a_id);
    // The old token is spent.
    let mut a3 = s.client().await;
    a3.send(json!({"type": "resume", "token": token})).await;
    a3.expect_error("resume-failed", Some("resume")).await;
    // A resume on a connection with a live session is refused.
    a2.send(json!({"type": "resume", "token": r["resumeToken"]}))
        .await;
    a2.expect_error("already-joined", Some("resume")).await;
    // A resume from another socket takes the session over; the old one is closed (4000).
    let mut a4 = s.client().await;
    a4.send(json!({"type": "resume", "token": r["resumeToken"]}))
        .await;
    a4.expect("resumed").await;
    assert_eq!(a2.expect_close().await, Some(4000));
    b.expect_silence(Duration::from_millis(200)).await;
    assert_eq!(s.handle.stats().resumes, 2);
}

#[tokio::test]
async fn grace_expiry_and_going_away() {
    let s = Server::start(|o| o.hub.resume_grace = Duration::from_millis(300)).await;
    let (mut a, a_id, _) = s.join("r", "A").await;
    let (mut b, b_id, _) = s.join("r", "B").await;
    a.expect("peer-joined").await;
    // 1001 (a tab closing) keeps the session for the grace period, like a drop.
    b.close(1001).await;
    a.expect_silence(Duration::from_millis(150)).await;
    assert_eq!(
        a.recv().await,
        json!({"type": "peer-left", "id": b_id, "reason": "timeout"})
    );
    let _ = a_id;
}

#[tokio::test]
async fn idle_connections_are_closed_and_pinging_ones_kept() {
    let s = Server::start(|o| o.idle_timeout = Duration::from_millis(600)).await;
    let mut idle = s.client().await;
    let mut busy = s.client().await;
    for _ in 0..6 {
        busy.send(json!({"type": "ping", "id": 0})).await;
        busy.expect("pong").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(idle.expect_close().await, Some(1001));
    busy.send(json!({"type": "ping", "id": 1})).await;
    busy.expect("pong").await;
}

#[tokio::test]
async fn server_pings_keep_a_quiet_client_alive() {
    let s = Server::start(|o| {
        o.idle_timeout = Duration::from_millis(600);
        o.ping_interval = Duration::from_millis(100);
    })
    .await;
    let mut c = s.client().await;
    // tungstenite answers pings while reading; no application message for 1.5 s.
    c.expect_silence(Duration::from_millis(1500)).await;
    c.send(json!({"type": "ping", "id": 2})).await;
    c.expect("pong").await;
}

#[tokio::test]
async fn shutdown_closes_every_socket() {
    let s = Server::start(|_| {}).await;
    let (mut a, _, _) = s.join("r", "A").await;
    let mut idle = s.client().await;
    let handle = s.handle.clone();
    let stop = tokio::spawn(async move { handle.shutdown().await });
    assert_eq!(a.expect_close().await, Some(1001));
    assert_eq!(idle.expect_close().await, Some(1001));
    tokio::time::timeout(WAIT, stop).await.unwrap().unwrap();
    assert_eq!(s.handle.stats().connections, 0);
}
