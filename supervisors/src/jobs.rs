//! The `jobs` subsystem: one supervisor over the job runner.

use std::sync::Arc;
use std::time::Duration;

use bulwark_actors::{JobRunnerActor, JobRunnerHandle, JobRunnerParams};
use futures::FutureExt;

use crate::subsystem::{ChildShape, SubsystemShape, SubsystemSpec, actor_spec};
use crate::supervisor::{DrainFn, SupervisionStrategy};

/// The `jobs` subsystem's shape. One-for-one with one child: the runner's in-flight set,
/// leases and drain flag are shared across its incarnations.
pub const SHAPE: SubsystemShape = SubsystemShape {
    name: "jobs",
    strategy: SupervisionStrategy::OneForOne,
    limits_note_opt: None,
    condition_opt: None,
    children: &[RUNNER],
};

const RUNNER: ChildShape = ChildShape {
    name: "job-runner",
    role: "claims jobs, runs each as a task, renews leases, drains",
};

/// Returns the `jobs` subsystem and the handle that reaches the runner; an operator's stop or
/// restart of the runner drains it first, within `drain_timeout`.
pub(crate) fn subsystem(
    instance: &str,
    params: JobRunnerParams,
    drain_timeout: Duration,
) -> SubsystemSpec<JobRunnerHandle> {
    let runner_name = RUNNER.registered_name(instance, "");
    let liveness = params.liveness.clone();
    let mut runner_spec = actor_spec(&runner_name, JobRunnerActor, params, Some(liveness));
    let handle = JobRunnerHandle::new(runner_name);
    runner_spec.drain = Some(drain_job_runner(handle.clone(), drain_timeout));
    SubsystemSpec::new(&SHAPE, vec![runner_spec], handle)
}

/// Returns the hook an operator's stop or restart of the job runner calls first: running jobs
/// finish within `timeout`, the rest go back to the queue.
fn drain_job_runner(handle: JobRunnerHandle, timeout: Duration) -> DrainFn {
    Arc::new(move || {
        let handle = handle.clone();
        async move {
            if let Some(report) = handle.drain(timeout).await {
                tracing::info!(
                    num_finished = report.num_finished,
                    num_released = report.num_released,
                    "job runner drained for an operator"
                );
            }
        }
        .boxed()
    })
}
