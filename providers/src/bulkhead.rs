//! The per-provider bulkhead: at most `max_concurrent` calls upstream at once, at most
//! `max_waiting` callers queued for a slot, and anyone beyond that refused at once, so a slow
//! provider holds a bounded number of tasks and never the whole node.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Slots and the waiting line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkheadParams {
    pub max_concurrent: usize,
    pub max_waiting: usize,
}

impl Default for BulkheadParams {
    fn default() -> Self {
        BulkheadParams {
            max_concurrent: 32,
            max_waiting: 64,
        }
    }
}

/// Why no slot was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkheadRejection {
    /// Every slot is taken and the waiting line is full.
    Full,
    /// Waited in line until the call's deadline.
    DeadlineReached,
}

#[derive(Debug)]
pub struct Bulkhead {
    params: BulkheadParams,
    slots: Arc<Semaphore>,
    num_waiting: AtomicUsize,
}

/// Leaves the waiting line when dropped, whether a slot came or not.
struct WaitingTicket<'a>(&'a AtomicUsize);

impl Drop for WaitingTicket<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Bulkhead {
    pub fn new(params: BulkheadParams) -> Self {
        Bulkhead {
            params,
            slots: Arc::new(Semaphore::new(params.max_concurrent.max(1))),
            num_waiting: AtomicUsize::new(0),
        }
    }

    pub fn params(&self) -> BulkheadParams {
        self.params
    }

    /// Returns the number of calls holding a slot.
    pub fn num_running(&self) -> usize {
        self.params.max_concurrent.max(1) - self.slots.available_permits()
    }

    /// Takes a slot, waiting in line until `deadline` if there is room in the line.
    pub async fn acquire(
        &self,
        deadline: Instant,
    ) -> Result<OwnedSemaphorePermit, BulkheadRejection> {
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(permit);
        }
        let num_ahead = self.num_waiting.fetch_add(1, Ordering::AcqRel);
        let _ticket = WaitingTicket(&self.num_waiting);
        if num_ahead >= self.params.max_waiting {
            return Err(BulkheadRejection::Full);
        }
        match tokio::time::timeout_at(deadline, Arc::clone(&self.slots).acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; treat it like a deadline all the same.
            Ok(Err(_)) | Err(_) => Err(BulkheadRejection::DeadlineReached),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Proves callers beyond the slots wait, callers beyond the line are refused at once, and a
    /// freed slot goes to a waiting caller.
    #[tokio::test]
    async fn slots_line_and_refusal() {
        let bulkhead = Arc::new(Bulkhead::new(BulkheadParams {
            max_concurrent: 1,
            max_waiting: 1,
        }));
        let deadline = Instant::now() + Duration::from_secs(5);
        let running = bulkhead.acquire(deadline).await.expect("free slot");
        let waiter = {
            let bulkhead = Arc::clone(&bulkhead);
            tokio::spawn(async move { bulkhead.acquire(deadline).await.map(|_| ()) })
        };
        while bulkhead.num_waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            bulkhead.acquire(deadline).await.unwrap_err(),
            BulkheadRejection::Full
        );
        drop(running);
        assert_eq!(waiter.await.unwrap(), Ok(()));
        let soon = Instant::now() + Duration::from_millis(20);
        let _held = bulkhead.acquire(soon).await.expect("free again");
        assert_eq!(
            bulkhead.acquire(soon).await.unwrap_err(),
            BulkheadRejection::DeadlineReached
        );
    }
}
