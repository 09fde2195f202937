//! The `jobs` subsystem: one supervisor over the job runner and the node's membership.

use std::sync::Arc;
use std::time::Duration;

use bulwark_actors::{
    JobRunnerActor, JobRunnerHandle, JobRunnerParams, NodeMembershipActor, NodeMembershipParams,
};
use futures::FutureExt;

use crate::subsystem::{ChildShape, SubsystemShape, SubsystemSpec, actor_spec};
use crate::supervisor::{DrainFn, SupervisionStrategy};

/// The `jobs` subsystem's shape. One-for-one: the runner's in-flight set, leases and drain flag
/// are shared across its incarnations, and the membership's identity across its own.
pub const SHAPE: SubsystemShape = SubsystemShape {
    name: "jobs",
    strategy: SupervisionStrategy::OneForOne,
    limits_note_opt: None,
    condition_opt: None,
    children: &[RUNNER, MEMBERSHIP],
};

const RUNNER: ChildShape = ChildShape {
    name: "job-runner",
    role: "claims jobs, runs each as a task, renews leases, drains",
};

const MEMBERSHIP: ChildShape = ChildShape {
    name: "node-membership",
    role: "writes the node's heartbeat, fences silent nodes, reclaims their jobs",
};

/// What the `jobs` subsystem is started with.
#[derive(Debug)]
pub(crate) struct JobsParams {
    pub runner: JobRunnerParams,
    pub membership: NodeMembershipParams,
    /// How long an operator's stop or restart of the runner lets running jobs finish.
    pub drain_timeout: Duration,
}

/// Returns the `jobs` subsystem and the handle that reaches the runner; an operator's stop or
/// restart of the runner drains it first, within `drain_timeout`.
pub(crate) fn subsystem(instance: &str, params: JobsParams) -> SubsystemSpec<JobRunnerHandle> {
    let runner_name = RUNNER.registered_name(instance, "");
    let runner_liveness = params.runner.liveness.clone();
    let mut runner_spec = actor_spec(
        &runner_name,
        JobRunnerActor,
        params.runner,
        Some(runner_liveness),
    );
    let handle = JobRunnerHandle::new(runner_name);
    runner_spec.drain = Some(drain_job_runner(handle.clone(), params.drain_timeout));
    let membership_name = MEMBERSHIP.registered_name(instance, "");
    let membership_liveness = params.membership.liveness.clone();
    let membership_spec = actor_spec(
        &membership_name,
        NodeMembershipActor,
        params.membership,
        Some(membership_liveness),
    );
    SubsystemSpec::new(&SHAPE, vec![runner_spec, membership_spec], handle)
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
