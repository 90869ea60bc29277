//! Tests of the option layers, defaults and validation errors.

use super::*;
use clap::FromArgMatches;

mod cluster;

/// The options that `TSUNAGI_*` variables give, parsed as clap parses them (each
/// variable as the value of its option; blank ones unset, see `unset_blank_env`),
/// without touching the process environment. `tests/config_env.rs` runs the binary
/// with real variables.
fn try_env(pairs: &[(&str, &str)]) -> Result<Options, clap::Error> {
    let cmd = Options::augment_args(clap::Command::new("serve"));
    let mut argv = vec!["serve".to_owned()];
    for (k, v) in pairs {
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == *k))
            .unwrap_or_else(|| panic!("{k} is no option's variable"));
        if !v.trim().is_empty() {
            argv.push(format!("--{}={v}", arg.get_long().unwrap()));
        }
    }
    let m = cmd.try_get_matches_from(argv)?;
    Options::from_arg_matches(&m)
}

fn env(pairs: &[(&str, &str)]) -> Options {
    try_env(pairs).unwrap()
}

/// The options of a `serve` command line (what clap reads, environment included).
fn try_cli(args: &[&str]) -> Result<Options, clap::Error> {
    let cmd = Options::augment_args(clap::Command::new("tsunagi"));
    let m = cmd.try_get_matches_from(std::iter::once("tsunagi").chain(args.iter().copied()))?;
    Options::from_arg_matches(&m)
}

fn cli(args: &[&str]) -> Options {
    try_cli(args).unwrap()
}

fn resolve(o: Options) -> Result<Config, ConfigError> {
    Config::resolve(o, None, PrimaryIps::default)
}

#[test]
fn defaults() {
    let c = resolve(Options::default()).unwrap();
    assert_eq!(c.listening_port, 3478);
    assert_eq!(
        c.listening_ips,
        vec![
            "0.0.0.0".parse::<IpAddr>().unwrap(),
            "::".parse::<IpAddr>().unwrap()
        ]
    );
    assert!(c.udp && c.tcp);
    assert_eq!((c.min_port, c.max_port), (49152, 65535));
    assert_eq!(c.realm, "tsunagi");
    assert_eq!(c.relay_ips, vec!["127.0.0.1".parse::<IpAddr>().unwrap()]);
    assert!(c.relay_ips_auto);
    assert_eq!(c.max_permissions, 128);
    assert_eq!(c.max_channels, 128);
    assert_eq!(c.stale_nonce, Duration::from_secs(600));
    assert_eq!(c.max_allocate_lifetime, Duration::from_secs(3600));
    assert_eq!(c.default_allocate_lifetime, Duration::from_secs(600));
    assert_eq!(c.permission_lifetime, Duration::from_secs(300));
    assert_eq!(c.channel_lifetime, Duration::from_secs(600));
    assert_eq!(c.max_tcp_connections, 10_000);
    assert_eq!(c.software.as_deref(), Some(defaults::SOFTWARE));
    assert_eq!(c.log_level, "info");
    assert_eq!(c.log_format, LogFormat::Text);
    assert!(!c.redact_logs && !c.peer_policy.allow_loopback);
    assert!(c.credentials.is_empty());
    assert_eq!(c.http_port, 8080);
    assert_eq!(c.http_ips, c.listening_ips);
    assert!(c.http_ips_default);
    assert_eq!(c.http_max_connections, 10_000);
    // HTTPS for the LAN with the kept self-signed certificate; no TURN over TLS with it.
    assert_eq!(c.tls, Some(TlsSource::SelfSigned { explicit: false }));
    assert!(!c.turn_tls() && !c.one_tls_port());
    assert_eq!(c.tls_listening_port, 5349);
    assert!(c.tls_listening_addrs().is_empty());
}

