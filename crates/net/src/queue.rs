//! Bounded queues into a core that runs on a thread of its own ([`crate::poller`]):
//! tokio's `mpsc`, so that tasks can wait for room (TCP's backpressure) or drop when it
//! is full, and the core's waker, rung after every item so that a sleeping core wakes.
//! The core takes its input with `try_recv` between waits.

use tokio::sync::mpsc;

use crate::poller::CoreWaker;

/// The sending end of a queue into a core.
#[derive(Debug)]
pub struct CoreSender<T> {
    tx: mpsc::Sender<T>,
    waker: CoreWaker,
}

impl<T> Clone for CoreSender<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            waker: self.waker.clone(),
        }
    }
}

/// A queue of `capacity` items into the core that `waker` wakes.
pub fn core_channel<T>(capacity: usize, waker: CoreWaker) -> (CoreSender<T>, mpsc::Receiver<T>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (CoreSender { tx, waker }, rx)
}

impl<T> CoreSender<T> {
    /// Queues `item` without waiting; `Full` when the core is behind, `Closed` once it
    /// is gone.
    pub fn try_send(&self, item: T) -> Result<(), mpsc::error::TrySendError<T>> {
        self.tx.try_send(item)?;
        self.waker.wake();
        Ok(())
    }

    /// Queues `item`, waiting for room; `Err` once the core is gone.
    pub async fn send(&self, item: T) -> Result<(), mpsc::error::SendError<T>> {
        self.tx.send(item).await?;
        self.waker.wake();
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::poller::{Poller, WAKER};
    use std::time::Duration;

    /// An item queued while the core sleeps wakes it; a full queue refuses without
    /// waiting.
    #[test]
    fn an_item_wakes_a_sleeping_core_and_a_full_queue_refuses() {
        let mut p = Poller::new().unwrap();
        let (tx, mut rx) = core_channel::<u32>(1, p.waker());
        p.waker().sleeping();
        tx.try_send(1).unwrap();
        let mut out = Vec::new();
        p.wait(&mut out, Some(Duration::from_secs(5))).unwrap();
        assert_eq!(out, vec![WAKER]);
        assert!(matches!(
            tx.try_send(2),
            Err(mpsc::error::TrySendError::Full(2))
        ));
        assert_eq!(rx.try_recv().unwrap(), 1);
        drop(rx);
        assert!(matches!(
            tx.try_send(3),
            Err(mpsc::error::TrySendError::Closed(3))
        ));
    }
}
