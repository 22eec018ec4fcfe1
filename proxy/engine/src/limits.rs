//! Concurrency limit with a bounded, time-limited queue: at most
//! `maxConcurrentRequests` in flight to a destination, at most
//! `maxPendingRequests` waiting, each for at most `pendingTimeout`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::config::LimitSettings;

pub struct ConcurrencyLimit {
    settings: LimitSettings,
    slots: Arc<Semaphore>,
    waiting: AtomicU32,
}

/// Why a request was shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    QueueFull,
    PendingTimeout,
}

impl Shed {
    pub fn as_str(self) -> &'static str {
        match self {
            Shed::QueueFull => "queue-full",
            Shed::PendingTimeout => "pending-timeout",
        }
    }
}

impl ConcurrencyLimit {
    pub fn new(settings: LimitSettings) -> Self {
        ConcurrencyLimit {
            slots: Arc::new(Semaphore::new(settings.max_concurrent as usize)),
            settings,
            waiting: AtomicU32::new(0),
        }
    }

    pub fn settings(&self) -> &LimitSettings {
        &self.settings
    }

    /// A slot, held until the permit drops (the response body ends).
    pub async fn acquire(&self) -> Result<OwnedSemaphorePermit, Shed> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        // Join the queue only if it has room; undo the count on every exit.
        let queued = self.waiting.fetch_add(1, Ordering::AcqRel);
        let _leave = LeaveQueue(&self.waiting);
        if queued >= self.settings.max_pending {
            return Err(Shed::QueueFull);
        }
        match tokio::time::timeout(
            self.settings.pending_timeout,
            self.slots.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) | Err(_) => Err(Shed::PendingTimeout),
        }
    }
}

struct LeaveQueue<'a>(&'a AtomicU32);

impl Drop for LeaveQueue<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limit(max_concurrent: u32, max_pending: u32) -> ConcurrencyLimit {
        ConcurrencyLimit::new(LimitSettings {
            max_concurrent,
            max_pending,
            pending_timeout: Duration::from_millis(50),
        })
    }

    #[tokio::test]
    async fn sheds_beyond_queue_and_after_timeout() {
        let l = limit(2, 1);
        let a = l.acquire().await.unwrap();
        let _b = l.acquire().await.unwrap();
        // One may wait; it times out because nothing is released.
        assert_eq!(l.acquire().await.unwrap_err(), Shed::PendingTimeout);
        // With the queue taken, the next is shed at once.
        let (queued, shed) = tokio::join!(l.acquire(), async {
            tokio::task::yield_now().await;
            l.acquire().await
        });
        assert_eq!(shed.unwrap_err(), Shed::QueueFull);
        assert_eq!(queued.unwrap_err(), Shed::PendingTimeout);
        // A released slot goes to a waiter.
        let (waiter, ()) = tokio::join!(l.acquire(), async {
            tokio::task::yield_now().await;
            drop(a);
        });
        assert!(waiter.is_ok());
    }

    #[tokio::test]
    async fn zero_pending_sheds_immediately() {
        let l = limit(1, 0);
        let _a = l.acquire().await.unwrap();
        assert_eq!(l.acquire().await.unwrap_err(), Shed::QueueFull);
    }
}