#[test]
fn http_and_tls_options() {
    let c = resolve(cli(&[
        "--http-port",
        "8443",
        "--http-ip",
        "127.0.0.1",
        "--tls-cert",
        "/etc/c.pem",
        "--tls-key",
        "/etc/k.pem",
        "--tls-listening-port",
        "5350",
    ]))
    .unwrap();
    assert_eq!(c.http_addrs(), vec!["127.0.0.1:8443".parse().unwrap()]);
    assert_eq!(
        c.tls,
        Some(TlsSource::Files {
            cert: "/etc/c.pem".into(),
            key: "/etc/k.pem".into()
        })
    );
    assert_eq!(c.tls_listening_addrs().len(), 2);
    assert_eq!(c.tls_listening_addrs()[0].port(), 5350);
    let o = env(&[
        ("TSUNAGI_TLS_SELF_SIGNED", "1"),
        ("TSUNAGI_HTTP_PORT", "9000"),
    ]);
    let c = resolve(o).unwrap();
    assert_eq!(c.tls, Some(TlsSource::SelfSigned { explicit: true }));
    assert!(c.turn_tls());
    assert_eq!(c.http_port, 9000);
    let o = Options::from_toml(
        "http-ip = \"::1\"\nhttp-max-connections = 5\ntls-self-signed = true\n",
        "t",
    )
    .unwrap();
    let c = resolve(o).unwrap();
    assert_eq!(c.http_ips, vec!["::1".parse::<IpAddr>().unwrap()]);
    assert_eq!(c.http_max_connections, 5);

    let e = resolve(cli(&["--tls-cert", "c.pem"])).unwrap_err();
    assert!(e.0.contains("without tls-key"), "{e}");
    let e = resolve(cli(&["--tls-key", "k.pem"])).unwrap_err();
    assert!(e.0.contains("without tls-cert"), "{e}");
    let e = resolve(cli(&[
        "--tls-cert",
        "c",
        "--tls-key",
        "k",
        "--tls-self-signed",
    ]))
    .unwrap_err();
    assert!(e.0.contains("either"), "{e}");
    let e = resolve(cli(&["--http-port", "3478"])).unwrap_err();
    assert!(e.0.contains("http-port 3478"), "{e}");
    resolve(cli(&["--http-port", "3478", "--no-tcp"])).unwrap();
    // One port: TURN over TLS on the HTTP port, no listener of its own.
    let c = resolve(cli(&["--tls-self-signed", "--tls-listening-port", "8080"])).unwrap();
    assert!(c.one_tls_port());
    assert!(c.tls_listening_addrs().is_empty());
    let e = resolve(cli(&["--tls-self-signed", "--tls-listening-port", "3478"])).unwrap_err();
    assert!(e.0.contains("also the TCP listening-port"), "{e}");
    // no-tls: plain HTTP, nothing over TLS; it contradicts a certificate.
    let c = resolve(cli(&["--no-tls"])).unwrap();
    assert_eq!(c.tls, None);
    assert!(!c.turn_tls() && c.tls_listening_addrs().is_empty());
    let e = resolve(cli(&["--no-tls", "--tls-cert", "c", "--tls-key", "k"])).unwrap_err();
    assert!(e.0.contains("no-tls"), "{e}");
    let c = resolve(cli(&["--tls-self-signed=false"])).unwrap();
    assert_eq!(c.tls, Some(TlsSource::SelfSigned { explicit: false }));
    let e = resolve(cli(&["--http-max-connections", "0"])).unwrap_err();
    assert!(e.0.contains("http-max-connections"), "{e}");
}

#[test]
fn precedence_cli_env_file_default() {
    let file = Options::from_toml(
        "listening-port = 1000\nrealm = \"file\"\nmin-port = 40000\nmax-bps = 7\n",
        "test.toml",
    )
    .unwrap();
    let env = env(&[("TSUNAGI_LISTENING_PORT", "2000"), ("TSUNAGI_REALM", "env")]);
    let cli = cli(&["--listening-port", "3000"]);
    let c = resolve(cli.or(env).or(file)).unwrap();
    assert_eq!(c.listening_port, 3000, "cli beats env and file");
    assert_eq!(c.realm, "env", "env beats file");
    assert_eq!(c.min_port, 40000, "file beats default");
    assert_eq!(c.max_bps, 7);
    assert_eq!(c.max_port, 65535, "default");
}

#[test]
fn flags_can_be_turned_off_by_a_higher_layer() {
    let file = Options::from_toml("allow-loopback-peers = true\nno-tcp = true", "f").unwrap();
    let env = env(&[("TSUNAGI_ALLOW_LOOPBACK_PEERS", "false")]);
    let c = resolve(Options::default().or(env).or(file.clone())).unwrap();
    assert!(!c.peer_policy.allow_loopback);
    assert!(!c.tcp);
    let c = resolve(cli(&["--no-tcp=false"]).or(file)).unwrap();
    assert!(c.tcp);
    let c = resolve(cli(&["--allow-loopback-peers", "--no-udp"])).unwrap();
    assert!(c.peer_policy.allow_loopback && !c.udp && c.tcp);
}

#[test]
fn lists_replace_lower_layers() {
    let file = Options::from_toml("user = [\"a:1\", \"b:2\"]", "f").unwrap();
    let env = env(&[("TSUNAGI_USER", "c:3")]);
    let merged = Options::default().or(env).or(file);
    assert_eq!(merged.user, vec![Secret("c:3".into())]);
}

