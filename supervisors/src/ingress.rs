//! The `ingress` subsystem's place in the tree. The broker crate builds its children (it knows
//! lapin, the tree does not) through [`SubsystemSpec`] with this [`SHAPE`]; the tree only gives
//! it the job executor it builds.

use bulwark_actors::JobExecutor;

use crate::subsystem::{ChildShape, SubsystemShape, SubsystemSpec};
use crate::supervisor::SupervisionStrategy;
use crate::tree::SupervisionSettings;

/// Builds the `ingress` subsystem from the executor the job runner also uses.
pub type IngressFactory =
    Box<dyn FnOnce(JobExecutor, SupervisionSettings) -> SubsystemSpec<()> + Send>;

/// The `ingress` subsystem's shape. One-for-one: each consumer owns its own connection, so one
/// consumer's lost connection says nothing about the others.
pub const SHAPE: SubsystemShape = SubsystemShape {
    name: "ingress",
    strategy: SupervisionStrategy::OneForOne,
    limits_note_opt: Some("reconnect backoff"),
    condition_opt: Some("only with AMQP_URL"),
    children: &[CONSUMER, DEAD_LETTER_CONSUMER, REPUBLISHER],
};

/// One consumer per job kind queue.
const CONSUMER: ChildShape = ChildShape {
    name: "consumer-<kind>",
    role: "one per job kind queue; acks once the outcome is stored",
};

/// One consumer per dead-letter queue.
const DEAD_LETTER_CONSUMER: ChildShape = ChildShape {
    name: "dlq-consumer-<kind>",
    role: "one per dead-letter queue; stores each message, then acks",
};

/// Publishes jobs stored but never confirmed.
pub const REPUBLISHER: ChildShape = ChildShape {
    name: "republisher",
    role: "publishes rows left in the outbox",
};
