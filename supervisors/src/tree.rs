//! The running tree: every subsystem's spec, assembled into the root in the order of [`TREE`]
//! (downstream first), and drawn from the same list by [`render_tree`].

use std::time::Duration;

use bulwark_actors::{JobRunnerHandle, JobRunnerParams, SentimentPool};
use ractor::{Actor, ActorRef};
use tokio::task::JoinHandle;

use crate::sentiment::SentimentSettings;
use crate::subsystem::{RestartLimits, SubsystemShape, SupervisorLimits, supervisor_params};
use crate::supervisor::{
    ChildSpec, RestartIntensity, SupervisionStrategy, SupervisorActor, SupervisorMsg,
    SupervisorParams, SupervisorSnapshot, observe_supervisor,
};

/// Restart policy applied to every supervisor of the tree.
#[derive(Debug, Clone, Copy)]
pub struct SupervisionSettings {
    pub intensity: RestartIntensity,
    /// The root's over the subsystems (wider: see `supervision.root_max_restarts`).
    pub root_intensity: RestartIntensity,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub hang_timeout: Duration,
    pub heartbeat: Duration,
    /// How long an operator's stop or restart lets running jobs finish before releasing them.
    pub drain_timeout: Duration,
}

/// The root's name and strategy. One-for-one: subsystems reach each other through registered
/// names and shared queues that outlive any actor, so one that escalates says nothing about
/// the others.
const ROOT_NAME: &str = "root";
const ROOT_STRATEGY: SupervisionStrategy = SupervisionStrategy::OneForOne;

/// Every subsystem the root may start, in start order: downstream first.
pub const TREE: [&SubsystemShape; 8] = [
    &crate::sentiment::SHAPE,
    &crate::providers::SHAPE,
    &crate::jobs::SHAPE,
    &crate::scheduler::SHAPE,
    &crate::dead_letters::SHAPE,
    &crate::retention::SHAPE,
    &crate::control::SHAPE,
    &crate::ingress::SHAPE,
];

/// What [`BulwarkTree::start`] is given. The job runner's params are built by the caller from
/// the sentiment pool this tree creates, through `job_runner`.
pub struct TreeParams {
    /// Prefix of every registered actor name, unique per process (several services may share
    /// one process in tests).
    pub instance: String,
    pub supervision: SupervisionSettings,
    pub sentiment: SentimentSettings,
    /// Builds the job runner's params once the sentiment pool exists.
    pub job_runner: Box<dyn FnOnce(SentimentPool) -> JobRunnerParams + Send>,
    /// The node's membership (heartbeat, fencing); it aborts the runner's in-flight jobs when
    /// the node was fenced, so both share one [`bulwark_actors::InFlightJobs`].
    pub membership: bulwark_actors::NodeMembershipParams,
    /// The `scheduler` subsystem; `None` when this node runs no scheduler.
    pub scheduler: Option<crate::scheduler::SchedulerFactory>,
    /// The `dead-letter` subsystem; `None` when this node runs no dead-letter actor.
    pub dead_letters: Option<crate::dead_letters::DeadLetterFactory>,
    /// The `retention` subsystem (the job pruner); `None` when retention is off.
    pub retention: Option<bulwark_actors::JobPrunerParams>,
    /// The `control` subsystem (cancels and paused kinds reach this node through it).
    pub control: bulwark_actors::JobControlParams,
    /// The `ingress` subsystem (RabbitMQ consumers); `None` without a broker.
    pub ingress: Option<crate::ingress::IngressFactory>,
    /// The `providers` subsystem; `None` when no provider is configured.
    pub providers: Option<crate::providers::ProvidersSettings>,
}

