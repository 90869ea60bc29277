//! The routes: the embedded web client, health, stats and metrics, and the layers that
//! every response goes through (security headers, body limit).

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::metrics;
use super::state::HttpState;
use super::MAX_BODY_BYTES;

/// One embedded file of the web client.
#[derive(Debug)]
pub(crate) struct Asset {
    /// Relative to `web/`, `/`-separated.
    pub path: &'static str,
    pub content_type: &'static str,
    /// A strong ETag, quotes included.
    pub etag: &'static str,
    pub body: &'static [u8],
}

// `ASSETS`, sorted by path (build.rs).
include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS
        .binary_search_by(|a| a.path.cmp(path))
        .ok()
        .and_then(|i| ASSETS.get(i))
}

/// The embedded web client's files: `(path relative to web/, Content-Type)`.
pub fn embedded_files() -> impl Iterator<Item = (&'static str, &'static str)> {
    ASSETS.iter().map(|a| (a.path, a.content_type))
}

/// Served for `/` when the binary was built without `web/index.html`.
const NO_CLIENT: &str = "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>tsunagi</title>\
<h1>tsunagi</h1><p>This build has no web client embedded (web/ was empty at build time).</p></html>\n";

const NOT_FOUND: &str =
    "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>Not found · tsunagi</title>\
<h1>Not found</h1><p>There is nothing here. <a href=\"/\">Start a call</a>.</p></html>\n";

/// Everything of the Content-Security-Policy of HTML pages but `connect-src`, which
/// adds `ws://HOST wss://HOST` for the host the page was requested from (`'self'`
/// covers WebSockets in CSP 3, not in every browser). No inline scripts or styles:
/// the client loads its modules and stylesheets from files (setting `element.style`
/// from a script is allowed).
pub const CONTENT_SECURITY_POLICY_BASE: &str = "default-src 'self'; script-src 'self'; \
style-src 'self'; img-src 'self' data: blob:; media-src 'self' blob: mediastream:; \
object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The built-in routes: `/`, `/r/{room}`, the web client's files, `/healthz`,
/// `/api/stats`, `/metrics`. Without the layers of [`app`].
pub fn routes(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/stats", get(stats_json))
        .route("/metrics", get(prometheus))
        .route("/", get(index))
        .route("/r/{room}", get(index))
        .route("/watch/{room}", get(watch))
        .route(super::plain::ACME_CHALLENGE_PATH, get(acme_challenge))
        .route("/{*path}", get(static_file))
        .with_state(state)
}

/// The whole application: the built-in routes, `extra` (e.g. the signaling `/ws`)
/// merged in, a 404 page for everything else, and the layers every response goes
/// through: security headers and the request body limit.
pub fn app(state: HttpState, extra: Router) -> Router {
    routes(state)
        .merge(extra)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(guard))
}

/// Every component and its cores: 200 when all are up, 503 (with the cores that are
/// down and why) when one failed or tsunagi is stopping. With TLS, also the
/// certificate being served and, under `certificate.problem`, why it could not be
/// renewed or reloaded (still 200: the one it has keeps serving).
async fn healthz(State(state): State<HttpState>) -> Response {
    let report = state.health.report();
    // A draining node answers 503 so that load balancers send no one new to it.
    let draining = state.cluster.as_ref().is_some_and(|c| c.is_draining());
    let status = if report.ok() && !draining {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = serde_json::to_value(&report).unwrap_or_default();
    if let (Some(store), Some(obj)) = (&state.certificate, body.as_object_mut()) {
        obj.insert(
            "certificate".into(),
            serde_json::to_value(store.status()).unwrap_or_default(),
        );
    }
    // Redis away is not a fault of this node: calls go on, so the status stays 200.
    if let (Some(cluster), Some(obj)) = (&state.cluster, body.as_object_mut()) {
        obj.insert("cluster".into(), cluster.health());
    }
    (status, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// ACME's HTTP-01 validation over plain HTTP from loopback (the CA on this host, a
/// reverse proxy in front); other hosts' plain HTTP goes to `plain::router`, which
/// answers it too.
async fn acme_challenge(State(state): State<HttpState>, Path(token): Path<String>) -> Response {
    super::plain::acme_challenge(state.certificate.as_deref(), &token)
}

/// Refuses declared bodies over the limit before anything reads them, and adds the
/// security headers: `nosniff` on every response; on HTML also the CSP and
/// `Referrer-Policy`.
async fn guard(req: Request, next: Next) -> Response {
    let too_large = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n > MAX_BODY_BYTES as u64);
    let csp = csp_for(req.headers().get(header::HOST));
    let mut resp = if too_large {
        (StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n").into_response()
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let html = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if html {
        h.insert(header::CONTENT_SECURITY_POLICY, csp);
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    resp
}

/// A `Host` header that is a plain host name or address with an optional port: safe
/// to repeat in a header or a URL.
pub(crate) fn valid_host(host: Option<&HeaderValue>) -> Option<&str> {
    let h = host?.to_str().ok()?;
    let ok = !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    ok.then_some(h)
}

fn csp_for(host: Option<&HeaderValue>) -> HeaderValue {
    let connect = match valid_host(host) {
        Some(h) => format!("connect-src 'self' ws://{h} wss://{h}"),
        None => "connect-src 'self'".to_owned(),
    };
    HeaderValue::try_from(format!("{CONTENT_SECURITY_POLICY_BASE}; {connect}"))
        .unwrap_or_else(|_| HeaderValue::from_static(CONTENT_SECURITY_POLICY_BASE))
}

/// `/` and `/r/{room}`: the client's page (the client reads the room from the path).
async fn index(headers: HeaderMap) -> Response {
    match asset("index.html") {
        Some(a) => serve_asset(a, &headers),
        None => html(StatusCode::OK, NO_CLIENT),
    }
}

/// `/watch/{room}`: the WHEP player page (it reads the room from the path).
async fn watch(headers: HeaderMap) -> Response {
    match asset("watch.html") {
        Some(a) => serve_asset(a, &headers),
        None => html(StatusCode::NOT_FOUND, NOT_FOUND),
    }
}

async fn static_file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    match asset(&path) {
        Some(a) => serve_asset(a, &headers),
        None => html(StatusCode::NOT_FOUND, NOT_FOUND),
    }
}

async fn not_found(method: Method) -> Response {
    if method == Method::GET || method == Method::HEAD {
        html(StatusCode::NOT_FOUND, NOT_FOUND)
    } else {
        (StatusCode::NOT_FOUND, "not found\n").into_response()
    }
}

fn html(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// An embedded file with its ETag, or 304 when the client's copy is current.
/// `no-cache` on every file, not only HTML: the names carry no content hash, so a
/// browser must revalidate (a cheap 304) or it could pair a new page with an old
/// script.
fn serve_asset(a: &'static Asset, headers: &HeaderMap) -> Response {
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == a.etag || t == "*");
    let common = [
        (header::ETAG, a.etag),
        (header::CACHE_CONTROL, "no-cache"),
        (header::CONTENT_TYPE, a.content_type),
    ];
    if fresh {
        (StatusCode::NOT_MODIFIED, common).into_response()
    } else {
        (StatusCode::OK, common, Body::from(a.body)).into_response()
    }
}

/// `/api/stats`: see [`stats_value`].
async fn stats_json(State(s): State<HttpState>) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Json(s.stats_value())).into_response()
}

async fn prometheus(State(s): State<HttpState>) -> Response {
    (
        [
            (header::CONTENT_TYPE, metrics::CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        s.prometheus_text(),
    )
        .into_response()
}
