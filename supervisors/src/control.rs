//! The `control` subsystem: one supervisor over the job control actor, which brings cancels
//! and paused kinds stored in the database to this node.

use bulwark_actors::{JobControlActor, JobControlParams};

use crate::subsystem::{ChildShape, SubsystemShape, SubsystemSpec, single_actor_subsystem};
use crate::supervisor::SupervisionStrategy;

/// The `control` subsystem's shape.
pub const SHAPE: SubsystemShape = SubsystemShape {
    name: "control",
    strategy: SupervisionStrategy::OneForOne,
    limits_note_opt: None,
    condition_opt: None,
    children: &[ChildShape {
        name: "job-control",
        role: "signals cancels of running jobs, keeps the paused kinds",
    }],
};

/// Returns the `control` subsystem.
pub(crate) fn subsystem(instance: &str, params: JobControlParams) -> SubsystemSpec<String> {
    let liveness = params.liveness.clone();
    single_actor_subsystem(&SHAPE, instance, JobControlActor, params, liveness)
}
