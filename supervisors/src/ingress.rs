//! The `ingress` subsystem's place in the tree. The broker crate builds its supervisor (it
//! knows lapin, the tree does not); the tree only gives it the job executor it builds.

use bulwark_actors::JobExecutor;

use crate::supervisor::ChildSpec;
use crate::tree::SupervisionSettings;

/// Builds the `ingress` supervisor's spec from the executor the job runner also uses.
pub type IngressFactory = Box<dyn FnOnce(JobExecutor, SupervisionSettings) -> ChildSpec + Send>;
