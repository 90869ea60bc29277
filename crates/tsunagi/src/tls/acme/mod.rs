//! Certificates from an ACME CA (RFC 8555: Let's Encrypt by default, or any other such
//! as ZeroSSL, step-ca or Pebble) for the `acme-domain` names, one certificate covering
//! them all, for HTTPS/WSS and TURN over TLS.
//!
//! - **At start** the certificate kept in `data-dir/acme/` ([`stored`]) serves when it
//!   has not expired and covers every name; otherwise the kept self-signed certificate
//!   serves while one is ordered.
//! - **An order** ([`issue`]) proves each name with TLS-ALPN-01 (RFC 8737; the
//!   [`CertStore`] answers `acme-tls/1` handshakes on every TLS port) or HTTP-01 (every
//!   front port answers `/.well-known/acme-challenge/` over plain HTTP), then installs
//!   the certificate: new connections get it at once, open ones keep theirs.
//! - **Renewal** when a third of the certificate's lifetime remains (30 days of Let's
//!   Encrypt's 90, 2 of a 6-day certificate), or at once when the names or the CA
//!   directory changed. SIGHUP checks at once.
//! - **A failure** leaves what serves in place, and says what failed and what to fix in
//!   the log (a warning naming the domains) and on `/healthz` (`certificate.problem`).
//!   The next attempt comes after [`FIRST_RETRY`], doubling up to [`LAST_RETRY`] (at
//!   least [`LAST_RETRY`] after a rate limit), or at once on SIGHUP; never a tight loop.
//! - **Bounded**: every request to the CA within [`http::REQUEST_TIMEOUT`], an attempt
//!   within [`ATTEMPT_TIMEOUT`], at most [`crate::tls::store::MAX_CHALLENGES`] answers
//!   pending.
//!
//! The HTTPS client ([`http`]) trusts the system's roots, or `acme-ca-root` instead.

pub mod failure;
pub mod http;
pub mod issue;
pub mod stored;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;
use tokio::sync::watch;
use tracing::{info, warn};
use tsunagi_net::stopped;

use super::setup::{log_self_signed, Keeper};
use super::{read_pem, self_signed_names, CertStore, TlsError, TlsMaterial};
use crate::config::{AcmeConfig, Config};
use crate::supervise::Component;
use failure::Failure;
use http::Https;

