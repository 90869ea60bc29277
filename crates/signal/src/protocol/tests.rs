//! Tests of the wire format: every client message parsed, every server message written, and the errors for bad frames.

use super::*;
use serde_json::json;

fn parse(v: Value) -> Result<ClientMessage, ParseError> {
    parse_client_message(&v.to_string())
}

#[test]
fn every_client_message_parses() {
    assert_eq!(
        parse(json!({"type": "join", "room": "lobby", "name": "Alice", "token": "t"})),
        Ok(ClientMessage::Join(Join {
            room: "lobby".into(),
            name: Some("Alice".into()),
            token: Some("t".into()),
            mode: None
        }))
    );
    assert_eq!(
        parse(json!({"type": "join", "room": "lobby"})),
        Ok(ClientMessage::Join(Join {
            room: "lobby".into(),
            name: None,
            token: None,
            mode: None
        }))
    );
    assert_eq!(
        parse(json!({"type": "resume", "token": "r_x"})),
        Ok(ClientMessage::Resume(Resume {
            token: "r_x".into()
        }))
    );
    assert_eq!(
        parse(json!({"type": "offer", "to": "p_1", "sdp": "v=0"})),
        Ok(ClientMessage::Offer(SdpTo {
            to: "p_1".into(),
            sdp: "v=0".into()
        }))
    );
    assert_eq!(
        parse(json!({"type": "answer", "to": "p_1", "sdp": "v=0"})),
        Ok(ClientMessage::Answer(SdpTo {
            to: "p_1".into(),
            sdp: "v=0".into()
        }))
    );
    let cand = json!({"candidate": "candidate:1 1 udp 1 1.2.3.4 5 typ host", "sdpMid": "0", "sdpMLineIndex": 0});
    assert_eq!(
        parse(json!({"type": "candidate", "to": "p_1", "candidate": cand})),
        Ok(ClientMessage::Candidate(CandidateTo {
            to: "p_1".into(),
            candidate: cand.clone()
        }))
    );
    assert_eq!(
        parse(json!({"type": "candidate", "to": "p_1", "candidate": null})),
        Ok(ClientMessage::Candidate(CandidateTo {
            to: "p_1".into(),
            candidate: Value::Null
        }))
    );
    assert_eq!(
        parse(json!({"type": "chat", "text": "hi"})),
        Ok(ClientMessage::Chat(Chat { text: "hi".into() }))
    );
    assert_eq!(
        parse(json!({"type": "media", "audio": true, "video": false, "screen": true})),
        Ok(ClientMessage::Media(MediaState {
            audio: true,
            video: false,
            screen: true
        }))
    );
    assert_eq!(
        parse(json!({"type": "media", "audio": true})),
        Ok(ClientMessage::Media(MediaState {
            audio: true,
            video: false,
            screen: false
        }))
    );
    assert_eq!(
        parse(json!({"type": "ping", "id": 42})),
        Ok(ClientMessage::Ping(Ping { id: json!(42) }))
    );
    assert_eq!(
        parse(json!({"type": "ping"})),
        Ok(ClientMessage::Ping(Ping { id: Value::Null }))
    );
    assert_eq!(
        parse(json!({"type": "leave"})),
        Ok(ClientMessage::Leave(Leave {}))
    );
}

#[test]
fn unknown_fields_are_ignored() {
    assert_eq!(
        parse(json!({"type": "leave", "why": "bye", "n": [1, 2]})),
        Ok(ClientMessage::Leave(Leave {}))
    );
    assert!(matches!(
        parse(json!({"type": "chat", "text": "x", "future": {"a": 1}})),
        Ok(ClientMessage::Chat(_))
    ));
}

#[test]
fn round_trip_through_to_json() {
    for text in [
        r#"{"type":"join","room":"r","name":"n"}"#,
        r#"{"type":"candidate","to":"p","candidate":null}"#,
        r#"{"type":"leave"}"#,
        r#"{"type":"ping","id":"abc"}"#,
    ] {
        let m = parse_client_message(text).unwrap();
        assert_eq!(m.to_json(), text);
    }
}

fn code(text: &str) -> (ErrorCode, Option<String>) {
    let e = parse_client_message(text).unwrap_err();
    (e.code, e.reference)
}

