//! The certificate at start, from the configured source, and the task that keeps it
//! current: one place that says where tsunagi's certificate comes from.

use std::sync::Arc;

use tokio::sync::watch;
use tracing::{info, warn};

use super::{reload, self_signed_names, CertStore, Kept, TlsError, TlsMaterial};
use crate::config::{Config, TlsSource};
use crate::supervise::{Component, Health};

/// What keeps the certificate current needs: SIGHUP's ticks, shutdown, where to report,
/// and when the front ports accept connections (an ACME CA validates through them, so
/// no order starts before).
#[derive(Debug, Clone)]
pub struct Keeper {
    pub hup: watch::Receiver<u64>,
    pub shutdown: watch::Receiver<bool>,
    pub health: Health,
    /// Becomes `true` once the HTTP and TLS listeners accept.
    pub front_ready: watch::Receiver<bool>,
}

/// The certificate store for `config` (`None` with `no-tls`), with the task that
/// reloads it started (must be called inside a tokio runtime).
pub fn start(config: &Config, keeper: Keeper) -> Result<Option<Arc<CertStore>>, TlsError> {
    let Some(source) = &config.tls else {
        return Ok(None);
    };
    let store = match source {
        TlsSource::Files { cert, key } => {
            let m = TlsMaterial::from_pem_files(cert, key)?;
            let store = CertStore::new(&m, "files")?;
            info!(
                sha256 = %m.fingerprint(),
                names = %m.names().join(", "),
                cert = %cert.display(),
                "TLS certificate from files (reloaded when they change, or on SIGHUP)"
            );
            keeper.health.spawn(
                Component::Tls,
                "tls file reload",
                reload::watch_files(
                    store.clone(),
                    cert.clone(),
                    key.clone(),
                    keeper.hup,
                    keeper.shutdown,
                ),
            );
            store
        }
        TlsSource::SelfSigned { .. } => {
            let (m, kept) = TlsMaterial::self_signed_kept(
                config.data_dir.as_deref(),
                self_signed_names(config),
            )?;
            log_self_signed(&m, kept, true);
            CertStore::new(&m, "self-signed")?
        }
        TlsSource::Acme(acme) => super::acme::start(config, acme, keeper)?,
    };
    Ok(Some(store))
}

/// Logs what became of the self-signed certificate; `hint` adds how to get one that
/// browsers trust (not while one is being ordered from an ACME CA).
pub(super) fn log_self_signed(m: &TlsMaterial, kept: Kept, hint: bool) {
    let names = m.names().join(", ");
    let sha256 = m.fingerprint();
    match kept {
        Kept::Written(path) if !hint => info!(
            %sha256, %names, file = %path.display(),
            "made a self-signed certificate for HTTPS, kept for later runs"
        ),
        Kept::Reused(path) => info!(
            %sha256, %names, file = %path.display(),
            "self-signed certificate kept from an earlier run (browsers that accepted it still do)"
        ),
        Kept::Written(path) => info!(
            %sha256, %names, file = %path.display(),
            "made a self-signed certificate for HTTPS, kept for later runs (browsers of other \
             devices warn until it is accepted once; use tls-cert and tls-key, or acme-domain, \
             for a public server)"
        ),
        Kept::Replaced(path, why) => warn!(
            %sha256, %names, file = %path.display(), replaced_because = %why,
            "made a new self-signed certificate (browsers warn again until it is accepted)"
        ),
        Kept::NotKept(why) => warn!(
            %sha256, %names, reason = %why,
            "made a self-signed certificate for this run only (browsers warn until it is \
             accepted, again after every restart)"
        ),
    }
}
