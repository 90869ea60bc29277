//! What failed in an order, and what to fix ([`Failure`]): from the CA's problem
//! documents (RFC 8555 §6.7) and from requests that got no answer, a text for the log
//! and `/healthz` that names the domain, the CA's reason and what to change.

use instant_acme::{Error, Problem};

use super::http::{Failed, RequestError, REQUEST_TIMEOUT};
use super::issue::{Ctx, POLL_TIMEOUT};
use crate::config::AcmeChallenge;

/// Why an order failed: what and what to do, for the log and `/healthz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub text: String,
    /// The CA said to slow down (`rateLimited`): the next attempt waits longer.
    pub rate_limited: bool,
}

impl Failure {
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            rate_limited: false,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// The step an error happened in, for its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Directory,
    Account,
    Order,
    Challenge,
    Validation,
    Finalize,
    Download,
}

impl Step {
    pub fn doing(self) -> &'static str {
        match self {
            Self::Directory => "reading the ACME directory",
            Self::Account => "registering the ACME account",
            Self::Order => "ordering the certificate",
            Self::Challenge => "starting the validation",
            Self::Validation => "waiting for the validation",
            Self::Finalize => "sending the certificate request",
            Self::Download => "downloading the certificate",
        }
    }
}

/// The type of an ACME problem without its URN prefix (RFC 8555 §6.7).
pub fn problem_type(p: &Problem) -> Option<&str> {
    p.r#type
        .as_deref()
        .map(|t| t.strip_prefix("urn:ietf:params:acme:error:").unwrap_or(t))
}

fn detail(p: &Problem) -> String {
    let mut d = p.detail.clone().unwrap_or_else(|| "no detail".into());
    for s in &p.subproblems {
        if let Some(sd) = &s.detail {
            d.push_str("; ");
            d.push_str(sd);
        }
    }
    d
}

/// A challenge the CA could not validate for `domain`.
pub fn validation(ctx: &Ctx<'_>, domain: &str, p: &Problem) -> Failure {
    let kind = problem_type(p).unwrap_or("unknown");
    let challenge = ctx.config.challenge;
    let port = challenge.port();
    let ports = ctx
        .front_ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(" and ");
    let fix = match kind {
        "dns" => format!(
            "check that {domain} has an A (or AAAA) record with this server's public address"
        ),
        "caa" => format!(
            "the CAA records of {domain} do not allow this CA; add one that does (e.g. `0 issue \"letsencrypt.org\"`) or remove them"
        ),
        "rateLimited" => {
            return rate_limited(ctx, p);
        }
        _ => match challenge {
            AcmeChallenge::TlsAlpn01 => format!(
                "check that {domain} resolves to this server and that TCP port {port} there reaches tsunagi (it listens on {ports}: set http-port {port}, or forward port {port} to it), with no other TLS server or proxy answering port {port} first; or set acme-challenge http-01 to validate on port 80"
            ),
            AcmeChallenge::Http01 => format!(
                "check that {domain} resolves to this server and that TCP port {port} there reaches tsunagi (it listens on {ports}: e.g. http-port {port} with tls-listening-port 443, or forward port {port} to it), with nothing else answering port {port}; or set acme-challenge tls-alpn-01 to validate on port 443"
            ),
        },
    };
    Failure::new(format!(
        "the CA could not validate {domain} by {challenge} ({kind}: {}); {fix}",
        detail(p)
    ))
}

fn rate_limited(ctx: &Ctx<'_>, p: &Problem) -> Failure {
    Failure {
        text: format!(
            "the CA rate-limited the certificate for {} ({}); tsunagi waits at least an hour before it asks again (see the CA's rate limits, e.g. letsencrypt.org/docs/rate-limits)",
            ctx.config.domains.join(", "),
            detail(p)
        ),
        rate_limited: true,
    }
}

