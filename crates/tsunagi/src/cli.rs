//! The command line of the binary: `serve` (what `tsunagi` with no subcommand does),
//! `token` and `nat` (the binary adds `bench`), the environment variables clap reads,
//! and errors that name the variable a bad value came from.

use clap::{CommandFactory, Parser, Subcommand};

use crate::config::{Options, ENV_PREFIX};

/// `tsunagi [OPTIONS]` is `tsunagi serve [OPTIONS]`.
#[derive(Debug, Parser)]
#[command(
    name = "tsunagi",
    version,
    about = "Self-hosted WebRTC server: STUN/TURN (a drop-in for coturn)",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub options: Options,
}

// Parsed once at start; boxing `Options` would only complicate every use.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the STUN/TURN server (what `tsunagi` with no subcommand does).
    Serve(Options),
    /// Print a signaling access token (an HS256 JWT signed with token-secret).
    Token(crate::token::TokenArgs),
    /// Find out what kind of NAT this host is behind (RFC 5780) and what it means for WebRTC.
    Nat(crate::nat::NatArgs),
}

impl Cli {
    /// The options of `serve`, whether or not the subcommand was named.
    pub fn into_serve_options(self) -> Options {
        match self.command {
            Some(Command::Serve(o)) => o,
            Some(Command::Token(_) | Command::Nat(_)) | None => self.options,
        }
    }
}

/// For an invalid value that came from a `TSUNAGI_*` variable, which variable: clap's
/// message names only the option (`invalid value 'abc' for '--min-port <N>'`).
pub fn env_source_of(e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue};
    let (Some(ContextValue::String(arg)), Some(ContextValue::String(value))) = (
        e.get(ContextKind::InvalidArg),
        e.get(ContextKind::InvalidValue),
    ) else {
        return None;
    };
    let long = arg.strip_prefix("--")?.split(['[', ' ', '=']).next()?;
    let cmd = Cli::command();
    let var = cmd
        .get_arguments()
        .find(|a| a.get_long() == Some(long))?
        .get_env()?
        .to_str()?
        .to_owned();
    let set = std::env::var(&var).ok()?;
    // The variable's value, or one item of its list.
    (set == *value || set.split(',').any(|item| item == value))
        .then(|| format!("the value comes from the environment variable {var}"))
}

/// Removes `TSUNAGI_*` variables that are set but blank: an empty variable counts as
/// unset (`TSUNAGI_REALM=` in a compose file). Call it before parsing the command line,
/// while the process has one thread.
pub fn unset_blank_env() {
    let blank: Vec<_> = std::env::vars_os()
        .filter(|(k, v)| {
            k.to_str().is_some_and(|k| k.starts_with(ENV_PREFIX))
                && v.to_str().is_some_and(|v| v.trim().is_empty())
        })
        .map(|(k, _)| k)
        .collect();
    for k in blank {
        std::env::remove_var(k);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn serve_is_the_default_and_can_be_named() {
        let named = Cli::try_parse_from(["tsunagi", "serve", "--user", "a:1", "--user", "b:2"])
            .unwrap()
            .into_serve_options();
        assert_eq!(named.user.len(), 2);
        let default = Cli::try_parse_from(["tsunagi", "--min-port", "50000"])
            .unwrap()
            .into_serve_options();
        assert_eq!(default.min_port, Some(50000));
        assert!(Cli::try_parse_from(["tsunagi", "--software", "x", "--no-software"]).is_err());
    }

    #[test]
    fn token_subcommand_parses() {
        let c = Cli::try_parse_from([
            "tsunagi",
            "token",
            "--room",
            "lobby",
            "--identity",
            "alice",
            "--ttl",
            "60",
            "--no-publish",
        ])
        .unwrap();
        assert!(matches!(c.command, Some(Command::Token(_))));
    }
}
