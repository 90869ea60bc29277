//! Supervision of the cores: every long-running thread or task (TURN workers and
//! acceptors, the SFU, signaling, HTTP) runs through a [`Health`] registry. One that
//! panics or returns while tsunagi is serving is a fault: it shows on `/healthz` and
//! `main` ends the process with a non-zero status, naming it.
//!
//! A core ends normally only after [`Health::begin_shutdown`]. Debug builds (the
//! tests) can make a named core panic with `TSUNAGI_DEBUG_FAULT=<core>[@<ms>]`;
//! release builds have no such hook.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use serde::Serialize;
use tokio::sync::Notify;

/// The component a core belongs to, as `/healthz` groups them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Component {
    Turn,
    Sfu,
    Signaling,
    Http,
    /// The tasks that keep the certificate current (file reloads, ACME renewals).
    Tls,
    /// Cluster membership: the heartbeat and the relay (`crate::cluster`).
    Cluster,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Turn => "turn",
            Component::Sfu => "sfu",
            Component::Signaling => "signaling",
            Component::Tls => "tls",
            Component::Http => "http",
            Component::Cluster => "cluster",
        }
    }
}

/// A core that stopped while tsunagi was serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub component: Component,
    /// The core, e.g. "turn worker 0" or "sfu core".
    pub core: String,
    /// "panicked: <message>" or "returned".
    pub reason: String,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "core '{}' ({}) {}",
            self.core,
            self.component.as_str(),
            self.reason
        )
    }
}

impl std::error::Error for Fault {}

#[derive(Debug, Clone, PartialEq, Eq)]
enum CoreState {
    Running,
    Stopped,
    Down(String),
}

#[derive(Debug)]
struct Core {
    component: Component,
    name: String,
    state: CoreState,
}

#[derive(Debug, Default)]
struct Inner {
    /// One entry per core started: bounded by the configuration (workers, listeners).
    cores: Mutex<Vec<Core>>,
    stopping: AtomicBool,
    /// The first fault, for [`Health::fault`].
    first_fault: Mutex<Option<Fault>>,
    faulted: Notify,
}

/// The registry of cores. Cheap to clone; `Default` gives one nobody watches (tests
/// that start a single service).
#[derive(Debug, Clone, Default)]
pub struct Health {
    inner: Arc<Inner>,
}

/// The state of one component on `/healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComponentReport {
    /// "up", "down" or "stopped" (during shutdown).
    pub status: &'static str,
    /// Cores started for it.
    pub cores: usize,
    /// The cores that are down, with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub down: Vec<DownCore>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DownCore {
    pub core: String,
    pub reason: String,
}

/// The body of `/healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// "ok", "down" (a core failed) or "stopping".
    pub status: &'static str,
    pub components: std::collections::BTreeMap<&'static str, ComponentReport>,
}

impl Report {
    /// Whether a load balancer should send traffic here.
    pub fn ok(&self) -> bool {
        self.status == "ok"
    }
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    /// From now on a core that ends is stopping, not failing.
    pub fn begin_shutdown(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
    }

    pub fn is_stopping(&self) -> bool {
        self.inner.stopping.load(Ordering::SeqCst)
    }

    /// Waits for the first fault.
    pub async fn fault(&self) -> Fault {
        loop {
            let notified = self.inner.faulted.notified();
            if let Some(f) = lock(&self.inner.first_fault).clone() {
                return f;
            }
            notified.await;
        }
    }

    /// The state of every component.
    pub fn report(&self) -> Report {
        let cores = lock(&self.inner.cores);
        let mut components = std::collections::BTreeMap::new();
        let mut any_down = false;
        for c in cores.iter() {
            let r = components
                .entry(c.component.as_str())
                .or_insert(ComponentReport {
                    status: "up",
                    cores: 0,
                    down: Vec::new(),
                });
            r.cores += 1;
            match &c.state {
                CoreState::Running => {}
                CoreState::Stopped => {
                    if r.status == "up" {
                        r.status = "stopped";
                    }
                }
                CoreState::Down(reason) => {
                    any_down = true;
                    r.status = "down";
                    r.down.push(DownCore {
                        core: c.name.clone(),
                        reason: reason.clone(),
                    });
                }
            }
        }
        let status = if any_down {
            "down"
        } else if self.is_stopping() {
            "stopping"
        } else {
            "ok"
        };
        Report { status, components }
    }

    /// Registers a core; the returned watch reports how it ends.
    fn register(&self, component: Component, name: String) -> Watch {
        let mut cores = lock(&self.inner.cores);
        cores.push(Core {
            component,
            name: name.clone(),
            state: CoreState::Running,
        });
        Watch {
            health: self.clone(),
            index: cores.len() - 1,
            component,
            name,
        }
    }

    /// Runs `fut` as a supervised core; spawn the result. Its output is `None` if
    /// it panicked.
    pub fn task<F>(
        &self,
        component: Component,
        name: impl Into<String>,
        fut: F,
    ) -> impl Future<Output = Option<F::Output>> + Send + 'static
    where
        F: Future + Send + 'static,
        F::Output: Send,
    {
        let watch = self.register(component, name.into());
        let injected = debug_fault(&watch.name);
        async move {
            let run = async move {
                match injected {
                    Some(after) => {
                        tokio::select! {
                            out = fut => out,
                            () = tokio::time::sleep(after) => panic!("{}", INJECTED),
                        }
                    }
                    None => fut.await,
                }
            };
            match AssertUnwindSafe(run).catch_unwind().await {
                Ok(out) => {
                    watch.ended(None);
                    Some(out)
                }
                Err(panic) => {
                    watch.ended(Some(panic));
                    None
                }
            }
        }
    }

