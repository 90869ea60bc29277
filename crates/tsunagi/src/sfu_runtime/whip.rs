//! WHIP (RFC 9725) and WHEP over HTTP: publish into a room and play a room's publisher
//! without the signaling WebSocket.
//!
//! | request | answer |
//! |---|---|
//! | `POST /whip/{room}` (`application/sdp` offer) | `201`, `Location: /whip/{room}/{id}`, the SDP answer |
//! | `POST /whep/{room}` | `201`, `Location: /whep/{room}/{id}`; `404` when nobody publishes |
//! | `PATCH` resource (`application/trickle-ice-sdpfrag`) | `204` |
//! | `DELETE` resource | `200` |
//! | `OPTIONS` | `204` with `Allow` (and `Accept-Post` on the endpoint) |
//!
//! With an access-token secret configured, both endpoints want
//! `Authorization: Bearer <token>` for the room (`401` without one, `403` when it does
//! not admit to the room, or, for WHIP, does not allow publishing).

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{to_bytes, Body};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;

use super::{HttpFailure, SessionKind, SfuHandle};

/// Largest SDP offer or fragment accepted.
const MAX_SDP_BYTES: usize = 64 * 1024;

/// The `/whip` and `/whep` routes.
pub fn routes(handle: SfuHandle) -> Router {
    Router::new()
        .route("/whip/{room}", post(post_whip).options(options_endpoint))
        .route(
            "/whip/{room}/{id}",
            axum::routing::patch(patch_whip)
                .delete(delete_whip)
                .options(options_resource),
        )
        .route("/whep/{room}", post(post_whep).options(options_endpoint))
        .route(
            "/whep/{room}/{id}",
            axum::routing::patch(patch_whep)
                .delete(delete_whep)
                .options(options_resource),
        )
        .with_state(handle)
}

fn failure(f: HttpFailure) -> Response {
    let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{}\n", f.message),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

fn content_type_is(headers: &HeaderMap, want: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(want))
}

/// Checks the bearer token when access control is on.
fn authorize(
    handle: &SfuHandle,
    headers: &HeaderMap,
    room: &str,
    kind: SessionKind,
) -> Result<(), HttpFailure> {
    let Some(secret) = handle.token_secret() else {
        return Ok(());
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(|| {
            HttpFailure::new(
                401,
                "this server requires an access token: send Authorization: Bearer <token> \
                 (make one with `tsunagi token --room ROOM --identity NAME`)",
            )
        })?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = tsunagi_signal::token::verify(secret, token, now)
        .map_err(|e| HttpFailure::new(401, format!("access token refused: {e}")))?;
    if !claims.admits(room) {
        return Err(HttpFailure::new(
            403,
            format!("the access token is for room {}, not {room}", claims.room),
        ));
    }
    if kind == SessionKind::Whip && !claims.can_publish() {
        return Err(HttpFailure::new(
            403,
            "the access token does not allow publishing (canPublish is false)",
        ));
    }
    Ok(())
}

fn check_room(room: &str) -> Result<(), HttpFailure> {
    tsunagi_signal::validate_room(room)
        .map_err(|e| HttpFailure::new(400, format!("invalid room name: {e}")))
}

async fn read_text(body: Body) -> Result<String, HttpFailure> {
    let bytes = to_bytes(body, MAX_SDP_BYTES).await.map_err(|_| {
        HttpFailure::new(
            413,
            format!("the body is larger than {MAX_SDP_BYTES} bytes or could not be read"),
        )
    })?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| HttpFailure::new(400, "the body is not UTF-8 text"))
}

async fn create(
    handle: SfuHandle,
    kind: SessionKind,
    room: String,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        check_room(&room)?;
        authorize(&handle, &headers, &room, kind)?;
        if !content_type_is(&headers, "application/sdp") {
            return Err(HttpFailure::new(
                415,
                "send the SDP offer with Content-Type: application/sdp",
            ));
        }
        let offer = read_text(body).await?;
        if !offer.trim_start().starts_with("v=") {
            return Err(HttpFailure::new(400, "the body is not an SDP offer"));
        }
        if kind == SessionKind::Whip {
            check_whip_offer_sends_media(&offer)?;
        }
        handle.create(kind, room.clone(), offer).await
    }
    .await;
    match result {
        Ok(created) => {
            let location = format!("/{}/{}/{}", kind.as_str(), room, created.id);
            let mut r = (
                StatusCode::CREATED,
                [(header::CONTENT_TYPE, "application/sdp")],
                created.answer,
            )
                .into_response();
            if let Ok(v) = HeaderValue::try_from(location) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        Err(f) => failure(f),
    }
}