#[test]
fn toml_parsing() {
    let o = Options::from_toml(
        r#"
listening-ip = ["127.0.0.1", "::1"]
listening-port = 3479
relay-ip = "10.0.0.5"
external-ip = ["203.0.113.7/10.0.0.5"]
min-port = 50000
max-port = 50100
realm = "example.org"
user = ["alice:pw", "bob:0x0123456789abcdef0123456789abcdef"]
static-auth-secret = ["s1", "s2"]
allowed-peer-ip = ["10.0.0.0/8", "192.168.1.1-192.168.1.9"]
denied-peer-ip = "203.0.113.0/24"
allow-loopback-peers = true
user-quota = 5
total-quota = 100
max-bps = 1000000
max-permissions = 10
max-channels = 20
stale-nonce = 60
max-allocate-lifetime = 1200
default-allocate-lifetime = 300
permission-lifetime = 120
channel-lifetime = 240
max-tcp-connections = 50
software = "my-turn"
log-level = "debug"
log-format = "json"
redact-logs = true
no-udp = false
"#,
        "t.toml",
    )
    .unwrap();
    let c = resolve(o).unwrap();
    assert_eq!(c.listening_ips.len(), 2);
    assert_eq!(c.listening_port, 3479);
    assert_eq!(c.relay_ips, vec!["10.0.0.5".parse::<IpAddr>().unwrap()]);
    assert_eq!(
        c.external_ips[0].public,
        "203.0.113.7".parse::<IpAddr>().unwrap()
    );
    assert_eq!((c.min_port, c.max_port), (50000, 50100));
    assert_eq!(c.realm, "example.org");
    assert_eq!(c.credentials.user_count(), 2);
    assert_eq!(c.credentials.secret_count(), 2);
    assert_eq!(c.peer_policy.allowed.len(), 2);
    assert_eq!(c.peer_policy.denied.len(), 1);
    assert!(c.peer_policy.allow_loopback);
    assert_eq!(
        (c.user_quota, c.total_quota, c.max_bps),
        (5, 100, 1_000_000)
    );
    assert_eq!((c.max_permissions, c.max_channels), (10, 20));
    assert_eq!(c.stale_nonce, Duration::from_secs(60));
    assert_eq!(c.max_tcp_connections, 50);
    assert_eq!(c.software.as_deref(), Some("my-turn"));
    assert_eq!(c.log_level, "debug");
    assert_eq!(c.log_format, LogFormat::Json);
    assert!(c.redact_logs);
    let sc = c.server_config([1; 32]);
    assert_eq!(sc.realm, "example.org");
    assert_eq!(sc.external_ips.len(), 1);
    assert_eq!(sc.permission_lifetime, Duration::from_secs(120));
}

#[test]
fn toml_errors_name_the_problem() {
    let e = Options::from_toml("listening-prot = 1", "t.toml").unwrap_err();
    assert!(e.0.contains("listening-prot"), "{e}");
    let e = Options::from_toml("max-port = 70000", "t.toml").unwrap_err();
    assert!(e.0.contains("t.toml"), "{e}");
    let e = Options::from_toml("allowed-peer-ip = [\"10.0.0.0/33\"]", "t.toml").unwrap_err();
    assert!(e.0.contains("10.0.0.0/33"), "{e}");
    // The config file cannot name another config file.
    assert!(Options::from_toml("config = \"x\"", "t").is_err());
}

#[test]
fn env_list_parsing() {
    let o = env(&[
        ("TSUNAGI_LISTENING_IP", "127.0.0.1,::1"),
        (
            "TSUNAGI_ALLOWED_PEER_IP",
            "10.0.0.0/8,198.51.100.1-198.51.100.9",
        ),
        ("TSUNAGI_STATIC_AUTH_SECRET", "a,b"),
        ("TSUNAGI_SOFTWARE", "x, y"),
        ("TSUNAGI_REALM", ""),
        ("TSUNAGI_LOG_FORMAT", "JSON"),
        ("TSUNAGI_REDACT_LOGS", "yes"),
    ]);
    assert_eq!(o.listening_ip.len(), 2);
    assert_eq!(o.allowed_peer_ip.len(), 2);
    assert_eq!(o.static_auth_secret.len(), 2);
    assert_eq!(o.software.as_deref(), Some("x, y"), "strings are not split");
    assert_eq!(o.realm, None, "empty means unset");
    assert_eq!(o.log_format, Some(LogFormat::Json));
    assert_eq!(o.redact_logs, Some(true));
    let e = try_env(&[("TSUNAGI_MIN_PORT", "abc")]).unwrap_err();
    assert!(e.to_string().contains("min-port"), "{e}");
    let e = try_env(&[("TSUNAGI_DENIED_PEER_IP", "10.0.0.1,nope")]).unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
}

