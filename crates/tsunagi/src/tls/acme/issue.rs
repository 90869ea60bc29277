//! One certificate order (RFC 8555 §7.4): the account, an order for every name, a
//! challenge answered per name, the certificate request and the download. Any failure
//! comes back as a [`Failure`] that says what failed and what to fix ([`super::failure`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Error, Identifier, NewAccount, NewOrder, Order,
    OrderStatus, RetryPolicy,
};
use rcgen::{CertificateParams, CustomExtension, DistinguishedName, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use tracing::{debug, info, warn};

use super::failure::{classify, problem_type, validation, Failure, Step};
use super::http::Https;
use super::stored;
use crate::config::{AcmeChallenge, AcmeConfig};
use crate::tls::{provider, CertStore, TlsMaterial};

/// Longest wait for the CA to validate the challenges, and again to issue.
pub const POLL_TIMEOUT: Duration = Duration::from_secs(90);

/// What an order needs.
#[derive(Debug)]
pub struct Ctx<'a> {
    pub config: &'a AcmeConfig,
    /// `data-dir/acme`.
    pub dir: &'a Path,
    pub store: &'a CertStore,
    pub https: &'a Https,
    /// The ports tsunagi's front listens on (for the hints of validation failures).
    pub front_ports: &'a [u16],
}

/// Orders a certificate for every configured name and returns it (not installed).
pub async fn order(ctx: &Ctx<'_>) -> Result<TlsMaterial, Failure> {
    let domains = &ctx.config.domains;
    let identifiers: Vec<Identifier> = domains.iter().cloned().map(Identifier::Dns).collect();
    let account = account(ctx).await?;
    let mut order = match account.new_order(&NewOrder::new(&identifiers)).await {
        Err(Error::Api(p)) if problem_type(&p) == Some("accountDoesNotExist") => {
            warn!(directory = %ctx.config.directory, "the CA no longer knows the kept ACME account; registering a new one");
            stored::forget_account(ctx.dir, &ctx.config.directory);
            let account = account_new(ctx).await?;
            account.new_order(&NewOrder::new(&identifiers)).await
        }
        other => other,
    }
    .map_err(|e| classify(ctx, Step::Order, e))?;
    debug!(url = order.url(), "ACME order created");

    // Answers stay up until the order is ready or failed; dropping them (also when this
    // future is dropped) takes them down.
    let mut answers = Answers::new(ctx.store);
    let kind = match ctx.config.challenge {
        AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        AcmeChallenge::Http01 => ChallengeType::Http01,
    };
    let mut authorizations = order.authorizations();
    while let Some(next) = authorizations.next().await {
        let mut authz = next.map_err(|e| classify(ctx, Step::Order, e))?;
        let domain = authz.identifier().to_string();
        match authz.status {
            AuthorizationStatus::Valid => {
                debug!(%domain, "ACME authorization still valid");
                continue;
            }
            AuthorizationStatus::Pending => {}
            other => {
                return Err(Failure::new(format!(
                    "the CA's authorization for {domain} is {other:?}, not pending; tsunagi orders again at the next attempt"
                )));
            }
        }
        let Some(mut challenge) = authz.challenge(kind.clone()) else {
            return Err(Failure::new(format!(
                "the CA offers no {} challenge for {domain}; set acme-challenge to the other kind ({})",
                ctx.config.challenge,
                match ctx.config.challenge {
                    AcmeChallenge::TlsAlpn01 => "http-01",
                    AcmeChallenge::Http01 => "tls-alpn-01",
                }
            )));
        };
        let key_authorization = challenge.key_authorization();
        match ctx.config.challenge {
            AcmeChallenge::TlsAlpn01 => {
                answers.tls_alpn(&domain, key_authorization.digest().as_ref())?;
            }
            AcmeChallenge::Http01 => answers.http(&challenge.token, key_authorization.as_str())?,
        }
        challenge
            .set_ready()
            .await
            .map_err(|e| classify(ctx, Step::Challenge, e))?;
        debug!(%domain, challenge = %ctx.config.challenge, "ACME challenge ready");
    }

    let policy = RetryPolicy::new()
        .initial_delay(Duration::from_millis(500))
        .backoff(1.5)
        .timeout(POLL_TIMEOUT);
    let status = order.poll_ready(&policy).await;
    match status {
        Ok(OrderStatus::Ready) => {}
        Ok(_) | Err(Error::Api(_)) => return Err(validation_failure(ctx, &mut order).await),
        Err(e) => return Err(classify(ctx, Step::Validation, e)),
    }
    drop(answers);

    // A new key for every certificate (ECDSA P-256), never the account's.
    let key = KeyPair::generate()
        .map_err(|e| Failure::new(format!("cannot generate a certificate key: {e}")))?;
    let mut params = CertificateParams::new(domains.clone())
        .map_err(|e| Failure::new(format!("cannot make the certificate request: {e}")))?;
    params.distinguished_name = DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .map_err(|e| Failure::new(format!("cannot make the certificate request: {e}")))?;
    order
        .finalize_csr(csr.der())
        .await
        .map_err(|e| classify(ctx, Step::Finalize, e))?;
    let chain = order
        .poll_certificate(&policy)
        .await
        .map_err(|e| classify(ctx, Step::Download, e))?;
    let material = TlsMaterial::from_pem(
        chain.as_bytes(),
        stored::key_pem(&key.serialize_der()).as_bytes(),
    )
    .map_err(|e| {
        Failure::new(format!(
            "the certificate the CA issued cannot be served ({e}); tsunagi orders again at the next attempt"
        ))
    })?;
    let missing: Vec<&str> = domains
        .iter()
        .filter(|d| !material.names().contains(d))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(Failure::new(format!(
            "the certificate the CA issued does not cover {}; tsunagi orders again at the next attempt",
            missing.join(", ")
        )));
    }
    Ok(material)
}

