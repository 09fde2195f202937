use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Semaphore;
use tokio::task::AbortHandle;
use tokio_util::task::TaskTracker;

/// The jobs this node is running. It outlives any one job-runner actor, so a restarted runner
/// keeps renewing leases of jobs started before the restart, and shutdown waits for them all.
///
/// A job is in flight from its claim until its outcome is stored. It is *pending* from its claim
/// until its code returns: first waiting for one of the node's execution slots (a semaphore
/// of `jobs.concurrency` permits, shared across runner restarts), then running. After that it
/// only waits for its outcome's write (group-committed with its neighbours'). Each job runs as
/// a task of one [`TaskTracker`], which a drain closes and waits for.
#[derive(Debug, Clone, Default)]
pub struct InFlightJobs {
    inner: Arc<InFlightInner>,
}

#[derive(Debug, Default)]
struct InFlightInner {
    jobs: Mutex<Jobs>,
    /// Every job's task, from its spawn until its outcome is stored.
    tasks: TaskTracker,
    /// The execution slots; replaced after a drain closed them.
    slots: Mutex<Option<Arc<Semaphore>>>,
}

#[derive(Debug, Default)]
struct Jobs {
    by_id: HashMap<String, InFlightJob>,
    num_executing: usize,
}

#[derive(Debug)]
struct InFlightJob {
    /// Set once the job's task is spawned; the entry exists before, so a task that finishes at
    /// once never races its own registration.
    task_opt: Option<AbortHandle>,
    executing: bool,
}

impl InFlightJobs {
    /// Returns the node's execution slots, made with `concurrency` permits if none are open.
    pub fn slots(&self, concurrency: usize) -> Arc<Semaphore> {
        let mut slots = self
            .inner
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        slots
            .get_or_insert_with(|| Arc::new(Semaphore::new(concurrency.max(1))))
            .clone()
    }

    /// Closes the execution slots: jobs still waiting for one give up (a drain hands them back
    /// to the queue); a runner started afterwards gets fresh slots.
    pub fn close_slots(&self) {
        let closed = self
            .inner
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(slots) = closed {
            slots.close();
        }
    }

    /// Registers a claimed job as pending and spawns `job` as its task, tracked until it
    /// returns. The job is registered before the task exists, so a task that finishes at once
    /// cannot race its own registration.
    pub fn spawn<F>(&self, job_id: &str, job: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.start(job_id);
        let task = self.inner.tasks.spawn(job);
        self.attach(job_id, task.abort_handle());
    }

    /// Registers a claimed job as pending, before its task is spawned.
    fn start(&self, job_id: &str) {
        let mut jobs = self.lock();
        let previous = jobs.by_id.insert(
            job_id.to_owned(),
            InFlightJob {
                task_opt: None,
                executing: true,
            },
        );
        if !previous.is_some_and(|job| job.executing) {
            jobs.num_executing += 1;
        }
    }

    /// Attaches the task of a started job, so a drain can abort it. A job that already finished
    /// is not registered again.
    fn attach(&self, job_id: &str, task: AbortHandle) {
        if let Some(job) = self.lock().by_id.get_mut(job_id) {
            job.task_opt = Some(task);
        }
    }

    /// Marks the job's code as returned: it no longer takes a slot, though it stays in flight
    /// until its outcome is stored.
    pub fn executed(&self, job_id: &str) {
        let mut jobs = self.lock();
        let was_executing = jobs
            .by_id
            .get_mut(job_id)
            .is_some_and(|job| std::mem::replace(&mut job.executing, false));
        if was_executing {
            jobs.num_executing -= 1;
        }
    }

    /// Forgets a job whose outcome was stored (or given up on).
    pub fn remove(&self, job_id: &str) {
        let mut jobs = self.lock();
        if jobs.by_id.remove(job_id).is_some_and(|job| job.executing) {
            jobs.num_executing -= 1;
        }
    }

    /// Returns the number of jobs in flight, executing or waiting for their outcome's write.
    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    /// Returns the number of pending jobs: claimed, and waiting for a slot or running.
    pub fn num_executing(&self) -> usize {
        self.lock().num_executing
    }

    pub fn is_empty(&self) -> bool {
        self.lock().by_id.is_empty()
    }

    /// Returns the ids of every job in flight (their leases must be renewed until stored).
    pub fn ids(&self) -> Vec<String> {
        self.lock().by_id.keys().cloned().collect()
    }

    /// Waits until every job task has returned, its outcome stored or given up on. Closes the
    /// tracker first, so the wait ends once the tasks in flight are done; a job spawned
    /// afterwards is still tracked.
    pub async fn wait_finished(&self) {
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    /// Aborts every job task in flight and returns their ids.
    pub fn abort_all(&self) -> Vec<String> {
        let mut jobs = self.lock();
        jobs.num_executing = 0;
        let ids: Vec<String> = jobs.by_id.keys().cloned().collect();
        for (_, job) in jobs.by_id.drain() {
            if let Some(task) = job.task_opt {
                task.abort();
            }
        }
        ids
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Jobs> {
        self.inner
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves slots are shared until closed, and that closing fails the jobs waiting for one
    /// while a later runner gets fresh slots.
    #[tokio::test]
    async fn closed_slots_turn_waiting_jobs_away() {
        let in_flight = InFlightJobs::default();
        let slots = in_flight.slots(1);
        assert!(Arc::ptr_eq(&slots, &in_flight.slots(5)));
        let held = slots.clone().acquire_owned().await.unwrap();
        let waiting = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire_owned().await.is_err() }
        });
        in_flight.close_slots();
        assert!(waiting.await.unwrap(), "a waiting job gives up");
        drop(held);
        assert_eq!(in_flight.slots(2).available_permits(), 2);
    }

    /// Proves a job counts against concurrency only while executing, stays in flight (for
    /// lease renewal and drains) until removed, and that a finish before attach is harmless.
    #[tokio::test]
    async fn executing_jobs_and_jobs_in_flight_are_counted_apart() {
        let in_flight = InFlightJobs::default();
        in_flight.start("a");
        in_flight.start("b");
        assert_eq!((in_flight.len(), in_flight.num_executing()), (2, 2));
        in_flight.executed("a");
        in_flight.executed("a");
        assert_eq!((in_flight.len(), in_flight.num_executing()), (2, 1));
        in_flight.remove("a");
        in_flight.remove("b");
        assert_eq!((in_flight.len(), in_flight.num_executing()), (0, 0));

        // A task that finished before its handle was attached is not registered again.
        let task = tokio::spawn(async {});
        in_flight.attach("b", task.abort_handle());
        assert!(in_flight.is_empty());
        in_flight.wait_finished().await;
    }

    /// Proves a drain's wait ends only once every spawned job task returned, and that the task
    /// is registered in flight while it runs.
    #[tokio::test]
    async fn wait_finished_waits_for_spawned_jobs() {
        let in_flight = InFlightJobs::default();
        let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
        let tracked = in_flight.clone();
        in_flight.spawn("a", async move {
            let _ = release_rx.await;
            tracked.remove("a");
        });
        assert_eq!(in_flight.ids(), vec!["a".to_owned()]);
        let mut wait = std::pin::pin!(in_flight.wait_finished());
        assert!(
            futures::poll!(wait.as_mut()).is_pending(),
            "a running job holds the drain"
        );
        release_tx.send(()).unwrap();
        wait.await;
        assert!(in_flight.is_empty());
    }
}