#[test]
fn bad_message_vs_unknown_type() {
    use ErrorCode::*;
    assert_eq!(code("not json"), (BadMessage, None));
    assert_eq!(code(""), (BadMessage, None));
    assert_eq!(code("[1,2]"), (BadMessage, None));
    assert_eq!(code("\"join\""), (BadMessage, None));
    assert_eq!(code("{}"), (BadMessage, None));
    assert_eq!(code(r#"{"type": 5}"#), (BadMessage, None));
    assert_eq!(code(r#"{"type": "welcome"}"#), (UnknownType, None));
    assert_eq!(code(r#"{"type": "JOIN"}"#), (UnknownType, None));
    assert_eq!(code(r#"{"type": ""}"#), (UnknownType, None));
    let join = Some("join".to_owned());
    assert_eq!(code(r#"{"type": "join"}"#), (BadMessage, join.clone()));
    assert_eq!(code(r#"{"type": "join", "room": 7}"#), (BadMessage, join));
    let offer = Some("offer".to_owned());
    assert_eq!(
        code(r#"{"type": "offer", "to": "p"}"#),
        (BadMessage, offer.clone())
    );
    assert_eq!(
        code(r#"{"type": "offer", "to": "p", "sdp": ""}"#),
        (BadMessage, offer)
    );
    let cand = Some("candidate".to_owned());
    assert_eq!(
        code(r#"{"type": "candidate", "to": "p"}"#),
        (BadMessage, cand.clone())
    );
    assert_eq!(
        code(r#"{"type": "candidate", "to": "p", "candidate": "x"}"#),
        (BadMessage, cand)
    );
    let chat = Some("chat".to_owned());
    assert_eq!(code(r#"{"type": "chat"}"#), (BadMessage, chat.clone()));
    assert_eq!(
        code(r#"{"type": "chat", "text": ""}"#),
        (BadMessage, chat.clone())
    );
    let long = "é".repeat(MAX_CHAT_CHARS + 1);
    assert_eq!(
        code(&json!({"type": "chat", "text": long}).to_string()),
        (BadMessage, chat)
    );
    let ok = "é".repeat(MAX_CHAT_CHARS);
    assert!(parse(json!({"type": "chat", "text": ok})).is_ok());
    assert_eq!(
        code(r#"{"type": "media", "audio": "yes"}"#),
        (BadMessage, Some("media".to_owned()))
    );
}

#[test]
fn unknown_type_quotes_a_bounded_prefix() {
    let long = "x".repeat(10_000);
    let e = parse_client_message(&json!({ "type": long }).to_string()).unwrap_err();
    assert_eq!(e.code, ErrorCode::UnknownType);
    assert!(e.message.len() < 300, "{}", e.message);
}

#[test]
fn deeply_nested_json_is_an_error_not_a_crash() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(code(&deep).0, ErrorCode::BadMessage);
    let deep_field = format!(
        r#"{{"type":"ping","id":{}1{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert_eq!(code(&deep_field).0, ErrorCode::BadMessage);
}

#[test]
fn server_messages_have_the_documented_shape() {
    let m = ServerMessage::PeerJoined(PeerJoined {
        id: "p_1".into(),
        name: "Carol".into(),
    });
    assert_eq!(
        m.to_json(),
        r#"{"type":"peer-joined","id":"p_1","name":"Carol"}"#
    );
    let m = ServerMessage::PeerLeft(PeerLeft {
        id: "p_1".into(),
        reason: LeaveReason::Timeout,
    });
    assert_eq!(
        m.to_json(),
        r#"{"type":"peer-left","id":"p_1","reason":"timeout"}"#
    );
    let m = ServerMessage::error(ErrorCode::RoomFull, "full", Some("join"));
    assert_eq!(
        m.to_json(),
        r#"{"type":"error","code":"room-full","message":"full","ref":"join"}"#
    );
    let m = ServerMessage::error(ErrorCode::TooLarge, "big", None);
    assert_eq!(
        m.to_json(),
        r#"{"type":"error","code":"too-large","message":"big"}"#
    );
    let m = ServerMessage::Media(MediaFrom {
        from: "p".into(),
        audio: false,
        video: true,
        screen: false,
    });
    assert_eq!(
        m.to_json(),
        r#"{"type":"media","from":"p","audio":false,"video":true,"screen":false}"#
    );
    for c in ErrorCode::ALL {
        assert_eq!(serde_json::to_value(c).unwrap(), json!(c.as_str()));
        assert_eq!(ErrorCode::ALL[c.index()], c);
    }
}