/// The account kept for the directory, else a new one (kept for next time).
async fn account(ctx: &Ctx<'_>) -> Result<Account, Failure> {
    let contact = contact(ctx.config);
    match stored::load_account(ctx.dir, &ctx.config.directory) {
        Ok(Some(kept)) => {
            let account = Account::builder_with_http(Box::new(ctx.https.clone()))
                .from_credentials(kept.credentials)
                .await
                .map_err(|e| classify(ctx, Step::Directory, e))?;
            if kept.contact != contact {
                let refs: Vec<&str> = contact.iter().map(String::as_str).collect();
                account
                    .update_contacts(&refs)
                    .await
                    .map_err(|e| classify(ctx, Step::Account, e))?;
                info!(contact = %contact.join(", "), "ACME account contact updated");
                if let Err(e) = stored::set_contact(ctx.dir, &ctx.config.directory, &contact) {
                    warn!(error = %e, "cannot keep the ACME account's new contact");
                }
            }
            return Ok(account);
        }
        Ok(None) => {}
        Err(why) => warn!(%why, "the kept ACME account cannot be used; registering a new one"),
    }
    account_new(ctx).await
}

/// Registers a new account (agreeing to the CA's terms of service, which using
/// `acme-domain` means) and keeps it.
async fn account_new(ctx: &Ctx<'_>) -> Result<Account, Failure> {
    let contact = contact(ctx.config);
    let refs: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = Account::builder_with_http(Box::new(ctx.https.clone()))
        .create(
            &NewAccount {
                contact: &refs,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            ctx.config.directory.clone(),
            None,
        )
        .await
        .map_err(|e| classify(ctx, Step::Account, e))?;
    match stored::save_account(ctx.dir, &ctx.config.directory, &contact, credentials) {
        Ok(path) => info!(
            directory = %ctx.config.directory,
            id = account.id(),
            file = %path.display(),
            "registered an ACME account"
        ),
        Err(e) => warn!(
            directory = %ctx.config.directory,
            error = %e,
            "registered an ACME account, but cannot keep it in data-dir; the next start registers another"
        ),
    }
    Ok(account)
}

fn contact(config: &AcmeConfig) -> Vec<String> {
    config.email.iter().map(|e| format!("mailto:{e}")).collect()
}

/// The challenge answers of one order, taken down when dropped.
struct Answers<'a> {
    store: &'a CertStore,
    names: Vec<String>,
    tokens: Vec<String>,
}

