//! Long-term credentials (RFC 8489 §9.2) configured the way coturn configures them:
//! static users (`user=name:password` or `user=name:0x<MD5 key>`) and the shared secrets
//! of the TURN REST API (`static-auth-secret`, draft-uberti-behave-turn-rest-00), where
//! the username is `<expiry unix seconds>:<user>` and the password is
//! `base64(HMAC-SHA1(secret, username))`.
//!
//! Unlike coturn, static users and REST secrets may be configured together: a username
//! that names a static user is that user; any other username is tried as a REST
//! credential. Names and passwords are not normalised with OpaqueString (RFC 8265), as
//! in coturn: clients must send them as configured.

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tsunagi_stun::{IntegrityKey, PasswordAlgorithm};

/// At most this many REST secrets; each costs one HMAC and one key derivation per
/// authentication attempt.
pub const MAX_SECRETS: usize = 8;

/// coturn's default `rest-api-separator`.
pub const DEFAULT_REST_SEPARATOR: char = ':';

#[derive(Clone)]
enum StaticKey {
    /// Kept in plain text: the SHA-256 key (RFC 8489 §18.5.1.2) cannot be derived from
    /// the MD5 one.
    Password(Box<str>),
    /// MD5(username ":" realm ":" password), as `turnadmin -k` prints; fixed to the realm
    /// it was made for.
    Md5Key([u8; 16]),
}

/// Static users and REST secrets. `Debug` shows only counts.
#[derive(Clone)]
pub struct Credentials {
    /// Looked up by attacker-chosen names. The crate takes no randomness of its own:
    /// the hasher has fixed seeds until a [`Server`](crate::Server) takes these
    /// credentials and keys it from its secret nonce key ([`Credentials::set_hasher`]).
    users: HashMap<Box<str>, StaticKey, ahash::RandomState>,
    /// In the order added; at most [`MAX_SECRETS`], none empty, no duplicates.
    secrets: Vec<Box<str>>,
    separator: char,
}

impl Default for Credentials {
    fn default() -> Self {
        Self {
            users: HashMap::with_hasher(ahash::RandomState::with_seeds(0, 0, 0, 0)),
            secrets: Vec::new(),
            separator: DEFAULT_REST_SEPARATOR,
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("users", &self.users.len())
            .field("secrets", &self.secrets.len())
            .field("rest_separator", &self.separator)
            .finish()
    }
}

/// Why [`Credentials::keys`] has no key for a username. The server answers all of them
/// with 401; the variants are for logs and metrics.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// Neither a static user nor, with secrets configured, a REST username.
    UnknownUser,
    /// A REST username whose expiry is in the past.
    Expired,
    /// A static user configured by MD5 key asked for with PASSWORD-ALGORITHM SHA-256.
    AlgorithmUnavailable,
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthError::UnknownUser => "unknown user",
            AuthError::Expired => "time-limited credential expired",
            AuthError::AlgorithmUnavailable => "no key for this password algorithm",
        })
    }
}

impl std::error::Error for AuthError {}

impl Credentials {
    /// Moves the static users into a map with `hasher`: the server's, keyed from its
    /// secret.
    pub(crate) fn set_hasher(&mut self, hasher: &ahash::RandomState) {
        let mut users = HashMap::with_capacity_and_hasher(self.users.len(), hasher.clone());
        users.extend(self.users.drain());
        self.users = users;
    }

    /// Adds (or replaces) a static user with a plain password.
    pub fn add_user(&mut self, name: &str, password: &str) {
        self.users
            .insert(name.into(), StaticKey::Password(password.into()));
    }

    /// Adds (or replaces) a static user by MD5 long-term key (coturn's
    /// `--user name:0x<32 hex digits>`). Such a user can only use PASSWORD-ALGORITHM MD5,
    /// and only in the realm the key was made for.
    pub fn add_user_key(&mut self, name: &str, md5_key: [u8; 16]) {
        self.users.insert(name.into(), StaticKey::Md5Key(md5_key));
    }