/// The first wait after a failed attempt; it doubles with each failure in a row.
pub const FIRST_RETRY: Duration = Duration::from_secs(60);
/// The longest wait between attempts, and the least after a rate limit.
pub const LAST_RETRY: Duration = Duration::from_secs(3600);
/// Longest one attempt may take, from the first request to the installed certificate.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest sleep before the schedule is looked at again (the wall clock may jump, a
/// laptop may sleep).
const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// Starts serving for `acme` (the kept certificate, or the self-signed one meanwhile)
/// and the task that orders and renews; must be called inside a tokio runtime.
pub fn start(
    config: &Config,
    acme: &AcmeConfig,
    keeper: Keeper,
) -> Result<Arc<CertStore>, TlsError> {
    let Some(data_dir) = config.data_dir.as_deref() else {
        return Err(TlsError(
            "acme-domain needs a data-dir to keep the ACME account and certificate; set data-dir"
                .into(),
        ));
    };
    let dir = data_dir.join(stored::ACME_DIR);
    let https = Https::new(roots(acme.ca_root.as_deref())?)?;
    let now = SystemTime::now();
    let (store, held) = match stored::load_certificate(&dir) {
        Ok(Some(kept)) if serves(&kept.material, &acme.domains, now) => {
            let held = Held::of(&kept.material, &kept.directory);
            info!(
                sha256 = %kept.material.fingerprint(),
                names = %kept.material.names().join(", "),
                not_after = %utc(held.not_after),
                renewal = %utc(Some(held.renew_at())),
                file = %kept.path.display(),
                "certificate from the ACME CA kept from an earlier run"
            );
            (CertStore::new(&kept.material, "acme")?, Some(held))
        }
        other => {
            let why = match other {
                Ok(Some(kept)) if kept.material.remaining(now) == Some(Duration::ZERO) => {
                    format!("the kept one expired at {}", utc(kept.material.not_after()))
                }
                Ok(Some(kept)) => format!(
                    "the kept one covers {}, none of the acme-domain names",
                    kept.material.names().join(", ")
                ),
                Ok(None) => "none kept yet".to_owned(),
                Err(why) => why,
            };
            let mut names = self_signed_names(config);
            names.extend(acme.domains.iter().cloned());
            let (m, kept) = TlsMaterial::self_signed_kept(Some(data_dir), names)?;
            log_self_signed(&m, kept, false);
            info!(
                domains = %acme.domains.join(", "),
                directory = %acme.directory,
                reason = %why,
                "no certificate from the ACME CA to serve: the self-signed one serves while one is ordered"
            );
            (CertStore::new(&m, "self-signed")?, None)
        }
    };
    let front_ports = front_ports(config);
    let port = acme.challenge.port();
    if !front_ports.contains(&port) {
        info!(
            challenge = %acme.challenge,
            ports = ?front_ports,
            "the ACME CA validates {} on port {port}, where tsunagi does not listen: forward port {port} to one of its ports, or {}",
            acme.domains.join(", "),
            match acme.challenge {
                crate::config::AcmeChallenge::TlsAlpn01 => "set http-port 443",
                crate::config::AcmeChallenge::Http01 => "set http-port 80 and tls-listening-port 443",
            }
        );
    }
    let renewer = Renewer {
        config: acme.clone(),
        dir,
        store: store.clone(),
        https,
        front_ports,
        held,
    };
    keeper.health.spawn(
        Component::Tls,
        "acme",
        renewer.run(keeper.hup, keeper.shutdown, keeper.front_ready),
    );
    Ok(store)
}

/// The roots the client trusts: `acme-ca-root`'s, else the system's.
fn roots(ca_root: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca_root {
        Some(path) => {
            let pem = read_pem(path, "acme-ca-root")?;
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    TlsError(format!(
                        "acme-ca-root {} is not valid PEM ({e}); give the CA's root certificate as PEM",
                        path.display()
                    ))
                })?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(TlsError(format!(
                    "acme-ca-root {} holds no usable CERTIFICATE block; give the CA's root certificate as PEM",
                    path.display()
                )));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                warn!(
                    errors = ?found.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "no root certificates found on this system, so the ACME CA cannot be trusted: install them (package ca-certificates), or set acme-ca-root"
                );
            }
        }
    }
    Ok(roots)
}

/// Whether a kept certificate may serve until a new one arrives: not expired, and
/// covering at least one name (a name added to `acme-domain` does not take the others'
/// certificate away while the new one is ordered).
fn serves(m: &TlsMaterial, domains: &[String], now: SystemTime) -> bool {
    m.remaining(now).is_some_and(|r| r > Duration::ZERO)
        && domains.iter().any(|d| m.names().contains(d))
}

/// The ports of tsunagi's front (HTTP and TURN-over-TLS listeners), where validations
/// are answered.
fn front_ports(config: &Config) -> Vec<u16> {
    let mut ports = vec![config.http_port];
    if config.turn_tls() && !config.one_tls_port() {
        ports.push(config.tls_listening_port);
    }
    ports
}

/// The certificate from the CA being served.
#[derive(Debug, Clone)]
struct Held {
    names: Vec<String>,
    directory: String,
    not_before: Option<SystemTime>,
    not_after: Option<SystemTime>,
}

impl Held {
    fn of(m: &TlsMaterial, directory: &str) -> Self {
        Self {
            names: m.names().to_vec(),
            directory: directory.to_owned(),
            not_before: m.not_before(),
            not_after: m.not_after(),
        }
    }

    fn renew_at(&self) -> SystemTime {
        renew_at(self.not_before, self.not_after)
    }