impl std::fmt::Debug for TreeParams {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TreeParams")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// The running supervision tree, as [`render_tree`] draws it (and the crate docs and
/// `docs/architecture.md` show it).
#[derive(Debug)]
pub struct BulwarkTree {
    pub root: ActorRef<SupervisorMsg>,
    pub root_handle: JoinHandle<()>,
    pub sentiment: SentimentPool,
    pub job_runner: JobRunnerHandle,
    /// `None` when this node runs no scheduler.
    pub scheduler: Option<bulwark_actors::SchedulerHandle>,
    /// `None` when this node runs no dead-letter actor.
    pub dead_letters: Option<bulwark_actors::DeadLetterHandle>,
    /// `None` when no provider is configured.
    pub providers: Option<bulwark_actors::ProviderRouter>,
    /// `None` when retention is off.
    pub pruner: Option<bulwark_actors::JobPrunerHandle>,
}

impl BulwarkTree {
    /// Starts the whole tree, each subsystem after those it sends to (the order of [`TREE`]).
    pub async fn start(params: TreeParams) -> Result<BulwarkTree, ractor::SpawnErr> {
        let instance = params.instance;
        let settings = params.supervision;
        let mut subsystems = Vec::new();
        let (spec, sentiment) =
            crate::sentiment::subsystem(&instance, &params.sentiment).build(&instance, settings);
        subsystems.push(spec);
        let providers = params.providers.map(|providers_settings| {
            let (spec, router) = crate::providers::subsystem(&instance, &providers_settings)
                .build(&instance, settings);
            subsystems.push(spec);
            router
        });
        let runner_params = (params.job_runner)(sentiment.clone());
        let ingress_executor = runner_params.executor.clone();
        let jobs_params = crate::jobs::JobsParams {
            runner: runner_params,
            membership: params.membership,
            drain_timeout: settings.drain_timeout,
        };
        let (spec, job_runner) =
            crate::jobs::subsystem(&instance, jobs_params).build(&instance, settings);
        subsystems.push(spec);
        let scheduler = params.scheduler.map(|factory| {
            let (spec, handle) =
                crate::scheduler::subsystem(&instance, factory(job_runner.clone()))
                    .build(&instance, settings);
            subsystems.push(spec);
            handle
        });
        let dead_letters = params.dead_letters.map(|factory| {
            let (spec, handle) =
                crate::dead_letters::subsystem(&instance, factory(job_runner.clone()))
                    .build(&instance, settings);
            subsystems.push(spec);
            handle
        });
        let pruner = params.retention.map(|pruner_params| {
            let (spec, handle) =
                crate::retention::subsystem(&instance, pruner_params).build(&instance, settings);
            subsystems.push(spec);
            handle
        });
        let (spec, _control_name) =
            crate::control::subsystem(&instance, params.control).build(&instance, settings);
        subsystems.push(spec);
        if let Some(factory) = params.ingress {
            let (spec, ()) = factory(ingress_executor, settings).build(&instance, settings);
            subsystems.push(spec);
        }
        let (root, root_handle) = Actor::spawn(
            Some(format!("{instance}/{ROOT_NAME}")),
            SupervisorActor,
            root_params(subsystems, settings),
        )
        .await?;
        Ok(BulwarkTree {
            root,
            root_handle,
            sentiment,
            job_runner,
            scheduler,
            dead_letters,
            providers,
            pruner,
        })
    }