    /// Parses coturn's `name:password` or `name:0x<32 hex digits>` user spec. The name
    /// ends at the first ':'; blanks after it are skipped, as coturn does. Errors never
    /// quote the password.
    pub fn add_user_spec(&mut self, spec: &str) -> Result<(), String> {
        const FORM: &str = "expected name:password or name:0x<32 hex digits>";
        let Some((name, secret)) = spec.split_once(':') else {
            return Err(format!("user spec has no ':'; {FORM}"));
        };
        if name.is_empty() {
            return Err(format!("user spec has an empty name; {FORM}"));
        }
        let secret = secret.trim_start_matches([' ', '\t']);
        if secret.is_empty() {
            return Err(format!("user '{name}' has an empty password; {FORM}"));
        }
        match secret.strip_prefix("0x") {
            Some(hex) => {
                let key = parse_md5_hex(hex).ok_or_else(|| {
                    format!(
                        "user '{name}': the key after 0x must be exactly 32 hex digits \
                         (MD5 of name:realm:password, as turnadmin -k prints)"
                    )
                })?;
                self.add_user_key(name, key);
            }
            None => self.add_user(name, secret),
        }
        Ok(())
    }

    /// Adds a REST API shared secret (coturn `static-auth-secret`). Several may be set so
    /// that a secret can be rotated: credentials minted with any of them are accepted.
    /// Adding a secret that is already present does nothing.
    pub fn add_secret(&mut self, secret: &str) -> Result<(), String> {
        if secret.is_empty() {
            return Err("static-auth-secret is empty; use a long random string".to_owned());
        }
        if self.secrets.iter().any(|s| **s == *secret) {
            return Ok(());
        }
        if self.secrets.len() >= MAX_SECRETS {
            return Err(format!(
                "too many static-auth-secret values: at most {MAX_SECRETS}; remove retired ones"
            ));
        }
        self.secrets.push(secret.into());
        Ok(())
    }

    /// The first REST secret added: the one new credentials are minted with (the
    /// others stay accepted during a rotation).
    pub fn first_secret(&self) -> Option<&str> {
        self.secrets.first().map(|s| &**s)
    }

    /// Sets coturn's `rest-api-separator`, which splits the expiry from the user in a
    /// REST username (default ':').
    pub fn set_rest_separator(&mut self, separator: char) {
        self.separator = separator;
    }

    /// The separator of REST usernames.
    pub fn rest_separator(&self) -> char {
        self.separator
    }

    /// No users and no secrets.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.secrets.is_empty()
    }

    /// Number of static users.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// Number of REST secrets.
    pub fn secret_count(&self) -> usize {
        self.secrets.len()
    }

    /// Candidate keys for `username` in `realm` with `alg`, at unix time `unix_now`:
    /// the message integrity must verify with one of them.
    ///
    /// A static user gives its key. Otherwise, when secrets are configured, a REST
    /// username gives one key per secret, in the order the secrets were added: password
    /// `base64(HMAC-SHA1(secret, username))`, key the long-term key (RFC 8489 §9.2.2) of
    /// `(username, realm, password)` with `alg`. The expiry is read as coturn reads it
    /// (see [`rest_expiry`]); a credential is valid up to and including its expiry second.
    pub fn keys(
        &self,
        username: &str,
        realm: &str,
        alg: PasswordAlgorithm,
        unix_now: u64,
    ) -> Result<KeyCandidates, AuthError> {
        if let Some(k) = self.users.get(username) {
            let key = match (k, alg) {
                (StaticKey::Password(p), _) => IntegrityKey::long_term(alg, username, realm, p),
                (StaticKey::Md5Key(k), PasswordAlgorithm::Md5) => IntegrityKey::from_bytes(k),
                (StaticKey::Md5Key(_), PasswordAlgorithm::Sha256) => {
                    return Err(AuthError::AlgorithmUnavailable)
                }
            };
            let mut out = KeyCandidates::new();
            out.push(key);
            return Ok(out);
        }
        if self.secrets.is_empty() {
            return Err(AuthError::UnknownUser);
        }
        let expiry = rest_expiry(username, self.separator).ok_or(AuthError::UnknownUser)?;
        if expiry < unix_now {
            return Err(AuthError::Expired);
        }
        let mut out = KeyCandidates::new();
        for secret in &self.secrets {
            let password = rest_password(secret, username);
            out.push(IntegrityKey::long_term(alg, username, realm, &password));
        }
        Ok(out)
    }

    /// The static user whose USERHASH (RFC 8489 §14.4: SHA-256(username ":" realm)) is
    /// `userhash`. REST users cannot be found by hash. Costs one SHA-256 per static user.
    pub fn username_for_hash(&self, userhash: &[u8; 32], realm: &str) -> Option<&str> {
        self.users
            .keys()
            .find(|name| bool::from(userhash_of(name, realm).ct_eq(userhash)))
            .map(|name| &**name)
    }
}

