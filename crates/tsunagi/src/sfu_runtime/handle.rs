//! [`SfuHandle`]: how HTTP handlers (WHIP, WHEP, the room state, `/api/stats`,
//! `/metrics`) reach the running SFU core, through its command queue and its stats watch.

use std::fmt;
use std::sync::Arc;

use tokio::sync::{oneshot, watch};
use tsunagi_net::CoreSender;

use super::{Command, Created, HttpFailure, SessionKind, SfuSnapshot};

/// Reaches the running SFU from HTTP handlers; cheap to clone.
#[derive(Clone)]
pub struct SfuHandle {
    pub(super) commands: CoreSender<Command>,
    pub(super) stats: watch::Receiver<SfuSnapshot>,
    pub(super) token_secret: Option<Arc<[u8]>>,
    pub(super) signaling: Option<crate::signaling::SignalingHandle>,
}

impl fmt::Debug for SfuHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SfuHandle").finish_non_exhaustive()
    }
}

impl SfuHandle {
    /// The latest counters.
    pub fn snapshot(&self) -> SfuSnapshot {
        self.stats.borrow().clone()
    }

    /// Lets WHEP see the signaling rooms (a viewer of a room whose peers still run as a
    /// mesh is accepted and switches the room to SFU).
    pub fn with_signaling(mut self, signaling: crate::signaling::SignalingHandle) -> Self {
        self.signaling = Some(signaling);
        self
    }

    pub(crate) fn token_secret(&self) -> Option<&[u8]> {
        self.token_secret.as_deref()
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, HttpFailure>>) -> Command,
    ) -> Result<T, HttpFailure> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .try_send(make(tx))
            .map_err(|_| HttpFailure::new(503, "the SFU is busy; retry in a moment"))?;
        rx.await
            .unwrap_or_else(|_| Err(HttpFailure::new(503, "the SFU is shutting down")))
    }

    pub(crate) async fn create(
        &self,
        kind: SessionKind,
        room: String,
        offer: String,
    ) -> Result<Created, HttpFailure> {
        let room_has_peers = match (&self.signaling, kind) {
            (Some(s), SessionKind::Whep) => s.room_size(&room).await.unwrap_or(0) > 0,
            _ => false,
        };
        self.ask(|reply| Command::Create {
            kind,
            room,
            offer,
            room_has_peers,
            reply,
        })
        .await
    }

    pub(crate) async fn candidates(
        &self,
        kind: SessionKind,
        room: String,
        id: String,
        candidates: Vec<String>,
    ) -> Result<(), HttpFailure> {
        self.ask(|reply| Command::Candidates {
            kind,
            room,
            id,
            candidates,
            reply,
        })
        .await
    }

    /// The per-subscription state of `room` (docs/sfu.md, "Subscription state").
    pub(crate) async fn room_state(&self, room: String) -> Result<serde_json::Value, HttpFailure> {
        self.ask(|reply| Command::RoomState { room, reply }).await
    }

    pub(crate) async fn delete(
        &self,
        kind: SessionKind,
        room: String,
        id: String,
    ) -> Result<(), HttpFailure> {
        self.ask(|reply| Command::Delete {
            kind,
            room,
            id,
            reply,
        })
        .await
    }
}
