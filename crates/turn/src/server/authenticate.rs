//! Authentication of requests (RFC 8489 §9.2 long-term credentials, RFC 8656 REST
//! credentials): nonces, realms, password algorithms, MESSAGE-INTEGRITY(-SHA256).

use super::*;

/// The result of a successful authentication.
#[derive(Debug)]
pub(super) struct Authed {
    pub(super) username: String,
    pub(super) key: IntegrityKey,
    pub(super) sha256: bool,
}

/// The PASSWORD-ALGORITHMS value the server offers, SHA-256 first (RFC 8489 §14.11).
pub(super) fn offered_password_algorithm_codes() -> [u16; 2] {
    [
        PasswordAlgorithm::Sha256.code(),
        PasswordAlgorithm::Md5.code(),
    ]
}

pub(super) fn offered_password_algorithms() -> &'static [u8] {
    &[0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00]
}

/// MESSAGE-INTEGRITY(-SHA256) matching the request's, then FINGERPRINT if the request had one.
pub(super) fn finish_auth(
    enc: &mut MessageEncoder<'_>,
    auth: &Authed,
    fingerprint: bool,
) -> Result<(), tsunagi_stun::EncodeError> {
    if auth.sha256 {
        enc.message_integrity_sha256(&auth.key)?;
    } else {
        enc.message_integrity(&auth.key)?;
    }
    if fingerprint {
        enc.fingerprint()?;
    }
    Ok(())
}

impl Server {
    // ---------------------------------------------------------- authentication

    pub(super) fn with_auth(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        msg: &Message<'_>,
        f: impl FnOnce(&mut Self, &Authed) -> Result<Vec<u8>, Reject>,
    ) {
        match self.authenticate(now, ft, msg) {
            Ok(auth) => match f(self, &auth) {
                Ok(resp) => self.queue_to_client(ft, resp),
                Err(rej) => self.respond_error(ft, msg, rej, Some(&auth)),
            },
            Err(rej) => {
                if rej.code == 401 && msg.has_message_integrity() {
                    self.stats.auth_failures += 1;
                }
                self.respond_error(ft, msg, rej, None)
            }
        }
    }

    /// RFC 8489 §9.2.4 with the stateless nonce of `nonce.rs`.
    pub(super) fn authenticate(
        &mut self,
        now: Instant,
        ft: FiveTuple,
        msg: &Message<'_>,
    ) -> Result<Authed, Reject> {
        if !msg.has_message_integrity() {
            return Err(Reject::challenge(
                401,
                "Unauthorized: authenticate with the long-term credentials of this realm",
            ));
        }
        let username = match (msg.get_str(attr::USERNAME), msg.get(attr::USERHASH)) {
            (Ok(Some(u)), _) => Some(u.to_owned()),
            (Ok(None), Some(h)) => {
                let h: Option<[u8; 32]> = h.try_into().ok();
                match h.and_then(|h| {
                    self.config
                        .credentials
                        .username_for_hash(&h, &self.config.realm)
                }) {
                    Some(u) => Some(u.to_owned()),
                    None => {
                        return Err(Reject::challenge(
                            401,
                            "Unauthorized: unknown USERHASH; send USERNAME instead",
                        ));
                    }
                }
            }
            (Err(_), _) => {
                return Err(Reject::new(400, "Bad Request: USERNAME is not valid UTF-8"))
            }
            (Ok(None), None) => None,
        };
        let realm = msg.get(attr::REALM);
        let nonce = msg.get(attr::NONCE);
        let (Some(username), Some(realm), Some(nonce)) = (username, realm, nonce) else {
            return Err(Reject::new(
                400,
                "Bad Request: MESSAGE-INTEGRITY needs USERNAME, REALM and NONCE",
            ));
        };
        if username.len() > attr::MAX_USERNAME_BYTES {
            return Err(Reject::new(
                400,
                "Bad Request: USERNAME longer than 513 bytes",
            ));
        }
        // PASSWORD-ALGORITHMS must echo ours when the nonce offered them (§9.2.4 item 4).
        let mut alg = PasswordAlgorithm::Md5;
        let pw_algs = msg.get(attr::PASSWORD_ALGORITHMS);
        let pw_alg = msg.get(attr::PASSWORD_ALGORITHM);
        if nonce::offers_password_algorithms(nonce) {
            match (pw_algs, pw_alg) {
                (None, None) => {}
                (Some(list), Some(chosen)) => {
                    if list != offered_password_algorithms() {
                        return Err(Reject::new(
                            400,
                            "Bad Request: PASSWORD-ALGORITHMS differs from the server's list",
                        ));
                    }
                    let chosen = attr::decode_password_algorithm(chosen)
                        .ok()
                        .and_then(|(c, _)| PasswordAlgorithm::from_code(c));
                    match chosen {
                        Some(a) => alg = a,
                        None => {
                            return Err(Reject::new(
                                400,
                                "Bad Request: PASSWORD-ALGORITHM is not one the server offered",
                            ))
                        }
                    }
                }
                _ => {
                    return Err(Reject::new(
                        400,
                        "Bad Request: send PASSWORD-ALGORITHMS and PASSWORD-ALGORITHM together",
                    ))
                }
            }
        }
        if realm != self.config.realm.as_bytes() {
            return Err(Reject::challenge(
                401,
                "Unauthorized: wrong REALM; use the realm of this challenge",
            ));
        }
        let unix_now = self.unix_now(now);
        match nonce::check(&self.config.nonce_key, nonce, unix_now, ft.client.ip()) {
            NonceCheck::Valid => {}
            NonceCheck::Stale | NonceCheck::Invalid => {
                return Err(Reject::challenge(
                    438,
                    "Stale Nonce: retry with the NONCE in this response",
                ));
            }
        }
        let keys = match self
            .config
            .credentials
            .keys(&username, &self.config.realm, alg, unix_now)
        {
            Ok(k) => k,
            Err(e) => {
                let (why, phrase) = match e {
                    AuthError::Expired => (
                        "REST credential expired",
                        "Unauthorized: the time-limited credential has expired; fetch a new one",
                    ),
                    AuthError::AlgorithmUnavailable => (
                        "password algorithm unavailable",
                        "Unauthorized: this user has no key for the chosen PASSWORD-ALGORITHM",
                    ),
                    _ => ("unknown user", "Unauthorized: wrong username or password"),
                };
                self.event(Event::AuthFailed {
                    five_tuple: ft,
                    username: username.clone(),
                    reason: why,
                });
                return Err(Reject::challenge(401, phrase));
            }
        };
        for key in keys {
            if msg.verify_integrity(&key).is_ok() {
                return Ok(Authed {
                    username,
                    key,
                    sha256: msg.has_message_integrity_sha256(),
                });
            }
        }
        self.event(Event::AuthFailed {
            five_tuple: ft,
            username,
            reason: "wrong password",
        });
        Err(Reject::challenge(
            401,
            "Unauthorized: wrong username or password",
        ))
    }

    pub(super) fn unix_now_for_nonce(&self) -> u64 {
        self.unix_now(self.clock) + self.config.nonce_lifetime.as_secs()
    }
}
