//! Defaults and validation: merged [`Options`] become a [`Config`], or an error that
//! names the option and what to write instead.

use super::*;

impl Config {
    /// Applies defaults to merged options and validates them. `rust_log` is the
    /// fallback log filter; `primary` is asked only when relay addresses are automatic.
    pub fn resolve(
        o: Options,
        rust_log: Option<String>,
        primary: impl FnOnce() -> PrimaryIps,
    ) -> Result<Config, ConfigError> {
        let signaling = SignalingConfig::resolve(&o)?;
        let cluster = resolve_cluster(&o)?;
        let acme = resolve_acme(&o)?;
        let data_dir = o.data_dir.clone().or_else(default_data_dir);
        let udp = !o.no_udp.unwrap_or(false);
        let tcp = !o.no_tcp.unwrap_or(false);
        if !udp && !tcp {
            return err("no-udp and no-tcp are both set: nothing would listen; drop one of them");
        }

        let listening_ips_default = o.listening_ip.is_empty();
        let mut listening_ips = if listening_ips_default {
            vec![
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ]
        } else {
            o.listening_ip
        };
        dedup(&mut listening_ips);
        let listening_port = o.listening_port.unwrap_or(defaults::LISTENING_PORT);
        let discovery = resolve_discovery(
            &listening_ips,
            listening_port,
            &o.alt_listening_ip,
            o.alt_listening_port,
            udp,
        )?;

        let min_port = o.min_port.unwrap_or(defaults::MIN_PORT);
        let max_port = o.max_port.unwrap_or(defaults::MAX_PORT);
        if min_port == 0 {
            return err("min-port is 0; relay ports start at 1 or above (49152 by default)");
        }
        if min_port > max_port {
            return err(format!(
                "min-port {min_port} is above max-port {max_port}; the relay range is min-port..=max-port, so set min-port <= max-port"
            ));
        }

        let (relay_ips, relay_ips_auto) = if o.relay_ip.is_empty() {
            (auto_relay_ips(&listening_ips, primary()), true)
        } else {
            let mut r = o.relay_ip;
            dedup(&mut r);
            (r, false)
        };
        if let Some(ip) = relay_ips.iter().find(|ip| ip.is_unspecified()) {
            return err(format!(
                "relay-ip {ip} is a wildcard address; relay sockets need the specific address peers reach (use external-ip for a public address behind NAT)"
            ));
        }
        for e in &o.external_ip {
            if let Some(p) = e.private {
                if !relay_ips.contains(&p) {
                    return err(format!(
                        "external-ip {e}: {p} is not a relay address (relay addresses: {}); set relay-ip {p} or fix the private part",
                        join(&relay_ips)
                    ));
                }
            }
        }

        let realm = o.realm.unwrap_or_else(|| defaults::REALM.to_owned());
        if realm.is_empty() || realm.len() > MAX_TEXT_BYTES {
            return err(format!(
                "realm must be 1 to {MAX_TEXT_BYTES} bytes long; it is {} bytes",
                realm.len()
            ));
        }

        let mut credentials = Credentials::default();
        for (i, u) in o.user.iter().enumerate() {
            credentials
                .add_user_spec(&u.0)
                .map_err(|e| ConfigError(format!("user #{}: {e}", i + 1)))?;
        }
        for s in &o.static_auth_secret {
            credentials
                .add_secret(&s.0)
                .map_err(|e| ConfigError(format!("static-auth-secret: {e}")))?;
        }

        let peer_policy = PeerPolicy {
            allowed: o.allowed_peer_ip,
            denied: o.denied_peer_ip,
            allow_loopback: o.allow_loopback_peers.unwrap_or(false),
            // The SFU's own addresses are added when it binds (main.rs).
            allowed_endpoints: Vec::new(),
        };

        let max_permissions = o.max_permissions.unwrap_or(defaults::MAX_PERMISSIONS);
        if max_permissions == 0 {
            return err(
                "max-permissions is 0: no peer could be reached; use 1 or more (default 128)",
            );
        }
        let max_channels = o.max_channels.unwrap_or(defaults::MAX_CHANNELS);
        if max_channels > MAX_CHANNELS_LIMIT {
            return err(format!(
                "max-channels {max_channels} is above {MAX_CHANNELS_LIMIT}, the number of TURN channel numbers; use at most {MAX_CHANNELS_LIMIT}"
            ));
        }

        let secs = |name: &str, v: Option<u64>, default: u64| -> Result<Duration, ConfigError> {
            let v = v.unwrap_or(default);
            if v == 0 {
                return err(format!(
                    "{name} is 0 seconds; use a positive number of seconds (default {default})"
                ));
            }
            if v > u64::from(u32::MAX) {
                return err(format!(
                    "{name} {v} is too large; use at most {} seconds",
                    u32::MAX
                ));
            }
            Ok(Duration::from_secs(v))
        };
        let stale_nonce = secs("stale-nonce", o.stale_nonce, defaults::STALE_NONCE)?;
        let max_allocate_lifetime = secs(
            "max-allocate-lifetime",
            o.max_allocate_lifetime,
            defaults::MAX_ALLOCATE_LIFETIME,
        )?;
        let default_allocate_lifetime = secs(
            "default-allocate-lifetime",
            o.default_allocate_lifetime,
            defaults::DEFAULT_ALLOCATE_LIFETIME,
        )?;
        if default_allocate_lifetime > max_allocate_lifetime {
            return err(format!(
                "default-allocate-lifetime {}s is above max-allocate-lifetime {}s; lower the default or raise the maximum",
                default_allocate_lifetime.as_secs(),
                max_allocate_lifetime.as_secs()
            ));
        }
        let permission_lifetime = secs(
            "permission-lifetime",
            o.permission_lifetime,
            defaults::PERMISSION_LIFETIME,
        )?;
        let channel_lifetime = secs(
            "channel-lifetime",
            o.channel_lifetime,
            defaults::CHANNEL_LIFETIME,
        )?;

        let max_tcp_connections = o
            .max_tcp_connections
            .unwrap_or(defaults::MAX_TCP_CONNECTIONS);
        if tcp && max_tcp_connections == 0 {
            return err(
                "max-tcp-connections is 0 while TCP is enabled; use 1 or more, or set no-tcp",
            );
        }
        // tokio's semaphore holds at most usize::MAX >> 3 permits.
        if max_tcp_connections > 1 << 24 {
            return err(format!(
                "max-tcp-connections {max_tcp_connections} is too large; use at most {}",
                1 << 24
            ));
        }

        let turn_workers = match o.turn_workers.unwrap_or(1) {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        if turn_workers > 256 {
            return err(format!(
                "turn-workers {turn_workers} is too many; use at most 256 (0: one per CPU)"
            ));
        }

        let software = if o.no_software.unwrap_or(false) {
            None
        } else {
            Some(o.software.unwrap_or_else(|| defaults::SOFTWARE.to_owned()))
        };
        if let Some(s) = &software {
            if s.len() > MAX_TEXT_BYTES {
                return err(format!(
                    "software is {} bytes; SOFTWARE holds at most {MAX_TEXT_BYTES}",
                    s.len()
                ));
            }
        }

        let http_ips_default = o.http_ip.is_empty();
        let mut http_ips = if http_ips_default {
            vec![
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ]
        } else {
            o.http_ip.clone()
        };
        dedup(&mut http_ips);
        let http_port = o.http_port.unwrap_or(defaults::HTTP_PORT);
        let sfu_port = o.sfu_port.unwrap_or(defaults::SFU_PORT);
        let sfu_tcp = !o.no_sfu_tcp.unwrap_or(false);
        if sfu_port != 0 && sfu_port == listening_port {
            return err(format!(
                "sfu-port {sfu_port} is also the TURN listening-port; give the SFU its own port (default {})",
                defaults::SFU_PORT
            ));
        }
        if sfu_port != 0 && sfu_tcp && sfu_port == http_port {
            return err(format!(
                "sfu-port {sfu_port} is also the http-port; give the SFU its own port (default {}) or set no-sfu-tcp",
                defaults::SFU_PORT
            ));
        }
        let http_max_connections = o
            .http_max_connections
            .unwrap_or(defaults::HTTP_MAX_CONNECTIONS);
        if http_max_connections == 0 || http_max_connections > 1 << 24 {
            return err(format!(
                "http-max-connections {http_max_connections} is out of range; use 1 to {} (default {})",
                1 << 24,
                defaults::HTTP_MAX_CONNECTIONS
            ));
        }
        let no_tls = o.no_tls.unwrap_or(false);
        let tls = match (o.tls_cert.clone(), o.tls_key.clone(), o.tls_self_signed) {
            _ if acme.is_some() && no_tls => {
                return err("no-tls is set together with acme-domain; drop no-tls to serve HTTPS with a certificate from the CA, or drop acme-domain");
            }
            _ if acme.is_some() && (o.tls_cert.is_some() || o.tls_key.is_some()) => {
                return err("acme-domain is set together with tls-cert/tls-key, and the certificate comes from one of them: drop tls-cert and tls-key to get it from the ACME CA, or drop acme-domain to serve the files");
            }
            _ if acme.is_some() && o.tls_self_signed == Some(true) => {
                return err("acme-domain is set together with tls-self-signed; drop tls-self-signed (tsunagi serves its self-signed certificate by itself until the CA's arrives)");
            }
            _ if acme.is_some() && data_dir.is_none() => {
                return err("acme-domain needs a data-dir to keep the ACME account and certificate across restarts, and there is no home directory to default to; set data-dir");
            }
            _ if acme.is_some() => acme.map(TlsSource::Acme),
            _ if no_tls && (o.tls_cert.is_some() || o.tls_self_signed == Some(true)) => {
                return err("no-tls is set together with tls-cert or tls-self-signed; use one");
            }
            _ if no_tls => None,
            (None, None, None) => Some(TlsSource::SelfSigned { explicit: false }),
            (None, None, Some(explicit)) => Some(TlsSource::SelfSigned { explicit }),
            (Some(cert), Some(key), None | Some(false)) => Some(TlsSource::Files { cert, key }),
            (Some(_), Some(_), Some(true)) => {
                return err("tls-self-signed is set together with tls-cert and tls-key; use either the files or a generated certificate");
            }
            (Some(_), None, _) => return err("tls-cert is set without tls-key; set both"),
            (None, Some(_), _) => return err("tls-key is set without tls-cert; set both"),
        };
        let tls_listening_port = o.tls_listening_port.unwrap_or(defaults::TLS_LISTENING_PORT);
        // Port 0 (any free port, in tests) never collides.
        if http_port != 0 && tcp && http_port == listening_port {
            return err(format!(
                "http-port {http_port} is also the TCP listening-port; give the HTTP server its own port (default {})",
                defaults::HTTP_PORT
            ));
        }
        let turn_tls = tls.as_ref().is_some_and(TlsSource::serves_turn);
        if turn_tls && tls_listening_port != 0 && tcp && tls_listening_port == listening_port {
            return err(format!(
                "tls-listening-port {tls_listening_port} is also the TCP listening-port; use another (default {}), or http-port's for one port",
                defaults::TLS_LISTENING_PORT
            ));
        }

        let log_level = o
            .log_level
            .or(rust_log)
            .unwrap_or_else(|| defaults::LOG_LEVEL.to_owned());
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_level) {
            return err(format!(
                "log-level '{log_level}' is not a tracing filter ({e}); use e.g. info, debug or tsunagi=debug,warn"
            ));
        }

        Ok(Config {
            listening_ips,
            listening_ips_default,
            listening_port,
            udp,
            tcp,
            discovery,
            relay_ips,
            relay_ips_auto,
            external_ips: o.external_ip,
            min_port,
            max_port,
            realm,
            credentials,
            peer_policy,
            user_quota: o.user_quota.unwrap_or(0),
            total_quota: o.total_quota.unwrap_or(0),
            max_bps: o.max_bps.unwrap_or(0),
            max_permissions,
            max_channels,
            stale_nonce,
            max_allocate_lifetime,
            default_allocate_lifetime,
            permission_lifetime,
            channel_lifetime,
            max_tcp_connections,
            turn_workers,
            software,
            log_level,
            log_format: o.log_format.unwrap_or_default(),
            redact_logs: o.redact_logs.unwrap_or(false),
            http_ips,
            http_ips_default,
            http_port,
            sfu_port,
            sfu_tcp,
            sfu_rtp_mode: o.sfu_rtp_mode.unwrap_or(true),
            http_max_connections,
            tls,
            data_dir,
            tls_listening_port,
            proxy_protocol: o.proxy_protocol_ip,
            trusted_proxies: o.trusted_proxy_ip,
            signaling,
            cluster,
        })
    }
}