/// SHA-256(username ":" realm), the USERHASH of RFC 8489 §14.4.
pub fn userhash(username: &str, realm: &str) -> [u8; 32] {
    userhash_of(username, realm)
}

fn userhash_of(username: &str, realm: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.finalize().into()
}

fn parse_md5_hex(hex: &str) -> Option<[u8; 16]> {
    let hex = hex.as_bytes();
    if hex.len() != 32 {
        return None;
    }
    let mut key = [0u8; 16];
    let digit = |c: &u8| char::from(*c).to_digit(16);
    for (byte, pair) in key.iter_mut().zip(hex.chunks_exact(2)) {
        let [hi, lo] = pair else { return None };
        *byte = u8::try_from((digit(hi)? << 4) | digit(lo)?).ok()?;
    }
    Some(key)
}

/// The expiry of a REST username, read exactly as coturn's `get_rest_api_timestamp`
/// reads it, with `sep` its `rest-api-separator`:
///
/// * `"<digits><sep>..."`: the digits before the first separator (the usual
///   `"<expiry>:<user>"`);
/// * `"<other><sep><digits>..."` or `"<sep><digits>..."`: the digits that start the text
///   after the first separator (the older `"<user>:<expiry>"` order);
/// * no separator: the digits that start the username (`"<expiry>"`).
///
/// `None` when there are no such digits (coturn reads 0 and refuses the credential as
/// expired) or they overflow `u64`. The HMAC covers the whole username, so only the
/// holder of a secret can choose the expiry.
pub fn rest_expiry(username: &str, sep: char) -> Option<u64> {
    fn leading_digits(s: &str) -> Option<u64> {
        let end = s
            .bytes()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(s.len());
        s.get(..end).filter(|d| !d.is_empty())?.parse().ok()
    }
    match username.split_once(sep) {
        Some((before, _)) if !before.is_empty() && before.bytes().all(|b| b.is_ascii_digit()) => {
            before.parse().ok()
        }
        Some((_, after)) => leading_digits(after),
        None => leading_digits(username),
    }
}

/// base64(HMAC-SHA1(secret, username)), the REST API password.
fn rest_password(secret: &str, username: &str) -> String {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Mints a REST credential like coturn's `use-auth-secret` clients do: username
/// `"<expiry>:<user>"` (or `"<expiry>"` if `user` is empty), password
/// `base64(HMAC-SHA1(secret, username))`. Returns `(username, password)`.
pub fn rest_credential(secret: &str, user: &str, expiry_unix: u64) -> (String, String) {
    let username = if user.is_empty() {
        expiry_unix.to_string()
    } else {
        format!("{expiry_unix}{DEFAULT_REST_SEPARATOR}{user}")
    };
    let password = rest_password(secret, &username);
    (username, password)
}

/// The keys a message may be signed with: one for a static user, one per secret for a
/// REST user. Inline, at most [`MAX_SECRETS`]. Iterating yields them by value.
#[derive(Debug, Clone)]
pub struct KeyCandidates {
    /// `keys[..len]` are candidates; `keys[next..len]` are not yet yielded.
    keys: [IntegrityKey; MAX_SECRETS],
    len: usize,
    next: usize,
}

impl KeyCandidates {
    fn new() -> Self {
        Self {
            keys: std::array::from_fn(|_| IntegrityKey::from_bytes(&[])),
            len: 0,
            next: 0,
        }
    }

    /// Ignored when full; callers never push more than [`MAX_SECRETS`].
    fn push(&mut self, key: IntegrityKey) {
        if let Some(slot) = self.keys.get_mut(self.len) {
            *slot = key;
            self.len += 1;
        }
    }

    /// The candidates not yet yielded.
    pub fn as_slice(&self) -> &[IntegrityKey] {
        self.keys.get(self.next..self.len).unwrap_or(&[])
    }

    /// Borrowing iterator over the candidates not yet yielded.
    pub fn iter(&self) -> std::slice::Iter<'_, IntegrityKey> {
        self.as_slice().iter()
    }
}

