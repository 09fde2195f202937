//! The `scheduler` subsystem: one supervisor over the scheduler actor.

use bulwark_actors::{JobRunnerHandle, SchedulerActor, SchedulerHandle, SchedulerParams};

use crate::subsystem::{ChildShape, SubsystemShape, SubsystemSpec, single_actor_subsystem};
use crate::supervisor::SupervisionStrategy;

/// Builds the scheduler's params once the job runner's handle exists (jobs it creates notify
/// the runner).
pub type SchedulerFactory = Box<dyn FnOnce(JobRunnerHandle) -> SchedulerParams + Send>;

/// The `scheduler` subsystem's shape.
pub const SHAPE: SubsystemShape = SubsystemShape {
    name: "scheduler",
    strategy: SupervisionStrategy::OneForOne,
    limits_note_opt: None,
    condition_opt: Some("only when scheduler.enabled"),
    children: &[ChildShape {
        name: "scheduler-actor",
        role: "fires due schedule slots as jobs, once across nodes",
    }],
};

/// Returns the `scheduler` subsystem and the handle that reaches its actor.
pub(crate) fn subsystem(instance: &str, params: SchedulerParams) -> SubsystemSpec<SchedulerHandle> {
    let liveness = params.liveness.clone();
    single_actor_subsystem(&SHAPE, instance, SchedulerActor, params, liveness)
        .map_handle(SchedulerHandle::new)
}