impl SignalingConfig {
    pub(super) fn resolve(o: &Options) -> Result<SignalingConfig, ConfigError> {
        fn range<T: PartialOrd + fmt::Display + Copy>(
            name: &str,
            v: Option<T>,
            default: T,
            lo: T,
            hi: T,
        ) -> Result<T, ConfigError> {
            let v = v.unwrap_or(default);
            if v < lo || v > hi {
                return err(format!(
                    "{name} {v} is out of range; use {lo} to {hi} (default {default})"
                ));
            }
            Ok(v)
        }
        let token_secret = match &o.token_secret {
            Some(s) if s.0.chars().count() < 16 => {
                return err("token-secret is shorter than 16 characters; use a long random string, e.g. from `openssl rand -hex 32`");
            }
            other => other.clone(),
        };
        let public_host = match o.public_host.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(h) => Some(public_host(h)?),
        };
        let max_room_peers = range(
            "max-room-peers",
            o.max_room_peers,
            defaults::MAX_ROOM_PEERS,
            1,
            1000,
        )?;
        let mesh_max_peers = range(
            "mesh-max-peers",
            o.mesh_max_peers,
            defaults::MESH_MAX_PEERS,
            1,
            32,
        )?;
        if max_room_peers < mesh_max_peers {
            return err(format!(
                "max-room-peers {max_room_peers} is less than mesh-max-peers {mesh_max_peers}; \
                 max-room-peers is the limit of rooms that may run as SFU, so set it at least \
                 as high (or lower mesh-max-peers)"
            ));
        }
        Ok(SignalingConfig {
            token_secret,
            public_host,
            max_room_peers,
            mesh_max_peers,
            room_mode: o.room_mode.unwrap_or_default(),
            sfu: !o.no_sfu.unwrap_or(false),
            max_rooms: range("max-rooms", o.max_rooms, defaults::MAX_ROOMS, 1, 1_000_000)?,
            max_message_bytes: range(
                "max-message-bytes",
                o.max_message_bytes,
                defaults::MAX_MESSAGE_BYTES,
                1024,
                1024 * 1024,
            )?,
            messages_per_second: range(
                "messages-per-second",
                o.messages_per_second,
                defaults::MESSAGES_PER_SECOND,
                0,
                10_000,
            )?,
            resume_grace: Duration::from_secs(range(
                "resume-grace",
                o.resume_grace,
                defaults::RESUME_GRACE,
                0,
                3600,
            )?),
            turn_credential_ttl: Duration::from_secs(range(
                "turn-credential-ttl",
                o.turn_credential_ttl,
                defaults::TURN_CREDENTIAL_TTL,
                60,
                7 * 86_400,
            )?),
        })
    }
}