/// A WHIP offer must publish something: at least one audio or video m-section that
/// sends (`a=sendonly` or `a=sendrecv`, or no direction attribute, which means
/// sendrecv unless the session level sets another; RFC 8866 §6.7) and is not
/// disabled (port 0 without `a=bundle-only`: RFC 3264 §5.1, RFC 8843 §6). Anything
/// else would be answered, join the room as a publisher of nothing and leave the room
/// looking empty, so it is refused before it reaches the SFU.
///
/// 422 (Unprocessable Content, RFC 9110 §15.5.21), not 400: the body is a well-formed
/// SDP offer of the right media type; what is wrong is what it asks for. The plain-text
/// body says which m-sections were found and what is missing.
pub(crate) fn check_whip_offer_sends_media(offer: &str) -> Result<(), HttpFailure> {
    /// One m-section as far as this check cares.
    struct Section<'a> {
        media: &'a str,
        port_zero: bool,
        bundle_only: bool,
        direction: Option<&'a str>,
    }
    impl Section<'_> {
        fn disabled(&self) -> bool {
            self.port_zero && !self.bundle_only
        }
    }
    const DIRECTIONS: [&str; 4] = ["sendrecv", "sendonly", "recvonly", "inactive"];
    let mut session_direction = None;
    let mut sections: Vec<Section<'_>> = Vec::new();
    for line in offer.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            let mut fields = m.split_whitespace();
            let media = fields.next().unwrap_or("");
            let port = fields.next().unwrap_or("");
            sections.push(Section {
                media,
                port_zero: port.split('/').next() == Some("0"),
                bundle_only: false,
                direction: None,
            });
        } else if let Some(a) = line.strip_prefix("a=") {
            let target = match sections.last_mut() {
                Some(s) => &mut s.direction,
                None => &mut session_direction,
            };
            if let Some(d) = DIRECTIONS.iter().find(|d| **d == a) {
                *target = Some(*d);
            } else if a == "bundle-only" {
                if let Some(s) = sections.last_mut() {
                    s.bundle_only = true;
                }
            }
        }
    }
    let sends = |s: &Section<'_>| {
        let media = s.media == "audio" || s.media == "video";
        let direction = s.direction.or(session_direction).unwrap_or("sendrecv");
        media && matches!(direction, "sendonly" | "sendrecv") && !s.disabled()
    };
    if sections.iter().any(sends) {
        return Ok(());
    }
    let found = if sections.is_empty() {
        "it has no m-line at all".to_owned()
    } else {
        // The first few: the body stays short whatever the offer holds.
        let mut each: Vec<String> = sections
            .iter()
            .take(8)
            .map(|s| {
                let what = if s.media == "audio" || s.media == "video" {
                    if s.disabled() {
                        "disabled (port 0)".to_owned()
                    } else {
                        s.direction
                            .or(session_direction)
                            .unwrap_or("sendrecv")
                            .to_owned()
                    }
                } else {
                    "not audio or video".to_owned()
                };
                format!("m={} is {what}", s.media)
            })
            .collect();
        if sections.len() > each.len() {
            each.push(format!("... ({} in all)", sections.len()));
        }
        format!("its m-lines: {}", each.join(", "))
    };
    Err(HttpFailure::new(
        422,
        format!(
            "the WHIP offer sends no media ({found}); a WHIP publisher needs at least one \
             audio or video m-line with a=sendonly or a=sendrecv (to watch a room, use \
             WHEP: POST /whep/{{room}})"
        ),
    ))
}

async fn patch(
    handle: SfuHandle,
    kind: SessionKind,
    room: String,
    id: String,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        authorize(&handle, &headers, &room, kind)?;
        if !content_type_is(&headers, "application/trickle-ice-sdpfrag") {
            return Err(HttpFailure::new(
                415,
                "send candidates with Content-Type: application/trickle-ice-sdpfrag",
            ));
        }
        let frag = read_text(body).await?;
        let candidates = parse_sdpfrag(&frag)?;
        handle.candidates(kind, room, id, candidates).await
    }
    .await;
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(f) => failure(f),
    }
}

/// The candidates of a trickle-ice-sdpfrag (RFC 8840): `a=candidate:` lines, and an
/// empty string for `a=end-of-candidates`. A changed ICE ufrag (an ICE restart) is
/// refused: this server does not restart WHIP/WHEP sessions.
fn parse_sdpfrag(frag: &str) -> Result<Vec<String>, HttpFailure> {
    let mut out = Vec::new();
    for line in frag.lines().map(str::trim) {
        if let Some(c) = line.strip_prefix("a=candidate:") {
            out.push(format!("candidate:{c}"));
        } else if line == "a=end-of-candidates" {
            out.push(String::new());
        }
        if out.len() > 64 {
            return Err(HttpFailure::new(
                400,
                "more than 64 candidates in one PATCH",
            ));
        }
    }
    Ok(out)
}

async fn delete(
    handle: SfuHandle,
    kind: SessionKind,
    room: String,
    id: String,
    headers: HeaderMap,
) -> Response {
    let result = async {
        authorize(&handle, &headers, &room, kind)?;
        handle.delete(kind, room, id).await
    }
    .await;
    match result {
        Ok(()) => StatusCode::OK.into_response(),
        Err(f) => failure(f),
    }
}

async fn post_whip(
    State(h): State<SfuHandle>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    create(h, SessionKind::Whip, room, headers, body).await
}

