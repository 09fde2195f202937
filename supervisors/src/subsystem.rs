//! Subsystem specs: what each subsystem of the tree is (its [`SubsystemShape`]), and the one
//! builder that turns a subsystem's children into its supervisor ([`SubsystemSpec::build`]).
//! The tree is assembled and drawn from the same shapes (`tree::TREE`), so they cannot drift.

use std::sync::Arc;
use std::time::Duration;

use bulwark_core::Liveness;
use futures::FutureExt;
use ractor::{Actor, ActorCell};

use crate::supervisor::{
    ChildSpec, RestartIntensity, RestartType, StartFn, SupervisionStrategy, SupervisorActor,
    SupervisorParams,
};
use crate::tree::SupervisionSettings;

/// What a subsystem is, as both its supervisor and the tree's drawing read it.
#[derive(Debug)]
pub struct SubsystemShape {
    /// The supervisor's name, registered as `<instance>/<name>`.
    pub name: &'static str,
    pub strategy: SupervisionStrategy,
    /// What sets its restart limits when they are not `[supervision]`'s; drawn beside the
    /// strategy.
    pub limits_note_opt: Option<&'static str>,
    /// When the subsystem is started at all; `None` when it always is.
    pub condition_opt: Option<&'static str>,
    pub children: &'static [ChildShape],
}

/// One child (or one kind of child) of a subsystem.
#[derive(Debug)]
pub struct ChildShape {
    /// Registered name below the instance prefix; a `<…>` part stands for what differs per
    /// child (an index, a provider, a job kind).
    pub name: &'static str,
    /// What the child does, as the drawing shows it.
    pub role: &'static str,
}

impl ChildShape {
    /// Returns the registered name `<instance>/<name>`, its `<…>` part (if any) replaced by
    /// `part`.
    pub fn registered_name(&self, instance: &str, part: &str) -> String {
        let name = match (self.name.find('<'), self.name.find('>')) {
            (Some(start), Some(end)) if start < end => {
                format!("{}{part}{}", &self.name[..start], &self.name[end + 1..])
            }
            _ => self.name.to_owned(),
        };
        format!("{instance}/{name}")
    }
}

/// How often a supervisor may restart its children before it escalates, and how long it
/// waits between restarts.
#[derive(Debug, Clone, Copy)]
pub struct RestartLimits {
    pub intensity: RestartIntensity,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl SupervisionSettings {
    /// Returns the restart limits `[supervision]` sets for every supervisor.
    pub fn restart_limits(&self) -> RestartLimits {
        RestartLimits {
            intensity: self.intensity,
            backoff_base: self.backoff_base,
            backoff_max: self.backoff_max,
        }
    }
}

/// A subsystem ready to join the tree: its shape, its children's specs, and the handle that
/// reaches it once started (`H`: a pool, a router, a handle by registered name, or `()`).
pub struct SubsystemSpec<H> {
    pub shape: &'static SubsystemShape,
    pub children: Vec<ChildSpec>,
    /// Limits of its own; `None` takes the tree's `[supervision]` limits.
    pub limits_opt: Option<RestartLimits>,
    pub handle: H,
}

impl<H> std::fmt::Debug for SubsystemSpec<H> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SubsystemSpec")
            .field("name", &self.shape.name)
            .field("num_children", &self.children.len())
            .field("limits_opt", &self.limits_opt)
            .finish_non_exhaustive()
    }
}

impl<H> SubsystemSpec<H> {
    /// Returns a subsystem under the tree's restart limits.
    pub fn new(shape: &'static SubsystemShape, children: Vec<ChildSpec>, handle: H) -> Self {
        SubsystemSpec {
            shape,
            children,
            limits_opt: None,
            handle,
        }
    }

    /// Returns the subsystem with restart limits of its own.
    pub fn with_limits(self, limits: RestartLimits) -> Self {
        SubsystemSpec {
            limits_opt: Some(limits),
            ..self
        }
    }

    /// Returns the subsystem with its handle turned into another.
    pub fn map_handle<G>(self, map: impl FnOnce(H) -> G) -> SubsystemSpec<G> {
        SubsystemSpec {
            shape: self.shape,
            children: self.children,
            limits_opt: self.limits_opt,
            handle: map(self.handle),
        }
    }