#[test]
fn cli_list_parsing() {
    let o = cli(&[
        "--user",
        "a:1",
        "--user",
        "b:2",
        "--allowed-peer-ip",
        "198.51.100.0/24",
        "--external-ip",
        "203.0.113.1",
    ]);
    assert_eq!(o.user.len(), 2);
    assert_eq!(o.allowed_peer_ip.len(), 1);
    assert_eq!(o.external_ip[0].private, None);
    assert!(try_cli(&["--allowed-peer-ip", "bad"]).is_err());
    assert!(try_cli(&["--software", "x", "--no-software"]).is_err());
    assert!(try_cli(&["--min-port", "70000"]).is_err());
}

#[test]
fn validation_errors_say_what_to_fix() {
    let e = resolve(cli(&["--min-port", "6000", "--max-port", "5000"])).unwrap_err();
    assert!(e.0.contains("min-port 6000 is above max-port 5000"), "{e}");
    let e = resolve(cli(&["--user", "nocolon"])).unwrap_err();
    assert!(e.0.contains("user #1"), "{e}");
    let e = resolve(cli(&["--user", "a:0x12"])).unwrap_err();
    assert!(e.0.contains("32 hex digits"), "{e}");
    let e = resolve(cli(&["--no-udp", "--no-tcp"])).unwrap_err();
    assert!(e.0.contains("nothing would listen"), "{e}");
    let e = resolve(cli(&["--default-allocate-lifetime", "7200"])).unwrap_err();
    assert!(e.0.contains("max-allocate-lifetime"), "{e}");
    let e = resolve(cli(&["--relay-ip", "0.0.0.0"])).unwrap_err();
    assert!(e.0.contains("wildcard"), "{e}");
    let e = resolve(cli(&["--max-channels", "5000"])).unwrap_err();
    assert!(e.0.contains("4096"), "{e}");
    let e = resolve(cli(&["--stale-nonce", "0"])).unwrap_err();
    assert!(e.0.contains("stale-nonce"), "{e}");
    let e = resolve(cli(&["--log-level", "info,=["])).unwrap_err();
    assert!(e.0.contains("log-level"), "{e}");
    let e = resolve(cli(&[
        "--relay-ip",
        "10.0.0.1",
        "--external-ip",
        "203.0.113.1/10.0.0.2",
    ]))
    .unwrap_err();
    assert!(e.0.contains("not a relay address"), "{e}");
    assert!("1.2.3.4/24"
        .parse::<ExternalIp>()
        .unwrap_err()
        .contains("prefix length"));
    assert!("1.2.3.4/::1"
        .parse::<ExternalIp>()
        .unwrap_err()
        .contains("mixes"));
}

#[test]
fn secrets_stay_out_of_debug() {
    let o = cli(&[
        "--user",
        "alice:hunter2",
        "--static-auth-secret",
        "topsecret",
    ]);
    let s = format!("{o:?}");
    assert!(!s.contains("hunter2") && !s.contains("topsecret"), "{s}");
    let c = resolve(o).unwrap();
    let s = format!("{c:?}");
    assert!(!s.contains("hunter2") && !s.contains("topsecret"), "{s}");
}

#[test]
fn rust_log_is_the_fallback_filter() {
    let c = Config::resolve(Options::default(), Some("warn".into()), PrimaryIps::default).unwrap();
    assert_eq!(c.log_level, "warn");
    let c = Config::resolve(
        cli(&["--log-level", "debug"]),
        Some("warn".into()),
        PrimaryIps::default,
    )
    .unwrap();
    assert_eq!(c.log_level, "debug");
}

#[test]
fn automatic_relay_addresses() {
    let p = PrimaryIps {
        v4: Some("10.1.2.3".parse().unwrap()),
        v6: Some("2001:db8::5".parse().unwrap()),
    };
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(
        auto_relay_ips(&[ip("0.0.0.0"), ip("::")], p),
        vec![ip("10.1.2.3"), ip("2001:db8::5")]
    );
    assert_eq!(
        auto_relay_ips(&[ip("192.168.0.9")], p),
        vec![ip("192.168.0.9")]
    );
    assert_eq!(
        auto_relay_ips(&[ip("0.0.0.0")], PrimaryIps::default()),
        vec![ip("127.0.0.1")]
    );
    assert_eq!(
        auto_relay_ips(&[ip("192.168.0.9"), ip("::")], p),
        vec![ip("192.168.0.9"), ip("2001:db8::5")]
    );
}

