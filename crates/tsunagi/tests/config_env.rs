//! `TSUNAGI_*` environment variables as a user sets them, on the real binary: each
//! option's variable is read (clap's `env`), the command line beats it, it beats the
//! config file, a blank one counts as unset, a bad one exits with status 2 naming the
//! option, and only a misspelt one is warned about.
#![allow(clippy::unwrap_used)]

mod process;

use std::process::{Command, Output};

use process::{Process, BIN};

/// Runs tsunagi with `args` and exactly the `TSUNAGI_*` variables of `env`; for the
/// runs that stop at configuration.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("RUST_LOG");
    for (k, _) in std::env::vars() {
        if k.starts_with("TSUNAGI_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A configuration that stops at validation: min-port above max-port.
fn min_port_error(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut all = vec!["--max-port", "5000"];
    all.extend_from_slice(args);
    let o = run(&all, env);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    stderr(&o)
}

#[test]
fn the_environment_sets_an_option_and_is_not_called_unknown() {
    let mut p = Process::start(
        "env-workers",
        &[],
        &[("TSUNAGI_TURN_WORKERS", "2"), ("TSUNAGI_LISTEN_PORT", "9")],
    );
    let (status, body) = p.first_health();
    assert_eq!(status, 200, "{body}");
    // Two worker threads and the TCP acceptor.
    assert_eq!(body["components"]["turn"]["cores"], 3, "{body}");
    let log = p.log_text();
    assert!(log.contains("workers=2"), "{log}");
    let unknown: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("is not a tsunagi option"))
        .collect();
    assert_eq!(unknown.len(), 1, "{log}");
    assert!(unknown[0].contains("TSUNAGI_LISTEN_PORT"), "{log}");
}

#[test]
fn command_line_beats_environment_beats_file() {
    let e = min_port_error(&[], &[("TSUNAGI_MIN_PORT", "6000")]);
    assert!(e.contains("min-port 6000 is above max-port 5000"), "{e}");
    let e = min_port_error(&["--min-port", "6100"], &[("TSUNAGI_MIN_PORT", "6000")]);
    assert!(e.contains("min-port 6100 is above"), "{e}");

    let dir = std::env::temp_dir().join(format!("tsunagi-config-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("t.toml");
    std::fs::write(&file, "min-port = 6500\n").unwrap();
    let file = file.to_str().unwrap();
    let e = min_port_error(&[], &[("TSUNAGI_CONFIG", file)]);
    assert!(
        e.contains("min-port 6500 is above"),
        "the file named by TSUNAGI_CONFIG: {e}"
    );
    let e = min_port_error(
        &[],
        &[("TSUNAGI_CONFIG", file), ("TSUNAGI_MIN_PORT", "6000")],
    );
    assert!(e.contains("min-port 6000 is above"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn lists_flags_and_blank_variables() {
    // A blank variable is unset; a list is comma-separated; a flag takes yes/no.
    let e = min_port_error(
        &[],
        &[
            ("TSUNAGI_LISTENING_PORT", " "),
            ("TSUNAGI_MIN_PORT", "6000"),
            ("TSUNAGI_ALLOWED_PEER_IP", "198.51.100.0/24,203.0.113.7"),
            ("TSUNAGI_NO_TCP", "yes"),
        ],
    );
    assert!(e.contains("min-port 6000 is above"), "{e}");
}

#[test]
fn a_bad_variable_exits_with_status_2_naming_the_option() {
    for (var, value, needle) in [
        ("TSUNAGI_MIN_PORT", "abc", "min-port"),
        ("TSUNAGI_DENIED_PEER_IP", "198.51.100.1,nope", "nope"),
        ("TSUNAGI_NO_UDP", "maybe", "no-udp"),
        ("TSUNAGI_ROOM_MODE", "p2p", "room-mode"),
    ] {
        let o = run(&[], &[(var, value)]);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{var}={value}: {e}");
        assert!(e.contains(needle), "{var}={value}: {e}");
        assert!(
            e.contains(value.split(',').next_back().unwrap()),
            "{var}={value}: {e}"
        );
    }
}

#[test]
fn token_reads_its_secret_from_the_environment_or_the_file() {
    let args = ["token", "--room", "lobby", "--identity", "alice"];
    // A variable of `serve` in the environment does not get in the way.
    let o = run(
        &args,
        &[
            ("TSUNAGI_TOKEN_SECRET", "0123456789abcdef-env"),
            ("TSUNAGI_REALM", "x"),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let token = String::from_utf8(o.stdout).unwrap();
    assert_eq!(token.trim().split('.').count(), 3, "a JWT: {token}");

    let dir = std::env::temp_dir().join(format!("tsunagi-token-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("t.toml");
    std::fs::write(&file, "token-secret = \"0123456789abcdef-file\"\n").unwrap();
    let o = run(&args, &[("TSUNAGI_CONFIG", file.to_str().unwrap())]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&args, &[]);
    assert_eq!(o.status.code(), Some(2), "no secret anywhere");
    assert!(stderr(&o).contains("token-secret"), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).unwrap();
}