    /// Spawns `fut` as a supervised core on the tokio runtime.
    pub fn spawn<F>(
        &self,
        component: Component,
        name: impl Into<String>,
        fut: F,
    ) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let task = self.task(component, name, fut);
        tokio::spawn(async move {
            let _ = task.await;
        })
    }

    /// Runs `f` as a supervised core on the current (dedicated) thread. Its output is
    /// `None` if it panicked.
    pub fn thread<T>(
        &self,
        component: Component,
        name: impl Into<String>,
        f: impl FnOnce() -> T,
    ) -> Option<T> {
        let watch = self.register(component, name.into());
        let injected = debug_fault(&watch.name);
        let run = move || {
            if let Some(after) = injected {
                // The hook of a thread fires before its loop starts.
                std::thread::sleep(after);
                panic!("{}", INJECTED);
            }
            f()
        };
        match std::panic::catch_unwind(AssertUnwindSafe(run)) {
            Ok(out) => {
                watch.ended(None);
                Some(out)
            }
            Err(panic) => {
                watch.ended(Some(panic));
                None
            }
        }
    }
}

const INJECTED: &str = "fault injected by TSUNAGI_DEBUG_FAULT";

/// How one registered core ends.
#[derive(Debug)]
struct Watch {
    health: Health,
    index: usize,
    component: Component,
    name: String,
}

impl Watch {
    fn ended(self, panic: Option<Box<dyn Any + Send>>) {
        let inner = &self.health.inner;
        let stopping = inner.stopping.load(Ordering::SeqCst);
        let state = match (&panic, stopping) {
            (None, true) => CoreState::Stopped,
            (None, false) => CoreState::Down("returned".to_owned()),
            (Some(p), _) => CoreState::Down(format!("panicked: {}", panic_message(p.as_ref()))),
        };
        if let CoreState::Down(reason) = &state {
            let fault = Fault {
                component: self.component,
                core: self.name.clone(),
                reason: reason.clone(),
            };
            tracing::error!(
                component = self.component.as_str(),
                core = %self.name,
                reason = %reason,
                "a core stopped"
            );
            let mut first = lock(&inner.first_fault);
            if first.is_none() {
                *first = Some(fault);
            }
            drop(first);
            inner.faulted.notify_waiters();
        }
        if let Some(c) = lock(&inner.cores).get_mut(self.index) {
            c.state = state;
        }
    }
}

fn panic_message(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The delay after which the core `name` must panic: `TSUNAGI_DEBUG_FAULT=<name>` or
/// `<name>@<ms>`, in debug builds only.
#[cfg(debug_assertions)]
fn debug_fault(name: &str) -> Option<std::time::Duration> {
    let spec = std::env::var("TSUNAGI_DEBUG_FAULT").ok()?;
    let (core, ms) = match spec.rsplit_once('@') {
        Some((core, ms)) => (core, ms.parse().ok()?),
        None => (spec.as_str(), 0),
    };
    (core == name).then(|| std::time::Duration::from_millis(ms))
}

#[cfg(not(debug_assertions))]
fn debug_fault(_name: &str) -> Option<std::time::Duration> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_is_a_fault_and_a_stopped_one_is_not() {
        let h = Health::new();
        let ok = tokio::spawn(h.task(Component::Http, "http a", async { 7 }));
        assert_eq!(ok.await.unwrap(), Some(7));
        let f = h.fault().await;
        assert_eq!(f.core, "http a");
        assert_eq!(f.reason, "returned");
        let r = h.report();
        assert_eq!(r.status, "down");
        assert_eq!(r.components["http"].status, "down");

        let h = Health::new();
        let p = tokio::spawn(h.task(Component::Sfu, "sfu core", async {
            if true {
                panic!("boom");
            }
        }));
        assert_eq!(p.await.unwrap(), None);
        assert_eq!(h.fault().await.reason, "panicked: boom");

        let h = Health::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let t = tokio::spawn(h.task(Component::Signaling, "signaling core", async {
            let _ = rx.await;
        }));
        assert_eq!(h.report().status, "ok");
        assert_eq!(h.report().components["signaling"].status, "up");
        h.begin_shutdown();
        tx.send(()).unwrap();
        t.await.unwrap();
        let r = h.report();
        assert_eq!(r.status, "stopping");
        assert_eq!(r.components["signaling"].status, "stopped");
    }

    #[test]
    fn a_panicking_thread_is_a_fault() {
        let h = Health::new();
        let h2 = h.clone();
        let out = std::thread::spawn(move || {
            h2.thread(Component::Turn, "turn worker 3", || -> u8 {
                panic!("worker")
            })
        })
        .join()
        .unwrap();
        assert_eq!(out, None);
        let r = h.report();
        assert_eq!(r.status, "down");
        assert_eq!(
            r.components["turn"].down,
            vec![DownCore {
                core: "turn worker 3".into(),
                reason: "panicked: worker".into()
            }]
        );
    }
}
