//! `tsunagi`: the binary. Parses the configuration (exit status 2 on any error in it),
//! sets up logging, binds the listeners and runs the STUN/TURN service until SIGTERM or
//! Ctrl-C.

use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use rand::rngs::OsRng;
use rand::RngCore;
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;
use tsunagi::config::{Cli, Config, LogFormat};
use tsunagi::turn_runtime::{BindFailure, Listeners, RuntimeOptions, StartError, TurnService};
use tsunagi_turn::Server;

fn main() -> ExitCode {
    // clap itself exits with status 2 on a bad command line.
    let options = Cli::parse().into_serve_options();
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
            // A relay address that is not on this host is a configuration mistake.
            if e.is::<StartError>() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
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
        OsRng.fill_bytes(&mut bytes);
        let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
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
    OsRng.fill_bytes(&mut nonce_key);
    let unix_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let server = Server::new(config.server_config(nonce_key), Instant::now(), unix_now);

    let listeners = bind_listeners(config)?;
    if config.relay_ips_auto {
        info!("relay addresses chosen automatically; set relay-ip to choose them");
    }
    let service = TurnService::start(server, listeners, RuntimeOptions::from_config(config))?;
    info!(
        realm = %config.realm,
        users = config.credentials.user_count(),
        rest_secrets = config.credentials.secret_count(),
        "tsunagi {} ready",
        env!("CARGO_PKG_VERSION")
    );

    wait_for_signal().await;
    info!("shutting down");
    let stats = service.shutdown().await;
    info!(
        allocations_created = stats.allocations_created,
        packets_to_peers = stats.packets_to_peers,
        packets_from_peers = stats.packets_from_peers,
        "stopped"
    );
    Ok(())
}

/// Binds every listener. With the default listening addresses, a host without IPv6
/// (common in containers) runs on IPv4 alone instead of failing.
fn bind_listeners(config: &Config) -> Result<Listeners, BindFailure> {
    let mut all = Listeners::default();
    for addr in config.listening_addrs() {
        match Listeners::bind(&[addr], config.udp, config.tcp) {
            Ok(l) => {
                all.udp.extend(l.udp);
                all.tcp.extend(l.tcp);
            }
            // Anything but "in use" or "not allowed" on the default `::` means the
            // host has no IPv6 (EAFNOSUPPORT, EADDRNOTAVAIL).
            Err(e)
                if config.listening_ips_default
                    && addr.is_ipv6()
                    && !matches!(
                        e.error.kind(),
                        std::io::ErrorKind::AddrInUse | std::io::ErrorKind::PermissionDenied
                    ) =>
            {
                warn!("{e}; continuing without IPv6 listeners");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(all)
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
