//! Drive the signaling hub with arbitrary frames on four connections, with time moving
//! on, and parse each frame as a client message, an access token and an SDP too. Every
//! output must be a valid server message; nothing may panic.
//!
//! Input: a sequence of records `[op, len, bytes[len]]`. `op & 3` is the connection,
//! `op >> 2 & 7` the action: text frame, binary frame, drop, clean close, reopen,
//! advance 3 s, timeout.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use tsunagi_signal::{
    parse_client_message, sdp, token, ConnId, Disconnect, Hub, HubConfig, NoIceServers, Output,
    ServerMessage, TokenSecret,
};

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut now = t0;
    let config = HubConfig {
        max_peers: 3,
        max_rooms: 2,
        queue_messages: 4,
        max_message_bytes: 200,
        resume_grace: Duration::from_secs(5),
        token_secret: if data.first().is_some_and(|b| b & 1 == 1) {
            Some(TokenSecret(b"fuzz-secret".to_vec()))
        } else {
            None
        },
        ..HubConfig::default()
    };
    let mut hub = Hub::new(config, NoIceServers, [9; 32], t0, 1_764_000_000_000);
    for c in 0..4 {
        hub.handle_open(now, ConnId(c));
    }
    let mut rest = data;
    while let [op, len, tail @ ..] = rest {
        let n = (*len as usize).min(tail.len());
        let (bytes, next) = tail.split_at(n);
        rest = next;
        let conn = ConnId(u64::from(op & 3));
        let text = String::from_utf8_lossy(bytes);
        let _ = parse_client_message(&text);
        let _ = token::verify(b"fuzz-secret", &text, 1_764_000_000);
        let _ = sdp::sends_media(&text);
        match (op >> 2) & 7 {
            0 | 1 => hub.handle_text(now, conn, &text),
            2 => hub.handle_binary(now, conn, n),
            3 => hub.handle_close(now, conn, Disconnect::Lost),
            4 => hub.handle_close(now, conn, Disconnect::Clean),
            5 => hub.handle_open(now, conn),
            6 => now += Duration::from_secs(3),
            _ => hub.handle_timeout(now),
        }
        while let Some(out) = hub.poll_output() {
            if let Output::Send { text, .. } = out {
                let v: serde_json::Value = serde_json::from_str(&text).expect("JSON output");
                serde_json::from_value::<ServerMessage>(v).expect("a server message");
            }
        }
        let s = hub.stats();
        assert!(s.rooms <= 2 && s.peers <= 6 && s.connections <= 4);
    }
});
