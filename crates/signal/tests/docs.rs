//! `docs/signaling.md` and the code agree: every JSON example is a message this crate
//! reads or writes exactly (same fields, nothing missing, nothing extra), every error
//! code is documented, and every client message has a section.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use tsunagi_signal::protocol::{parse_client_message, ClientMessage, ServerMessage};
use tsunagi_signal::token::Claims;
use tsunagi_signal::ErrorCode;

const DOC: &str = include_str!("../../../docs/signaling.md");

/// Every JSON value in the ```json blocks.
fn examples() -> Vec<Value> {
    let mut out = Vec::new();
    let mut rest = DOC;
    while let Some(start) = rest.find("```json\n") {
        let body = &rest[start + 8..];
        let end = body.find("```").expect("a closed code block");
        let values = serde_json::Deserializer::from_str(&body[..end]).into_iter::<Value>();
        for v in values {
            out.push(v.unwrap_or_else(|e| panic!("bad JSON in docs/signaling.md: {e}")));
        }
        rest = &body[end + 3..];
    }
    out
}

fn round_trips_as_client(v: &Value) -> bool {
    parse_client_message(&v.to_string())
        .map(|m| serde_json::from_str::<Value>(&m.to_json()).unwrap() == *v)
        .unwrap_or(false)
}

fn round_trips_as_server(v: &Value) -> bool {
    serde_json::from_value::<ServerMessage>(v.clone())
        .map(|m| serde_json::from_str::<Value>(&m.to_json()).unwrap() == *v)
        .unwrap_or(false)
}

#[test]
fn every_example_is_an_exact_message() {
    let all = examples();
    assert!(all.len() >= 31, "{} examples", all.len());
    let mut client_types = Vec::new();
    let mut server_types = Vec::new();
    for v in &all {
        let Some(ty) = v.get("type").and_then(Value::as_str) else {
            // The access token claims.
            let c: Claims = serde_json::from_value(v.clone()).expect("claims");
            assert_eq!(serde_json::to_value(&c).unwrap(), *v);
            continue;
        };
        if round_trips_as_client(v) {
            client_types.push(ty.to_owned());
        } else if round_trips_as_server(v) {
            server_types.push(ty.to_owned());
        } else {
            panic!(
                "docs/signaling.md example is neither a client nor a server message exactly: {v}"
            );
        }
    }
    for ty in ClientMessage::TYPES {
        assert!(
            client_types.iter().any(|t| t == ty),
            "no client example of {ty}"
        );
    }
    for ty in [
        "welcome",
        "resumed",
        "peer-joined",
        "peer-left",
        "offer",
        "answer",
        "candidate",
        "chat",
        "media",
        "pong",
        "error",
        "mode",
        "speaker",
        "sfu-stats",
    ] {
        assert!(
            server_types.iter().any(|t| t == ty),
            "no server example of {ty}"
        );
    }
}

#[test]
fn every_error_code_is_documented_and_only_those() {
    let table: Vec<&str> = DOC
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('|').map(|(codes, _)| codes))
        .flat_map(|codes| codes.split(','))
        .map(|c| c.trim().trim_matches('`'))
        .filter(|c| c.chars().all(|ch| ch.is_ascii_lowercase() || ch == '-'))
        .collect();
    for code in ErrorCode::ALL {
        assert!(
            table.contains(&code.as_str()),
            "{code} is not in the error table"
        );
    }
    for c in table {
        assert!(
            ErrorCode::ALL.iter().any(|k| k.as_str() == c),
            "the error table lists {c}, which the code does not have"
        );
    }
}

#[test]
fn every_client_message_has_a_section() {
    for ty in ClientMessage::TYPES {
        assert!(
            DOC.lines()
                .any(|l| l.starts_with("### ") && l[4..].split(", ").any(|h| h == ty)),
            "no section for {ty}"
        );
    }
}
