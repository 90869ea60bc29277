//! The run: clients started at the join rate, the chat window, the drain, the close, and
//! the report built from what they counted.

use super::*;

/// CPU seconds and RSS of the servers and of this process at one moment.
#[derive(Debug, Clone)]
struct Snapshot {
    at: Instant,
    cpu: Vec<Option<f64>>,
    rss: Vec<Option<u64>>,
    own_cpu: Option<f64>,
}

impl Snapshot {
    fn take(pids: &[u32]) -> Self {
        Self {
            at: Instant::now(),
            cpu: pids.iter().map(|&p| procfs::cpu_seconds(p)).collect(),
            rss: pids.iter().map(|&p| procfs::rss_kib(p)).collect(),
            own_cpu: procfs::cpu_seconds(std::process::id()),
        }
    }
}

/// CPU seconds per second between two snapshots (1.0 = one core busy).
fn util(a: Option<f64>, b: Option<f64>, secs: f64) -> Option<f64> {
    Some((b? - a?) / secs.max(1e-9))
}

pub(crate) struct Bench<'a> {
    args: &'a SignalArgs,
    shared: Arc<Shared>,
    phase: watch::Sender<Phase>,
    tasks: JoinSet<()>,
}

impl<'a> Bench<'a> {
    pub(crate) async fn run(args: &'a SignalArgs) -> Result<SignalReport, BenchError> {
        let start = Instant::now();
        let tls = net::tls_config(args)?;
        let mut targets = Vec::with_capacity(args.servers.len());
        for s in &args.servers {
            targets.push(Target::resolve(s, tls.clone()).await?);
        }
        let shared = Arc::new(Shared {
            start,
            rooms: args.rooms,
            servers: args.servers.len(),
            targets,
            token: args.token.clone(),
            mode: args.mode,
            room_prefix: args.room_prefix.clone(),
            name_prefix: args.name_prefix.clone(),
            plan: OnceLock::new(),
            counting: AtomicBool::new(true),
            joins_done: AtomicUsize::new(0),
            join_notify: Notify::new(),
            agg: Mutex::new(Agg::new(args.rooms, args.servers.len())),
        });
        let (phase, _) = watch::channel(Phase::Join);
        let mut b = Bench {
            args,
            shared,
            phase,
            tasks: JoinSet::new(),
        };
        let pids = &args.server_pids;
        let before = Snapshot::take(pids);
        b.join_all().await;
        let joined = Snapshot::take(pids);
        let joined_count = b.shared.agg().joined;
        if joined_count == 0 {
            b.close_all().await;
            let failures = b.shared.agg().join_failures.clone();
            return err(format!(
                "no client could join: {}",
                report::counts_text(&failures)
            ));
        }
        let (window_start, window_end) = b.fan_out().await;
        b.drain().await;
        let closed = b.close_all().await;
        let end = Snapshot::take(pids);
        Ok(b.report([&before, &joined, &window_start, &window_end, &end], closed))
    }

    /// Starts every client at the join rate and waits until each join has ended.
    async fn join_all(&mut self) {
        let n = self.args.clients;
        let in_flight = Arc::new(Semaphore::new(self.args.joins_in_flight));
        let first = tokio::time::Instant::now();
        for i in 0..n {
            if self.args.join_rate > 0.0 {
                let at = first + Duration::from_secs_f64(i as f64 / self.args.join_rate);
                tokio::time::sleep_until(at).await;
            }
            // Each permit is given back within JOIN_TIMEOUT (the client's join ends).
            let Ok(permit) = in_flight.clone().acquire_owned().await else {
                break;
            };
            let shared = self.shared.clone();
            let phase = self.phase.subscribe();
            self.tasks.spawn(client::run(
                i,
                self.args.server_of(i),
                shared,
                phase,
                permit,
            ));
        }
        // Every join ends within JOIN_TIMEOUT of its start; the margin covers a
        // generator too busy to notice at once.
        let deadline = tokio::time::Instant::now() + JOIN_TIMEOUT + Duration::from_secs(5);
        while self.shared.joins_done.load(Ordering::Acquire) < n {
            let wait = self.shared.join_notify.notified();
            if tokio::time::timeout_at(deadline, wait).await.is_err() {
                break;
            }
        }
    }

    /// The chat phase: warm-up and window. Returns the snapshots at the window's ends.
    async fn fan_out(&mut self) -> (Snapshot, Snapshot) {
        let a = self.args;
        // A moment for every task to see the phase change before the first send.
        let t0 = Instant::now() + Duration::from_millis(100);
        let window_start = t0 + Duration::from_secs_f64(a.warmup);
        let window_end = window_start + Duration::from_secs_f64(a.duration);
        let interval =
            (a.chat_rate > 0.0).then(|| Duration::from_secs_f64(a.clients as f64 / a.chat_rate));
        let plan = Plan {
            t0,
            interval,
            chat_rate: a.chat_rate,
            window_start_us: self.shared.us_since_start(window_start),
            window_end_us: self.shared.us_since_start(window_end),
            window_end,
        };
        let _ = self.shared.plan.set(plan);
        self.phase.send_replace(Phase::Chat);
        tokio::time::sleep_until(window_start.into()).await;
        let s = Snapshot::take(&a.server_pids);
        tokio::time::sleep_until(window_end.into()).await;
        let e = Snapshot::take(&a.server_pids);
        (s, e)
    }

