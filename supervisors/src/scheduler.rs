//! The `scheduler` subsystem: one supervisor over the scheduler actor.

use bulwark_actors::{JobRunnerHandle, SchedulerActor, SchedulerHandle, SchedulerParams};

use crate::supervisor::ChildSpec;
use crate::tree::{SupervisionSettings, actor_spec, supervisor_params, supervisor_spec};

/// Builds the scheduler's params once the job runner's handle exists (jobs it creates notify
/// the runner).
pub type SchedulerFactory = Box<dyn FnOnce(JobRunnerHandle) -> SchedulerParams + Send>;

/// Returns the `scheduler` supervisor's spec and the handle that reaches its actor:
///
/// ```text
/// scheduler (one_for_one)
/// └── scheduler-actor   fires due schedule slots as jobs, counts finished runs
/// ```
pub(crate) fn scheduler_supervisor(
    instance: &str,
    params: SchedulerParams,
    settings: SupervisionSettings,
) -> (ChildSpec, SchedulerHandle) {
    let actor_name = format!("{instance}/scheduler-actor");
    let liveness = params.liveness.clone();
    let actor = actor_spec(&actor_name, SchedulerActor, params, Some(liveness));
    let supervisor = supervisor_spec(
        instance,
        supervisor_params("scheduler", vec![actor], settings),
    );
    (supervisor, SchedulerHandle::new(actor_name))
}