const DOCS: &str = include_str!("../../../../../docs/configuration.md");

/// Every TOML example in the docs is a valid configuration; the one of the Example
/// section says what it shows.
#[test]
fn documented_examples_parse() {
    let examples: Vec<&str> = DOCS
        .split("```toml\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap())
        .collect();
    assert!(examples.len() >= 2, "{examples:?}");
    for text in &examples {
        let o = Options::from_toml(text, "docs example").unwrap();
        let c = resolve(o).unwrap_or_else(|e| panic!("{e}: {text}"));
        if text.contains("acme-domain") {
            assert!(matches!(c.tls, Some(TlsSource::Acme(_))), "{text}");
            assert!(c.one_tls_port(), "{text}");
        }
    }
    let section = DOCS.split("\n## Example\n").nth(1).unwrap();
    let start = section.find("```toml\n").expect("a TOML example") + 8;
    let len = section[start..].find("```").unwrap();
    let c =
        resolve(Options::from_toml(&section[start..start + len], "docs example").unwrap()).unwrap();
    assert_eq!(c.realm, "turn.example.org");
    assert_eq!(c.credentials.secret_count(), 2);
}

#[test]
fn nat_discovery_options() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let c = resolve(Options::default()).unwrap();
    assert!(c.discovery.is_empty());
    assert!(c.server_config([0; 32]).discovery.is_empty());

    let c = resolve(cli(&[
        "--listening-ip",
        "203.0.113.1",
        "--alt-listening-ip",
        "203.0.113.2",
    ]))
    .unwrap();
    let g = DiscoveryAddresses {
        primary: "203.0.113.1:3478".parse().unwrap(),
        alt_ip: Some(ip("203.0.113.2")),
        alt_port: 3479,
    };
    assert_eq!(c.discovery, vec![g]);
    assert_eq!(c.server_config([0; 32]).discovery, vec![g]);
    let extra: Vec<SocketAddr> = ["203.0.113.1:3479", "203.0.113.2:3478", "203.0.113.2:3479"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(c.discovery_addrs(), extra);

    // One IP and two ports: change-port only.
    let c = resolve(cli(&[
        "--listening-ip",
        "203.0.113.1",
        "--listening-ip",
        "2001:db8::1",
        "--alt-listening-port",
        "4000",
    ]))
    .unwrap();
    assert_eq!(c.discovery.len(), 2);
    assert!(c
        .discovery
        .iter()
        .all(|g| g.alt_ip.is_none() && g.alt_port == 4000));
    assert_eq!(c.discovery_addrs().len(), 2);

    // From the environment and a file too.
    let o = env(&[
        ("TSUNAGI_LISTENING_IP", "203.0.113.1"),
        ("TSUNAGI_ALT_LISTENING_IP", "203.0.113.2"),
        ("TSUNAGI_ALT_LISTENING_PORT", "3500"),
    ]);
    assert_eq!(resolve(o).unwrap().discovery[0].alt_port, 3500);
    let o = Options::from_toml(
        "listening-ip = \"203.0.113.1\"\nalt-listening-ip = \"203.0.113.2\"\n",
        "t",
    )
    .unwrap();
    assert_eq!(
        resolve(o).unwrap().discovery[0].alt_ip,
        Some(ip("203.0.113.2"))
    );

    for (args, needle) in [
        (
            vec!["--alt-listening-ip", "203.0.113.2"],
            "specific listening addresses",
        ),
        (
            vec![
                "--listening-ip",
                "203.0.113.1",
                "--alt-listening-ip",
                "203.0.113.1",
            ],
            "also a listening-ip",
        ),
        (
            vec![
                "--listening-ip",
                "203.0.113.1",
                "--alt-listening-ip",
                "2001:db8::2",
            ],
            "no listening-ip of its family",
        ),
        (
            vec![
                "--listening-ip",
                "203.0.113.1",
                "--alt-listening-port",
                "3478",
            ],
            "is the listening-port",
        ),
        (
            vec![
                "--listening-ip",
                "203.0.113.1",
                "--listening-port",
                "0",
                "--alt-listening-port",
                "5000",
            ],
            "fixed listening-port",
        ),
        (
            vec![
                "--listening-ip",
                "203.0.113.1",
                "--alt-listening-port",
                "9",
                "--no-udp",
            ],
            "UDP only",
        ),
        (
            vec![
                "--listening-ip",
                "203.0.113.1",
                "--alt-listening-ip",
                "203.0.113.2",
                "--alt-listening-ip",
                "203.0.113.3",
            ],
            "one alternate address per family",
        ),
    ] {
        let e = resolve(cli(&args)).unwrap_err();
        assert!(e.0.contains(needle), "{args:?}: {e}");
    }
}

#[test]
fn every_option_is_documented() {
    let names = env_names();
    assert!(names.len() > 50, "{names:?}");
    for name in names {
        let key = name
            .strip_prefix(ENV_PREFIX)
            .unwrap()
            .to_ascii_lowercase()
            .replace('_', "-");
        let env = format!("`{name}`");
        assert!(
            DOCS.contains(&env),
            "{env} missing from docs/configuration.md"
        );
        assert!(
            DOCS.contains(&format!("`--{key}")),
            "--{key} missing from docs/configuration.md"
        );
    }
}

#[test]
fn unknown_env_vars_are_reported() {
    let u = unknown_env_vars(
        [
            "TSUNAGI_LISTEN_PORT",
            "TSUNAGI_REALM",
            "TSUNAGI_TURN_WORKERS",
            "PATH",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    assert_eq!(u, vec!["TSUNAGI_LISTEN_PORT".to_string()]);
}

#[test]
fn signaling_options() {
    let c = resolve(Options::default()).unwrap().signaling;
    assert_eq!(c.token_secret, None);
    assert_eq!(c.public_host, None);
    assert_eq!((c.max_room_peers, c.max_rooms), (50, 10_000));
    assert_eq!(
        (c.mesh_max_peers, c.room_mode, c.sfu),
        (4, RoomMode::Auto, true)
    );
    assert_eq!((c.max_message_bytes, c.messages_per_second), (65_536, 50));
    assert_eq!(c.resume_grace, Duration::from_secs(15));
    assert_eq!(c.turn_credential_ttl, Duration::from_secs(86_400));
    // The room modes from each source.
    let c = resolve(cli(&[
        "--room-mode",
        "sfu",
        "--no-sfu",
        "--mesh-max-peers",
        "6",
    ]))
    .unwrap()
    .signaling;
    assert_eq!(
        (c.room_mode, c.sfu, c.mesh_max_peers),
        (RoomMode::Sfu, false, 6)
    );
    let o = Options::from_toml("room-mode = \"mesh\"\nno-sfu = false", "f").unwrap();
    let c = resolve(o).unwrap().signaling;
    assert_eq!((c.room_mode, c.sfu), (RoomMode::Mesh, true));
    let c = resolve(env(&[
        ("TSUNAGI_ROOM_MODE", "Auto"),
        ("TSUNAGI_NO_SFU", "1"),
        ("TSUNAGI_MESH_MAX_PEERS", "2"),
    ]))
    .unwrap()
    .signaling;
    assert_eq!(
        (c.room_mode, c.sfu, c.mesh_max_peers),
        (RoomMode::Auto, false, 2)
    );
    assert!(Options::from_toml("room-mode = \"p2p\"", "f").is_err());
    assert!(try_env(&[("TSUNAGI_ROOM_MODE", "p2p")]).is_err());

    let file = Options::from_toml(
        "token-secret = \"0123456789abcdef-file\"\nmax-room-peers = 6\npublic-host = \"Turn.Example.org\"",
        "f",
    )
    .unwrap();
    let env = env(&[
        ("TSUNAGI_TOKEN_SECRET", "0123456789abcdef-env"),
        ("TSUNAGI_RESUME_GRACE", "0"),
        ("TSUNAGI_MESSAGES_PER_SECOND", "0"),
    ]);
    let args = cli(&["--max-rooms", "7", "--public-host", "2001:db8::1"]);
    let c = resolve(args.or(env).or(file)).unwrap().signaling;
    assert_eq!(c.token_secret, Some(Secret("0123456789abcdef-env".into())));
    assert_eq!(c.public_host.as_deref(), Some("[2001:db8::1]"));
    assert_eq!((c.max_room_peers, c.max_rooms), (6, 7));
    assert_eq!((c.resume_grace, c.messages_per_second), (Duration::ZERO, 0));
    let c = resolve(cli_with_host("Turn.Example.org"))
        .unwrap()
        .signaling;
    assert_eq!(c.public_host.as_deref(), Some("turn.example.org"));

    let e = try_cli(&["--room-mode", "p2p"]).unwrap_err();
    assert!(e.to_string().contains("auto, mesh or sfu"), "{e}");
    for (args, needle) in [
        (&["--mesh-max-peers", "0"][..], "mesh-max-peers"),
        (&["--mesh-max-peers", "33"][..], "mesh-max-peers"),
        (&["--max-room-peers", "1001"][..], "max-room-peers"),
        (&["--max-room-peers", "3"][..], "less than mesh-max-peers"),
        (&["--token-secret", "short"][..], "token-secret"),
        (&["--public-host", "https://x.org"][..], "public-host"),
        (&["--public-host", "x.org:3478"][..], "public-host"),
        (&["--max-room-peers", "0"][..], "max-room-peers"),
        (&["--max-message-bytes", "100"][..], "max-message-bytes"),
        (&["--turn-credential-ttl", "1"][..], "turn-credential-ttl"),
        (&["--resume-grace", "100000"][..], "resume-grace"),
    ] {
        let e = resolve(cli(args)).unwrap_err();
        assert!(e.0.contains(needle), "{args:?}: {e}");
    }
}

fn cli_with_host(h: &str) -> Options {
    cli(&["--public-host", h])
}

#[test]
fn turn_workers() {
    assert_eq!(resolve(Options::default()).unwrap().turn_workers, 1);
    assert_eq!(
        resolve(cli(&["--turn-workers", "3"])).unwrap().turn_workers,
        3
    );
    let all = std::thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(
        resolve(cli(&["--turn-workers", "0"])).unwrap().turn_workers,
        all
    );
    // Quotas count every worker's allocations: they go with any number of workers.
    let c = resolve(cli(&[
        "--turn-workers",
        "2",
        "--user-quota",
        "5",
        "--total-quota",
        "7",
    ]))
    .unwrap();
    assert_eq!((c.turn_workers, c.user_quota, c.total_quota), (2, 5, 7));
    let e = resolve(cli(&["--turn-workers", "999"])).unwrap_err();
    assert!(e.0.contains("at most 256"), "{e}");
}

/// Both proxy lists are empty unless set, and come from every layer like the peer lists.
#[test]
fn proxy_lists_are_off_unless_set() {
    let c = resolve(cli(&[])).unwrap();
    assert!(c.proxy_protocol.is_empty());
    assert!(c.trusted_proxies.is_empty());

    let c = resolve(cli(&[
        "--proxy-protocol-ip",
        "10.0.0.2",
        "--proxy-protocol-ip",
        "2001:db8::/32",
        "--trusted-proxy-ip",
        "192.0.2.1-192.0.2.9",
    ]))
    .unwrap();
    let shown = |v: &[IpRange]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(shown(&c.proxy_protocol), ["10.0.0.2", "2001:db8::/32"]);
    assert_eq!(shown(&c.trusted_proxies), ["192.0.2.1-192.0.2.9"]);

    let o = env(&[
        ("TSUNAGI_PROXY_PROTOCOL_IP", "10.0.0.0/8,10.1.0.1"),
        ("TSUNAGI_TRUSTED_PROXY_IP", "127.0.0.1"),
    ]);
    assert_eq!(o.proxy_protocol_ip.len(), 2);
    assert_eq!(o.trusted_proxy_ip.len(), 1);

    let o = Options::from_toml(
        "proxy-protocol-ip = \"10.0.0.0/8\"\ntrusted-proxy-ip = [\"10.0.0.2\", \"::1\"]",
        "t.toml",
    )
    .unwrap();
    assert_eq!(o.proxy_protocol_ip.len(), 1);
    assert_eq!(o.trusted_proxy_ip.len(), 2);

    let e = try_cli(&["--proxy-protocol-ip", "10.0.0.0/33"]).unwrap_err();
    assert!(e.to_string().contains("proxy-protocol-ip"), "{e}");
    let e = try_env(&[("TSUNAGI_TRUSTED_PROXY_IP", "10.0.0.1,proxy.example")]).unwrap_err();
    assert!(e.to_string().contains("proxy.example"), "{e}");
    let e = Options::from_toml("trusted-proxy-ip = \"10.0.0.9-10.0.0.1\"", "t.toml").unwrap_err();
    assert!(e.0.contains("reversed"), "{e}");
}

#[test]
fn acme_options() {
    let c = resolve(cli(&[
        "--acme-domain",
        "Turn.Example.com.",
        "--acme-domain",
        "media.example.com,turn.example.com",
        "--acme-email",
        "mailto:admin@example.com",
    ]))
    .unwrap();
    let Some(TlsSource::Acme(a)) = &c.tls else {
        panic!("{:?}", c.tls)
    };
    assert_eq!(a.domains, ["turn.example.com", "media.example.com"]);
    assert_eq!(a.email.as_deref(), Some("admin@example.com"));
    assert_eq!(a.directory, defaults::ACME_DIRECTORY);
    assert_eq!(a.ca_root, None);
    assert_eq!(a.challenge, AcmeChallenge::TlsAlpn01);
    assert!(c.turn_tls());
    assert_eq!(c.tls_listening_addrs().len(), 2);

    // The file and the environment say the same.
    let file = Options::from_toml(
        "acme-domain = [\"turn.example.com\"]\nacme-challenge = \"http-01\"\n\
         acme-directory = \"https://ca.example.org/acme/directory\"\nacme-ca-root = \"/etc/ca.pem\"\n",
        "test.toml",
    )
    .unwrap();
    let Some(TlsSource::Acme(a)) = resolve(file).unwrap().tls else {
        panic!()
    };
    assert_eq!(a.challenge, AcmeChallenge::Http01);
    assert_eq!(a.directory, "https://ca.example.org/acme/directory");
    assert_eq!(a.ca_root.as_deref(), Some(Path::new("/etc/ca.pem")));
    let o = env(&[
        ("TSUNAGI_ACME_DOMAIN", "a.example.com,b.example.com"),
        ("TSUNAGI_ACME_CHALLENGE", "TLS-ALPN-01"),
    ]);
    let Some(TlsSource::Acme(a)) = resolve(o).unwrap().tls else {
        panic!()
    };
    assert_eq!(a.domains, ["a.example.com", "b.example.com"]);
    assert_eq!(a.challenge, AcmeChallenge::TlsAlpn01);
    assert!(try_cli(&[
        "--acme-domain",
        "a.example.com",
        "--acme-challenge",
        "dns-01"
    ])
    .is_err());
}

#[test]
fn bad_acme_options_say_what_to_write() {
    let refused = |args: &[&str], wanted: &str| {
        let e = resolve(cli(args)).unwrap_err();
        assert!(e.0.contains(wanted), "{args:?}: {e}");
        e.0
    };
    let e = refused(&["--acme-domain", "203.0.113.7"], "is an IP address");
    assert!(e.contains("tls-cert"), "{e}");
    refused(&["--acme-domain", "[2001:db8::1]"], "is an IP address");
    refused(&["--acme-domain", "*.example.com"], "wildcard");
    refused(
        &["--acme-domain", "localhost"],
        "not a fully qualified name",
    );
    refused(
        &["--acme-domain", "example.123"],
        "not a fully qualified name",
    );
    refused(
        &["--acme-domain", "https://turn.example.com"],
        "not a DNS name",
    );
    refused(&["--acme-domain", "turn.example.com:443"], "not a DNS name");
    refused(&["--acme-domain=-a.example.com"], "not a DNS name");
    refused(&["--acme-domain", "a..example.com"], "not a DNS name");
    let long = format!("{}.example.com", "a".repeat(64));
    refused(&["--acme-domain", &long], "not a DNS name");
    let many: Vec<String> = (0..101).map(|i| format!("n{i}.example.com")).collect();
    refused(&["--acme-domain", &many.join(",")], "at most 100");
    for email in [
        "admin",
        "admin@",
        "@example.com",
        "a b@example.com",
        "a@localhost",
    ] {
        refused(
            &["--acme-domain", "a.example.com", "--acme-email", email],
            "not an email address",
        );
    }
    for url in [
        "http://ca.example/dir",
        "ca.example/dir",
        "https:///dir",
        "not a url",
    ] {
        refused(
            &["--acme-domain", "a.example.com", "--acme-directory", url],
            "acme-directory",
        );
    }
    refused(
        &["--acme-domain", "a.example.com", "--no-tls"],
        "no-tls is set together with acme-domain",
    );
    refused(
        &[
            "--acme-domain",
            "a.example.com",
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
        ],
        "drop tls-cert and tls-key",
    );
    refused(
        &["--acme-domain", "a.example.com", "--tls-self-signed"],
        "drop tls-self-signed",
    );
    for (option, value) in [
        ("--acme-email", "admin@example.com"),
        ("--acme-directory", "https://ca.example/dir"),
        ("--acme-ca-root", "/etc/ca.pem"),
        ("--acme-challenge", "http-01"),
    ] {
        let e = refused(&[option, value], "without acme-domain");
        assert!(e.starts_with(&option[2..]), "{e}");
    }
}
