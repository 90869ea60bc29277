//! `tsunagi`: the binary. Parses the configuration (exit status 2 on any error in it),
//! sets up logging, binds the listeners and runs the STUN/TURN service and the HTTP(S)
//! server (web client, signaling, stats) until SIGTERM or Ctrl-C, or until one of its
//! cores fails (exit status 1, after `/healthz` has said so for [`FAULT_HOLD`]).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use clap::{CommandFactory, FromArgMatches};
use rand::RngCore;
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;
use tsunagi::cli::{Cli, Command};
use tsunagi::cluster::{Cluster, ClusterOptions};
use tsunagi::config::{Config, LogFormat};
use tsunagi::http::{self, HttpOptions, HttpService, HttpState};
use tsunagi::proxied::ProxySources;
use tsunagi::sfu_runtime::{self, SfuOptions, SfuService, SfuSockets};
use tsunagi::signaling::{self, SignalingHandle, SignalingOptions};
use tsunagi::supervise::Health;
use tsunagi::tls::{self, TlsError};
use tsunagi::turn_runtime::{BindFailure, Listeners, RuntimeOptions, StartError, TurnService};
use tsunagi_sfu::SfuConfig;
use tsunagi_turn::Server;

/// After a core failed, how long tsunagi keeps answering (`/healthz` with 503 naming
/// it) before it shuts down: probes and load balancers see which part failed instead
/// of a refused connection.
const FAULT_HOLD: std::time::Duration = std::time::Duration::from_secs(2);