    /// Why it must be replaced now regardless of its age, if it must.
    fn mismatch(&self, config: &AcmeConfig) -> Option<&'static str> {
        if self.directory != config.directory {
            return Some("it is from another CA directory");
        }
        let mut have = self.names.clone();
        let mut want = config.domains.clone();
        have.sort();
        want.sort();
        (have != want).then_some("its names are not the acme-domain names")
    }
}

/// When a certificate valid from `not_before` to `not_after` is renewed: when a third
/// of its lifetime remains. Without a start, a 90-day lifetime is assumed; without an
/// end, now.
pub fn renew_at(not_before: Option<SystemTime>, not_after: Option<SystemTime>) -> SystemTime {
    const DEFAULT_LIFETIME: Duration = Duration::from_secs(90 * 86_400);
    let Some(end) = not_after else {
        return SystemTime::UNIX_EPOCH;
    };
    let lifetime = not_before
        .and_then(|start| end.duration_since(start).ok())
        .unwrap_or(DEFAULT_LIFETIME);
    end.checked_sub(lifetime / 3).unwrap_or(end)
}

/// The wait after `failures` failed attempts in a row.
pub fn backoff(failures: u32, rate_limited: bool) -> Duration {
    let doubled = FIRST_RETRY.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    let wait = doubled.min(LAST_RETRY);
    if rate_limited {
        wait.max(LAST_RETRY)
    } else {
        wait
    }
}

/// `t` as `2025-01-31 23:59:59 UTC`, or `unknown`.
pub fn utc(t: Option<SystemTime>) -> String {
    let Some(secs) = t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()) else {
        return "unknown".into();
    };
    let secs = secs.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `d` as `45 s`, `3 min`, `2 h`.
fn human(d: Duration) -> String {
    match d.as_secs() {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s => format!("{} h", s / 3600),
    }
}

/// What woke the renewer.
enum Woke {
    Due,
    Hup,
    Shutdown,
}

/// The task that orders and renews.
struct Renewer {
    config: AcmeConfig,
    dir: PathBuf,
    store: Arc<CertStore>,
    https: Https,
    front_ports: Vec<u16>,
    held: Option<Held>,
}

impl Renewer {
    async fn run(
        mut self,
        mut hup: watch::Receiver<u64>,
        mut shutdown: watch::Receiver<bool>,
        mut front_ready: watch::Receiver<bool>,
    ) {
        // The CA validates through the front ports: no order before they accept (a
        // closed sender means they never will; the attempt then says what failed).
        tokio::select! {
            _ = front_ready.wait_for(|up| *up) => {}
            _ = stopped(&mut shutdown) => return,
        }
        let mut failures = 0u32;
        let mut retry_at: Option<SystemTime> = None;
        loop {
            let due = self.due_at();
            let next = retry_at.map_or(due, |r| r.max(due));
            match wait_until(next, &mut hup, &mut shutdown).await {
                Woke::Shutdown => return,
                Woke::Hup if self.due_at() > SystemTime::now() => {
                    info!(
                        renewal = %utc(Some(self.due_at())),
                        "SIGHUP: the certificate from the ACME CA is current; nothing to order"
                    );
                    continue;
                }
                Woke::Hup => info!("SIGHUP: ordering the certificate from the ACME CA now"),
                Woke::Due => {}
            }
            let attempt = tokio::select! {
                r = self.attempt() => r,
                _ = stopped(&mut shutdown) => return,
            };
            match attempt {
                Ok(()) if self.due_at() <= SystemTime::now() => {
                    // Due again at once: the host's clock is far from the CA's (or the
                    // CA issues absurdly short certificates). Ordering again would not
                    // help and would run into the CA's limits.
                    failures = 0;
                    retry_at = Some(SystemTime::now() + LAST_RETRY);
                    self.clock_problem();
                }
                Ok(()) => {
                    failures = 0;
                    retry_at = None;
                }
                Err(f) => {
                    failures = failures.saturating_add(1);
                    let wait = backoff(failures, f.rate_limited);
                    retry_at = Some(SystemTime::now() + wait);
                    self.report(&f, wait);
                }
            }
        }
    }