impl Iterator for KeyCandidates {
    type Item = IntegrityKey;

    fn next(&mut self) -> Option<IntegrityKey> {
        if self.next >= self.len {
            return None;
        }
        let slot = self.keys.get_mut(self.next)?;
        self.next += 1;
        Some(std::mem::replace(slot, IntegrityKey::from_bytes(&[])))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.len.saturating_sub(self.next);
        (n, Some(n))
    }
}

impl ExactSizeIterator for KeyCandidates {}

impl<'a> IntoIterator for &'a KeyCandidates {
    type Item = &'a IntegrityKey;
    type IntoIter = std::slice::Iter<'a, IntegrityKey>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tsunagi_stun::{long_term_key_md5, long_term_key_sha256};

    const NOW: u64 = 1_699_990_000;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test hex"))
            .collect()
    }

    fn only_key(c: KeyCandidates) -> IntegrityKey {
        let keys: Vec<_> = c.collect();
        assert_eq!(keys.len(), 1);
        keys.into_iter().next().expect("one key")
    }

    #[test]
    fn static_user_md5_key_known_answer() {
        // python3: hashlib.md5(b"user:realm:pass").hexdigest()
        let mut c = Credentials::default();
        c.add_user("user", "pass");
        let key = only_key(
            c.keys("user", "realm", PasswordAlgorithm::Md5, NOW)
                .expect("static user"),
        );
        assert_eq!(key.as_bytes(), hex("8493fbc53ba582fb4c044c456bdc40eb"));
    }

    #[test]
    fn static_user_sha256_key() {
        let mut c = Credentials::default();
        c.add_user("user", "pass");
        let key = only_key(
            c.keys("user", "realm", PasswordAlgorithm::Sha256, NOW)
                .expect("static user"),
        );
        assert_eq!(
            key.as_bytes(),
            long_term_key_sha256("user", "realm", "pass")
        );
    }

    #[test]
    fn static_user_by_md5_key() {
        let mut c = Credentials::default();
        let k = long_term_key_md5("user", "realm", "pass");
        c.add_user_key("user", k);
        let key = only_key(
            c.keys("user", "realm", PasswordAlgorithm::Md5, NOW)
                .expect("static user"),
        );
        assert_eq!(key.as_bytes(), k);
        assert_eq!(
            c.keys("user", "realm", PasswordAlgorithm::Sha256, NOW)
                .map(|_| ()),
            Err(AuthError::AlgorithmUnavailable)
        );
    }

    #[test]
    fn unknown_user() {
        let mut c = Credentials::default();
        assert_eq!(
            c.keys("nobody", "realm", PasswordAlgorithm::Md5, NOW)
                .map(|_| ()),
            Err(AuthError::UnknownUser)
        );
        c.add_user("user", "pass");
        assert_eq!(
            c.keys("nobody", "realm", PasswordAlgorithm::Md5, NOW)
                .map(|_| ()),
            Err(AuthError::UnknownUser)
        );
        // A REST-shaped name is unknown while no secret is configured.
        assert_eq!(
            c.keys("1700000000:alice", "realm", PasswordAlgorithm::Md5, NOW)
                .map(|_| ()),
            Err(AuthError::UnknownUser)
        );
    }

    #[test]
    fn rest_password_known_answer() {
        // python3: base64.b64encode(hmac.new(b"north", b"1700000000:alice",
        //                                    hashlib.sha1).digest())
        let (username, password) = rest_credential("north", "alice", 1_700_000_000);
        assert_eq!(username, "1700000000:alice");
        assert_eq!(password, "Cd/49soE35ICqcJF/bCTn8Z4OyE=");
        assert_eq!(rest_credential("north", "", 1_700_000_000).0, "1700000000");
    }

    #[test]
    fn rest_key_known_answer() {
        // python3: hashlib.md5(b"1700000000:alice:example.org:" + <password above>)
        let mut c = Credentials::default();
        c.add_secret("north").expect("secret");
        let key = only_key(
            c.keys(
                "1700000000:alice",
                "example.org",
                PasswordAlgorithm::Md5,
                NOW,
            )
            .expect("REST user"),
        );
        assert_eq!(key.as_bytes(), hex("d9a6a3d964467baeffd2fce41704a913"));
        let key = only_key(
            c.keys(
                "1700000000:alice",
                "example.org",
                PasswordAlgorithm::Sha256,
                NOW,
            )
            .expect("REST user"),
        );
        assert_eq!(
            key.as_bytes(),
            long_term_key_sha256(
                "1700000000:alice",
                "example.org",
                "Cd/49soE35ICqcJF/bCTn8Z4OyE="
            )
        );
    }

    #[test]
    fn rest_expiry_is_inclusive() {
        let mut c = Credentials::default();
        c.add_secret("north").expect("secret");
        let keys = |now| {
            c.keys("1700000000:alice", "r", PasswordAlgorithm::Md5, now)
                .map(|k| k.len())
        };
        assert_eq!(keys(1_699_999_999), Ok(1));
        assert_eq!(keys(1_700_000_000), Ok(1));
        assert_eq!(keys(1_700_000_001), Err(AuthError::Expired));
        assert_eq!(
            c.keys("1700000000", "r", PasswordAlgorithm::Md5, 1_700_000_001)
                .map(|_| ()),
            Err(AuthError::Expired)
        );
    }

    #[test]
    fn rest_username_forms_as_coturn_reads_them() {
        assert_eq!(rest_expiry("1700000000:alice", ':'), Some(1_700_000_000));
        assert_eq!(rest_expiry("1700000000:a:b", ':'), Some(1_700_000_000));
        assert_eq!(rest_expiry("1700000000", ':'), Some(1_700_000_000));
        assert_eq!(rest_expiry("1700000000:", ':'), Some(1_700_000_000));
        assert_eq!(rest_expiry(":1700000000", ':'), Some(1_700_000_000));
        assert_eq!(rest_expiry("alice:1700000000", ':'), Some(1_700_000_000));
        assert_eq!(rest_expiry("alice:1700000000:x", ':'), Some(1_700_000_000));
        assert_eq!(rest_expiry("1700000000x", ':'), Some(1_700_000_000));
        assert_eq!(rest_expiry("1700000000_alice", '_'), Some(1_700_000_000));
        assert_eq!(rest_expiry("1700000000_alice", ':'), Some(1_700_000_000));
        assert_eq!(rest_expiry("alice", ':'), None);
        assert_eq!(rest_expiry("alice:bob", ':'), None);
        assert_eq!(rest_expiry("", ':'), None);
        assert_eq!(rest_expiry("99999999999999999999999:alice", ':'), None);

        let mut c = Credentials::default();
        c.add_secret("north").expect("secret");
        assert_eq!(
            c.keys("alice", "r", PasswordAlgorithm::Md5, NOW)
                .map(|_| ()),
            Err(AuthError::UnknownUser)
        );
        c.set_rest_separator('_');
        assert_eq!(c.rest_separator(), '_');
        assert!(c
            .keys("1700000000_alice", "r", PasswordAlgorithm::Md5, NOW)
            .is_ok());
    }

    #[test]
    fn rotation_accepts_either_secret() {
        let mut c = Credentials::default();
        c.add_secret("north").expect("secret");
        c.add_secret("south").expect("secret");
        c.add_secret("north").expect("duplicate is a no-op");
        assert_eq!(c.secret_count(), 2);
        for secret in ["north", "south"] {
            let (user, pass) = rest_credential(secret, "alice", 1_700_000_000);
            let expected = long_term_key_md5(&user, "r", &pass);
            let keys = c
                .keys(&user, "r", PasswordAlgorithm::Md5, NOW)
                .expect("REST user");
            assert_eq!(keys.len(), 2);
            assert!(keys.iter().any(|k| k.as_bytes() == expected), "{secret}");
        }
        let (user, pass) = rest_credential("west", "alice", 1_700_000_000);
        let foreign = long_term_key_md5(&user, "r", &pass);
        let keys = c
            .keys(&user, "r", PasswordAlgorithm::Md5, NOW)
            .expect("REST user");
        assert!(keys.into_iter().all(|k| k.as_bytes() != foreign));
    }

    #[test]
    fn secrets_are_capped_and_non_empty() {
        let mut c = Credentials::default();
        assert!(c.add_secret("").is_err());
        for i in 0..MAX_SECRETS {
            c.add_secret(&format!("s{i}")).expect("within the cap");
        }
        let err = c.add_secret("one-too-many").expect_err("past the cap");
        assert!(err.contains("at most 8"));
        assert_eq!(c.secret_count(), MAX_SECRETS);
        let keys = c
            .keys("1700000000:a", "r", PasswordAlgorithm::Md5, NOW)
            .expect("REST user");
        assert_eq!(keys.len(), MAX_SECRETS);
        assert_eq!(keys.count(), MAX_SECRETS);
    }

    #[test]
    fn static_user_wins_over_rest() {
        let mut c = Credentials::default();
        c.add_secret("north").expect("secret");
        c.add_user("1:bob", "pw");
        let key = only_key(
            c.keys("1:bob", "r", PasswordAlgorithm::Md5, NOW)
                .expect("static user"),
        );
        assert_eq!(key.as_bytes(), long_term_key_md5("1:bob", "r", "pw"));
    }

    #[test]
    fn user_spec_parsing() {
        let mut c = Credentials::default();
        c.add_user_spec("alice:secret").expect("password spec");
        c.add_user_spec("bob: pa:ss word")
            .expect("password with ':' and spaces");
        c.add_user_spec("carol:0x8493fbc53ba582fb4c044c456bdc40eb")
            .expect("key spec");
        c.add_user_spec("dave:0X8493FBC53BA582FB4C044C456BDC40EB")
            .expect("0X is a password, as in coturn");
        assert_eq!(c.user_count(), 4);

        let key = |c: &Credentials, name: &str| {
            only_key(
                c.keys(name, "realm", PasswordAlgorithm::Md5, NOW)
                    .expect("user"),
            )
        };
        assert_eq!(
            key(&c, "alice").as_bytes(),
            long_term_key_md5("alice", "realm", "secret")
        );
        assert_eq!(
            key(&c, "bob").as_bytes(),
            long_term_key_md5("bob", "realm", "pa:ss word")
        );
        assert_eq!(
            key(&c, "carol").as_bytes(),
            hex("8493fbc53ba582fb4c044c456bdc40eb")
        );
        assert_eq!(
            key(&c, "dave").as_bytes(),
            long_term_key_md5("dave", "realm", "0X8493FBC53BA582FB4C044C456BDC40EB")
        );
        c.add_user_spec("carol:0x8493FBC53BA582FB4C044C456BDC40EB")
            .expect("upper-case hex digits");
        assert_eq!(
            key(&c, "carol").as_bytes(),
            hex("8493fbc53ba582fb4c044c456bdc40eb")
        );
    }

    #[test]
    fn user_spec_errors_do_not_leak_the_password() {
        let mut c = Credentials::default();
        for (spec, needle) in [
            ("alicesecret", "no ':'"),
            (":secret", "empty name"),
            ("alice:", "empty password"),
            ("alice:  ", "empty password"),
            ("alice:0x8493fbc53ba582fb4c044c456bdc40", "32 hex digits"),
            (
                "alice:0x8493fbc53ba582fb4c044c456bdc40ebff",
                "32 hex digits",
            ),
            ("alice:0x8493fbc53ba582fb4c044c456bdc40eg", "32 hex digits"),
            ("alice:0x", "32 hex digits"),
        ] {
            let err = c.add_user_spec(spec).expect_err(spec);
            assert!(err.contains(needle), "{spec}: {err}");
            assert!(!err.contains("secret") && !err.contains("8493"), "{err}");
        }
        assert!(c.is_empty());
    }

    #[test]
    fn userhash_lookup_rfc8489_b1() {
        // RFC 8489 Appendix B.1: USERHASH of "マトリックス" in realm "example.org".
        let h: [u8; 32] = hex("4a3cf38fef6992bda952c6780417da0f24819415569e60b205c46e41407f1704")
            .try_into()
            .expect("32 bytes");
        assert_eq!(userhash("マトリックス", "example.org"), h);
        let mut c = Credentials::default();
        c.add_user("alice", "x");
        c.add_user("マトリックス", "TheMatrIX");
        assert_eq!(c.username_for_hash(&h, "example.org"), Some("マトリックス"));
        assert_eq!(c.username_for_hash(&h, "other.org"), None);
        assert_eq!(c.username_for_hash(&[0; 32], "example.org"), None);
        // REST users cannot be found by hash.
        c.add_secret("north").expect("secret");
        let rest = userhash("1700000000:alice", "example.org");
        assert_eq!(c.username_for_hash(&rest, "example.org"), None);
    }

    #[test]
    fn the_users_map_takes_the_hasher_it_is_given() {
        let mut c = Credentials::default();
        c.add_user("alice", "a");
        c.add_user_key("bob", [1; 16]);
        let keyed = ahash::RandomState::with_seeds(1, 2, 3, 4);
        c.set_hasher(&keyed);
        assert_eq!(c.users.hasher().hash_one("alice"), keyed.hash_one("alice"));
        assert_eq!(c.user_count(), 2);
        for user in ["alice", "bob"] {
            assert!(
                c.keys(user, "r", PasswordAlgorithm::Md5, NOW).is_ok(),
                "{user}"
            );
        }
    }

    #[test]
    fn a_server_keys_the_users_map_from_its_nonce_key() {
        let mut config = crate::ServerConfig::default();
        config.credentials.add_user("alice", "a");
        let hash_with = |nonce_key: [u8; 32]| {
            let config = crate::ServerConfig {
                nonce_key,
                ..config.clone()
            };
            let server = crate::Server::new(config, std::time::Instant::now(), NOW);
            server.config().credentials.users.hasher().hash_one("alice")
        };
        assert_eq!(hash_with([1; 32]), hash_with([1; 32]));
        assert_ne!(hash_with([1; 32]), hash_with([2; 32]));
    }

    #[test]
    fn counts_and_emptiness() {
        let mut c = Credentials::default();
        assert!(c.is_empty());
        c.add_secret("north").expect("secret");
        assert!(!c.is_empty());
        assert_eq!((c.user_count(), c.secret_count()), (0, 1));
        let mut c = Credentials::default();
        c.add_user("a", "b");
        c.add_user("a", "c");
        assert!(!c.is_empty());
        assert_eq!((c.user_count(), c.secret_count()), (1, 0));
    }

    #[test]
    fn debug_redacts_names_passwords_and_secrets() {
        let mut c = Credentials::default();
        c.add_user("alice", "hunter2");
        c.add_user_key("bob", [0xab; 16]);
        c.add_secret("north-secret").expect("secret");
        let keys = c
            .keys("alice", "r", PasswordAlgorithm::Md5, NOW)
            .expect("static user");
        let shown = format!("{c:?} {keys:?}");
        for s in ["alice", "hunter2", "bob", "abab", "171, 171", "north"] {
            assert!(!shown.contains(s), "{s} in {shown}");
        }
    }
}
