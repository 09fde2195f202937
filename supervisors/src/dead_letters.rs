//! The `dead-letter` subsystem: one supervisor over the dead-letter actor.

use bulwark_actors::{DeadLetterActor, DeadLetterHandle, DeadLetterParams, JobRunnerHandle};

use crate::subsystem::{ChildShape, SubsystemShape, SubsystemSpec, single_actor_subsystem};
use crate::supervisor::SupervisionStrategy;

/// Builds the dead-letter actor's params once the job runner's handle exists (requeued jobs
/// notify the runner).
pub type DeadLetterFactory = Box<dyn FnOnce(JobRunnerHandle) -> DeadLetterParams + Send>;

/// The `dead-letter` subsystem's shape.
pub const SHAPE: SubsystemShape = SubsystemShape {
    name: "dead-letter",
    strategy: SupervisionStrategy::OneForOne,
    limits_note_opt: None,
    condition_opt: Some("only when dead_letters.enabled"),
    children: &[ChildShape {
        name: "dead-letter-actor",
        role: "stores jobs that cannot be done, retries, parks",
    }],
};

/// Returns the `dead-letter` subsystem and the handle that reaches its actor.
pub(crate) fn subsystem(
    instance: &str,
    params: DeadLetterParams,
) -> SubsystemSpec<DeadLetterHandle> {
    let liveness = params.liveness.clone();
    single_actor_subsystem(&SHAPE, instance, DeadLetterActor, params, liveness)
        .map_handle(DeadLetterHandle::new)
}