    /// When the next order is due: now without a certificate from the CA (or one for
    /// other names or another CA), else its renewal time.
    fn due_at(&self) -> SystemTime {
        match &self.held {
            Some(h) if h.mismatch(&self.config).is_none() => h.renew_at(),
            _ => SystemTime::UNIX_EPOCH,
        }
    }

    /// One order, installed and kept when it succeeds.
    async fn attempt(&mut self) -> Result<(), Failure> {
        let reason = match &self.held {
            None => "none served yet",
            Some(h) => h.mismatch(&self.config).unwrap_or("renewal due"),
        };
        info!(
            domains = %self.config.domains.join(", "),
            directory = %self.config.directory,
            challenge = %self.config.challenge,
            %reason,
            "ordering a certificate from the ACME CA"
        );
        let ctx = issue::Ctx {
            config: &self.config,
            dir: &self.dir,
            store: &self.store,
            https: &self.https,
            front_ports: &self.front_ports,
        };
        let m = match tokio::time::timeout(ATTEMPT_TIMEOUT, issue::order(&ctx)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(Failure::new(format!(
                    "the order did not complete within {}; tsunagi tries again",
                    human(ATTEMPT_TIMEOUT)
                )))
            }
        };
        // Kept before it serves: whatever serves is on disk for the next start.
        let kept = stored::save_certificate(&self.dir, &self.config.directory, &m);
        self.store.install(&m, "acme").map_err(|e| {
            Failure::new(format!(
                "the certificate the CA issued cannot be served ({e}); tsunagi orders again"
            ))
        })?;
        let held = Held::of(&m, &self.config.directory);
        info!(
            sha256 = %m.fingerprint(),
            names = %m.names().join(", "),
            not_after = %utc(held.not_after),
            renewal = %utc(Some(held.renew_at())),
            "certificate from the ACME CA installed: new connections get it, open ones keep theirs"
        );
        self.held = Some(held);
        if let Err(e) = kept {
            let problem = format!(
                "the certificate from the CA serves, but cannot be kept in {}: {e}; fix the permissions or free space there, or the next start orders a new one",
                self.dir.display()
            );
            warn!(%problem, "ACME certificate not kept");
            self.store.set_problem(Some(problem));
        }
        Ok(())
    }

    /// Says that the certificate just installed is already due for renewal.
    fn clock_problem(&self) {
        let Some(h) = &self.held else {
            return;
        };
        let problem = format!(
            "the certificate the CA just issued for {} (valid from {} to {}) is already due for renewal by this host's clock ({}): check the system clock (NTP); it serves meanwhile, and tsunagi orders again in {}",
            self.config.domains.join(", "),
            utc(h.not_before),
            utc(h.not_after),
            utc(Some(SystemTime::now())),
            human(LAST_RETRY)
        );
        warn!(%problem, "ACME certificate due at once");
        self.store.set_problem(Some(problem));
    }

    /// Says what failed, what serves meanwhile and when the next attempt comes, in the
    /// log and on `/healthz`.
    fn report(&self, f: &Failure, wait: Duration) {
        let serving = match &self.held {
            Some(h) => format!(
                "The certificate from the CA keeps serving until it expires at {}",
                utc(h.not_after)
            ),
            None => "Meanwhile the self-signed certificate serves (browsers warn about it, TURN clients refuse it)".to_owned(),
        };
        let problem = format!(
            "ACME certificate for {} not obtained: {f}. {serving}; next attempt in {} (or at once on SIGHUP)",
            self.config.domains.join(", "),
            human(wait)
        );
        warn!(domains = %self.config.domains.join(", "), %problem, "ACME certificate not obtained");
        self.store.set_problem(Some(problem));
    }
}

