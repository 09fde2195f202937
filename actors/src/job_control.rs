//! [`JobControlActor`]: brings operators' controls stored in the database to this node. It
//! polls for cancel requests of running jobs and signals their attempts ([`CancelSignals`]),
//! and keeps the node's view of paused kinds ([`PausedKinds`]) that broker deliveries and
//! `/health` read; and it resolves the waits of jobs on their parents (workflows): released
//! once their parents succeeded, cancelled when one did not. Polling keeps both backends
//! alike; the requests index is empty but for jobs being cancelled and `job_waits` holds only
//! jobs waiting now, so a poll costs next to nothing.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use bulwark_core::{HandledMessage, Liveness};
use bulwark_store::{Store, StoreError};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::describe::DescribeMessage;
use crate::metrics::{JobCancelSignalled, KindPauseChanged, WaitsResolvedEvent};

/// The cancellation tokens of the attempts running on this node, by job id.
#[derive(Debug, Clone, Default)]
pub struct CancelSignals {
    tokens: Arc<Mutex<HashMap<String, CancellationToken>>>,
}

/// Keeps a job's token registered while its attempt runs; dropping it unregisters.
#[derive(Debug)]
pub struct CancelRegistration {
    signals: CancelSignals,
    job_id: String,
    pub token: CancellationToken,
}

impl Drop for CancelRegistration {
    fn drop(&mut self) {
        self.signals.lock().remove(&self.job_id);
    }
}

impl CancelSignals {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancellationToken>> {
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers the attempt of `job_id` and returns its token, cancelled when the job's
    /// cancel reaches this node.
    pub fn register(&self, job_id: &str) -> CancelRegistration {
        let token = CancellationToken::new();
        self.lock().insert(job_id.to_owned(), token.clone());
        CancelRegistration {
            signals: self.clone(),
            job_id: job_id.to_owned(),
            token,
        }
    }

    /// Cancels the tokens of those of `job_ids` running here; returns how many it cancelled
    /// for the first time.
    pub fn signal<'a>(&self, job_ids: impl IntoIterator<Item = &'a String>) -> usize {
        let tokens = self.lock();
        let mut num_signalled = 0;
        for job_id in job_ids {
            if let Some(token) = tokens.get(job_id)
                && !token.is_cancelled()
            {
                token.cancel();
                JobCancelSignalled { job_id }.emit();
                num_signalled += 1;
            }
        }
        num_signalled
    }

    /// Returns true when no attempt runs here (nothing to poll for).
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

/// This node's view of the paused kinds, refreshed from the store by the control actor.
#[derive(Debug, Clone, Default)]
pub struct PausedKinds {
    kinds: Arc<RwLock<BTreeSet<String>>>,
}

impl PausedKinds {
    /// Returns true when `kind` was paused at the last refresh.
    pub fn contains(&self, kind: &str) -> bool {
        self.kinds
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(kind)
    }

