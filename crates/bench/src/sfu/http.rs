//! WHIP/WHEP over plain HTTP/1.1 for the load generator: the server's base URL, one
//! request and its response (chunked or not), the session's location.

use super::*;

// ---------------------------------------------------------------------------------------
// A minimal HTTP/1.1 client (Connection: close), enough for WHIP/WHEP.

#[derive(Debug, Clone)]
pub(crate) struct HttpBase {
    pub(crate) addr: SocketAddr,
    pub(crate) host: String,
    /// Path prefix of the base URL, without a trailing '/'.
    pub(crate) prefix: String,
}

#[derive(Debug)]
pub(crate) struct HttpResponse {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl HttpResponse {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub(crate) fn parse_base(url: &str) -> Result<HttpBase, BenchError> {
    let rest =
        match url.strip_prefix("http://") {
            Some(r) => r,
            None if url.starts_with("https://") => return err(
                "--http: only http:// is supported (run the server with plain HTTP on loopback)",
            ),
            None => return err(format!("--http must be an http:// URL, not {url:?}")),
        };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let with_port = if authority.starts_with('[') {
        if authority.contains("]:") {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        }
    } else if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| BenchError(format!("--http {url}: cannot resolve {authority}: {e}")))?
        .next()
        .ok_or_else(|| BenchError(format!("--http {url}: {authority} has no address")))?;
    Ok(HttpBase {
        addr,
        host: authority.to_owned(),
        prefix: path.trim_end_matches('/').to_owned(),
    })
}

impl HttpBase {
    pub(crate) fn request(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &str,
        token: Option<&str>,
    ) -> Result<HttpResponse, String> {
        let mut s = TcpStream::connect_timeout(&self.addr, HTTP_TIMEOUT)
            .map_err(|e| format!("cannot connect to {}: {e}", self.addr))?;
        let _ = s.set_read_timeout(Some(HTTP_TIMEOUT));
        let _ = s.set_write_timeout(Some(HTTP_TIMEOUT));
        let _ = s.set_nodelay(true);
        let mut req = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.prefix,
            self.host,
            body.len()
        );
        if let Some(ct) = content_type {
            req.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        if let Some(t) = token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes())
            .map_err(|e| format!("{method} {path}: sending: {e}"))?;
        let mut raw = Vec::new();
        s.take(MAX_HTTP_RESPONSE as u64 + 1)
            .read_to_end(&mut raw)
            .map_err(|e| format!("{method} {path}: reading the answer: {e}"))?;
        if raw.len() > MAX_HTTP_RESPONSE {
            return Err(format!("{method} {path}: answer larger than 1 MiB"));
        }
        parse_response(&raw).map_err(|e| format!("{method} {path}: {e}"))
    }
}

pub(crate) fn parse_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the answer is not HTTP (no end of headers)")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    });
    if chunked {
        body = dechunk(&body).ok_or("bad chunked body")?;
    } else if let Some(len) = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body.truncate(len);
    }
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

pub(crate) fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// A `Location` header as a path on the server (absolute URLs lose their origin).
pub(crate) fn location_path(loc: &str, prefix: &str) -> String {
    let path = if let Some(rest) = loc
        .strip_prefix("http://")
        .or_else(|| loc.strip_prefix("https://"))
    {
        rest.find('/').map_or("/", |i| &rest[i..])
    } else {
        loc
    };
    // Requests add the prefix again.
    path.strip_prefix(prefix)
        .filter(|p| p.starts_with('/'))
        .unwrap_or(path)
        .to_owned()
}

/// `/api/stats` `sfu.packetsOut`, when the server has one.
pub(crate) fn server_packets_out(base: &HttpBase) -> Option<u64> {
    let r = base.request("GET", "/api/stats", None, "", None).ok()?;
    if r.status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&r.body).ok()?;
    v.get("sfu")?.get("packetsOut")?.as_u64()
}