impl<'a> Answers<'a> {
    fn new(store: &'a CertStore) -> Self {
        Self {
            store,
            names: Vec::new(),
            tokens: Vec::new(),
        }
    }

    /// TLS-ALPN-01 (RFC 8737 §3): a self-signed certificate for `domain` with the
    /// critical acmeIdentifier extension holding SHA-256 of the key authorization.
    fn tls_alpn(&mut self, domain: &str, digest: &[u8]) -> Result<(), Failure> {
        let fail = |e: &dyn std::fmt::Display| {
            Failure::new(format!(
                "cannot make the TLS-ALPN-01 certificate for {domain}: {e}"
            ))
        };
        let mut params = CertificateParams::new(vec![domain.to_owned()]).map_err(|e| fail(&e))?;
        // SHA-256 digests are 32 bytes, what rcgen expects.
        params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest)];
        let key = KeyPair::generate().map_err(|e| fail(&e))?;
        let cert = params.self_signed(&key).map_err(|e| fail(&e))?;
        // `CertifiedKey::new`, not `from_der`: the latter parses the certificate with
        // webpki, which refuses the critical acmeIdentifier extension it does not know.
        let signing_key = provider()
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                key.serialize_der(),
            )))
            .map_err(|e| fail(&e))?;
        let certified = CertifiedKey::new(vec![cert.der().clone()], signing_key);
        if !self.store.add_challenge(domain, Arc::new(certified)) {
            return Err(Failure::new(
                "too many TLS-ALPN-01 challenges pending at once; tsunagi tries again later",
            ));
        }
        self.names.push(domain.to_owned());
        Ok(())
    }

    /// HTTP-01 (RFC 8555 §8.3): the key authorization at the token's path.
    fn http(&mut self, token: &str, key_authorization: &str) -> Result<(), Failure> {
        if !self.store.add_http_challenge(token, key_authorization) {
            return Err(Failure::new(
                "too many HTTP-01 challenges pending at once; tsunagi tries again later",
            ));
        }
        self.tokens.push(token.to_owned());
        Ok(())
    }
}

impl Drop for Answers<'_> {
    fn drop(&mut self) {
        for name in &self.names {
            self.store.remove_challenge(name);
        }
        for token in &self.tokens {
            self.store.remove_http_challenge(token);
        }
    }
}

/// Why the order did not become ready: the error of the first failed challenge, as
/// the CA saw it.
async fn validation_failure(ctx: &Ctx<'_>, order: &mut Order) -> Failure {
    let order_error = order.state().error.clone();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        let domain = authz.identifier().to_string();
        let Ok(state) = authz.refresh().await else {
            continue;
        };
        if state.status == AuthorizationStatus::Valid {
            continue;
        }
        let error = state
            .challenges
            .iter()
            .filter_map(|c| c.error.clone())
            .next();
        if let Some(problem) = error {
            return validation(ctx, &domain, &problem);
        }
    }
    match order_error {
        Some(p) => classify(ctx, Step::Validation, Error::Api(p)),
        None => Failure::new(format!(
            "the CA did not validate {} and gave no reason; tsunagi tries again",
            ctx.config.domains.join(", ")
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The answers of an order are up while it runs and gone when it ends, however
    /// it ends.
    #[test]
    fn answers_are_taken_down_when_dropped() {
        let m = TlsMaterial::self_signed(vec!["localhost".into()]).unwrap();
        let store = CertStore::new(&m, "self-signed").unwrap();
        {
            let mut answers = Answers::new(&store);
            answers.tls_alpn("turn.example.com", &[7; 32]).unwrap();
            answers.http("token-1", "token-1.thumbprint").unwrap();
            assert_eq!(
                store.http_challenge("token-1").as_deref(),
                Some("token-1.thumbprint")
            );
        }
        assert_eq!(store.http_challenge("token-1"), None);
        // The TLS-ALPN-01 certificate is gone too: the name can be added again up to
        // the limit, which a leaked one would have taken.
        for i in 0..crate::tls::store::MAX_CHALLENGES {
            assert!(store.add_challenge(&format!("n{i}.example.com"), m.certified_key().unwrap()));
        }
    }
}
