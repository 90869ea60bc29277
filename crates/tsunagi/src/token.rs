//! `tsunagi token`: prints a signaling access token (an HS256 JWT, see
//! `docs/signaling.md`, Access control) signed with the configured `token-secret`.
//!
//! The secret is found like every other option: `--token-secret`, else
//! `TSUNAGI_TOKEN_SECRET` (clap's `env`), else `token-secret` in the file named by
//! `--config` (or `TSUNAGI_CONFIG`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Args;
use tsunagi_signal::token::{self, Claims, ANY_ROOM};
use tsunagi_signal::{validate_name, validate_room};

use crate::config::{ConfigError, Options, Secret};

/// Longest token lifetime accepted by `--ttl`: one year.
const MAX_TTL: u64 = 365 * 86_400;

/// Arguments of `tsunagi token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The room the token admits to ("*" for any room).
    #[arg(long, value_name = "ROOM")]
    pub room: String,
    /// The identity (`sub`); the display name when the join has none.
    #[arg(long, value_name = "NAME")]
    pub identity: String,
    /// Lifetime in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    pub ttl: u64,
    /// The holder may not send audio or video (canPublish: false).
    #[arg(long)]
    pub no_publish: bool,
    /// The secret to sign with [default: token-secret of the config file].
    #[arg(long, value_name = "S", env = "TSUNAGI_TOKEN_SECRET")]
    pub token_secret: Option<Secret>,
    /// TOML config file to read token-secret from.
    #[arg(long, short = 'c', value_name = "FILE", env = "TSUNAGI_CONFIG")]
    pub config: Option<PathBuf>,
}

impl TokenArgs {
    /// The claims of the token, valid from `now_unix`.
    pub fn claims(&self, now_unix: u64) -> Result<Claims, ConfigError> {
        if self.room != ANY_ROOM {
            validate_room(&self.room).map_err(|e| ConfigError(format!("--room: {e}")))?;
        }
        let sub = validate_name(&self.identity).map_err(|e| {
            ConfigError(format!(
                "--identity: {}",
                e.replace("\"name\" to join", "--identity")
            ))
        })?;
        if self.ttl == 0 || self.ttl > MAX_TTL {
            return Err(ConfigError(format!(
                "--ttl {} is out of range; use 1 to {MAX_TTL} seconds",
                self.ttl
            )));
        }
        Ok(Claims {
            room: self.room.clone(),
            sub,
            exp: now_unix.saturating_add(self.ttl),
            nbf: None,
            can_publish: if self.no_publish { Some(false) } else { None },
        })
    }

    /// The secret: the argument or its variable, else the file.
    pub fn secret(&self) -> Result<Secret, ConfigError> {
        if let Some(s) = &self.token_secret {
            return Ok(s.clone());
        }
        if let Some(path) = &self.config {
            if let Some(s) = Options::from_file(path)?.token_secret {
                return Ok(s);
            }
        }
        Err(ConfigError(
            "no token-secret: give --token-secret, set TSUNAGI_TOKEN_SECRET, or name a config \
             file with token-secret (the same secret the server runs with)"
                .to_owned(),
        ))
    }

    /// The signed token.
    pub fn token(&self, now_unix: u64) -> Result<String, ConfigError> {
        let claims = self.claims(now_unix)?;
        let secret = self.secret()?;
        Ok(token::sign(secret.0.as_bytes(), &claims))
    }
}

/// Runs `tsunagi token`: prints the token on stdout; configuration errors exit with 2.
pub fn run(args: &TokenArgs) -> ExitCode {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match args.token(now) {
        Ok(t) => {
            let mut out = std::io::stdout().lock();
            if writeln!(out, "{t}").is_err() {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tsunagi token: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(room: &str, identity: &str) -> TokenArgs {
        TokenArgs {
            room: room.into(),
            identity: identity.into(),
            ttl: 3600,
            no_publish: false,
            token_secret: Some(Secret("0123456789abcdef".into())),
            config: None,
        }
    }

    #[test]
    fn token_verifies_with_the_secret() {
        let mut a = args("lobby", " alice ");
        a.no_publish = true;
        let t = a.token(1000).unwrap();
        let c = token::verify(b"0123456789abcdef", &t, 1001).unwrap();
        assert_eq!(c.room, "lobby");
        assert_eq!(c.sub, "alice");
        assert_eq!(c.exp, 4600);
        assert!(!c.can_publish());
        let t = args("*", "bob").token(1000).unwrap();
        assert!(token::verify(b"0123456789abcdef", &t, 1001)
            .unwrap()
            .can_publish());
    }

    #[test]
    fn secret_from_the_argument_then_file() {
        let mut a = args("lobby", "alice");
        assert_eq!(a.secret().unwrap().0, "0123456789abcdef");
        a.token_secret = None;
        let dir = std::env::temp_dir().join(format!("tsunagi-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.toml");
        std::fs::write(&file, "token-secret = \"from-file-0123456789\"\n").unwrap();
        a.config = Some(file.clone());
        assert_eq!(a.secret().unwrap().0, "from-file-0123456789");
        a.config = None;
        let e = a.secret().unwrap_err();
        assert!(e.0.contains("token-secret"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_arguments() {
        for (a, needle) in [
            (args("bad room", "alice"), "--room"),
            (args("lobby", "  "), "--identity"),
            (
                TokenArgs {
                    ttl: 0,
                    ..args("lobby", "alice")
                },
                "--ttl",
            ),
        ] {
            let e = a.token(1000).unwrap_err();
            assert!(e.0.contains(needle), "{e}");
        }
    }
}