    /// Returns the paused kinds, by name.
    pub fn list(&self) -> Vec<String> {
        self.kinds
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// Reports every job kind's state in the pause gauge.
    fn report_all(&self) {
        let current = self.kinds.read().unwrap_or_else(PoisonError::into_inner);
        for kind in bulwark_core::JobKind::ALL {
            KindPauseChanged {
                kind: kind.as_str(),
                paused: current.contains(kind.as_str()),
            }
            .set_gauge();
        }
    }

    /// Replaces the view with `kinds` and reports each kind paused or resumed since.
    fn replace(&self, kinds: BTreeSet<String>) {
        let mut current = self.kinds.write().unwrap_or_else(PoisonError::into_inner);
        for kind in kinds.difference(&current) {
            KindPauseChanged { kind, paused: true }.emit();
        }
        for kind in current.difference(&kinds) {
            KindPauseChanged {
                kind,
                paused: false,
            }
            .emit();
        }
        *current = kinds;
    }
}

/// What a node's attempts are controlled through: the cancel tokens of its running jobs and
/// its view of paused kinds. Shared by the job runner, the broker consumers, the control
/// actor and the HTTP API.
#[derive(Debug, Clone)]
pub struct JobControls {
    pub cancels: CancelSignals,
    pub paused: PausedKinds,
    /// How long a cancelled job's code may take to stop by itself before its attempt is
    /// aborted (its provider calls and inference waits dropped).
    pub cancel_grace: Duration,
}

impl JobControls {
    /// The grace a cancelled job gets unless configured otherwise.
    pub const DEFAULT_CANCEL_GRACE: Duration = Duration::from_secs(5);
}

impl Default for JobControls {
    fn default() -> Self {
        JobControls {
            cancels: CancelSignals::default(),
            paused: PausedKinds::default(),
            cancel_grace: JobControls::DEFAULT_CANCEL_GRACE,
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct JobControlActor;

#[derive(Debug, Clone)]
pub struct JobControlParams {
    pub store: Store,
    pub controls: JobControls,
    /// Time between polls: how late a cancel or a pause may reach this node at most.
    pub interval: Duration,
    pub liveness: Liveness,
}

#[derive(Debug)]
pub enum JobControlMsg {
    Poll,
    /// Game-day fault (the `chaos` feature): panics, errors or hangs inside `handle`.
    #[cfg(feature = "chaos")]
    Chaos(crate::Fault),
}

impl DescribeMessage for JobControlMsg {
    fn describe(&self) -> HandledMessage {
        match self {
            JobControlMsg::Poll => HandledMessage::new(
                "JobControlMsg::Poll",
                "read cancel requests and paused kinds, resolve waits",
            ),
            #[cfg(feature = "chaos")]
            JobControlMsg::Chaos(fault) => fault.describe(),
        }
    }
}

impl Actor for JobControlActor {
    type Msg = JobControlMsg;
    type State = JobControlParams;
    type Arguments = JobControlParams;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        params: JobControlParams,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(params.interval, || JobControlMsg::Poll);
        myself.send_message(JobControlMsg::Poll)?;
        params.controls.paused.report_all();
        Ok(params)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        params: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let liveness = params.liveness.clone();
        let _busy = liveness.busy_with(message.describe());
        match message {
            JobControlMsg::Poll => {
                if let Err(error) = poll(params).await {
                    warn!(%error, "failed to read job controls, trying again next poll");
                }
            }
            #[cfg(feature = "chaos")]
            JobControlMsg::Chaos(fault) => fault.commit("job control").await?,
        }
        Ok(())
    }
}

/// Signals the cancels asked for jobs running here, refreshes the paused kinds, then
/// resolves the waits of jobs on their parents (every node does; each change is conditional,
/// so two nodes resolving the same wait change it once).
async fn poll(params: &JobControlParams) -> Result<(), StoreError> {
    let controls = &params.controls;
    if !controls.cancels.is_empty() {
        let requested = params.store.cancel_requested_jobs().await?;
        let num_signalled = controls.cancels.signal(&requested);
        debug!(
            num_requested = requested.len(),
            num_signalled, "cancel requests read"
        );
    }
    let paused = params.store.paused_kinds().await?;
    controls
        .paused
        .replace(paused.into_iter().map(|paused| paused.kind).collect());
    let resolved = params.store.resolve_waiting_jobs().await?;
    WaitsResolvedEvent {
        resolved: &resolved,
    }
    .emit();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves a signal reaches only registered jobs, once, and a finished attempt's
    /// registration is gone.
    #[test]
    fn signals_reach_registered_attempts_once() {
        let signals = CancelSignals::default();
        let registration = signals.register("job-1");
        let other = signals.register("job-2");
        let requested = ["job-1".to_owned(), "job-9".to_owned()];
        assert_eq!(signals.signal(&requested), 1);
        assert!(registration.token.is_cancelled());
        assert!(!other.token.is_cancelled());
        assert_eq!(signals.signal(&requested), 0, "a token is cancelled once");
        drop(registration);
        drop(other);
        assert!(signals.is_empty());
    }

    /// Proves the paused view answers by kind after a refresh.
    #[test]
    fn paused_view_follows_refreshes() {
        let paused = PausedKinds::default();
        paused.replace(BTreeSet::from(["audit.run".to_owned()]));
        assert!(paused.contains("audit.run"));
        assert!(!paused.contains("sentiment.analyze"));
        paused.replace(BTreeSet::new());
        assert!(paused.list().is_empty());
    }
}