/// The `acme-*` options: `None` without `acme-domain` (and then none of the others may
/// be set).
fn resolve_acme(o: &Options) -> Result<Option<AcmeConfig>, ConfigError> {
    if o.acme_domain.is_empty() {
        let orphan = [
            ("acme-email", o.acme_email.is_some()),
            ("acme-directory", o.acme_directory.is_some()),
            ("acme-ca-root", o.acme_ca_root.is_some()),
            ("acme-challenge", o.acme_challenge.is_some()),
        ]
        .into_iter()
        .find(|(_, set)| *set);
        if let Some((name, _)) = orphan {
            return err(format!(
                "{name} is set without acme-domain; name this server's DNS name with acme-domain (e.g. turn.example.com) to get a certificate from the CA, or drop {name}"
            ));
        }
        return Ok(None);
    }
    let mut domains: Vec<String> = Vec::new();
    for raw in &o.acme_domain {
        let name = acme_domain(raw)?;
        if !domains.contains(&name) {
            domains.push(name);
        }
    }
    if domains.len() > defaults::ACME_MAX_DOMAINS {
        return err(format!(
            "acme-domain names {} names; one certificate covers at most {} (the CA's limit)",
            domains.len(),
            defaults::ACME_MAX_DOMAINS
        ));
    }
    let email = match o.acme_email.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(e) => Some(acme_email(e)?),
    };
    let directory = match o.acme_directory.as_deref().map(str::trim) {
        None | Some("") => defaults::ACME_DIRECTORY.to_owned(),
        Some(d) => acme_directory(d)?,
    };
    Ok(Some(AcmeConfig {
        domains,
        email,
        directory,
        ca_root: o.acme_ca_root.clone(),
        challenge: o.acme_challenge.unwrap_or_default(),
    }))
}