    /// Returns the spec of the subsystem's supervisor, registered as `<instance>/<name>` with
    /// the shape's strategy, and the subsystem's handle.
    pub fn build(self, instance: &str, settings: SupervisionSettings) -> (ChildSpec, H) {
        let params = supervisor_params(
            self.shape.name,
            self.shape.strategy,
            self.children,
            SupervisorLimits {
                restart: self.limits_opt.unwrap_or(settings.restart_limits()),
                settings,
            },
        );
        (supervisor_spec(instance, params), self.handle)
    }
}

/// Returns a subsystem of one supervisor over one actor, the shape's only child; its handle
/// is the actor's registered name.
pub fn single_actor_subsystem<A>(
    shape: &'static SubsystemShape,
    instance: &str,
    actor: A,
    arguments: A::Arguments,
    liveness: Liveness,
) -> SubsystemSpec<String>
where
    A: Actor + Clone + Sync,
    A::Arguments: Clone + Sync,
{
    let [child] = shape.children else {
        panic!("subsystem `{}` must have exactly one child", shape.name);
    };
    let actor_name = child.registered_name(instance, "");
    let spec = actor_spec(&actor_name, actor, arguments, Some(liveness));
    SubsystemSpec::new(shape, vec![spec], actor_name)
}

/// The restart limits a supervisor runs with, and the tree's hang and heartbeat settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SupervisorLimits {
    pub restart: RestartLimits,
    pub settings: SupervisionSettings,
}

/// Returns a supervisor's params.
pub(crate) fn supervisor_params(
    name: &str,
    strategy: SupervisionStrategy,
    children: Vec<ChildSpec>,
    limits: SupervisorLimits,
) -> SupervisorParams {
    SupervisorParams {
        name: name.to_owned(),
        children,
        strategy,
        intensity: limits.restart.intensity,
        backoff_base: limits.restart.backoff_base,
        backoff_max: limits.restart.backoff_max,
        hang_timeout: limits.settings.hang_timeout,
        heartbeat: limits.settings.heartbeat,
    }
}

/// Returns the child spec of a supervisor, registered as `<instance>/<name>`.
pub(crate) fn supervisor_spec(instance: &str, params: SupervisorParams) -> ChildSpec {
    let name = params.name.clone();
    let mut spec = actor_spec(&format!("{instance}/{name}"), SupervisorActor, params, None);
    spec.name = name;
    spec.is_supervisor = true;
    spec
}

/// Returns a permanent child spec that spawns `actor` under `registered_name` with a clone of
/// `arguments` on every (re)start.
pub fn actor_spec<A>(
    registered_name: &str,
    actor: A,
    arguments: A::Arguments,
    liveness: Option<Liveness>,
) -> ChildSpec
where
    A: Actor + Clone + Sync,
    A::Arguments: Clone + Sync,
{
    let registered = registered_name.to_owned();
    let start: StartFn = Arc::new(move |supervisor: ActorCell| {
        let actor = actor.clone();
        let arguments = arguments.clone();
        let registered = registered.clone();
        async move {
            let (actor_ref, _handle) =
                Actor::spawn_linked(Some(registered), actor, arguments, supervisor).await?;
            Ok(actor_ref.get_cell())
        }
        .boxed()
    });
    ChildSpec {
        name: registered_name
            .rsplit('/')
            .next()
            .unwrap_or(registered_name)
            .to_owned(),
        restart: RestartType::Permanent,
        start,
        liveness,
        is_supervisor: false,
        drain: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves a child's registered name is the shape's name under the instance, with its
    /// `<…>` part filled in, so the drawing and the registered names share one source.
    #[test]
    fn registered_name_fills_the_varying_part() {
        let worker = ChildShape {
            name: "sentiment-worker-<n>",
            role: "",
        };
        assert_eq!(
            worker.registered_name("node-a", "3"),
            "node-a/sentiment-worker-3"
        );
        let runner = ChildShape {
            name: "job-runner",
            role: "",
        };
        assert_eq!(runner.registered_name("node-a", ""), "node-a/job-runner");
    }
}