/// An error of `step` as a [`Failure`].
pub fn classify(ctx: &Ctx<'_>, step: Step, e: Error) -> Failure {
    let directory = &ctx.config.directory;
    let doing = step.doing();
    match e {
        Error::Api(p) => match problem_type(&p) {
            Some("rateLimited") => rate_limited(ctx, &p),
            Some("rejectedIdentifier" | "malformed" | "caa") if step == Step::Order => Failure::new(format!(
                "the CA refuses to issue for {} ({}); check acme-domain: only public DNS names that point to this server",
                ctx.config.domains.join(", "),
                detail(&p)
            )),
            Some("invalidContact" | "unsupportedContact") => Failure::new(format!(
                "the CA refuses the contact {} ({}); fix acme-email or leave it out",
                ctx.config.email.as_deref().unwrap_or("(none)"),
                detail(&p)
            )),
            Some("externalAccountRequired") => Failure::new(format!(
                "the CA at {directory} requires an external account binding, which tsunagi does not provide; use a CA without one (such as Let's Encrypt)"
            )),
            Some("userActionRequired" | "agreementRequired") => Failure::new(format!(
                "the CA at {directory} needs an action of the account holder: {}; follow the CA's instructions, then send SIGHUP",
                detail(&p)
            )),
            Some(t) => Failure::new(format!(
                "the CA answered an error while {doing} ({t}: {}); tsunagi tries again",
                detail(&p)
            )),
            None => Failure::new(format!(
                "the CA answered an error while {doing}: {}; tsunagi tries again",
                detail(&p)
            )),
        },
        Error::Other(boxed) => match boxed.downcast_ref::<RequestError>() {
            Some(r) => request_failure(ctx, step, r),
            None => Failure::new(format!("{doing} at {directory} failed: {boxed}; tsunagi tries again")),
        },
        Error::Json(j) if step == Step::Directory || step == Step::Account => Failure::new(format!(
            "{directory} did not answer as an ACME directory ({j}); check acme-directory (Let's Encrypt's is {})",
            crate::config::defaults::ACME_DIRECTORY
        )),
        Error::Timeout(_) => Failure::new(format!(
            "the CA did not finish within {} s while {doing}; tsunagi tries again",
            POLL_TIMEOUT.as_secs()
        )),
        other => Failure::new(format!("{doing} at {directory} failed: {other}; tsunagi tries again")),
    }
}

