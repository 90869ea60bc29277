//! Misbehaving clients (flooding, oversized frames, bad tokens, slow readers) get their
//! error or get closed while the other peers keep talking.

use super::*;

#[tokio::test]
async fn flooding_client_is_limited_then_closed_while_others_talk() {
    let s = Server::start(|o| o.hub.flood_close_after = Duration::from_millis(1500)).await;
    let (mut a, a_id, _) = s.join("r", "A").await;
    let (mut b, b_id, _) = s.join("r", "B").await;
    let (mut f, f_id, _) = s.join("r", "F").await;
    a.expect("peer-joined").await;
    a.expect("peer-joined").await;
    b.expect("peer-joined").await;

    let flood = tokio::spawn(async move {
        // Far above 50/s for well over 1.5 s.
        let started = tokio::time::Instant::now();
        let mut sent = 0;
        while started.elapsed() < Duration::from_secs(4) {
            if f.ws
                .send(Message::text(r#"{"type":"ping"}"#))
                .await
                .is_err()
            {
                break;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(sent > 100);
        // Pongs for the burst, a rate-limited error, then the close.
        let mut pongs = 0;
        let mut limited = 0;
        let code = loop {
            match tokio::time::timeout(WAIT, f.ws.next()).await.unwrap() {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    match v["type"].as_str().unwrap() {
                        "pong" => pongs += 1,
                        "error" => {
                            assert_eq!(v["code"], "rate-limited");
                            limited += 1;
                        }
                        _ => {}
                    }
                }
                Some(Ok(Message::Close(c))) => break c.map(|c| u16::from(c.code)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break None,
            }
        };
        (pongs, limited, code)
    });
    // Meanwhile A and B keep exchanging messages; at some point both are told that the
    // flooder was removed.
    let kicked = json!({"type": "peer-left", "id": f_id, "reason": "kicked"});
    let mut told = [false, false];
    async fn next_skipping(c: &mut Client, kicked: &Value, told: &mut bool) -> Value {
        loop {
            let m = c.recv().await;
            if m == *kicked && !*told {
                *told = true;
                continue;
            }
            return m;
        }
    }
    for i in 0..25 {
        a.send(json!({"type": "offer", "to": b_id, "sdp": format!("v=0 {i}")}))
            .await;
        let m = next_skipping(&mut b, &kicked, &mut told[1]).await;
        assert_eq!(m["type"], "offer");
        assert_eq!(m["sdp"], format!("v=0 {i}"));
        b.send(json!({"type": "answer", "to": a_id, "sdp": "v=0"}))
            .await;
        let m = next_skipping(&mut a, &kicked, &mut told[0]).await;
        assert_eq!(m["type"], "answer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (pongs, limited, code) = flood.await.unwrap();
    assert_eq!(code, Some(1008));
    assert!(limited >= 1, "{limited}");
    // The burst of 100 (the join took one) plus 50/s while it lasted: never all 4 s.
    assert!((99..100 + 50 * 4).contains(&pongs), "{pongs}");
    for (peer, told) in [(&mut a, told[0]), (&mut b, told[1])] {
        if !told {
            assert_eq!(peer.recv().await, kicked);
        }
    }
    assert!(s.handle.stats().errors_for(ErrorCode::RateLimited) >= 1);
}

#[tokio::test]
async fn oversized_and_bad_token_clients_do_not_disturb_others() {
    let s = Server::start(|o| {
        o.hub.token_secret = Some(TokenSecret(TOKEN_SECRET.to_vec()));
    })
    .await;
    let join = |name: &str| json!({"type": "join", "room": "r", "token": tok("r", name, 600, None, TOKEN_SECRET)});
    let mut a = s.client().await;
    a.send(join("a")).await;
    let a_id = a.expect("welcome").await["id"].as_str().unwrap().to_owned();
    let mut b = s.client().await;
    b.send(join("b")).await;
    let b_id = b.expect("welcome").await["id"].as_str().unwrap().to_owned();
    a.expect("peer-joined").await;

    let mut bad = s.client().await;
    bad.send(json!({"type": "join", "room": "r", "token": tok("r", "m", 600, None, b"forged")}))
        .await;
    bad.expect_error("invalid-token", Some("join")).await;
    let mut big = s.client().await;
    big.send(json!({"type": "chat", "text": "x".repeat(100_000)}))
        .await;
    big.expect_error("too-large", None).await;
    for i in 0..5 {
        a.send(
            json!({"type": "candidate", "to": b_id, "candidate": {"candidate": format!("c{i}")}}),
        )
        .await;
        assert_eq!(b.expect("candidate").await["from"], a_id);
        big.send(json!({"type": "ping", "id": "x".repeat(70_000)}))
            .await;
        big.expect_error("too-large", None).await;
        bad.send(json!({"type": "offer", "to": a_id, "sdp": "v=0"}))
            .await;
        bad.expect_error("not-joined", Some("offer")).await;
    }
    a.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn slow_reader_gets_server_busy_and_never_blocks_others() {
    let s = Server::start(|o| {
        o.outbound_queue = 4;
        o.hub.messages_per_second = 0;
        o.write_timeout = Duration::from_secs(30);
    })
    .await;
    let (mut a, _, _) = s.join("r", "A").await;
    let (mut c, _, _) = s.join("r", "C").await;
    let (mut slow, slow_id, _) = s.join("r", "Slow").await;
    a.expect("peer-joined").await;
    a.expect("peer-joined").await;
    c.expect("peer-joined").await;
    // A sends big offers to Slow, which does not read: the socket buffers fill, then
    // its queue of 4, and the server gives up on it.
    let sdp = "v=0 ".to_owned() + &"a".repeat(60_000);
    let mut kicked = false;
    for i in 0..2000 {
        a.send(json!({"type": "offer", "to": slow_id, "sdp": sdp}))
            .await;
        if i % 20 == 0 {
            // C is served all along.
            a.send(json!({"type": "chat", "text": format!("n{i}")}))
                .await;
            assert_eq!(c.expect("chat").await["text"], format!("n{i}"));
        }
        if let Ok(Some(Ok(Message::Text(t)))) =
            tokio::time::timeout(Duration::from_millis(1), a.ws.next()).await
        {
            let v: Value = serde_json::from_str(&t).unwrap();
            assert_eq!(
                v,
                json!({"type": "peer-left", "id": slow_id, "reason": "kicked"})
            );
            kicked = true;
            break;
        }
    }
    assert!(kicked, "the slow reader was never dropped");
    assert_eq!(
        c.recv().await,
        json!({"type": "peer-left", "id": slow_id, "reason": "kicked"})
    );
    // Slow finally reads: what fitted, then server-busy, then the close.
    let mut busy = false;
    let code = loop {
        match tokio::time::timeout(WAIT, slow.ws.next()).await.unwrap() {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "error" {
                    assert_eq!(v["code"], "server-busy");
                    busy = true;
                }
            }
            Some(Ok(Message::Close(f))) => break f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break None,
        }
    };
    assert!(busy);
    assert_eq!(code, Some(1008));
    assert_eq!(s.handle.stats().errors_for(ErrorCode::ServerBusy), 1);
}
