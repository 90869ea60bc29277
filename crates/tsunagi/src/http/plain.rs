//! What a plain-HTTP client of another host gets on a port that speaks TLS: someone
//! typed `http://` (or followed the address printed at start) from a phone or a second
//! laptop.
//!
//! With a certificate that browsers trust, a redirect to the same address over https.
//! With the self-signed one, the pages (`/`, `/r/{room}`) answer with a page, in English
//! and Japanese, that says why the browser will warn, how to check that the
//! certificate is this server's (its SHA-256 fingerprint) and how to go on, with the
//! https link; everything else is redirected.
//!
//! Except ACME's HTTP-01 validation ([`acme_challenge`]): the CA asks for
//! `/.well-known/acme-challenge/{token}` over plain HTTP, and gets the answer.

use std::sync::Arc;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::routes::valid_host;
use crate::tls::CertStore;

/// The router for plain-HTTP clients of other hosts; `store` is the certificate being
/// served (`None`: TLS is off, and this router is not used).
pub(crate) fn router(store: Option<Arc<CertStore>>) -> Router {
    let challenges = store.clone();
    Router::new()
        .route(
            ACME_CHALLENGE_PATH,
            get(move |Path(token): Path<String>| {
                let store = challenges.clone();
                async move { acme_challenge(store.as_deref(), &token) }
            }),
        )
        .fallback(move |method: Method, headers: HeaderMap, uri: Uri| {
            let store = store.clone();
            async move { answer(store.as_deref(), &method, &headers, &uri) }
        })
}

/// Where ACME's HTTP-01 validation asks (RFC 8555 §8.3).
pub(crate) const ACME_CHALLENGE_PATH: &str = "/.well-known/acme-challenge/{token}";

/// The key authorization of a pending HTTP-01 challenge for `token`, whatever the
/// host asked for (the CA asks by the domain's name); 404 when none is pending.
pub(crate) fn acme_challenge(store: Option<&CertStore>, token: &str) -> Response {
    match store.and_then(|s| s.http_challenge(token)) {
        Some(key_authorization) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/plain"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            key_authorization,
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "no ACME challenge pending for this token\n",
        )
            .into_response(),
    }
}

const NOT_HERE: &str = "this port speaks HTTPS\n";