/// One `acme-domain`: a fully qualified DNS name, lowercase, without a trailing dot.
fn acme_domain(raw: &str) -> Result<String, ConfigError> {
    let name = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    let bare = name
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(&name);
    if bare.parse::<IpAddr>().is_ok() {
        return err(format!(
            "acme-domain {raw} is an IP address; tsunagi gets ACME certificates for DNS names: give the name that points to this server (e.g. turn.example.com), or use tls-cert and tls-key for a certificate of an IP address"
        ));
    }
    if name.starts_with("*.") {
        return err(format!(
            "acme-domain {raw} is a wildcard; wildcard certificates need the DNS-01 challenge, which tsunagi does not answer: list each name this server uses"
        ));
    }
    let labels_ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !labels_ok {
        return err(format!(
            "acme-domain '{raw}' is not a DNS name; use letters, digits and hyphens in dot-separated labels of 1 to 63 characters, e.g. turn.example.com (an internationalized name in its xn-- form), without scheme or port"
        ));
    }
    let last = name.rsplit('.').next().unwrap_or_default();
    if !name.contains('.') || last.bytes().all(|b| b.is_ascii_digit()) {
        return err(format!(
            "acme-domain {raw} is not a fully qualified name; CAs issue certificates for names under a public domain, e.g. turn.example.com"
        ));
    }
    Ok(name)
}