    /// Returns the whole tree's counters, or `None` if the root does not answer.
    pub async fn observe(&self) -> Option<SupervisorSnapshot> {
        observe_supervisor(&self.root).await
    }
}

/// Returns the root's params over the subsystems' supervisors, started in the order of
/// [`TREE`] whatever order they were built in.
fn root_params(mut subsystems: Vec<ChildSpec>, settings: SupervisionSettings) -> SupervisorParams {
    subsystems.sort_by_key(|spec| {
        TREE.iter()
            .position(|shape| shape.name == spec.name)
            .unwrap_or(TREE.len())
    });
    supervisor_params(
        ROOT_NAME,
        ROOT_STRATEGY,
        subsystems,
        SupervisorLimits {
            restart: RestartLimits {
                intensity: settings.root_intensity,
                ..settings.restart_limits()
            },
            settings,
        },
    )
}

/// Returns the tree's shape drawn in ASCII from [`TREE`]: each subsystem with its strategy and
/// when it runs, each child with what it does.
pub fn render_tree() -> String {
    let mut rows: Vec<(String, bool, Option<&str>)> = vec![(
        format!("{ROOT_NAME} ({})", ROOT_STRATEGY.as_str()),
        false,
        Some("children started in this order, downstream first"),
    )];
    for (subsystem_index, shape) in TREE.iter().enumerate() {
        let is_last_subsystem = subsystem_index + 1 == TREE.len();
        let (branch, indent) = if is_last_subsystem {
            ("└── ", "    ")
        } else {
            ("├── ", "│   ")
        };
        let strategy = match shape.limits_note_opt {
            Some(note) => format!("{}, {note}", shape.strategy.as_str()),
            None => shape.strategy.as_str().to_owned(),
        };
        rows.push((
            format!("{branch}{} ({strategy})", shape.name),
            false,
            shape.condition_opt,
        ));
        for (child_index, child) in shape.children.iter().enumerate() {
            let child_branch = if child_index + 1 == shape.children.len() {
                "└── "
            } else {
                "├── "
            };
            rows.push((
                format!("{indent}{child_branch}{}", child.name),
                true,
                Some(child.role),
            ));
        }
    }
    // Supervisors' notes line up in one column, children's roles in another.
    let width_of = |is_child: bool| {
        rows.iter()
            .filter(|(_, row_is_child, _)| *row_is_child == is_child)
            .map(|(left, _, _)| left.chars().count())
            .max()
            .unwrap_or(0)
            + 2
    };
    let (supervisor_width, child_width) = (width_of(false), width_of(true));
    rows.iter()
        .map(|(left, is_child, note_opt)| match note_opt {
            Some(note) => {
                let width = if *is_child {
                    child_width
                } else {
                    supervisor_width
                };
                let padding = " ".repeat(width - left.chars().count());
                format!("{left}{padding}{note}\n")
            }
            None => format!("{left}\n"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Returns the lines of the first `text` code block of `document` that starts with the
    /// root, each with `prefix` (a doc comment's `//! `) taken off.
    fn drawn_tree(document: &str, prefix: &str) -> String {
        let lines: Vec<&str> = document
            .lines()
            .map(|line| {
                line.strip_prefix(prefix)
                    .unwrap_or(line.trim_start_matches(prefix.trim_end()))
            })
            .collect();
        let start = lines
            .iter()
            .position(|line| line.starts_with("root ("))
            .expect("the document draws the tree");
        lines[start..]
            .iter()
            .take_while(|line| !line.starts_with("```"))
            .map(|line| format!("{line}\n"))
            .collect()
    }

    /// Proves `docs/architecture.md` draws the tree the code assembles, so the drawing cannot
    /// drift from the subsystem specs.
    #[test]
    fn architecture_doc_draws_the_assembled_tree() {
        let document = include_str!("../../docs/architecture.md");
        assert_eq!(drawn_tree(document, ""), render_tree());
    }

    /// Proves the crate docs draw the tree the code assembles.
    #[test]
    fn crate_docs_draw_the_assembled_tree() {
        let document = include_str!("lib.rs");
        assert_eq!(drawn_tree(document, "//! "), render_tree());
    }

    /// Proves the root starts subsystems in the order of `TREE`, downstream first, whatever
    /// order they were built in.
    #[test]
    fn root_starts_subsystems_in_tree_order() {
        let settings = SupervisionSettings {
            intensity: RestartIntensity {
                max_restarts: 1,
                within: Duration::from_secs(1),
            },
            root_intensity: RestartIntensity {
                max_restarts: 1,
                within: Duration::from_secs(1),
            },
            backoff_base: Duration::from_millis(1),
            backoff_max: Duration::from_millis(1),
            hang_timeout: Duration::from_secs(1),
            heartbeat: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(1),
        };
        let built_late_first = [
            &crate::ingress::SHAPE,
            &crate::jobs::SHAPE,
            &crate::sentiment::SHAPE,
        ]
        .into_iter()
        .map(|shape| {
            crate::subsystem::SubsystemSpec::new(shape, Vec::new(), ())
                .build("node", settings)
                .0
        })
        .collect();
        let root = root_params(built_late_first, settings);
        let names: Vec<&str> = root
            .children
            .iter()
            .map(|spec| spec.name.as_str())
            .collect();
        assert_eq!(names, ["sentiment", "jobs", "ingress"]);
    }
}