fn answer(store: Option<&CertStore>, method: &Method, headers: &HeaderMap, uri: &Uri) -> Response {
    let Some(host) = valid_host(headers.get(header::HOST)) else {
        return (StatusCode::BAD_REQUEST, NOT_HERE).into_response();
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = format!("https://{host}{path}");
    let page = matches!(*method, Method::GET | Method::HEAD)
        && (uri.path() == "/" || uri.path().starts_with("/r/"));
    let self_signed = store
        .map(CertStore::status)
        .filter(|s| s.source == "self-signed");
    match self_signed {
        Some(status) if page => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
                (header::CONTENT_SECURITY_POLICY, "default-src 'none'"),
                (header::REFERRER_POLICY, "no-referrer"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            certificate_page(&location, &status.sha256),
        )
            .into_response(),
        _ => match HeaderValue::try_from(location) {
            Ok(l) => (
                StatusCode::PERMANENT_REDIRECT,
                [(header::LOCATION, l)],
                NOT_HERE,
            )
                .into_response(),
            Err(_) => (StatusCode::BAD_REQUEST, NOT_HERE).into_response(),
        },
    }
}

/// `s` with HTML's special characters escaped.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page: why the warning, how to check the certificate, how to go on.
fn certificate_page(location: &str, sha256: &str) -> String {
    let url = escape(location);
    let fp = escape(sha256);
    format!(
        r#"<!doctype html>
<html lang="en">
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Open tsunagi over https · https で開いてください</title>
<h1>Open this call over https</h1>
<p>Browsers give a page camera and microphone only over <b>https</b> (or on the same
machine). This tsunagi server speaks https with a certificate it made itself, so your
browser warns that the connection is not private the first time.</p>
<ol>
<li>Open <a id="https-link" href="{url}">{url}</a>.</li>
<li>Check that the certificate is this server's: in the warning, open the certificate
details (Chrome: "Not secure" → "Certificate"; Safari: "Show Certificate") and compare
its SHA-256 fingerprint with the one below, which the server also printed in its log
when it started.</li>
<li>If they match, go on: "Advanced" → "Proceed to …" (Chrome), "Show Details" →
"visit this website" (Safari), "Advanced…" → "Accept the Risk and Continue" (Firefox).
The browser remembers it; the warning does not come back while the server keeps its
certificate.</li>
</ol>
<p>SHA-256 fingerprint:</p>
<pre id="sha256">{fp}</pre>
<p>If they do not match, do not go on: something between you and the server is
answering in its place.</p>
<hr>
<section lang="ja">
<h1>この通話は https で開いてください</h1>
<p>ブラウザーがカメラとマイクを使わせるのは <b>https</b> のページ（または同じマシン上のページ）だけです。この
tsunagi サーバーは自分で作った証明書で https を提供しているため、最初に開くときブラウザーが「この接続ではプライバシーが保護されません」などと警告します。</p>
<ol>
<li><a href="{url}">{url}</a> を開きます。</li>
<li>証明書がこのサーバーのものか確かめます。警告画面から証明書の詳細を開き（Chrome:「保護されていない通信」→「証明書」、Safari:「証明書を表示」）、SHA-256
フィンガープリントが上の値（サーバーが起動時にログに出した値）と同じか比べます。</li>
<li>同じなら先へ進みます。Chrome は「詳細設定」→「…にアクセスする（安全ではありません）」、Safari は「詳細を表示」→「このWebサイトを閲覧」、Firefox
は「詳細へ進む…」→「危険性を承知で続行」。ブラウザーが覚えるので、サーバーが同じ証明書を使う限り警告は二度と出ません。</li>
</ol>
<p>違っていたら進まないでください。あなたとサーバーの間の何かが、サーバーになりすまして応答しています。</p>
</section>
</html>
"#
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::tls::TlsMaterial;

    fn get(store: Option<&CertStore>, method: Method, host: &str, path: &str) -> Response {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        answer(store, &method, &headers, &path.parse().unwrap())
    }

    fn body(r: Response) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = rt
            .block_on(axum::body::to_bytes(r.into_body(), 1 << 20))
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn pages_explain_the_self_signed_certificate_and_the_rest_redirects() {
        let m = TlsMaterial::self_signed(vec!["localhost".into()]).unwrap();
        let store = CertStore::new(&m, "self-signed").unwrap();
        let r = get(
            Some(&store),
            Method::GET,
            "198.51.100.2:8080",
            "/r/team?x=1",
        );
        assert_eq!(r.status(), StatusCode::OK);
        let text = body(r);
        assert!(text.contains(m.fingerprint()), "{text}");
        assert!(text.contains("href=\"https://198.51.100.2:8080/r/team?x=1\""));
        assert!(text.contains("lang=\"ja\""));
        let r = get(Some(&store), Method::GET, "198.51.100.2:8080", "/api/stats");
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(
            r.headers()[header::LOCATION],
            "https://198.51.100.2:8080/api/stats"
        );
        let r = get(Some(&store), Method::POST, "h:1", "/");
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
    }

    /// HTTP-01: the pending token's key authorization, whatever the host; anything
    /// else under the path is a 404, never a redirect to https.
    #[test]
    fn acme_http_01_is_answered_before_any_redirect() {
        use tower::ServiceExt;
        let m = TlsMaterial::self_signed(vec!["localhost".into()]).unwrap();
        let store = CertStore::new(&m, "acme").unwrap();
        assert!(store.add_http_challenge("tok_-1", "tok_-1.thumbprint"));
        let ask = |path: &str| {
            let req = axum::http::Request::get(path)
                .header(header::HOST, "turn.example.com")
                .body(axum::body::Body::empty())
                .unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(router(Some(store.clone())).oneshot(req))
                .unwrap()
        };
        let r = ask("/.well-known/acme-challenge/tok_-1");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(body(r), "tok_-1.thumbprint");
        let r = ask("/.well-known/acme-challenge/other");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        store.remove_http_challenge("tok_-1");
        let r = ask("/.well-known/acme-challenge/tok_-1");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = ask("/r/team");
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        let r = router(None);
        let req = axum::http::Request::get("/.well-known/acme-challenge/x")
            .header(header::HOST, "h")
            .body(axum::body::Body::empty())
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(
            rt.block_on(r.oneshot(req)).unwrap().status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn a_trusted_certificate_redirects_and_a_bad_host_is_refused() {
        let m = TlsMaterial::self_signed(vec!["localhost".into()]).unwrap();
        let store = CertStore::new(&m, "files").unwrap();
        let r = get(Some(&store), Method::GET, "turn.example.com", "/");
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(r.headers()[header::LOCATION], "https://turn.example.com/");
        let r = get(Some(&store), Method::GET, "a\"b", "/");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