/// `acme-email`: an address (a `mailto:` prefix is dropped).
fn acme_email(raw: &str) -> Result<String, ConfigError> {
    let e = raw.strip_prefix("mailto:").unwrap_or(raw);
    let ok = match e.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
                && e.len() <= 254
                && e.chars().all(|c| c.is_ascii_graphic() && c != ',')
        }
        None => false,
    };
    if !ok {
        return err(format!(
            "acme-email '{raw}' is not an email address; give one like admin@example.com (or leave acme-email out)"
        ));
    }
    Ok(e.to_owned())
}

/// `acme-directory`: an https URL with a host.
fn acme_directory(raw: &str) -> Result<String, ConfigError> {
    let fix = "give the CA's ACME directory URL, e.g. https://acme-v02.api.letsencrypt.org/directory (Let's Encrypt) or https://acme-staging-v02.api.letsencrypt.org/directory (its staging CA, for trials)";
    let uri: axum::http::Uri = raw
        .parse()
        .map_err(|e| ConfigError(format!("acme-directory '{raw}' is not a URL ({e}); {fix}")))?;
    if uri.scheme_str() != Some("https") || uri.host().is_none_or(str::is_empty) {
        return err(format!(
            "acme-directory '{raw}' is not an https URL (ACME runs over HTTPS only); {fix}"
        ));
    }
    Ok(raw.to_owned())
}

/// A DNS name or an IP address, as it goes into `stun:HOST:PORT` (IPv6 bracketed).
pub(super) fn public_host(h: &str) -> Result<String, ConfigError> {
    let bare = h
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(h);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        });
    }
    let name_ok = h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !name_ok {
        return err(format!(
            "public-host '{h}' is not a host name or IP address; write e.g. turn.example.org or 203.0.113.7 (no scheme, no port)"
        ));
    }
    Ok(h.to_ascii_lowercase())
}

pub(super) fn dedup<T: PartialEq + Copy>(v: &mut Vec<T>) {
    let mut seen: Vec<T> = Vec::with_capacity(v.len());
    v.retain(|x| {
        if seen.contains(x) {
            false
        } else {
            seen.push(*x);
            true
        }
    });
}

/// RFC 5780 groups: each specific listening IP with the alternate port, and with the
/// alternate IP of its family if there is one (the first listening IP of that family
/// takes it). coturn's semantics: an unset or zero `alt-listening-port` is
/// `listening-port + 1`.
pub(super) fn resolve_discovery(
    listening: &[IpAddr],
    port: u16,
    alt_ips: &[IpAddr],
    alt_port: Option<u16>,
    udp: bool,
) -> Result<Vec<DiscoveryAddresses>, ConfigError> {
    if alt_ips.is_empty() && alt_port.is_none() {
        return Ok(Vec::new());
    }
    if !udp {
        return err("alt-listening-ip/alt-listening-port set with no-udp: NAT discovery (RFC 5780) is UDP only; drop one of them");
    }
    if port == 0 {
        return err("alt-listening-ip/alt-listening-port need a fixed listening-port, not 0");
    }
    let alt_port = match alt_port.filter(|p| *p != 0) {
        Some(p) => p,
        None => port.checked_add(1).ok_or_else(|| {
            ConfigError(format!(
                "listening-port {port} has no port above it for NAT discovery; set alt-listening-port"
            ))
        })?,
    };
    if alt_port == port {
        return err(format!(
            "alt-listening-port {alt_port} is the listening-port; use another port (default listening-port + 1)"
        ));
    }
    if let Some(ip) = listening.iter().find(|ip| ip.is_unspecified()) {
        return err(format!(
            "NAT discovery (alt-listening-ip/alt-listening-port) needs specific listening addresses, and listening-ip includes {ip}; set listening-ip to the address clients reach (RESPONSE-ORIGIN and OTHER-ADDRESS name it)"
        ));
    }
    let mut pairs: Vec<(IpAddr, IpAddr)> = Vec::new();
    for &alt in alt_ips {
        if alt.is_unspecified() {
            return err(format!(
                "alt-listening-ip {alt} is a wildcard address; name the second address of this host"
            ));
        }
        if listening.contains(&alt) {
            return err(format!(
                "alt-listening-ip {alt} is also a listening-ip; the alternate address must be a different one"
            ));
        }
        if pairs.iter().any(|(_, a)| a.is_ipv4() == alt.is_ipv4()) {
            return err(format!(
                "alt-listening-ip {alt}: only one alternate address per family (IPv4, IPv6)"
            ));
        }
        let Some(primary) = listening.iter().find(|ip| ip.is_ipv4() == alt.is_ipv4()) else {
            return err(format!(
                "alt-listening-ip {alt} has no listening-ip of its family to pair with; add one"
            ));
        };
        pairs.push((*primary, alt));
    }
    Ok(listening
        .iter()
        .map(|&ip| DiscoveryAddresses {
            primary: SocketAddr::new(ip, port),
            alt_ip: pairs.iter().find(|(p, _)| *p == ip).map(|(_, a)| *a),
            alt_port,
        })
        .collect())
}

