use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;
use tokio::task::AbortHandle;

/// The jobs this node is running. It outlives any one job-runner actor, so a restarted runner
/// keeps renewing leases of jobs started before the restart, and shutdown waits for them all.
#[derive(Debug, Clone, Default)]
pub struct InFlightJobs {
    inner: Arc<InFlightInner>,
}

#[derive(Debug, Default)]
struct InFlightInner {
    tasks: Mutex<HashMap<String, AbortHandle>>,
    changed: Notify,
}

impl InFlightJobs {
    pub fn insert(&self, job_id: String, task: AbortHandle) {
        self.lock().insert(job_id, task);
        self.inner.changed.notify_waiters();
    }

    pub fn remove(&self, job_id: &str) {
        self.lock().remove(job_id);
        self.inner.changed.notify_waiters();
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    pub fn ids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Waits until no job is running.
    pub async fn wait_empty(&self) {
        loop {
            let changed = self.inner.changed.notified();
            if self.is_empty() {
                return;
            }
            changed.await;
        }
    }

    /// Aborts every running job task and returns their ids.
    pub fn abort_all(&self) -> Vec<String> {
        let mut tasks = self.lock();
        let ids: Vec<String> = tasks.keys().cloned().collect();
        for (_, task) in tasks.drain() {
            task.abort();
        }
        ids
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, AbortHandle>> {
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