/// Sleeps until `at` (in steps of at most [`MAX_SLEEP`]), SIGHUP or shutdown.
async fn wait_until(
    at: SystemTime,
    hup: &mut watch::Receiver<u64>,
    shutdown: &mut watch::Receiver<bool>,
) -> Woke {
    loop {
        let left = at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        if left.is_zero() {
            return Woke::Due;
        }
        tokio::select! {
            () = tokio::time::sleep(left.min(MAX_SLEEP)) => {}
            r = hup.changed() => {
                if r.is_err() {
                    // No more signals (the sender is gone): sleep on.
                    tokio::select! {
                        () = tokio::time::sleep(left.min(MAX_SLEEP)) => {}
                        _ = stopped(shutdown) => return Woke::Shutdown,
                    }
                } else {
                    return Woke::Hup;
                }
            }
            _ = stopped(shutdown) => return Woke::Shutdown,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// A third of the lifetime before the end: 30 days of 90, 2 of 6.
    #[test]
    fn renewal_comes_when_a_third_of_the_lifetime_remains() {
        let start = 1_700_000_000;
        assert_eq!(
            renew_at(Some(at(start)), Some(at(start + 90 * DAY))),
            at(start + 60 * DAY)
        );
        assert_eq!(
            renew_at(Some(at(start)), Some(at(start + 6 * DAY))),
            at(start + 4 * DAY)
        );
        assert_eq!(
            renew_at(Some(at(start)), Some(at(start + 30))),
            at(start + 20)
        );
        // No start: a 90-day certificate is assumed. No end: due now.
        assert_eq!(
            renew_at(None, Some(at(start + 90 * DAY))),
            at(start + 60 * DAY)
        );
        assert_eq!(renew_at(Some(at(start)), None), SystemTime::UNIX_EPOCH);
        // An end before the start (a broken certificate) does not panic.
        assert_eq!(
            renew_at(Some(at(start)), Some(at(start - 10))),
            at(start - 10 - 30 * DAY)
        );
    }

    #[test]
    fn retries_back_off_to_an_hour_and_a_rate_limit_waits_an_hour() {
        let mins: Vec<u64> = (1..=9).map(|n| backoff(n, false).as_secs() / 60).collect();
        assert_eq!(mins, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(u32::MAX, false), LAST_RETRY);
        assert_eq!(backoff(1, true), LAST_RETRY);
        assert_eq!(backoff(0, false), FIRST_RETRY);
    }

    #[test]
    fn times_are_written_in_utc() {
        assert_eq!(utc(Some(at(0))), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(Some(at(951_782_400))), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(Some(at(1_735_689_599))), "2024-12-31 23:59:59 UTC");
        assert_eq!(utc(None), "unknown");
        assert_eq!(human(Duration::from_secs(60)), "60 s");
        assert_eq!(human(Duration::from_secs(240)), "4 min");
        assert_eq!(human(Duration::from_secs(3600)), "60 min");
        assert_eq!(human(Duration::from_secs(7200)), "2 h");
    }

    #[test]
    fn a_held_certificate_is_replaced_when_the_names_or_the_ca_change() {
        let m =
            TlsMaterial::self_signed(vec!["b.example.com".into(), "a.example.com".into()]).unwrap();
        let config = AcmeConfig {
            domains: vec!["a.example.com".into(), "b.example.com".into()],
            email: None,
            directory: "https://ca.example/dir".into(),
            ca_root: None,
            challenge: Default::default(),
        };
        let held = Held::of(&m, "https://ca.example/dir");
        assert_eq!(
            held.mismatch(&config),
            None,
            "order of names does not matter"
        );
        let other_ca = Held::of(&m, "https://other.example/dir");
        assert!(other_ca.mismatch(&config).is_some());
        let mut fewer = config.clone();
        fewer.domains.pop();
        assert!(held.mismatch(&fewer).is_some());
        assert!(serves(&m, &fewer.domains, SystemTime::now()));
        // A name added: the kept certificate serves the others meanwhile.
        let mut more = config.domains.clone();
        more.push("c.example.com".to_owned());
        assert!(serves(&m, &more, SystemTime::now()));
        assert!(!serves(
            &m,
            &["c.example.com".to_owned()],
            SystemTime::now()
        ));
        // rcgen's certificates end in 4096.
        let far = at(5000 * 365 * DAY);
        assert!(!serves(&m, &config.domains, far), "expired");
    }
}