fn request_failure(ctx: &Ctx<'_>, step: Step, r: &RequestError) -> Failure {
    let directory = &ctx.config.directory;
    let doing = step.doing();
    Failure::new(match r.failed {
        Failed::Resolve => format!(
            "cannot find the ACME CA while {doing}: {}; check acme-directory ({directory}) and this host's DNS resolver",
            r.detail
        ),
        Failed::Connect => format!(
            "cannot reach the ACME CA while {doing}: {} ({}); check acme-directory ({directory}) and that this host may open HTTPS connections to it (firewall, proxy)",
            r.detail, r.url
        ),
        Failed::Tls => format!(
            "the ACME CA at {} failed the TLS check while {doing} ({}); for a private CA give its root with acme-ca-root, else check the system's root certificates (package ca-certificates)",
            r.url, r.detail
        ),
        Failed::Timeout => format!(
            "the ACME CA at {} did not answer within {} s while {doing}; check the network to the CA and its status page",
            r.url,
            REQUEST_TIMEOUT.as_secs()
        ),
        Failed::Http => format!(
            "the ACME CA at {} broke off while {doing} ({}); check acme-directory ({directory})",
            r.url, r.detail
        ),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::AcmeConfig;
    use crate::tls::acme::http::Https;
    use crate::tls::{CertStore, TlsMaterial};

    fn problem(kind: &str, detail: &str) -> Problem {
        serde_json::from_value(serde_json::json!({
            "type": format!("urn:ietf:params:acme:error:{kind}"),
            "detail": detail,
            "status": 400,
        }))
        .unwrap()
    }

    /// Every failure says what failed and what to change, by what the CA or the
    /// network said.
    #[test]
    fn failures_say_what_to_fix() {
        let m = TlsMaterial::self_signed(vec!["localhost".into()]).unwrap();
        let store = CertStore::new(&m, "self-signed").unwrap();
        let https = Https::new(rustls::RootCertStore::empty()).unwrap();
        let config = AcmeConfig {
            domains: vec!["turn.example.com".into()],
            email: Some("admin@example.com".into()),
            directory: "https://ca.example/dir".into(),
            ca_root: None,
            challenge: AcmeChallenge::TlsAlpn01,
        };
        let dir = std::env::temp_dir();
        let ports = [8443, 5349];
        let ctx = Ctx {
            config: &config,
            dir: &dir,
            store: &store,
            https: &https,
            front_ports: &ports,
        };
        let has = |f: &Failure, parts: &[&str]| {
            for p in parts {
                assert!(f.text.contains(p), "{p}: {}", f.text);
            }
        };

        let f = classify(
            &ctx,
            Step::Order,
            Error::Api(problem(
                "rateLimited",
                "too many certificates (5) already issued",
            )),
        );
        assert!(f.rate_limited);
        has(
            &f,
            &[
                "rate-limited",
                "turn.example.com",
                "too many certificates",
                "an hour",
            ],
        );
        let f = classify(
            &ctx,
            Step::Order,
            Error::Api(problem("rejectedIdentifier", "forbidden name")),
        );
        has(
            &f,
            &[
                "refuses to issue for turn.example.com",
                "forbidden name",
                "check acme-domain",
            ],
        );
        let f = classify(
            &ctx,
            Step::Account,
            Error::Api(problem("invalidContact", "bad domain")),
        );
        has(&f, &["admin@example.com", "acme-email"]);
        let f = classify(
            &ctx,
            Step::Account,
            Error::Api(problem("externalAccountRequired", "")),
        );
        has(&f, &["external account binding"]);
        let f = classify(
            &ctx,
            Step::Finalize,
            Error::Api(problem("serverInternal", "oops")),
        );
        has(
            &f,
            &[
                "sending the certificate request",
                "serverInternal: oops",
                "tries again",
            ],
        );
        assert!(!f.rate_limited);

        let f = validation(
            &ctx,
            "turn.example.com",
            &problem("dns", "NXDOMAIN looking up A"),
        );
        has(&f, &["by TLS-ALPN-01", "NXDOMAIN", "A (or AAAA) record"]);
        let f = validation(
            &ctx,
            "turn.example.com",
            &problem("connection", "Timeout during connect"),
        );
        has(
            &f,
            &[
                "TCP port 443",
                "8443 and 5349",
                "http-port 443",
                "acme-challenge http-01",
            ],
        );
        let f = validation(
            &ctx,
            "turn.example.com",
            &problem("caa", "CAA record forbids"),
        );
        has(&f, &["CAA records of turn.example.com"]);

        let request = |failed: Failed, detail: &str| {
            Error::Other(Box::new(RequestError {
                url: "https://ca.example/dir".into(),
                failed,
                detail: detail.into(),
            }))
        };
        let f = classify(
            &ctx,
            Step::Directory,
            request(Failed::Resolve, "cannot resolve ca.example"),
        );
        has(
            &f,
            &["cannot find the ACME CA", "acme-directory", "DNS resolver"],
        );
        let f = classify(
            &ctx,
            Step::Directory,
            request(Failed::Connect, "Connection refused"),
        );
        has(
            &f,
            &["cannot reach the ACME CA", "Connection refused", "firewall"],
        );
        let f = classify(
            &ctx,
            Step::Directory,
            request(Failed::Tls, "invalid peer certificate: UnknownIssuer"),
        );
        has(
            &f,
            &[
                "TLS check",
                "UnknownIssuer",
                "acme-ca-root",
                "ca-certificates",
            ],
        );
        let f = classify(&ctx, Step::Download, request(Failed::Timeout, "no answer"));
        has(
            &f,
            &["did not answer within 30 s", "downloading the certificate"],
        );
        let f = classify(
            &ctx,
            Step::Directory,
            Error::Json(serde_json::from_str::<u8>("x").unwrap_err()),
        );
        has(
            &f,
            &["did not answer as an ACME directory", "acme-directory"],
        );

        let http01 = AcmeConfig {
            challenge: AcmeChallenge::Http01,
            ..config.clone()
        };
        let ctx = Ctx {
            config: &http01,
            ..ctx
        };
        let f = validation(&ctx, "turn.example.com", &problem("unauthorized", "404"));
        has(
            &f,
            &[
                "by HTTP-01",
                "TCP port 80",
                "http-port 80 with tls-listening-port 443",
                "acme-challenge tls-alpn-01",
            ],
        );
    }
}
