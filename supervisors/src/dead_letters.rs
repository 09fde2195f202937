//! The `dead-letter` subsystem: one supervisor over the dead-letter actor.

use bulwark_actors::{DeadLetterActor, DeadLetterHandle, DeadLetterParams, JobRunnerHandle};

use crate::supervisor::ChildSpec;
use crate::tree::{SupervisionSettings, actor_spec, supervisor_params, supervisor_spec};

/// Builds the dead-letter actor's params once the job runner's handle exists (requeued jobs
/// notify the runner).
pub type DeadLetterFactory = Box<dyn FnOnce(JobRunnerHandle) -> DeadLetterParams + Send>;

/// Returns the `dead-letter` supervisor's spec and the handle that reaches its actor:
///
/// ```text
/// dead-letter (one_for_one)
/// └── dead-letter-actor   stores dead and failed jobs, retries with backoff, parks
/// ```
pub(crate) fn dead_letter_supervisor(
    instance: &str,
    params: DeadLetterParams,
    settings: SupervisionSettings,
) -> (ChildSpec, DeadLetterHandle) {
    let actor_name = format!("{instance}/dead-letter-actor");
    let liveness = params.liveness.clone();
    let actor = actor_spec(&actor_name, DeadLetterActor, params, Some(liveness));
    let supervisor = supervisor_spec(
        instance,
        supervisor_params("dead-letter", vec![actor], settings),
    );
    (supervisor, DeadLetterHandle::new(actor_name))
}