    /// Waits for chats of the window still on their way, up to [`DRAIN`].
    async fn drain(&mut self) {
        let deadline = tokio::time::Instant::now() + DRAIN;
        while tokio::time::Instant::now() < deadline {
            {
                let agg = self.shared.agg();
                if agg.fanout.received() >= agg.fanout.expected() {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.shared.counting.store(false, Ordering::Release);
    }

    /// Tells every client to close and waits for them, up to [`CLOSE_TIMEOUT`]; the
    /// seconds it took.
    async fn close_all(&mut self) -> f64 {
        let started = Instant::now();
        self.phase.send_replace(Phase::Close);
        let deadline = tokio::time::Instant::now() + CLOSE_TIMEOUT;
        while !self.tasks.is_empty() {
            match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                Ok(Some(Ok(()))) => {}
                Ok(Some(Err(e))) => {
                    *self
                        .shared
                        .agg()
                        .close_failures
                        .entry(format!("task ended: {e}"))
                        .or_default() += 1;
                }
                Ok(None) => break,
                Err(_) => {
                    let left = self.tasks.len() as u64;
                    self.tasks.abort_all();
                    *self
                        .shared
                        .agg()
                        .close_failures
                        .entry("timeout".to_owned())
                        .or_default() += left;
                    break;
                }
            }
        }
        started.elapsed().as_secs_f64()
    }

    fn report(&self, s: [&Snapshot; 5], close_s: f64) -> SignalReport {
        let [before, joined, win_start, win_end, end] = s;
        let a = self.args;
        let agg = self.shared.agg();
        let join_secs = joined.at.duration_since(before.at).as_secs_f64();
        let win_secs = win_end.at.duration_since(win_start.at).as_secs_f64();
        let procs = a
            .server_pids
            .iter()
            .enumerate()
            .map(|(k, &pid)| {
                let on_server = agg.per_server.get(k).map_or(0, |p| p.joined);
                let rss_per_client = match (before.rss[k], joined.rss[k]) {
                    (Some(b), Some(j)) if on_server > 0 => {
                        Some((j as f64 - b as f64) / on_server as f64)
                    }
                    _ => None,
                };
                ProcUse {
                    pid,
                    join_cpu_util: util(before.cpu[k], joined.cpu[k], join_secs),
                    window_cpu_util: util(win_start.cpu[k], win_end.cpu[k], win_secs),
                    rss_start_kib: before.rss[k],
                    rss_joined_kib: joined.rss[k],
                    rss_end_kib: end.rss[k],
                    peak_rss_kib: procfs::peak_rss_kib(pid),
                    rss_per_client_kib: rss_per_client,
                }
            })
            .collect();
        let me = std::process::id();
        SignalReport {
            bench: "signal",
            servers: a
                .servers
                .iter()
                .zip(&agg.per_server)
                .map(|(url, p)| ServerResult {
                    url: url.clone(),
                    ..p.clone()
                })
                .collect(),
            clients: a.clients,
            rooms: a.rooms,
            room_size: a.room_size(),
            mode: a.mode,
            threads: a.threads,
            join_rate_target: a.join_rate,
            joins_in_flight: a.joins_in_flight,
            chat_rate_target: a.chat_rate,
            duration_s: win_secs,
            warmup_s: a.warmup,
            joined: agg.joined,
            join_failed: agg.join_failures.values().sum(),
            join_failures: agg.join_failures.clone(),
            join_s: agg.join_span_s(),
            join_per_sec: agg.join_rate(),
            join_latency_us: Latency::of(&agg.join_latency),
            welcome_modes: agg.welcome_modes.clone(),
            server_max_peers: agg.max_peers,
            mode_messages: agg.mode_messages,
            chats_sent: agg.fanout.sent_total,
            chats_sent_in_window: agg.fanout.sent_window,
            chat_per_sec: agg.fanout.sent_window as f64 / win_secs.max(1e-9),
            fanout: agg.fanout.result(),
            fanout_per_sec: agg.fanout.received() as f64 / win_secs.max(1e-9),
            errors: agg.errors.clone(),
            rate_limited: agg.errors.get("rate-limited").copied().unwrap_or(0),
            server_busy: agg.errors.get("server-busy").copied().unwrap_or(0),
            disconnects: agg.disconnects.clone(),
            closed_clean: agg.closed_clean,
            close_failures: agg.close_failures.clone(),
            close_s,
            server_procs: procs,
            generator: ProcUse {
                pid: me,
                join_cpu_util: util(before.own_cpu, joined.own_cpu, join_secs),
                window_cpu_util: util(win_start.own_cpu, win_end.own_cpu, win_secs),
                rss_start_kib: None,
                rss_joined_kib: None,
                rss_end_kib: procfs::rss_kib(me),
                peak_rss_kib: procfs::peak_rss_kib(me),
                rss_per_client_kib: None,
            },
            loadavg: loadavg(),
        }
    }
}
