//! The `retention` subsystem: one supervisor over the job pruner.

use bulwark_actors::{JobPrunerActor, JobPrunerHandle, JobPrunerParams};

use crate::subsystem::{ChildShape, SubsystemShape, SubsystemSpec, single_actor_subsystem};
use crate::supervisor::SupervisionStrategy;

/// The `retention` subsystem's shape.
pub const SHAPE: SubsystemShape = SubsystemShape {
    name: "retention",
    strategy: SupervisionStrategy::OneForOne,
    limits_note_opt: None,
    condition_opt: Some("only when jobs.retention.enabled"),
    children: &[ChildShape {
        name: "job-pruner",
        role: "deletes finished jobs past their retention, in small batches",
    }],
};

/// Returns the `retention` subsystem and the handle that reaches its pruner.
pub(crate) fn subsystem(instance: &str, params: JobPrunerParams) -> SubsystemSpec<JobPrunerHandle> {
    let liveness = params.liveness.clone();
    single_actor_subsystem(&SHAPE, instance, JobPrunerActor, params, liveness)
        .map_handle(JobPrunerHandle::new)
}