pub(super) fn join(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The default `data-dir`: systemd's `$STATE_DIRECTORY` (the unit's `StateDirectory=`),
/// else `$XDG_STATE_HOME/tsunagi`, else `~/.local/state/tsunagi`.
pub fn default_data_dir() -> Option<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var("STATE_DIRECTORY") {
        // systemd may list several, separated by ':'; the first is ours.
        let first = dir.to_string_lossy().split(':').next().map(PathBuf::from);
        return first;
    }
    if let Some(state) = var("XDG_STATE_HOME").filter(|p| p.is_absolute()) {
        return Some(state.join("tsunagi"));
    }
    var("HOME").map(|h| h.join(".local/state/tsunagi"))
}

/// `redis`, `node-name`, `cluster-url`, `drain-timeout`.
fn resolve_cluster(o: &Options) -> Result<Option<ClusterConfig>, ConfigError> {
    let Some(redis) = o.redis.clone().filter(|r| !r.0.trim().is_empty()) else {
        for (set, name) in [
            (o.node_name.is_some(), "node-name"),
            (o.cluster_url.is_some(), "cluster-url"),
            (o.drain_timeout.is_some(), "drain-timeout"),
        ] {
            if set {
                return err(format!(
                    "{name} is set but redis is not: {name} only applies to a cluster; add redis=redis://HOST:PORT or drop {name}"
                ));
            }
        }
        return Ok(None);
    };
    let scheme = redis.0.split_once("://").map(|(s, _)| s);
    if !matches!(scheme, Some("redis" | "rediss")) {
        return err(
            "redis is not a redis:// or rediss:// URL; write e.g. redis://127.0.0.1:6379/0 or rediss://:PASSWORD@redis.example.org:6380/0",
        );
    }
    let node_name = match o.node_name.as_deref().map(str::trim) {
        Some(n) if !n.is_empty() => n.to_owned(),
        _ => host_name().unwrap_or_else(|| "node".to_owned()),
    };
    if !tsunagi_cluster::node::valid_name(&node_name) {
        return err(format!(
            "node-name '{node_name}' is not a usable name: use 1 to 40 letters, digits, '-', '_' or '.'"
        ));
    }
    let url = match o.cluster_url.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(u) if u.starts_with("ws://") || u.starts_with("wss://") => Some(u.to_owned()),
        Some(u) => {
            return err(format!(
            "cluster-url '{u}' is not a WebSocket URL; write e.g. wss://node1.example.org:8443/ws"
        ))
        }
    };
    let drain = o.drain_timeout.unwrap_or(defaults::DRAIN_TIMEOUT);
    if !(1..=86_400).contains(&drain) {
        return err(format!(
            "drain-timeout {drain} is out of range; use 1 to 86400 seconds (default {})",
            defaults::DRAIN_TIMEOUT
        ));
    }
    Ok(Some(ClusterConfig {
        redis,
        node_name,
        url,
        drain_timeout: Duration::from_secs(drain),
    }))
}

/// The host name (from /proc), cut to a usable node name.
fn host_name() -> Option<String> {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(40)
        .collect();
    (!name.is_empty()).then_some(name)
}