fn main() -> ExitCode {
    // An empty TSUNAGI_* variable counts as unset; clap reads the others (and exits
    // with status 2 on a bad command line or variable).
    tsunagi::cli::unset_blank_env();
    let matches = match command().try_get_matches() {
        Ok(m) => m,
        Err(e) => return clap_error(&e),
    };
    #[cfg(feature = "bench")]
    if let Some(("bench", m)) = matches.subcommand() {
        return match tsunagi_bench::BenchArgs::from_arg_matches(m) {
            Ok(args) => tsunagi_bench::run(&args),
            Err(e) => clap_error(&e),
        };
    }
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => return clap_error(&e),
    };
    if let Some(Command::Token(args)) = &cli.command {
        return tsunagi::token::run(args);
    }
    if let Some(Command::Nat(args)) = &cli.command {
        return tsunagi::nat::run(args);
    }
    let options = cli.into_serve_options();
    let (mut config, unknown_env) = match Config::load(options) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tsunagi: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(&config);
    for var in unknown_env {
        warn!("environment variable {var} is not a tsunagi option and is ignored; see docs/configuration.md");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tsunagi: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(&mut config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            eprintln!("tsunagi: {e}");
            // A relay address that is not on this host, an unusable certificate, or a
            // port this user may not bind (below 1024 without CAP_NET_BIND_SERVICE) is a
            // configuration mistake, which a restart does not cure; a port in use may
            // be free at the next start.
            let denied = e
                .downcast_ref::<BindFailure>()
                .is_some_and(|b| b.error.kind() == std::io::ErrorKind::PermissionDenied);
            if e.is::<StartError>() || e.is::<TlsError>() || denied {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The command line of the server's subcommands, and `bench` (the load generator,
/// a crate of its own that only this binary links, with the `bench` feature).
fn command() -> clap::Command {
    let cmd = Cli::command();
    #[cfg(feature = "bench")]
    let cmd = cmd.subcommand(
        <tsunagi_bench::BenchArgs as clap::Args>::augment_args(clap::Command::new("bench")).about(
            "Load generator for STUN/TURN servers (ours or coturn), the SFU, signaling (one node or a cluster), and the limit baseline",
        ),
    );
    cmd
}

/// Prints a command-line error (naming the variable when the value came from the
/// environment); `--help` and `--version` exit 0, errors 2.
fn clap_error(e: &clap::Error) -> ExitCode {
    let hint = tsunagi::cli::env_source_of(e);
    let _ = e.print();
    if let Some(hint) = hint {
        eprintln!("note: {hint}");
    }
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
}

fn init_tracing(config: &Config) {
    // Validated by Config::resolve; the fallback only guards a filter that became
    // invalid in between, which cannot happen.
    let filter = EnvFilter::try_new(&config.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    match config.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn serve(config: &mut Config) -> Result<(), Box<dyn std::error::Error>> {
    if config.credentials.is_empty() {
        // A development setup: TURN still needs credentials (an open relay would be
        // worse), so mint a secret for this run and say how to use it.
        let mut bytes = [0u8; 24];
        rand::rng().fill_bytes(&mut bytes);
        let secret = hex::encode(bytes);
        config.credentials.add_secret(&secret)?;
        warn!(
            static_auth_secret = %secret,
            "no user and no static-auth-secret configured: generated a REST API secret for this run \
             (development only; set static-auth-secret or user for production)"
        );
        info!(
            "mint a TURN credential valid for an hour with: \
             u=\"$(( $(date +%s) + 3600 )):dev\"; p=$(printf %s \"$u\" | openssl dgst -sha1 -hmac '{secret}' -binary | base64); echo \"$u $p\""
        );
    }
    let mut nonce_key = [0u8; 32];
    rand::rng().fill_bytes(&mut nonce_key);
    let unix_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // The SFU's sockets first: the TURN relay may reach exactly these addresses even
    // when their IPs are private or loopback (browsers in relay-only mode reach the SFU
    // through this server's TURN), and nothing else on those IPs.
    let sfu_sockets = if config.signaling.sfu {
        Some(bind_sfu(config)?)
    } else {
        None
    };
    let mut server_config = config.server_config(nonce_key);
    if let Some(s) = &sfu_sockets {
        server_config
            .peer_policy
            .allowed_endpoints
            .extend(s.udp.iter().filter_map(|u| u.socket.local_addr().ok()));
        server_config
            .peer_policy
            .allowed_endpoints
            .extend(s.udp.iter().map(|u| u.advertised));
    }
    let server = Server::new(server_config, Instant::now(), unix_now);

    let health = Health::new();
    let (hup_tx, hup) = tokio::sync::watch::channel(0u64);
    let (stop_keeper, keeper_shutdown) = tokio::sync::watch::channel(false);
    let (front_up, front_ready) = tokio::sync::watch::channel(false);
    let certs = tls::setup::start(
        config,
        tls::setup::Keeper {
            hup,
            shutdown: keeper_shutdown,
            health: health.clone(),
            front_ready,
        },
    )?;
    tokio::spawn(forward_sighup(hup_tx));
    let listeners = bind_listeners(config)?;
    let http_listeners = bind_http(config)?;
    let tls_port_listeners = bind_tls_ports(config)?;
    if config.relay_ips_auto {
        info!("relay addresses chosen automatically; set relay-ip to choose them");
    }
    let list = |ranges: &[tsunagi_turn::policy::IpRange]| {
        ranges
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !config.proxy_protocol.is_empty() {
        info!(
            from = %list(&config.proxy_protocol),
            "TCP and TLS connections from these proxies must begin with a PROXY header (proxy-protocol-ip)"
        );
    }
    if !config.trusted_proxies.is_empty() {
        info!(
            from = %list(&config.trusted_proxies),
            "X-Forwarded-For names the client of HTTP requests from these proxies (trusted-proxy-ip)"
        );
    }
    let mut runtime_options = RuntimeOptions::from_config(config);
    runtime_options.health = health.clone();
    let service = TurnService::start(server, listeners, runtime_options)?;

    let http_options = HttpOptions {
        redact_logs: config.redact_logs,
        health: health.clone(),
        turn: Some(service.streams()),
        proxy_protocol: ProxySources::new(config.proxy_protocol.clone()),
        trusted_proxies: ProxySources::new(config.trusted_proxies.clone()),
        ..HttpOptions::new(config.http_max_connections, certs.clone())
    };
    let mut state = HttpState::new(
        Some(service.stats_handle()),
        http_options.counters.clone(),
        certs.is_some(),
    )
    .with_health(health.clone());
    if let Some(store) = &certs {
        state = state.with_certificate(store.clone());
    }
    // Signaling at /ws, after the TURN secret above exists: welcome carries TURN
    // credentials minted with it.
    let mut signaling_options = SignalingOptions::from_config(config);
    // The bound ports (port 0 in tests): the HTTP port's when TURN over TLS shares it.
    signaling_options.turns_port = if !config.turn_tls() {
        None
    } else if config.one_tls_port() {
        http_listeners
            .first()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port())
    } else {
        tls_port_listeners
            .first()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port())
    };
    signaling_options.health = health.clone();
    let sfu = match sfu_sockets {
        Some(sockets) => {
            let options = SfuOptions {
                core: SfuConfig {
                    max_peers_per_room: config.signaling.max_room_peers as usize,
                    max_rooms: config.signaling.max_rooms,
                    rtp_mode: config.sfu_rtp_mode,
                    ..SfuConfig::default()
                },
                token_secret: config
                    .signaling
                    .token_secret
                    .as_ref()
                    .map(|s| s.0.as_bytes().to_vec()),
                health: health.clone(),
                ..SfuOptions::default()
            };
            let (sfu, link) = SfuService::start(sockets, options)?;
            signaling_options.sfu = Some(link);
            Some(sfu)
        }
        None => None,
    };
    let cluster = match &config.cluster {
        Some(c) => {
            // The host clients reach this node's TURN at: its public-host, else a
            // specific listening IP.
            let turn_host = config.signaling.public_host.clone().or_else(|| {
                config
                    .listening_ips
                    .iter()
                    .find(|ip| !ip.is_unspecified())
                    .map(|ip| match ip {
                        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                        v4 => v4.to_string(),
                    })
            });
            let turn = turn_host
                .as_ref()
                .map(|h| format!("{h}:{}", config.listening_port));
            let options = ClusterOptions {
                config: c.clone(),
                http: http_listeners
                    .iter()
                    .filter_map(|l| l.local_addr().ok())
                    .collect(),
                tls: certs.is_some(),
                turn,
                turn_host,
                sfu_port: sfu.as_ref().map(|_| config.sfu_port),
                forwarded: sfu.as_ref().map(|s| {
                    let h = s.handle();
                    tsunagi::cluster::ForwardedCounter(Arc::new(move || {
                        h.snapshot().core.media_forwarded
                    }))
                }),
                prefix: "tsunagi:".to_owned(),
                health: health.clone(),
                turn_quota: service.quota_board(),
            };
            Some(Cluster::start(options)?)
        }
        None => None,
    };
    signaling_options.cluster = cluster.clone();
    let signaling = SignalingHandle::start(signaling_options);
    let mut state = state.with_source(Arc::new(signaling.clone()));
    let mut extra = signaling::routes(signaling.clone());
    if let Some(c) = &cluster {
        state = state
            .with_source(Arc::new(c.clone()))
            .with_cluster(c.clone());
        extra = extra.merge(tsunagi::cluster::routes(c.clone()));
    }
    if let Some(sfu) = &sfu {
        let handle = sfu.handle().with_signaling(signaling.clone());
        state = state.with_source(Arc::new(handle.clone()));
        extra = extra.merge(sfu_runtime::api::routes(handle.clone()));
        extra = extra.merge(sfu_runtime::whip::routes(handle));
    }
    let http_service = HttpService::start_with_tls_ports(
        http_listeners,
        tls_port_listeners,
        http::app(state, extra),
        http_options,
    )?;
    // An ACME CA may now validate through the front ports.
    front_up.send_replace(true);
    info!(
        realm = %config.realm,
        users = config.credentials.user_count(),
        rest_secrets = config.credentials.secret_count(),
        "tsunagi {} ready",
        env!("CARGO_PKG_VERSION")
    );
    tsunagi::service_notify::notify("READY=1\nSTATUS=serving\n");

    let drain_asked = async {
        match &cluster {
            Some(c) => c.drain_requested().await,
            None => std::future::pending().await,
        }
    };
    let fault = tokio::select! {
        () = wait_for_signal() => None,
        () = drain_asked => None,
        f = health.fault() => Some(f),
    };
    if let (Some(c), None) = (&cluster, &fault) {
        tsunagi::service_notify::notify("STATUS=draining\n");
        drain(c, &signaling).await;
    }
    if let Some(f) = &fault {
        error!(
            component = f.component.as_str(),
            core = %f.core,
            reason = %f.reason,
            "a core of tsunagi failed: /healthz answers 503, and tsunagi exits with status 1 in {} s so that its service manager restarts it",
            FAULT_HOLD.as_secs()
        );
        tokio::select! {
            () = tokio::time::sleep(FAULT_HOLD) => {}
            () = wait_for_signal() => {}
        }
    }
    health.begin_shutdown();
    tsunagi::service_notify::notify("STOPPING=1\nSTATUS=shutting down\n");
    info!("shutting down");
    let _ = stop_keeper.send(true);
    signaling.shutdown().await;
    if let Some(c) = &cluster {
        c.shutdown().await;
    }
    http_service.shutdown().await;
    if let Some(sfu) = sfu {
        let s = sfu.shutdown().await;
        info!(
            media_forwarded = s.core.media_forwarded,
            faults = s.core.faults,
            "SFU stopped"
        );
    }
    let stats = service.shutdown().await;
    info!(
        allocations_created = stats.allocations_created,
        packets_to_peers = stats.packets_to_peers,
        packets_from_peers = stats.packets_from_peers,
        "stopped"
    );
    match fault {
        Some(f) => Err(Box::new(f)),
        None => Ok(()),
    }
}

/// A cluster node's way out (SIGTERM, `POST /api/drain`): no new rooms or WebSockets,
/// every room sent to other nodes (`rejoin`), every relayed WebSocket sent to resume
/// elsewhere, then wait until no client is left or `drain-timeout` has passed.
async fn drain(cluster: &Cluster, signaling: &SignalingHandle) {
    let started = tokio::time::Instant::now();
    let deadline = started + cluster.drain_timeout();
    cluster.set_draining().await;
    let url = cluster.other_url();
    info!(
        timeout_secs = cluster.drain_timeout().as_secs(),
        rejoin_at = url.as_deref().unwrap_or("where clients came from"),
        "draining: no new rooms; moving rooms and clients to other nodes"
    );
    signaling.drain(url).await;
    cluster.drain_edges();
    loop {
        let left = signaling.stats().connections + cluster.in_flight() as u64;
        if left == 0 {
            info!(
                took_ms = started.elapsed().as_millis() as u64,
                "drained: no client left on this node"
            );
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            warn!(
                clients = left,
                "drain-timeout reached with clients still on this node; they are disconnected"
            );
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
            () = wait_for_signal() => {
                warn!(clients = left, "a second stop signal: not waiting for the drain");
                return;
            }
        }
    }
}

/// Whether a bind error on the default `::` means the host has no IPv6
/// (EAFNOSUPPORT, EADDRNOTAVAIL): anything but "in use" or "not allowed".
fn no_ipv6(default_ips: bool, e: &BindFailure) -> bool {
    default_ips
        && e.addr.is_ipv6()
        && !matches!(
            e.error.kind(),
            std::io::ErrorKind::AddrInUse | std::io::ErrorKind::PermissionDenied
        )
}

/// Binds every listener. With the default listening addresses, a host without IPv6
/// (common in containers) runs on IPv4 alone instead of failing.
/// The SFU's UDP sockets (and ICE-TCP listeners) on the relay addresses, at `sfu-port`.
fn bind_sfu(config: &Config) -> Result<SfuSockets, StartError> {
    let externals = config.external_ips.clone();
    SfuSockets::bind(
        &config.relay_ips,
        config.sfu_port,
        config.sfu_tcp,
        move |ip| sfu_runtime::advertise(&externals, ip),
    )
    .map_err(|e| {
        StartError(format!(
            "cannot bind the SFU on port {} ({e}); choose another with sfu-port, or disable the SFU with no-sfu",
            config.sfu_port
        ))
    })
}

fn bind_listeners(config: &Config) -> Result<Listeners, BindFailure> {
    let mut all = Listeners::default();
    for addr in config.listening_addrs() {
        match Listeners::bind_workers(&[addr], config.udp, config.tcp, config.turn_workers) {
            Ok(l) => {
                all.udp.extend(l.udp);
                all.tcp.extend(l.tcp);
            }
            Err(e) if no_ipv6(config.listening_ips_default, &e) => {
                warn!("{e}; continuing without IPv6 listeners");
            }
            Err(e) => return Err(e),
        }
    }
    // RFC 5780: the alternate port and address, UDP only (see docs/configuration.md).
    for addr in config.discovery_addrs() {
        let l = Listeners::bind_workers(&[addr], true, false, config.turn_workers)?;
        all.udp.extend(l.udp);
    }
    Ok(all)
}

/// Binds the listeners of TURN over TLS on a port of its own, IPv4 alone on a host
/// without IPv6 (as above); none when it shares the HTTP port.
fn bind_tls_ports(config: &Config) -> Result<Vec<std::net::TcpListener>, BindFailure> {
    let mut all = Vec::new();
    for addr in config.tls_listening_addrs() {
        match http::bind_tls(&[addr]) {
            Ok(l) => all.extend(l),
            Err(e) if no_ipv6(config.listening_ips_default, &e) => {
                warn!("{e}; continuing without IPv6 listeners");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(all)
}

/// Binds the HTTP(S) listeners, IPv4 alone on a host without IPv6 (as above).
fn bind_http(config: &Config) -> Result<Vec<std::net::TcpListener>, BindFailure> {
    let mut all = Vec::new();
    for addr in config.http_addrs() {
        match http::bind(&[addr]) {
            Ok(l) => all.extend(l),
            Err(e) if no_ipv6(config.http_ips_default, &e) => {
                warn!("{e}; continuing without an IPv6 HTTP listener");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(all)
}

/// Counts SIGHUPs into `tx` (the certificate's keeper reloads on each), so that
/// SIGHUP (`systemctl reload`) never ends the process, with TLS or without.
async fn forward_sighup(tx: tokio::sync::watch::Sender<u64>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGHUP; the certificate reloads only when its files change");
                return;
            }
        };
        while hup.recv().await.is_some() {
            info!("SIGHUP: reloading the TLS certificate");
            tx.send_modify(|n| *n += 1);
        }
    }
    #[cfg(not(unix))]
    drop(tx);
}

/// SIGTERM or Ctrl-C (SIGINT).
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = ctrl_c() => {}
                }
                return;
            }
            Err(e) => warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops tsunagi"),
        }
    }
    ctrl_c().await;
}

/// Ctrl-C, or never if it cannot be waited for.
async fn ctrl_c() {
    if let Err(e) = tokio::signal::ctrl_c().await {
        warn!(error = %e, "cannot wait for Ctrl-C");
        std::future::pending::<()>().await;
    }
}