async fn post_whep(
    State(h): State<SfuHandle>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    create(h, SessionKind::Whep, room, headers, body).await
}

async fn patch_whip(
    State(h): State<SfuHandle>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    patch(h, SessionKind::Whip, room, id, headers, body).await
}

async fn patch_whep(
    State(h): State<SfuHandle>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    patch(h, SessionKind::Whep, room, id, headers, body).await
}

async fn delete_whip(
    State(h): State<SfuHandle>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    delete(h, SessionKind::Whip, room, id, headers).await
}

async fn delete_whep(
    State(h): State<SfuHandle>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    delete(h, SessionKind::Whep, room, id, headers).await
}

async fn options_endpoint() -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (header::ALLOW, "OPTIONS, POST"),
            (
                header::HeaderName::from_static("accept-post"),
                "application/sdp",
            ),
        ],
    )
        .into_response()
}

async fn options_resource() -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (header::ALLOW, "OPTIONS, PATCH, DELETE"),
            (
                header::HeaderName::from_static("accept-patch"),
                "application/trickle-ice-sdpfrag",
            ),
        ],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdpfrag_candidates_and_end() {
        let frag = "a=ice-ufrag:abcd\r\na=ice-pwd:xyz\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n\
                    a=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n\
                    a=end-of-candidates\r\n";
        let c = parse_sdpfrag(frag).unwrap();
        assert_eq!(
            c,
            vec![
                "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host".to_owned(),
                String::new()
            ]
        );
    }

    #[test]
    fn too_many_candidates_refused() {
        let frag: String = (0..100)
            .map(|i| format!("a=candidate:{i} 1 udp 1 127.0.0.1 {i} typ host\n"))
            .collect();
        assert_eq!(parse_sdpfrag(&frag).unwrap_err().status, 400);
    }

    /// A browser-like offer: one m-section per `(media, port, direction)`.
    fn offer(session: &str, sections: &[(&str, &str, &str)]) -> String {
        let mut o = format!("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n{session}");
        for (i, (media, port, extra)) in sections.iter().enumerate() {
            o.push_str(&format!(
                "m={media} {port} UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:{i}\r\n{extra}"
            ));
        }
        o
    }

    fn refused(o: &str) -> String {
        let f = check_whip_offer_sends_media(o).unwrap_err();
        assert_eq!(f.status, 422);
        assert!(
            f.message
                .contains("needs at least one audio or video m-line with a=sendonly or a=sendrecv"),
            "{}",
            f.message
        );
        f.message
    }

    #[test]
    fn offers_that_send_are_accepted() {
        for o in [
            offer("", &[("audio", "9", "a=sendonly\r\n")]),
            offer("", &[("video", "9", "a=sendrecv\r\n")]),
            // No direction attribute: sendrecv.
            offer("", &[("audio", "9", "")]),
            offer(
                "",
                &[
                    ("audio", "9", "a=recvonly\r\n"),
                    ("video", "9", "a=sendonly\r\n"),
                ],
            ),
            // The session level sets the default; the media level overrides it.
            offer("a=sendonly\r\n", &[("video", "9", "")]),
            offer("a=recvonly\r\n", &[("video", "9", "a=sendonly\r\n")]),
            // Bundled sections may have port 0.
            offer("", &[("video", "0", "a=bundle-only\r\na=sendonly\r\n")]),
        ] {
            assert!(check_whip_offer_sends_media(&o).is_ok(), "{o}");
        }
        // Line endings of any kind.
        assert!(check_whip_offer_sends_media("v=0\nm=audio 9 RTP/AVP 0\na=sendonly\n").is_ok());
    }

    #[test]
    fn offers_that_send_nothing_are_refused_saying_why() {
        let m = refused(&offer(
            "",
            &[
                ("audio", "9", "a=recvonly\r\n"),
                ("video", "9", "a=recvonly\r\n"),
            ],
        ));
        assert!(
            m.starts_with("the WHIP offer sends no media (its m-lines: m=audio is recvonly, m=video is recvonly)"),
            "{m}"
        );
        assert!(refused(&offer("", &[("video", "9", "a=inactive\r\n")]))
            .contains("m=video is inactive"));
        assert!(refused(&offer("a=recvonly\r\n", &[("audio", "9", "")]))
            .contains("m=audio is recvonly"));
        assert!(
            refused(&offer("", &[("application", "9", "a=sendrecv\r\n")]))
                .contains("m=application is not audio or video")
        );
        assert!(refused(&offer("", &[("audio", "0", "a=sendonly\r\n")]))
            .contains("m=audio is disabled (port 0)"));
        assert!(refused(&offer("", &[])).contains("it has no m-line at all"));
        let many = offer("", &[("audio", "9", "a=recvonly\r\n"); 20]);
        assert!(refused(&many).contains("m=audio is recvonly, ... (20 in all))"));
    }

    #[test]
    fn content_type_with_parameters() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/SDP; charset=utf-8"),
        );
        assert!(content_type_is(&h, "application/sdp"));
        assert!(!content_type_is(&h, "application/trickle-ice-sdpfrag"));
    }
}
